//! `ugc status`: is a deployment healthy, and how far behind is it?
//!
//! Each role serves `GET /status` on its main address ([`router`]): its role and
//! backends, the store as it answers now (reachable, rows, newest arrival, dead letters by
//! reason in the last hour — SQL on the store's own tables), and, where a loader runs,
//! the partitions it owns with their lag, and its last insert. The command ([`run`]) asks
//! each given instance for that, its readiness and its metrics, puts the partitions
//! together with their owners, and prints a table — or JSON for scripts. It exits
//! non-zero when any instance is unreachable or not ready, its store does not answer,
//! or its loader reports an error.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, UNIX_EPOCH};

use anyhow::Context as _;
use axum::Json;
use axum::extract::State;
use axum::routing::get;
use clap::Args;
use serde::Serialize;
use serde_json::{Value, json};
use ugc_loader::LoaderStatus;
use ugc_store::EventStore;

/// How long `/status` waits for the store: it must answer even when the store does not.
const STORE_WAIT: Duration = Duration::from_secs(3);

#[derive(Clone)]
pub struct StatusState {
    pub role: String,
    pub log_backend: String,
    pub store_backend: String,
    pub store: Arc<dyn EventStore>,
    /// This process's loader, when it runs one.
    pub loader: Option<Arc<LoaderStatus>>,
}

/// `GET /status`.
pub fn router<S: Clone + Send + Sync + 'static>(state: StatusState) -> axum::Router<S> {
    axum::Router::new()
        .route("/status", get(status))
        .with_state(state)
}

fn unix_rfc3339(secs: f64) -> String {
    ugc_model::Timestamp::from_millis((secs * 1000.0) as i64)
        .map(|t| t.to_rfc3339())
        .unwrap_or_default()
}

async fn status(State(st): State<StatusState>) -> Json<Value> {
    let store = match tokio::time::timeout(STORE_WAIT, async {
        st.store.ping().await?;
        st.store.overview().await
    })
    .await
    {
        Ok(Ok(o)) => json!({
            "backend": st.store_backend,
            "reachable": true,
            "rows": o.rows,
            "newest_event_at": o.newest_event_secs.map(|s| unix_rfc3339(s as f64)),
            "dead_letters_last_hour": o.dead_letters_last_hour,
        }),
        Ok(Err(e)) => {
            json!({"backend": st.store_backend, "reachable": false, "error": e.to_string()})
        }
        Err(_) => json!({
            "backend": st.store_backend,
            "reachable": false,
            "error": format!("the store did not answer within {STORE_WAIT:?}"),
        }),
    };
    let loader = st.loader.as_ref().map(|l| {
        let now = std::time::SystemTime::now();
        let since = ugc_loader::seconds_since_last_insert();
        let lag = l.lag();
        let partitions: Vec<Value> = lag
            .iter()
            .flat_map(|r| &r.partitions)
            .map(|p| {
                json!({
                    "topic": p.topic,
                    "partition": p.partition,
                    "end": p.end,
                    "committed": p.committed,
                    "lag": p.lag,
                })
            })
            .collect();
        json!({
            "rows_loaded": l.rows_loaded.load(Ordering::Relaxed),
            "batches_loaded": l.batches_loaded.load(Ordering::Relaxed),
            "last_error": l.last_error(),
            "seconds_since_last_insert": since,
            "last_insert_at": since.map(|s| {
                let now = now.duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
                unix_rfc3339(now - s)
            }),
            "lag": lag.as_ref().map(|r| r.partitions.iter().map(|p| p.lag).sum::<u64>()),
            "lag_read_at": lag.as_ref().and_then(|r| r.at.duration_since(UNIX_EPOCH).ok())
                .map(|d| unix_rfc3339(d.as_secs_f64())),
            "partitions": partitions,
        })
    });
    Json(json!({
        "role": st.role,
        "log": {"backend": st.log_backend},
        "store": store,
        "loader": loader,
    }))
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// Base URL of an instance (repeatable): an API, a loader, or all-in-one, e.g.
    /// `http://127.0.0.1:8000`; the address that serves /readyz, /status and /metrics.
    #[arg(long = "url", required = true)]
    pub urls: Vec<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Seconds to wait for each answer.
    #[arg(long, default_value_t = 5)]
    pub timeout_secs: u64,
}

/// One partition of the log as its owner last read it.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Partition {
    /// The Kafka topic; absent for the embedded log's one partition.
    pub topic: Option<String>,
    pub partition: u64,
    /// The log's end offset and the owner's committed position.
    pub end: u64,
    pub committed: u64,
    pub lag: u64,
    /// The URL of the loader that owns it.
    pub owner: String,
}

