//! Wiring: builds each stage from the settings and runs them until a signal.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use tokio::sync::watch;
use ugc_content::{ContentError, ContentService, ContentUrl};
use ugc_edge::auth::{AuthConfig, Verifier, read_key_file};
use ugc_edge::compat::CompatConfig;
use ugc_edge::limit::RateLimit;
use ugc_edge::{AppState, EdgeConfig};
use ugc_loader::{Loader, LoaderConfig};
use ugc_query::QueryService;
use ugc_store::chdb::{ChdbConfig, ChdbStore};
use ugc_store::clickhouse::{ClickHouseConfig, ClickHouseStore};
use ugc_store::{EventStore, QueryLimits, StoreError};

use crate::configuration::Settings;
use crate::configuration::{ProcessRole, StoreBackend, name_of};
use crate::process::{self, EventLog};
use crate::{status, telemetry};

/// The auth configuration, generating a development secret into the data directory
/// when no key is configured, so that `ugc` and `ugc token` work together out of the box.
pub fn auth_config(s: &Settings) -> anyhow::Result<AuthConfig> {
    let mut cfg = AuthConfig {
        hs_secret: s.jwt_secret.clone(),
        public_key_pem: s.jwt_public_key.as_deref().map(read_key_file).transpose()?,
        jwks: s.jwt_jwks.as_deref().map(read_key_file).transpose()?,
        issuer: s.jwt_issuer.clone(),
        audience: s.jwt_audience.clone(),
        leeway: Duration::from_secs(s.jwt_leeway_secs),
        cache_size: s.jwt_cache_size,
    };
    if cfg.hs_secret.is_none() && cfg.public_key_pem.is_none() && cfg.jwks.is_none() {
        cfg.hs_secret = Some(dev_secret(&s.secret_file())?);
    }
    Ok(cfg)
}

fn dev_secret(path: &Path) -> anyhow::Result<String> {
    if let Ok(secret) = std::fs::read_to_string(path) {
        return Ok(secret.trim().to_owned());
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let secret = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    write_private(path, &secret)?;
    tracing::warn!(
        file = %path.display(),
        "NO JWT KEY CONFIGURED: generated a development HS256 secret. Tokens from `ugc token` work \
         against this instance only. Set UGC_JWT_SECRET, UGC_JWT_PUBLIC_KEY or UGC_JWT_JWKS for real use."
    );
    Ok(secret)
}

fn write_private(path: &Path, secret: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    f.write_all(secret.as_bytes())?;
    f.sync_all()?;
    Ok(())
}

pub async fn serve(s: Settings) -> anyhow::Result<()> {
    std::fs::create_dir_all(&s.data_dir)
        .with_context(|| format!("cannot create data dir {}", s.data_dir.display()))?;
    let verifier = Verifier::new(&auth_config(&s)?)?;

    let role = process::role_of(&s)?;
    let metrics = telemetry::install_metrics(
        &name_of(&role),
        &name_of(&s.log_backend),
        &name_of(&s.store),
    )?;
    let log = EventLog::open(&s)?;

    let store: Arc<dyn EventStore> =
        Arc::new(ugc_store::metered::Metered::new(open_store(&s).await?));

    let (stop_tx, stop_rx) = watch::channel(false);
    let mut loader_status: Arc<ugc_loader::LoaderStatus> = Arc::default();
    let loader = if role.runs_loader() {
        let loader = Loader::new(
            log.consumer()?,
            store.clone(),
            LoaderConfig {
                batch_max_records: s.loader_batch_max,
                batch_max_wait: Duration::from_millis(s.loader_batch_wait_ms),
                stall_after: (s.loader_stall_ready_secs > 0)
                    .then(|| Duration::from_secs(s.loader_stall_ready_secs)),
                ..LoaderConfig::default()
            },
        );
        loader_status = loader.status();
        Some(tokio::spawn(loader.run(stop_rx)))
    } else {
        None
    };

    let status_router = status::router(status::StatusState {
        role: name_of(&role),
        log_backend: name_of(&s.log_backend),
        store_backend: name_of(&s.store),
        store: store.clone(),
        loader: role.runs_loader().then(|| loader_status.clone()),
    });
    let mut relay = None;
    let router = if role.runs_api() {
        let content = open_content(&s).await?;
        let producer = log.producer()?;
        metrics.on_scrape({
            let p = producer.clone();
            move || p.record_queue_depth()
        });
        let producer: Arc<dyn ugc_log::LogProducer> = producer;
        relay = Some(content.spawn_relay(producer.clone(), stop_tx.subscribe()));
        let limits = QueryLimits {
            max_rows: s.query_max_rows,
            max_time: Duration::from_secs(s.query_timeout_secs),
        };
        let state = AppState::new(
            producer,
            QueryService::new(store, limits, s.progress_page_max),
            content,
            verifier,
            EdgeConfig {
                max_body_bytes: s.max_body_bytes,
                max_batch: s.max_batch,
                trusted_proxies: s.trusted_proxies.clone(),
                access_log: s.access_log,
                cors_origins: s.cors_origins.clone(),
                media_dir: s.media_dir.clone(),
                compat: CompatConfig {
                    seeds: s.compat.0.clone(),
                    anonymous: s.compat_anonymous,
                },
                rate_limit: s.rate_limit_per_user.map(|per_second| RateLimit {
                    per_second,
                    // One second's worth by default (at least one event).
                    burst: s
                        .rate_limit_burst
                        .unwrap_or_else(|| per_second.ceil().min(u32::MAX as f64) as u32),
                }),
            },
        );
        ugc_edge::router(state)
    } else {
        process::loader_router(store, loader_status)
    }
    .merge(status_router);
    let router = match s.metrics_listen {
        None => router.merge(metrics.router()),
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} for /metrics"))?;
            tracing::info!(%addr, "metrics at http://{addr}/metrics");
            let app = metrics.router::<()>();
            tokio::spawn(async move {
                if let Err(e) = axum::serve(listener, app).await {
                    tracing::error!(error = %e, "the metrics listener stopped");
                }
            });
            router
        }
    };
    let listener = tokio::net::TcpListener::bind(s.listen)
        .await
        .with_context(|| format!("cannot listen on {}", s.listen))?;
    let addr = listener.local_addr()?;
    let log_name = log.describe();
    match role {
        ProcessRole::All => tracing::info!(
            %addr,
            data_dir = %s.data_dir.display(),
            store = %name_of(&s.store),
            log = %log_name,
            "ugc all-in-one is up: API http://{addr}/api/v1, docs http://{addr}/docs; mint a token with `ugc token --user <uuid>`"
        ),
        ProcessRole::Api => tracing::info!(
            %addr,
            store = %name_of(&s.store),
            log = %log_name,
            "ugc API is up: http://{addr}/api/v1, docs http://{addr}/docs"
        ),
        ProcessRole::Loader => tracing::info!(
            %addr,
            store = %name_of(&s.store),
            log = %log_name,
            "ugc loader is up: readiness and counters at http://{addr}/readyz"
        ),
    }
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown_signal())
    .await?;
    let _ = stop_tx.send(true);
    if let Some(loader) = loader {
        let _ = loader.await;
    }
    if let Some(relay) = relay {
        let _ = relay.await;
    }
    tracing::info!("stopped");
    Ok(())
}

