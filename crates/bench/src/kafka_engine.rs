//! The storage study's loader question (`--study-systems kafka-engine`): seed 004 loaded
//! its topic with ClickHouse's Kafka engine; ugc has a loader of its own. Both read the
//! same topic of ugc's log records into a fresh database on one ClickHouse 18.16 server:
//! the engine as `ugc kafka-engine-ddl --apply` sets it up, ugc's loader as a
//! `UGC_ROLE=loader` process. Measured: rows/s until every record is stored, then, on
//! fresh databases, what each leaves after the server is killed with -9 mid-load and
//! restarted — ids lost, ids doubled.
//!
//! The server runs with merges off: `events` is a ReplacingMergeTree, whose merges fold
//! doubled rows, so a count after a merge would hide them (`merged_parts` says that none
//! ran). The broker keeps its records in memory, as in the suite's loader scenario. Its
//! memory engine drops the rest of a record batch for a consumer that resumes inside it
//! (see `ugc_testkit::tansu::Storage`), which an engine restarted at its committed offsets
//! does: the engine's kills read a topic written one record per batch, so that every
//! offset starts a batch and what is lost is the engine's doing. ugc's loader outlives the
//! server and reads on from where it is: its kills read the loads' topic, which it reads
//! many times faster. (tansu's SQLite engine has no such bug, but it serves ugc's loader a
//! few hundred records a second once it holds 100,000.)

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde::Serialize;
use ugc_testkit::ClickHouse;
use ugc_testkit::tansu::{Storage, Tansu};

use ugc_log::kafka::KafkaConfig;

use crate::children::{kafka_config, producer};
use crate::procs::{Proc, free_port, spawn};
use crate::progress::{Progress, thousands};
use crate::workload::{Rng, SECRET, Workload, record};

const TOPIC: &str = "study.events";
/// The kills' topic: one record per batch.
const CRASH_TOPIC: &str = "study.crash";
/// Records per append while filling the topic.
const FILL_CHUNK: u64 = 10_000;
/// Merges off (see the module's comment): no part is ever small enough to merge.
const NO_MERGES: &str = "    <merge_tree><max_bytes_to_merge_at_max_space_in_pool>1</max_bytes_to_merge_at_max_space_in_pool>\
     <max_bytes_to_merge_at_min_space_in_pool>1</max_bytes_to_merge_at_min_space_in_pool></merge_tree>\n";
/// When the server is killed, as shares of the loader's own time to load every record
/// (its load above), one load each. By time, not rows: the engine shows its rows a few
/// hundred thousand at a time, after its offsets are committed, and a kill by rows would
/// always come just after a block was written.
const KILL_AT: [f64; 3] = [0.25, 0.5, 0.75];
/// A count that has not moved for this long, with every record stored, is settled...
const QUIET_COMPLETE: Duration = Duration::from_secs(15);
/// ...and one short of them for this long: longer than a consumer group's rebalance
/// after a member died (librdkafka's default session timeout, 45 s, on the engine's side).
const QUIET_SHORT: Duration = Duration::from_secs(120);
const POLL: Duration = Duration::from_millis(100);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Loader {
    KafkaEngine,
    UgcLoader,
}

impl Loader {
    const ALL: [Loader; 2] = [Loader::KafkaEngine, Loader::UgcLoader];

    fn slug(self) -> &'static str {
        match self {
            Loader::KafkaEngine => "engine",
            Loader::UgcLoader => "loader",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Loader::KafkaEngine => "ClickHouse Kafka engine + materialized view",
            Loader::UgcLoader => "ugc's loader (UGC_ROLE=loader)",
        }
    }
}