#[derive(Debug, Default, Serialize)]
pub struct Instance {
    pub url: String,
    pub reachable: bool,
    pub ready: bool,
    /// What is wrong, if anything (log, store, loader).
    pub problems: Vec<String>,
    pub role: Option<String>,
    pub log_backend: Option<String>,
    pub store_backend: Option<String>,
    /// Whether the store answered this instance's `/status` just now.
    pub store_reachable: Option<bool>,
    /// Rows in the store, and when the newest stored event arrived.
    pub store_rows: Option<u64>,
    pub newest_event_at: Option<String>,
    /// Dead letters stored in the last hour, by reason (SQL on the dead-letter table).
    pub dead_letters_last_hour: BTreeMap<String, u64>,
    /// Rows this instance's loader stored since it started.
    pub rows_loaded: Option<u64>,
    /// Events in the log not yet in the store, over the partitions this loader owns.
    pub lag: Option<u64>,
    pub partitions: Vec<Partition>,
    pub seconds_since_last_insert: Option<f64>,
    pub last_insert_at: Option<String>,
    /// Dead letters by reason since this instance started (its metrics).
    pub dead_letters: BTreeMap<String, u64>,
    pub store_errors: BTreeMap<String, u64>,
    pub events_accepted: Option<u64>,
}

impl Instance {
    pub fn healthy(&self) -> bool {
        self.reachable && self.ready && self.problems.is_empty()
    }
}

/// Series name → (labels, value), from the Prometheus text format.
fn parse_metrics(text: &str) -> Vec<(String, BTreeMap<String, String>, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let value: f64 = value.parse().ok()?;
            let (name, labels) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            let labels = labels
                .split("\",")
                .filter_map(|kv| {
                    let (k, v) = kv.split_once("=\"")?;
                    Some((k.trim().to_owned(), v.trim_end_matches('"').to_owned()))
                })
                .collect();
            Some((name.to_owned(), labels, value))
        })
        .collect()
}

async fn get_json(http: &reqwest::Client, url: String) -> Option<Value> {
    let r = http.get(url).send().await.ok()?;
    if !r.status().is_success() {
        return None;
    }
    r.json().await.ok()
}

async fn probe(http: &reqwest::Client, url: &str) -> Instance {
    let base = url.trim_end_matches('/');
    let mut inst = Instance {
        url: base.to_owned(),
        ..Instance::default()
    };
    match http.get(format!("{base}/readyz")).send().await {
        Err(e) => {
            inst.problems.push(format!("unreachable: {e}"));
            return inst;
        }
        Ok(r) => {
            inst.reachable = true;
            inst.ready = r.status().is_success();
            let body: Value = r.json().await.unwrap_or_default();
            for key in ["log", "store"] {
                if let Some(p) = body[key].as_str() {
                    inst.problems.push(format!("{key}: {p}"));
                }
            }
            if let Some(p) = body["loader"]["last_error"].as_str() {
                inst.problems.push(format!("loader: {p}"));
            }
            if let Some(p) = body["loader"]["stalled"].as_str() {
                inst.problems.push(format!("loader stalled: {p}"));
            }
        }
    }
    if let Some(s) = get_json(http, format!("{base}/status")).await {
        read_status(&mut inst, &s);
    }
    if let Some(text) = async {
        http.get(format!("{base}/metrics"))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()
    }
    .await
    {
        read_metrics(&mut inst, &text);
    }
    inst
}

fn read_status(inst: &mut Instance, s: &Value) {
    inst.role = s["role"].as_str().map(str::to_owned);
    inst.log_backend = s["log"]["backend"].as_str().map(str::to_owned);
    let store = &s["store"];
    inst.store_backend = store["backend"].as_str().map(str::to_owned);
    inst.store_reachable = store["reachable"].as_bool();
    if store["reachable"] == false {
        let why = store["error"].as_str().unwrap_or("no answer");
        let problem = format!("store: {why}");
        if !inst.problems.contains(&problem) {
            inst.problems.push(problem);
        }
    }
    inst.store_rows = store["rows"].as_u64();
    inst.newest_event_at = store["newest_event_at"].as_str().map(str::to_owned);
    if let Some(dead) = store["dead_letters_last_hour"].as_object() {
        inst.dead_letters_last_hour = dead
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), v.as_u64()?)))
            .collect();
    }
    let loader = &s["loader"];
    if loader.is_null() {
        return;
    }
    inst.rows_loaded = loader["rows_loaded"].as_u64();
    inst.lag = loader["lag"].as_u64();
    inst.seconds_since_last_insert = loader["seconds_since_last_insert"].as_f64();
    inst.last_insert_at = loader["last_insert_at"].as_str().map(str::to_owned);
    if let Some(e) = loader["last_error"].as_str() {
        let problem = format!("loader: {e}");
        if !inst.problems.contains(&problem) {
            inst.problems.push(problem);
        }
    }
    inst.partitions = loader["partitions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| Partition {
            topic: p["topic"].as_str().map(str::to_owned),
            partition: p["partition"].as_u64().unwrap_or(0),
            end: p["end"].as_u64().unwrap_or(0),
            committed: p["committed"].as_u64().unwrap_or(0),
            lag: p["lag"].as_u64().unwrap_or(0),
            owner: inst.url.clone(),
        })
        .collect();
}

