//! The loader: log → store, exactly once by event id.
//!
//! The order of operations is the whole guarantee:
//! 1. poll a batch (the log makes it deterministic: a batch handed out before a crash is
//!    handed out again, identical, under the same token);
//! 2. insert it into the store under that token (a retried insert is dropped);
//! 3. only then commit the log position.
//!
//! A crash between any two steps re-delivers the batch, and the token makes the second
//! insert a no-op. Records that cannot be decoded go to the dead-letter table with the
//! reason, in the same insert, so they never block the log (and, where the log has one,
//! to its dead-letter topic first).
//!
//! In a consumer group a range can come back *cut differently*: the member that takes
//! over a partition starts from the last commit and batches by its own clock, so the
//! token differs. The log says when partitions moved here
//! ([`LogConsumer::take_reassigned`]); the loader then re-reads the ids the store holds
//! before loading, and drops those — the range's first owner only releases a partition
//! after committing, or is dead for a whole session timeout, so what it stored is
//! visible by then.

pub mod dedup;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;
use ugc_log::{Batch, LagReader, LogConsumer, PartitionLag};
use ugc_model::{Envelope, UserId};
use ugc_retry::Backoff;
use ugc_store::{DeadLetter, EventStore, LogPosition, StoreBatch, StoreError};

use crate::dedup::{RecentIds, SeenId};

#[derive(Clone, Debug)]
pub struct LoaderConfig {
    /// Most records per insert.
    pub batch_max_records: usize,
    /// Longest a record waits for its batch to fill.
    pub batch_max_wait: Duration,
    /// First and longest pause between retries while the store or log fails.
    pub retry_min: Duration,
    pub retry_max: Duration,
    /// How many recent event ids the loader remembers to drop clients' retries.
    pub dedup_ids: usize,
    /// How far back the memory is re-read from the store at start.
    pub dedup_window: Duration,
    /// A loader that owns no partition, or loads nothing while records wait, for this
    /// long counts as stalled ([`LoaderStatus::stalled`]); `None`: never.
    pub stall_after: Option<Duration>,
}

impl Default for LoaderConfig {
    fn default() -> Self {
        Self {
            batch_max_records: 20_000,
            batch_max_wait: Duration::from_millis(200),
            retry_min: Duration::from_millis(100),
            retry_max: Duration::from_secs(5),
            dedup_ids: 1_000_000,
            dedup_window: Duration::from_secs(3600),
            stall_after: Some(Duration::from_secs(60)),
        }
    }
}

/// What the loader has done, for health checks and metrics.
pub struct LoaderStatus {
    pub rows_loaded: AtomicU64,
    pub batches_loaded: AtomicU64,
    pub dead_letters: AtomicU64,
    /// Records dropped because their event id was already stored (client retries).
    pub duplicates_dropped: AtomicU64,
    /// Records dropped because their user's data was erased after they arrived.
    pub erased_dropped: AtomicU64,
    last_error: Mutex<Option<String>>,
    lag: Mutex<Option<LagReading>>,
    stall_after: Option<Duration>,
    progress: Mutex<Progress>,
}

/// Whether the loader is getting anywhere, as seen from its loop.
struct Progress {
    /// Since when the loader has owned no partition of a shared log (`None`: it owns some).
    unowned_since: Option<Instant>,
    /// Last time it committed a batch, found nothing to load, or was given partitions.
    progressed_at: Instant,
    /// Records waiting in its partitions the last time it found nothing to poll.
    waiting: u64,
}

impl Default for LoaderStatus {
    fn default() -> Self {
        Self::new(None)
    }
}

impl LoaderStatus {
    fn new(stall_after: Option<Duration>) -> Self {
        let now = Instant::now();
        Self {
            rows_loaded: AtomicU64::new(0),
            batches_loaded: AtomicU64::new(0),
            dead_letters: AtomicU64::new(0),
            duplicates_dropped: AtomicU64::new(0),
            erased_dropped: AtomicU64::new(0),
            last_error: Mutex::new(None),
            lag: Mutex::new(None),
            stall_after,
            progress: Mutex::new(Progress {
                // Until the first poll says otherwise, a new member owns nothing yet.
                unowned_since: Some(now),
                progressed_at: now,
                waiting: 0,
            }),
        }
    }

