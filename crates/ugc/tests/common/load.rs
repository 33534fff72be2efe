//! One load generator and one exactly-once checker, for the tests that break things
//! under load (kill -9, a broker or a store outage, loaders dying and joining). Only what
//! a 202 acknowledged counts; an unacknowledged batch is never resent (its ids are simply
//! not counted, the next batch has new ones), so "stored exactly once" is checked against
//! exactly what the clients were promised.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use ugc_testkit::Rng;

use super::Server;

pub const FILMS: [&str; 3] = [
    "1ec4cd73-2fd5-4f25-af68-b6595d279af2",
    "2b5e3c1a-0d4f-4e7a-9c8b-3f2a1d0e9c8b",
    "3c6f4d2b-1e5a-4f8b-8d9c-4a3b2e1f0d9c",
];
/// Ids per page when reading a user's stored ids back.
const PAGE: usize = 50_000;

/// What may answer a valid batch without acknowledging it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The server stays up: only a 503 with Retry-After (a dependency is down), or no
    /// answer at all. Any other status is a failure.
    RetryAfter,
    /// The server is killed and restarted under the load: any 5xx and an answer cut
    /// short are not acknowledged either. A 4xx is still a failure.
    ServerMayDie,
}

/// What a load sends.
#[derive(Clone)]
pub struct Spec {
    /// Task `i` posts for the users of `tokens[i % len]`, one user after another.
    pub tokens: Vec<Vec<String>>,
    pub tasks: usize,
    /// Events per batch, drawn from this inclusive range.
    pub batch: (u64, u64),
    /// Pause before each request.
    pub pause: Duration,
    /// The tasks stop by themselves once this many events are acknowledged.
    pub cap: u64,
    pub seed: u64,
    pub refusal: Refusal,
}

impl Spec {
    /// `tasks` tasks posting batches of `batch` events as fast as they are answered.
    pub fn new(tokens: Vec<Vec<String>>, tasks: usize, batch: u64) -> Spec {
        Spec {
            tokens,
            tasks,
            batch: (batch, batch),
            pause: Duration::ZERO,
            cap: u64::MAX,
            seed: 1,
            refusal: Refusal::RetryAfter,
        }
    }
}

/// What the load tasks share with the test.
#[derive(Default)]
pub struct Shared {
    stop: AtomicBool,
    acked: AtomicU64,
    ids: Mutex<Vec<String>>,
    /// 503s with Retry-After, and the slowest of them.
    pub refused: AtomicU64,
    pub slowest_refusal_ms: AtomicU64,
    /// Requests that got no acknowledgement otherwise (no answer, a cut answer, a 5xx
    /// while the server dies), and the events in them.
    pub unanswered: AtomicU64,
    pub unacked_events: AtomicU64,
    /// Something that must never happen (a 4xx, a rejected item, a changed id).
    failure: Mutex<Option<String>>,
}

impl Shared {
    pub fn acked(&self) -> u64 {
        self.acked.load(Ordering::SeqCst)
    }

    /// Every id acknowledged so far.
    pub fn acked_ids(&self) -> HashSet<String> {
        self.ids.lock().unwrap().iter().cloned().collect()
    }

    /// Counts ids the test itself had acknowledged outside the load.
    pub fn add_acked(&self, ids: Vec<String>) {
        self.acked.fetch_add(ids.len() as u64, Ordering::SeqCst);
        self.ids.lock().unwrap().extend(ids);
    }

    pub fn failure(&self) -> Option<String> {
        self.failure.lock().unwrap().clone()
    }

    /// Panics with the load's failure, if any.
    pub fn check(&self) {
        if let Some(f) = self.failure() {
            panic!("{f}");
        }
    }

    fn fail(&self, msg: String) {
        self.failure.lock().unwrap().get_or_insert(msg);
        self.stop.store(true, Ordering::SeqCst);
    }
}

