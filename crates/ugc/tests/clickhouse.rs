//! Black-box against real ClickHouse servers (the Debian package's 18.16): a replica
//! killed during a load catches up; the whole cluster stopped for 30 s during a load
//! makes the loader wait and resume; and the same analytics SQL answers the same on the
//! embedded engine, one server and the cluster. Totals are checked exactly: every
//! acknowledged event once (count() = uniqExact(event_id) = acknowledged).
//!
//! The loader killed mid-batch into the cluster is `crash.rs` run with
//! `UGC_TEST_STORE=cluster` (see scripts/test).

mod common;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::load::{FILMS, Load, Spec, assert_exactly_once};
use common::{Server, new_user};
use serde_json::{Value, json};
use ugc_testkit::{CLUSTER_NAME, ClickHouse, Cluster};

const LOAD_TASKS: usize = 4;
const BATCH: u64 = 250;
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

/// `ugc` on `cluster`, and a load of a new user's events against it that stops by itself
/// at [`LOAD_CAP`].
async fn under_load(cluster: &Cluster) -> (Server, String, Load) {
    let args = cluster_args(cluster);
    let server = Server::start(&args.iter().map(String::as_str).collect::<Vec<_>>()).await;
    let user = new_user();
    let token = server.token(&user, &[]);
    let load = Load::start(
        &server,
        Spec {
            cap: LOAD_CAP,
            ..Spec::new(vec![vec![token]], LOAD_TASKS, BATCH)
        },
    );
    (server, user, load)
}

/// Waits until every acknowledged event of `user` is stored, each once; the stored ids.
async fn exactly_once(
    server: &Server,
    user: String,
    acked: &std::collections::HashSet<String>,
) -> std::collections::HashMap<String, u64> {
    let logs = || {
        let log = server.log();
        let tail: Vec<&str> = log.lines().rev().take(30).collect();
        tail.join("\n")
    };
    let within = Duration::from_secs(180);
    assert_exactly_once(server, &[user], acked, within, "after the load", logs).await
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
    let (server, user, load) = under_load(&cluster).await;

    // The replica that shard 2's reads and writes prefer (in_order) dies mid-load.
    load.wait_acked(20_000, Duration::from_secs(120), "before the outage")
        .await;
    cluster.node(1, 0).kill9();
    let killed_at = load.acked();
    load.wait_acked(
        killed_at + 20_000,
        Duration::from_secs(120),
        "after the kill",
    )
    .await;
    cluster.node(1, 0).start().unwrap_or_else(|e| panic!("{e}"));
    let restarted_at = load.acked();
    load.wait_acked(LOAD_CAP, Duration::from_secs(180), "to the end")
        .await;
    let acked = load.stop().await;
    println!(
        "replica s2r1 killed at {killed_at}, restarted at {restarted_at}; {} acknowledged",
        acked.len()
    );

    let stored = exactly_once(&server, user, &acked).await;
    wait_replicas_agree(&mut cluster, stored.len() as u64, Duration::from_secs(120)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::await_holding_lock)]
async fn clickhouse_stopped_for_30_s_during_the_load_makes_the_loader_wait_then_resume() {
    let _heavy = HEAVY.lock().unwrap_or_else(|p| p.into_inner());
    let mut cluster = Cluster::start(2, 2).unwrap_or_else(|e| panic!("{e}"));
    let (server, user, load) = under_load(&cluster).await;

    load.wait_acked(20_000, Duration::from_secs(120), "before the outage")
        .await;
    // All four nodes shut down (SIGTERM) at once.
    std::thread::scope(|s| {
        for n in &mut cluster.nodes {
            s.spawn(move || n.stop().unwrap_or_else(|e| panic!("{e}")));
        }
    });
    let stopped_at = load.acked();
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
    load.shared.add_acked(ids);
    let during = load.acked() - stopped_at;
    for n in &mut cluster.nodes {
        n.start().unwrap_or_else(|e| panic!("{e}"));
    }
    load.wait_acked(LOAD_CAP, Duration::from_secs(180), "to the end")
        .await;
    let acked = load.stop().await;
    println!(
        "ClickHouse stopped at {stopped_at} acknowledged for 30 s ({during} acknowledged meanwhile); {} in all",
        acked.len()
    );
    assert!(during > 0, "ingest must not depend on the store");

    let stored = exactly_once(&server, user, &acked).await;
    let ready = server
        .http
        .get(format!("{}/readyz", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200, "ready again once ClickHouse is back");
    wait_replicas_agree(&mut cluster, stored.len() as u64, Duration::from_secs(120)).await;
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