    /// Why the loader counts as stalled: it has owned no partition, or has loaded
    /// nothing while records wait in its partitions, for longer than the configured
    /// time. A group stuck in a rebalance looks like this from every member, so an
    /// orchestrator watching readiness sees it. `None` while the loader is fine.
    pub fn stalled(&self) -> Option<String> {
        let after = self.stall_after?;
        let p = self.progress.lock().ok()?;
        if let Some(since) = p.unowned_since {
            let idle = since.elapsed();
            return (idle > after).then(|| {
                format!(
                    "owned no log partition for {} s (stalled after {} s)",
                    idle.as_secs(),
                    after.as_secs()
                )
            });
        }
        let idle = p.progressed_at.elapsed();
        (p.waiting > 0 && idle > after).then(|| {
            format!(
                "loaded nothing for {} s while {} records wait in its partitions (stalled after {} s)",
                idle.as_secs(),
                p.waiting,
                after.as_secs()
            )
        })
    }

    fn with_progress(&self, f: impl FnOnce(&mut Progress)) {
        if let Ok(mut p) = self.progress.lock() {
            f(&mut p);
        }
    }

    /// Notes how many partitions the consumer owns after a poll.
    fn owned(&self, partitions: Option<usize>) {
        self.with_progress(|p| match partitions {
            Some(0) => {
                p.unowned_since.get_or_insert_with(Instant::now);
            }
            _ => {
                if p.unowned_since.take().is_some() {
                    // Just given partitions: give it the full time to load them.
                    p.progressed_at = Instant::now();
                    p.waiting = 0;
                }
            }
        });
    }

    /// A batch is stored and committed, or the loader found nothing left to load.
    fn progressed(&self) {
        self.with_progress(|p| {
            p.progressed_at = Instant::now();
            p.waiting = 0;
        });
    }

    /// The loader polled nothing, yet `waiting` records sit in its partitions.
    fn waiting(&self, waiting: u64) {
        self.with_progress(|p| p.waiting = waiting);
    }

    /// The error of the most recent failed attempt, cleared by the next success.
    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().map(|e| e.clone()).unwrap_or(None)
    }

    /// The lag as last read, per partition this loader owns; `None` before the first.
    pub fn lag(&self) -> Option<LagReading> {
        self.lag.lock().map(|l| l.clone()).unwrap_or(None)
    }

    fn set_error(&self, e: Option<String>) {
        if let Ok(mut g) = self.last_error.lock() {
            *g = e;
        }
    }
}

pub struct Loader {
    consumer: Box<dyn LogConsumer>,
    store: Arc<dyn EventStore>,
    config: LoaderConfig,
    status: Arc<LoaderStatus>,
}

impl Loader {
    pub fn new(
        consumer: Box<dyn LogConsumer>,
        store: Arc<dyn EventStore>,
        config: LoaderConfig,
    ) -> Self {
        register_metrics();
        Self {
            consumer,
            store,
            status: Arc::new(LoaderStatus::new(config.stall_after)),
            config,
        }
    }

    pub fn status(&self) -> Arc<LoaderStatus> {
        self.status.clone()
    }