/// One load of every record into an empty database (or of all a loader stored: one that
/// loses records stops short, and is timed to its last row).
#[derive(Clone, Debug, Serialize)]
pub struct LoadFigure {
    pub loader: Loader,
    /// From the start (DDL applied, process started) to the first row stored.
    pub first_row_secs: Option<f64>,
    /// From the start to the last row stored.
    pub load_secs: Option<f64>,
    /// Rows stored over `load_secs`. From the start, not from the first row: the engine
    /// shows its rows a few hundred thousand at a time, each after all its work.
    pub rows_per_sec: Option<f64>,
    pub counts: Option<Counts>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One load with the server killed with -9 mid-load and restarted.
#[derive(Clone, Debug, Serialize)]
pub struct CrashFigure {
    pub loader: Loader,
    /// The topic it loaded, and its records.
    pub topic: &'static str,
    pub records: u64,
    /// The share of the loader's load time the kill waited for, and that time.
    pub kill_share: f64,
    pub killed_after_secs: f64,
    /// Rows stored when the server was killed.
    pub killed_at: u64,
    /// From the kill to the restarted server answering.
    pub restart_secs: f64,
    /// From the restart to the count settling.
    pub settle_secs: f64,
    pub counts: Option<Counts>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What a database holds once a load is over, against the `records` of the topic.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Counts {
    /// `count()`.
    pub rows: u64,
    /// Distinct event ids among the rows that have one.
    pub distinct: u64,
    /// Rows whose record had no event id (nil UUID): none of the topic's records.
    pub phantom: u64,
    /// Records of the topic with no row.
    pub lost: u64,
    /// Rows beyond the first of their id.
    pub doubled: u64,
    /// Active parts of `events` made by a merge (0: no merge folded a doubled row).
    pub merged_parts: u64,
}

impl Counts {
    fn of(records: u64, rows: u64, distinct: u64, phantom: u64, merged_parts: u64) -> Counts {
        Counts {
            rows,
            distinct,
            phantom,
            lost: records.saturating_sub(distinct),
            doubled: rows.saturating_sub(phantom).saturating_sub(distinct),
            merged_parts,
        }
    }
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct EngineResults {
    #[serde(flatten)]
    pub run: crate::study::RunHeader,
    pub records: u64,
    pub server: String,
    pub broker: String,
    /// Seconds to append every record to the topic.
    pub fill_secs: f64,
    /// The same for the kills' topic (one record per batch).
    pub crash_records: u64,
    pub crash_fill_secs: f64,
    /// The engine's load of the kills' topic without a kill.
    pub crash_control: Option<LoadFigure>,
    pub loads: Vec<LoadFigure>,
    pub crashes: Vec<CrashFigure>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_run: Option<String>,
}

/// What the part needs from the study's plan.
pub struct EnginePlan<'a> {
    pub out: &'a Path,
    pub work_dir: &'a Path,
    /// Records of the loads' topic, and of the kills'.
    pub records: u64,
    pub crash_records: u64,
    pub ugc_exe: &'a Path,
    pub chdb_lib: &'a Path,
}

pub fn run(plan: &EnginePlan, command: &str, progress: &Progress) -> anyhow::Result<()> {
    let began = Instant::now();
    let mut r = EngineResults {
        run: crate::study::RunHeader::now(command.to_owned())?,
        records: plan.records,
        broker: "tansu (memory storage)".into(),
        crash_records: plan.crash_records,
        ..EngineResults::default()
    };
    progress.done("study: the Kafka engine against ugc's loader");
    if let Err(e) = measure(plan, &mut r, progress) {
        progress.done(&format!("  not run: {e:#}"));
        r.not_run = Some(format!("{e:#}"));
    }
    r.run.secs = began.elapsed().as_secs_f64();
    std::fs::create_dir_all(plan.out)?;
    std::fs::write(
        plan.out.join("kafka-engine.json"),
        serde_json::to_string_pretty(&r)?,
    )?;
    std::fs::write(plan.out.join("kafka-engine.md"), markdown(&r))?;
    Ok(())
}

fn measure(plan: &EnginePlan, r: &mut EngineResults, progress: &Progress) -> anyhow::Result<()> {
    anyhow::ensure!(
        plan.ugc_exe.exists(),
        "the ugc binary is not at {} (build it, or give --ugc-bin)",
        plan.ugc_exe.display()
    );
    Tansu::find_binary().map_err(anyhow::Error::msg)?;
    let mut server =
        ClickHouse::start_single_with(&format!("{}{NO_MERGES}", ugc_testkit::KAFKA_ENGINE_CONFIG))
            .map_err(anyhow::Error::msg)?;
    r.server = format!(
        "ClickHouse {} (merges off)",
        server
            .query("SELECT version()")
            .map_err(anyhow::Error::msg)?
            .trim()
    );
    std::fs::create_dir_all(plan.work_dir)?;
    let work = tempfile::Builder::new()
        .prefix("ugc-study-kafka-")
        .tempdir_in(plan.work_dir)?;
    let broker = Tansu::start(Storage::Memory);
    r.fill_secs = fill(
        &kafka_config(&broker.brokers(), TOPIC),
        plan.records,
        progress,
    )?;
    let mut ctx = Ctx {
        plan,
        brokers: broker.brokers(),
        topic: TOPIC,
        records: plan.records,
        work: work.path().to_owned(),
        progress,
    };
    for loader in Loader::ALL {
        let f = ctx.load(loader, &server, loader.slug());
        progress.done(&describe_load(&f));
        r.loads.push(f);
    }
    let one_per_batch = KafkaConfig {
        batch_bytes: 1,
        ..kafka_config(&broker.brokers(), CRASH_TOPIC)
    };
    r.crash_fill_secs = fill(&one_per_batch, plan.crash_records, progress)?;
    // The control: the engine on that topic with no kill, to tell what the kills did
    // from what the topic does.
    ctx.topic = CRASH_TOPIC;
    ctx.records = plan.crash_records;
    let control = ctx.load(Loader::KafkaEngine, &server, "engine_control");
    progress.done(&format!("  control, no kill:{}", describe_load(&control)));
    r.crash_control = Some(control);
    for loader in Loader::ALL {
        // The engine resumes at its committed offsets after the restart: the topic of
        // one record per batch. ugc's loader outlives the server and reads on from where
        // it is, so it takes the loads' topic, which it reads faster.
        if loader == Loader::KafkaEngine {
            ctx.topic = CRASH_TOPIC;
            ctx.records = plan.crash_records;
        } else {
            ctx.topic = TOPIC;
            ctx.records = plan.records;
        }
        // Its own load time, scaled to the topic; a guess if it did not load.
        let load = r
            .loads
            .iter()
            .find(|f| f.loader == loader)
            .and_then(|f| f.load_secs)
            .map_or(10.0, |s| s * ctx.records as f64 / plan.records as f64);
        for (i, share) in KILL_AT.into_iter().enumerate() {
            let after = Duration::from_secs_f64(load * share);
            let f = ctx.crash(loader, &mut server, i, share, after);
            progress.done(&describe_crash(&f, ctx.records));
            r.crashes.push(f);
        }
    }
    Ok(())
}

/// Appends `n` records of the bench's event mix to the topic with the product's
/// producer, as the API would; answers the seconds it took.
fn fill(config: &KafkaConfig, n: u64, progress: &Progress) -> anyhow::Result<f64> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let (producer, _) = rt.block_on(producer(Some(config), Path::new(".")))?;
    let topic = config.layout.topics().join(",");
    let w = Workload::new(1000, false)?;
    let mut rng = Rng::new(0xe9e1);
    let t0 = Instant::now();
    let mut done = 0;
    while done < n {
        let k = FILL_CHUNK.min(n - done);
        let mut batch = Vec::with_capacity(k as usize);
        for _ in 0..k {
            let user = &w.users[rng.below(w.users.len() as u64) as usize];
            batch.push(record(&w.envelope(&w.event(&mut rng), user)?));
        }
        rt.block_on(producer.append(batch))?;
        done += k;
        progress.update(&format!(
            "  filling {topic}: {} of {}",
            thousands(done as f64),
            thousands(n as f64)
        ));
    }
    let secs = t0.elapsed().as_secs_f64();
    progress.done(&format!(
        "  {} records appended to {topic} in {secs:.1} s",
        thousands(n as f64)
    ));
    Ok(secs)
}

struct Ctx<'a> {
    plan: &'a EnginePlan<'a>,
    brokers: String,
    topic: &'static str,
    /// Records of the topic on `brokers`.
    records: u64,
    work: PathBuf,
    progress: &'a Progress,
}

