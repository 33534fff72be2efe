//! Harness for black-box tests: runs the real `ugc` binary as a child process on a free
//! port with its own data directory, and talks to it over HTTP only.

#![allow(dead_code)] // each test binary uses a different part of the harness

pub mod browser;
pub mod load;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use ugc_testkit::free_port;

pub const SECRET: &str = "black-box-test-secret-0123456789";

pub struct Server {
    child: Option<Child>,
    pub base: String,
    port: u16,
    dir: tempfile::TempDir,
    args: Vec<String>,
    /// Whether the server gets the test HS256 secret (servers testing public keys do not).
    with_secret: bool,
    /// The Kafka-protocol broker this server's log lives on, with `UGC_TEST_LOG=kafka`.
    pub broker: Option<ugc_testkit::tansu::Tansu>,
    pub http: reqwest::Client,
}

impl Server {
    /// Starts `ugc` all-in-one with the test secret plus `args`, and waits until ready.
    pub async fn start(args: &[&str]) -> Server {
        Self::start_with(args, true).await
    }

    /// Starts `ugc` with only the keys that `args` configure.
    pub async fn start_without_secret(args: &[&str]) -> Server {
        Self::start_with(args, false).await
    }

    async fn start_with(args: &[&str], with_secret: bool) -> Server {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let mut args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let broker = kafka_log(&mut args);
        // Chosen once, so a restarted server finds its content database again.
        if !args.iter().any(|a| a.starts_with("--content-url")) {
            args.extend(content_args());
        }
        let mut s = Server {
            child: None,
            base: format!("http://127.0.0.1:{port}"),
            port,
            dir,
            args,
            with_secret,
            broker,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap(),
        };
        s.spawn().await;
        s
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("ugc.log")
    }

    fn command(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_ugc"));
        c.env_clear()
            .env("HOME", std::env::var_os("HOME").unwrap_or_default())
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .arg("--data-dir")
            .arg(self.data_dir());
        if self.with_secret {
            c.arg("--jwt-secret").arg(SECRET);
        }
        for var in ["UGC_CHDB_LIB", "UGC_CACHE_DIR"] {
            if let Some(v) = std::env::var_os(var) {
                c.env(var, v);
            }
        }
        c
    }

