//! The hidden children of `ugc-bench`, each run in a child process of the suite. A child
//! reports to the suite with JSON lines on stdout (`ready`, `progress`, `result`) and
//! exits when its stdin closes, so nothing outlives a suite that died.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use axum::Router;
use axum::body::Bytes;
use axum::http::StatusCode;
use axum::routing::{get, post};
use serde_json::{Value, json};
use tokio::sync::watch;
use ugc_loader::{Loader, LoaderConfig};
use ugc_log::embedded::{EmbeddedLog, EmbeddedLogConfig};
use ugc_log::kafka::{KafkaConfig, KafkaLog, TopicLayout};
use ugc_log::{LogConsumer, LogProducer};
use ugc_model::Envelope;
use ugc_store::chdb::{ChdbConfig, ChdbStore};
use ugc_store::clickhouse::{ClickHouseConfig, ClickHouseStore};
use ugc_store::{DATABASE, EventStore, LogPosition, QueryLimits, StoreBatch};

use crate::procs::status_bytes;
use crate::workload::{Rng, Workload, record};
use crate::{BenchArgs, ChildKind};

/// Records per append while filling a backlog (one fsync each).
const FILL_CHUNK: u64 = 10_000;

/// Events per `EventStore::insert` call of the straight insert: large enough that the
/// store makes few parts, small enough that a chunk's rows fit in memory.
const STRAIGHT_CHUNK: usize = 500_000;

pub fn say(v: Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{v}");
    let _ = out.flush();
}

pub fn run(kind: ChildKind, args: &BenchArgs) -> anyhow::Result<()> {
    std::thread::spawn(|| {
        let mut sink = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut sink);
        std::process::exit(0);
    });
    let dir = args
        .internal_dir
        .clone()
        .context("--internal-dir is required")?;
    match kind {
        ChildKind::EmptyServer => empty_server(),
        ChildKind::FillLog => fill_log(
            &dir,
            args.backlog.unwrap_or(1),
            args.users.unwrap_or(1),
            &Backends::of(args),
        ),
        ChildKind::Loader => loader(&dir, args.backlog.unwrap_or(1), &Backends::of(args)),
        ChildKind::StraightInsert => {
            straight_insert(&dir, args.backlog.unwrap_or(1), &Backends::of(args))
        }
    }
}

fn rss() -> u64 {
    status_bytes(std::process::id(), "VmRSS").unwrap_or(0)
}

fn peak_rss() -> u64 {
    status_bytes(std::process::id(), "VmHWM").unwrap_or(0)
}

/// The ceiling of scenario 1: the same runtime, axum and hyper as `ugc serve`, and a
/// handler that reads the body and does nothing with it.
fn empty_server() -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(async {
            let app = Router::new()
                .route(
                    "/api/v1/events",
                    post(|_body: Bytes| async { StatusCode::ACCEPTED }),
                )
                .route("/readyz", get(|| async { StatusCode::OK }));
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            say(json!({"ready": listener.local_addr()?.to_string()}));
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .await?;
            Ok(())
        })
}

/// The backlog's log records as appended, one encoded envelope a line.
pub fn envelopes_file(dir: &Path) -> PathBuf {
    dir.join("envelopes.jsonl")
}

/// Where a role's log and store live: the embedded ones in its directory by default, or
/// a topic on a Kafka-protocol broker and a database on a ClickHouse server.
pub struct Backends {
    kafka: Option<KafkaConfig>,
    clickhouse: Option<ClickHouseConfig>,
}

impl Backends {
    fn of(args: &BenchArgs) -> Self {
        Self {
            kafka: args.internal_kafka.as_ref().map(|brokers| {
                kafka_config(
                    brokers,
                    args.internal_topic.as_deref().unwrap_or("bench.backlog"),
                )
            }),
            clickhouse: args
                .internal_clickhouse
                .as_ref()
                .map(|url| ClickHouseConfig {
                    database: args
                        .internal_database
                        .clone()
                        .unwrap_or_else(|| DATABASE.into()),
                    request_timeout: Duration::from_secs(600),
                    ..ClickHouseConfig::new(url)
                }),
        }
    }

