//! What one process runs (API, loader or both), and the event log it runs on.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context as _, bail};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use serde_json::{Value, json};
use ugc_loader::LoaderStatus;
use ugc_log::embedded::{EmbeddedLog, EmbeddedLogConfig};
use ugc_log::kafka::{KafkaConfig, KafkaLog, TopicLayout};
use ugc_log::{LogConsumer, LogProducer};
use ugc_store::EventStore;

use crate::configuration::Settings;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    All,
    Api,
    Loader,
}

impl Role {
    /// The configured role, refused where it cannot work.
    pub fn of(s: &Settings) -> anyhow::Result<Role> {
        let role = match s.role.as_str() {
            "api" => Role::Api,
            "loader" => Role::Loader,
            _ => Role::All,
        };
        if role != Role::All && s.log_backend != "kafka" {
            bail!(
                "--role {} needs --log-backend kafka: the embedded log lives inside one process, \
                 so its API and loader cannot run apart (run --role all)",
                s.role
            );
        }
        if role != Role::All && s.store != "clickhouse" {
            bail!(
                "--role {} needs --store clickhouse: the embedded store belongs to one process, \
                 so a separate API would never see what a separate loader stores",
                s.role
            );
        }
        Ok(role)
    }

    pub fn runs_api(self) -> bool {
        matches!(self, Role::All | Role::Api)
    }

    pub fn runs_loader(self) -> bool {
        matches!(self, Role::All | Role::Loader)
    }
}

/// The configured event log.
pub enum EventLog {
    Embedded(EmbeddedLog),
    Kafka(KafkaLog),
}

impl EventLog {
    pub fn open(s: &Settings) -> anyhow::Result<EventLog> {
        if s.log_backend == "kafka" {
            let log = KafkaLog::new(kafka_config(s)?)?;
            // Topics are created in the background, retried until the cluster answers: a
            // broker that starts after ugc is normal. /readyz says not ready meanwhile.
            let setup = log.clone();
            tokio::spawn(async move {
                let mut pause = Duration::from_millis(200);
                while let Err(e) = setup.ensure_topics().await {
                    tracing::warn!(error = %e, "cannot create the Kafka topics yet; retrying");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(5));
                }
            });
            return Ok(EventLog::Kafka(log));
        }
        let log = EmbeddedLog::open(
            &s.data_dir.join("log.redb"),
            EmbeddedLogConfig {
                queue_capacity: s.log_queue,
                max_group_records: s.log_group_max,
                ack_timeout: s.log_ack_timeout(),
            },
        )
        .context("cannot open the embedded log")?;
        Ok(EventLog::Embedded(log))
    }

    pub fn producer(&self) -> anyhow::Result<Arc<dyn LogProducer>> {
        Ok(match self {
            EventLog::Embedded(l) => Arc::new(l.producer()),
            EventLog::Kafka(l) => Arc::new(l.producer()?),
        })
    }

    pub fn consumer(&self) -> anyhow::Result<Box<dyn LogConsumer>> {
        Ok(match self {
            EventLog::Embedded(l) => Box::new(l.consumer()),
            EventLog::Kafka(l) => Box::new(l.consumer()?),
        })
    }

    pub fn describe(&self) -> String {
        match self {
            EventLog::Embedded(_) => "embedded".into(),
            EventLog::Kafka(l) => format!("kafka {}", l.config().brokers),
        }
    }
}

fn kafka_config(s: &Settings) -> anyhow::Result<KafkaConfig> {
    let layout = if s.kafka_topic_mode == "per-type" {
        TopicLayout::PerType {
            prefix: s.kafka_topic.clone(),
            types: ugc_model::EVENT_TYPES
                .iter()
                .chain(ugc_model::CONTENT_EVENT_TYPES)
                .map(|t| t.to_string())
                .collect(),
        }
    } else {
        TopicLayout::Single {
            topic: s.kafka_topic.clone(),
        }
    };
    if layout.topics().contains(&s.kafka_dlq_topic) {
        bail!(
            "--kafka-dlq-topic {} is also an event topic",
            s.kafka_dlq_topic
        );
    }
    Ok(KafkaConfig {
        brokers: s.kafka_brokers.clone(),
        layout,
        dead_letter_topic: s.kafka_dlq_topic.clone(),
        partitions: s.kafka_partitions,
        replication_factor: s.kafka_replication_factor,
        min_insync_replicas: s.kafka_min_insync_replicas,
        compression: s
            .kafka_compression
            .parse()
            .map_err(|e: String| anyhow::anyhow!(e))?,
        linger: Duration::from_millis(s.kafka_linger_ms),
        batch_bytes: s.kafka_batch_bytes,
        queue_max_messages: s.kafka_queue_messages,
        queue_max_kbytes: s.kafka_queue_kbytes,
        delivery_timeout: Duration::from_millis(s.kafka_delivery_timeout_ms),
        group_id: s.kafka_group.clone(),
        session_timeout: Duration::from_millis(s.kafka_session_timeout_ms),
        assignment_strategy: s.kafka_assignment.clone(),
        ..KafkaConfig::default()
    })
}

#[derive(Clone)]
struct LoaderState {
    store: Arc<dyn EventStore>,
    status: Arc<LoaderStatus>,
}

/// The HTTP surface of a loader-only process: liveness, and readiness (the store
/// answers) with what the loader has done.
pub fn loader_router(store: Arc<dyn EventStore>, status: Arc<LoaderStatus>) -> axum::Router {
    axum::Router::new()
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/readyz", get(loader_ready))
        .with_state(LoaderState { store, status })
}

async fn loader_ready(State(st): State<LoaderState>) -> (StatusCode, Json<Value>) {
    let store = st.store.ping().await.err().map(|e| e.to_string());
    let s = &st.status;
    let body = json!({
        "status": if store.is_none() { "ready" } else { "not_ready" },
        "store": store,
        "loader": {
            "rows_loaded": s.rows_loaded.load(Ordering::Relaxed),
            "batches_loaded": s.batches_loaded.load(Ordering::Relaxed),
            "dead_letters": s.dead_letters.load(Ordering::Relaxed),
            "duplicates_dropped": s.duplicates_dropped.load(Ordering::Relaxed),
            "last_error": s.last_error(),
        },
    });
    let code = if store.is_none() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body))
}
