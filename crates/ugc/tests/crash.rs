//! Black-box: kill -9 at random moments under load. Every event the API acknowledged
//! (202) must end up in the store exactly once after restarts on the same data dir.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{Server, new_user};
use serde_json::{Value, json};
use ugc_testkit::Rng;

/// Acknowledged events wanted before the load stops.
const TARGET_ACKED: u64 = 100_000;
/// Kills wanted before the load stops (at least 3; more costs a few seconds each).
const MIN_KILLS: u32 = 5;
const LOAD_TASKS: u64 = 8;
const BATCH_MIN: u64 = 200;
const BATCH_MAX: u64 = 500;
const KILL_DELAY_MS: (u64, u64) = (300, 2500);
const PAGE: usize = 50_000;

const FILMS: [&str; 3] = [
    "1ec4cd73-2fd5-4f25-af68-b6595d279af2",
    "2b5e3c1a-0d4f-4e7a-9c8b-3f2a1d0e9c8b",
    "3c6f4d2b-1e5a-4f8b-8d9c-4a3b2e1f0d9c",
];

/// What the load tasks share with the test.
#[derive(Default)]
struct Shared {
    stop: AtomicBool,
    acked: AtomicU64,
    /// Requests with no acknowledgement (connection errors, non-202, cut answers).
    unacked_requests: AtomicU64,
    unacked_events: AtomicU64,
    /// Something that must never happen (a 4xx, a rejected item, a changed id).
    failure: Mutex<Option<String>>,
}

impl Shared {
    fn fail(&self, msg: String) {
        let mut f = self.failure.lock().unwrap();
        if f.is_none() {
            *f = Some(msg);
        }
        self.stop.store(true, Ordering::SeqCst);
    }

    fn failure(&self) -> Option<String> {
        self.failure.lock().unwrap().clone()
    }
}

