//! Black-box against real ClickHouse servers (the Debian package's 18.16): a replica
//! killed during a load catches up; the whole cluster stopped for 30 s during a load
//! makes the loader wait and resume; and the same analytics SQL answers the same on the
//! embedded engine, one server and the cluster. Totals are checked exactly: every
//! acknowledged event once (count() = uniqExact(event_id) = acknowledged).
//!
//! The loader killed mid-batch into the cluster is `crash.rs` run with
//! `UGC_TEST_STORE=cluster` (see scripts/test).

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Server, new_user};
use serde_json::{Value, json};
use ugc_testkit::{CLUSTER_NAME, ClickHouse, Cluster};

const FILMS: [&str; 3] = [
    "1ec4cd73-2fd5-4f25-af68-b6595d279af2",
    "2b5e3c1a-0d4f-4e7a-9c8b-3f2a1d0e9c8b",
    "3c6f4d2b-1e5a-4f8b-8d9c-4a3b2e1f0d9c",
];
const LOAD_TASKS: usize = 4;
const BATCH: usize = 250;
/// Acknowledged events after which the load stops by itself.
const LOAD_CAP: u64 = 120_000;

/// The load tests are heavy for two cores: one at a time. A std mutex on purpose: each
/// test runs on its own thread and runtime, so holding it across awaits blocks only the
/// tests waiting their turn.
static HEAVY: Mutex<()> = Mutex::new(());

fn cluster_args(c: &Cluster) -> Vec<String> {
    vec![
        "--store".into(),
        "clickhouse".into(),
        "--clickhouse-url".into(),
        c.url(),
        "--clickhouse-cluster".into(),
        CLUSTER_NAME.into(),
        "--query-max-rows".into(),
        "1000000".into(),
    ]
}

#[derive(Default)]
struct Load {
    stop: AtomicBool,
    acked: AtomicU64,
    ids: Mutex<Vec<String>>,
    failure: Mutex<Option<String>>,
}

/// `LOAD_TASKS` clients posting batches with fresh client-chosen ids until stopped or
/// `LOAD_CAP` events are acknowledged.
/// Only a 202 counts; anything else (the log is full: 503) is not acknowledged and
/// never resent.
fn start_load(server: &Server, user: &str) -> (Arc<Load>, Vec<tokio::task::JoinHandle<()>>) {
    let load = Arc::new(Load::default());
    let token = server.token(user, &[]);
    let url = format!("{}/api/v1/events/batch", server.base);
    let tasks = (0..LOAD_TASKS)
        .map(|t| {
            let (load, token, url, http) = (load.clone(), token.clone(), url.clone(), server.http.clone());
            tokio::spawn(async move {
                let mut n = 0usize;
                while !load.stop.load(Ordering::SeqCst)
                    && load.acked.load(Ordering::SeqCst) < LOAD_CAP
                {
                    let ids: Vec<String> = (0..BATCH).map(|_| uuid::Uuid::new_v4().to_string()).collect();
                    let batch: Vec<Value> = ids
                        .iter()
                        .enumerate()
                        .map(|(i, id)| {
                            n += 1;
                            let film = FILMS[(n + i + t) % FILMS.len()];
                            json!({"type":"view_progress","film_id":film,"film_timestamp":n % 7200,"event_id":id})
                        })
                        .collect();
                    match http.post(&url).bearer_auth(&token).json(&batch).send().await {
                        Ok(r) if r.status() == 202 => {
                            load.acked.fetch_add(BATCH as u64, Ordering::SeqCst);
                            load.ids.lock().unwrap().extend(ids);
                        }
                        Ok(r) if r.status().is_client_error() => {
                            *load.failure.lock().unwrap() = Some(format!("a valid batch got {}", r.status()));
                            return;
                        }
                        _ => tokio::time::sleep(Duration::from_millis(50)).await,
                    }
                }
            })
        })
        .collect();
    (load, tasks)
}

