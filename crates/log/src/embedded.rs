//! The embedded log: one redb file, one partition.
//!
//! redb gives crash-safe, checksummed, copy-on-write commits, so a kill -9 at any
//! instant leaves either the old or the new state and never a torn record. Durability
//! costs one fsync per commit; a single writer thread turns that into *group commit*:
//! it drains every append request waiting in its queue into one write transaction, so
//! under load thousands of requests share one fsync.
//!
//! Layout: `records` maps offset → encoded event; `meta` holds the next offset to
//! assign, the consumer's committed offset and its in-flight batch, if any.

use std::path::Path;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::{mpsc, oneshot, watch};

use crate::{
    Batch, LagReader, LogConsumer, LogError, LogProducer, LogRecord, OutRecord, PartitionLag,
};

const RECORDS: TableDefinition<u64, &[u8]> = TableDefinition::new("records");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const NEXT: &str = "next_offset";
const COMMITTED: &str = "committed";
const PENDING_START: &str = "pending_start";
const PENDING_END: &str = "pending_end";
/// redb's page cache (its default is 1 GiB).
const CACHE_BYTES: usize = 32 * 1024 * 1024;

#[derive(Clone, Debug)]
pub struct EmbeddedLogConfig {
    /// Append requests that may wait for the writer; beyond that appends fail fast with
    /// [`LogError::Overloaded`] instead of queueing without bound.
    pub queue_capacity: usize,
    /// Upper bound of records in one group commit.
    pub max_group_records: usize,
    /// How long an append waits for its fsync before answering "unavailable".
    pub ack_timeout: Duration,
}

impl Default for EmbeddedLogConfig {
    fn default() -> Self {
        Self {
            queue_capacity: 8192,
            max_group_records: 50_000,
            ack_timeout: Duration::from_secs(5),
        }
    }
}

struct AppendRequest {
    records: Vec<OutRecord>,
    done: oneshot::Sender<Result<(), LogError>>,
}

/// Handle on an open embedded log; hands out one producer and consumers.
pub struct EmbeddedLog {
    db: Arc<Database>,
    tx: mpsc::Sender<AppendRequest>,
    head: watch::Receiver<u64>,
    config: EmbeddedLogConfig,
}

fn storage(e: impl std::fmt::Display) -> LogError {
    LogError::Unavailable(e.to_string())
}

impl EmbeddedLog {
    pub fn open(path: &Path, config: EmbeddedLogConfig) -> Result<Self, LogError> {
        // redb caches up to 1 GiB by default, and the log's pages are written once and
        // read once soon after: a small cache keeps the process's memory flat under a
        // large backlog, and the OS page cache still serves the reads.
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create(path)
            .map_err(storage)?;
        // Create the tables up front so readers never see "table does not exist".
        let txn = db.begin_write().map_err(storage)?;
        let next = {
            txn.open_table(RECORDS).map_err(storage)?;
            let meta = txn.open_table(META).map_err(storage)?;
            meta.get(NEXT)
                .map_err(storage)?
                .map(|v| v.value())
                .unwrap_or(0)
        };
        txn.commit().map_err(storage)?;

        let db = Arc::new(db);
        let (tx, rx) = mpsc::channel(config.queue_capacity.max(1));
        let (head_tx, head) = watch::channel(next);
        let writer_db = db.clone();
        let max_group = config.max_group_records.max(1);
        thread::Builder::new()
            .name("ugc-log-writer".into())
            .spawn(move || writer_loop(writer_db, rx, head_tx, next, max_group))
            .map_err(storage)?;
        Ok(Self {
            db,
            tx,
            head,
            config,
        })
    }

    pub fn producer(&self) -> EmbeddedProducer {
        EmbeddedProducer {
            tx: self.tx.clone(),
            timeout: self.config.ack_timeout,
        }
    }

    /// The single consumer of this log (the embedded loader).
    pub fn consumer(&self) -> EmbeddedConsumer {
        EmbeddedConsumer {
            db: self.db.clone(),
            head: self.head.clone(),
        }
    }
}

