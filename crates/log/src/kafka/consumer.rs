//! The loader's side: one member of the loaders' consumer group.
//!
//! librdkafka runs rebalance callbacks only inside a poll, and the loader polls only
//! after it committed its previous batch, so a partition is never taken away while its
//! batch is being inserted: an in-flight batch is finished before release. A member
//! that stalls longer than `max.poll.interval.ms` (a store down for minutes) is expelled
//! instead; [`LogConsumer::still_owns`] then turns false and the loader drops the batch
//! uninserted, for the new owner to load.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer as _, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Message as _, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use super::batcher::{Buffers, PartKey};
use super::{KafkaConfig, KafkaLog, unavailable};
use crate::{Batch, LagReader, LogConsumer, LogError, LogRecord, PartitionLag};

const BLOCKING_TIMEOUT: Duration = Duration::from_secs(10);

enum Change {
    Assigned(Vec<PartKey>),
    Revoked(Vec<PartKey>),
}

/// Collects assignment changes while librdkafka runs its rebalance callbacks (inside
/// `recv`); the consumer applies them right after, before the next record.
#[derive(Default)]
struct GroupContext {
    changes: Mutex<Vec<Change>>,
}

fn keys(tpl: &TopicPartitionList) -> Vec<PartKey> {
    tpl.elements()
        .iter()
        .map(|e| (Arc::from(e.topic()), e.partition()))
        .collect()
}

impl ClientContext for GroupContext {}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let (Rebalance::Revoke(tpl), Ok(mut c)) = (rebalance, self.changes.lock()) {
            c.push(Change::Revoked(keys(tpl)));
        }
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                if let Ok(mut c) = self.changes.lock() {
                    c.push(Change::Assigned(keys(tpl)));
                }
            }
            Rebalance::Revoke(_) => {}
            Rebalance::Error(e) => tracing::warn!(error = %e, "Kafka rebalance failed"),
        }
    }
}

/// A batch handed out and not yet committed.
struct HandedOut {
    key: PartKey,
    start: u64,
    polled_at: Instant,
}

pub struct KafkaConsumer {
    log: KafkaLog,
    consumer: Arc<StreamConsumer<GroupContext>>,
    dead_letters: FutureProducer,
    buffers: Buffers,
    handed: HashMap<String, HandedOut>,
    reassigned: bool,
    subscribed: bool,
    /// The event topics, in configuration order: a topic's index numbers its partitions.
    topics: Vec<String>,
    give_up_after: Duration,
}

impl KafkaConsumer {
    pub(super) fn new(log: KafkaLog) -> Result<Self, LogError> {
        let c = log.config();
        let consumer = group_member(c)?;
        let dead_letters: FutureProducer = c
            .client("ugc-loader-dlq")
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("compression.type", c.compression.as_str())
            .set("message.timeout.ms", "30000")
            .create()
            .map_err(unavailable)?;
        let topics = c.layout.topics();
        // A batch held for most of the poll interval is given up before librdkafka
        // leaves the group and the partition can go to another member.
        let give_up_after = c.max_poll_interval.mul_f64(0.8);
        Ok(Self {
            give_up_after,
            log,
            consumer: Arc::new(consumer),
            dead_letters,
            buffers: Buffers::default(),
            handed: HashMap::new(),
            reassigned: false,
            subscribed: false,
            topics,
        })
    }

    async fn subscribe(&mut self) -> Result<(), LogError> {
        if self.subscribed {
            return Ok(());
        }
        // Subscribing to a topic that does not exist yet would wait for the next metadata
        // refresh (minutes) once it is created: create first.
        self.log.ensure_topics().await?;
        let topics = self.log.config().layout.topics();
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        self.consumer.subscribe(&names).map_err(unavailable)?;
        self.subscribed = true;
        tracing::info!(topics = ?topics, group = %self.log.config().group_id, "joined the loaders' consumer group");
        Ok(())
    }

