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
use ugc_log::embedded::{EmbeddedLog, EmbeddedLogConfig};
use ugc_model::UserId;

use crate::client::{self, Conn};
use crate::load::{self, HttpWorker, LogWorker, Percentiles, PhaseResult, PhaseSpec};
use crate::procs::{self, Server};
use crate::progress::{Progress, thousands};
use crate::report::{Machine, Measure, Outcome, Results, Series, Target};
use crate::workload::{self, Rng, Workload, http_request};
use crate::{Plan, Role};

const MB: f64 = 1024.0 * 1024.0;

/// A combination of log and store the suite runs against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Backend {
    Embedded,
    KafkaBroker,
    ClickHouseServer,
}

impl Backend {
    const ALL: [Backend; 3] = [
        Backend::Embedded,
        Backend::KafkaBroker,
        Backend::ClickHouseServer,
    ];

    fn label(self) -> &'static str {
        match self {
            Backend::Embedded => "embedded log + chDB",
            Backend::KafkaBroker => "Kafka-protocol broker",
            Backend::ClickHouseServer => "ClickHouse server",
        }
    }

    /// The scenarios that say something about this backend: ingest (1, 2) is the log's
    /// business, loading and freshness (3, 4) both sides', memory (5) the embedded one's.
    fn scenarios(self) -> &'static [&'static str] {
        match self {
            Backend::Embedded => &["1", "2", "3", "4", "5a", "5b"],
            Backend::KafkaBroker => &["1", "2", "3", "4"],
            Backend::ClickHouseServer => &["3", "4"],
        }
    }

    /// Flags that make `ugc serve` use this backend, or why it cannot run yet.
    fn serve_flags(self) -> Result<Vec<String>, &'static str> {
        match self {
            Backend::Embedded => Ok(vec![]),
            Backend::KafkaBroker | Backend::ClickHouseServer => Err("not available yet"),
        }
    }
}

/// Orders outcomes by scenario, then backend in the order of [`Backend::ALL`].
fn key(id: &str, backend: &str) -> String {
    let rank = Backend::ALL
        .iter()
        .position(|b| b.label() == backend)
        .unwrap_or(9);
    format!("{id} {rank}")
}

fn title(id: &str) -> &'static str {
    match id {
        "1" => "single-event ingest",
        "2" => "batch ingest",
        "3" => "loader",
        "4" => "freshness p99 at half load",
        "5a" => "API peak RSS under max load",
        "5b" => "loader peak RSS draining the backlog",
        _ => "?",
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
        "ugc bench{}: {} connections, {} users, {} s measured after {} s warm-up per phase; data under {}",
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
    };

    for backend in Backend::ALL {
        let label = backend.label();
        match backend.serve_flags() {
            Ok(flags) => {
                // Loader first: it measures the engine's share of memory that 5a reports.
                if let Err(e) = backlog_scenarios(&mut ctx, backend) {
                    ctx.fail(&["3", "5b"], label, &e);
                }
                if let Err(e) = api_scenarios(&mut ctx, backend, &flags) {
                    ctx.fail(&["1", "2", "4", "5a"], label, &e);
                }
            }
            Err(why) => {
                for id in backend.scenarios() {
                    let mut o = Outcome::unavailable(id, title(id), label);
                    o.status = why.into();
                    ctx.outcomes.insert(key(id, label), o);
                }
            }
        }
    }

    if plan.quick {
        ctx.notes.insert(
            0,
            "Quick run: short phases and small volumes check that the harness works; \
             its figures say nothing about speed."
                .into(),
        );
    }
    let command = std::iter::once("ugc".to_owned())
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