fn writer_loop(
    db: Arc<Database>,
    mut rx: mpsc::Receiver<AppendRequest>,
    head: watch::Sender<u64>,
    mut next: u64,
    max_group: usize,
) {
    while let Some(first) = rx.blocking_recv() {
        let mut count = first.records.len();
        let mut group = vec![first];
        // Everything already waiting joins this commit: that is the group commit.
        while count < max_group {
            match rx.try_recv() {
                Ok(req) => {
                    count += req.records.len();
                    group.push(req);
                }
                Err(_) => break,
            }
        }
        match write_group(&db, &group, next) {
            Ok(new_next) => {
                next = new_next;
                head.send_replace(next);
                for req in group {
                    let _ = req.done.send(Ok(()));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "embedded log commit failed");
                for req in group {
                    let _ = req.done.send(Err(LogError::Unavailable(e.to_string())));
                }
            }
        }
    }
}

fn write_group(db: &Database, group: &[AppendRequest], mut next: u64) -> Result<u64, redb::Error> {
    let mut txn = db.begin_write()?;
    txn.set_durability(Durability::Immediate)?;
    {
        let mut records = txn.open_table(RECORDS)?;
        for req in group {
            for rec in &req.records {
                records.insert(next, rec.payload.as_slice())?;
                next += 1;
            }
        }
        txn.open_table(META)?.insert(NEXT, next)?;
    }
    txn.commit()?;
    Ok(next)
}

#[derive(Clone)]
pub struct EmbeddedProducer {
    tx: mpsc::Sender<AppendRequest>,
    timeout: Duration,
}

#[async_trait]
impl LogProducer for EmbeddedProducer {
    async fn append(&self, records: Vec<OutRecord>) -> Result<(), LogError> {
        if records.is_empty() {
            return Ok(());
        }
        let (done, wait) = oneshot::channel();
        self.tx
            .try_send(AppendRequest { records, done })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => LogError::Overloaded,
                mpsc::error::TrySendError::Closed(_) => LogError::Closed,
            })?;
        match tokio::time::timeout(self.timeout, wait).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(LogError::Closed),
            Err(_) => Err(LogError::Timeout(self.timeout)),
        }
    }

    async fn check(&self) -> Result<(), LogError> {
        if self.tx.is_closed() {
            return Err(LogError::Closed);
        }
        if self.tx.capacity() == 0 {
            return Err(LogError::Overloaded);
        }
        Ok(())
    }

    fn queue_depth(&self) -> Option<u64> {
        Some((self.tx.max_capacity() - self.tx.capacity()) as u64)
    }
}

pub struct EmbeddedConsumer {
    db: Arc<Database>,
    head: watch::Receiver<u64>,
}

struct Position {
    committed: u64,
    pending: Option<(u64, u64)>,
}

/// Runs redb work (reads of up to a batch of records, fsync'd commits) on the blocking
/// pool, so the loader never stalls the runtime threads that serve HTTP.
async fn blocking<T: Send + 'static>(
    db: &Arc<Database>,
    f: impl FnOnce(&Database) -> Result<T, LogError> + Send + 'static,
) -> Result<T, LogError> {
    let db = db.clone();
    tokio::task::spawn_blocking(move || f(&db))
        .await
        .map_err(|e| LogError::Unavailable(format!("log task failed: {e}")))?
}

fn position(db: &Database) -> Result<Position, LogError> {
    let txn = db.begin_read().map_err(storage)?;
    let meta = txn.open_table(META).map_err(storage)?;
    let get = |k| -> Result<Option<u64>, LogError> {
        Ok(meta.get(k).map_err(storage)?.map(|v| v.value()))
    };
    let committed = get(COMMITTED)?.unwrap_or(0);
    let pending = match (get(PENDING_START)?, get(PENDING_END)?) {
        (Some(s), Some(e)) if s == committed && e > s => Some((s, e)),
        _ => None,
    };
    Ok(Position { committed, pending })
}

