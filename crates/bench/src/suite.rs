//! The scenarios, in the order that keeps each measurement alone on the machine:
//! the empty-handler ceiling; then one `ugc serve` for single events, batches and
//! freshness (its memory is scenario 5's API figure); the straight-to-log baseline; and
//! last the loader against a straight insert on a backlog (scenario 3 and 5's loader).

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use ugc_model::UserId;

#[path = "analytics.rs"]
mod analytics;
#[path = "content.rs"]
mod content;

use self::content::ContentDb;
use crate::children;
use crate::client::{self, Conn};
use crate::load::{self, HttpWorker, LogWorker, Percentiles, PhaseResult, PhaseSpec};
use crate::procs::{self, Server};
use crate::progress::{Progress, thousands};
use crate::report::{Machine, Measure, Outcome, Results, Series, Target};
use crate::workload::{self, Rng, Workload, http_request};
use crate::{ChildKind, Plan};

const MB: f64 = 1024.0 * 1024.0;

/// A combination of log and store the suite runs against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Backend {
    /// All-in-one on the embedded log and chDB: the laptop default.
    Embedded,
    /// All-in-one with a Kafka-protocol broker as the log (and chDB as the store).
    KafkaBroker,
    /// The distributed shape: a Kafka-protocol broker, a ClickHouse server, and the API
    /// and the loader as separate processes.
    Servers,
}

impl Backend {
    const ALL: [Backend; 3] = [Backend::Embedded, Backend::KafkaBroker, Backend::Servers];

    fn label(self) -> &'static str {
        match self {
            Backend::Embedded => "embedded log + chDB",
            Backend::KafkaBroker => "Kafka-protocol broker + chDB",
            Backend::Servers => "Kafka-protocol broker + ClickHouse server, API and loader apart",
        }
    }

    /// Short, for topic and database names.
    fn slug(self) -> &'static str {
        match self {
            Backend::Embedded => "embedded",
            Backend::KafkaBroker => "kafka",
            Backend::Servers => "servers",
        }
    }

    /// Memory (5) is measured where a process is what an operator would run: the
    /// all-in-one process, and the separate API and loader processes.
    fn scenarios(self) -> &'static [&'static str] {
        match self {
            Backend::Embedded => &["1", "1s", "1p", "2", "3", "4", "5a", "5b", "6"],
            Backend::Servers => &["1", "1s", "1p", "2", "3", "4", "5a", "5b"],
            Backend::KafkaBroker => &["1", "1s", "1p", "2", "3", "4"],
        }
    }

    /// A chart series' name: the embedded backend's plain, the others' tagged.
    fn series(self, name: &str) -> String {
        match self {
            Backend::Embedded => name.to_owned(),
            _ => format!("{name}, {}", self.slug()),
        }
    }

    fn kafka(self) -> bool {
        self != Backend::Embedded
    }

    fn clickhouse(self) -> bool {
        self == Backend::Servers
    }
}

/// The servers the Kafka and ClickHouse runs need, started once when installed
/// (`scripts/test` installs them; so does `scripts/fetch-tansu` alone for the broker).
struct Infra {
    tansu: Result<ugc_testkit::tansu::Tansu, String>,
    clickhouse: Result<ugc_testkit::ClickHouse, String>,
}

impl Infra {
    fn start(progress: &Progress, backends: &[Backend]) -> Self {
        let tansu = if !backends.iter().any(|b| b.kafka()) {
            Err("not asked for".to_owned())
        } else {
            ugc_testkit::tansu::Tansu::find_binary().map(|_| {
                progress.done("starting the tansu Kafka-protocol broker (memory storage)");
                ugc_testkit::tansu::Tansu::start(ugc_testkit::tansu::Storage::Memory)
            })
        };
        let clickhouse = if !backends.iter().any(|b| b.clickhouse()) {
            Err("not asked for".to_owned())
        } else if Path::new(ugc_testkit::clickhouse::CLICKHOUSE_SERVER).exists() {
            progress.done("starting a ClickHouse server");
            ugc_testkit::ClickHouse::start_single()
        } else {
            Err(format!(
                "no ClickHouse server at {} (scripts/test installs the Debian package)",
                ugc_testkit::clickhouse::CLICKHOUSE_SERVER
            ))
        };
        Self { tansu, clickhouse }
    }

    /// Why `backend` cannot run here, if it cannot.
    fn missing(&self, backend: Backend) -> Option<String> {
        if backend.kafka()
            && let Err(e) = &self.tansu
        {
            return Some(format!("not available: {e}"));
        }
        if backend.clickhouse()
            && let Err(e) = &self.clickhouse
        {
            return Some(format!("not available: {e}"));
        }
        None
    }

    fn brokers(&self) -> String {
        self.tansu.as_ref().map(|t| t.brokers()).unwrap_or_default()
    }

    fn clickhouse_url(&self) -> String {
        self.clickhouse
            .as_ref()
            .map(|c| c.url())
            .unwrap_or_default()
    }

    /// Flags that make `ugc serve` use `backend`; each backend has its own topics.
    fn serve_flags(&self, backend: Backend) -> Vec<String> {
        let mut f: Vec<String> = vec![];
        if backend.kafka() {
            let topic = format!("bench.{}.events", backend.slug());
            f.extend(
                [
                    "--log-backend",
                    "kafka",
                    "--kafka-brokers",
                    &self.brokers(),
                    "--kafka-topic",
                    &topic,
                    "--kafka-dlq-topic",
                    &format!("{topic}.dlq"),
                    "--kafka-group",
                    &format!("{topic}.loader"),
                    "--kafka-partitions",
                    &children::BENCH_PARTITIONS.to_string(),
                    "--kafka-replication-factor",
                    "1",
                    "--kafka-min-insync-replicas",
                    "1",
                ]
                .map(String::from),
            );
        }
        if backend.clickhouse() {
            f.extend(
                [
                    "--store",
                    "clickhouse",
                    "--clickhouse-url",
                    &self.clickhouse_url(),
                ]
                .map(String::from),
            );
        }
        f
    }

