//! `ugc-bench`: the benchmark suite, a binary of its own so that the product does not
//! ship it.
//!
//! Every figure is measured against a baseline in the same run on the same machine:
//!
//! 1. single-event ingest req/s vs an empty handler on the same HTTP stack;
//! 2. batch ingest events/s vs appending the same encoded events straight to the log;
//! 3. loader rows/s vs the same events handed straight to the store's insert;
//! 4. freshness (2xx → visible to a query) at half the maximum rate vs on an idle server;
//! 5. peak RSS of the API under maximum load and of the loader draining a large backlog;
//! 6. RS256 ingest with the verified-token cache on vs off;
//! 7. content: a mixed load of ratings, reviews and bookmarks over HTTP on 10M seeded
//!    ratings vs the same statements through sqlx, on SQLite and PostgreSQL;
//! 8. analytics: each analytics route over 10M events on chDB vs the statement it ran,
//!    sent as an analyst's SQL.
//!
//! Systems under test run as child processes (`ugc serve` from the `ugc` binary beside
//! this one, or a hidden child of `ugc-bench`), so their memory and CPU can be read from `/proc` and each has its
//! own embedded ClickHouse engine (chDB allows one per process). The load generator runs
//! in this process.

mod chart;
mod children;
mod client;
mod kafka_engine;
mod load;
mod procs;
mod progress;
mod report;
mod study;
mod suite;
mod workload;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};