/// Scenarios 1, 2, 4 and 5a: the real API (`ugc serve`) under load.
fn api_scenarios(ctx: &mut Ctx, backend: Backend, flags: &[String]) -> anyhow::Result<()> {
    let label = backend.label();
    let plan = ctx.plan;
    let single = Arc::new(ctx.workload.single_pool(plan.pool, "127.0.0.1"));

    ctx.progress
        .done("scenario 1: the ceiling, an empty handler on the same HTTP stack");
    let mut empty = procs::start_role(plan, Role::EmptyServer, &ctx.work.join("empty"), &[])?;
    let addr: SocketAddr = empty
        .message()?
        .get("ready")
        .and_then(Value::as_str)
        .context("the empty server did not say where it listens")?
        .parse()?;
    let spec = ctx.phase("empty handler", None, Some(empty.pid()));
    let workers = HttpWorker::many(addr, plan.connections, &single, 1);
    let ceiling = ctx
        .client
        .block_on(load::run(&spec, workers, &ctx.progress));
    empty.stop();
    ctx.record("empty handler (req/s)", &ceiling);
    ctx.check("empty handler", &ceiling)?;

    ctx.progress.done(&format!("starting ugc serve ({label})"));
    let server = Server::start(plan, &ctx.work.join("serve"), flags)?;
    let idle_rss = server.proc.rss().unwrap_or(0) as f64 / MB;
    let pid = Some(server.proc.pid());
    let mut acked = 0u64;

    ctx.progress.done("scenario 1: single-event ingest");
    let spec = ctx.phase("single events", None, pid);
    let workers = HttpWorker::many(server.addr, plan.connections, &single, 1);
    let ingest = ctx
        .client
        .block_on(load::run(&spec, workers, &ctx.progress));
    ctx.record("single-event ingest (req/s)", &ingest);
    ctx.check("single-event ingest", &ingest)?;
    acked += ingest.ok_events;
    let ratio1 = ingest.units_per_sec() / ceiling.units_per_sec();
    let mut o = Outcome::new("1", title("1"), label).measured(
        measure(
            "single-event ingest",
            ingest.units_per_sec(),
            "req/s",
            Some(&ingest),
        ),
        measure(
            "empty handler",
            ceiling.units_per_sec(),
            "req/s",
            Some(&ceiling),
        ),
    );
    o.target = Some(Target {
        text: "≥ 60%".into(),
        met: ratio1 >= 0.6,
    });
    ctx.put(o);
    wait_stored(ctx, &server, acked)?;

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
    let workers = HttpWorker::many(
        server.addr,
        plan.connections,
        &requests,
        plan.batch_size as u64,
    );
    let batch = ctx
        .client
        .block_on(load::run(&spec, workers, &ctx.progress));
    ctx.record("batch ingest (events/s)", &batch);
    ctx.check("batch ingest", &batch)?;
    acked += batch.ok_events;
    // Peak so far: both maximum loads are behind us, the half load of 4 is not a peak.
    let api_peak = server.proc.peak_rss().unwrap_or(0) as f64 / MB;
    wait_stored(ctx, &server, acked)?;

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
    ctx.record("half load (req/s)", &half);
    ctx.check("half load", &half)?;
    acked += half.ok_events + prober.acked;
    let (idle_p, loaded_p) = (Percentiles::of(&idle), Percentiles::of(&loaded));
    ctx.latency
        .push(("freshness at half load".into(), loaded_p.clone()));
    ctx.latency.push(("freshness idle".into(), idle_p.clone()));
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

    let mut o = Outcome::new("5a", title("5a"), label).measured(
        Measure::new(
            "all-in-one process (API + log + loader + chDB), peak",
            api_peak,
            "MB",
        ),
        Measure::new("the same process idle after start", idle_rss, "MB"),
    );
    if let Some(engine) = ctx.engine_share {
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
            let log = EmbeddedLog::open(&dir.join("log.redb"), EmbeddedLogConfig::default())?;
            let workers = (0..plan.connections)
                .map(|_| LogWorker {
                    producer: log.producer(),
                    pool: records.clone(),
                })
                .collect();
            anyhow::Ok(load::run(&spec, workers, &ctx.progress).await)
        })?;
    std::fs::remove_dir_all(&dir)?;
    ctx.record("straight to the log (events/s)", &base);
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
    ctx.put(o);
    Ok(())
}

/// Polls the store's row count until it equals what the API acknowledged: the loader
/// has caught up, and nothing was lost or doubled.
fn wait_stored(ctx: &Ctx, server: &Server, expected: u64) -> anyhow::Result<()> {
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
        let n = serde_json::from_slice::<Value>(&answer)?["rows"][0]["n"]
            .as_u64()
            .context("count query gave no number")?;
        if n == expected {
            ctx.progress.done(&format!(
                "  the store holds all {} acknowledged events ({:.1} s after the load)",
                thousands(n as f64),
                t0.elapsed().as_secs_f64()
            ));
            return Ok(());
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
/// it into a fresh store; the same rows inserted straight into another fresh store.
fn backlog_scenarios(ctx: &mut Ctx, backend: Backend) -> anyhow::Result<()> {
    let label = backend.label();
    let plan = ctx.plan;
    let dir = ctx.work.join("backlog");
    let n = plan.backlog;
    let count = ["--backlog".to_owned(), n.to_string()];

    ctx.progress.done(&format!(
        "scenario 3: appending a backlog of {} events straight to a log",
        thousands(n as f64)
    ));
    let users = [
        count[0].clone(),
        count[1].clone(),
        "--users".into(),
        plan.users.to_string(),
    ];
    let mut fill = procs::start_role(plan, Role::FillLog, &dir, &users)?;
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
    let mut loader = procs::start_role(plan, Role::Loader, &dir, &count)?;
    let loaded = follow(ctx, &mut loader, "loading", n)?;
    loader.wait()?;
    if loaded["stored"].as_u64() != Some(n) {
        bail!("the loader stored {} of {n} events", loaded["stored"]);
    }
    let loader_rate = n as f64 / secs(&loaded);
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
        name: "loader (rows/s)".into(),
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
        .done("scenario 3: baseline, the same rows inserted straight into a fresh store");
    let mut straight = procs::start_role(plan, Role::StraightInsert, &dir, &count)?;
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
            "one INSERT … FROM INFILE per table",
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
    ctx.put(o);

    let mb = |k: &str| loaded[k].as_f64().unwrap_or(0.0) / MB;
    let engine = mb("rss_with_engine") - mb("rss_base");
    ctx.engine_share = Some(engine);
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