    /// Flags that put a role's log and store where `backend` has them; `database`
    /// names the role's own fresh database on a server.
    fn role_flags(&self, backend: Backend, database: &str) -> Vec<String> {
        let mut f = vec![];
        if backend.kafka() {
            f.extend([
                "--internal-kafka".to_owned(),
                self.brokers(),
                "--internal-topic".to_owned(),
                format!("bench.{}.backlog", backend.slug()),
            ]);
        }
        if backend.clickhouse() {
            f.extend([
                "--internal-clickhouse".to_owned(),
                self.clickhouse_url(),
                "--internal-database".to_owned(),
                format!("bench_{}_{database}", backend.slug()),
            ]);
        }
        f
    }
}

/// Orders outcomes by scenario, then backend in the order of [`Backend::ALL`].
fn key(id: &str, backend: &str) -> String {
    let rank = Backend::ALL
        .iter()
        .position(|b| b.label() == backend)
        .or_else(|| {
            ContentDb::ALL
                .iter()
                .position(|d| d.label() == backend)
                .map(|p| p + Backend::ALL.len())
        })
        .unwrap_or(9);
    format!("{id} {rank}")
}

fn title(id: &str) -> &'static str {
    match id {
        "1" => "single-event ingest",
        "1s" => "sustained single-event ingest: acknowledged and stored",
        "1p" => "seed 004's request (POST /api/v1/, one user per connection), sustained",
        "2" => "batch ingest",
        "3" => "loader",
        "4" => "freshness p99 at half load",
        "5a" => "API peak RSS under max load",
        "5b" => "loader peak RSS draining the backlog",
        "6" => "RS256 single-event ingest, verified-token cache on vs off",
        other => content::title(other)
            .or_else(|| analytics::title(other))
            .unwrap_or("?"),
    }
}

/// Everything the scenarios share.
struct Ctx<'a> {
    plan: &'a Plan,
    work: &'a Path,
    workload: Workload,
    admin: String,
    progress: Progress,
    client: tokio::runtime::Runtime,
    outcomes: BTreeMap<String, Outcome>,
    throughput: Vec<Series>,
    latency: Vec<(String, Percentiles)>,
    notes: Vec<String>,
    /// RSS the chDB engine adds to a process once loaded (measured by the loader role).
    engine_share: Option<f64>,
    /// The empty handler's rate and figure, measured by the first backend's scenario 1.
    ceiling: Option<(f64, Measure)>,
}

pub fn run(plan: &Plan) -> anyhow::Result<()> {
    let t0 = Instant::now();
    let started_at = OffsetDateTime::now_utc().format(&Rfc3339)?;
    std::fs::create_dir_all(&plan.work_dir)?;
    let work = tempfile::Builder::new()
        .prefix("ugc-bench-")
        .tempdir_in(&plan.work_dir)?;
    let progress = Progress::new();
    progress.done(&format!(
        "ugc-bench{}: {} connections, {} users, {} s measured after {} s warm-up per phase; data under {}",
        if plan.quick { " --quick" } else { "" },
        plan.connections,
        plan.users,
        plan.duration.as_secs_f64(),
        plan.warmup.as_secs_f64(),
        work.path().display()
    ));
    let client = if plan.client_threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(plan.client_threads)
            .enable_all()
            .build()?
    };
    let admin = workload::token(
        &UserId::parse("ugc-bench-admin").map_err(anyhow::Error::msg)?,
        &["admin".into()],
    )?;
    let mut ctx = Ctx {
        plan,
        work: work.path(),
        workload: Workload::new(plan.users, true)?,
        admin,
        progress,
        client,
        outcomes: BTreeMap::new(),
        throughput: vec![],
        latency: vec![],
        notes: vec![],
        engine_share: None,
        ceiling: None,
    };

    let chosen: Vec<Backend> = Backend::ALL
        .into_iter()
        .filter(|b| plan.backends.is_empty() || plan.backends.iter().any(|n| n == b.slug()))
        .collect();
    let content_dbs: Vec<ContentDb> = ContentDb::ALL
        .into_iter()
        .filter(|d| plan.backends.is_empty() || plan.backends.iter().any(|n| n == d.slug()))
        .collect();
    if let Some(bad) = plan.backends.iter().find(|n| {
        !Backend::ALL.iter().any(|b| b.slug() == n.as_str())
            && !ContentDb::ALL.iter().any(|d| d.slug() == n.as_str())
            && n.as_str() != "analytics"
    }) {
        bail!("--backends {bad}: expected embedded, kafka, servers, sqlite, postgres or analytics");
    }
    let with_analytics = plan.backends.is_empty() || plan.backends.iter().any(|n| n == "analytics");
    let infra = Infra::start(&ctx.progress, &chosen);
    for backend in chosen {
        let label = backend.label();
        if let Some(why) = infra.missing(backend) {
            ctx.progress.done(&format!("{label}: {why}"));
            for id in backend.scenarios() {
                let mut o = Outcome::unavailable(id, title(id), label);
                o.status = why.clone();
                ctx.outcomes.insert(key(id, label), o);
            }
            continue;
        }
        ctx.progress.done(&format!("── {label} ──"));
        // Loader first: it measures the engine's share of memory that 5a reports.
        if let Err(e) = backlog_scenarios(&mut ctx, &infra, backend) {
            ctx.fail(&["3", "5b"], label, &e);
        }
        if let Err(e) = api_scenarios(&mut ctx, &infra, backend) {
            ctx.fail(&["1", "1s", "1p", "2", "4", "5a"], label, &e);
        }
        if backend.scenarios().contains(&"6")
            && let Err(e) = token_cache_scenario(&mut ctx)
        {
            ctx.fail(&["6"], label, &e);
        }
    }
    drop(infra);
    for db in content_dbs {
        ctx.progress.done(&format!("── {} ──", db.label()));
        if let Err(e) = content::run(&mut ctx, db) {
            ctx.fail(&content::IDS, db.label(), &e);
        }
    }
    if with_analytics {
        ctx.progress.done(&format!("── {} ──", analytics::LABEL));
        if let Err(e) = analytics::run(&mut ctx) {
            ctx.fail(&analytics::IDS, analytics::LABEL, &e);
        }
    }
    if ctx.outcomes.keys().any(|k| k.starts_with("7 ")) {
        ctx.notes.push(content::ANCHOR.into());
    }

    if plan.quick {
        ctx.notes.insert(
            0,
            "Quick run: short phases and small volumes check that the harness works; \
             its figures say nothing about speed."
                .into(),
        );
    }
    let command = std::iter::once("ugc-bench".to_owned())
        .chain(std::env::args().skip(1))
        .collect::<Vec<_>>()
        .join(" ");
    let results = Results {
        suite: if plan.quick { "quick" } else { "full" }.into(),
        command,
        started_at,
        wall_secs: t0.elapsed().as_secs_f64(),
        build: if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
        .into(),
        machine: Machine::probe(),
        settings: json!({
            "warmup_secs": plan.warmup.as_secs_f64(),
            "duration_secs": plan.duration.as_secs_f64(),
            "connections": plan.connections,
            "users": plan.users,
            "batch_size": plan.batch_size,
            "backlog": plan.backlog,
            "server_backlog": plan.server_backlog,
            "content_scale": plan.content_scale,
            "analytics_events": plan.analytics_events,
            "client_threads": plan.client_threads,
            "idle_probes": plan.idle_probes,
            "probe_every_ms": plan.probe_every.as_millis() as u64,
            "poll_every_ms": plan.poll_every.as_millis() as u64,
        }),
        outcomes: ctx.outcomes.into_values().collect(),
        throughput: ctx.throughput,
        latency: ctx.latency,
        notes: ctx.notes,
    };
    println!("\n{}", results.table());
    results.write(&plan.out)?;
    println!(
        "results: {} (results.json, results.md, chart.svg); took {:.0} s",
        plan.out.display(),
        results.wall_secs
    );
    let failed: Vec<String> = results
        .outcomes
        .iter()
        .filter(|o| o.status == "failed")
        .map(|o| format!("{} {}: {}", o.id, o.title, o.error.as_deref().unwrap_or("")))
        .collect();
    if !failed.is_empty() {
        bail!("scenarios failed:\n{}", failed.join("\n"));
    }
    Ok(())
}