/// A loader at work: the engine lives in the server; ugc's loader is a process.
enum Running {
    Engine,
    Process(Proc),
}

impl Ctx<'_> {
    fn flags(&self, database: &str, group: &str) -> Vec<String> {
        [
            "--log-backend",
            "kafka",
            "--kafka-brokers",
            &self.brokers,
            "--kafka-topic",
            self.topic,
            "--kafka-dlq-topic",
            &format!("{}.dlq", self.topic),
            "--kafka-partitions",
            &crate::children::BENCH_PARTITIONS.to_string(),
            "--kafka-replication-factor",
            "1",
            "--kafka-min-insync-replicas",
            "1",
            "--kafka-group",
            group,
            "--store",
            "clickhouse",
            "--clickhouse-database",
            database,
        ]
        .map(String::from)
        .to_vec()
    }

    /// Starts `loader` on database `database` with consumer group `group`.
    fn start(
        &self,
        loader: Loader,
        server: &ClickHouse,
        database: &str,
        group: &str,
    ) -> anyhow::Result<Running> {
        let mut flags = self.flags(database, group);
        flags.extend(["--clickhouse-url".to_owned(), server.url()]);
        let dir = self.work.join(database);
        std::fs::create_dir_all(&dir)?;
        match loader {
            Loader::KafkaEngine => {
                let out = Command::new(self.plan.ugc_exe)
                    .arg("kafka-engine-ddl")
                    .arg("--apply")
                    .args(&flags)
                    .args(["--kafka-engine-group", &format!("{group}.engine")])
                    .output()
                    .context("cannot run ugc kafka-engine-ddl")?;
                if !out.status.success() {
                    bail!(
                        "ugc kafka-engine-ddl --apply failed: {}",
                        String::from_utf8_lossy(&out.stderr)
                    );
                }
                Ok(Running::Engine)
            }
            Loader::UgcLoader => {
                let mut cmd = Command::new(self.plan.ugc_exe);
                cmd.arg("serve")
                    .arg("--data-dir")
                    .arg(dir.join("data"))
                    .arg("--listen")
                    .arg(format!("127.0.0.1:{}", free_port()?))
                    .arg("--jwt-secret")
                    .arg(SECRET)
                    .arg("--chdb-lib")
                    .arg(self.plan.chdb_lib)
                    .args(&flags)
                    .env("UGC_ROLE", "loader");
                Ok(Running::Process(spawn(
                    cmd,
                    "ugc loader",
                    &dir.join("loader.log"),
                    false,
                )?))
            }
        }
    }

    /// Stops `running`: the engine by dropping its views and table (it would go on
    /// polling the topic), the loader process by killing it.
    fn stop(&self, running: Running, server: &ClickHouse, database: &str) {
        use ugc_store::clickhouse::{
            KAFKA_ENGINE_HOURLY_VIEW, KAFKA_ENGINE_TABLE, KAFKA_ENGINE_VIEW,
        };
        match running {
            Running::Engine => {
                for t in [
                    KAFKA_ENGINE_VIEW,
                    KAFKA_ENGINE_HOURLY_VIEW,
                    KAFKA_ENGINE_TABLE,
                ] {
                    let _ = server.query(&format!("DROP TABLE IF EXISTS {database}.{t}"));
                }
            }
            Running::Process(p) => p.stop(),
        }
    }

    fn deadline(&self) -> Instant {
        // Generous: a busy two-core machine still finishes.
        Instant::now() + Duration::from_secs(600 + self.records / 1000)
    }

    /// Loads every record of the topic into database `study_<name>`.
    fn load(&self, loader: Loader, server: &ClickHouse, name: &str) -> LoadFigure {
        let mut f = LoadFigure {
            loader,
            first_row_secs: None,
            load_secs: None,
            rows_per_sec: None,
            counts: None,
            error: None,
        };
        let database = format!("study_{name}");
        let t0 = Instant::now();
        let running = match self.start(loader, server, &database, &format!("study.{name}")) {
            Ok(r) => r,
            Err(e) => {
                f.error = Some(format!("{e:#}"));
                return f;
            }
        };
        let n = self.records;
        let deadline = self.deadline();
        let mut first: Option<Instant> = None;
        // The last count seen and when it changed to that.
        let mut last = (0, Instant::now());
        let outcome = loop {
            let rows = count(server, &database).unwrap_or(0);
            if rows != last.0 {
                last = (rows, Instant::now());
            }
            if rows > 0 && first.is_none() {
                first = Some(Instant::now());
            }
            if rows >= n {
                break Ok(Instant::now());
            }
            // Short of the records and still: a loader that lost some is done too.
            if rows > 0 && last.1.elapsed() >= QUIET_SHORT {
                break Ok(last.1);
            }
            if Instant::now() > deadline {
                break Err(format!("{rows} of {n} rows stored by the deadline"));
            }
            self.progress.update(&format!(
                "  {}: {} of {} rows",
                loader.slug(),
                thousands(rows as f64),
                thousands(n as f64)
            ));
            std::thread::sleep(POLL);
        };
        match (outcome, first) {
            (Err(e), _) => f.error = Some(e),
            (Ok(_), None) => f.error = Some("no row was ever stored".into()),
            (Ok(end), Some(at)) => {
                f.first_row_secs = Some((at - t0).as_secs_f64());
                let secs = (end - t0).as_secs_f64();
                f.load_secs = Some(secs);
                f.rows_per_sec = Some(last.0 as f64 / secs.max(1e-9));
                // Stopped short: it has been still for long enough already.
                let settled = if last.0 >= n {
                    settle(server, &database, n, self.progress)
                } else {
                    Ok(last.0)
                };
                match settled {
                    Ok(_) => f.counts = counts(server, &database, n).ok(),
                    Err(e) => f.error = Some(e),
                }
            }
        }
        self.stop(running, server, &database);
        f
    }

    fn crash(
        &self,
        loader: Loader,
        server: &mut ClickHouse,
        i: usize,
        share: f64,
        after: Duration,
    ) -> CrashFigure {
        let mut f = CrashFigure {
            loader,
            topic: self.topic,
            records: self.records,
            kill_share: share,
            killed_after_secs: after.as_secs_f64(),
            killed_at: 0,
            restart_secs: 0.0,
            settle_secs: 0.0,
            counts: None,
            error: None,
        };
        let database = format!("study_{}_crash{i}", loader.slug());
        let t0 = Instant::now();
        let running = match self.start(
            loader,
            server,
            &database,
            &format!("study.{}.crash{i}", loader.slug()),
        ) {
            Ok(r) => r,
            Err(e) => {
                f.error = Some(format!("{e:#}"));
                return f;
            }
        };
        let n = self.records;
        let result = (|| -> Result<(), String> {
            std::thread::sleep(after.saturating_sub(t0.elapsed()));
            f.killed_at = count(server, &database)?;
            let killed = Instant::now();
            server.kill9();
            server.start()?;
            f.restart_secs = killed.elapsed().as_secs_f64();
            let restarted = Instant::now();
            settle(server, &database, n, self.progress)?;
            f.settle_secs = restarted.elapsed().as_secs_f64();
            Ok(())
        })();
        match result {
            Ok(()) => match counts(server, &database, n) {
                Ok(c) => f.counts = Some(c),
                Err(e) => f.error = Some(e),
            },
            Err(e) => f.error = Some(e),
        }
        self.stop(running, server, &database);
        f
    }
}

