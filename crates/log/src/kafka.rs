//! The Kafka log: topics on a Kafka cluster (any broker speaking the Kafka protocol).
//!
//! - [`KafkaProducer`]: idempotent, `acks=all`; an append returns only after every
//!   record's delivery report, within a short deadline, else a [`LogError`] (the API's
//!   503). The key is the user, so one viewer's events stay ordered on one partition;
//!   records without a key are spread over the partitions.
//! - [`KafkaConsumer`]: a consumer-group member with manual commits. Each [`Batch`] is a
//!   contiguous range of one partition, named `kafka:<topic>:<partition>:<start>-<end>`;
//!   the loader commits it only after the store has it. When partitions move between
//!   members, the new owner is told ([`LogConsumer::take_reassigned`]) so that the loader
//!   re-reads the stored ids before loading a range the previous owner may have stored
//!   without committing.
//! - Topics are created at start when missing, with the configured partitions,
//!   replication factor and `min.insync.replicas`; undecodable records are copied to a
//!   dead-letter topic.
//!
//! [`Batch`]: crate::Batch
//! [`LogConsumer::take_reassigned`]: crate::LogConsumer::take_reassigned

mod batcher;
mod consumer;
mod producer;

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;

pub use consumer::KafkaConsumer;
pub use producer::KafkaProducer;

use crate::LogError;

/// One topic for every event type, or one per type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TopicLayout {
    /// Every event in `topic`.
    Single { topic: String },
    /// Events of type `t` in `<prefix>.<t>`, for each of `types`.
    PerType { prefix: String, types: Vec<String> },
}

impl TopicLayout {
    /// The topics events are written to and loaded from.
    pub fn topics(&self) -> Vec<String> {
        match self {
            TopicLayout::Single { topic } => vec![topic.clone()],
            TopicLayout::PerType { prefix, types } => {
                types.iter().map(|t| format!("{prefix}.{t}")).collect()
            }
        }
    }
}

/// Codec of produced record batches (consumers read every codec).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl Compression {
    pub fn as_str(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }
}

impl FromStr for Compression {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "none" => Compression::None,
            "gzip" => Compression::Gzip,
            "snappy" => Compression::Snappy,
            "lz4" => Compression::Lz4,
            "zstd" => Compression::Zstd,
            other => {
                return Err(format!(
                    "unknown compression `{other}`: one of none, gzip, snappy, lz4, zstd"
                ));
            }
        })
    }
}

#[derive(Clone, Debug)]
pub struct KafkaConfig {
    /// Bootstrap brokers, `host:port[,host:port...]`.
    pub brokers: String,
    pub layout: TopicLayout,
    /// Where records the loader cannot decode are copied.
    pub dead_letter_topic: String,
    /// Used when topics are created; existing topics are left as they are.
    pub partitions: i32,
    pub replication_factor: i32,
    pub min_insync_replicas: i32,
    pub compression: Compression,
    /// How long the producer waits to fill a batch; each append waits at least this long.
    pub linger: Duration,
    /// Largest produce batch per partition, in bytes.
    pub batch_bytes: usize,
    /// Bounds of the producer's local queue; beyond them appends fail with
    /// [`LogError::Overloaded`] rather than buffer without bound.
    pub queue_max_messages: usize,
    pub queue_max_kbytes: usize,
    /// Deadline of an append's delivery reports; past it the append fails and the API
    /// answers 503 (librdkafka goes on retrying the records for a while).
    pub delivery_timeout: Duration,
    /// Consumer group of the loaders.
    pub group_id: String,
    /// A loader that stops heartbeating for this long loses its partitions.
    pub session_timeout: Duration,
    /// `range` (eager, the default): every member releases all its partitions before
    /// any is handed out again — a barrier that needs nothing from the broker but the
    /// group protocol. `cooperative-sticky` moves only the partitions that change owner,
    /// but relies on the broker relaying each member's owned partitions faithfully.
    pub assignment_strategy: String,
    /// `max.poll.interval.ms`, which is also the rebalance timeout a loader sends when it
    /// joins: on Apache Kafka the longest a rebalance waits for a member that is alive
    /// but not rejoining (a loader stuck retrying an insert). A loader holding a batch
    /// for most of it gives the batch up uninserted; a partition on which the group
    /// commits nothing for this long while records wait makes a member rejoin afresh.
    pub max_poll_interval: Duration,
    /// librdkafka debug contexts (`cgrp,consumer,...`) logged at debug level under the
    /// `librdkafka` target; empty for none.
    pub debug: String,
    /// Prefetched records per loader, in KiB (bounds the loader's memory).
    pub consumer_queue_kbytes: usize,
}