async fn wait_acked(load: &Load, at_least: u64, within: Duration) {
    let deadline = Instant::now() + within;
    while load.acked.load(Ordering::SeqCst) < at_least {
        if let Some(f) = load.failure.lock().unwrap().clone() {
            panic!("{f}");
        }
        assert!(
            Instant::now() < deadline,
            "fewer than {at_least} events acknowledged within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn stop_load(load: &Load, tasks: Vec<tokio::task::JoinHandle<()>>) -> HashSet<String> {
    load.stop.store(true, Ordering::SeqCst);
    for t in tasks {
        t.await.expect("load task");
    }
    if let Some(f) = load.failure.lock().unwrap().clone() {
        panic!("{f}");
    }
    let ids = load.ids.lock().unwrap().clone();
    let set: HashSet<String> = ids.iter().cloned().collect();
    assert_eq!(set.len(), ids.len(), "client ids are unique");
    set
}

/// (rows, distinct ids) of `user` through ugc's analyst SQL.
async fn totals(server: &Server, user: &str) -> (u64, u64) {
    let rows = server
        .sql(&format!(
            "SELECT count() AS n, uniqExact(event_id) AS u FROM ugc.events WHERE user_id = '{user}'"
        ))
        .await;
    (
        rows[0]["n"].as_u64().unwrap(),
        rows[0]["u"].as_u64().unwrap(),
    )
}

/// Waits until the store holds exactly the acknowledged events: as many rows as
/// distinct ids as acknowledged ids, and every acknowledged id among them.
async fn wait_exactly_once(server: &Server, user: &str, acked: &HashSet<String>, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let (rows, distinct) = totals(server, user).await;
        assert!(
            rows == distinct,
            "stored more than once: {rows} rows, {distinct} distinct ids"
        );
        if distinct >= acked.len() as u64 {
            let stored: HashSet<String> = server
                .sql(&format!(
                    "SELECT toString(event_id) AS id FROM ugc.events WHERE user_id = '{user}'"
                ))
                .await
                .iter()
                .map(|r| r["id"].as_str().unwrap().to_owned())
                .collect();
            let missing = acked.iter().filter(|id| !stored.contains(*id)).count();
            assert_eq!(
                missing, 0,
                "{missing} acknowledged events missing ({rows} rows stored)"
            );
            return;
        }
        assert!(
            Instant::now() < deadline,
            "after {within:?}: {distinct} of {} acknowledged events stored\n{}",
            acked.len(),
            server
                .log()
                .lines()
                .rev()
                .take(30)
                .collect::<Vec<_>>()
                .join("\n")
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn local_count(node: &ClickHouse) -> u64 {
    node.query("SELECT count() FROM ugc.events_local")
        .unwrap_or_else(|e| panic!("{e}"))
        .trim()
        .parse()
        .unwrap()
}

/// Both replicas of every shard hold the same rows, and the shards add up to `total`.
async fn wait_replicas_agree(cluster: &mut Cluster, total: u64, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let counts: Vec<u64> = cluster.nodes.iter().map(local_count).collect();
        let agree = (0..cluster.shards).all(|s| {
            (0..cluster.replicas)
                .all(|r| counts[s * cluster.replicas + r] == counts[s * cluster.replicas])
        });
        let sum: u64 = (0..cluster.shards)
            .map(|s| counts[s * cluster.replicas])
            .sum();
        if agree && sum == total {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "replica row counts {counts:?}, want shards summing to {total}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::await_holding_lock)]
async fn a_replica_killed_during_the_load_catches_up_and_totals_are_exact() {
    let _heavy = HEAVY.lock().unwrap_or_else(|p| p.into_inner());
    let mut cluster = Cluster::start(2, 2).unwrap_or_else(|e| panic!("{e}"));
    println!("cluster up in {:?}", cluster.started_in);
    let args = cluster_args(&cluster);
    let server = Server::start(&args.iter().map(String::as_str).collect::<Vec<_>>()).await;
    let user = new_user();
    let (load, tasks) = start_load(&server, &user);

    // The replica that shard 2's reads and writes prefer (in_order) dies mid-load.
    wait_acked(&load, 20_000, Duration::from_secs(120)).await;
    cluster.node(1, 0).kill9();
    let killed_at = load.acked.load(Ordering::SeqCst);
    wait_acked(&load, killed_at + 20_000, Duration::from_secs(120)).await;
    cluster.node(1, 0).start().unwrap_or_else(|e| panic!("{e}"));
    let restarted_at = load.acked.load(Ordering::SeqCst);
    wait_acked(&load, LOAD_CAP, Duration::from_secs(180)).await;
    let acked = stop_load(&load, tasks).await;
    println!(
        "replica s2r1 killed at {killed_at}, restarted at {restarted_at}; {} acknowledged",
        acked.len()
    );

    wait_exactly_once(&server, &user, &acked, Duration::from_secs(180)).await;
    wait_replicas_agree(&mut cluster, acked.len() as u64, Duration::from_secs(120)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::await_holding_lock)]
async fn clickhouse_stopped_for_30_s_during_the_load_makes_the_loader_wait_then_resume() {
    let _heavy = HEAVY.lock().unwrap_or_else(|p| p.into_inner());
    let mut cluster = Cluster::start(2, 2).unwrap_or_else(|e| panic!("{e}"));
    let args = cluster_args(&cluster);
    let server = Server::start(&args.iter().map(String::as_str).collect::<Vec<_>>()).await;
    let user = new_user();
    let (load, tasks) = start_load(&server, &user);

    wait_acked(&load, 20_000, Duration::from_secs(120)).await;
    // All four nodes shut down (SIGTERM) at once.
    std::thread::scope(|s| {
        for n in &mut cluster.nodes {
            s.spawn(move || n.stop().unwrap_or_else(|e| panic!("{e}")));
        }
    });
    let stopped_at = load.acked.load(Ordering::SeqCst);
    let outage = Instant::now();
    // Ingest goes on into the log; the store is not ready, and the loader commits nothing.
    let mut saw_not_ready = false;
    while outage.elapsed() < Duration::from_secs(30) {
        let ready = server
            .http
            .get(format!("{}/readyz", server.base))
            .send()
            .await;
        saw_not_ready |= ready.is_ok_and(|r| r.status() == 503);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        saw_not_ready,
        "/readyz kept answering ready while ClickHouse was down"
    );
    // Ingest does not depend on the store: a batch posted now is acknowledged.
    let ids: Vec<String> = (0..BATCH)
        .map(|_| uuid::Uuid::new_v4().to_string())
        .collect();
    let batch: Vec<Value> = ids
        .iter()
        .map(|id| json!({"type":"full_view","film_id":FILMS[0],"event_id":id}))
        .collect();
    let (status, body) = server
        .post(
            "/api/v1/events/batch",
            &server.token(&user, &[]),
            &json!(batch),
        )
        .await;
    assert_eq!(status, 202, "ingest while ClickHouse is down: {body}");
    load.acked.fetch_add(BATCH as u64, Ordering::SeqCst);
    load.ids.lock().unwrap().extend(ids);
    let during = load.acked.load(Ordering::SeqCst) - stopped_at;
    for n in &mut cluster.nodes {
        n.start().unwrap_or_else(|e| panic!("{e}"));
    }
    wait_acked(&load, LOAD_CAP, Duration::from_secs(180)).await;
    let acked = stop_load(&load, tasks).await;
    println!(
        "ClickHouse stopped at {stopped_at} acknowledged for 30 s ({during} acknowledged meanwhile); {} in all",
        acked.len()
    );
    assert!(during > 0, "ingest must not depend on the store");

    wait_exactly_once(&server, &user, &acked, Duration::from_secs(180)).await;
    let ready = server
        .http
        .get(format!("{}/readyz", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200, "ready again once ClickHouse is back");
    wait_replicas_agree(&mut cluster, acked.len() as u64, Duration::from_secs(120)).await;
}

/// Analysts' ready answers, as SQL every store must answer alike.
const ANALYTICS: &[&str] = &[
    // Most watched films.
    "SELECT toString(film_id) AS film, uniqExact(user_id) AS viewers, count() AS events \
     FROM ugc.events WHERE event_type IN ('view_progress', 'pause') GROUP BY film_id ORDER BY viewers DESC, film",
    // Completion rate per film.
    "SELECT toString(film_id) AS film, uniqExactIf(user_id, event_type = 'full_view') AS finished, \
     uniqExact(user_id) AS started, round(finished / started, 4) AS rate \
     FROM ugc.events WHERE film_id != toUUID('00000000-0000-0000-0000-000000000000') GROUP BY film_id ORDER BY film",
    // Where viewers drop off: last position of viewers who did not finish, by 10-minute bucket.
    "SELECT intDiv(last, 600) * 600 AS bucket, count() AS viewers FROM (\
       SELECT user_id, film_id, argMax(ifNull(position, 0), occurred_at) AS last, max(event_type = 'full_view') AS done \
       FROM ugc.events WHERE position IS NOT NULL OR event_type = 'full_view' GROUP BY user_id, film_id) \
     WHERE done = 0 GROUP BY bucket ORDER BY bucket",
    // Quality switches.
    "SELECT quality_from, quality_to, count() AS n FROM ugc.events WHERE event_type = 'quality_change' \
     GROUP BY quality_from, quality_to ORDER BY n DESC, quality_from, quality_to",
    // Page views by page and hour.
    "SELECT page, toString(toStartOfHour(toDateTime(occurred_at))) AS hour, count() AS n FROM ugc.events \
     WHERE event_type = 'page_view' GROUP BY page, hour ORDER BY page, hour",
    // Events by type and day.
    "SELECT event_type, toString(toDate(occurred_at)) AS day, count() AS n FROM ugc.events GROUP BY event_type, day ORDER BY event_type, day",
];

/// A fixed set of events (fixed ids and times) from a few viewers.
fn fixed_events(user: usize) -> Vec<Value> {
    let mut out = Vec::new();
    let id = |k: usize| format!("00000000-0000-4000-8000-{:012}", user * 1000 + k);
    let at = |k: usize| {
        format!(
            "2026-11-{:02}T{:02}:{:02}:00Z",
            18 + k % 3,
            (user + k) % 24,
            k % 60
        )
    };
    for (k, film) in FILMS.iter().enumerate().take(1 + user % 3) {
        out.push(json!({"type":"view_progress","film_id":film,"film_timestamp":(user * 311 + k * 97) % 7200,"event_id":id(10 + k),"occurred_at":at(k)}));
        out.push(json!({"type":"pause","film_id":film,"position":(user * 313 + k * 89) % 7200,"event_id":id(20 + k),"occurred_at":at(k + 1)}));
        if (user + k).is_multiple_of(4) {
            out.push(json!({"type":"full_view","film_id":film,"event_id":id(30 + k),"occurred_at":at(k + 2)}));
        }
        if (user + k).is_multiple_of(3) {
            out.push(json!({"type":"quality_change","film_id":film,"from":"720p","to":if user.is_multiple_of(2) {"1080p"} else {"480p"},"position":60,"event_id":id(40 + k),"occurred_at":at(k + 3)}));
        }
    }
    let pages = ["films_list", "film", "film_search", "genres"];
    out.push(json!({"type":"page_view","page":pages[user % pages.len()],"params":{"q":user},"event_id":id(50),"occurred_at":at(5)}));
    out
}

#[tokio::test]
async fn the_same_analytics_sql_answers_alike_on_chdb_one_server_and_the_cluster() {
    let single = ClickHouse::start_single().unwrap_or_else(|e| panic!("{e}"));
    let cluster = Cluster::start(2, 2).unwrap_or_else(|e| panic!("{e}"));
    let single_args =
        ["--store", "clickhouse", "--clickhouse-url", &single.url()].map(str::to_owned);
    let cluster_args = cluster_args(&cluster);
    let servers = [
        ("chdb", Server::start(&[]).await),
        (
            "server",
            Server::start(&single_args.iter().map(String::as_str).collect::<Vec<_>>()).await,
        ),
        (
            "cluster",
            Server::start(&cluster_args.iter().map(String::as_str).collect::<Vec<_>>()).await,
        ),
    ];
    let users: Vec<String> = (0..12)
        .map(|u| format!("00000000-0000-4000-9000-{u:012}"))
        .collect();
    let mut total = 0;
    for (u, user) in users.iter().enumerate() {
        let events = fixed_events(u);
        total += events.len();
        for (_, s) in &servers {
            let (status, body) = s
                .post("/api/v1/events/batch", &s.token(user, &[]), &json!(events))
                .await;
            assert_eq!(status, 202, "{body}");
        }
    }
    for (name, s) in &servers {
        s.wait_for(
            "SELECT count() FROM ugc.events",
            json!(total),
            Duration::from_secs(60),
        )
        .await;
        println!("{name}: {total} events stored");
    }
    for sql in ANALYTICS {
        let answers: Vec<(&str, Vec<Value>)> = {
            let mut v = Vec::new();
            for (name, s) in &servers {
                v.push((*name, s.sql(sql).await));
            }
            v
        };
        assert!(!answers[0].1.is_empty(), "`{sql}` answered nothing");
        for (name, rows) in &answers[1..] {
            assert_eq!(
                rows, &answers[0].1,
                "`{sql}`: {name} differs from {}",
                answers[0].0
            );
        }
    }
}