    /// The store's database name (the embedded store has one database).
    fn database(&self) -> &str {
        self.clickhouse
            .as_ref()
            .map_or(DATABASE, |c| c.database.as_str())
    }

    /// A fresh store (`name` is the embedded one's directory), migrated.
    async fn store(&self, dir: &Path, name: &str) -> anyhow::Result<Arc<dyn EventStore>> {
        let store: Arc<dyn EventStore> = match &self.clickhouse {
            Some(c) => Arc::new(ClickHouseStore::connect(c.clone()).await?),
            None => {
                let cfg = ChdbConfig {
                    library: chdb_library(),
                    data_dir: dir.join(name),
                    engine_args: engine_args(),
                    analyst_max_time: Duration::from_secs(60),
                };
                Arc::new(tokio::task::spawn_blocking(move || ChdbStore::open(&cfg)).await??)
            }
        };
        store.migrate().await?;
        Ok(store)
    }
}

/// Partitions of the suite's topics: one broker shares the machine's two cores, and with
/// one loader, fewer, fuller partitions load and ingest faster (12 partitions measured
/// 13.2k single-event req/s against 18.5k with 3).
pub const BENCH_PARTITIONS: i32 = 3;

/// A topic on a one-broker cluster, with the product's producer and consumer settings;
/// appends of whole backlog chunks get a deadline that fits them.
pub fn kafka_config(brokers: &str, topic: &str) -> KafkaConfig {
    KafkaConfig {
        brokers: brokers.into(),
        layout: TopicLayout::Single {
            topic: topic.into(),
        },
        dead_letter_topic: format!("{topic}.dlq"),
        partitions: BENCH_PARTITIONS,
        replication_factor: 1,
        min_insync_replicas: 1,
        delivery_timeout: Duration::from_secs(60),
        group_id: format!("{topic}.loader"),
        ..KafkaConfig::default()
    }
}

/// A Kafka log with its topics created.
pub async fn kafka_log(cfg: KafkaConfig) -> anyhow::Result<KafkaLog> {
    let log = KafkaLog::new(cfg)?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while let Err(e) = log.ensure_topics().await {
        if Instant::now() > deadline {
            bail!("cannot create the topics: {e}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(log)
}

/// The product's producer on a topic (`kafka`), or on a fresh embedded log in `dir`,
/// whose handle is returned too: it must outlive the producer.
pub async fn producer(
    kafka: Option<&KafkaConfig>,
    dir: &Path,
) -> anyhow::Result<(Arc<dyn LogProducer>, Option<EmbeddedLog>)> {
    Ok(match kafka {
        Some(cfg) => (Arc::new(kafka_log(cfg.clone()).await?.producer()?), None),
        None => {
            let log = EmbeddedLog::open(&dir.join("log.redb"), EmbeddedLogConfig::default())?;
            (Arc::new(log.producer()), Some(log))
        }
    })
}

/// Appends `n` events straight to a fresh log (in `dir`, or a Kafka topic), exactly as
/// the API would encode them, and writes the same records to a file (for the straight
/// insert).
fn fill_log(dir: &Path, n: u64, users: usize, backends: &Backends) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let (producer, embedded) = rt.block_on(producer(backends.kafka.as_ref(), dir))?;
    let (tx, rx) = std::sync::mpsc::sync_channel(4);
    let gen_dir = dir.to_owned();
    // Building events runs beside the appends, so the log's fsyncs overlap with it.
    let generator = std::thread::spawn(move || -> anyhow::Result<()> {
        let w = Workload::new(users, false)?;
        let mut envelopes =
            BufWriter::with_capacity(1 << 20, File::create(envelopes_file(&gen_dir))?);
        let mut rng = Rng::new(0xf111);
        let mut offset = 0u64;
        while offset < n {
            let k = FILL_CHUNK.min(n - offset);
            let mut batch = Vec::with_capacity(k as usize);
            for _ in 0..k {
                let user = &w.users[rng.below(w.users.len() as u64) as usize];
                let rec = record(&w.envelope(&w.event(&mut rng), user)?);
                envelopes.write_all(&rec.payload)?;
                envelopes.write_all(b"\n")?;
                batch.push(rec);
            }
            offset += k;
            if tx.send(batch).is_err() {
                break;
            }
        }
        envelopes.flush()?;
        Ok(())
    });
    let t0 = Instant::now();
    let mut done = 0u64;
    let mut reported = Instant::now();
    for batch in rx {
        done += batch.len() as u64;
        rt.block_on(producer.append(batch))?;
        if reported.elapsed() >= Duration::from_millis(250) {
            say(json!({"progress": done}));
            reported = Instant::now();
        }
    }
    generator
        .join()
        .map_err(|_| anyhow::anyhow!("the event generator panicked"))??;
    let secs = t0.elapsed().as_secs_f64();
    drop(producer);
    if let Some(log) = embedded {
        drop(log);
        close_cleanly(&dir.join("log.redb"))?;
    }
    if done != n {
        bail!("appended {done} of {n} events");
    }
    let size = |p: PathBuf| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    say(json!({"result": {
        "events": done,
        "secs": secs,
        "log_bytes": size(dir.join("log.redb")),
        "envelopes_bytes": size(envelopes_file(dir)),
    }}));
    Ok(())
}

/// Waits until the log's writer thread has closed the file. A process that exits before
/// that leaves redb a file to repair at the next open, and the loader would measure the
/// repair instead of the drain.
fn close_cleanly(path: &Path) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        match redb::Database::open(path) {
            Ok(db) => {
                drop(db);
                return Ok(());
            }
            Err(redb::DatabaseError::DatabaseAlreadyOpen) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => bail!("cannot reopen {}: {e}", path.display()),
        }
    }
}

