//! The storage study: seed 004's OLAP test (ClickHouse against Vertica, 644,684 rows of
//! `(user_id, film_id, film_timestamp)` inserted in batches of 10 to 100,000, then five
//! queries) redone on the systems a cinema can run here — chDB in-process, one ClickHouse
//! 18.16 server, a 2 shards × 2 replicas cluster of it, PostgreSQL 15 — each figure beside
//! the others in one run, then the same queries at 10M and 100M rows.
//!
//! Every system gets the very same statement text: `INSERT INTO views VALUES (...)` as
//! the seed sent it, and SELECTs written in the SQL the four share; each answer is
//! compared with the others', so a figure is never of a wrong answer.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use plotters::prelude::*;
use serde::Serialize;

use crate::progress::{Progress, thousands};

/// Seed 004's row count.
pub const SEED_ROWS: u64 = 644_684;
const BATCHES: [u64; 6] = [10, 100, 500, 1_000, 10_000, 100_000];
/// Batch of the large sizes' loads (the seed's largest).
const BIG_BATCH: u64 = 100_000;
/// Each query runs this many times; the median is reported.
const RUNS: usize = 5;

/// Seed 004's own figures (Apple M1, ClickHouse and Vertica in Docker), to print beside
/// ours: the insert of all 644,684 rows at a batch size, seconds.
const SEED_FIGURES: &[(&str, u64, &str)] = &[
    ("ClickHouse (seed 004)", 10, "203.98"),
    ("ClickHouse (seed 004)", 10_000, "3.11"),
    ("Vertica (seed 004)", 10, "crashed"),
    ("Vertica (seed 004)", 100, "crashed"),
    ("Vertica (seed 004)", 100_000, "9.12"),
];

/// The seed's five questions.
const QUERIES: [(&str, &str); 5] = [
    ("unique users", "SELECT count(DISTINCT user_id) FROM views"),
    ("unique films", "SELECT count(DISTINCT film_id) FROM views"),
    (
        "films per user (distribution)",
        "SELECT films, count(*) AS users FROM (SELECT user_id, count(DISTINCT film_id) AS films \
         FROM views GROUP BY user_id) AS per_user GROUP BY films ORDER BY films",
    ),
    (
        "average watch time per film",
        "SELECT film_id, avg(film_timestamp) AS watched FROM views GROUP BY film_id",
    ),
    (
        "top 5 films",
        "SELECT film_id, count(*) AS n FROM views GROUP BY film_id ORDER BY n DESC LIMIT 5",
    ),
];

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum Kind {
    Chdb,
    Server,
    Cluster,
    Postgres,
}

impl Kind {
    pub const ALL: [Kind; 4] = [Kind::Chdb, Kind::Server, Kind::Cluster, Kind::Postgres];

    pub fn slug(self) -> &'static str {
        match self {
            Kind::Chdb => "chdb",
            Kind::Server => "server",
            Kind::Cluster => "cluster",
            Kind::Postgres => "postgres",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Kind::Chdb => "chDB 26.5 (embedded)",
            Kind::Server => "ClickHouse 18.16 server",
            Kind::Cluster => "ClickHouse 18.16, 2 shards × 2 replicas",
            Kind::Postgres => "PostgreSQL 15 (fsync on)",
        }
    }

    pub fn parse(s: &str) -> anyhow::Result<Kind> {
        Kind::ALL
            .into_iter()
            .find(|k| k.slug() == s)
            .with_context(|| {
                format!("unknown study system {s:?}: chdb, server, cluster, postgres, kafka-engine")
            })
    }
}

/// The name of the Kafka engine part in `--study-systems`.
const KAFKA_ENGINE: &str = "kafka-engine";

/// What the study runs.
#[derive(Clone, Debug)]
pub struct StudyPlan {
    pub out: PathBuf,
    pub work_dir: PathBuf,
    pub chdb_lib: PathBuf,
    pub systems: Vec<Kind>,
    /// Rows of each size; the first is loaded at every batch size, the others at
    /// [`BIG_BATCH`] only.
    pub sizes: Vec<u64>,
    /// Systems that also run the sizes above 10,000,000 (disk and time).
    pub large_systems: Vec<Kind>,
    pub batches: Vec<u64>,
    /// A batch-size step that runs longer than this stops; its total is projected.
    pub step_limit: Duration,
    /// Whether the Kafka engine part runs (`kafka_engine`), and on how many records.
    pub kafka_engine: bool,
    pub kafka_records: u64,
    pub kafka_crash_records: u64,
    /// The `ugc` binary that part runs (`kafka-engine-ddl`, a loader).
    pub ugc_exe: PathBuf,
}