    /// Applies what the rebalance callbacks recorded during the last `recv`.
    async fn apply_changes(&mut self) -> Result<(), LogError> {
        let changes = std::mem::take(
            &mut *self
                .consumer
                .context()
                .changes
                .lock()
                .map_err(|_| LogError::Closed)?,
        );
        for change in changes {
            match change {
                Change::Revoked(keys) => {
                    tracing::info!(partitions = ?keys, "Kafka partitions revoked");
                    for k in &keys {
                        self.buffers.revoke(k);
                    }
                    self.handed.retain(|_, h| !keys.contains(&h.key));
                }
                // Cooperative rebalances also announce empty increments: nothing moved.
                Change::Assigned(keys) if keys.is_empty() => {}
                Change::Assigned(keys) => {
                    tracing::info!(partitions = ?keys, "Kafka partitions assigned");
                    for k in keys {
                        self.buffers.assign(k);
                    }
                    // Whatever their previous owner stored is visible by now: it commits
                    // before it releases a partition, or it died a session timeout ago.
                    self.reassigned = true;
                }
            }
        }
        // A batch handed out and never committed was dropped by the loader: read its
        // range again, so it comes back before anything after it.
        let abandoned: Vec<HandedOut> = self.handed.drain().map(|(_, h)| h).collect();
        for h in abandoned {
            if !self.buffers.owns(&h.key) {
                continue;
            }
            self.buffers.assign(h.key.clone());
            self.reassigned = true;
            let consumer = self.consumer.clone();
            let (topic, partition, start) = (h.key.0.clone(), h.key.1, h.start as i64);
            tokio::task::spawn_blocking(move || {
                consumer.seek(&topic, partition, Offset::Offset(start), BLOCKING_TIMEOUT)
            })
            .await
            .map_err(|e| LogError::Unavailable(e.to_string()))?
            .map_err(unavailable)?;
        }
        Ok(())
    }

    /// The partition number records carry into the store: with a topic per event type,
    /// `topic index × 65536 + partition`, so that a log position (partition, offset)
    /// names one record across all topics (stores use positions to spot repeats).
    fn position_partition(&self, topic: &str, partition: i32) -> u32 {
        let index = self.topics.iter().position(|t| t == topic).unwrap_or(0) as u32;
        (index << 16) | (partition as u32 & 0xffff)
    }

    fn hand_out(&mut self, key: PartKey, records: Vec<LogRecord>) -> Batch {
        let start = records.first().map_or(0, |r| r.offset);
        let end = records.last().map_or(0, |r| r.offset + 1);
        let token = format!("kafka:{}:{}:{start}-{end}", key.0, key.1);
        self.handed.insert(
            token.clone(),
            HandedOut {
                key: key.clone(),
                start,
                polled_at: Instant::now(),
            },
        );
        Batch {
            token,
            partition: self.position_partition(&key.0, key.1),
            start,
            end,
            records,
        }
    }
}

/// A new member of the loaders' group (a fresh member id once it subscribes).
fn group_member(c: &KafkaConfig) -> Result<StreamConsumer<GroupContext>, LogError> {
    let heartbeat = (c.session_timeout / 3).max(Duration::from_millis(100));
    c.client("ugc-loader")
        .set("group.id", &c.group_id)
        // Positions move only when the loader commits, after the store has the rows.
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set(
            "session.timeout.ms",
            c.session_timeout.as_millis().to_string(),
        )
        .set("heartbeat.interval.ms", heartbeat.as_millis().to_string())
        // Also the rebalance timeout the group waits for this member to rejoin.
        .set(
            "max.poll.interval.ms",
            c.max_poll_interval.as_millis().to_string(),
        )
        .set("partition.assignment.strategy", &c.assignment_strategy)
        // A fetch the broker holds open while a partition is empty delays the next
        // record by up to this long (librdkafka's default, 500 ms, dominated the
        // freshness of a quiet topic).
        .set("fetch.wait.max.ms", "100")
        .set(
            "queued.max.messages.kbytes",
            c.consumer_queue_kbytes.to_string(),
        )
        .set(
            "fetch.max.bytes",
            (c.consumer_queue_kbytes * 1024).min(50 << 20).to_string(),
        )
        .create_with_context(GroupContext::default())
        .map_err(unavailable)
}

/// Each broker call of a lag reading waits at most this long.
const LAG_CALL_TIMEOUT: Duration = Duration::from_millis(500);
/// A whole reading waits at most this long; a reading still running then is left to
/// finish on its own, and the next one is refused until it has.
const LAG_READ_TIMEOUT: Duration = Duration::from_secs(3);