fn chdb_library() -> PathBuf {
    std::env::var_os("UGC_CHDB_LIB")
        .map(PathBuf::from)
        .unwrap_or_else(ugc_chdb::default_library_path)
}

/// The engine arguments `ugc serve` passes (its memory cap), so both sides run alike.
fn engine_args() -> Vec<String> {
    let max = std::env::var("UGC_CHDB_MAX_MEMORY").unwrap_or_else(|_| "2000000000".into());
    vec![format!("--max_server_memory_usage={max}")]
}

fn env_or<T: std::str::FromStr>(var: &str, default: T) -> T {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Scenario 3 (and 5): the product's loader drains the backlog into a fresh store, with
/// the settings `ugc serve` would use; memory is sampled throughout. The rate counts
/// from the first stored batch, so a consumer group's join is not part of it.
fn loader(dir: &Path, n: u64, backends: &Backends) -> anyhow::Result<()> {
    let base = rss();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(async move {
            let store = backends.store(dir, "chdb-loader").await?;
            let with_engine = rss();
            let opening = Instant::now();
            let (consumer, _embedded): (Box<dyn LogConsumer>, Option<EmbeddedLog>) =
                match &backends.kafka {
                    Some(cfg) => (Box::new(kafka_log(cfg.clone()).await?.consumer()?), None),
                    None => {
                        let log =
                            EmbeddedLog::open(&dir.join("log.redb"), EmbeddedLogConfig::default())?;
                        (Box::new(log.consumer()), Some(log))
                    }
                };
            let log_open_secs = opening.elapsed().as_secs_f64();
            let idle = rss();
            let defaults = LoaderConfig::default();
            let loader = Loader::new(
                consumer,
                store.clone(),
                LoaderConfig {
                    batch_max_records: env_or("UGC_LOADER_BATCH_MAX", defaults.batch_max_records),
                    batch_max_wait: Duration::from_millis(env_or(
                        "UGC_LOADER_BATCH_WAIT_MS",
                        defaults.batch_max_wait.as_millis() as u64,
                    )),
                    ..defaults
                },
            );
            let status = loader.status();
            let (stop, stop_rx) = watch::channel(false);
            let t0 = Instant::now();
            let task = tokio::spawn(loader.run(stop_rx));
            // Generous: a slow debug build on a busy machine still finishes.
            let deadline = t0 + Duration::from_secs(600 + n / 1000);
            let mut timeline = Vec::new();
            let mut last_sample = t0;
            let mut first: Option<(Instant, u64)> = None;
            let handled = || {
                status.rows_loaded.load(Ordering::Relaxed)
                    + status.dead_letters.load(Ordering::Relaxed)
                    + status.duplicates_dropped.load(Ordering::Relaxed)
            };
            loop {
                let done = handled();
                if done > 0 && first.is_none() {
                    first = Some((Instant::now(), done));
                }
                if done >= n {
                    break;
                }
                if task.is_finished() {
                    bail!("the loader stopped after {done} of {n} events");
                }
                if Instant::now() > deadline {
                    bail!(
                        "the loader handled {done} of {n} events by the deadline; last error: {:?}",
                        status.last_error()
                    );
                }
                if last_sample.elapsed() >= Duration::from_millis(250) {
                    last_sample = Instant::now();
                    let t = t0.elapsed().as_secs_f64();
                    timeline.push(json!([t, done, rss()]));
                    say(json!({"progress": done}));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let end = Instant::now();
            timeline.push(json!([(end - t0).as_secs_f64(), handled(), rss()]));
            let _ = stop.send(true);
            let _ = task.await;
            let stored = count_events(store.as_ref(), backends.database()).await?;
            // With one batch holding everything, time from the start instead.
            let (from, before) = match first {
                Some((at, rows)) if rows < n => (at, rows),
                _ => (t0, 0),
            };
            say(json!({"result": {
                "rows": status.rows_loaded.load(Ordering::Relaxed),
                "dead_letters": status.dead_letters.load(Ordering::Relaxed),
                "duplicates": status.duplicates_dropped.load(Ordering::Relaxed),
                "stored": stored,
                "secs": (end - from).as_secs_f64(),
                "rows_timed": n - before,
                "first_batch_secs": (from - t0).as_secs_f64(),
                "rss_base": base,
                "rss_with_engine": with_engine,
                "rss_idle": idle,
                "log_open_secs": log_open_secs,
                "rss_peak": peak_rss(),
                "timeline": timeline,
            }}));
            Ok(())
        })
}

/// `count()` of the events table; servers of 18.16 quote 64-bit numbers in JSON.
async fn count_events(store: &dyn EventStore, database: &str) -> anyhow::Result<u64> {
    let rows = store
        .select(
            &format!("SELECT count() AS n FROM {database}.events"),
            QueryLimits {
                max_rows: 1,
                max_time: Duration::from_secs(60),
            },
        )
        .await?;
    rows.rows
        .first()
        .and_then(|r| r.get("n"))
        .and_then(crate::workload::as_count)
        .context("count() gave no number")
}

/// Scenario 3's baseline: the very records of the backlog handed straight to a fresh
/// store through `EventStore::insert`, [`STRAIGHT_CHUNK`] events a call (the store
/// derives the same rows as for the loader and inserts each table's in one statement),
/// with no log, no per-batch commit and no duplicate window in between. Only the insert
/// calls are timed, not reading the file.
fn straight_insert(dir: &Path, n: u64, backends: &Backends) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let store = rt.block_on(backends.store(dir, "chdb-straight"))?;
    let mut lines =
        BufReader::with_capacity(1 << 20, File::open(envelopes_file(dir))?).split(b'\n');
    let mut offset = 0u64;
    let mut busy = Duration::ZERO;
    loop {
        let first = offset;
        let mut events = Vec::with_capacity(STRAIGHT_CHUNK);
        for line in lines.by_ref().take(STRAIGHT_CHUNK) {
            let env = Envelope::decode(&line?).map_err(anyhow::Error::msg)?;
            // Offsets in append order: the embedded log's exactly, a topic's roughly (it
            // spreads users over partitions); the rows' size is what matters.
            events.push((
                LogPosition {
                    partition: 0,
                    offset,
                },
                env,
            ));
            offset += 1;
        }
        if events.is_empty() {
            break;
        }
        let batch = StoreBatch {
            token: format!("straight:{first}-{offset}"),
            events,
            dead_letters: Vec::new(),
        };
        let t0 = Instant::now();
        rt.block_on(store.insert(&batch))
            .context("the straight insert failed")?;
        busy += t0.elapsed();
        say(json!({"progress": offset}));
    }
    let stored = rt.block_on(count_events(store.as_ref(), backends.database()))?;
    if stored != n {
        bail!("the straight insert stored {stored} of {n} rows");
    }
    say(json!({"result": {"rows": stored, "secs": busy.as_secs_f64(), "rss_peak": peak_rss()}}));
    Ok(())
}