impl StudyPlan {
    pub fn new(a: &crate::BenchArgs) -> anyhow::Result<StudyPlan> {
        let quick = a.quick;
        let kafka_engine =
            a.study_systems.is_empty() || a.study_systems.iter().any(|n| n == KAFKA_ENGINE);
        let kinds = |names: &[String], default: &[Kind]| -> anyhow::Result<Vec<Kind>> {
            if names.is_empty() {
                return Ok(default.to_vec());
            }
            let mut v = names
                .iter()
                .filter(|n| *n != KAFKA_ENGINE)
                .map(|n| Kind::parse(n))
                .collect::<anyhow::Result<Vec<_>>>()?;
            v.sort();
            v.dedup();
            Ok(v)
        };
        let sizes = match (a.study_sizes.is_empty(), quick) {
            (false, _) => a.study_sizes.clone(),
            (true, false) => vec![SEED_ROWS, 10_000_000, 100_000_000],
            (true, true) => vec![20_000, 100_000],
        };
        Ok(StudyPlan {
            out: a.out.clone().unwrap_or_else(|| {
                if quick {
                    std::env::temp_dir().join(format!("ugc-study-quick-{}", std::process::id()))
                } else {
                    PathBuf::from("bench/results/study")
                }
            }),
            work_dir: a.work_dir.clone().unwrap_or_else(std::env::temp_dir),
            chdb_lib: std::env::var_os("UGC_CHDB_LIB")
                .map(PathBuf::from)
                .unwrap_or_else(ugc_chdb::default_library_path),
            systems: kinds(&a.study_systems, &Kind::ALL)?,
            sizes,
            large_systems: kinds(&a.study_large_systems, &[Kind::Chdb, Kind::Server])?,
            batches: if quick {
                vec![10, 1_000, 10_000]
            } else {
                BATCHES.to_vec()
            },
            step_limit: Duration::from_secs_f64(a.study_step_secs.unwrap_or(if quick {
                5.0
            } else {
                240.0
            })),
            kafka_engine,
            kafka_records: a
                .study_kafka_records
                .unwrap_or(if quick { 20_000 } else { 1_000_000 })
                .max(1),
            kafka_crash_records: a
                .study_kafka_crash_records
                .unwrap_or(if quick { 20_000 } else { 1_000_000 })
                .max(1),
            ugc_exe: match &a.ugc_bin {
                Some(p) => p.clone(),
                None => std::env::current_exe()?.with_file_name("ugc"),
            },
        })
    }
}

/// One system under study: runs a statement, answers its output as tab-separated text.
trait System {
    /// Drops and creates the `views` table.
    fn reset(&mut self) -> anyhow::Result<()>;
    fn run(&mut self, sql: &str) -> anyhow::Result<String>;
}

/// The ClickHouse systems keep the table in database `study`; the shared text names
/// only `views`.
fn qualified(sql: &str) -> String {
    sql.replace("FROM views", "FROM study.views")
        .replace("INTO views", "INTO study.views")
}

const COLUMNS_CH: &str = "user_id UUID, film_id UUID, film_timestamp UInt32";

struct Chdb {
    conn: ugc_chdb::Connection,
}

impl System for Chdb {
    fn reset(&mut self) -> anyhow::Result<()> {
        for sql in [
            "CREATE DATABASE IF NOT EXISTS study".to_owned(),
            format!(
                "CREATE TABLE IF NOT EXISTS study.views ({COLUMNS_CH}) ENGINE = MergeTree ORDER BY (user_id, film_id)"
            ),
            // Not DROP ... SYNC: chDB waits on it for minutes after many small inserts.
            "TRUNCATE TABLE study.views".to_owned(),
        ] {
            self.run(&sql)?;
        }
        Ok(())
    }

    fn run(&mut self, sql: &str) -> anyhow::Result<String> {
        let sql = qualified(sql);
        let out = self.conn.query(&sql, "TabSeparated")?;
        Ok(String::from_utf8_lossy(&out.data).into_owned())
    }
}

/// A ClickHouse server (one, or the cluster's first node) over HTTP.
struct Server {
    rt: tokio::runtime::Runtime,
    client: clickhouse::Client,
    cluster: Option<&'static str>,
    /// Each reset gets fresh ZooKeeper paths: a dropped replicated table's may linger.
    generation: u32,
}

impl Server {
    fn new(url: &str, cluster: Option<&'static str>) -> anyhow::Result<Server> {
        let mut client = clickhouse::Client::default()
            .with_url(url)
            .with_compression(clickhouse::Compression::None)
            .with_option("database", "default");
        if cluster.is_some() {
            // Like ugc's own store: an insert is answered once every shard has it.
            client = client.with_option("insert_distributed_sync", "1");
        }
        Ok(Server {
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?,
            client,
            cluster,
            generation: 0,
        })
    }
}