    /// Runs until `shutdown` turns true. An uncommitted batch at shutdown is simply
    /// re-delivered at the next start.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        // The lag is read on a task of its own, so a slow answer never holds up a poll;
        // from the start, so it shows while the store is still awaited.
        let _lag = AbortOnDrop(tokio::spawn(watch_lag(
            self.consumer.lag_reader(),
            self.status.clone(),
        )));
        let mut backoff = Backoff::new(self.config.retry_min, self.config.retry_max);
        let mut recent = RecentIds::new(self.config.dedup_ids);
        if self
            .remember_stored(&mut recent, &mut backoff, &mut shutdown)
            .await
        {
            return;
        }
        tracing::info!(ids = recent.len(), "loader started");
        backoff.reset();
        let mut erased = Erased::default();
        while !*shutdown.borrow() {
            let polled = tokio::select! {
                _ = shutdown.changed() => break,
                p = self.consumer.poll(self.config.batch_max_records, self.config.batch_max_wait) => p,
            };
            let owned = self.consumer.owned_partitions();
            self.status.owned(owned);
            let batch = match polled {
                Ok(Some(b)) => b,
                Ok(None) => continue,
                Err(e) => {
                    self.failed(&format!("log poll: {e}"), &mut backoff, &mut shutdown)
                        .await;
                    continue;
                }
            };
            // Partitions that moved here may hold a range their previous owner stored
            // but did not commit: learn what the store holds before loading it.
            if self.consumer.take_reassigned() {
                tracing::info!(token = %batch.token, "log partitions reassigned: re-reading stored event ids");
                if self
                    .remember_stored(&mut recent, &mut backoff, &mut shutdown)
                    .await
                {
                    return;
                }
            }
            let mut store_batch = decode(&batch);
            let bytes: usize = batch.records.iter().map(|r| r.payload.len()).sum();
            if !store_batch.dead_letters.is_empty() {
                let rejected: Vec<(u64, String)> = store_batch
                    .dead_letters
                    .iter()
                    .map(|d| (d.position.offset, d.reason.clone()))
                    .collect();
                while let Err(e) = self.consumer.dead_letters(&batch, &rejected).await {
                    let msg = format!("log dead letters: {e}");
                    if self.failed(&msg, &mut backoff, &mut shutdown).await {
                        return;
                    }
                }
            }
            erased.refresh(self.store.as_ref()).await;
            let erased_now = erased.drop_from(&mut store_batch);
            let before = store_batch.events.len();
            drop_seen(&mut store_batch, &recent);
            let duplicates = before - store_batch.events.len();
            // Insert, then commit, each retried until it succeeds or we shut down. A batch
            // the log has meanwhile given to another consumer is left to that one.
            let mut abandoned = false;
            let started = Instant::now();
            while !self.load(&store_batch).await {
                metrics::counter!("ugc_loader_retries_total", "step" => "insert").increment(1);
                if self.wait(&mut backoff, &mut shutdown).await {
                    return;
                }
                if !self.consumer.still_owns(&batch) {
                    tracing::warn!(token = %batch.token, "the log gave this batch's range to another loader; dropping it uninserted");
                    abandoned = true;
                    break;
                }
            }
            if abandoned {
                continue;
            }
            loop {
                match self.consumer.commit(&batch).await {
                    Ok(()) => break,
                    Err(e) => {
                        let msg = format!("log commit: {e}");
                        if self.failed(&msg, &mut backoff, &mut shutdown).await {
                            return;
                        }
                    }
                }
            }
            metrics::histogram!("ugc_loader_insert_duration_seconds")
                .record(started.elapsed().as_secs_f64());
            for (_, e) in &store_batch.events {
                recent.insert(SeenId::new(e.user_id.as_ref(), e.event_id));
            }
            metrics::counter!("ugc_loader_batches_total").increment(1);
            metrics::counter!("ugc_loader_rows_total").increment(store_batch.events.len() as u64);
            metrics::counter!("ugc_loader_bytes_total").increment(bytes as u64);
            metrics::counter!("ugc_loader_dead_letters_total", "reason" => "undecodable")
                .increment(store_batch.dead_letters.len() as u64);
            metrics::counter!("ugc_loader_duplicates_dropped_total").increment(duplicates as u64);
            mark_insert();
            backoff.reset();
            self.status.set_error(None);
            self.status.progressed();
            self.status
                .duplicates_dropped
                .fetch_add(duplicates as u64, Ordering::Relaxed);
            self.status
                .erased_dropped
                .fetch_add(erased_now as u64, Ordering::Relaxed);
            self.status
                .rows_loaded
                .fetch_add(store_batch.events.len() as u64, Ordering::Relaxed);
            self.status
                .dead_letters
                .fetch_add(store_batch.dead_letters.len() as u64, Ordering::Relaxed);
            self.status.batches_loaded.fetch_add(1, Ordering::Relaxed);
            tracing::info!(
                batch_token = %batch.token,
                partition = batch.partition,
                rows = store_batch.events.len(),
                dead_letters = store_batch.dead_letters.len(),
                duplicates,
                "batch stored"
            );
        }
    }

    /// Adds the ids the store received within the dedup window to `recent`, retrying
    /// until the store answers; true when shutting down instead.
    async fn remember_stored(
        &self,
        recent: &mut RecentIds,
        backoff: &mut Backoff,
        shutdown: &mut watch::Receiver<bool>,
    ) -> bool {
        loop {
            match self
                .store
                .recent_event_ids(self.config.dedup_window, self.config.dedup_ids)
                .await
            {
                Ok(ids) => {
                    // Newest first from the store; remember oldest first so eviction order holds.
                    for (user, id) in ids.into_iter().rev() {
                        recent.insert(SeenId::new(user.as_ref(), id));
                    }
                    return false;
                }
                Err(e) => {
                    let msg = format!("reading recent event ids: {e}");
                    if self.failed(&msg, backoff, shutdown).await {
                        return true;
                    }
                }
            }
        }
    }

    /// One attempt to put the batch in the store. A batch the store *refuses* (as
    /// opposed to cannot take now) is split so that one bad row cannot block the log:
    /// rows go in one by one under derived tokens, and refused rows become dead letters.
    async fn load(&self, batch: &StoreBatch) -> bool {
        match self.store.insert(batch).await {
            Ok(()) => true,
            Err(StoreError::Rejected(reason)) => {
                tracing::warn!(token = %batch.token, %reason, "store refused a batch; loading it row by row");
                self.load_row_by_row(batch).await
            }
            Err(e) => {
                tracing::warn!(token = %batch.token, error = %e, "store insert failed; will retry");
                self.status.set_error(Some(e.to_string()));
                false
            }
        }
    }

    async fn load_row_by_row(&self, batch: &StoreBatch) -> bool {
        let mut dead = batch.dead_letters.clone();
        for (pos, env) in &batch.events {
            let single = StoreBatch {
                token: format!("{}/{}", batch.token, pos.offset),
                events: vec![(*pos, env.clone())],
                dead_letters: vec![],
            };
            match self.store.insert(&single).await {
                Ok(()) => {}
                Err(StoreError::Rejected(reason)) => {
                    metrics::counter!("ugc_loader_dead_letters_total", "reason" => "refused_by_store")
                        .increment(1);
                    dead.push(DeadLetter {
                        position: *pos,
                        reason: format!("store refused the row: {reason}"),
                        payload: env.encode(),
                    })
                }
                Err(e) => {
                    self.status.set_error(Some(e.to_string()));
                    return false;
                }
            }
        }
        let rest = StoreBatch {
            token: format!("{}/dead", batch.token),
            events: vec![],
            dead_letters: dead,
        };
        match self.store.insert(&rest).await {
            Ok(()) => true,
            Err(e) => {
                self.status.set_error(Some(e.to_string()));
                false
            }
        }
    }

    /// Records the failure and waits; returns true when shutting down.
    async fn failed(
        &self,
        msg: &str,
        backoff: &mut Backoff,
        shutdown: &mut watch::Receiver<bool>,
    ) -> bool {
        tracing::warn!(error = msg, "loader step failed; will retry");
        metrics::counter!("ugc_loader_retries_total", "step" => "log").increment(1);
        self.status.set_error(Some(msg.to_owned()));
        self.wait(backoff, shutdown).await
    }

    async fn wait(&self, backoff: &mut Backoff, shutdown: &mut watch::Receiver<bool>) -> bool {
        tokio::select! {
            _ = shutdown.changed() => true,
            _ = tokio::time::sleep(backoff.next_pause()) => *shutdown.borrow(),
        }
    }
}