fn read_metrics(inst: &mut Instance, text: &str) {
    for (name, labels, value) in parse_metrics(text) {
        let label = |k: &str| labels.get(k).cloned().unwrap_or_default();
        match name.as_str() {
            // An instance too old to serve /status still says what it runs.
            "ugc_build_info" => {
                inst.role = inst.role.take().or_else(|| labels.get("role").cloned());
                inst.log_backend = inst
                    .log_backend
                    .take()
                    .or_else(|| labels.get("log_backend").cloned());
                inst.store_backend = inst
                    .store_backend
                    .take()
                    .or_else(|| labels.get("store_backend").cloned());
            }
            "ugc_loader_rows_total" => inst.rows_loaded = Some(value as u64),
            "ugc_loader_dead_letters_total" if value > 0.0 => {
                inst.dead_letters.insert(label("reason"), value as u64);
            }
            "ugc_store_errors_total" if value > 0.0 => {
                inst.store_errors.insert(label("class"), value as u64);
            }
            "ugc_events_accepted_total" => {
                *inst.events_accepted.get_or_insert(0) += value as u64;
            }
            _ => {}
        }
    }
}

fn or_dash<T: ToString>(v: &Option<T>) -> String {
    v.as_ref().map_or_else(|| "-".into(), ToString::to_string)
}

fn partition_name(p: &Partition) -> String {
    match &p.topic {
        Some(t) => format!("{t}/{}", p.partition),
        None => format!("embedded/{}", p.partition),
    }
}

fn table(instances: &[Instance], partitions: &[Partition], healthy: bool) -> String {
    let mut out = format!(
        "{:<28} {:<7} {:<10} {:<8} {:<11} {:>10} {:>9} {:>10} {:>8} {:>12}  {}\n",
        "instance",
        "role",
        "state",
        "log",
        "store",
        "store rows",
        "accepted",
        "loaded",
        "lag",
        "last insert",
        "notes"
    );
    for i in instances {
        let state = if !i.reachable {
            "down"
        } else if i.healthy() {
            "ready"
        } else {
            "unhealthy"
        };
        let store = match i.store_reachable {
            Some(false) => format!("{} DOWN", or_dash(&i.store_backend)),
            _ => or_dash(&i.store_backend),
        };
        let mut notes: Vec<String> = i.problems.clone();
        if !i.dead_letters_last_hour.is_empty() {
            notes.push(format!(
                "dead letters in the last hour {:?}",
                i.dead_letters_last_hour
            ));
        }
        if !i.store_errors.is_empty() {
            notes.push(format!("store errors {:?}", i.store_errors));
        }
        out.push_str(&format!(
            "{:<28} {:<7} {:<10} {:<8} {:<11} {:>10} {:>9} {:>10} {:>8} {:>12}  {}\n",
            i.url,
            or_dash(&i.role),
            state,
            or_dash(&i.log_backend),
            store,
            or_dash(&i.store_rows),
            or_dash(&i.events_accepted),
            or_dash(&i.rows_loaded),
            or_dash(&i.lag),
            i.seconds_since_last_insert
                .map_or_else(|| "-".into(), |s| format!("{s:.0} s ago")),
            notes.join("; ")
        ));
    }
    if !partitions.is_empty() {
        out.push_str(&format!(
            "\n{:<32} {:>12} {:>12} {:>10}  {}\n",
            "partition", "end", "committed", "lag", "owner"
        ));
        for p in partitions {
            out.push_str(&format!(
                "{:<32} {:>12} {:>12} {:>10}  {}\n",
                partition_name(p),
                p.end,
                p.committed,
                p.lag,
                p.owner
            ));
        }
    }
    out.push_str(if healthy { "healthy\n" } else { "UNHEALTHY\n" });
    out
}

/// Prints the status; `Ok(false)` when anything is unhealthy.
pub async fn run(args: StatusArgs) -> anyhow::Result<bool> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(args.timeout_secs.max(1)))
        .build()
        .context("cannot build the HTTP client")?;
    // Every instance at once, so one slow answer does not delay the others'.
    let probes: Vec<_> = args
        .urls
        .iter()
        .map(|url| {
            let (http, url) = (http.clone(), url.clone());
            tokio::spawn(async move { probe(&http, &url).await })
        })
        .collect();
    let mut instances = Vec::with_capacity(probes.len());
    for p in probes {
        instances.push(p.await.context("a probe failed")?);
    }
    let healthy = instances.iter().all(Instance::healthy);
    let mut partitions: Vec<Partition> = instances
        .iter()
        .flat_map(|i| i.partitions.iter().cloned())
        .collect();
    partitions.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
    // The store's answer is the same from every instance that reached it.
    let store = instances
        .iter()
        .find(|i| i.store_reachable == Some(true))
        .map(|i| {
            json!({
                "rows": i.store_rows,
                "newest_event_at": i.newest_event_at,
                "dead_letters_last_hour": i.dead_letters_last_hour,
            })
        });
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "healthy": healthy,
                "lag": partitions.iter().map(|p| p.lag).sum::<u64>(),
                "partitions": partitions,
                "store": store,
                "instances": instances,
            }))?
        );
    } else {
        print!("{}", table(&instances, &partitions, healthy));
    }
    Ok(healthy)
}