fn read_range(db: &Database, start: u64, end: u64) -> Result<Vec<LogRecord>, LogError> {
    let txn = db.begin_read().map_err(storage)?;
    let table = txn.open_table(RECORDS).map_err(storage)?;
    let mut out = Vec::with_capacity((end - start) as usize);
    for entry in table.range(start..end).map_err(storage)? {
        let (k, v) = entry.map_err(storage)?;
        out.push(LogRecord {
            partition: 0,
            offset: k.value(),
            payload: v.value().to_vec(),
        });
    }
    Ok(out)
}

fn write_meta(
    db: &Database,
    f: impl FnOnce(&mut redb::Table<&str, u64>, &mut redb::Table<u64, &[u8]>) -> Result<(), redb::Error>,
) -> Result<(), LogError> {
    let run = || -> Result<(), redb::Error> {
        let mut txn = db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        {
            let mut meta = txn.open_table(META)?;
            let mut records = txn.open_table(RECORDS)?;
            f(&mut meta, &mut records)?;
        }
        txn.commit()?;
        Ok(())
    };
    run().map_err(storage)
}

fn batch(db: &Database, start: u64, end: u64) -> Result<Batch, LogError> {
    let records = read_range(db, start, end)?;
    if records.len() as u64 != end - start {
        return Err(LogError::Unavailable(format!(
            "log range {start}..{end} holds {} records; it was reclaimed or is corrupt",
            records.len()
        )));
    }
    Ok(Batch {
        token: format!("embedded:0:{start}-{end}"),
        partition: 0,
        start,
        end,
        records,
    })
}

#[async_trait]
impl LogConsumer for EmbeddedConsumer {
    async fn poll(
        &mut self,
        max_records: usize,
        max_wait: Duration,
    ) -> Result<Option<Batch>, LogError> {
        let max_records = max_records.max(1) as u64;
        let pos = blocking(&self.db, position).await?;
        if let Some((start, end)) = pos.pending {
            return blocking(&self.db, move |db| batch(db, start, end))
                .await
                .map(Some);
        }
        let start = pos.committed;
        let deadline = Instant::now() + max_wait;
        // Wait for the first record, then for the batch to fill or the deadline to pass.
        loop {
            let head = *self.head.borrow_and_update();
            if head >= start + max_records {
                break;
            }
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            if tokio::time::timeout(deadline - now, self.head.changed())
                .await
                .is_ok_and(|r| r.is_err())
            {
                return Err(LogError::Closed);
            }
        }
        let head = *self.head.borrow();
        if head <= start {
            return Ok(None);
        }
        let end = head.min(start + max_records);
        blocking(&self.db, move |db| {
            // Record the range before handing it out: a crash from here on replays exactly it.
            write_meta(db, |meta, _| {
                meta.insert(PENDING_START, start)?;
                meta.insert(PENDING_END, end)?;
                Ok(())
            })?;
            batch(db, start, end)
        })
        .await
        .map(Some)
    }

    async fn commit(&mut self, batch: &Batch) -> Result<(), LogError> {
        let end = batch.end;
        blocking(&self.db, move |db| {
            write_meta(db, |meta, records| {
                meta.insert(COMMITTED, end)?;
                meta.remove(PENDING_START)?;
                meta.remove(PENDING_END)?;
                // Reclaim: redb reuses the freed pages for new appends.
                records.retain_in(..end, |_, _| false)?;
                Ok(())
            })
        })
        .await
    }

    fn lag_reader(&self) -> Arc<dyn LagReader> {
        Arc::new(EmbeddedLag {
            db: self.db.clone(),
            head: self.head.clone(),
        })
    }
}

/// The one partition's lag: appended (the writer's head) minus committed.
struct EmbeddedLag {
    db: Arc<Database>,
    head: watch::Receiver<u64>,
}

