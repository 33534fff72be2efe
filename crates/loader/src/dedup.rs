//! The loader's memory of recently stored event ids.
//!
//! A client that retries after a lost answer sends the same event id again, and the
//! edge has no way to know the first attempt was durable. Such a retry reaches the log
//! as a second record; this window drops it before it reaches the store, so the store
//! holds the event once without waiting for a background merge. Seeded from the store
//! at start, so a restart does not forget what was just loaded. Bounded: retries come
//! within seconds or minutes, not days; beyond the window the ReplacingMergeTree key
//! (ending in user_id, event_id) still folds duplicates at merge time.
//!
//! An id is remembered *per user*: event ids come from clients, and one viewer's client
//! reusing an id another viewer sent must not suppress that viewer's event. The user is
//! kept as a 64-bit hash beside the id, so a million remembered ids stay a few tens of
//! megabytes; two users would have to share both a hash and an event id to collide.

use std::collections::{HashSet, VecDeque};
use std::hash::{DefaultHasher, Hash, Hasher};

use ugc_model::{EventId, UserId};

/// An event id as seen by one user (`None`: anonymous events).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SeenId {
    user: u64,
    id: EventId,
}

impl SeenId {
    pub fn new(user: Option<&UserId>, id: EventId) -> Self {
        // A fixed-key hasher: the same user hashes alike in every process and restart.
        let mut h = DefaultHasher::new();
        user.map(UserId::as_str).hash(&mut h);
        Self {
            user: h.finish(),
            id,
        }
    }
}

pub struct RecentIds {
    set: HashSet<SeenId>,
    order: VecDeque<SeenId>,
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

    pub fn contains(&self, id: &SeenId) -> bool {
        self.set.contains(id)
    }

    /// Remembers `id`, forgetting the oldest beyond the capacity.
    pub fn insert(&mut self, id: SeenId) {
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
    fn an_id_is_remembered_per_user() {
        let (a, b) = (UserId::parse("a").unwrap(), UserId::parse("b").unwrap());
        let id = EventId::new_v7();
        let mut r = RecentIds::new(10);
        r.insert(SeenId::new(Some(&a), id));
        assert!(r.contains(&SeenId::new(Some(&a), id)));
        assert!(!r.contains(&SeenId::new(Some(&b), id)));
        assert!(!r.contains(&SeenId::new(None, id)));
    }

    #[test]
    fn forgets_the_oldest_beyond_capacity() {
        let ids: Vec<SeenId> = (0..3)
            .map(|_| SeenId::new(None, EventId::new_v7()))
            .collect();
        let mut r = RecentIds::new(2);
        for id in &ids {
            r.insert(*id);
        }
        r.insert(ids[2]);
        assert_eq!(r.len(), 2);
        assert!(!r.contains(&ids[0]) && r.contains(&ids[1]) && r.contains(&ids[2]));
    }
}