/// One load task: batches with fresh client-chosen ids until told to stop. Returns the
/// acknowledged ids. An unacknowledged batch is never resent: its ids are simply not
/// counted, and the next batch has new ids.
async fn load(
    http: reqwest::Client,
    url: String,
    token: String,
    seed: u64,
    shared: Arc<Shared>,
) -> Vec<String> {
    let mut rng = Rng::new(seed);
    let mut acked = Vec::new();
    while !shared.stop.load(Ordering::SeqCst) {
        let n = rng.range(BATCH_MIN, BATCH_MAX);
        let ids: Vec<String> = (0..n).map(|_| uuid::Uuid::new_v4().to_string()).collect();
        let batch: Vec<Value> = ids
            .iter()
            .map(|id| {
                let film = FILMS[(rng.next() % FILMS.len() as u64) as usize];
                if rng.next().is_multiple_of(4) {
                    json!({"type":"pause","film_id":film,"position":rng.range(0, 7200),"event_id":id})
                } else {
                    json!({"type":"view_progress","film_id":film,"film_timestamp":rng.range(0, 7200),"event_id":id})
                }
            })
            .collect();
        let answer = match http
            .post(&url)
            .bearer_auth(&token)
            .json(&batch)
            .send()
            .await
        {
            Ok(r) => {
                let status = r.status().as_u16();
                // A body cut by the kill is no acknowledgement.
                let body = r
                    .bytes()
                    .await
                    .ok()
                    .and_then(|b| serde_json::from_slice::<Value>(&b).ok());
                Some((status, body))
            }
            Err(_) => None,
        };
        match answer {
            Some((202, Some(body))) => {
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
                    break;
                }
                shared.acked.fetch_add(n, Ordering::SeqCst);
                acked.extend(ids);
            }
            Some((status @ 400..=499, body)) => {
                shared.fail(format!("a valid batch got {status}: {body:?}"));
                break;
            }
            _ => {
                // Connection refused/reset while the server is killed or starting,
                // a 5xx, or a cut answer: not acknowledged; move on after a short pause.
                shared.unacked_requests.fetch_add(1, Ordering::SeqCst);
                shared.unacked_events.fetch_add(n, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    acked
}

/// Runs analyst SQL; returns the whole answer (rows and `truncated`).
async fn query(server: &Server, admin: &str, sql: &str) -> Value {
    let (status, body) = server
        .post("/api/v1/query", admin, &json!({ "sql": sql }))
        .await;
    assert_eq!(status, 200, "`{sql}` failed: {body}\n{}", log_tail(server));
    body
}

fn log_tail(server: &Server) -> String {
    let log = server.log();
    let lines: Vec<&str> = log.lines().collect();
    let from = lines.len().saturating_sub(60);
    format!(
        "--- last {} lines of the server log ---\n{}",
        lines.len() - from,
        lines[from..].join("\n")
    )
}

/// Every stored event id of `user`, with how many rows each has (paged, no FINAL).
async fn stored_ids(server: &Server, admin: &str, user: &str) -> HashMap<String, u64> {
    let mut stored: HashMap<String, u64> = HashMap::new();
    let mut offset = 0;
    loop {
        let body = query(
            server,
            admin,
            &format!(
                "SELECT toString(event_id) AS id FROM ugc.events WHERE user_id = '{user}' \
                 ORDER BY event_id LIMIT {PAGE} OFFSET {offset}"
            ),
        )
        .await;
        assert_eq!(
            body["truncated"], false,
            "a page was truncated: raise --query-max-rows"
        );
        let rows = body["rows"].as_array().cloned().unwrap_or_default();
        for r in &rows {
            *stored
                .entry(r["id"].as_str().expect("id column").to_owned())
                .or_default() += 1;
        }
        if rows.len() < PAGE {
            return stored;
        }
        offset += PAGE;
    }
}

/// (rows, distinct ids) of `user` in the store, physically (no FINAL).
async fn counts(server: &Server, admin: &str, user: &str) -> (u64, u64) {
    let body = query(
        server,
        admin,
        &format!(
            "SELECT count() AS n, uniqExact(event_id) AS u FROM ugc.events WHERE user_id = '{user}'"
        ),
    )
    .await;
    let row = &body["rows"][0];
    (row["n"].as_u64().expect("n"), row["u"].as_u64().expect("u"))
}

/// Posts one event of another user and waits until it is stored: the log is ordered, so
/// once it is in the store the loader has caught up with everything before it.
async fn sentinel(server: &Server, admin: &str, within: Duration) {
    let token = server.token(&new_user(), &[]);
    let id = uuid::Uuid::new_v4().to_string();
    let (status, body) = server
        .post(
            "/api/v1/events",
            &token,
            &json!({"type":"full_view","film_id":FILMS[0],"event_id":id}),
        )
        .await;
    assert_eq!(status, 202, "sentinel: {body}");
    let deadline = Instant::now() + within;
    loop {
        let body = query(
            server,
            admin,
            &format!("SELECT count() AS n FROM ugc.events WHERE event_id = toUUID('{id}')"),
        )
        .await;
        if body["rows"][0]["n"].as_u64() == Some(1) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the sentinel {id} was not stored within {within:?}: {body}\n{}",
            log_tail(server)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn examples<'a>(ids: impl IntoIterator<Item = &'a String>) -> Vec<&'a String> {
    let mut v: Vec<&String> = ids.into_iter().collect();
    v.sort();
    v.truncate(10);
    v
}

/// Checks that every acknowledged id is stored exactly once; returns the stored map.
async fn check_exactly_once(
    server: &Server,
    admin: &str,
    user: &str,
    acked: &HashSet<String>,
    when: &str,
) -> HashMap<String, u64> {
    let (rows, distinct) = counts(server, admin, user).await;
    let stored = stored_ids(server, admin, user).await;
    let missing: Vec<&String> = acked
        .iter()
        .filter(|id| !stored.contains_key(*id))
        .collect();
    let dups: Vec<(&String, &u64)> = stored.iter().filter(|(_, n)| **n > 1).collect();
    let dup_rows: u64 = dups.iter().map(|(_, n)| **n - 1).sum();
    if !missing.is_empty() {
        panic!(
            "{when}: {} of {} acknowledged events are missing from the store \
             (rows {rows}, distinct ids {distinct}); e.g. {:?}\n{}",
            missing.len(),
            acked.len(),
            examples(missing.iter().copied()),
            log_tail(server)
        );
    }
    if rows != distinct || !dups.is_empty() {
        let mut shown: Vec<String> = dups
            .iter()
            .map(|(id, n)| {
                format!(
                    "{id} ×{n} ({})",
                    if acked.contains(*id) {
                        "acknowledged"
                    } else {
                        "not acknowledged"
                    }
                )
            })
            .collect();
        shown.sort();
        shown.truncate(10);
        panic!(
            "{when}: events stored more than once: count() {rows} vs uniqExact(event_id) \
             {distinct}; {} ids duplicated, {dup_rows} extra rows; e.g. {shown:?}\n{}",
            dups.len(),
            log_tail(server)
        );
    }
    assert_eq!(
        stored.len() as u64,
        distinct,
        "{when}: paged ids disagree with uniqExact"
    );
    stored
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_events_survive_kill_9_exactly_once() {
    let began = Instant::now();
    let seed = std::env::var("UGC_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    println!("crash test seed: {seed} (rerun with UGC_CRASH_SEED={seed})");
    let mut rng = Rng::new(seed);

    let mut server = Server::start(&["--query-max-rows", "1000000"]).await;
    let user = new_user();
    let token = server.token(&user, &[]);
    let admin = server.token("crash-test-analyst", &["admin"]);
    let url = format!("{}/api/v1/events/batch", server.base);

    let shared = Arc::new(Shared::default());
    let tasks: Vec<_> = (0..LOAD_TASKS)
        .map(|i| {
            tokio::spawn(load(
                server.http.clone(),
                url.clone(),
                token.clone(),
                seed ^ (i + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15),
                shared.clone(),
            ))
        })
        .collect();

    // Kill at random moments while acknowledgements flow, until both goals are met.
    let mut kills = 0u32;
    let mut restarts = Duration::ZERO;
    loop {
        if let Some(f) = shared.failure() {
            panic!("{f}\n{}", log_tail(&server));
        }
        let acked = shared.acked.load(Ordering::SeqCst);
        if acked >= TARGET_ACKED && kills >= MIN_KILLS {
            break;
        }
        // The load must be flowing on this server process before it is killed.
        let before = acked;
        let deadline = Instant::now() + Duration::from_secs(60);
        while shared.acked.load(Ordering::SeqCst) == before {
            if let Some(f) = shared.failure() {
                panic!("{f}\n{}", log_tail(&server));
            }
            assert!(
                Instant::now() < deadline,
                "no batch was acknowledged within 60 s after (re)start ({kills} kills so far)\n{}",
                log_tail(&server)
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let delay = rng.range(KILL_DELAY_MS.0, KILL_DELAY_MS.1);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        if shared.acked.load(Ordering::SeqCst) >= TARGET_ACKED && kills >= MIN_KILLS {
            break;
        }
        server.kill9();
        kills += 1;
        let at = shared.acked.load(Ordering::SeqCst);
        let t = Instant::now();
        server.restart().await;
        restarts += t.elapsed();
        println!(
            "kill #{kills}: {delay} ms into the load on that process, {at} acknowledged so far; \
             restart took {:?}",
            t.elapsed()
        );
    }
    shared.stop.store(true, Ordering::SeqCst);
    let mut acked: HashSet<String> = HashSet::new();
    let mut acked_total = 0usize;
    for t in tasks {
        let ids = t.await.expect("load task panicked");
        acked_total += ids.len();
        acked.extend(ids);
    }
    if let Some(f) = shared.failure() {
        panic!("{f}\n{}", log_tail(&server));
    }
    assert_eq!(acked.len(), acked_total, "client ids are unique");
    let load_time = began.elapsed();
    println!(
        "load stopped after {load_time:?}: {} acknowledged, {} requests ({} events) unacknowledged, \
         {kills} kills, {restarts:?} spent restarting",
        acked.len(),
        shared.unacked_requests.load(Ordering::SeqCst),
        shared.unacked_events.load(Ordering::SeqCst),
    );

    // Wait until the store holds at least every acknowledged event, and the loader has
    // caught up with the log (a sentinel posted after the load is stored).
    let within = Duration::from_secs(120);
    let deadline = Instant::now() + within;
    loop {
        let (rows, distinct) = counts(&server, &admin, &user).await;
        if distinct >= acked.len() as u64 {
            let stored = stored_ids(&server, &admin, &user).await;
            if acked.iter().all(|id| stored.contains_key(id)) {
                break;
            }
        }
        if Instant::now() >= deadline {
            let stored = stored_ids(&server, &admin, &user).await;
            let missing: Vec<&String> = acked
                .iter()
                .filter(|id| !stored.contains_key(*id))
                .collect();
            panic!(
                "after {within:?} the store still lacks {} of {} acknowledged events \
                 (rows {rows}, distinct ids {distinct}); e.g. {:?}\n{}",
                missing.len(),
                acked.len(),
                examples(missing.iter().copied()),
                log_tail(&server)
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    sentinel(&server, &admin, Duration::from_secs(60)).await;
    let stored = check_exactly_once(&server, &admin, &user, &acked, "after the load").await;
    let unacked_stored = stored.keys().filter(|id| !acked.contains(*id)).count();
    let caught_up = began.elapsed();

    // One more kill -9 at rest: recovery must not load anything a second time.
    server.kill9();
    kills += 1;
    server.restart().await;
    sentinel(&server, &admin, Duration::from_secs(60)).await;
    let again = check_exactly_once(&server, &admin, &user, &acked, "after a kill at rest").await;
    assert_eq!(
        again.len(),
        stored.len(),
        "the stored set changed after a kill at rest"
    );

    println!(
        "crash test (seed {seed}): acknowledged {}, stored {} (each once), \
         unacknowledged-but-stored {unacked_stored}, unacknowledged requests {} ({} events), \
         kills {kills} ({} during load), caught up after {caught_up:?}, elapsed {:?}",
        acked.len(),
        stored.len(),
        shared.unacked_requests.load(Ordering::SeqCst),
        shared.unacked_events.load(Ordering::SeqCst),
        kills - 1,
        began.elapsed()
    );
}