#[async_trait]
impl LagReader for EmbeddedLag {
    async fn read(&self) -> Result<Vec<PartitionLag>, LogError> {
        let committed = blocking(&self.db, position).await?.committed;
        let end = *self.head.borrow();
        Ok(vec![PartitionLag {
            topic: None,
            partition: 0,
            end,
            committed,
            lag: end.saturating_sub(committed),
        }])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(s: &str) -> OutRecord {
        OutRecord {
            key: Some(b"user".to_vec()),
            kind: "custom",
            payload: s.as_bytes().to_vec(),
        }
    }

    #[tokio::test]
    async fn appends_polls_commits_and_reclaims() {
        let dir = tempfile::tempdir().unwrap();
        let log =
            EmbeddedLog::open(&dir.path().join("log.redb"), EmbeddedLogConfig::default()).unwrap();
        let p = log.producer();
        p.append(vec![rec("a"), rec("b")]).await.unwrap();
        p.append(vec![rec("c")]).await.unwrap();
        let mut c = log.consumer();
        assert_eq!(c.lag_reader().read().await.unwrap()[0].lag, 3);
        let b = c.poll(2, Duration::from_millis(10)).await.unwrap().unwrap();
        assert_eq!((b.start, b.end), (0, 2));
        assert_eq!(b.records[1].payload, b"b");
        c.commit(&b).await.unwrap();
        assert_eq!(c.lag_reader().read().await.unwrap()[0].lag, 1);
        assert!(
            read_range(&c.db, 0, 2).unwrap().is_empty(),
            "committed records are reclaimed"
        );
        let b = c
            .poll(10, Duration::from_millis(10))
            .await
            .unwrap()
            .unwrap();
        assert_eq!((b.start, b.end, b.token.as_str()), (2, 3, "embedded:0:2-3"));
    }

    #[tokio::test]
    async fn an_uncommitted_batch_is_replayed_identically_after_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.redb");
        let first = {
            let log = EmbeddedLog::open(&path, EmbeddedLogConfig::default()).unwrap();
            log.producer()
                .append(vec![rec("a"), rec("b")])
                .await
                .unwrap();
            let b = log
                .consumer()
                .poll(100, Duration::from_millis(10))
                .await
                .unwrap()
                .unwrap();
            // More records arrive after the batch was cut; they must not join the replay.
            log.producer().append(vec![rec("c")]).await.unwrap();
            b
        };
        // Wait until the writer thread of the dropped log has released the file.
        let deadline = Instant::now() + Duration::from_secs(10);
        let log = loop {
            match EmbeddedLog::open(&path, EmbeddedLogConfig::default()) {
                Ok(log) => break log,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("reopen failed: {e}"),
            }
        };
        let mut c = log.consumer();
        let again = c
            .poll(100, Duration::from_millis(10))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (again.start, again.end, &again.token),
            (first.start, first.end, &first.token)
        );
        c.commit(&again).await.unwrap();
        let rest = c
            .poll(100, Duration::from_millis(10))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(rest.records.len(), 1);
        assert_eq!(rest.records[0].payload, b"c");
    }

    #[tokio::test]
    async fn a_full_queue_is_refused_not_queued() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = EmbeddedLogConfig {
            queue_capacity: 1,
            ..Default::default()
        };
        let log = EmbeddedLog::open(&dir.path().join("log.redb"), cfg).unwrap();
        let p = log.producer();
        let appends: Vec<_> = (0..64)
            .map(|_| {
                let p = p.clone();
                tokio::spawn(async move { p.append(vec![rec("x")]).await })
            })
            .collect();
        let mut overloaded = 0;
        for a in appends {
            match a.await.unwrap() {
                Ok(()) => {}
                Err(LogError::Overloaded) => overloaded += 1,
                Err(e) => panic!("unexpected {e}"),
            }
        }
        assert!(
            overloaded > 0,
            "64 concurrent appends into a queue of 1 must see refusals"
        );
    }
}
