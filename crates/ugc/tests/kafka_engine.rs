//! Black-box: `ugc kafka-engine-ddl --apply` makes a ClickHouse 18.16 server load ugc's
//! topic itself (a Kafka engine table and a materialized view), and the rows it stores
//! are the rows ugc's loader stores from the same records, but for the log position
//! (18.16's engine has none) and strings holding JSON escapes (the engine's TabSeparated
//! read unescapes them first).

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Server, kafka_args, new_user};
use serde_json::{Value, json};
use ugc_testkit::tansu::{Storage, Tansu};
use ugc_testkit::{ClickHouse, KAFKA_ENGINE_CONFIG};

const FILM: &str = "1ec4cd73-2fd5-4f25-af68-b6595d279af2";

/// Rows of `<db>.events` by event id, without the log position.
fn rows(ch: &ClickHouse, db: &str) -> BTreeMap<String, Value> {
    let out = ch
        .query(&format!(
            "SELECT * FROM {db}.events ORDER BY event_id FORMAT JSONEachRow"
        ))
        .unwrap_or_else(|e| panic!("{e}"));
    out.lines()
        .map(|l| {
            let mut row: Value = serde_json::from_str(l).expect("a JSON row");
            let obj = row.as_object_mut().expect("an object");
            obj.remove("log_partition");
            obj.remove("log_offset");
            (obj["event_id"].as_str().unwrap_or("").to_owned(), row)
        })
        .collect()
}

fn count(ch: &ClickHouse, db: &str) -> u64 {
    ch.query(&format!("SELECT count() FROM {db}.events"))
        .ok()
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

/// Polls `check` every 200 ms until it passes, or fails with its last complaint once
/// `within` has passed.
fn wait(within: Duration, mut check: impl FnMut() -> Result<(), String>) {
    let deadline = Instant::now() + within;
    loop {
        match check() {
            Ok(()) => return,
            Err(why) => assert!(Instant::now() < deadline, "after {within:?}: {why}"),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn wait_count(ch: &ClickHouse, db: &str, n: u64, within: Duration) {
    wait(within, || match count(ch, db) {
        c if c >= n => Ok(()),
        c => Err(format!("{db}.events has {c} of {n} rows")),
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kafka_engine_stores_the_rows_ugcs_loader_stores() {
    let broker = Tansu::start(Storage::Memory);
    let ch = ClickHouse::start_single_with(KAFKA_ENGINE_CONFIG).unwrap_or_else(|e| panic!("{e}"));
    let mut log = kafka_args(&broker.brokers());
    log.extend(["--kafka-topic".to_owned(), "engine.events".to_owned()]);
    let store = |db: &str| {
        [
            "--store",
            "clickhouse",
            "--clickhouse-url",
            &ch.url(),
            "--clickhouse-database",
            db,
        ]
        .map(String::from)
    };
    let mut args = log.clone();
    args.extend(store("loaded"));
    let server = Server::start(&args.iter().map(String::as_str).collect::<Vec<_>>()).await;

    // Every event type the API takes, contexts with the client's own keys (one nested
    // under a key named like an envelope field), and strings with JSON escapes.
    let events = json!([
        {"type":"view_progress","film_id":FILM,"film_timestamp":754,"occurred_at":1716580000123u64},
        {"type":"pause","film_id":FILM,"position":0,"occurred_at":"2024-05-01T20:15:00+03:00"},
        {"type":"full_view","film_id":FILM,"context":{"language":"ru-RU","timezone":"Europe/Moscow","app_version":"tv-1.2"}},
        {"type":"quality_change","film_id":FILM,"from":"360p","to":"1080","position":604800},
        {"type":"playback_start","film_id":FILM,"startup_ms":3_600_000},
        {"type":"rebuffer","film_id":FILM,"position":604800,"duration_ms":0},
        {"type":"playback_error","film_id":FILM,"code":3,"message":"decode failed","fatal":true},
        {"type":"page_view","page":"film_search","params":{"query":"матрица","film_id":FILM,"position":5}},
        {"type":"custom","name":"trailer.click","data":{"film_id":FILM,"list":[1,2.5,null,true]}},
        {"type":"custom","name":"no_data"},
        {"type":"custom","name":"ctx","context":{"language":"en","device":{"event":{"type":"tv"}},"language_raw":[1]}},
        {"type":"playback_error","film_id":FILM,"code":4,"message":"bad \"codec\" \\ path","fatal":false},
        {"type":"custom","name":"escapes","data":{"s":"tab\there \u{0}"}},
    ]);
    let n = events.as_array().map_or(0, Vec::len) as u64;
    let token = server.token(&new_user(), &[]);
    let (status, body) = server.post("/api/v1/events/batch", &token, &events).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["accepted"].as_u64(), Some(n), "{body}");
    // The loader counts rows once the insert, views included, has returned.
    server.wait_loaded(n, Duration::from_secs(60)).await;

    let mut ddl = Command::new(env!("CARGO_BIN_EXE_ugc"));
    ddl.env_clear()
        .env("HOME", std::env::var_os("HOME").unwrap_or_default())
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .arg("kafka-engine-ddl")
        .arg("--apply")
        .args(&log)
        .args(store("engine"));
    let out = ddl.output().expect("cannot run ugc kafka-engine-ddl");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "ugc kafka-engine-ddl failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("ENGINE = Kafka"), "{stdout}");
    assert!(stdout.contains("TO engine.events AS"), "{stdout}");
    wait_count(&ch, "engine", n, Duration::from_secs(120));

    let loaded = rows(&ch, "loaded");
    let engine = rows(&ch, "engine");
    assert_eq!(loaded.len() as u64, n);
    assert_eq!(
        engine.keys().collect::<Vec<_>>(),
        loaded.keys().collect::<Vec<_>>(),
        "the engine stored other events than the loader"
    );
    let mut altered = 0;
    for (id, want) in &loaded {
        let got = &engine[id];
        // JSON escapes in the record reach the view unescaped: only those strings differ.
        let escaped = want["data"].as_str().is_some_and(|d| d.contains('\\'));
        if escaped {
            altered += 1;
            for (col, v) in want.as_object().unwrap() {
                if col != "data" {
                    assert_eq!(&got[col], v, "{id}: column {col}");
                }
            }
            assert_ne!(got["data"], want["data"]);
        } else {
            assert_eq!(got, want, "{id}");
        }
    }
    assert_eq!(altered, 2, "the two events with escapes");

    // The analytics' hourly rows come from the engine too (a second view on the engine
    // table: 18.16 does not chain a view's insert on to the views of its target). They
    // are written after the block's `events` rows, so they are polled for.
    let hourly = |db: &str| {
        ch.query(&format!(
            "SELECT hour, film_id, user_id FROM {db}.hourly ORDER BY hour, film_id, user_id FORMAT TSV"
        ))
        .unwrap_or_else(|e| panic!("{e}"))
    };
    let want = hourly("loaded");
    assert!(!want.is_empty());
    wait(Duration::from_secs(60), || match hourly("engine") {
        got if got == want => Ok(()),
        got => Err(format!("engine.hourly:\n{got}\nloaded.hourly:\n{want}")),
    });
}