impl Default for KafkaConfig {
    /// Fits a three-broker cluster: RF 3, `min.insync.replicas` 2.
    fn default() -> Self {
        Self {
            brokers: "127.0.0.1:9092".into(),
            layout: TopicLayout::Single {
                topic: "ugc.events".into(),
            },
            dead_letter_topic: "ugc.events.dlq".into(),
            partitions: 12,
            replication_factor: 3,
            min_insync_replicas: 2,
            compression: Compression::Lz4,
            linger: Duration::from_millis(1),
            batch_bytes: 1 << 20,
            queue_max_messages: 100_000,
            queue_max_kbytes: 64 * 1024,
            delivery_timeout: Duration::from_millis(1000),
            group_id: "ugc-loader".into(),
            session_timeout: Duration::from_secs(10),
            assignment_strategy: "range".into(),
            max_poll_interval: Duration::from_secs(20),
            debug: String::new(),
            consumer_queue_kbytes: 32 * 1024,
        }
    }
}

impl KafkaConfig {
    /// Settings every client shares: where the brokers are, and quick reconnects so
    /// that a restarted broker is used again within about a second.
    fn client(&self, client_id: &str) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers)
            .set("client.id", client_id)
            .set("reconnect.backoff.ms", "100")
            .set("reconnect.backoff.max.ms", "1000")
            .set("socket.keepalive.enable", "true");
        if !self.debug.is_empty() {
            c.set("debug", &self.debug);
        }
        c
    }
}

/// Handle on a Kafka cluster: creates the topics, hands out producers and consumers.
#[derive(Clone)]
pub struct KafkaLog {
    config: Arc<KafkaConfig>,
    topics: Arc<TopicSetup>,
}

struct TopicSetup {
    done: AtomicBool,
    lock: tokio::sync::Mutex<()>,
}

impl KafkaLog {
    pub fn new(config: KafkaConfig) -> Result<Self, LogError> {
        if config.brokers.trim().is_empty() {
            return Err(LogError::Unavailable("no Kafka brokers configured".into()));
        }
        if config.layout.topics().is_empty() {
            return Err(LogError::Unavailable("no Kafka topics configured".into()));
        }
        // librdkafka refuses a consumer whose poll interval is below its session timeout.
        if config.max_poll_interval < config.session_timeout {
            return Err(LogError::Unavailable(format!(
                "the Kafka max poll interval ({} ms) must be at least the session timeout ({} ms)",
                config.max_poll_interval.as_millis(),
                config.session_timeout.as_millis()
            )));
        }
        Ok(Self {
            config: Arc::new(config),
            topics: Arc::new(TopicSetup {
                done: AtomicBool::new(false),
                lock: tokio::sync::Mutex::new(()),
            }),
        })
    }

    pub fn config(&self) -> &KafkaConfig {
        &self.config
    }

    /// Whether [`KafkaLog::ensure_topics`] has succeeded.
    pub fn topics_ready(&self) -> bool {
        self.topics.done.load(Ordering::Acquire)
    }