impl System for Server {
    fn reset(&mut self) -> anyhow::Result<()> {
        self.generation += 1;
        let statements = match self.cluster {
            None => vec![
                "CREATE DATABASE IF NOT EXISTS study".to_owned(),
                format!(
                    "CREATE TABLE IF NOT EXISTS study.views ({COLUMNS_CH}) ENGINE = MergeTree() ORDER BY (user_id, film_id)"
                ),
                "TRUNCATE TABLE study.views".to_owned(),
            ],
            Some(c) => vec![
                format!("CREATE DATABASE IF NOT EXISTS study ON CLUSTER {c}"),
                format!("DROP TABLE IF EXISTS study.views ON CLUSTER {c}"),
                format!("DROP TABLE IF EXISTS study.views_local ON CLUSTER {c}"),
                format!(
                    "CREATE TABLE study.views_local ON CLUSTER {c} ({COLUMNS_CH}) \
                     ENGINE = ReplicatedMergeTree('/clickhouse/tables/{{shard}}/study/views_{}', '{{replica}}') \
                     ORDER BY (user_id, film_id)",
                    self.generation
                ),
                format!(
                    "CREATE TABLE study.views ON CLUSTER {c} ({COLUMNS_CH}) \
                     ENGINE = Distributed({c}, study, views_local, sipHash64(toString(user_id)))"
                ),
            ],
        };
        for sql in statements {
            self.run(&sql)?;
        }
        Ok(())
    }

    fn run(&mut self, sql: &str) -> anyhow::Result<String> {
        let sql = qualified(sql);
        // The crate reads `?` as a bind marker; the study's statements have none.
        let query = self.client.query(&sql);
        let out = self.rt.block_on(async {
            let mut cursor = query.fetch_bytes("TabSeparated")?;
            cursor.collect().await
        })?;
        Ok(String::from_utf8_lossy(&out).into_owned())
    }
}

struct Postgres {
    rt: tokio::runtime::Runtime,
    conn: sqlx::PgConnection,
}

impl System for Postgres {
    fn reset(&mut self) -> anyhow::Result<()> {
        self.rt.block_on(async {
            sqlx::query("DROP TABLE IF EXISTS views")
                .execute(&mut self.conn)
                .await?;
            // No index: like the column stores, every query reads the table.
            sqlx::query(
                "CREATE TABLE views (user_id uuid NOT NULL, film_id uuid NOT NULL, \
                 film_timestamp integer NOT NULL)",
            )
            .execute(&mut self.conn)
            .await?;
            anyhow::Ok(())
        })
    }

    fn run(&mut self, sql: &str) -> anyhow::Result<String> {
        self.rt.block_on(async {
            if sql.starts_with("INSERT") {
                sqlx::query(sql).execute(&mut self.conn).await?;
                return Ok(String::new());
            }
            // Each row as its text form, `(a,b)`, so any answer reads back without a
            // decoder per column type (avg answers `numeric`).
            let rows: Vec<String> =
                sqlx::query_scalar(&format!("SELECT (q)::text FROM ({sql}) AS q"))
                    .fetch_all(&mut self.conn)
                    .await?;
            Ok(rows
                .iter()
                .map(|r| {
                    r.trim_start_matches('(')
                        .trim_end_matches(')')
                        .replace(',', "\t")
                        + "\n"
                })
                .collect())
        })
    }
}

/// Row `i` of the data set: a deterministic function of `i` and the size, so every
/// system gets the same rows without holding them. Users view several films each; film
/// popularity is skewed (the square of a uniform draw), so "top 5" has an answer.
fn row(i: u64, users: u64, films: u64) -> (uuid::Uuid, uuid::Uuid, u64) {
    let h = splitmix(i);
    let user = h % users;
    let u = (splitmix(h) >> 11) as f64 / (1u64 << 53) as f64;
    let film = ((u * u) * films as f64) as u64;
    let at = (h >> 40) % 7_200;
    (
        uuid::Uuid::from_u64_pair(0x5eed_0004_0000_0000 | user, splitmix(user)),
        uuid::Uuid::from_u64_pair(0xf11a_0004_0000_0000 | film, splitmix(film ^ 0xf11a)),
        at,
    )
}

fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Users and films for `rows` rows: the seed's ratio (about 64 views per user), at least
/// 1,000 films.
fn population(rows: u64) -> (u64, u64) {
    ((rows / 64).max(1), (rows / 600).max(1_000))
}

/// `INSERT INTO views VALUES ...` of rows `from..to`.
fn insert_sql(from: u64, to: u64, users: u64, films: u64) -> String {
    let mut sql = String::with_capacity(((to - from) * 90) as usize + 64);
    sql.push_str("INSERT INTO views (user_id, film_id, film_timestamp) VALUES ");
    for i in from..to {
        let (u, f, t) = row(i, users, films);
        if i > from {
            sql.push(',');
        }
        let _ = write!(sql, "('{u}','{f}',{t})");
    }
    sql
}

