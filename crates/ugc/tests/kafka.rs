//! Black-box: ugc with Kafka as the log, against a real Kafka-protocol broker (tansu, a
//! child process on a free port). A poison record goes to the dead-letter topic; a
//! stopped broker gives quick 503s and, once back, exact totals; loaders sharing a
//! consumer group — one killed with -9 mid-load, a third joining — store every
//! acknowledged event exactly once.

mod common;

use std::collections::HashSet;
use std::sync::Mutex;
use std::sync::atomic::Ordering;

/// The tests with several loaders are heavy for two cores, and time what they check:
/// one at a time. A std mutex on purpose: each test runs on its own thread and runtime,
/// so holding it across awaits blocks only the tests waiting their turn.
static HEAVY: Mutex<()> = Mutex::new(());
use std::time::{Duration, Instant};

use common::load::{Load, Shared, Spec, assert_exactly_once, of_users, wait_stored};
use common::{Server, kafka_args, new_user};
use serde_json::{Value, json};
use ugc_testkit::tansu::{Storage, Tansu};

const FILM: &str = "1ec4cd73-2fd5-4f25-af68-b6595d279af2";

fn args(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// The last lines of `log`; with `UGC_TEST_LOG_DIR` set, the whole log is also written
/// there (as `<label>.log`), for a failure that needs more than a tail to explain.
fn tail(label: &str, log: &str) -> String {
    if let Some(dir) = std::env::var_os("UGC_TEST_LOG_DIR") {
        let name = label.replace(' ', "-");
        let _ = std::fs::write(std::path::Path::new(&dir).join(format!("{name}.log")), log);
    }
    let lines: Vec<&str> = log.lines().collect();
    let from = lines.len().saturating_sub(40);
    format!(
        "--- {label} (last {} lines) ---\n{}",
        lines.len() - from,
        lines[from..].join("\n")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_record_goes_to_the_dead_letter_topic_and_the_loader_goes_on() {
    let broker = Tansu::start(Storage::Memory);
    let server = Server::start(&args(&kafka_args(&broker.brokers()))).await;
    let user = new_user();
    let token = server.token(&user, &[]);
    let post = |n: u32| {
        let server = &server;
        let token = &token;
        async move {
            let (status, body) = server
                .post(
                    "/api/v1/events",
                    token,
                    &json!({"type":"view_progress","film_id":FILM,"film_timestamp":n}),
                )
                .await;
            assert_eq!(status, 202, "{body}");
        }
    };
    post(1).await;
    let count = format!("SELECT count() AS n FROM ugc.events WHERE user_id = '{user}'");
    server
        .wait_for(&count, json!(1), Duration::from_secs(60))
        .await;

    // Straight to the topic, bypassing the API: one undecodable record per partition,
    // so whichever partition the user's events use has one before them.
    for p in 0..3 {
        broker.produce("ugc.events", p, None, b"{\"not\": \"an envelope\"");
    }
    post(2).await;
    post(3).await;
    server
        .wait_for(&count, json!(3), Duration::from_secs(60))
        .await;

    let dlq = broker.read_all("ugc.events.dlq", 3, Duration::from_secs(30));
    assert_eq!(
        dlq.len(),
        3,
        "one copy per poison record: {dlq:?}\n{}",
        server.log()
    );
    for r in &dlq {
        assert_eq!(r.payload, b"{\"not\": \"an envelope\"");
        let source = |k: &str| {
            r.headers
                .iter()
                .find(|(h, _)| h == k)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(source("ugc-source-topic"), Some("ugc.events"));
        assert!(source("ugc-reason").is_some_and(|r| !r.is_empty()));
    }
    // The store's dead-letter table has them too.
    server
        .wait_for(
            "SELECT count() AS n FROM ugc.dead_letters",
            json!(3),
            Duration::from_secs(30),
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_broker_down_the_api_answers_503_fast_and_after_a_restart_totals_are_exact() {
    // SQLite storage: the restarted broker comes back with the records and the commits.
    let mut broker = Tansu::start(Storage::Sqlite);
    let mut a = kafka_args(&broker.brokers());
    a.extend(["--kafka-delivery-timeout-ms".into(), "1000".into()]);
    a.extend(["--query-max-rows".into(), "1000000".into()]);
    let server = Server::start(&args(&a)).await;
    let user = new_user();
    let token = server.token(&user, &[]);
    let load = Load::start(&server, Spec::new(vec![vec![token]], 4, 100));
    let shared = load.shared.clone();
    load.wait_acked(3_000, Duration::from_secs(60), "before the outage")
        .await;

    broker.kill();
    let down_at = shared.acked();
    // Refusals must start within about a second and keep coming fast.
    let deadline = Instant::now() + Duration::from_secs(10);
    while shared.refused.load(Ordering::SeqCst) < 20 {
        shared.check();
        assert!(
            Instant::now() < deadline,
            "no 503s within 10 s of the broker's death ({} refused)\n{}",
            shared.refused.load(Ordering::SeqCst),
            tail("ugc", &server.log())
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let during = shared.acked() - down_at;
    let (status, body) = server.get("/readyz", "").await;
    assert_eq!(status, 503, "not ready without a broker: {body}");

    broker.restart();
    let back_at = shared.acked();
    load.wait_acked(
        back_at + 3_000,
        Duration::from_secs(60),
        "after the broker restart",
    )
    .await;
    let acked = load.stop().await;
    let slowest = shared.slowest_refusal_ms.load(Ordering::SeqCst);
    println!(
        "broker outage: {} acknowledged ({during} while the broker was dying), {} refused, \
         slowest 503 {slowest} ms",
        acked.len(),
        shared.refused.load(Ordering::SeqCst)
    );
    assert!(
        slowest <= 2_000,
        "a 503 took {slowest} ms: the API must refuse within about a second"
    );
    let logs = format!(
        "{}\n{}",
        tail("ugc", &server.log()),
        tail("tansu", &broker.log())
    );
    assert_exactly_once(
        &server,
        &[user],
        &acked,
        Duration::from_secs(180),
        "after the outage",
        || logs.clone(),
    )
    .await;
}

/// A loader's counters from its /readyz.
async fn rows_loaded(loader: &Server) -> u64 {
    let (_, body) = loader.get("/readyz", "").await;
    body["loader"]["rows_loaded"].as_u64().unwrap_or(0)
}

/// Waits until `loader` has loaded more than `than` rows.
async fn wait_loading(loader: &Server, than: u64, name: &str, load: &Shared) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while rows_loaded(loader).await <= than {
        load.check();
        assert!(
            Instant::now() < deadline,
            "the {name} loader loaded nothing within 120 s\n{}",
            tail(name, &loader.log())
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::await_holding_lock)]
async fn loaders_in_one_group_store_every_acknowledged_event_once_through_a_kill_and_a_join() {
    let _heavy = HEAVY.lock().unwrap_or_else(|p| p.into_inner());
    // Members resume at the last commit, often inside a producer's record batch: only
    // the SQLite engine serves a fetch from there (see `Storage::Memory`).
    let broker = Tansu::start(Storage::Sqlite);
    // Loaders in separate processes need a store they share: a ClickHouse server (with
    // UGC_TEST_STORE set, the harness adds the one it chose).
    let mut store = vec![];
    if common::store_args().is_empty() {
        let shared = ugc_testkit::shared_single();
        store = vec![
            "--store".into(),
            "clickhouse".into(),
            "--clickhouse-url".into(),
            shared.url.clone(),
        ];
    }
    let group = format!("loaders-{}", uuid::Uuid::new_v4().simple());
    let with = |role: &str| {
        let mut a = kafka_args(&broker.brokers());
        // Six partitions rather than the harness's three: three loaders share them.
        let at = a.iter().position(|x| x == "--kafka-partitions").unwrap();
        a[at + 1] = "6".into();
        a.extend(
            [
                "--role",
                role,
                "--kafka-group",
                &group,
                "--kafka-session-timeout-ms",
                "6000",
                "--loader-batch-max",
                "5000",
                "--query-max-rows",
                "1000000",
            ]
            .map(String::from),
        );
        a.extend(store.iter().cloned());
        a
    };
    let api = Server::start(&args(&with("api"))).await;
    let mut first = Server::start(&args(&with("loader"))).await;
    let second = Server::start(&args(&with("loader"))).await;
    // Many users, so that their keys spread over every partition.
    let users: Vec<String> = (0..24).map(|_| new_user()).collect();
    let tokens: Vec<Vec<String>> = users
        .chunks(3)
        .map(|c| c.iter().map(|u| api.token(u, &[])).collect())
        .collect();
    // Paced, so that the kill and the join fall in the middle of the load.
    let load = paced(&api, tokens, 8, 200, 250);
    let shared = load.shared.clone();
    let began = Instant::now();

    // Both members own partitions and load before one of them dies.
    wait_loading(&first, 0, "first", &shared).await;
    wait_loading(&second, 0, "second", &shared).await;
    load.wait_acked(20_000, Duration::from_secs(120), "before the kill")
        .await;
    // Mid-batch: under this load the loaders insert all the time.
    let first_rows = rows_loaded(&first).await;
    first.kill9();
    println!(
        "{:?}: killed a loader (it had loaded {first_rows} rows) at {} acknowledged",
        began.elapsed(),
        shared.acked()
    );
    let second_rows = rows_loaded(&second).await;
    load.wait_acked(50_000, Duration::from_secs(120), "before the join")
        .await;
    let third = Server::start(&args(&with("loader"))).await;
    println!(
        "{:?}: a third loader joined at {} acknowledged",
        began.elapsed(),
        shared.acked()
    );
    wait_loading(&third, 0, "third", &shared).await;
    load.wait_acked(100_000, Duration::from_secs(180), "to the end")
        .await;
    let acked = load.stop().await;
    println!(
        "{:?}: {} acknowledged, {} refused",
        began.elapsed(),
        acked.len(),
        shared.refused.load(Ordering::SeqCst)
    );
    assert!(acked.len() >= 100_000);
    let logs = [
        tail("api", &api.log()),
        tail("killed loader", &first.log()),
        tail("second loader", &second.log()),
        tail("third loader", &third.log()),
    ]
    .join("\n");
    assert_exactly_once(
        &api,
        &users,
        &acked,
        Duration::from_secs(180),
        "after the load",
        || logs.clone(),
    )
    .await;
    let (second_end, third_end) = (rows_loaded(&second).await, rows_loaded(&third).await);
    println!(
        "{:?}: every acknowledged event stored once; rows loaded: killed {first_rows}+, \
         second {second_end} ({second_rows} before the kill), third {third_end}",
        began.elapsed()
    );
    assert!(
        second_end > second_rows,
        "the second loader took no part after the kill\n{logs}"
    );
}

/// Loaders (and an API) sharing one consumer group on `broker`, storing into one
/// ClickHouse server.
struct Group {
    name: String,
    brokers: String,
    store: Vec<String>,
    partitions: u32,
}

impl Group {
    fn new(broker: &Tansu, partitions: u32) -> Group {
        // Loaders in separate processes need a store they share: a ClickHouse server
        // (with UGC_TEST_STORE set, the harness adds the one it chose).
        let mut store = vec![];
        if common::store_args().is_empty() {
            let shared = ugc_testkit::shared_single();
            store = vec![
                "--store".into(),
                "clickhouse".into(),
                "--clickhouse-url".into(),
                shared.url.clone(),
            ];
        }
        Group {
            name: format!("loaders-{}", uuid::Uuid::new_v4().simple()),
            brokers: broker.brokers(),
            store,
            partitions,
        }
    }

    /// Flags for a process of `role` in this group, plus `extra`. With
    /// `UGC_TEST_KAFKA_DEBUG=cgrp,consumer` loaders log librdkafka's group protocol.
    fn args(&self, role: &str, extra: &[&str]) -> Vec<String> {
        let mut a = kafka_args(&self.brokers);
        let at = a.iter().position(|x| x == "--kafka-partitions").unwrap();
        a[at + 1] = self.partitions.to_string();
        a.extend(
            [
                "--role",
                role,
                "--kafka-group",
                &self.name,
                "--query-max-rows",
                "1000000",
            ]
            .map(String::from),
        );
        if let Ok(debug) = std::env::var("UGC_TEST_KAFKA_DEBUG") {
            a.extend(["--kafka-debug".into(), debug]);
            a.extend(["--log".into(), "info,librdkafka=debug".into()]);
        }
        a.extend(extra.iter().map(|x| x.to_string()));
        a.extend(self.store.iter().cloned());
        a
    }

    async fn start(&self, role: &str, extra: &[&str]) -> Server {
        Server::start(&args(&self.args(role, extra))).await
    }
}

/// `tasks` load tasks of `batch` events a request, each pausing `pause_ms` before each
/// request, so that what a test does falls in the middle of the load.
fn paced(api: &Server, tokens: Vec<Vec<String>>, tasks: usize, batch: u64, pause_ms: u64) -> Load {
    Load::start(
        api,
        Spec {
            pause: Duration::from_millis(pause_ms),
            ..Spec::new(tokens, tasks, batch)
        },
    )
}

fn users_and_tokens(api: &Server, n: usize, per_task: usize) -> (Vec<String>, Vec<Vec<String>>) {
    let users: Vec<String> = (0..n).map(|_| new_user()).collect();
    let tokens = users
        .chunks(per_task)
        .map(|c| c.iter().map(|u| api.token(u, &[])).collect())
        .collect();
    (users, tokens)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::await_holding_lock)]
async fn a_loader_killed_and_replaced_within_seconds_ten_times_stores_everything_within_30_s() {
    let _heavy = HEAVY.lock().unwrap_or_else(|p| p.into_inner());
    // A rolling deploy: the oldest loader dies (kill -9) and a new one starts while the
    // dead one's session (10 s, the default) is still open — ten times, under load.
    let broker = Tansu::start(Storage::Sqlite);
    let group = Group::new(&broker, 12);
    let api = group.start("api", &[]).await;
    let mut loaders = vec![
        group.start("loader", &[]).await,
        group.start("loader", &[]).await,
    ];
    let mut killed: Vec<Server> = vec![];
    // Many users, so that their keys spread over every partition; ~600 events/s.
    let (users, tokens) = users_and_tokens(&api, 48, 3);
    let load = paced(&api, tokens, 16, 10, 250);
    let shared = load.shared.clone();
    let began = Instant::now();
    wait_loading(&loaders[0], 0, "first", &shared).await;
    wait_loading(&loaders[1], 0, "second", &shared).await;

    let logs = |loaders: &[Server], killed: &[Server]| {
        let mut l: Vec<String> = killed
            .iter()
            .rev()
            .take(1)
            .map(|s| tail("last killed loader", &s.log()))
            .collect();
        for (i, s) in loaders.iter().enumerate() {
            l.push(tail(&format!("live loader {i}"), &s.log()));
        }
        l.push(tail("tansu", &broker.log()));
        l.join("\n")
    };
    for round in 0..10 {
        let mut dead = loaders.remove(0);
        dead.kill9();
        killed.push(dead);
        // Between half a second and 4.5 s later: well inside the dead one's session.
        tokio::time::sleep(Duration::from_millis(500 + (round * 1300) % 4000)).await;
        let joined = Instant::now();
        let before: HashSet<String> = shared.acked_ids();
        loaders.push(group.start("loader", &[]).await);
        let deadline = joined + Duration::from_secs(30);
        wait_stored(
            &api,
            &users,
            &before,
            deadline,
            &format!("round {round}, 30 s after the join"),
            || logs(&loaders, &killed),
        )
        .await;
        println!(
            "{:?}: round {round}: {} events acknowledged before the join stored {:?} after it",
            began.elapsed(),
            before.len(),
            joined.elapsed()
        );
        shared.check();
    }
    let acked = load.stop().await;
    println!(
        "{:?}: {} acknowledged, {} refused",
        began.elapsed(),
        acked.len(),
        shared.refused.load(Ordering::SeqCst)
    );
    assert_exactly_once(
        &api,
        &users,
        &acked,
        Duration::from_secs(30),
        "after the load",
        || logs(&loaders, &killed),
    )
    .await;
    if std::env::var_os("UGC_TEST_LOG_DIR").is_some() {
        for (i, s) in killed.iter().enumerate() {
            tail(&format!("killed loader {i}"), &s.log());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::await_holding_lock)]
async fn a_broker_restart_while_a_loader_joins_resumes_every_partition_within_30_s() {
    let _heavy = HEAVY.lock().unwrap_or_else(|p| p.into_inner());
    let mut broker = Tansu::start(Storage::Sqlite);
    let group = Group::new(&broker, 12);
    let api = group.start("api", &[]).await;
    let first = group.start("loader", &[]).await;
    let (users, tokens) = users_and_tokens(&api, 48, 3);
    let load = paced(&api, tokens, 16, 10, 250);
    let shared = load.shared.clone();
    wait_loading(&first, 0, "first", &shared).await;
    let second = group.start("loader", &[]).await;
    // The broker dies two seconds into the rebalance the join started, and is back at once.
    tokio::time::sleep(Duration::from_secs(2)).await;
    broker.restart();
    let back = Instant::now();
    // Everything acknowledged until a little after the restart (the API retries on its own).
    load.wait_acked(
        shared.acked() + 2_000,
        Duration::from_secs(30),
        "after the broker restart",
    )
    .await;
    let ids: HashSet<String> = shared.acked_ids();
    let logs = || {
        [
            tail("first loader", &first.log()),
            tail("second loader", &second.log()),
            tail("tansu", &broker.log()),
        ]
        .join("\n")
    };
    wait_stored(
        &api,
        &users,
        &ids,
        back + Duration::from_secs(30),
        "30 s after the broker came back",
        logs,
    )
    .await;
    println!(
        "{} events acknowledged around the restart stored {:?} after it",
        ids.len(),
        back.elapsed()
    );
    let acked = load.stop().await;
    assert_exactly_once(
        &api,
        &users,
        &acked,
        Duration::from_secs(30),
        "after the load",
        logs,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::await_holding_lock)]
async fn a_loader_that_owns_no_partition_past_the_stall_time_is_not_ready() {
    let _heavy = HEAVY.lock().unwrap_or_else(|p| p.into_inner());
    let broker = Tansu::start(Storage::Sqlite);
    // One partition: one of the two loaders of the group gets nothing to load.
    let group = Group::new(&broker, 1);
    let stall = ["--loader-stall-ready-secs", "8"];
    let api = group.start("api", &[]).await;
    let first = group.start("loader", &stall).await;
    let (_users, tokens) = users_and_tokens(&api, 3, 3);
    let load = paced(&api, tokens, 1, 10, 200);
    let shared = load.shared.clone();
    wait_loading(&first, 0, "first", &shared).await;
    // The stall clock starts with the process, before it answers: so does this one.
    let started = Instant::now();
    let second = group.start("loader", &stall).await;

    // Which of the two owns the partition after the join is the group's choice: the other
    // is not ready once it has owned nothing for the stall time, and says why.
    let deadline = started + Duration::from_secs(60);
    let (mut owner, idle, body) = loop {
        let (s1, b1) = first.get("/readyz", "").await;
        let (s2, b2) = second.get("/readyz", "").await;
        if s2 == 503 {
            break (first, second, b2);
        }
        if s1 == 503 {
            break (second, first, b1);
        }
        assert_eq!((s1, s2), (200, 200), "{b1}\n{b2}");
        assert!(
            Instant::now() < deadline,
            "both still ready after 60 s with one partition: {b1}\n{b2}\n{}\n{}",
            tail("first loader", &first.log()),
            tail("second loader", &second.log())
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        started.elapsed() >= Duration::from_secs(8),
        "not ready before the stall time: {body}"
    );
    assert!(
        body["stalled"]
            .as_str()
            .is_some_and(|s| s.contains("owned no log partition")),
        "{body}"
    );
    assert_eq!(body["status"], "not_ready");
    // The loader that owns the partition and loads stays ready.
    let (status, body) = owner.get("/readyz", "").await;
    assert_eq!(status, 200, "{body}");

    // Its partition's owner dies: the idle loader takes over, loads, and is ready again.
    owner.kill9();
    let before = rows_loaded(&idle).await;
    wait_loading(&idle, before, "idle", &shared).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = idle.get("/readyz", "").await;
        if status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "not ready while loading: {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    load.stop().await;
}

/// `ugc status --json` against `urls`.
fn status(urls: &[&str]) -> (bool, Value) {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_ugc"));
    c.args(["status", "--json"]);
    for u in urls {
        c.args(["--url", u]);
    }
    let out = c.output().expect("ugc status runs");
    let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "ugc status printed no JSON ({e}): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.success(), report)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::await_holding_lock)]
async fn ugc_status_shows_each_partition_with_its_loader_lag_and_dead_letters_and_fails_with_the_store_stopped()
 {
    let _heavy = HEAVY.lock().unwrap_or_else(|p| p.into_inner());
    // Members resume at the last commit after the second one joins: SQLite storage.
    let broker = Tansu::start(Storage::Sqlite);
    // A store of this test's own, to stop at the end.
    let mut clickhouse =
        tokio::task::spawn_blocking(ugc_testkit::clickhouse::ClickHouse::start_single)
            .await
            .unwrap()
            .expect("a ClickHouse server for the store");
    let group = format!("status-{}", uuid::Uuid::new_v4().simple());
    let url = clickhouse.url();
    let with = |role: &str| {
        let mut a = kafka_args(&broker.brokers());
        a.extend(
            [
                "--role",
                role,
                "--kafka-group",
                &group,
                "--kafka-session-timeout-ms",
                "6000",
                "--store",
                "clickhouse",
                "--clickhouse-url",
                &url,
            ]
            .map(String::from),
        );
        a
    };
    let api = Server::start(&args(&with("api"))).await;
    let first = Server::start(&args(&with("loader"))).await;
    let second = Server::start(&args(&with("loader"))).await;
    let urls = [api.base.as_str(), first.base.as_str(), second.base.as_str()];
    let loaders = HashSet::from([first.base.as_str(), second.base.as_str()]);
    let owners = |report: &Value| -> HashSet<String> {
        report["partitions"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["owner"].as_str().map(str::to_owned))
            .collect()
    };

    // First the group settles: the three partitions shared by the two loaders.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (healthy, report) = status(&urls);
        let owned = owners(&report);
        if healthy
            && report["partitions"]
                .as_array()
                .is_some_and(|p| p.len() == 3)
            && owned.len() == 2
            && owned.iter().all(|o| loaders.contains(o.as_str()))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the loaders never shared the partitions: {report:#}\n{}\n{}",
            tail("first loader", &first.log()),
            tail("second loader", &second.log())
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // Events of many users, so that every partition has some, and one undecodable
    // record straight to each of the three partitions.
    let users: Vec<String> = (0..12).map(|_| new_user()).collect();
    for (i, user) in users.iter().enumerate() {
        let (code, body) = api
            .post(
                "/api/v1/events",
                &api.token(user, &[]),
                &json!({"type":"view_progress","film_id":FILM,"film_timestamp":i}),
            )
            .await;
        assert_eq!(code, 202, "{body}");
    }
    for p in 0..3 {
        broker.produce("ugc.events", p, None, b"{\"not\": \"an envelope\"");
    }
    api.wait_for(
        &format!(
            "SELECT count() AS n FROM ugc.events WHERE {}",
            of_users(&users)
        ),
        json!(12),
        Duration::from_secs(120),
    )
    .await;

    // Every partition owned by one of the two loaders, each loader owning some, the lag 0,
    // both loaders having inserted (each partition had a record), and the dead letters
    // of the last hour counted.
    let deadline = Instant::now() + Duration::from_secs(120);
    let report = loop {
        let (healthy, report) = status(&urls);
        let owned = owners(&report);
        let inserted = report["instances"].as_array().unwrap()[1..]
            .iter()
            .all(|l| l["last_insert_at"].is_string());
        if healthy
            && report["partitions"]
                .as_array()
                .is_some_and(|p| p.len() == 3)
            && owned.len() == 2
            && owned.iter().all(|o| loaders.contains(o.as_str()))
            && report["lag"] == 0
            && inserted
            && report["store"]["dead_letters_last_hour"]["undecodable"] == 3
        {
            break report;
        }
        assert!(
            Instant::now() < deadline,
            "status never settled: {report:#}\n{}\n{}\n{}",
            tail("first loader", &first.log()),
            tail("second loader", &second.log()),
            tail("tansu", &broker.log())
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let mut seen: Vec<u64> = report["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            assert_eq!(p["topic"], "ugc.events", "{p}");
            assert_eq!(p["end"], p["committed"], "{p}");
            p["partition"].as_u64().unwrap()
        })
        .collect();
    seen.sort();
    assert_eq!(seen, [0, 1, 2], "each partition once: {report:#}");
    let roles: Vec<&str> = report["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["role"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(roles, ["api", "loader", "loader"]);
    for i in report["instances"].as_array().unwrap() {
        assert_eq!(i["store_reachable"], true, "{i}");
        assert!(i["store_rows"].as_u64().is_some_and(|n| n >= 12), "{i}");
    }
    // The table says the same: one line per partition, ending with its owner.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ugc"))
        .args([
            "status", "--url", urls[0], "--url", urls[1], "--url", urls[2],
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}");
    for p in 0..3 {
        assert!(
            text.lines()
                .any(|l| l.starts_with(&format!("ugc.events/{p} "))
                    && (l.ends_with(urls[1]) || l.ends_with(urls[2]))),
            "no line for partition {p} with its owner:\n{text}"
        );
    }
    // The Kafka producer's metrics are there on the API.
    let metrics = api.metrics().await;
    for name in [
        "ugc_log_queue_depth{backend=\"kafka\"}",
        "ugc_log_kafka_delivery_errors_total{reason=\"timed_out\"}",
    ] {
        assert!(metrics.contains_key(name), "{name} missing: {metrics:?}");
    }

    // With the store stopped, every role says so and the status fails.
    tokio::task::spawn_blocking(move || {
        clickhouse.stop().unwrap();
        clickhouse
    })
    .await
    .unwrap();
    let (healthy, report) = status(&urls);
    assert!(!healthy, "a stopped store must fail the status: {report:#}");
    assert_eq!(report["healthy"], false);
    for i in report["instances"].as_array().unwrap() {
        assert_eq!(i["store_reachable"], false, "{i}");
        assert!(i["problems"].to_string().contains("store"), "{i}");
    }
}