/// Reads the lag of the partitions this member owns with the member's own handle
/// (librdkafka's calls are thread-safe), on the blocking pool, apart from `poll`: the
/// high watermark of each partition against the group's committed offset.
struct KafkaLag {
    consumer: Arc<StreamConsumer<GroupContext>>,
    busy: Arc<AtomicBool>,
}

fn read_lag(consumer: &StreamConsumer<GroupContext>) -> Result<Vec<PartitionLag>, KafkaError> {
    let assigned = consumer.assignment()?;
    if assigned.count() == 0 {
        return Ok(vec![]);
    }
    let committed = consumer.committed_offsets(assigned, LAG_CALL_TIMEOUT)?;
    let mut out = Vec::with_capacity(committed.count());
    for e in committed.elements() {
        let (low, high) = consumer.fetch_watermarks(e.topic(), e.partition(), LAG_CALL_TIMEOUT)?;
        // No commit yet: everything still in the partition is behind.
        let from = match e.offset() {
            Offset::Offset(o) => o.max(low),
            _ => low,
        };
        out.push(PartitionLag {
            topic: Some(e.topic().to_owned()),
            partition: e.partition().max(0) as u32,
            end: high.max(0) as u64,
            committed: from.max(0) as u64,
            lag: (high - from).max(0) as u64,
        });
    }
    Ok(out)
}

#[async_trait]
impl LagReader for KafkaLag {
    async fn read(&self) -> Result<Vec<PartitionLag>, LogError> {
        if self.busy.swap(true, Ordering::AcqRel) {
            return Err(LogError::Unavailable(
                "the previous lag reading has not finished".into(),
            ));
        }
        let consumer = self.consumer.clone();
        let busy = self.busy.clone();
        let reading = tokio::task::spawn_blocking(move || {
            let r = read_lag(&consumer);
            busy.store(false, Ordering::Release);
            r
        });
        match tokio::time::timeout(LAG_READ_TIMEOUT, reading).await {
            Ok(Ok(r)) => r.map_err(unavailable),
            Ok(Err(e)) => Err(LogError::Unavailable(e.to_string())),
            Err(_) => Err(LogError::Timeout(LAG_READ_TIMEOUT)),
        }
    }
}

/// Commit failures that mean "this member no longer owns the partition" rather than
/// "try again": the new owner re-reads the range from the last commit.
fn lost_membership(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::IllegalGeneration
                | RDKafkaErrorCode::UnknownMemberId
                | RDKafkaErrorCode::RebalanceInProgress
                | RDKafkaErrorCode::FencedInstanceId
                | RDKafkaErrorCode::AssignmentLost
                | RDKafkaErrorCode::State
        )
    )
}

#[async_trait]
impl LogConsumer for KafkaConsumer {
    async fn poll(
        &mut self,
        max_records: usize,
        max_wait: Duration,
    ) -> Result<Option<Batch>, LogError> {
        self.subscribe().await?;
        self.apply_changes().await?;
        let give_up = Instant::now() + max_wait;
        loop {
            let now = Instant::now();
            if let Some(cut) = self.buffers.cut(max_records, max_wait, now) {
                return Ok(Some(self.hand_out(cut.key, cut.records)));
            }
            if self.buffers.is_empty() && now >= give_up {
                return Ok(None);
            }
            // Wait for the next record, or until the oldest buffered one is due.
            let until = self.buffers.due_at(max_wait).unwrap_or(give_up);
            let received =
                tokio::time::timeout(until.saturating_duration_since(now), self.consumer.recv())
                    .await;
            let received = match received {
                Err(_) => None,
                Ok(Ok(m)) => match (m.payload(), u64::try_from(m.offset())) {
                    (Some(payload), Ok(offset)) => Some((
                        (Arc::from(m.topic()), m.partition()),
                        LogRecord {
                            partition: self.position_partition(m.topic(), m.partition()),
                            offset,
                            payload: payload.to_vec(),
                        },
                    )),
                    // A tombstone (no value) carries no event.
                    _ => None,
                },
                Ok(Err(KafkaError::PartitionEOF(_))) => None,
                // Broker down, coordinator moving...: librdkafka keeps retrying by itself;
                // report it so the loader backs off and says why.
                Ok(Err(e)) => return Err(unavailable(e)),
            };
            // Rebalance callbacks ran inside recv: apply them before using its record.
            self.apply_changes().await?;
            if let Some((key, record)) = received {
                self.buffers.push(&key, record, Instant::now());
            }
        }
    }