/// When the last batch was stored (Unix ms; 0: never), for "time since the last insert",
/// which the metrics endpoint computes when scraped.
static LAST_INSERT_MS: AtomicU64 = AtomicU64::new(0);

fn mark_insert() {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    LAST_INSERT_MS.store(now, Ordering::Relaxed);
}

/// Seconds since this process's loader last stored a batch; `None` before the first.
pub fn seconds_since_last_insert() -> Option<f64> {
    let last = LAST_INSERT_MS.load(Ordering::Relaxed);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    (last > 0).then(|| now.saturating_sub(last) as f64 / 1000.0)
}

/// Series exist from the start, so a scrape before the first batch shows zeros.
fn register_metrics() {
    for name in [
        "ugc_loader_batches_total",
        "ugc_loader_rows_total",
        "ugc_loader_bytes_total",
        "ugc_loader_duplicates_dropped_total",
    ] {
        metrics::counter!(name).absolute(0);
    }
    for reason in ["undecodable", "refused_by_store"] {
        metrics::counter!("ugc_loader_dead_letters_total", "reason" => reason).absolute(0);
    }
    for step in ["insert", "log"] {
        metrics::counter!("ugc_loader_retries_total", "step" => step).absolute(0);
    }
    let _ = metrics::histogram!("ugc_loader_insert_duration_seconds");
}