    async fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap();
        let child = self
            .command()
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", self.port))
            .args(&self.args)
            // A test that brings its own store keeps it.
            .args(if self.args.iter().any(|a| a == "--store") {
                vec![]
            } else {
                store_args()
            })
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("cannot start the ugc binary");
        self.child = Some(child);
        self.wait_ready().await;
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "ugc exited during start-up ({status}); its log:\n{}",
                    self.log()
                );
            }
            let ready = self.http.get(format!("{}/readyz", self.base)).send().await;
            if ready.is_ok_and(|r| r.status() == 200) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "ugc not ready within 90 s; its log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// kill -9: no shutdown path runs.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub async fn restart(&mut self) {
        self.kill9();
        self.spawn().await;
    }

    /// A token minted by `ugc token` against this server's configuration.
    pub fn token(&self, user: &str, roles: &[&str]) -> String {
        let mut c = self.command();
        c.args(["token", "--user", user]);
        for r in roles {
            c.args(["--role", r]);
        }
        let out = c.output().expect("ugc token");
        assert!(
            out.status.success(),
            "ugc token failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    pub async fn post(&self, path: &str, token: &str, body: &Value) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .expect("request failed");
        read(r).await
    }

    pub async fn get(&self, path: &str, token: &str) -> (u16, Value) {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(token)
            .send()
            .await
            .expect("request failed");
        read(r).await
    }

    /// Any method, with an optional JSON body.
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        token: &str,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("HTTP method");
        let mut r = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(token);
        if let Some(body) = body {
            r = r.json(body);
        }
        read(r.send().await.expect("request failed")).await
    }

    /// Runs analyst SQL with an admin token; panics on anything but 200.
    pub async fn sql(&self, sql: &str) -> Vec<Value> {
        let admin = self.token("analyst-in-tests", &["admin"]);
        let (status, body) = self
            .post("/api/v1/query", &admin, &json!({ "sql": sql }))
            .await;
        assert_eq!(status, 200, "query failed: {body}");
        body["rows"].as_array().cloned().unwrap_or_default()
    }

    /// This server's Prometheus series (name with labels, as printed) → value.
    pub async fn metrics(&self) -> BTreeMap<String, f64> {
        self.metrics_at(&self.base).await
    }

    /// The Prometheus series served at `base` (the API, or a `--metrics-listen` address).
    pub async fn metrics_at(&self, base: &str) -> BTreeMap<String, f64> {
        let r = self
            .http
            .get(format!("{base}/metrics"))
            .send()
            .await
            .expect("GET /metrics");
        assert_eq!(r.status(), 200, "GET {base}/metrics");
        let ctype = r.headers()["content-type"].to_str().unwrap().to_owned();
        assert!(ctype.starts_with("text/plain"), "{ctype}");
        r.text()
            .await
            .expect("metrics text")
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .filter_map(|l| {
                let (series, value) = l.rsplit_once(' ')?;
                Some((series.to_owned(), value.parse().ok()?))
            })
            .collect()
    }

    /// Polls `/metrics` until this server's loader has stored at least `rows` events, or
    /// fails at the deadline. Stored means the loader's insert returned, materialized views
    /// included: a view's rows become visible a moment after the rows they come from, so a
    /// count of `ugc.events` alone does not say that every derived table has them too.
    pub async fn wait_loaded(&self, rows: u64, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let stored = self
                .metrics()
                .await
                .get("ugc_loader_rows_total")
                .copied()
                .unwrap_or(0.0);
            if stored >= rows as f64 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the loader stored {stored} events, wanted {rows} within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Polls `sql` until its first row's first value equals `want`, or fails at the deadline.
    pub async fn wait_for(&self, sql: &str, want: Value, within: Duration) -> Vec<Value> {
        let deadline = Instant::now() + within;
        loop {
            let rows = self.sql(sql).await;
            let got = rows
                .first()
                .and_then(|r| r.as_object())
                .and_then(|o| o.values().next())
                .cloned();
            if got.as_ref() == Some(&want) {
                return rows;
            }
            assert!(
                Instant::now() < deadline,
                "`{sql}` gave {rows:?}, wanted {want} within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// With `UGC_TEST_LOG=kafka`, a server whose arguments choose no log gets its own tansu
/// broker (a child process, gone with the server) as its log, plus any flags in
/// `UGC_TEST_LOG_ARGS` (e.g. `--kafka-topic-mode per-type --kafka-compression zstd`).
fn kafka_log(args: &mut Vec<String>) -> Option<ugc_testkit::tansu::Tansu> {
    match std::env::var("UGC_TEST_LOG").as_deref() {
        Err(_) | Ok("") | Ok("embedded") => return None,
        Ok("kafka") => {}
        Ok(other) => panic!("UGC_TEST_LOG={other}: expected embedded or kafka"),
    }
    if args.iter().any(|a| a.starts_with("--log-backend")) {
        return None;
    }
    let broker = ugc_testkit::tansu::Tansu::start(ugc_testkit::tansu::Storage::Memory);
    args.extend(kafka_args(&broker.brokers()));
    let extra = std::env::var("UGC_TEST_LOG_ARGS").unwrap_or_default();
    args.extend(extra.split_whitespace().map(str::to_owned));
    Some(broker)
}

/// Flags for a Kafka log on a one-broker test cluster at `brokers`.
pub fn kafka_args(brokers: &str) -> Vec<String> {
    [
        "--log-backend",
        "kafka",
        "--kafka-brokers",
        brokers,
        "--kafka-partitions",
        "3",
        "--kafka-replication-factor",
        "1",
        "--kafka-min-insync-replicas",
        "1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// The store every test server uses, from `UGC_TEST_STORE`: `chdb` (the default, the
/// embedded engine), `clickhouse` (one ClickHouse server for the whole test binary) or
/// `cluster` (one 2 shards × 2 replicas cluster for the whole test binary). Tests share
/// the server's `ugc` database and tell their data apart by user and event ids.
pub fn store_args() -> Vec<String> {
    let shared = match std::env::var("UGC_TEST_STORE").as_deref() {
        Err(_) | Ok("") | Ok("chdb") => return vec![],
        Ok("clickhouse") => ugc_testkit::shared_single(),
        Ok("cluster") => ugc_testkit::shared_cluster(),
        Ok(other) => panic!("UGC_TEST_STORE={other}: expected chdb, clickhouse or cluster"),
    };
    let mut args = vec![
        "--store".to_owned(),
        "clickhouse".to_owned(),
        "--clickhouse-url".to_owned(),
        shared.url.clone(),
    ];
    if let Some(cluster) = shared.cluster {
        args.extend(["--clickhouse-cluster".to_owned(), cluster.to_owned()]);
    }
    args
}

/// The content database every test server uses, from `UGC_TEST_CONTENT`: `sqlite` (the
/// default, a file in the server's data directory) or `postgres` (a database of its own
/// on one PostgreSQL server for the whole test binary).
pub fn content_args() -> Vec<String> {
    match std::env::var("UGC_TEST_CONTENT").as_deref() {
        Err(_) | Ok("") | Ok("sqlite") => vec![],
        Ok("postgres") => vec![
            "--content-url".to_owned(),
            ugc_testkit::shared_postgres().fresh_database(),
        ],
        Ok(other) => panic!("UGC_TEST_CONTENT={other}: expected sqlite or postgres"),
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub async fn read(r: reqwest::Response) -> (u16, Value) {
    let status = r.status().as_u16();
    let text = r.text().await.unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

pub fn new_user() -> String {
    uuid::Uuid::new_v4().to_string()
}