fn count(server: &ClickHouse, database: &str) -> Result<u64, String> {
    server
        .query(&format!("SELECT count() FROM {database}.events"))?
        .trim()
        .parse()
        .map_err(|e| format!("count(): {e}"))
}

/// Waits until the count stops moving: still for [`QUIET_COMPLETE`] with every record
/// stored, or for [`QUIET_SHORT`] short of them.
fn settle(server: &ClickHouse, database: &str, n: u64, progress: &Progress) -> Result<u64, String> {
    let deadline = Instant::now() + QUIET_SHORT * 5;
    let mut last = None;
    let mut since = Instant::now();
    loop {
        if let Ok(rows) = count(server, database) {
            if last != Some(rows) {
                last = Some(rows);
                since = Instant::now();
            }
            let quiet = since.elapsed();
            if (rows >= n && quiet >= QUIET_COMPLETE) || quiet >= QUIET_SHORT {
                return Ok(rows);
            }
            progress.update(&format!(
                "  {database}: {} rows, still for {:.0} s",
                thousands(rows as f64),
                quiet.as_secs_f64()
            ));
        }
        if Instant::now() > deadline {
            return Err(format!("the count of {database}.events never settled"));
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The counts of a settled database, read before any merge could fold a doubled row.
fn counts(server: &ClickHouse, database: &str, records: u64) -> Result<Counts, String> {
    const NIL: &str = "toUUID('00000000-0000-0000-0000-000000000000')";
    let out = server.query(&format!(
        "SELECT count(), uniqExactIf(event_id, event_id != {NIL}), countIf(event_id = {NIL}), \
         (SELECT count() FROM system.parts WHERE database = '{database}' AND table = 'events' \
         AND active AND level > 0) FROM {database}.events"
    ))?;
    let v: Vec<u64> = out
        .split_whitespace()
        .map(|x| x.parse().map_err(|e| format!("`{out}`: {e}")))
        .collect::<Result<_, _>>()?;
    let [rows, distinct, phantom, merged] = v[..] else {
        return Err(format!("unexpected answer `{out}`"));
    };
    Ok(Counts::of(records, rows, distinct, phantom, merged))
}

fn describe_load(f: &LoadFigure) -> String {
    match (&f.error, f.rows_per_sec) {
        (Some(e), _) => format!("  {}: failed: {e}", f.loader.slug()),
        (None, Some(rate)) => format!(
            "  {}: {} rows/s (first row after {:.1} s, last after {:.1} s)",
            f.loader.slug(),
            thousands(rate),
            f.first_row_secs.unwrap_or(0.0),
            f.load_secs.unwrap_or(0.0)
        ),
        _ => format!("  {}: no figure", f.loader.slug()),
    }
}

fn describe_crash(f: &CrashFigure, records: u64) -> String {
    match (&f.error, &f.counts) {
        (Some(e), _) => format!("  {} with kill -9: failed: {e}", f.loader.slug()),
        (None, Some(c)) => format!(
            "  {} with kill -9 after {:.1} s ({} rows): {} rows, {} of {} ids lost, {} doubled, {} phantom",
            f.loader.slug(),
            f.killed_after_secs,
            thousands(f.killed_at as f64),
            thousands(c.rows as f64),
            thousands(c.lost as f64),
            thousands(records as f64),
            thousands(c.doubled as f64),
            thousands(c.phantom as f64)
        ),
        _ => format!("  {} with kill -9: no figure", f.loader.slug()),
    }
}

fn markdown(r: &EngineResults) -> String {
    let mut md = String::new();
    let _ = writeln!(
        md,
        "# Storage study: ClickHouse's Kafka engine against ugc's loader\n"
    );
    let _ = writeln!(md, "{}", r.run.markdown());
    let _ = writeln!(
        md,
        "How the engine is set up, what each figure means and what follows from them: \
         [bench/README.md](../../README.md#storage-study).\n"
    );
    if let Some(why) = &r.not_run {
        let _ = writeln!(md, "Not run: {why}");
        return md;
    }
    let _ = writeln!(
        md,
        "One {} server; each loader into an empty database of its own, with a consumer \
         group of its own, from a topic of ugc's log records (the bench's event mix, {} \
         partitions).\n",
        r.server,
        crate::children::BENCH_PARTITIONS
    );
    let _ = writeln!(
        md,
        "## Loading every record\n\n{} records on {}, appended in {:.1} s.\n\n| loader | first row after | last row after | rows/s | rows | lost | doubled |\n|---|---|---|---|---|---|---|",
        thousands(r.records as f64),
        r.broker,
        r.fill_secs
    );
    for f in &r.loads {
        match (&f.error, &f.counts) {
            (Some(e), _) => {
                let _ = writeln!(md, "| {} | failed: {e} | | | | | |", f.loader.label());
            }
            (None, c) => {
                let c = c.clone().unwrap_or_default();
                let _ = writeln!(
                    md,
                    "| {} | {:.1} s | {:.1} s | {} | {} | {} | {} |",
                    f.loader.label(),
                    f.first_row_secs.unwrap_or(0.0),
                    f.load_secs.unwrap_or(0.0),
                    thousands(f.rows_per_sec.unwrap_or(0.0)),
                    thousands(c.rows as f64),
                    thousands(c.lost as f64),
                    thousands(c.doubled as f64)
                );
            }
        }
    }
    let _ = writeln!(
        md,
        "\n## The server killed with -9 mid-load, then restarted\n\n\
         The engine reads `{CRASH_TOPIC}`: {} records on {}, one record per batch \
         (appended in {:.1} s), because it resumes at its committed offsets after the \
         restart; ugc's loader, whose process outlives the server, reads `{TOPIC}` above. \
         One load into an empty database per kill, killed after the share shown of the \
         loader's own time to load every record; counted once the count stood still ({} s \
         with every record stored, else {} s), before any merge. The first row is the \
         engine on its topic with no kill.\n\n\
         | loader | killed after | rows stored then | server back after | settled after | rows | ids lost | ids doubled | rows without a record | merged parts |\n\
         |---|---|---|---|---|---|---|---|---|---|",
        thousands(r.crash_records as f64),
        r.broker,
        r.crash_fill_secs,
        QUIET_COMPLETE.as_secs(),
        QUIET_SHORT.as_secs()
    );
    if let Some(f) = &r.crash_control {
        let c = f.counts.clone().unwrap_or_default();
        let _ = writeln!(
            md,
            "| {}, no kill (control) | {} | | | | {} | {} | {} | {} | {} |",
            f.loader.label(),
            f.error
                .as_deref()
                .map_or("—".to_owned(), |e| format!("failed: {e}")),
            thousands(c.rows as f64),
            thousands(c.lost as f64),
            thousands(c.doubled as f64),
            thousands(c.phantom as f64),
            c.merged_parts
        );
    }
    for f in &r.crashes {
        match (&f.error, &f.counts) {
            (Some(e), _) => {
                let _ = writeln!(md, "| {} | failed: {e} | | | | | | | | |", f.loader.label());
            }
            (None, c) => {
                let c = c.clone().unwrap_or_default();
                let _ = writeln!(
                    md,
                    "| {} | {:.1} s ({:.0}%) | {} | {:.1} s | {:.1} s | {} | {} | {} | {} | {} |",
                    f.loader.label(),
                    f.killed_after_secs,
                    f.kill_share * 100.0,
                    thousands(f.killed_at as f64),
                    f.restart_secs,
                    f.settle_secs,
                    thousands(c.rows as f64),
                    thousands(c.lost as f64),
                    thousands(c.doubled as f64),
                    thousands(c.phantom as f64),
                    c.merged_parts
                );
            }
        }
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_tell_lost_from_doubled_and_phantom_rows() {
        // 10 records; 8 ids stored, 2 of them twice, plus one row of no record.
        let c = Counts::of(10, 11, 8, 1, 0);
        assert_eq!((c.lost, c.doubled, c.phantom), (2, 2, 1));
        assert_eq!(
            Counts::of(5, 5, 5, 0, 0).lost + Counts::of(5, 5, 5, 0, 0).doubled,
            0
        );
    }

    #[test]
    fn the_report_has_both_loaders_and_their_crash_figures() {
        let counts = Some(Counts::of(100, 100, 100, 0, 0));
        let r = EngineResults {
            records: 100,
            loads: Loader::ALL
                .map(|loader| LoadFigure {
                    loader,
                    first_row_secs: Some(1.0),
                    load_secs: Some(2.0),
                    rows_per_sec: Some(50.0),
                    counts: counts.clone(),
                    error: None,
                })
                .to_vec(),
            crashes: vec![CrashFigure {
                loader: Loader::KafkaEngine,
                topic: CRASH_TOPIC,
                records: 100,
                kill_share: 0.25,
                killed_after_secs: 0.5,
                killed_at: 40,
                restart_secs: 3.0,
                settle_secs: 20.0,
                counts: Some(Counts::of(100, 90, 70, 0, 0)),
                error: None,
            }],
            ..EngineResults::default()
        };
        let md = markdown(&r);
        assert!(
            md.contains(
                "| ClickHouse Kafka engine + materialized view | 1.0 s | 2.0 s | 50 | 100 | 0 | 0 |"
            ),
            "{md}"
        );
        assert!(md.contains("| ugc's loader (UGC_ROLE=loader) |"));
        assert!(
            md.contains("| 0.5 s (25%) | 40 | 3.0 s | 20.0 s | 90 | 30 | 20 | 0 | 0 |"),
            "{md}"
        );
    }
}