    /// Creates the event and dead-letter topics that do not exist yet. Idempotent:
    /// after one success it returns at once.
    pub async fn ensure_topics(&self) -> Result<(), LogError> {
        if self.topics_ready() {
            return Ok(());
        }
        let _one_at_a_time = self.topics.lock.lock().await;
        if self.topics_ready() {
            return Ok(());
        }
        let admin: AdminClient<DefaultClientContext> = self
            .config
            .client("ugc-admin")
            .create()
            .map_err(unavailable)?;
        let mut names = self.config.layout.topics();
        names.push(self.config.dead_letter_topic.clone());
        let min_isr = self.config.min_insync_replicas.to_string();
        let new: Vec<NewTopic> = names
            .iter()
            .map(|n| {
                NewTopic::new(
                    n,
                    self.config.partitions,
                    TopicReplication::Fixed(self.config.replication_factor),
                )
                .set("min.insync.replicas", &min_isr)
            })
            .collect();
        let opts = AdminOptions::new()
            .request_timeout(Some(Duration::from_secs(10)))
            .operation_timeout(Some(Duration::from_secs(10)));
        let results = admin
            .create_topics(&new, &opts)
            .await
            .map_err(unavailable)?;
        for r in results {
            match r {
                Ok(name) => tracing::info!(
                    topic = %name,
                    partitions = self.config.partitions,
                    replication_factor = self.config.replication_factor,
                    "created Kafka topic"
                ),
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((name, code)) => {
                    return Err(LogError::Unavailable(format!(
                        "cannot create Kafka topic {name}: {code}"
                    )));
                }
            }
        }
        self.topics.done.store(true, Ordering::Release);
        Ok(())
    }

    pub fn producer(&self) -> Result<KafkaProducer, LogError> {
        KafkaProducer::new(self.clone())
    }

    /// A new member of the loaders' consumer group.
    pub fn consumer(&self) -> Result<KafkaConsumer, LogError> {
        KafkaConsumer::new(self.clone())
    }

    /// Commits, for consumer group `group`, the earliest offset of each partition of the
    /// event topics it has no committed offset for; answers how many it set. A group
    /// without offsets starts where its client's `auto.offset.reset` says, which for a
    /// ClickHouse Kafka engine table is the end of the topic unless the server's config
    /// says otherwise: the records already there would never be read, where ugc's
    /// loaders start at the beginning. It also spares that client the offset lookup,
    /// which fails on tansu when the client must speak the legacy protocol (see
    /// bench/README.md, storage study). Run it before the group has members.
    pub async fn start_group_at_beginning(&self, group: &str) -> Result<usize, LogError> {
        const CALL: Duration = Duration::from_secs(10);
        let config = self.config.clone();
        let group = group.to_owned();
        let work = move || -> Result<usize, KafkaError> {
            use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
            let consumer: BaseConsumer = config
                .client("ugc-admin")
                .set("group.id", &group)
                .set("enable.auto.commit", "false")
                .create()?;
            let mut all = rdkafka::TopicPartitionList::new();
            for topic in config.layout.topics() {
                let meta = consumer.fetch_metadata(Some(&topic), CALL)?;
                for t in meta.topics() {
                    for p in t.partitions() {
                        all.add_partition(&topic, p.id());
                    }
                }
            }
            let committed = consumer.committed_offsets(all, CALL)?;
            let mut start = rdkafka::TopicPartitionList::new();
            for e in committed.elements() {
                if matches!(e.offset(), rdkafka::Offset::Offset(_)) {
                    continue;
                }
                let (low, _) = consumer.fetch_watermarks(e.topic(), e.partition(), CALL)?;
                start.add_partition_offset(
                    e.topic(),
                    e.partition(),
                    rdkafka::Offset::Offset(low),
                )?;
            }
            if start.count() > 0 {
                consumer.commit(&start, CommitMode::Sync)?;
            }
            Ok(start.count())
        };
        tokio::task::spawn_blocking(work)
            .await
            .map_err(|e| LogError::Unavailable(format!("the offset task failed: {e}")))?
            .map_err(unavailable)
    }
}

fn unavailable(e: KafkaError) -> LogError {
    LogError::Unavailable(format!("Kafka: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_type_layout_names_one_topic_per_type() {
        let l = TopicLayout::PerType {
            prefix: "ugc.events".into(),
            types: vec!["pause".into(), "full_view".into()],
        };
        assert_eq!(l.topics(), ["ugc.events.pause", "ugc.events.full_view"]);
    }

    #[test]
    fn compression_names_round_trip() {
        for c in ["none", "gzip", "snappy", "lz4", "zstd"] {
            assert_eq!(c.parse::<Compression>().unwrap().as_str(), c);
        }
        assert!("brotli".parse::<Compression>().is_err());
    }
}