impl Ctx<'_> {
    fn put(&mut self, o: Outcome) {
        self.outcomes.insert(key(&o.id, &o.backend), o);
    }

    /// Marks the scenarios that have no outcome yet as failed with `e`.
    fn fail(&mut self, ids: &[&str], backend: &str, e: &anyhow::Error) {
        self.progress.done(&format!("  FAILED: {e:#}"));
        for id in ids {
            self.outcomes
                .entry(key(id, backend))
                .or_insert_with(|| Outcome::failed(id, title(id), backend, e));
        }
    }

    fn phase(&self, label: &str, rate: Option<f64>, server_pid: Option<u32>) -> PhaseSpec {
        PhaseSpec {
            label: label.into(),
            warmup: self.plan.warmup,
            duration: self.plan.duration,
            rate,
            server_pid,
        }
    }

    fn record(&mut self, name: &str, r: &PhaseResult) {
        self.throughput.push(Series {
            name: name.into(),
            points: r.timeline.clone(),
        });
        if !r.hist.is_empty() {
            self.latency.push((name.into(), r.latency()));
        }
        if let Some(others) = r.others_cpu_cores.filter(|c| *c > 0.15) {
            self.notes.push(format!(
                "{name}: other processes used {others:.2} cores while it was measured; \
                 its figures are suspect"
            ));
        }
        if r.errors > 0 {
            self.notes.push(format!(
                "{name}: {} failed requests; the first: {}",
                r.errors,
                r.first_error.as_deref().unwrap_or("?")
            ));
        }
    }

    fn check(&self, name: &str, r: &PhaseResult) -> anyhow::Result<()> {
        if r.units == 0 {
            bail!(
                "{name}: nothing succeeded in the measured window; first error: {}",
                r.first_error.as_deref().unwrap_or("none")
            );
        }
        Ok(())
    }
}

fn measure(what: &str, value: f64, unit: &str, r: Option<&PhaseResult>) -> Measure {
    let mut m = Measure::new(what, value, unit);
    if let Some(r) = r {
        m.latency_ms = (!r.hist.is_empty()).then(|| r.latency());
        m.server_cpu_cores = r.server_cpu_cores;
        m.client_cpu_cores = r.client_cpu_cores;
    }
    m
}

/// The processes an event crosses from request to store, for CPU per stored event.
struct Stack {
    procs: Vec<(&'static str, u32)>,
}

impl Stack {
    fn new(infra: &Infra, backend: Backend, api: &Server, loader: Option<&Server>) -> Self {
        let mut procs = vec![];
        match loader {
            Some(l) => {
                procs.push(("ugc API", api.proc.pid()));
                procs.push(("ugc loader", l.proc.pid()));
            }
            // One process: API, log (embedded, or the Kafka client), loader and chDB.
            None => procs.push(("ugc (all-in-one)", api.proc.pid())),
        }
        if backend.kafka()
            && let Some(pid) = infra.tansu.as_ref().ok().and_then(|t| t.pid())
        {
            procs.push(("broker", pid));
        }
        if backend.clickhouse()
            && let Some(pid) = infra.clickhouse.as_ref().ok().and_then(|c| c.pid())
        {
            procs.push(("ClickHouse server", pid));
        }
        Self { procs }
    }