/// Options of `ugc-bench`. Unset numbers take the full suite's defaults, or the quick
/// run's with `--quick`. Servers the suite starts also read the usual `UGC_*` variables.
#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// Short phases and small volumes: checks that every scenario produces figures, not
    /// speed. Writes to a temporary directory unless --out is given.
    #[arg(long)]
    pub quick: bool,

    /// Directory for results.json, results.md and chart.svg [default: bench/results].
    #[arg(long)]
    pub out: Option<PathBuf>,

    /// Directory under which the runs keep their data (logs, stores), removed at the end
    /// [default: the system's temporary directory].
    #[arg(long)]
    pub work_dir: Option<PathBuf>,

    /// Seconds each load phase is measured [default: 15; quick: 2].
    #[arg(long)]
    pub duration_secs: Option<f64>,

    /// Seconds of load before measuring starts [default: 3; quick: 0.5].
    #[arg(long)]
    pub warmup_secs: Option<f64>,

    /// Keep-alive HTTP/1.1 connections of the load generator [default: 64; quick: 16].
    #[arg(long)]
    pub connections: Option<usize>,

    /// Distinct users, each with its own signed token [default: 1000; quick: 50].
    #[arg(long)]
    pub users: Option<usize>,

    /// Events per batch request in scenario 2 [default: 100; quick: 50].
    #[arg(long)]
    pub batch_size: Option<usize>,

    /// Events in the backlog the loader drains in scenarios 3 and 5 [default: 10000000;
    /// quick: 20000].
    #[arg(long)]
    pub backlog: Option<u64>,

    /// Events in the backlog of the runs on a Kafka-protocol broker, whose memory-backed
    /// test broker holds it all [default: 10000000; quick: 20000].
    #[arg(long)]
    pub server_backlog: Option<u64>,

    /// Only these backends (comma-separated: embedded, kafka, servers for scenarios 1-6;
    /// sqlite, postgres for the content scenario 7; analytics for scenario 8) [default: all; kafka and servers run
    /// when the broker and the server are installed].
    #[arg(long, value_delimiter = ',')]
    pub backends: Vec<String>,

    /// Divide the content scenario's data by this: 1 seeds 10,000,000 ratings over
    /// 100,000 films and 1,000,000 users, 1,000,000 reviews and 1,000,000 bookmarks; 100
    /// is a 1/100 run [default: 1; quick: 1000].
    #[arg(long)]
    pub content_scale: Option<u64>,

    /// Events the analytics scenario (8) loads before asking [default: 10000000; quick:
    /// 20000].
    #[arg(long)]
    pub analytics_events: Option<u64>,

    /// Keep scenario 8's server data here, and reuse it when it already holds the same
    /// number of events (loading 10,000,000 takes minutes) [default: a fresh dir each run].
    #[arg(long)]
    pub analytics_data: Option<PathBuf>,

    /// Threads of the load generator; the rest of the machine serves [default: 1].
    #[arg(long)]
    pub client_threads: Option<usize>,

    /// The `ugc` binary the suite runs as the system under test [default: `ugc` beside
    /// this binary].
    #[arg(long)]
    pub ugc_bin: Option<PathBuf>,

    /// Run the storage study instead of the suite: seed 004's OLAP test (inserts at
    /// batch sizes 10 to 100,000, five queries) on chDB, a ClickHouse server, a cluster
    /// and PostgreSQL, then larger sizes. Writes to bench/results/study unless --out.
    #[arg(long)]
    pub study: bool,

    /// Rows of the study's sizes; the first is loaded at every batch size, the others in
    /// batches of 100,000 [default: 644684,10000000,100000000; quick: 20000,100000].
    #[arg(long, value_delimiter = ',')]
    pub study_sizes: Vec<u64>,

    /// Systems of the study (chdb, server, cluster, postgres), and `kafka-engine` for
    /// ClickHouse's Kafka engine against ugc's loader on one server (written to
    /// kafka-engine.md and .json beside the rest) [default: all].
    #[arg(long, value_delimiter = ',')]
    pub study_systems: Vec<String>,

    /// Records of the topic the study's Kafka engine and ugc's loader each load
    /// [default: 1000000; quick: 20000].
    #[arg(long)]
    pub study_kafka_records: Option<u64>,

    /// Records of the topic the Kafka engine loads once per kill -9 of the server, one
    /// record per batch (ugc's loader reads the loads' topic then) [default: 1000000;
    /// quick: 20000].
    #[arg(long)]
    pub study_kafka_crash_records: Option<u64>,

    /// Systems that also run the sizes above 10,000,000 [default: chdb,server].
    #[arg(long, value_delimiter = ',')]
    pub study_large_systems: Vec<String>,

    /// Seconds of inserting after which a batch-size step stops and its total is
    /// projected from its rate [default: 240; quick: 5].
    #[arg(long)]
    pub study_step_secs: Option<f64>,

    #[arg(long, hide = true, value_enum)]
    pub internal_child: Option<ChildKind>,
    #[arg(long, hide = true)]
    pub internal_dir: Option<PathBuf>,
    /// A child's log is a Kafka topic on these brokers (else the embedded log in its dir).
    #[arg(long, hide = true)]
    pub internal_kafka: Option<String>,
    #[arg(long, hide = true)]
    pub internal_topic: Option<String>,
    /// A child's store is this ClickHouse server (else chDB in its dir).
    #[arg(long, hide = true)]
    pub internal_clickhouse: Option<String>,
    #[arg(long, hide = true)]
    pub internal_database: Option<String>,
}

/// What a child process of the suite does (hidden: only the suite starts these).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ChildKind {
    /// An axum handler that reads the body and answers 202: the ceiling of scenario 1.
    EmptyServer,
    /// Appends a backlog of events straight to a log, and writes the same records to a file.
    FillLog,
    /// Drains the log into a fresh store with the product's loader.
    Loader,
    /// Inserts the same events straight into a fresh store through `EventStore::insert`.
    StraightInsert,
}

/// The resolved settings of one run.
#[derive(Clone, Debug)]
pub(crate) struct Plan {
    pub quick: bool,
    pub out: PathBuf,
    pub work_dir: PathBuf,
    pub warmup: Duration,
    pub duration: Duration,
    pub connections: usize,
    pub users: usize,
    pub batch_size: usize,
    pub backlog: u64,
    pub server_backlog: u64,
    /// The content scenario's data is the full figure divided by this.
    pub content_scale: u64,
    /// Events scenario 8 loads before the analytics routes are asked.
    pub analytics_events: u64,
    /// Where scenario 8 keeps its loaded server data between runs.
    pub analytics_data: Option<PathBuf>,
    /// Backends to run by their short names; empty: all.
    pub backends: Vec<String>,
    pub client_threads: usize,
    /// Sequential probes on an idle server: the freshness baseline.
    pub idle_probes: usize,
    /// How often a probe event is sent under load.
    pub probe_every: Duration,
    /// How often the prober asks whether its events are visible.
    pub poll_every: Duration,
    /// Requests pre-built for each HTTP phase (the generator cycles through them).
    pub pool: usize,
    /// This binary, for the hidden children.
    pub exe: PathBuf,
    /// The product's binary, for `ugc serve`.
    pub ugc_exe: PathBuf,
    pub chdb_lib: PathBuf,
}