pub struct Load {
    pub shared: Arc<Shared>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    /// Starts the tasks of `spec` against `server`'s batch route.
    pub fn start(server: &Server, spec: Spec) -> Load {
        let shared = Arc::new(Shared::default());
        let url = format!("{}/api/v1/events/batch", server.base);
        let tasks = (0..spec.tasks)
            .map(|i| {
                let tokens = spec.tokens[i % spec.tokens.len()].clone();
                let seed = spec.seed ^ (i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
                tokio::spawn(task(
                    server.http.clone(),
                    url.clone(),
                    tokens,
                    spec.clone(),
                    seed,
                    shared.clone(),
                ))
            })
            .collect();
        Load { shared, tasks }
    }

    pub fn acked(&self) -> u64 {
        self.shared.acked()
    }

    /// Waits until more than `n` events are acknowledged, failing on a load failure or
    /// at the deadline.
    pub async fn wait_acked(&self, n: u64, within: Duration, why: &str) {
        let deadline = Instant::now() + within;
        while self.acked() < n {
            self.shared.check();
            assert!(
                Instant::now() < deadline,
                "{why}: only {} of {n} acknowledged within {within:?}",
                self.acked()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Stops the tasks; the acknowledged ids (each once: the clients chose them fresh).
    pub async fn stop(self) -> HashSet<String> {
        self.shared.stop.store(true, Ordering::SeqCst);
        for t in self.tasks {
            t.await.expect("load task");
        }
        self.shared.check();
        let ids = self.shared.ids.lock().unwrap().clone();
        let set: HashSet<String> = ids.iter().cloned().collect();
        assert_eq!(set.len(), ids.len(), "client ids are unique");
        set
    }
}

async fn task(
    http: reqwest::Client,
    url: String,
    tokens: Vec<String>,
    spec: Spec,
    seed: u64,
    shared: Arc<Shared>,
) {
    let mut rng = Rng::new(seed);
    for token in tokens.iter().cycle() {
        if shared.stop.load(Ordering::SeqCst) || shared.acked() >= spec.cap {
            return;
        }
        if !spec.pause.is_zero() {
            tokio::time::sleep(spec.pause).await;
        }
        let n = rng.range(spec.batch.0, spec.batch.1);
        let ids: Vec<String> = (0..n).map(|_| uuid::Uuid::new_v4().to_string()).collect();
        let batch: Vec<Value> = ids
            .iter()
            .map(|id| {
                let film = FILMS[(rng.next() % FILMS.len() as u64) as usize];
                let at = rng.range(0, 7200);
                if rng.next().is_multiple_of(4) {
                    json!({"type":"pause","film_id":film,"position":at,"event_id":id})
                } else {
                    json!({"type":"view_progress","film_id":film,"film_timestamp":at,"event_id":id})
                }
            })
            .collect();
        let t = Instant::now();
        let answer = match http.post(&url).bearer_auth(token).json(&batch).send().await {
            Ok(r) => {
                let status = r.status().as_u16();
                let retry_after = r.headers().contains_key("retry-after");
                // A body cut by a kill is no acknowledgement.
                let body = r
                    .bytes()
                    .await
                    .ok()
                    .and_then(|b| serde_json::from_slice::<Value>(&b).ok());
                Some((status, retry_after, body))
            }
            Err(_) => None,
        };
        let dying = spec.refusal == Refusal::ServerMayDie;
        match answer {
            Some((202, _, Some(body))) => {
                let returned: Vec<&str> = body["event_ids"]
                    .as_array()
                    .map(|a| a.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                let sent: Vec<&str> = ids.iter().map(String::as_str).collect();
                if body["rejected"].as_u64() != Some(0)
                    || body["accepted"].as_u64() != Some(n)
                    || returned != sent
                {
                    shared.fail(format!(
                        "a valid batch of {n} was not accepted whole with the client's ids: {body}"
                    ));
                    return;
                }
                shared.add_acked(ids);
            }
            Some((503, true, _)) => {
                shared.refused.fetch_add(1, Ordering::SeqCst);
                shared
                    .slowest_refusal_ms
                    .fetch_max(t.elapsed().as_millis() as u64, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Some((status, _, body)) if !(dying && (status >= 500 || status == 202)) => {
                shared.fail(format!("a valid batch got {status}: {body:?}"));
                return;
            }
            _ => {
                // No answer (the server is down or starting), or, while it dies, a 5xx
                // or a cut answer: not acknowledged; move on after a short pause.
                shared.unanswered.fetch_add(1, Ordering::SeqCst);
                shared.unacked_events.fetch_add(n, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// `user_id IN (...)` for `users`.
pub fn of_users(users: &[String]) -> String {
    let list: Vec<String> = users.iter().map(|u| format!("'{u}'")).collect();
    format!("user_id IN ({})", list.join(", "))
}

/// (rows, distinct ids) of `users` in the store, physically (no FINAL).
pub async fn totals(server: &Server, users: &[String]) -> (u64, u64) {
    let rows = server
        .sql(&format!(
            "SELECT count() AS n, uniqExact(event_id) AS u FROM ugc.events WHERE {}",
            of_users(users)
        ))
        .await;
    (
        rows[0]["n"].as_u64().expect("n"),
        rows[0]["u"].as_u64().expect("u"),
    )
}

/// Every stored event id of `users` with its row count (paged; no FINAL, so a duplicate
/// shows).
pub async fn stored_ids(server: &Server, users: &[String]) -> HashMap<String, u64> {
    let mut out: HashMap<String, u64> = HashMap::new();
    let mut offset = 0;
    loop {
        let rows = server
            .sql(&format!(
                "SELECT toString(event_id) AS id FROM ugc.events WHERE {} \
                 ORDER BY event_id LIMIT {PAGE} OFFSET {offset}",
                of_users(users)
            ))
            .await;
        for r in &rows {
            *out.entry(r["id"].as_str().expect("id").to_owned())
                .or_default() += 1;
        }
        if rows.len() < PAGE {
            return out;
        }
        offset += PAGE;
    }
}

/// Waits until every id in `ids` is stored (once or more), failing at `deadline` with
/// `logs()`.
pub async fn wait_stored(
    server: &Server,
    users: &[String],
    ids: &HashSet<String>,
    deadline: Instant,
    why: &str,
    logs: impl Fn() -> String,
) {
    loop {
        let (rows, _) = totals(server, users).await;
        let (count, missing) = if rows < ids.len() as u64 {
            // Fewer rows than ids: some are missing; reading every id can wait.
            (ids.len() - rows as usize, Vec::new())
        } else {
            let s = stored_ids(server, users).await;
            let missing: Vec<&String> = ids.iter().filter(|id| !s.contains_key(*id)).collect();
            if missing.is_empty() {
                return;
            }
            (missing.len(), missing)
        };
        assert!(
            Instant::now() < deadline,
            "{why}: {count} of {} acknowledged events still not stored (e.g. {:?})\n{}",
            ids.len(),
            examples(missing),
            logs()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn examples<'a>(ids: impl IntoIterator<Item = &'a String>) -> Vec<&'a String> {
    let mut v: Vec<&String> = ids.into_iter().collect();
    v.sort();
    v.truncate(10);
    v
}

/// Posts one event for each of `users` and waits until all are stored: each user's
/// events are in order in the log, so once a user's marker is stored, whatever was
/// acknowledged for that user before it has been through the loader.
async fn markers(server: &Server, users: &[String], within: Duration, logs: &impl Fn() -> String) {
    let mut ids = HashSet::new();
    for user in users {
        let id = uuid::Uuid::new_v4().to_string();
        let (status, body) = server
            .post(
                "/api/v1/events",
                &server.token(user, &[]),
                &json!({"type":"full_view","film_id":FILMS[0],"event_id":id}),
            )
            .await;
        assert_eq!(status, 202, "marker event: {body}");
        ids.insert(id);
    }
    let deadline = Instant::now() + within;
    loop {
        let list: Vec<String> = ids.iter().map(|i| format!("toUUID('{i}')")).collect();
        let rows = server
            .sql(&format!(
                "SELECT count() AS n FROM ugc.events WHERE event_id IN ({})",
                list.join(", ")
            ))
            .await;
        if rows[0]["n"].as_u64() >= Some(ids.len() as u64) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the marker events were not stored within {within:?}: {rows:?}\n{}",
            logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits (up to `within`) until every acknowledged id of `users` is stored and the
/// loaders have passed a marker event of each user, then checks that each acknowledged
/// event is stored exactly once and nothing of theirs twice. The stored ids (markers
/// included) with their row counts.
pub async fn assert_exactly_once(
    server: &Server,
    users: &[String],
    acked: &HashSet<String>,
    within: Duration,
    when: &str,
    logs: impl Fn() -> String,
) -> HashMap<String, u64> {
    let deadline = Instant::now() + within;
    wait_stored(server, users, acked, deadline, when, &logs).await;
    markers(
        server,
        users,
        deadline.saturating_duration_since(Instant::now()),
        &logs,
    )
    .await;
    let (rows, distinct) = totals(server, users).await;
    let stored = stored_ids(server, users).await;
    let missing: Vec<&String> = acked
        .iter()
        .filter(|id| !stored.contains_key(*id))
        .collect();
    assert!(
        missing.is_empty(),
        "{when}: {} of {} acknowledged events are missing from the store \
         (rows {rows}, distinct ids {distinct}); e.g. {:?}\n{}",
        missing.len(),
        acked.len(),
        examples(missing.iter().copied()),
        logs()
    );
    let dups: Vec<String> = stored
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(id, n)| {
            let whose = if acked.contains(id) {
                "acknowledged"
            } else {
                "not acknowledged"
            };
            format!("{id} ×{n} ({whose})")
        })
        .collect();
    assert!(
        rows == distinct && dups.is_empty(),
        "{when}: events stored more than once: count() {rows} vs uniqExact(event_id) \
         {distinct}; {} ids duplicated, e.g. {:?}\n{}",
        dups.len(),
        examples(&dups),
        logs()
    );
    assert_eq!(
        stored.len() as u64,
        distinct,
        "{when}: paged ids disagree with uniqExact"
    );
    stored
}
