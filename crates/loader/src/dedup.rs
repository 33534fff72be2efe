//! The loader's memory of recently stored event ids.
//!
//! A client that retries after a lost answer sends the same event id again, and the
//! edge has no way to know the first attempt was durable. Such a retry reaches the log
//! as a second record; this window drops it before it reaches the store, so the store
//! holds the event once without waiting for a background merge. Seeded from the store
//! at start, so a restart does not forget what was just loaded. Bounded: retries come
//! within seconds or minutes, not days; beyond the window the ReplacingMergeTree key
//! (ending in event_id) still folds duplicates at merge time.

use std::collections::{HashSet, VecDeque};

use ugc_model::EventId;

pub struct RecentIds {
    set: HashSet<EventId>,
    order: VecDeque<EventId>,
    cap: usize,
}

impl RecentIds {
    pub fn new(cap: usize) -> Self {
        Self {
            set: HashSet::with_capacity(cap.min(1 << 16)),
            order: VecDeque::new(),
            cap,
        }
    }

    pub fn contains(&self, id: &EventId) -> bool {
        self.set.contains(id)
    }

    /// Remembers `id`, forgetting the oldest beyond the capacity.
    pub fn insert(&mut self, id: EventId) {
        if self.cap == 0 || !self.set.insert(id) {
            return;
        }
        self.order.push_back(id);
        while self.order.len() > self.cap {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forgets_the_oldest_beyond_capacity() {
        let ids: Vec<EventId> = (0..3).map(|_| EventId::new_v7()).collect();
        let mut r = RecentIds::new(2);
        for id in &ids {
            r.insert(*id);
        }
        r.insert(ids[2]);
        assert_eq!(r.len(), 2);
        assert!(!r.contains(&ids[0]) && r.contains(&ids[1]) && r.contains(&ids[2]));
    }
}