/// The configured analytics store, migrated.
async fn open_store(s: &Settings) -> anyhow::Result<Arc<dyn EventStore>> {
    if s.store == StoreBackend::Clickhouse {
        return Ok(Arc::new(open_clickhouse(s, true).await?));
    }
    let library = s.chdb_library();
    if !library.exists() {
        bail!(
            "libchdb.so not found at {}: run scripts/fetch-chdb, or set UGC_CHDB_LIB",
            library.display()
        );
    }
    let chdb = ChdbConfig {
        library,
        data_dir: ChdbStore::data_dir_of(&s.data_dir),
        engine_args: vec![format!("--max_server_memory_usage={}", s.chdb_max_memory)],
        analyst_max_time: Duration::from_secs(s.query_timeout_secs),
    };
    let store = tokio::task::spawn_blocking(move || ChdbStore::open(&chdb)).await??;
    store.migrate().await.context("schema migration failed")?;
    Ok(Arc::new(store))
}

/// The content database (SQLite file or PostgreSQL), migrated. A PostgreSQL server that
/// is not reachable yet is waited for, as ClickHouse is; any other failure stops start-up.
async fn open_content(s: &Settings) -> anyhow::Result<ContentService> {
    let url =
        ContentUrl::parse(s.content_url.as_deref(), &s.data_dir).map_err(anyhow::Error::msg)?;
    ugc_retry::retry(
        ugc_retry::Backoff::new(Duration::from_millis(200), Duration::from_secs(5)),
        None,
        |e| matches!(e, ContentError::Unavailable(_)),
        |_, e| tracing::warn!(error = %e, "the content database is not reachable yet; retrying"),
        || ContentService::open(&url),
    )
    .await
    .map_err(|e| anyhow::anyhow!("content database: {e}"))
}

/// Connects to the ClickHouse server or cluster and, with `migrate`, migrates its schema,
/// waiting (with backoff) while it is unreachable: a server that starts after ugc is
/// normal in a deployment. A refusal (bad credentials, unknown cluster, bad DDL) stops
/// start-up.
pub(crate) async fn open_clickhouse(
    s: &Settings,
    migrate: bool,
) -> anyhow::Result<ClickHouseStore> {
    let mut config = ClickHouseConfig::new(&s.clickhouse_url);
    config.user = s.clickhouse_user.clone();
    config.password = s.clickhouse_password.clone();
    config.database = s.clickhouse_database.clone();
    config.cluster = s.clickhouse_cluster.clone();
    config.analyst_max_time = Duration::from_secs(s.query_timeout_secs);
    config.parser_library = s.chdb_library();
    let url = &s.clickhouse_url;
    let connected = ugc_retry::retry(
        ugc_retry::Backoff::new(Duration::from_millis(200), Duration::from_secs(5)),
        None,
        |e| !matches!(e, StoreError::Rejected(_)),
        |_, e| tracing::warn!(%url, error = %e, "ClickHouse not reachable yet; retrying"),
        || async {
            let store = ClickHouseStore::connect(config.clone()).await?;
            if migrate {
                store.migrate().await?;
            }
            Ok::<_, StoreError>(store)
        },
    )
    .await;
    match connected {
        Ok(store) => Ok(store),
        Err(e) => bail!("ClickHouse at {url} refused: {e}"),
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
