//! What one process runs (API, loader or both, checked against the backends), the event
//! log it runs on, and the HTTP surface of a loader-only process.

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

use crate::configuration::{LogBackend, ProcessRole, Settings, StoreBackend, TopicMode, name_of};

/// The configured role of this process, refused where it cannot work.
pub fn role_of(s: &Settings) -> anyhow::Result<ProcessRole> {
    let role = s.role;
    let name = name_of(&role);
    if role != ProcessRole::All && s.log_backend != LogBackend::Kafka {
        bail!(
            "--role {name} needs --log-backend kafka: the embedded log lives inside one process, \
             so its API and loader cannot run apart (run --role all)"
        );
    }
    if role != ProcessRole::All && s.store != StoreBackend::Clickhouse {
        bail!(
            "--role {name} needs --store clickhouse: the embedded store belongs to one process, \
             so a separate API would never see what a separate loader stores"
        );
    }
    Ok(role)
}

/// The configured event log.
pub enum EventLog {
    Embedded(EmbeddedLog),
    Kafka(KafkaLog),
}

impl EventLog {
    pub fn open(s: &Settings) -> anyhow::Result<EventLog> {
        if s.log_backend == LogBackend::Kafka {
            let log = KafkaLog::new(kafka_config(s)?)?;
            // Topics are created in the background, retried until the cluster answers: a
            // broker that starts after ugc is normal. /readyz says not ready meanwhile.
            let setup = log.clone();
            tokio::spawn(async move {
                let _ = ugc_retry::retry(
                    ugc_retry::Backoff::new(Duration::from_millis(200), Duration::from_secs(5)),
                    None,
                    |_| true,
                    |_, e| tracing::warn!(error = %e, "cannot create the Kafka topics yet; retrying"),
                    || setup.ensure_topics(),
                )
                .await;
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

    /// The producer, counted (`ugc_log_*`, `ugc_events_accepted_total`).
    pub fn producer(&self) -> anyhow::Result<Arc<ugc_log::metered::Metered>> {
        let (inner, backend): (Arc<dyn LogProducer>, _) = match self {
            EventLog::Embedded(l) => (Arc::new(l.producer()), "embedded"),
            EventLog::Kafka(l) => (Arc::new(l.producer()?), "kafka"),
        };
        Ok(Arc::new(ugc_log::metered::Metered::new(
            inner,
            backend,
            ugc_model::EVENT_TYPES,
        )))
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

pub(crate) fn kafka_config(s: &Settings) -> anyhow::Result<KafkaConfig> {
    let layout = if s.kafka_topic_mode == TopicMode::PerType {
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
        compression: s.kafka_compression.into(),
        linger: Duration::from_millis(s.kafka_linger_ms),
        batch_bytes: s.kafka_batch_bytes,
        queue_max_messages: s.kafka_queue_messages,
        queue_max_kbytes: s.kafka_queue_kbytes,
        delivery_timeout: Duration::from_millis(s.kafka_delivery_timeout_ms),
        group_id: s.kafka_group.clone(),
        session_timeout: Duration::from_millis(s.kafka_session_timeout_ms),
        assignment_strategy: s.kafka_assignment.as_str().to_owned(),
        max_poll_interval: Duration::from_millis(s.kafka_max_poll_interval_ms),
        debug: s.kafka_debug.clone(),
        ..KafkaConfig::default()
    })
}

#[derive(Clone)]
struct LoaderState {
    store: Arc<dyn EventStore>,
    status: Arc<LoaderStatus>,
}

/// The HTTP surface of a loader-only process: liveness, and readiness (the store
/// answers and the loader is not stalled) with what the loader has done.
pub fn loader_router(store: Arc<dyn EventStore>, status: Arc<LoaderStatus>) -> axum::Router {
    axum::Router::new()
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/readyz", get(loader_ready))
        .with_state(LoaderState { store, status })
}

async fn loader_ready(State(st): State<LoaderState>) -> (StatusCode, Json<Value>) {
    let store = st.store.ping().await.err().map(|e| e.to_string());
    let s = &st.status;
    let stalled = s.stalled();
    let ready = store.is_none() && stalled.is_none();
    let body = json!({
        "status": if ready { "ready" } else { "not_ready" },
        "store": store,
        "stalled": stalled,
        "loader": {
            "rows_loaded": s.rows_loaded.load(Ordering::Relaxed),
            "batches_loaded": s.batches_loaded.load(Ordering::Relaxed),
            "dead_letters": s.dead_letters.load(Ordering::Relaxed),
            "duplicates_dropped": s.duplicates_dropped.load(Ordering::Relaxed),
            "last_error": s.last_error(),
        },
    });
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body))
}