    /// CPU seconds each process has used so far.
    fn cpu(&self) -> Vec<f64> {
        self.procs
            .iter()
            .map(|(_, pid)| procs::cpu_secs(*pid).unwrap_or(f64::NAN))
            .collect()
    }

    /// Microseconds of CPU per stored event, per process and for `ugc`'s own processes
    /// together (the first entry), between two [`Stack::cpu`] readings.
    fn per_event(&self, before: &[f64], after: &[f64], events: u64) -> Vec<Measure> {
        let us = |d: f64| d * 1e6 / events.max(1) as f64;
        let ugc: f64 = self
            .procs
            .iter()
            .zip(before.iter().zip(after))
            .filter(|((name, _), _)| name.starts_with("ugc"))
            .map(|(_, (b, a))| a - b)
            .sum();
        let mut out = vec![Measure::new("CPU per stored event, ugc", us(ugc), "µs")];
        if self.procs.len() > 1 {
            for ((name, _), (b, a)) in self.procs.iter().zip(before.iter().zip(after)) {
                out.push(Measure::new(
                    format!("CPU per stored event, {name}"),
                    us(a - b),
                    "µs",
                ));
            }
        }
        out
    }
}

/// Scenarios 1, 1s, 1p, 2, 4 and 5a: the real API (`ugc serve`) under load.
fn api_scenarios(ctx: &mut Ctx, infra: &Infra, backend: Backend) -> anyhow::Result<()> {
    let label = backend.label();
    let plan = ctx.plan;
    let single = Arc::new(ctx.workload.single_pool(plan.pool, "127.0.0.1"));

    // One ceiling for every backend: the HTTP stack is the same.
    let (ceiling_rate, ceiling) = match &ctx.ceiling {
        Some(c) => c.clone(),
        None => {
            ctx.progress
                .done("scenario 1: the ceiling, an empty handler on the same HTTP stack");
            let mut empty =
                procs::start_child(plan, ChildKind::EmptyServer, &ctx.work.join("empty"), &[])?;
            let addr: SocketAddr = empty
                .message()?
                .get("ready")
                .and_then(Value::as_str)
                .context("the empty server did not say where it listens")?
                .parse()?;
            let spec = ctx.phase("empty handler", None, Some(empty.pid()));
            let workers = HttpWorker::many(addr, plan.connections, &single, 1);
            let r = ctx
                .client
                .block_on(load::run(&spec, workers, &ctx.progress));
            empty.stop();
            ctx.record("empty handler (req/s)", &r);
            ctx.check("empty handler", &r)?;
            let c = (
                r.units_per_sec(),
                measure("empty handler", r.units_per_sec(), "req/s", Some(&r)),
            );
            ctx.ceiling = Some(c.clone());
            c
        }
    };

    ctx.progress.done(&format!("starting ugc serve ({label})"));
    let flags = infra.serve_flags(backend);
    let dir = ctx.work.join(format!("serve-{}", backend.slug()));
    // Apart, the loader runs beside the API; the API's process is the one measured.
    let (server, loader) = if backend == Backend::Servers {
        let loader = Server::start(plan, &dir.join("loader"), &flags, &[("UGC_ROLE", "loader")])?;
        let api = Server::start(plan, &dir.join("api"), &flags, &[("UGC_ROLE", "api")])?;
        (api, Some(loader))
    } else {
        (Server::start(plan, &dir, &flags, &[])?, None)
    };
    let idle_rss = server.proc.rss().unwrap_or(0) as f64 / MB;
    let pid = Some(server.proc.pid());
    let stack = Stack::new(infra, backend, &server, loader.as_ref());
    let mut acked = 0u64;

    ctx.progress.done("scenario 1: single-event ingest");
    let spec = ctx.phase("single events", None, pid);
    let cpu0 = stack.cpu();
    let workers = HttpWorker::many(server.addr, plan.connections, &single, 1);
    let ingest = ctx
        .client
        .block_on(load::run(&spec, workers, &ctx.progress));
    ctx.record(&backend.series("single-event ingest (req/s)"), &ingest);
    ctx.check("single-event ingest", &ingest)?;
    acked += ingest.ok_events;
    let ratio1 = ingest.units_per_sec() / ceiling_rate;
    let mut o = Outcome::new("1", title("1"), label).measured(
        measure(
            "single-event ingest",
            ingest.units_per_sec(),
            "req/s",
            Some(&ingest),
        ),
        ceiling.clone(),
    );
    // The bar for ingest through a broker on the same machine is lower: the
    // broker takes its share of the cores.
    let bar = if backend.kafka() { 0.3 } else { 0.6 };
    o.target = Some(Target {
        text: format!("≥ {:.0}%", bar * 100.0),
        met: ratio1 >= bar,
    });
    ctx.put(o);
    let catch_up = wait_stored(ctx, &server, acked)?;
    let cpu1 = stack.cpu();
    // What a user lives with: every acknowledged event stored, not only answered.
    let sustained = ingest.events as f64 / (ingest.secs + catch_up.as_secs_f64());
    let mut o = Outcome::new("1s", title("1s"), label).measured(
        measure(
            "acknowledged events / (window + time until all stored)",
            sustained,
            "events/s",
            Some(&ingest),
        ),
        ceiling.clone(),
    );
    if !backend.kafka() && backend != Backend::Servers {
        o.target = Some(Target {
            text: "≥ 30%".into(),
            met: sustained / ceiling_rate >= 0.3,
        });
    }
    o.more.push(Measure::new(
        "catch-up after the load (until the store holds all)",
        catch_up.as_secs_f64() * 1000.0,
        "ms",
    ));
    o.more.push(Measure::new(
        "events acknowledged and stored (warm-up included)",
        ingest.ok_events as f64,
        "events",
    ));
    o.more
        .extend(stack.per_event(&cpu0, &cpu1, ingest.ok_events));
    ctx.put(o);

    ctx.progress.done(
        "scenario 1p: seed 004's request, POST /api/v1/ {film_id, film_timestamp}, a user per connection",
    );
    let workers = ctx
        .workload
        .seed004_pools(plan.connections, 256, "127.0.0.1")
        .into_iter()
        .map(|pool| HttpWorker {
            conn: Conn::new(server.addr),
            pool: Arc::new(pool),
            events_per_request: 1,
            expect: 200,
        })
        .collect();
    let spec = ctx.phase("seed 004 requests", None, pid);
    let cpu0 = stack.cpu();
    let seed = ctx
        .client
        .block_on(load::run(&spec, workers, &ctx.progress));
    ctx.record(&backend.series("seed 004 requests (req/s)"), &seed);
    ctx.check("seed 004 requests", &seed)?;
    acked += seed.ok_events;
    let catch_up = wait_stored(ctx, &server, acked)?;
    let cpu1 = stack.cpu();
    let sustained = seed.events as f64 / (seed.secs + catch_up.as_secs_f64());
    let mut o = Outcome::new("1p", title("1p"), label).measured(
        measure(
            "seed 004's request, acknowledged and stored",
            sustained,
            "req/s",
            Some(&seed),
        ),
        ceiling.clone(),
    );
    o.more.push(measure(
        "seed 004's request, acknowledged (the window alone)",
        seed.units_per_sec(),
        "req/s",
        Some(&seed),
    ));
    o.more.push(Measure::new(
        "catch-up after the load (until the store holds all)",
        catch_up.as_secs_f64() * 1000.0,
        "ms",
    ));
    o.more.extend(stack.per_event(&cpu0, &cpu1, seed.ok_events));
    ctx.put(o);

    ctx.progress.done(&format!(
        "scenario 2: batch ingest, {} events per request",
        plan.batch_size
    ));
    let batches = (plan.pool / 16).max(16);
    let (requests, records) = ctx
        .workload
        .batch_pool(batches, plan.batch_size, "127.0.0.1")?;
    let requests = Arc::new(requests);
    let spec = ctx.phase("batches", None, pid);
    let batch_cpu0 = stack.cpu();
    let workers = HttpWorker::many(
        server.addr,
        plan.connections,
        &requests,
        plan.batch_size as u64,
    );
    let batch = ctx
        .client
        .block_on(load::run(&spec, workers, &ctx.progress));
    ctx.record(&backend.series("batch ingest (events/s)"), &batch);
    ctx.check("batch ingest", &batch)?;
    acked += batch.ok_events;
    // Peak so far: both maximum loads are behind us, the half load of 4 is not a peak.
    let api_peak = server.proc.peak_rss().unwrap_or(0) as f64 / MB;
    wait_stored(ctx, &server, acked)?;
    let batch_cpu = stack.per_event(&batch_cpu0, &stack.cpu(), batch.ok_events);

    ctx.progress
        .done("scenario 4: freshness on an idle server (baseline)");
    let mut prober = Prober::new(server.addr)?;
    let idle = ctx.client.block_on(prober.idle(ctx.plan, &ctx.progress))?;
    let rate = ingest.units_per_sec() / 2.0;
    ctx.progress.done(&format!(
        "scenario 4: freshness at half the maximum rate ({} req/s)",
        thousands(rate)
    ));
    let spec = ctx.phase("half load", Some(rate), pid);
    let workers = HttpWorker::many(server.addr, plan.connections, &single, 1);
    let (half, loaded) = ctx.client.block_on(async {
        let load = load::run(&spec, workers, &ctx.progress);
        let probes = prober.under_load(ctx.plan);
        tokio::join!(load, probes)
    });
    let loaded = loaded?;
    ctx.record(&backend.series("half load (req/s)"), &half);
    ctx.check("half load", &half)?;
    acked += half.ok_events + prober.acked;
    let (idle_p, loaded_p) = (Percentiles::of(&idle), Percentiles::of(&loaded));
    ctx.latency
        .push((backend.series("freshness at half load"), loaded_p.clone()));
    ctx.latency
        .push((backend.series("freshness idle"), idle_p.clone()));
    let mut fig = Measure::new("freshness p99 at half load", loaded_p.p99, "ms");
    fig.latency_ms = Some(loaded_p.clone());
    let mut base = Measure::new("freshness p99 on an idle server", idle_p.p99, "ms");
    base.latency_ms = Some(idle_p);
    let mut o = Outcome::new("4", title("4"), label).measured(fig, base);
    o.more.push(Measure::new(
        "freshness p50 at half load",
        loaded_p.p50,
        "ms",
    ));
    o.more.push(measure(
        "half-load requests (fixed rate)",
        half.units_per_sec(),
        "req/s",
        Some(&half),
    ));
    o.target = Some(Target {
        text: "< 1 s".into(),
        met: loaded_p.p99 < 1000.0,
    });
    ctx.put(o);
    // Also proves the harness: every acknowledged event is in the store, once.
    wait_stored(ctx, &server, acked)?;

    if backend.scenarios().contains(&"5a") {
        api_memory(ctx, backend, api_peak, idle_rss);
    }
    server.proc.stop();

    ctx.progress
        .done("scenario 2: baseline, the same encoded events straight to the log");
    let records = Arc::new(records);
    let dir = ctx.work.join("log-baseline");
    std::fs::create_dir_all(&dir)?;
    let spec = ctx.phase("straight to the log", None, None);
    let base = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(async {
            // The same producer the API uses, on a topic of its own.
            let topic = format!("bench.{}.baseline", backend.slug());
            let kafka = backend
                .kafka()
                .then(|| children::kafka_config(&infra.brokers(), &topic));
            let (producer, _log) = children::producer(kafka.as_ref(), &dir).await?;
            let workers = (0..plan.connections)
                .map(|_| LogWorker {
                    producer: producer.clone(),
                    pool: records.clone(),
                })
                .collect();
            anyhow::Ok(load::run(&spec, workers, &ctx.progress).await)
        })?;
    std::fs::remove_dir_all(&dir)?;
    ctx.record(&backend.series("straight to the log (events/s)"), &base);
    ctx.check("straight to the log", &base)?;
    let ratio2 = batch.events_per_sec() / base.events_per_sec();
    let mut o = Outcome::new("2", title("2"), label).measured(
        measure(
            &format!("batch ingest, {} events/request", plan.batch_size),
            batch.events_per_sec(),
            "events/s",
            Some(&batch),
        ),
        measure(
            "straight to the log, no HTTP",
            base.events_per_sec(),
            "events/s",
            Some(&base),
        ),
    );
    o.target = Some(Target {
        text: "≥ 50%".into(),
        met: ratio2 >= 0.5,
    });
    o.more.extend(batch_cpu);
    ctx.put(o);
    Ok(())
}

/// Scenario 6: single-event ingest with RS256 tokens (a signature check costs tens of
/// microseconds), the verified-token cache switched off (the baseline) and on, one
/// server each, in the same run. Embedded backend only: the figure is about the edge.
fn token_cache_scenario(ctx: &mut Ctx) -> anyhow::Result<()> {
    let plan = ctx.plan;
    let dir = ctx.work.join("rs256");
    std::fs::create_dir_all(&dir)?;
    let public = dir.join("rsa-public.pem");
    std::fs::write(&public, workload::RS256_PUBLIC)?;
    let pool = Arc::new(ctx.workload.single_pool_rs256(plan.pool, "127.0.0.1")?);
    let flags = ["--jwt-public-key".to_owned(), public.display().to_string()];
    let mut measured = vec![];
    for (name, cache_size) in [("no token cache", "0"), ("token cache", "100000")] {
        ctx.progress
            .done(&format!("scenario 6: RS256 single-event ingest, {name}"));
        let server = Server::start(
            plan,
            &dir.join(format!("serve-{cache_size}")),
            &flags,
            &[("UGC_JWT_CACHE_SIZE", cache_size)],
        )?;
        let spec = ctx.phase(name, None, Some(server.proc.pid()));
        let workers = HttpWorker::many(server.addr, plan.connections, &pool, 1);
        let r = ctx
            .client
            .block_on(load::run(&spec, workers, &ctx.progress));
        drop(server);
        let series = format!("RS256 single-event ingest, {name} (req/s)");
        ctx.record(&series, &r);
        ctx.check(&series, &r)?;
        measured.push(measure(
            &format!("RS256 single-event ingest, {name}"),
            r.units_per_sec(),
            "req/s",
            Some(&r),
        ));
    }
    let cached = measured.pop().context("no figure with the cache")?;
    let uncached = measured.pop().context("no figure without the cache")?;
    let mut o = Outcome::new("6", title("6"), Backend::Embedded.label()).measured(cached, uncached);
    // The cache must never cost throughput; how much it gains depends on the machine.
    o.target = Some(Target {
        text: "≥ 100%".into(),
        met: o.ratio.is_some_and(|r| r >= 1.0),
    });
    ctx.put(o);
    Ok(())
}

/// Scenario 5a from the API process's peak under maximum load: the separate API process
/// against its target as is, the all-in-one process without the engine's share.
fn api_memory(ctx: &mut Ctx, backend: Backend, api_peak: f64, idle_rss: f64) {
    let label = backend.label();
    let process = match backend {
        Backend::Servers => "API process (--role api), peak",
        _ => "all-in-one process (API + log + loader + chDB), peak",
    };
    let mut o = Outcome::new("5a", title("5a"), label).measured(
        Measure::new(process, api_peak, "MB"),
        Measure::new("the same process idle after start", idle_rss, "MB"),
    );
    if backend == Backend::Servers {
        o.target = Some(Target {
            text: "< 150 MB".into(),
            met: api_peak < 150.0,
        });
    } else if let Some(engine) = ctx.engine_share {
        let own = api_peak - engine;
        o.more.push(Measure::new(
            "peak without the chDB engine's share",
            own,
            "MB",
        ));
        o.target = Some(Target {
            text: "< 150 MB (without the engine)".into(),
            met: own < 150.0,
        });
    }
    ctx.put(o);
}

/// Polls the store's row count until it equals what the API acknowledged: the loader
/// has caught up, and nothing was lost or doubled.
/// Waits until the store holds `expected` events; how long that took.
fn wait_stored(ctx: &Ctx, server: &Server, expected: u64) -> anyhow::Result<Duration> {
    let body = serde_json::to_vec(&json!({"sql": "SELECT count() AS n FROM ugc.events"}))?;
    let t0 = Instant::now();
    let within = Duration::from_secs(600 + expected / 2000);
    loop {
        let (status, answer) = client::request(
            server.addr,
            "POST",
            "/api/v1/query",
            Some(&ctx.admin),
            Some(&body),
        )?;
        if status != 200 {
            bail!(
                "count query answered {status}: {}",
                String::from_utf8_lossy(&answer)
            );
        }
        let n = workload::as_count(&serde_json::from_slice::<Value>(&answer)?["rows"][0]["n"])
            .context("count query gave no number")?;
        if n == expected {
            ctx.progress.done(&format!(
                "  the store holds all {} acknowledged events ({:.1} s after the load)",
                thousands(n as f64),
                t0.elapsed().as_secs_f64()
            ));
            return Ok(t0.elapsed());
        }
        if n > expected {
            bail!("the store holds {n} events, more than the {expected} acknowledged");
        }
        if t0.elapsed() > within {
            bail!("the store holds {n} of {expected} acknowledged events after {within:?}");
        }
        ctx.progress.update(&format!(
            "  waiting for the loader: {} of {} events stored",
            thousands(n as f64),
            thousands(expected as f64)
        ));
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Sends position reports of one viewer in one film, `film_timestamp` counting up, and
/// asks the progress endpoint when each became visible.
struct Prober {
    send: Conn,
    poll: Conn,
    host: String,
    token: String,
    film: String,
    seq: u64,
    /// Probes acknowledged (they are events in the store too).
    acked: u64,
}

impl Prober {
    fn new(addr: SocketAddr) -> anyhow::Result<Self> {
        let user = UserId::parse("ugc-bench-prober").map_err(anyhow::Error::msg)?;
        Ok(Self {
            send: Conn::new(addr),
            poll: Conn::new(addr),
            host: addr.to_string(),
            token: workload::token(&user, &[])?,
            film: Rng::new(0x9b0b).uuid().to_string(),
            seq: 0,
            acked: 0,
        })
    }

    /// Sends the next probe; returns its number and when the API acknowledged it.
    async fn probe(&mut self) -> anyhow::Result<(u64, Instant)> {
        self.seq += 1;
        let body = serde_json::to_vec(
            &json!({"type":"view_progress","film_id":self.film,"film_timestamp":self.seq}),
        )?;
        let req = http_request(
            "POST",
            "/api/v1/events",
            &self.host,
            Some(&self.token),
            Some(&body),
        );
        let status = self.send.send(&req).await?;
        if status != 202 {
            bail!(
                "probe answered {status}: {}",
                String::from_utf8_lossy(self.send.body())
            );
        }
        self.acked += 1;
        Ok((self.seq, Instant::now()))
    }

    /// The highest probe number a query sees now.
    async fn visible(&mut self) -> anyhow::Result<u64> {
        let req = http_request(
            "GET",
            &format!("/api/v1/films/{}/progress", self.film),
            &self.host,
            Some(&self.token),
            None,
        );
        match self.poll.send(&req).await? {
            404 => Ok(0),
            200 => serde_json::from_slice::<Value>(self.poll.body())?["position"]
                .as_u64()
                .context("progress without a position"),
            s => bail!(
                "progress answered {s}: {}",
                String::from_utf8_lossy(self.poll.body())
            ),
        }
    }

    /// One probe at a time on an otherwise idle server.
    async fn idle(
        &mut self,
        plan: &Plan,
        progress: &Progress,
    ) -> anyhow::Result<hdrhistogram::Histogram<u64>> {
        let mut hist = load::histogram();
        for k in 0..plan.idle_probes {
            let (seq, acked) = self.probe().await?;
            loop {
                if self.visible().await? >= seq {
                    hist.saturating_record(acked.elapsed().as_micros() as u64);
                    break;
                }
                if acked.elapsed() > Duration::from_secs(60) {
                    bail!("probe {seq} not visible within 60 s");
                }
                tokio::time::sleep(plan.poll_every).await;
            }
            progress.update(&format!("  idle probe {}/{}", k + 1, plan.idle_probes));
        }
        progress.done(&format!(
            "  idle freshness: p50 {:.0} ms, p99 {:.0} ms",
            Percentiles::of(&hist).p50,
            Percentiles::of(&hist).p99
        ));
        Ok(hist)
    }

    /// A probe every `probe_every` through the measured window of a concurrent load.
    async fn under_load(&mut self, plan: &Plan) -> anyhow::Result<hdrhistogram::Histogram<u64>> {
        let mut hist = load::histogram();
        let from = Instant::now() + plan.warmup;
        let until = from + plan.duration;
        let mut next = from;
        let mut pending: VecDeque<(u64, Instant)> = VecDeque::new();
        loop {
            let now = Instant::now();
            if now >= next && now < until {
                pending.push_back(self.probe().await?);
                next += plan.probe_every;
            }
            if let Some(&(oldest, acked)) = pending.front() {
                let seen = self.visible().await?;
                let at = Instant::now();
                while pending.front().is_some_and(|&(seq, _)| seq <= seen) {
                    if let Some((_, acked)) = pending.pop_front() {
                        hist.saturating_record((at - acked).as_micros() as u64);
                    }
                }
                if pending.front().is_some_and(|&(seq, _)| seq == oldest)
                    && acked.elapsed() > Duration::from_secs(60)
                {
                    bail!("probe {oldest} not visible within 60 s");
                }
            } else if now >= until {
                break;
            }
            tokio::time::sleep(plan.poll_every).await;
        }
        if hist.is_empty() {
            bail!("no probe was sent during the half-load window");
        }
        Ok(hist)
    }
}

/// Scenarios 3 and 5b: a backlog appended straight to a log; the product's loader drains
/// it into a fresh store; the same events inserted straight into another fresh store.
fn backlog_scenarios(ctx: &mut Ctx, infra: &Infra, backend: Backend) -> anyhow::Result<()> {
    let label = backend.label();
    let plan = ctx.plan;
    let dir = ctx.work.join(format!("backlog-{}", backend.slug()));
    let n = if backend.kafka() {
        plan.server_backlog
    } else {
        plan.backlog
    };
    let count = ["--backlog".to_owned(), n.to_string()];
    let with = |database: &str| -> Vec<String> {
        count
            .iter()
            .cloned()
            .chain(infra.role_flags(backend, database))
            .collect()
    };

    ctx.progress.done(&format!(
        "scenario 3: appending a backlog of {} events straight to a log",
        thousands(n as f64)
    ));
    let mut users = with("fill");
    users.extend(["--users".into(), plan.users.to_string()]);
    let mut fill = procs::start_child(plan, ChildKind::FillLog, &dir, &users)?;
    let filled = follow(ctx, &mut fill, "appending", n)?;
    fill.wait()?;
    let fill_rate = filled["events"].as_f64().unwrap_or(0.0) / secs(&filled);
    ctx.progress.done(&format!(
        "  {} events appended at {} events/s ({:.0} MB log)",
        thousands(n as f64),
        thousands(fill_rate),
        filled["log_bytes"].as_f64().unwrap_or(0.0) / MB
    ));

    ctx.progress
        .done("scenario 3: the loader drains it into a fresh store");
    let mut loader = procs::start_child(plan, ChildKind::Loader, &dir, &with("loader"))?;
    let loaded = follow(ctx, &mut loader, "loading", n)?;
    loader.wait()?;
    if loaded["stored"].as_u64() != Some(n) {
        bail!("the loader stored {} of {n} events", loaded["stored"]);
    }
    let loader_rate = loaded["rows_timed"].as_f64().unwrap_or(n as f64) / secs(&loaded);
    ctx.progress
        .done(&format!("  loaded at {} rows/s", thousands(loader_rate)));
    let timeline: Vec<(f64, f64, f64)> = loaded["timeline"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|p| Some((p[0].as_f64()?, p[1].as_f64()?, p[2].as_f64()?)))
                .collect()
        })
        .unwrap_or_default();
    ctx.throughput.push(Series {
        name: backend.series("loader (rows/s)"),
        // Rates over about a second: a batch lands every few samples.
        points: timeline
            .iter()
            .step_by(4)
            .copied()
            .collect::<Vec<_>>()
            .windows(2)
            .map(|w| (w[1].0, (w[1].1 - w[0].1) / (w[1].0 - w[0].0).max(1e-6)))
            .collect(),
    });

    ctx.progress
        .done("scenario 3: baseline, the same events inserted straight into a fresh store");
    let mut straight =
        procs::start_child(plan, ChildKind::StraightInsert, &dir, &with("straight"))?;
    let inserted = follow(ctx, &mut straight, "inserting", n)?;
    straight.wait()?;
    let straight_rate = n as f64 / secs(&inserted);
    ctx.progress.done(&format!(
        "  inserted at {} rows/s",
        thousands(straight_rate)
    ));
    std::fs::remove_dir_all(&dir)?;

    let mut o = Outcome::new("3", title("3"), label).measured(
        Measure::new(
            format!("loader, {} rows backlog", thousands(n as f64)),
            loader_rate,
            "rows/s",
        ),
        Measure::new(
            "the same events straight into the store's insert",
            straight_rate,
            "rows/s",
        ),
    );
    o.more.push(Measure::new(
        "backlog appended straight to the log",
        fill_rate,
        "events/s",
    ));
    o.target = Some(Target {
        text: "≥ 70%".into(),
        met: loader_rate / straight_rate >= 0.7,
    });
    o.more.push(Measure::new(
        "until the first batch was stored (not in the rate)",
        loaded["first_batch_secs"].as_f64().unwrap_or(0.0) * 1000.0,
        "ms",
    ));
    ctx.put(o);

    if !backend.scenarios().contains(&"5b") {
        return Ok(());
    }
    let mb = |k: &str| loaded[k].as_f64().unwrap_or(0.0) / MB;
    let engine = mb("rss_with_engine") - mb("rss_base");
    if backend == Backend::Embedded {
        ctx.engine_share = Some(engine);
    }
    let peak = mb("rss_peak");
    // Flat: the second half of the drain needs no more memory than the first.
    let half = timeline.last().map_or(0.0, |l| l.0 / 2.0);
    let max_rss = |keep: &dyn Fn(f64) -> bool| {
        timeline
            .iter()
            .filter(|p| keep(p.0))
            .map(|p| p.2 / MB)
            .fold(0.0, f64::max)
    };
    let (first, second) = (max_rss(&|t| t <= half), max_rss(&|t| t > half));
    let flat = second <= first * 1.1 + 5.0;
    let mut o = Outcome::new("5b", title("5b"), label).measured(
        Measure::new(
            format!("loader process, {} rows backlog, peak", thousands(n as f64)),
            peak,
            "MB",
        ),
        Measure::new(
            "the same process with store and log open, idle",
            mb("rss_idle"),
            "MB",
        ),
    );
    o.more.push(Measure::new(
        "chDB engine's share (RSS added by opening it)",
        engine,
        "MB",
    ));
    o.more.push(Measure::new(
        "opening the backlog's log",
        loaded["log_open_secs"].as_f64().unwrap_or(0.0) * 1000.0,
        "ms",
    ));
    o.more.push(Measure::new(
        "max RSS, first half of the drain",
        first,
        "MB",
    ));
    o.more.push(Measure::new(
        "max RSS, second half of the drain",
        second,
        "MB",
    ));
    o.target = Some(Target {
        text: "< 300 MB, flat".into(),
        met: peak < 300.0 && flat,
    });
    ctx.put(o);
    Ok(())
}

fn secs(result: &Value) -> f64 {
    result["secs"].as_f64().unwrap_or(f64::NAN).max(1e-6)
}

/// Relays a role's progress to the progress line until it reports its result.
fn follow(ctx: &mut Ctx, p: &mut procs::Proc, what: &str, of: u64) -> anyhow::Result<Value> {
    let t0 = Instant::now();
    let others = procs::others_cpu_secs();
    ctx.progress.update(&format!("  {what}…"));
    loop {
        let msg = p.message()?;
        if let Some(r) = msg.get("result") {
            let secs = t0.elapsed().as_secs_f64();
            let others = (procs::others_cpu_secs() - others) / secs;
            if others > 0.15 {
                ctx.notes.push(format!(
                    "{what}: other processes used {others:.2} cores meanwhile; its figures are suspect"
                ));
            }
            return Ok(r.clone());
        }
        if let Some(done) = msg.get("progress").and_then(Value::as_f64) {
            let t = t0.elapsed().as_secs_f64();
            ctx.progress.update(&format!(
                "  {what} {} of {} · {:.0} s · {} per s",
                thousands(done),
                thousands(of as f64),
                t,
                thousands(done / t.max(1e-6))
            ));
        }
    }
}