    async fn commit(&mut self, batch: &Batch) -> Result<(), LogError> {
        let Some(handed) = self.handed.remove(&batch.token) else {
            // Its partition was revoked after it was handed out: nothing to commit here.
            return Ok(());
        };
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(
            &handed.key.0,
            handed.key.1,
            Offset::Offset(batch.end as i64),
        )
        .map_err(unavailable)?;
        let consumer = self.consumer.clone();
        let committed =
            tokio::task::spawn_blocking(move || consumer.commit(&tpl, CommitMode::Sync))
                .await
                .map_err(|e| LogError::Unavailable(e.to_string()))?;
        match committed {
            Ok(()) => Ok(()),
            Err(e) if lost_membership(&e) => {
                tracing::warn!(token = %batch.token, error = %e,
                    "batch stored but its commit was refused: the partition is moving; \
                     its next owner re-reads the range and drops the ids already stored");
                Ok(())
            }
            Err(e) => {
                self.handed.insert(batch.token.clone(), handed);
                Err(unavailable(e))
            }
        }
    }

    fn lag_reader(&self) -> Arc<dyn LagReader> {
        Arc::new(KafkaLag {
            consumer: self.consumer.clone(),
            busy: Arc::new(AtomicBool::new(false)),
        })
    }

    async fn dead_letters(
        &mut self,
        batch: &Batch,
        rejected: &[(u64, String)],
    ) -> Result<(), LogError> {
        // The token names the source: `kafka:<topic>:<partition>:<range>` (topic names
        // cannot hold a colon).
        let mut parts = batch.token.split(':');
        let (Some("kafka"), Some(source), Some(partition)) =
            (parts.next(), parts.next(), parts.next())
        else {
            return Err(LogError::Unavailable(format!(
                "not a Kafka batch: {}",
                batch.token
            )));
        };
        let topic = self.log.config().dead_letter_topic.clone();
        let mut deliveries = Vec::with_capacity(rejected.len());
        for (offset, reason) in rejected {
            let Some(record) = batch.records.iter().find(|r| r.offset == *offset) else {
                continue;
            };
            let offset = offset.to_string();
            // The source position makes a copy written twice (a crash before the
            // commit re-delivers the batch) recognisable.
            let headers = OwnedHeaders::new()
                .insert(Header {
                    key: "ugc-reason",
                    value: Some(reason.as_str()),
                })
                .insert(Header {
                    key: "ugc-source-topic",
                    value: Some(source),
                })
                .insert(Header {
                    key: "ugc-source-partition",
                    value: Some(partition),
                })
                .insert(Header {
                    key: "ugc-source-offset",
                    value: Some(offset.as_str()),
                });
            let key = format!("{source}:{partition}:{offset}");
            let r = FutureRecord::to(&topic)
                .key(&key)
                .payload(&record.payload)
                .headers(headers);
            match self.dead_letters.send_result(r) {
                Ok(d) => deliveries.push(d),
                Err((e, _)) => return Err(unavailable(e)),
            }
        }
        for d in deliveries {
            match d.await {
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) => return Err(unavailable(e)),
                Err(_) => return Err(LogError::Closed),
            }
        }
        tracing::warn!(count = rejected.len(), %topic, token = %batch.token, "undecodable records copied to the dead-letter topic");
        Ok(())
    }

    fn take_reassigned(&mut self) -> bool {
        std::mem::take(&mut self.reassigned)
    }

    fn owned_partitions(&self) -> Option<usize> {
        Some(self.buffers.owned())
    }

    fn still_owns(&self, batch: &Batch) -> bool {
        self.handed.get(&batch.token).is_some_and(|h| {
            h.polled_at.elapsed() < self.give_up_after && !self.consumer.assignment_lost()
        })
    }
}
