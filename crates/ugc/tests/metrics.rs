//! `GET /metrics` from outside: Prometheus text whose counters move by exactly what was
//! sent, every documented metric present from the start, and the endpoint movable off
//! the public port with `UGC_METRICS_LISTEN`.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{Server, new_user};
use serde_json::json;

/// The metric names the README documents; each must be there right after start.
const DOCUMENTED: &[&str] = &[
    "ugc_build_info",
    "ugc_process_uptime_seconds",
    "ugc_process_resident_memory_bytes",
    "ugc_process_open_fds",
    "ugc_http_requests_total",
    "ugc_http_request_duration_seconds_bucket",
    "ugc_http_body_too_large_total",
    "ugc_events_accepted_total",
    "ugc_log_appends_total",
    "ugc_log_append_duration_seconds_bucket",
    "ugc_log_unavailable_total",
    "ugc_log_queue_depth",
    "ugc_store_reads_total",
    "ugc_store_read_duration_seconds_bucket",
    "ugc_store_inserts_total",
    "ugc_store_insert_duration_seconds_bucket",
    "ugc_store_errors_total",
    "ugc_loader_batches_total",
    "ugc_loader_rows_total",
    "ugc_loader_bytes_total",
    "ugc_loader_dead_letters_total",
    "ugc_loader_retries_total",
    "ugc_loader_duplicates_dropped_total",
    "ugc_loader_insert_duration_seconds_bucket",
];

/// Documented metrics that appear a moment after start: the lag with its first reading
/// (about a second), the time since the last insert with the first batch, rejections
/// (labelled by type and reason) with the first.
const DOCUMENTED_LATER: &[&str] = &[
    "ugc_events_rejected_total",
    "ugc_loader_lag_events",
    "ugc_loader_seconds_since_last_insert",
];

/// Documented metrics of the Kafka log only, there from start when it is the log.
const DOCUMENTED_KAFKA: &[&str] = &["ugc_log_kafka_delivery_errors_total"];

fn has(m: &BTreeMap<String, f64>, name: &str) -> bool {
    m.keys()
        .any(|s| s == name || s.starts_with(&format!("{name}{{")))
}

/// The sum of every series of `name`, whatever its labels, and how many there are.
fn total(m: &BTreeMap<String, f64>, name: &str) -> (f64, usize) {
    m.iter()
        .filter(|(s, _)| *s == name || s.starts_with(&format!("{name}{{")))
        .fold((0.0, 0), |(sum, n), (_, v)| (sum + v, n + 1))
}

fn delta(before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>, series: &str) -> f64 {
    after.get(series).copied().unwrap_or(0.0) - before.get(series).copied().unwrap_or(0.0)
}

