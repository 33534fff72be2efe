use std::io::IsTerminal;
use std::sync::{Arc, Mutex};

use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::EnvFilter;

use crate::configuration::LogFormat;

/// Logs to stderr, as text for people or JSON lines for collectors. Lines are written by
/// a thread of their own, buffered and flushed whenever its queue is empty: one access
/// line per request would otherwise cost a write on the request's thread each. The
/// queue blocks rather than drops when full. Keep the guard until exit.
pub fn init(filter: &str, format: LogFormat) -> WorkerGuard {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .thread_name("ugc-log-lines")
        .finish(std::io::BufWriter::new(std::io::stderr()));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        // Colours only for a person at a terminal, never in files or collectors.
        .with_ansi(std::io::stderr().is_terminal());
    if format == LogFormat::Json {
        // The request's span (request_id, route, method) goes on every line of it.
        builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .init();
    } else {
        builder.init();
    }
    guard
}

/// The Prometheus side of the `metrics` facade every crate records to.
#[derive(Clone)]
pub struct Metrics {
    handle: metrics_exporter_prometheus::PrometheusHandle,
    started: std::time::Instant,
    /// Gauges read when scraped (queue depths), registered by the stages that own them.
    on_scrape: Arc<Mutex<Vec<ScrapeHook>>>,
}

type ScrapeHook = Box<dyn Fn() + Send + Sync>;

/// Latency buckets (seconds) of every histogram: from a group-committed append
/// (sub-millisecond) to a slow analyst query.
const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// How often histogram samples are folded into their buckets (see `install_metrics`).
const UPKEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Installs the recorder; call once, before anything records.
pub fn install_metrics(
    role: &str,
    log_backend: &str,
    store_backend: &str,
) -> anyhow::Result<Metrics> {
    let handle = metrics_exporter_prometheus::PrometheusBuilder::new()
        .set_buckets(BUCKETS)?
        .install_recorder()?;
    metrics::gauge!(
        "ugc_build_info",
        "version" => env!("CARGO_PKG_VERSION"),
        "git_sha" => env!("UGC_GIT_SHA"),
        "role" => role.to_owned(),
        "log_backend" => log_backend.to_owned(),
        "store_backend" => store_backend.to_owned()
    )
    .set(1.0);
    metrics::counter!("ugc_http_body_too_large_total").absolute(0);
    // A recorder installed without the exporter's own listener keeps every histogram
    // sample until upkeep folds it into the buckets: without this thread, memory grows
    // by each request's samples until the next scrape, forever when none comes.
    let upkeep = handle.clone();
    std::thread::Builder::new()
        .name("metrics-upkeep".into())
        .spawn(move || {
            loop {
                std::thread::sleep(UPKEEP_EVERY);
                upkeep.run_upkeep();
            }
        })?;
    Ok(Metrics {
        handle,
        started: std::time::Instant::now(),
        on_scrape: Arc::default(),
    })
}

impl Metrics {
    /// Runs `hook` before each scrape: for gauges that are cheap to read and would be
    /// stale if set any other way.
    pub fn on_scrape(&self, hook: impl Fn() + Send + Sync + 'static) {
        if let Ok(mut hooks) = self.on_scrape.lock() {
            hook();
            hooks.push(Box::new(hook));
        }
    }

    /// The Prometheus text of every metric, with the process's own read just now.
    pub fn render(&self) -> String {
        metrics::gauge!("ugc_process_uptime_seconds").set(self.started.elapsed().as_secs_f64());
        if let Some(rss) = resident_bytes() {
            metrics::gauge!("ugc_process_resident_memory_bytes").set(rss as f64);
        }
        if let Some(s) = ugc_loader::seconds_since_last_insert() {
            metrics::gauge!("ugc_loader_seconds_since_last_insert").set(s);
        }
        if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
            metrics::gauge!("ugc_process_open_fds").set(fds.count() as f64);
        }
        if let Ok(hooks) = self.on_scrape.lock() {
            for hook in hooks.iter() {
                hook();
            }
        }
        self.handle.render()
    }

    /// `GET /metrics`, to merge into a router or serve on its own address.
    pub fn router<S: Clone + Send + Sync + 'static>(&self) -> axum::Router<S> {
        let m = self.clone();
        axum::Router::new().route(
            "/metrics",
            axum::routing::get(move || {
                let m = m.clone();
                async move {
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "text/plain; version=0.0.4; charset=utf-8",
                        )],
                        m.render(),
                    )
                }
            }),
        )
    }
}

/// Resident memory from `/proc/self/statm` (pages; 4 KiB on the platforms we run on).
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}
