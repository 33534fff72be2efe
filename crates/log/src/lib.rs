//! The durable event log between the edge and the loader.
//!
//! Two traits make the seam: [`LogProducer`] (the edge appends; `Ok` means durable) and
//! [`LogConsumer`] (the loader polls batches and commits them after the store has them).
//! [`embedded`] fills them with a single-file redb log; [`kafka`] fills the same traits
//! with topics, an idempotent producer and a consumer group.

pub mod embedded;
pub mod kafka;
pub mod metered;

use std::time::Duration;

use async_trait::async_trait;

/// Why the log did not take or give records. Every variant is something the client can
/// retry: the edge maps all of them to 503 with `Retry-After`.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("the event log is overloaded (append queue full)")]
    Overloaded,
    #[error("the event log did not confirm durability within {0:?}")]
    Timeout(Duration),
    #[error("the event log is unavailable: {0}")]
    Unavailable(String),
    #[error("the event log is shut down")]
    Closed,
}

impl LogError {
    /// How long a client should wait before retrying.
    pub fn retry_after(&self) -> Duration {
        match self {
            LogError::Overloaded => Duration::from_secs(1),
            LogError::Timeout(_) | LogError::Unavailable(_) | LogError::Closed => {
                Duration::from_secs(2)
            }
        }
    }
}

/// One record to append. The key groups records that must stay in order (the user);
/// a partitioned log routes by it, the embedded single-partition log keeps total order.
#[derive(Clone, Debug)]
pub struct OutRecord {
    pub key: Option<Vec<u8>>,
    /// The event type (`view_progress`, ...): a log with a topic per type routes by it.
    pub kind: &'static str,
    pub payload: Vec<u8>,
}

#[async_trait]
pub trait LogProducer: Send + Sync + 'static {
    /// Appends all records; returns only once every one of them is durable.
    /// A request's records are appended together (all or none).
    async fn append(&self, records: Vec<OutRecord>) -> Result<(), LogError>;

    /// Cheap readiness probe: can an append succeed right now?
    async fn check(&self) -> Result<(), LogError>;

    /// Appends waiting in the producer's own queue, read without waiting: the embedded
    /// log's requests before the group commit, Kafka's records not yet acknowledged.
    fn queue_depth(&self) -> Option<u64> {
        None
    }
}

/// Records appended to one partition but not yet committed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionLag {
    /// The topic (Kafka), or `None` for the embedded log's one partition.
    pub topic: Option<String>,
    pub partition: u32,
    /// The log's end (the next offset to be appended) and the committed position.
    pub end: u64,
    pub committed: u64,
    /// `end - committed`.
    pub lag: u64,
}

#[async_trait]
pub trait LagReader: Send + Sync + 'static {
    /// The lag of each partition the consumer owns right now.
    async fn read(&self) -> Result<Vec<PartitionLag>, LogError>;
}

/// A record as the consumer sees it, with its position in the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogRecord {
    pub partition: u32,
    pub offset: u64,
    pub payload: Vec<u8>,
}

/// A contiguous range of one partition, handed to the loader as a unit.
///
/// `token` names the range deterministically: after a crash the consumer hands out the
/// very same range again under the same token, which is what lets the store drop a
/// retried insert (dedup token / replicated block dedup).
#[derive(Clone, Debug)]
pub struct Batch {
    pub token: String,
    pub partition: u32,
    /// First offset in the batch.
    pub start: u64,
    /// One past the last offset: the position to commit.
    pub end: u64,
    pub records: Vec<LogRecord>,
}

#[async_trait]
pub trait LogConsumer: Send + Sync + 'static {
    /// Waits up to `max_wait` for records and returns a batch of at most `max_records`,
    /// or `None` when the log stayed empty. A batch that was handed out but not
    /// committed before a crash is handed out again, identical, first.
    async fn poll(
        &mut self,
        max_records: usize,
        max_wait: Duration,
    ) -> Result<Option<Batch>, LogError>;

    /// Durably records that everything up to `batch.end` is in the store, and lets the
    /// log reclaim it.
    async fn commit(&mut self, batch: &Batch) -> Result<(), LogError>;

    /// Reads how far behind this consumer is, apart from it: the loader reads it on a
    /// task of its own, so a slow answer (a broker away) never holds up a poll.
    fn lag_reader(&self) -> std::sync::Arc<dyn LagReader>;

    /// Copies records of `batch` that the loader could not decode — `(offset, reason)` —
    /// to the log's own dead-letter destination, returning once they are durable there.
    /// The embedded log has none (the store's dead-letter table is the only one).
    async fn dead_letters(
        &mut self,
        _batch: &Batch,
        _rejected: &[(u64, String)],
    ) -> Result<(), LogError> {
        Ok(())
    }

    /// True once after this consumer was given partitions another consumer may have
    /// loaded from: the loader then re-reads the stored event ids before loading, so a
    /// range the previous owner stored but did not commit is not stored twice.
    fn take_reassigned(&mut self) -> bool {
        false
    }

    /// Whether `batch` is still this consumer's to load. False once the log may have
    /// handed its range to another consumer (a lost group membership); the loader then
    /// drops the batch uninserted and the new owner loads it.
    fn still_owns(&self, _batch: &Batch) -> bool {
        true
    }

    /// How many partitions this consumer owns now; `None` when the log is not shared
    /// (the consumer always owns all of it). A member of a group owns none while the
    /// group rebalances, and for good when the group is stuck.
    fn owned_partitions(&self) -> Option<usize> {
        None
    }
}
