//! Cuts the records a consumer receives into per-partition batches.
//!
//! Pure bookkeeping, no I/O: which partitions this member owns, the records received
//! for each and not yet handed out, and when a batch is due — when a partition has
//! `max_records`, when all buffers together hold that many (memory stays bounded by one
//! batch whatever the partition count), or when a partition's oldest record has waited
//! `max_wait`.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::LogRecord;

/// A topic partition.
pub(crate) type PartKey = (Arc<str>, i32);

#[derive(Default)]
struct Part {
    records: VecDeque<LogRecord>,
    /// When the oldest buffered record arrived.
    since: Option<Instant>,
}

#[derive(Default)]
pub(crate) struct Buffers {
    parts: HashMap<PartKey, Part>,
    total: usize,
}

/// A batch's records.
pub(crate) struct Cut {
    pub key: PartKey,
    pub records: Vec<LogRecord>,
}

impl Buffers {
    /// This member now owns `key`; anything buffered for it before is dropped (it is
    /// re-read from the committed offset).
    pub fn assign(&mut self, key: PartKey) {
        self.revoke(&key);
        self.parts.insert(key, Part::default());
    }

    /// `key` moved away: its buffered records are dropped, never handed out.
    pub fn revoke(&mut self, key: &PartKey) {
        if let Some(p) = self.parts.remove(key) {
            self.total -= p.records.len();
        }
    }

    pub fn owns(&self, key: &PartKey) -> bool {
        self.parts.contains_key(key)
    }

    /// How many partitions this member owns.
    pub fn owned(&self) -> usize {
        self.parts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// Buffers a received record; false (and dropped) when the partition is not owned.
    pub fn push(&mut self, key: &PartKey, record: LogRecord, now: Instant) -> bool {
        let Some(p) = self.parts.get_mut(key) else {
            return false;
        };
        // A record at or before one already buffered is a re-fetch: keep the first copy.
        if p.records.back().is_some_and(|r| record.offset <= r.offset) {
            return true;
        }
        p.since.get_or_insert(now);
        p.records.push_back(record);
        self.total += 1;
        true
    }

    /// When the oldest buffered record is due, if any is buffered.
    pub fn due_at(&self, max_wait: Duration) -> Option<Instant> {
        self.parts
            .values()
            .filter_map(|p| p.since)
            .min()
            .map(|t| t + max_wait)
    }

    /// Takes the next batch that is due at `now`, if any.
    pub fn cut(&mut self, max_records: usize, max_wait: Duration, now: Instant) -> Option<Cut> {
        let max_records = max_records.max(1);
        let largest = self
            .parts
            .iter()
            .filter(|(_, p)| !p.records.is_empty())
            .max_by_key(|(_, p)| p.records.len())
            .map(|(k, p)| (k.clone(), p.records.len()));
        let oldest = self
            .parts
            .iter()
            .filter_map(|(k, p)| p.since.map(|t| (k, t)))
            .min_by_key(|(_, t)| *t)
            .map(|(k, t)| (k.clone(), t));
        let key = match (largest, oldest) {
            (Some((k, len)), _) if len >= max_records || self.total >= max_records => k,
            (_, Some((k, since))) if now >= since + max_wait => k,
            _ => return None,
        };
        let p = self.parts.get_mut(&key)?;
        let n = p.records.len().min(max_records);
        let records: Vec<LogRecord> = p.records.drain(..n).collect();
        self.total -= n;
        // What stays behind has waited since before this cut: it keeps its place in line.
        if p.records.is_empty() {
            p.since = None;
        }
        Some(Cut { key, records })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(p: i32) -> PartKey {
        (Arc::from("t"), p)
    }

    fn rec(p: i32, offset: u64) -> LogRecord {
        LogRecord {
            partition: p as u32,
            offset,
            payload: vec![],
        }
    }

    const WAIT: Duration = Duration::from_millis(200);

    #[test]
    fn a_full_partition_is_cut_at_once_and_the_rest_waits() {
        let mut b = Buffers::default();
        let t0 = Instant::now();
        b.assign(key(0));
        b.assign(key(1));
        for o in 0..5 {
            assert!(b.push(&key(0), rec(0, o), t0));
        }
        assert!(b.push(&key(1), rec(1, 0), t0));
        assert!(
            b.cut(10, WAIT, t0).is_none(),
            "nothing full, nothing old yet"
        );
        let c = b.cut(3, WAIT, t0).unwrap();
        assert_eq!(c.key, key(0));
        assert_eq!(
            c.records.iter().map(|r| r.offset).collect::<Vec<_>>(),
            [0, 1, 2]
        );
        // Partition 0 keeps 2 records (< 3), partition 1 has 1: total 3 = max, so the largest goes.
        let c = b.cut(3, WAIT, t0).unwrap();
        assert_eq!((c.key.clone(), c.records.len()), (key(0), 2));
        assert!(b.cut(3, WAIT, t0).is_none());
        let c = b.cut(3, WAIT, t0 + WAIT).unwrap();
        assert_eq!((c.key, c.records.len()), (key(1), 1));
        assert!(b.is_empty() && b.due_at(WAIT).is_none());
    }

    #[test]
    fn the_oldest_partition_goes_first_when_due() {
        let mut b = Buffers::default();
        let t0 = Instant::now();
        b.assign(key(0));
        b.assign(key(1));
        b.push(&key(1), rec(1, 7), t0);
        b.push(&key(0), rec(0, 3), t0 + Duration::from_millis(50));
        assert_eq!(b.due_at(WAIT), Some(t0 + WAIT));
        let c = b.cut(100, WAIT, t0 + WAIT).unwrap();
        assert_eq!(c.key, key(1));
        assert!(
            b.cut(100, WAIT, t0 + WAIT).is_none(),
            "partition 0 not due yet"
        );
    }

    #[test]
    fn revoked_or_unowned_partitions_buffer_nothing() {
        let mut b = Buffers::default();
        let t0 = Instant::now();
        assert!(!b.push(&key(0), rec(0, 0), t0));
        b.assign(key(0));
        b.push(&key(0), rec(0, 0), t0);
        b.push(&key(0), rec(0, 0), t0); // a re-fetch of the same offset
        b.revoke(&key(0));
        assert!(b.is_empty());
        b.assign(key(0));
        b.push(&key(0), rec(0, 0), t0);
        let c = b.cut(1, WAIT, t0).unwrap();
        assert_eq!(c.records.len(), 1);
    }
}
