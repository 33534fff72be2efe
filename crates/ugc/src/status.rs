//! `ugc status`: is a deployment healthy, and how far behind is it? Asks each given
//! instance (any role) for its readiness and its metrics, and prints one line per
//! instance — or JSON for scripts. Exits non-zero when any instance is unreachable or
//! not ready, or its loader reports an error.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use serde::Serialize;
use serde_json::Value;

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// Base URL of an instance (repeatable): an API, a loader, or all-in-one, e.g.
    /// `http://127.0.0.1:8000`; the address that serves /readyz and /metrics.
    #[arg(long = "url", required = true)]
    pub urls: Vec<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Seconds to wait for each answer.
    #[arg(long, default_value_t = 5)]
    pub timeout_secs: u64,
}

#[derive(Debug, Default, Serialize)]
pub struct Instance {
    pub url: String,
    pub reachable: bool,
    pub ready: bool,
    /// What /readyz said is wrong, if anything (log, store, loader).
    pub problems: Vec<String>,
    pub role: Option<String>,
    pub log_backend: Option<String>,
    pub store_backend: Option<String>,
    /// Rows this instance's loader stored since it started.
    pub rows_loaded: Option<u64>,
    /// Events in the log not yet in the store, and per partition where known.
    pub lag: Option<u64>,
    pub lag_by_partition: BTreeMap<String, u64>,
    pub seconds_since_last_insert: Option<f64>,
    /// Dead letters by reason since this instance started.
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
    let Ok(text) = async {
        http.get(format!("{base}/metrics"))
            .send()
            .await?
            .text()
            .await
    }
    .await
    else {
        return inst;
    };
    for (name, labels, value) in parse_metrics(&text) {
        let label = |k: &str| labels.get(k).cloned().unwrap_or_default();
        match name.as_str() {
            "ugc_build_info" => {
                inst.role = labels.get("role").cloned();
                inst.log_backend = labels.get("log_backend").cloned();
                inst.store_backend = labels.get("store_backend").cloned();
            }
            "ugc_loader_rows_total" => inst.rows_loaded = Some(value as u64),
            "ugc_loader_lag_events" => {
                *inst.lag.get_or_insert(0) += value as u64;
                inst.lag_by_partition
                    .insert(label("partition"), value as u64);
            }
            "ugc_loader_seconds_since_last_insert" => inst.seconds_since_last_insert = Some(value),
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
    inst
}

fn or_dash<T: ToString>(v: &Option<T>) -> String {
    v.as_ref().map_or_else(|| "-".into(), ToString::to_string)
}

fn table(instances: &[Instance]) -> String {
    let mut out = format!(
        "{:<28} {:<8} {:<10} {:<9} {:<11} {:>9} {:>10} {:>9} {:>12}  {}\n",
        "instance",
        "role",
        "state",
        "log",
        "store",
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
        let mut notes: Vec<String> = i.problems.clone();
        if !i.dead_letters.is_empty() {
            notes.push(format!("dead letters {:?}", i.dead_letters));
        }
        if !i.store_errors.is_empty() {
            notes.push(format!("store errors {:?}", i.store_errors));
        }
        if i.lag_by_partition.len() > 1 {
            notes.push(format!("lag by partition {:?}", i.lag_by_partition));
        }
        out.push_str(&format!(
            "{:<28} {:<8} {:<10} {:<9} {:<11} {:>9} {:>10} {:>9} {:>12}  {}\n",
            i.url,
            or_dash(&i.role),
            state,
            or_dash(&i.log_backend),
            or_dash(&i.store_backend),
            or_dash(&i.events_accepted),
            or_dash(&i.rows_loaded),
            or_dash(&i.lag),
            i.seconds_since_last_insert
                .map_or_else(|| "-".into(), |s| format!("{s:.0} s ago")),
            notes.join("; ")
        ));
    }
    out
}

/// Prints the status; `Ok(false)` when anything is unhealthy.
pub async fn run(args: StatusArgs) -> anyhow::Result<bool> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(args.timeout_secs.max(1)))
        .build()
        .context("cannot build the HTTP client")?;
    let mut instances = Vec::new();
    for url in &args.urls {
        instances.push(probe(&http, url).await);
    }
    let healthy = instances.iter().all(Instance::healthy);
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "healthy": healthy,
                "instances": instances,
            }))?
        );
    } else {
        print!("{}", table(&instances));
        println!("{}", if healthy { "healthy" } else { "UNHEALTHY" });
    }
    Ok(healthy)
}
