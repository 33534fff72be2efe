//! Wiring: builds each stage from the settings and runs them until a signal.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use tokio::sync::watch;
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
use crate::roles::{self, EventLog, Role};

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

    let role = Role::of(&s)?;
    let log = EventLog::open(&s)?;

    let store = open_store(&s).await?;

    let (stop_tx, stop_rx) = watch::channel(false);
    let mut loader_status = Arc::default();
    let loader = if role.runs_loader() {
        let loader = Loader::new(
            log.consumer()?,
            store.clone(),
            LoaderConfig {
                batch_max_records: s.loader_batch_max,
                batch_max_wait: Duration::from_millis(s.loader_batch_wait_ms),
                ..LoaderConfig::default()
            },
        );
        loader_status = loader.status();
        Some(tokio::spawn(loader.run(stop_rx)))
    } else {
        None
    };

    let router = if role.runs_api() {
        let limits = QueryLimits {
            max_rows: s.query_max_rows,
            max_time: Duration::from_secs(s.query_timeout_secs),
        };
        let state = AppState::new(
            log.producer()?,
            QueryService::new(store, limits, s.progress_page_max),
            verifier,
            EdgeConfig {
                max_body_bytes: s.max_body_bytes,
                max_batch: s.max_batch,
                trusted_proxies: s.trusted_proxies.clone(),
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
        roles::loader_router(store, loader_status)
    };
    let listener = tokio::net::TcpListener::bind(s.listen)
        .await
        .with_context(|| format!("cannot listen on {}", s.listen))?;
    let addr = listener.local_addr()?;
    let log_name = log.describe();
    match role {
        Role::All => tracing::info!(
            %addr,
            data_dir = %s.data_dir.display(),
            store = %s.store,
            log = %log_name,
            "ugc all-in-one is up: API http://{addr}/api/v1, docs http://{addr}/docs; mint a token with `ugc token --user <uuid>`"
        ),
        Role::Api => tracing::info!(
            %addr,
            store = %s.store,
            log = %log_name,
            "ugc API is up: http://{addr}/api/v1, docs http://{addr}/docs"
        ),
        Role::Loader => tracing::info!(
            %addr,
            store = %s.store,
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
    tracing::info!("stopped");
    Ok(())
}

/// The configured analytics store, migrated.
async fn open_store(s: &Settings) -> anyhow::Result<Arc<dyn EventStore>> {
    if s.store == "clickhouse" {
        return Ok(Arc::new(open_clickhouse(s).await?));
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

/// Connects to the ClickHouse server or cluster and migrates its schema, waiting (with
/// backoff) while it is unreachable: a server that starts after ugc is normal in a
/// deployment. A refusal (bad credentials, unknown cluster, bad DDL) stops start-up.
async fn open_clickhouse(s: &Settings) -> anyhow::Result<ClickHouseStore> {
    let mut config = ClickHouseConfig::new(&s.clickhouse_url);
    config.user = s.clickhouse_user.clone();
    config.password = s.clickhouse_password.clone();
    config.database = s.clickhouse_database.clone();
    config.cluster = s.clickhouse_cluster.clone();
    config.analyst_max_time = Duration::from_secs(s.query_timeout_secs);
    config.parser_library = s.chdb_library();
    let mut pause = Duration::from_millis(200);
    loop {
        let attempt = async {
            let store = ClickHouseStore::connect(config.clone()).await?;
            store.migrate().await?;
            Ok::<_, StoreError>(store)
        };
        match attempt.await {
            Ok(store) => return Ok(store),
            Err(StoreError::Rejected(e)) => {
                bail!("ClickHouse at {} refused: {e}", s.clickhouse_url)
            }
            Err(e) => {
                tracing::warn!(url = %s.clickhouse_url, error = %e, "ClickHouse not reachable yet; retrying");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(5));
            }
        }
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