impl Plan {
    fn new(a: &BenchArgs) -> anyhow::Result<Self> {
        let q = a.quick;
        let pick = |full: f64, quick: f64| if q { quick } else { full };
        let out = match (&a.out, q) {
            (Some(o), _) => o.clone(),
            (None, false) => PathBuf::from("bench/results"),
            // A quick run checks the harness; it must not overwrite the committed results.
            (None, true) => {
                std::env::temp_dir().join(format!("ugc-bench-quick-{}", std::process::id()))
            }
        };
        let plan = Plan {
            quick: q,
            out,
            work_dir: a.work_dir.clone().unwrap_or_else(std::env::temp_dir),
            warmup: Duration::from_secs_f64(a.warmup_secs.unwrap_or(pick(3.0, 0.5))),
            duration: Duration::from_secs_f64(a.duration_secs.unwrap_or(pick(15.0, 2.0))),
            connections: a.connections.unwrap_or(if q { 16 } else { 64 }).max(1),
            users: a.users.unwrap_or(if q { 50 } else { 1000 }).max(1),
            batch_size: a
                .batch_size
                .unwrap_or(if q { 50 } else { 100 })
                .clamp(1, 1000),
            backlog: a
                .backlog
                .unwrap_or(if q { 20_000 } else { 10_000_000 })
                .max(1),
            server_backlog: a
                .server_backlog
                .unwrap_or(if q { 20_000 } else { 10_000_000 })
                .max(1),
            content_scale: a.content_scale.unwrap_or(if q { 1000 } else { 1 }).max(1),
            analytics_events: a
                .analytics_events
                .unwrap_or(if q { 20_000 } else { 10_000_000 })
                .max(100),
            analytics_data: a.analytics_data.clone(),
            backends: a.backends.clone(),
            client_threads: a.client_threads.unwrap_or(1).max(1),
            idle_probes: if q { 5 } else { 20 },
            probe_every: Duration::from_millis(100),
            poll_every: Duration::from_millis(20),
            pool: if q { 1024 } else { 8192 },
            exe: std::env::current_exe()?,
            ugc_exe: match &a.ugc_bin {
                Some(p) => p.clone(),
                None => std::env::current_exe()?.with_file_name("ugc"),
            },
            chdb_lib: std::env::var_os("UGC_CHDB_LIB")
                .map(PathBuf::from)
                .unwrap_or_else(ugc_chdb::default_library_path),
        };
        anyhow::ensure!(
            plan.duration > Duration::ZERO,
            "--duration-secs must be positive"
        );
        anyhow::ensure!(
            plan.ugc_exe.exists(),
            "the ugc binary is not at {}: build it (cargo build --release -p ugc), or give --ugc-bin",
            plan.ugc_exe.display()
        );
        anyhow::ensure!(
            plan.chdb_lib.exists(),
            "libchdb.so not found at {}: run scripts/fetch-chdb, or set UGC_CHDB_LIB",
            plan.chdb_lib.display()
        );
        Ok(plan)
    }
}

/// Runs the suite (or, in a child process, its part) and writes the results.
pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    if let Some(kind) = args.internal_child {
        return children::run(kind, &args);
    }
    if args.study {
        let plan = study::StudyPlan::new(&args)?;
        let command = std::env::args().collect::<Vec<_>>().join(" ");
        return study::run(&plan, command);
    }
    let plan = Plan::new(&args)?;
    suite::run(&plan)
}