/// How often the lag is read, and how long one reading may take.
const LAG_EVERY: Duration = Duration::from_secs(1);
const LAG_TIMEOUT: Duration = Duration::from_secs(5);

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The lag as last read: per partition this loader owns, and when.
#[derive(Clone, Debug)]
pub struct LagReading {
    pub partitions: Vec<PartitionLag>,
    pub at: SystemTime,
}

/// Reads the lag (events in the log not yet committed as stored) at most once a second,
/// each reading bounded by a timeout, into `ugc_loader_lag_events` and `status`. A
/// partition that left this loader is set to 0: its new owner reports it.
async fn watch_lag(reader: Arc<dyn LagReader>, status: Arc<LoaderStatus>) {
    let mut tick = tokio::time::interval(LAG_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut shown: HashSet<(Option<String>, u32)> = HashSet::new();
    loop {
        tick.tick().await;
        let read = match tokio::time::timeout(LAG_TIMEOUT, reader.read()).await {
            Ok(r) => r,
            Err(_) => Err(ugc_log::LogError::Timeout(LAG_TIMEOUT)),
        };
        let partitions = match read {
            Ok(p) => p,
            Err(e) => {
                tracing::debug!(error = %e, "cannot read the loader's lag now");
                continue;
            }
        };
        let owned: HashSet<(Option<String>, u32)> = partitions
            .iter()
            .map(|p| (p.topic.clone(), p.partition))
            .collect();
        for p in &partitions {
            lag_gauge(&p.topic, p.partition).set(p.lag as f64);
        }
        for (topic, partition) in shown.difference(&owned) {
            lag_gauge(topic, *partition).set(0.0);
        }
        shown.extend(owned);
        // Whether records wait that this loader is not loading: the stall check's input.
        match partitions.iter().map(|p| p.lag).sum::<u64>() {
            0 => status.progressed(),
            waiting => status.waiting(waiting),
        }
        if let Ok(mut g) = status.lag.lock() {
            *g = Some(LagReading {
                partitions,
                at: SystemTime::now(),
            });
        }
    }
}

/// The embedded log's one partition has no labels; a Kafka partition has its topic's.
fn lag_gauge(topic: &Option<String>, partition: u32) -> metrics::Gauge {
    match topic {
        None => metrics::gauge!("ugc_loader_lag_events"),
        Some(t) => metrics::gauge!(
            "ugc_loader_lag_events",
            "topic" => t.clone(),
            "partition" => partition.to_string()
        ),
    }
}

/// Users whose data was erased, with the second of the request, as the store last said.
/// An event of such a user that arrived up to then is dropped: it was in the log when
/// the erasure ran, and must not come back.
#[derive(Default)]
struct Erased {
    by_user: HashMap<UserId, u64>,
    read_at: Option<Instant>,
}

impl Erased {
    /// How stale the list may be: the erasure job waits longer than this before it
    /// trusts that no loader will insert the user's old events again.
    const REFRESH: Duration = Duration::from_secs(1);

    async fn refresh(&mut self, store: &dyn EventStore) {
        if self.read_at.is_some_and(|t| t.elapsed() < Self::REFRESH) {
            return;
        }
        match store.erasures().await {
            Ok(list) => {
                self.by_user = list.into_iter().map(|e| (e.user, e.requested_secs)).fold(
                    HashMap::new(),
                    |mut m, (u, s)| {
                        let at = m.entry(u).or_insert(s);
                        *at = (*at).max(s);
                        m
                    },
                );
                self.read_at = Some(Instant::now());
            }
            // Load on with the list we have: the erasure job deletes again whatever
            // lands meanwhile, so this only delays an erasure, never undoes it.
            Err(e) => tracing::warn!(error = %e, "cannot read erasures; using the last list"),
        }
    }

    fn drop_from(&self, batch: &mut StoreBatch) -> usize {
        if self.by_user.is_empty() {
            return 0;
        }
        let before = batch.events.len();
        batch.events.retain(|(_, e)| {
            let Some(user) = &e.user_id else { return true };
            match self.by_user.get(user) {
                Some(&secs) => e.received_at.millis().div_euclid(1000) > secs as i64,
                None => true,
            }
        });
        before - batch.events.len()
    }
}

/// Turns log records into store rows; what does not decode becomes a dead letter.
fn decode(batch: &Batch) -> StoreBatch {
    let mut out = StoreBatch {
        token: batch.token.clone(),
        events: Vec::with_capacity(batch.records.len()),
        dead_letters: vec![],
    };
    for rec in &batch.records {
        let position = LogPosition {
            partition: rec.partition,
            offset: rec.offset,
        };
        match Envelope::decode(&rec.payload) {
            Ok(env) => out.events.push((position, env)),
            Err(reason) => {
                tracing::warn!(offset = rec.offset, %reason, "undecodable log record sent to dead letters");
                out.dead_letters.push(DeadLetter {
                    position,
                    reason,
                    payload: rec.payload.clone(),
                })
            }
        }
    }
    out
}

/// Drops events whose id is already stored for their user, or earlier in the same batch
/// for the same user (another user's event with the same id is a different event). The result
/// depends only on the batch and what the store held, so a retry after a crash either
/// builds the same block (dropped by its token) or leaves out what already landed.
fn drop_seen(batch: &mut StoreBatch, recent: &RecentIds) {
    let mut in_batch = std::collections::HashSet::with_capacity(batch.events.len());
    batch.events.retain(|(_, e)| {
        let seen = SeenId::new(e.user_id.as_ref(), e.event_id);
        !recent.contains(&seen) && in_batch.insert(seen)
    });
}
#[cfg(test)]
mod tests {
    use super::*;

    const AFTER: Duration = Duration::from_secs(60);

    /// A status whose progress clock reads `ago` in the past.
    fn status(unowned: Option<Duration>, progressed: Duration, waiting: u64) -> LoaderStatus {
        let s = LoaderStatus::new(Some(AFTER));
        let now = Instant::now();
        *s.progress.lock().unwrap() = Progress {
            unowned_since: unowned.map(|ago| now - ago),
            progressed_at: now - progressed,
            waiting,
        };
        s
    }

    #[test]
    fn owning_no_partition_past_the_stall_time_is_a_stall() {
        let s = status(Some(Duration::from_secs(61)), Duration::ZERO, 0);
        assert!(
            s.stalled()
                .unwrap()
                .contains("owned no log partition for 61 s")
        );
        assert!(
            status(Some(Duration::from_secs(59)), Duration::ZERO, 0)
                .stalled()
                .is_none()
        );
    }

    #[test]
    fn loading_nothing_while_records_wait_past_the_stall_time_is_a_stall() {
        let s = status(None, Duration::from_secs(61), 500);
        assert!(s.stalled().unwrap().contains("500 records wait"));
        // Nothing waiting: an idle loader on a quiet log is fine.
        assert!(status(None, Duration::from_secs(61), 0).stalled().is_none());
        // Given partitions again: the clock starts over.
        let s = status(Some(Duration::from_secs(61)), Duration::from_secs(61), 500);
        s.owned(Some(3));
        assert!(s.stalled().is_none());
        s.owned(None);
        assert!(
            s.stalled().is_none(),
            "a log that is not shared is always owned"
        );
    }

    #[test]
    fn without_a_stall_time_nothing_is_a_stall() {
        let s = LoaderStatus::default();
        s.owned(Some(0));
        s.waiting(10);
        assert!(s.stalled().is_none());
    }
}