/// An answer reduced to what every system prints alike: each row's numbers (UUIDs
/// dropped: their order and ties differ between engines), rounded, rows sorted.
fn canonical(answer: &str) -> Vec<Vec<String>> {
    let mut rows: Vec<Vec<String>> = answer
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            l.split('\t')
                .filter(|f| uuid::Uuid::parse_str(f).is_err())
                .map(|f| match f.parse::<f64>() {
                    Ok(v) => format!("{v:.2}"),
                    Err(_) => f.to_owned(),
                })
                .collect()
        })
        .collect();
    rows.sort();
    rows
}

#[derive(Clone, Debug, Serialize)]
pub struct InsertFigure {
    pub system: Kind,
    pub rows: u64,
    pub batch: u64,
    /// Seconds for all `rows` (projected from the rate when `projected`).
    pub secs: Option<f64>,
    pub rows_per_sec: Option<f64>,
    /// Rows actually inserted before the step stopped.
    pub inserted: u64,
    pub projected: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct QueryFigure {
    pub system: Kind,
    pub rows: u64,
    pub query: String,
    pub median_ms: Option<f64>,
    pub min_ms: Option<f64>,
    /// Whether the answer is the same as every other system's at this size.
    pub agrees: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What every study report starts with: how it was run, when, where and for how long.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RunHeader {
    pub command: String,
    pub started: String,
    pub machine: String,
    pub secs: f64,
}

impl RunHeader {
    /// The header of a run of `command` starting now (`secs` is set when it ends).
    pub fn now(command: String) -> anyhow::Result<Self> {
        Ok(Self {
            command,
            started: time::OffsetDateTime::now_utc()
                .format(&time::format_description::well_known::Rfc3339)?,
            machine: crate::report::Machine::probe().describe(),
            secs: 0.0,
        })
    }

    /// The report's line under its title.
    pub fn markdown(&self) -> String {
        format!(
            "`{}` · {} · {} · took {:.0} s\n",
            self.command, self.started, self.machine, self.secs
        )
    }
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct StudyResults {
    #[serde(flatten)]
    pub run: RunHeader,
    pub inserts: Vec<InsertFigure>,
    pub queries: Vec<QueryFigure>,
    /// System → why it did not run.
    pub not_run: BTreeMap<String, String>,
}

/// The servers the study starts, kept alive while it runs.
struct Servers {
    _single: Option<ugc_testkit::ClickHouse>,
    _cluster: Option<ugc_testkit::Cluster>,
    _pg: Option<ugc_testkit::Postgres>,
}

fn open(kind: Kind, plan: &StudyPlan, servers: &mut Servers) -> anyhow::Result<Box<dyn System>> {
    Ok(match kind {
        Kind::Chdb => {
            let lib = ugc_chdb::Library::load(&plan.chdb_lib)?;
            let dir = plan.work_dir.join("study-chdb");
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir)?;
            Box::new(Chdb {
                conn: ugc_chdb::Connection::open(&lib, &dir, &[])?,
            })
        }
        Kind::Server => {
            let s = ugc_testkit::ClickHouse::start_single().map_err(anyhow::Error::msg)?;
            let url = s.url();
            servers._single = Some(s);
            Box::new(Server::new(&url, None)?)
        }
        Kind::Cluster => {
            let c = ugc_testkit::Cluster::start(2, 2).map_err(anyhow::Error::msg)?;
            let url = c.url();
            servers._cluster = Some(c);
            Box::new(Server::new(&url, Some(ugc_testkit::CLUSTER_NAME))?)
        }
        Kind::Postgres => {
            let pg = ugc_testkit::Postgres::start_durable().map_err(anyhow::Error::msg)?;
            let url = pg.create_database("study").map_err(anyhow::Error::msg)?;
            servers._pg = Some(pg);
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let conn = rt.block_on(async {
                use sqlx::Connection;
                sqlx::PgConnection::connect(&url).await
            })?;
            Box::new(Postgres { rt, conn })
        }
    })
}

/// Loads `rows` rows in batches of `batch`, stopping at `limit` (then projecting).
fn load(
    sys: &mut dyn System,
    kind: Kind,
    rows: u64,
    batch: u64,
    limit: Duration,
    progress: &Progress,
) -> InsertFigure {
    let (users, films) = population(rows);
    let mut figure = InsertFigure {
        system: kind,
        rows,
        batch,
        secs: None,
        rows_per_sec: None,
        inserted: 0,
        projected: false,
        error: None,
    };
    if let Err(e) = sys.reset() {
        figure.error = Some(format!("creating the table: {e:#}"));
        return figure;
    }
    // Statement text is built outside the timed part: the clients' cost is not the
    // store's.
    let mut busy = Duration::ZERO;
    let mut from = 0;
    let mut last_report = Instant::now();
    while from < rows {
        let to = (from + batch).min(rows);
        let sql = insert_sql(from, to, users, films);
        let t = Instant::now();
        if let Err(e) = sys.run(&sql) {
            figure.error = Some(format!(
                "after {} rows: {}",
                thousands(from as f64),
                first_line(&format!("{e:#}"))
            ));
            break;
        }
        busy += t.elapsed();
        from = to;
        figure.inserted = from;
        if last_report.elapsed() > Duration::from_secs(1) {
            progress.update(&format!(
                "  {}: batch {}: {} of {} rows · {:.0} s",
                kind.slug(),
                thousands(batch as f64),
                thousands(from as f64),
                thousands(rows as f64),
                busy.as_secs_f64()
            ));
            last_report = Instant::now();
        }
        if busy > limit && from < rows {
            figure.projected = true;
            break;
        }
    }
    if figure.inserted > 0 && figure.error.is_none() {
        let rate = figure.inserted as f64 / busy.as_secs_f64().max(1e-9);
        figure.rows_per_sec = Some(rate);
        figure.secs = Some(rows as f64 / rate);
    }
    figure
}

fn first_line(s: &str) -> String {
    let line = s.lines().next().unwrap_or("").to_owned();
    if line.len() > 300 {
        format!("{}…", &line[..300])
    } else {
        line
    }
}

/// A query's answer with its median and fastest run, in ms.
struct Asked {
    answer: String,
    median: f64,
    min: f64,
}

/// Runs every query [`RUNS`] times on a loaded table.
fn ask(sys: &mut dyn System) -> Vec<(String, Result<Asked, String>)> {
    QUERIES
        .iter()
        .map(|(label, sql)| {
            let mut times = Vec::new();
            let mut answer = String::new();
            for _ in 0..RUNS {
                let t = Instant::now();
                match sys.run(sql) {
                    Ok(a) => answer = a,
                    Err(e) => return (label.to_string(), Err(first_line(&format!("{e:#}")))),
                }
                times.push(t.elapsed().as_secs_f64() * 1e3);
            }
            times.sort_by(f64::total_cmp);
            let asked = Asked {
                answer,
                median: times[RUNS / 2],
                min: times[0],
            };
            (label.to_string(), Ok(asked))
        })
        .collect()
}

pub fn run(plan: &StudyPlan, command: String) -> anyhow::Result<()> {
    let progress = Progress::new();
    std::fs::create_dir_all(&plan.out)?;
    // Each part writes its own files: one run of a part leaves the other's results be.
    if !plan.systems.is_empty() {
        olap(plan, command.clone(), &progress)?;
    }
    if plan.kafka_engine {
        let engine = crate::kafka_engine::EnginePlan {
            out: &plan.out,
            work_dir: &plan.work_dir,
            records: plan.kafka_records,
            crash_records: plan.kafka_crash_records,
            ugc_exe: &plan.ugc_exe,
            chdb_lib: &plan.chdb_lib,
        };
        crate::kafka_engine::run(&engine, &command, &progress)?;
        progress.done(&format!(
            "the Kafka engine part written to {}",
            plan.out.join("kafka-engine.md").display()
        ));
    }
    Ok(())
}

/// Seed 004's test on the chosen systems: results.md, results.json, chart.svg.
fn olap(plan: &StudyPlan, command: String, progress: &Progress) -> anyhow::Result<()> {
    let began = Instant::now();
    let mut results = StudyResults {
        run: RunHeader::now(command)?,
        ..StudyResults::default()
    };
    let Some((&first, bigger)) = plan.sizes.split_first() else {
        bail!("no sizes to study");
    };
    for &kind in &plan.systems {
        progress.done(&format!("study: {}", kind.label()));
        let mut servers = Servers {
            _single: None,
            _cluster: None,
            _pg: None,
        };
        let mut sys = match open(kind, plan, &mut servers) {
            Ok(s) => s,
            Err(e) => {
                progress.done(&format!("  not run: {e:#}"));
                results
                    .not_run
                    .insert(kind.label().to_owned(), format!("{e:#}"));
                continue;
            }
        };
        // Seed 004's steps: the whole data set at each batch size into an empty table.
        let mut loaded_whole = false;
        for &batch in &plan.batches {
            let f = load(sys.as_mut(), kind, first, batch, plan.step_limit, progress);
            progress.done(&describe(&f));
            loaded_whole = f.error.is_none() && !f.projected;
            results.inserts.push(f);
        }
        if !loaded_whole {
            let f = load(
                sys.as_mut(),
                kind,
                first,
                BIG_BATCH,
                Duration::MAX,
                progress,
            );
            progress.done(&describe(&f));
            if f.error.is_some() {
                results.inserts.push(f);
                continue;
            }
        }
        queries(sys.as_mut(), kind, first, &mut results, progress);
        for &rows in bigger {
            if rows > 10_000_000 && !plan.large_systems.contains(&kind) {
                continue;
            }
            let f = load(sys.as_mut(), kind, rows, BIG_BATCH, Duration::MAX, progress);
            progress.done(&describe(&f));
            let ok = f.error.is_none();
            results.inserts.push(f);
            if ok {
                queries(sys.as_mut(), kind, rows, &mut results, progress);
            }
        }
        // Free the disk before the next system.
        let _ = sys.reset();
        drop(sys);
        let _ = std::fs::remove_dir_all(plan.work_dir.join("study-chdb"));
    }
    compare_answers(&mut results);
    results.run.secs = began.elapsed().as_secs_f64();
    write(plan, &results)?;
    progress.done(&format!(
        "study written to {} in {:.0} s",
        plan.out.display(),
        results.run.secs
    ));
    Ok(())
}

/// Answers by (rows, query) → system → canonical answer; filled by `queries`.
type Answers = BTreeMap<(u64, String), BTreeMap<Kind, Vec<Vec<String>>>>;

thread_local! {
    static ANSWERS: std::cell::RefCell<Answers> = std::cell::RefCell::default();
}

fn queries(
    sys: &mut dyn System,
    kind: Kind,
    rows: u64,
    results: &mut StudyResults,
    progress: &Progress,
) {
    for (query, outcome) in ask(sys) {
        let mut f = QueryFigure {
            system: kind,
            rows,
            query: query.clone(),
            median_ms: None,
            min_ms: None,
            agrees: None,
            error: None,
        };
        match outcome {
            Ok(Asked {
                answer,
                median,
                min,
            }) => {
                f.median_ms = Some(median);
                f.min_ms = Some(min);
                ANSWERS.with(|a| {
                    a.borrow_mut()
                        .entry((rows, query.clone()))
                        .or_default()
                        .insert(kind, canonical(&answer))
                });
                progress.done(&format!(
                    "  {} rows · {query}: {:.1} ms (median of {RUNS})",
                    thousands(rows as f64),
                    median
                ));
            }
            Err(e) => {
                progress.done(&format!("  {query}: failed: {e}"));
                f.error = Some(e);
            }
        }
        results.queries.push(f);
    }
}

/// Marks each answer as agreeing with the others at its size (when there are others).
fn compare_answers(results: &mut StudyResults) {
    ANSWERS.with(|a| {
        let a = a.borrow();
        for f in &mut results.queries {
            let Some(by_system) = a.get(&(f.rows, f.query.clone())) else {
                continue;
            };
            let Some(mine) = by_system.get(&f.system) else {
                continue;
            };
            if by_system.len() > 1 {
                f.agrees = Some(by_system.values().all(|other| other == mine));
            }
        }
    });
}

fn describe(f: &InsertFigure) -> String {
    let what = format!(
        "  {} rows in batches of {}",
        thousands(f.rows as f64),
        thousands(f.batch as f64)
    );
    match (&f.error, f.secs) {
        (Some(e), _) => format!("{what}: failed {e}"),
        (None, Some(s)) if f.projected => format!(
            "{what}: {s:.1} s projected ({} rows/s over the first {} rows)",
            thousands(f.rows_per_sec.unwrap_or(0.0)),
            thousands(f.inserted as f64)
        ),
        (None, Some(s)) => format!(
            "{what}: {s:.2} s ({} rows/s)",
            thousands(f.rows_per_sec.unwrap_or(0.0))
        ),
        (None, None) => format!("{what}: nothing inserted"),
    }
}

fn write(plan: &StudyPlan, r: &StudyResults) -> anyhow::Result<()> {
    std::fs::write(
        plan.out.join("results.json"),
        serde_json::to_string_pretty(r)?,
    )?;
    std::fs::write(plan.out.join("results.md"), markdown(plan, r))?;
    chart(r, &plan.out.join("chart.svg"))?;
    Ok(())
}

fn markdown(plan: &StudyPlan, r: &StudyResults) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# Storage study: seed 004's OLAP test, redone\n");
    let _ = writeln!(md, "{}", r.run.markdown());
    let _ = writeln!(
        md,
        "How the data is made, what each system is and how to read this: \
         [bench/README.md](../../README.md#storage-study). The recommendation that follows \
         from these figures is there too. ClickHouse's Kafka engine against ugc's loader: \
         [kafka-engine.md](kafka-engine.md).\n"
    );
    if !r.not_run.is_empty() {
        let _ = writeln!(md, "Not run:\n");
        for (s, why) in &r.not_run {
            let _ = writeln!(md, "- {s}: {}", first_line(why));
        }
        md.push('\n');
    }
    let first = plan.sizes.first().copied().unwrap_or(SEED_ROWS);
    let _ = writeln!(
        md,
        "## Inserting {} rows, seconds (batch size across)\n",
        thousands(first as f64)
    );
    let _ = write!(md, "| system |");
    for b in &plan.batches {
        let _ = write!(md, " {} |", thousands(*b as f64));
    }
    let _ = write!(md, "\n|---|");
    for _ in &plan.batches {
        md.push_str("---|");
    }
    md.push('\n');
    for kind in &plan.systems {
        let _ = write!(md, "| {} |", kind.label());
        for b in &plan.batches {
            let cell = r
                .inserts
                .iter()
                .find(|f| f.system == *kind && f.rows == first && f.batch == *b)
                .map_or("—".to_owned(), |f| match (&f.error, f.secs) {
                    (Some(_), _) => "failed¹".to_owned(),
                    (None, Some(s)) if f.projected => format!("~{s:.1}²"),
                    (None, Some(s)) => format!("{s:.2}"),
                    (None, None) => "—".to_owned(),
                });
            let _ = write!(md, " {cell} |");
        }
        md.push('\n');
    }
    if first == SEED_ROWS {
        for who in ["ClickHouse (seed 004)", "Vertica (seed 004)"] {
            let _ = write!(md, "| {who}, Apple M1, Docker |");
            for b in &plan.batches {
                let cell = SEED_FIGURES
                    .iter()
                    .find(|(w, batch, _)| *w == who && batch == b)
                    .map_or("", |f| f.2);
                let _ = write!(md, " {cell} |");
            }
            md.push('\n');
        }
    }
    let errors: Vec<&InsertFigure> = r.inserts.iter().filter(|f| f.error.is_some()).collect();
    let _ = writeln!(
        md,
        "\n{}² the step stopped after {:.0} s of inserting; the total is its rate over the rows \
         it inserted, projected to all rows.\n",
        if errors.is_empty() {
            ""
        } else {
            "¹ the error is below. "
        },
        plan.step_limit.as_secs_f64()
    );
    for f in &errors {
        let _ = writeln!(
            md,
            "- {}, {} rows in batches of {}: {}",
            f.system.label(),
            thousands(f.rows as f64),
            thousands(f.batch as f64),
            f.error.as_deref().unwrap_or("")
        );
    }
    if !errors.is_empty() {
        md.push('\n');
    }
    let big: Vec<&InsertFigure> = r
        .inserts
        .iter()
        .filter(|f| f.rows != first && f.error.is_none())
        .collect();
    if !big.is_empty() {
        let _ = writeln!(
            md,
            "## Larger loads, batches of {}\n\n| system | rows | seconds | rows/s |\n|---|---|---|---|",
            thousands(BIG_BATCH as f64)
        );
        for f in big {
            let _ = writeln!(
                md,
                "| {} | {} | {:.1} | {} |",
                f.system.label(),
                thousands(f.rows as f64),
                f.secs.unwrap_or(0.0),
                thousands(f.rows_per_sec.unwrap_or(0.0))
            );
        }
        md.push('\n');
    }
    let _ = writeln!(
        md,
        "## Queries, milliseconds (median of {RUNS} runs; min in brackets)\n"
    );
    let _ = writeln!(md, "The statements, the same text on every system:\n");
    for (label, sql) in QUERIES {
        let _ = writeln!(md, "- {label}: `{sql}`");
    }
    md.push_str("\nSeed 004 measured ~10–20 ms for its queries at 644,684 rows.\n\n");
    let _ = write!(md, "| rows | query |");
    for kind in &plan.systems {
        let _ = write!(md, " {} |", kind.label());
    }
    let _ = write!(md, "\n|---|---|");
    for _ in &plan.systems {
        md.push_str("---|");
    }
    md.push('\n');
    for rows in &plan.sizes {
        for (label, _) in QUERIES {
            if !r
                .queries
                .iter()
                .any(|q| q.rows == *rows && q.query == label)
            {
                continue;
            }
            let _ = write!(md, "| {} | {label} |", thousands(*rows as f64));
            for kind in &plan.systems {
                let cell = r
                    .queries
                    .iter()
                    .find(|q| q.system == *kind && q.rows == *rows && q.query == label)
                    .map_or("—".to_owned(), |q| match (&q.error, q.median_ms) {
                        (Some(e), _) => format!("failed: {}", first_line(e)),
                        (None, Some(m)) => format!(
                            "{}{} ({})",
                            crate::report::ms(m),
                            if q.agrees == Some(false) {
                                " **answer differs**"
                            } else {
                                ""
                            },
                            crate::report::ms(q.min_ms.unwrap_or(m))
                        ),
                        (None, None) => "—".to_owned(),
                    });
                let _ = write!(md, " {cell} |");
            }
            md.push('\n');
        }
    }
    let all_agree = r.queries.iter().all(|q| q.agrees != Some(false));
    let _ = writeln!(
        md,
        "\n{}",
        if all_agree {
            "Every system that answered gave the same answers at each size (numbers compared \
             to two decimals; film ids left out, since engines order ties differently)."
        } else {
            "**Some answers differ between systems** (marked above)."
        }
    );
    md
}

/// Insert seconds against batch size, log-log, one line per system.
fn chart(r: &StudyResults, path: &Path) -> anyhow::Result<()> {
    let first = r.inserts.first().map_or(SEED_ROWS, |f| f.rows);
    let points: Vec<(Kind, Vec<(f64, f64)>)> = Kind::ALL
        .iter()
        .map(|k| {
            (
                *k,
                r.inserts
                    .iter()
                    .filter(|f| f.system == *k && f.rows == first && f.error.is_none())
                    .filter_map(|f| f.secs.map(|s| (f.batch as f64, s)))
                    .collect::<Vec<_>>(),
            )
        })
        .filter(|(_, p)| !p.is_empty())
        .collect();
    let root = SVGBackend::new(path, (900, 520)).into_drawing_area();
    root.fill(&WHITE)?;
    let ys = points.iter().flat_map(|(_, p)| p.iter().map(|x| x.1));
    let (lo, hi) = ys.fold((f64::MAX, f64::MIN), |(a, b), y| (a.min(y), b.max(y)));
    let (lo, hi) = if lo <= hi {
        (lo / 2.0, hi * 2.0)
    } else {
        (0.01, 1000.0)
    };
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("Inserting {} rows, by batch size", thousands(first as f64)),
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d((5f64..200_000f64).log_scale(), (lo..hi).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("rows per INSERT")
        .y_desc("seconds for all rows")
        .x_label_formatter(&|v| thousands(*v))
        .draw()?;
    for (i, (kind, p)) in points.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(p.iter().copied(), color.stroke_width(2)))?
            .label(kind.label())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
        chart.draw_series(
            p.iter()
                .map(|&(x, y)| Circle::new((x, y), 3, color.filled())),
        )?;
    }
    if first == SEED_ROWS {
        // Seed 004's two ClickHouse figures, as points.
        let seed: Vec<(f64, f64)> = SEED_FIGURES
            .iter()
            .filter(|f| f.0.starts_with("ClickHouse"))
            .filter_map(|f| f.2.parse().ok().map(|s| (f.1 as f64, s)))
            .collect();
        chart
            .draw_series(
                seed.iter()
                    .map(|&(x, y)| Cross::new((x, y), 6, BLACK.stroke_width(2))),
            )?
            .label("ClickHouse in seed 004 (M1, Docker)")
            .legend(|(x, y)| Cross::new((x + 9, y), 5, BLACK.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_the_same_for_every_system_and_spread_over_users_and_films() {
        let (users, films) = population(SEED_ROWS);
        assert_eq!(row(17, users, films), row(17, users, films));
        let mut seen_users = std::collections::HashSet::new();
        let mut seen_films = std::collections::HashSet::new();
        for i in 0..SEED_ROWS {
            let (u, f, t) = row(i, users, films);
            assert!(t < 7_200);
            seen_users.insert(u);
            seen_films.insert(f);
        }
        assert!(
            seen_users.len() as u64 > users * 9 / 10,
            "{}",
            seen_users.len()
        );
        assert!(seen_films.len() as u64 > films / 2, "{}", seen_films.len());
    }

    #[test]
    fn answers_compare_by_their_numbers_not_their_film_ids() {
        let a =
            "1ec4cd73-2fd5-4f25-af68-b6595d279af2\t12\n2b5e3c1a-0d4f-4e7a-9c8b-3f2a1d0e9c8b\t3.5\n";
        let b = "3c6f4d2b-1e5a-4f8b-8d9c-4a3b2e1f0d9c\t3.50\n1ec4cd73-2fd5-4f25-af68-b6595d279af2\t12\n";
        assert_eq!(canonical(a), canonical(b));
        assert_ne!(canonical(a), canonical("x\t12\n"));
    }

    #[test]
    fn an_insert_statement_holds_exactly_its_rows() {
        let sql = insert_sql(5, 8, 10, 1000);
        assert!(sql.starts_with("INSERT INTO views (user_id, film_id, film_timestamp) VALUES ('"));
        assert_eq!(sql.matches("('").count(), 3);
    }
}