#[tokio::test]
async fn counters_move_by_exactly_what_was_sent() {
    let server = Server::start(&[]).await;
    let before = server.metrics().await;
    let on_kafka = before.keys().any(|s| s.contains("log_backend=\"kafka\""));
    for name in DOCUMENTED
        .iter()
        .chain(if on_kafka { DOCUMENTED_KAFKA } else { &[] })
    {
        assert!(has(&before, name), "{name} is not exposed after start");
    }
    let user = new_user();
    let token = server.token(&user, &[]);
    let film = uuid::Uuid::new_v4().to_string();
    for t in [10, 20, 30] {
        let (status, body) = server
            .post(
                "/api/v1/events",
                &token,
                &json!({"type": "view_progress", "film_id": film, "film_timestamp": t}),
            )
            .await;
        assert_eq!(status, 202, "{body}");
    }
    let (status, body) = server
        .post(
            "/api/v1/events/batch",
            &token,
            &json!([
                {"type": "pause", "film_id": film, "position": 31},
                {"type": "pause", "film_id": film, "position": 32},
                {"type": "full_view", "film_id": film},
                {"type": "page_view", "page": "film", "params": {}},
                {"type": "pause", "film_id": "not-a-uuid", "position": 1},
            ]),
        )
        .await;
    assert_eq!(
        (status, body["accepted"].as_u64()),
        (202, Some(4)),
        "{body}"
    );
    let (status, _) = server
        .post("/api/v1/events", &token, &json!({"type": "full_view"}))
        .await;
    assert_eq!(status, 422);

    let after = server.metrics().await;
    let accepted = |t: &str| {
        delta(
            &before,
            &after,
            &format!("ugc_events_accepted_total{{type=\"{t}\"}}"),
        )
    };
    assert_eq!(accepted("view_progress"), 3.0);
    assert_eq!(accepted("pause"), 2.0);
    assert_eq!(accepted("full_view"), 1.0);
    assert_eq!(accepted("page_view"), 1.0);
    assert_eq!(accepted("quality_change") + accepted("custom"), 0.0);
    let rejected = |t: &str| {
        delta(
            &before,
            &after,
            &format!("ugc_events_rejected_total{{type=\"{t}\",reason=\"invalid\"}}"),
        )
    };
    assert_eq!((rejected("pause"), rejected("full_view")), (1.0, 1.0));
    let requests = |route: &str, status: &str| {
        delta(
            &before,
            &after,
            &format!(
                "ugc_http_requests_total{{route=\"{route}\",method=\"POST\",status=\"{status}\"}}"
            ),
        )
    };
    assert_eq!(requests("/api/v1/events", "2xx"), 3.0);
    assert_eq!(requests("/api/v1/events", "4xx"), 1.0);
    assert_eq!(requests("/api/v1/events/batch", "2xx"), 1.0);
    // One append per request: three singles and the batch's four together.
    let backend = if on_kafka { "kafka" } else { "embedded" };
    assert_eq!(
        delta(
            &before,
            &after,
            &format!("ugc_log_appends_total{{backend=\"{backend}\"}}")
        ),
        4.0
    );

    // The loader stores them; the store's insert counter moves.
    server
        .wait_for(
            &format!("SELECT count() FROM ugc.events WHERE user_id = '{user}'"),
            json!(7),
            Duration::from_secs(30),
        )
        .await;
    // Rows are visible while the insert call (events, then progress) still runs, so the
    // counters, moved once the batch is committed, may lag the query a little; then the
    // loader's lag reads 0 on every partition and its last insert is recent.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let later = loop {
        let m = server.metrics().await;
        let (lag, partitions) = total(&m, "ugc_loader_lag_events");
        if delta(&before, &m, "ugc_store_inserts_total") >= 1.0
            && delta(&before, &m, "ugc_loader_rows_total") == 7.0
            && partitions > 0
            && lag == 0.0
            && DOCUMENTED_LATER.iter().all(|n| has(&m, n))
        {
            break m;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the store's and loader's counters did not move by the events sent, or the lag \
             did not reach 0: {m:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(later["ugc_process_resident_memory_bytes"] > 1e6);
}

#[tokio::test]
async fn metrics_can_listen_apart_from_the_api() {
    let port = ugc_testkit::free_port();
    let server = Server::start(&["--metrics-listen", &format!("127.0.0.1:{port}")]).await;
    let apart = format!("http://127.0.0.1:{port}");
    let on_api = server
        .http
        .get(format!("{}/metrics", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(on_api.status(), 404, "not on the public port");
    let series = server.metrics_at(&apart).await;
    assert!(series.contains_key("ugc_process_open_fds"));
}

#[tokio::test]
async fn a_request_id_is_echoed_logged_and_stored_with_the_event() {
    let server = Server::start(&["--log-format", "json"]).await;
    let user = new_user();
    let token = server.token(&user, &[]);
    let film = uuid::Uuid::new_v4().to_string();
    let sent = "req-0190c7e2-6b5f-7cc3";
    let answer = server
        .http
        .post(format!("{}/api/v1/events", server.base))
        .bearer_auth(&token)
        .header("x-request-id", sent)
        .json(&json!({"type": "pause", "film_id": film, "position": 5}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 202);
    assert_eq!(answer.headers()["x-request-id"], sent);

    // None sent, or a forged one: the server makes its own.
    for header in [None, Some("two words\tand a tab")] {
        let mut req = server
            .http
            .post(format!("{}/api/v1/events", server.base))
            .bearer_auth(&token)
            .json(&json!({"type": "pause", "film_id": film, "position": 6}));
        if let Some(h) = header {
            req = req.header("x-request-id", h);
        }
        let answer = req.send().await.unwrap();
        let id = answer.headers()["x-request-id"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(uuid::Uuid::parse_str(&id).is_ok(), "{id}");
    }

    let rows = server
        .wait_for(
            &format!(
                "SELECT count() FROM ugc.events WHERE user_id = '{user}' \
                 AND JSONExtractString(context, 'request_id') = '{sent}'"
            ),
            json!(1),
            Duration::from_secs(30),
        )
        .await;
    assert_eq!(rows.len(), 1);
    // The access log line of that request, as JSON, carries the id.
    let log = server.log();
    let line = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|l| l["span"]["request_id"] == sent && l["target"] == "ugc::access")
        .unwrap_or_else(|| panic!("no JSON access line with the request id in:\n{log}"));
    assert_eq!(line["fields"]["status"], 202, "{line}");
    assert_eq!(line["span"]["route"], "/api/v1/events", "{line}");
    // The caller is named by a hash of the user id; neither the id nor the token is
    // anywhere in the log.
    use sha2::Digest as _;
    let hashed: String = sha2::Sha256::digest(user.as_bytes())[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(line["span"]["user"], hashed, "{line}");
    assert!(!log.contains(&user), "the raw user id is logged:\n{log}");
    assert!(!log.contains(&token), "the token is logged:\n{log}");
    // The loader's line of each stored batch names its token, partition and rows; it is
    // written once the batch is committed, a moment after its rows can be read.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let batch = loop {
        let log = server.log();
        let found = log
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|l| l["fields"]["message"] == "batch stored");
        if let Some(line) = found {
            break line;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no JSON line of a stored batch in:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let fields = &batch["fields"];
    assert!(
        fields["batch_token"]
            .as_str()
            .is_some_and(|t| !t.is_empty())
            && fields["partition"].is_u64()
            && fields["rows"].as_u64().is_some_and(|r| r > 0),
        "{batch}"
    );
}

fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write as _;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

#[tokio::test]
async fn compressed_bodies_are_ingested_and_bombs_refused() {
    let server = Server::start(&[]).await;
    let user = new_user();
    let token = server.token(&user, &[]);
    let film = uuid::Uuid::new_v4().to_string();
    let batch = json!(
        (0..50)
            .map(|i| json!({"type": "view_progress", "film_id": film, "film_timestamp": i}))
            .collect::<Vec<_>>()
    );
    let raw = serde_json::to_vec(&batch).unwrap();
    let post = |body: Vec<u8>, encoding: &'static str| {
        server
            .http
            .post(format!("{}/api/v1/events/batch", server.base))
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .header("content-encoding", encoding)
            .body(body)
            .send()
    };
    let r = post(gzip(&raw), "gzip").await.unwrap();
    assert_eq!(r.status(), 202);
    let r = post(zstd::encode_all(&raw[..], 3).unwrap(), "zstd")
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "zstd");
    let r = post(raw.clone(), "br").await.unwrap();
    assert_eq!(r.status(), 415, "an encoding we do not take");
    server
        .wait_for(
            &format!("SELECT uniqExact(event_id) FROM ugc.events WHERE user_id = '{user}'"),
            json!(100),
            Duration::from_secs(30),
        )
        .await;

    // 1 GiB of zeros in just under the 1 MiB body limit: refused before it inflates.
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..1024 {
        std::io::Write::write_all(&mut e, &zeros).unwrap();
    }
    let bomb = e.finish().unwrap();
    assert!(bomb.len() < 1 << 20, "{} bytes", bomb.len());
    let rss = |m: &BTreeMap<String, f64>| m["ugc_process_resident_memory_bytes"];
    let before = server.metrics().await;
    let r = post(bomb, "gzip").await.unwrap();
    assert_eq!(r.status(), 413);
    let after = server.metrics().await;
    assert!(
        rss(&after) - rss(&before) < 64e6,
        "RSS grew from {} to {}",
        rss(&before),
        rss(&after)
    );
    // Just over the ratio, far under the size limit: refused too.
    let r = post(gzip(&vec![b' '; 200_000]), "gzip").await.unwrap();
    assert_eq!(r.status(), 413);
}

/// Every metric the README's table names is one these tests check is exposed.
#[test]
fn every_metric_the_readme_documents_is_checked() {
    let readme = include_str!("../../../README.md");
    let section = readme
        .split("\n## Metrics\n")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .expect("a Metrics section");
    let names: std::collections::BTreeSet<&str> = section
        .lines()
        .filter(|l| l.starts_with("| `ugc_"))
        .filter_map(|l| l.split('|').nth(1))
        .flat_map(|cell| cell.split('`').filter(|w| w.starts_with("ugc_")))
        .collect();
    assert!(names.len() >= 25, "{names:?}");
    for name in names {
        assert!(
            DOCUMENTED
                .iter()
                .chain(DOCUMENTED_LATER)
                .chain(DOCUMENTED_KAFKA)
                .any(|d| d.trim_end_matches("_bucket") == name),
            "README documents {name}, which no test checks"
        );
    }
}

/// The Grafana dashboard in deploy/ is valid JSON and charts only metrics `ugc` exposes.
#[test]
fn the_dashboard_charts_only_documented_metrics() {
    let text = include_str!("../../../deploy/grafana/dashboards/ugc.json");
    let dashboard: serde_json::Value = serde_json::from_str(text).expect("valid JSON");
    let documented = |name: &str| {
        let base = name
            .trim_end_matches("_bucket")
            .trim_end_matches("_sum")
            .trim_end_matches("_count");
        DOCUMENTED
            .iter()
            .chain(DOCUMENTED_LATER)
            .chain(DOCUMENTED_KAFKA)
            .any(|d| d.trim_end_matches("_bucket") == base || *d == name)
    };
    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(panels.len() >= 6);
    for p in panels {
        for t in p["targets"].as_array().unwrap() {
            let expr = t["expr"].as_str().unwrap();
            let names: Vec<&str> = expr
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|w| w.starts_with("ugc_"))
                .collect();
            assert!(!names.is_empty(), "{expr}");
            for n in names {
                assert!(
                    documented(n),
                    "{} charts {n}, which ugc does not expose",
                    p["title"]
                );
            }
        }
    }
}

/// `ugc status` against running instances: healthy answers 0 and says what runs; with
/// the store stopped (a ClickHouse server here) it answers non-zero and says why.
#[tokio::test]
async fn ugc_status_says_healthy_or_not() {
    let status = |urls: &[&str], json: bool| {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_ugc"));
        c.arg("status");
        for u in urls {
            c.args(["--url", u]);
        }
        if json {
            c.arg("--json");
        }
        c.output().unwrap()
    };
    let aio = Server::start(&[]).await;
    let user = new_user();
    let token = aio.token(&user, &[]);
    let film = uuid::Uuid::new_v4().to_string();
    for t in [1, 2] {
        let (code, body) = aio
            .post(
                "/api/v1/events",
                &token,
                &json!({"type": "view_progress", "film_id": film, "film_timestamp": t}),
            )
            .await;
        assert_eq!(code, 202, "{body}");
    }
    // Stored, the lag read since (about once a second) and 0 on the log's one partition,
    // which this instance's loader owns.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let report = loop {
        let out = status(&[&aio.base], true);
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let inst = &report["instances"][0];
        if out.status.success()
            && inst["store_rows"].as_u64().is_some_and(|n| n >= 2)
            && inst["last_insert_at"].is_string()
            && report["partitions"]
                .as_array()
                .is_some_and(|p| p.len() == 1)
            && report["lag"] == 0
        {
            break report;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "status never showed the events stored and a lag of 0: {report:#}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let partition = &report["partitions"][0];
    assert_eq!(partition["owner"], aio.base.as_str(), "{report:#}");
    assert_eq!(partition["end"], partition["committed"], "{report:#}");
    assert_eq!(report["instances"][0]["store_reachable"], true);
    assert_eq!(report["store"]["dead_letters_last_hour"], json!({}));
    let out = status(&[&aio.base], false);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("ready") && text.contains("embedded") && text.contains("chdb"),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("embedded/0") && l.ends_with(aio.base.as_str())),
        "a line for the log's partition and its owner: {text}"
    );

    let mut clickhouse =
        tokio::task::spawn_blocking(ugc_testkit::clickhouse::ClickHouse::start_single)
            .await
            .unwrap()
            .expect("a ClickHouse server for the store");
    let on_server = Server::start(&[
        "--store",
        "clickhouse",
        "--clickhouse-url",
        &clickhouse.url(),
    ])
    .await;
    let out = status(&[&aio.base, &on_server.base], true);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["instances"][1]["store_backend"], "clickhouse");

    tokio::task::spawn_blocking(move || {
        clickhouse.stop().unwrap();
        clickhouse
    })
    .await
    .unwrap();
    let out = status(&[&aio.base, &on_server.base], true);
    assert!(
        !out.status.success(),
        "a stopped store must fail the status"
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["healthy"], false);
    assert_eq!(report["instances"][0]["ready"], true);
    assert_eq!(report["instances"][1]["ready"], false);
    assert_eq!(report["instances"][1]["store_reachable"], false);
    let problems = report["instances"][1]["problems"].to_string();
    assert!(problems.contains("store"), "{problems}");
}

/// Read answers come compressed to a client that accepts it, and plain otherwise.
#[tokio::test]
async fn answers_are_compressed_for_clients_that_accept_it() {
    let server = Server::start(&[]).await;
    for (accept, want) in [
        ("gzip", Some("gzip")),
        ("zstd", Some("zstd")),
        ("identity", None),
    ] {
        let r = server
            .http
            .get(format!("{}/openapi.json", server.base))
            .header("accept-encoding", accept)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let got = r
            .headers()
            .get("content-encoding")
            .map(|v| v.to_str().unwrap().to_owned());
        assert_eq!(got.as_deref(), want, "Accept-Encoding: {accept}");
    }
}
