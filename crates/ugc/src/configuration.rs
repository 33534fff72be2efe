//! Every knob of the binary, from (highest first) command-line flags, `UGC_*`
//! environment variables, a TOML file (`--config`), and built-in defaults.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::parser::ValueSource;
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use ipnet::IpNet;

#[derive(Parser, Debug)]
#[command(
    name = "ugc",
    version,
    about = "User-generated-content event platform of an online cinema",
    long_about = "ugc takes viewer events over HTTP (JWT-authenticated), makes them durable in a log, \
and loads them exactly once into a ClickHouse engine for queries.\n\n\
With no command it runs all-in-one: ingest API, embedded log, loader and embedded \
store (chDB), all data under --data-dir.\n\n\
Every option can also be set by its UGC_* environment variable or in a TOML file given \
with --config (keys are the option names, e.g. `listen = \"0.0.0.0:8000\"`). \
Precedence: flag, then environment, then file, then default."
)]
pub struct Cli {
    #[command(flatten)]
    pub settings: Settings,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the platform (the default when no command is given).
    Serve,
    /// Print a development token signed with the configured HS256 secret.
    Token(TokenArgs),
    /// Is a running deployment healthy, and how far behind? Asks each instance's
    /// /readyz and /metrics; exits non-zero when anything is unhealthy.
    Status(crate::status::StatusArgs),
    /// Print the DDL that makes the ClickHouse server load the Kafka topic itself (a
    /// Kafka engine table and materialized views into `events` and `hourly`); --apply
    /// creates it.
    KafkaEngineDdl(crate::kafka_engine::KafkaEngineArgs),
}

#[derive(Args, Debug)]
pub struct TokenArgs {
    /// The user the token is for (the `sub` claim).
    #[arg(long)]
    pub user: String,
    /// A role to grant (repeatable): `admin` or `analyst` may run SQL.
    #[arg(long = "role")]
    pub roles: Vec<String>,
    /// Lifetime of the token in seconds.
    #[arg(long, default_value_t = 12 * 3600)]
    pub ttl_secs: u64,
    /// Print a link to this film's player page (`http://<listen>/player/<film>#token=…`)
    /// instead of the bare token.
    #[arg(long, value_name = "FILM_ID")]
    pub player: Option<uuid::Uuid>,
}

#[derive(Args, Debug, Clone)]
pub struct Settings {
    /// TOML file with settings; flags and environment override it.
    #[arg(long, env = "UGC_CONFIG", global = true)]
    pub config: Option<PathBuf>,

    /// Address the HTTP API listens on.
    #[arg(
        long,
        env = "UGC_LISTEN",
        default_value = "127.0.0.1:8000",
        global = true
    )]
    pub listen: SocketAddr,

    /// Directory holding all data of the all-in-one mode (log, store, generated key).
    #[arg(long, env = "UGC_DATA_DIR", default_value = "./data", global = true)]
    pub data_dir: PathBuf,

    /// HS256 shared secret (at least 16 bytes) tokens are verified with. When no key at
    /// all is configured, one is generated into <data-dir>/jwt-secret.
    #[arg(long, env = "UGC_JWT_SECRET", hide_env_values = true, global = true)]
    pub jwt_secret: Option<String>,

    /// PEM file with the auth service's public key (RSA or EC) for RS256/ES256 tokens.
    #[arg(long, env = "UGC_JWT_PUBLIC_KEY", global = true)]
    pub jwt_public_key: Option<PathBuf>,

    /// JWKS file (`{"keys": [...]}`) with the auth service's public keys.
    #[arg(long, env = "UGC_JWT_JWKS", global = true)]
    pub jwt_jwks: Option<PathBuf>,

    /// Required `iss` claim, if set.
    #[arg(long, env = "UGC_JWT_ISSUER", global = true)]
    pub jwt_issuer: Option<String>,

    /// Required `aud` claim, if set.
    #[arg(long, env = "UGC_JWT_AUDIENCE", global = true)]
    pub jwt_audience: Option<String>,

    /// Clock skew tolerated on `exp` and `nbf`, in seconds.
    #[arg(long, env = "UGC_JWT_LEEWAY_SECS", default_value_t = 30, global = true)]
    pub jwt_leeway_secs: u64,

    /// Verified tokens remembered (by hash, until their `exp`), so that RS256/ES256
    /// signatures are checked once per token rather than once per request; 0 turns the
    /// cache off.
    #[arg(
        long,
        env = "UGC_JWT_CACHE_SIZE",
        default_value_t = 100_000,
        global = true
    )]
    pub jwt_cache_size: usize,

    /// Events per second each user may send to ingest (canonical and seed routes);
    /// beyond it, 429 with Retry-After. Unset: no limit.
    #[arg(long, env = "UGC_RATE_LIMIT_PER_USER", value_parser = parse_rate, global = true)]
    pub rate_limit_per_user: Option<f64>,

    /// Events a user may send at once after a quiet spell (default: one second's worth).
    #[arg(long, env = "UGC_RATE_LIMIT_BURST", value_parser = clap::value_parser!(u32).range(1..), global = true)]
    pub rate_limit_burst: Option<u32>,

    /// Proxies (IPs or CIDRs, comma-separated) whose X-Forwarded-For is trusted.
    #[arg(
        long,
        env = "UGC_TRUSTED_PROXIES",
        value_delimiter = ',',
        value_parser = parse_net,
        global = true
    )]
    pub trusted_proxies: Vec<IpNet>,

    /// Origins whose pages may call the API from the browser (comma-separated, e.g.
    /// `https://cinema.example`); CORS preflights included. Empty: none.
    #[arg(long, env = "UGC_CORS_ORIGINS", value_delimiter = ',', value_parser = parse_origin, global = true)]
    pub cors_origins: Vec<String>,

    /// Folder of films for the player page: `<film_id>/<height>.mp4` or `.webm`, served
    /// under /media/. Unset (or a film with no files): the built-in sample plays.
    #[arg(long, env = "UGC_MEDIA_DIR", global = true)]
    pub media_dir: Option<PathBuf>,

    /// Largest accepted request body, in bytes.
    #[arg(long, env = "UGC_MAX_BODY_BYTES", default_value_t = 1024 * 1024, global = true)]
    pub max_body_bytes: usize,

    /// Most events in one batch request.
    #[arg(long, env = "UGC_MAX_BATCH", default_value_t = 1000, global = true)]
    pub max_batch: usize,

    /// Append requests that may wait for the log writer; beyond it the API answers 503.
    #[arg(long, env = "UGC_LOG_QUEUE", default_value_t = 8192, global = true)]
    pub log_queue: usize,

    /// Most records written under one fsync (group commit).
    #[arg(
        long,
        env = "UGC_LOG_GROUP_MAX",
        default_value_t = 50_000,
        global = true
    )]
    pub log_group_max: usize,

    /// How long an append waits for durability before the API answers 503, in ms.
    #[arg(
        long,
        env = "UGC_LOG_ACK_TIMEOUT_MS",
        default_value_t = 5000,
        global = true
    )]
    pub log_ack_timeout_ms: u64,

    /// Most events per loader insert.
    #[arg(
        long,
        env = "UGC_LOADER_BATCH_MAX",
        default_value_t = 20_000,
        global = true
    )]
    pub loader_batch_max: usize,

    /// Longest an event waits for its loader batch to fill, in ms.
    #[arg(
        long,
        env = "UGC_LOADER_BATCH_WAIT_MS",
        default_value_t = 200,
        global = true
    )]
    pub loader_batch_wait_ms: u64,

    /// A loader that owns no log partition, or loads nothing while records wait in its
    /// partitions, for this many seconds answers /readyz with 503 (a consumer group stuck
    /// in a rebalance shows this way); 0: never.
    #[arg(
        long,
        env = "UGC_LOADER_STALL_READY_SECS",
        default_value_t = 60,
        global = true
    )]
    pub loader_stall_ready_secs: u64,

    /// What this process runs: `all` (ingest API and loader), `api` (ingest and reads) or
    /// `loader` (log to store; serves only /healthz and /readyz). `api` and `loader` run
    /// apart only with the Kafka log and a shared store (--store clickhouse).
    // Not global: `ugc token --role` names a token's roles.
    #[arg(long, env = "UGC_ROLE", value_enum, default_value_t = ProcessRole::All)]
    pub role: ProcessRole,

    /// The event log: `embedded` (a file under --data-dir) or `kafka` (--kafka-brokers).
    #[arg(long, env = "UGC_LOG_BACKEND", value_enum, default_value_t = LogBackend::Embedded, global = true)]
    pub log_backend: LogBackend,

    /// Kafka bootstrap brokers, comma-separated `host:port`.
    #[arg(
        long,
        env = "UGC_KAFKA_BROKERS",
        default_value = "127.0.0.1:9092",
        global = true
    )]
    pub kafka_brokers: String,

    /// Kafka topic of every event; with --kafka-topic-mode per-type, the prefix of the
    /// topics `<prefix>.<event type>`.
    #[arg(
        long,
        env = "UGC_KAFKA_TOPIC",
        default_value = "ugc.events",
        global = true
    )]
    pub kafka_topic: String,

    /// `single` (one topic for every event type) or `per-type` (one topic per type).
    #[arg(long, env = "UGC_KAFKA_TOPIC_MODE", value_enum, default_value_t = TopicMode::Single, global = true)]
    pub kafka_topic_mode: TopicMode,

    /// Kafka topic the loader copies undecodable records to.
    #[arg(
        long,
        env = "UGC_KAFKA_DLQ_TOPIC",
        default_value = "ugc.events.dlq",
        global = true
    )]
    pub kafka_dlq_topic: String,

    /// Partitions of the Kafka topics created at start (existing topics are kept as they are).
    #[arg(
        long,
        env = "UGC_KAFKA_PARTITIONS",
        default_value_t = 12,
        global = true
    )]
    pub kafka_partitions: i32,

    /// Replication factor of the Kafka topics created at start.
    #[arg(
        long,
        env = "UGC_KAFKA_REPLICATION_FACTOR",
        default_value_t = 3,
        global = true
    )]
    pub kafka_replication_factor: i32,

    /// `min.insync.replicas` of the Kafka topics created at start: an event is
    /// acknowledged once this many replicas have it.
    #[arg(
        long,
        env = "UGC_KAFKA_MIN_INSYNC_REPLICAS",
        default_value_t = 2,
        global = true
    )]
    pub kafka_min_insync_replicas: i32,

    /// Codec of produced Kafka batches.
    #[arg(long, env = "UGC_KAFKA_COMPRESSION", value_enum, default_value_t = KafkaCompression::Lz4, global = true)]
    pub kafka_compression: KafkaCompression,

    /// How long the Kafka producer waits to fill a batch, in ms. Every 2xx waits for its
    /// delivery report, so this adds to each request's latency; under load batches fill
    /// anyway (`ugc-bench`: 1 ms gave the most single-event req/s; see bench/README.md).
    #[arg(long, env = "UGC_KAFKA_LINGER_MS", default_value_t = 1, global = true)]
    pub kafka_linger_ms: u64,

    /// Largest Kafka produce batch per partition, in bytes.
    #[arg(
        long,
        env = "UGC_KAFKA_BATCH_BYTES",
        default_value_t = 1024 * 1024,
        global = true
    )]
    pub kafka_batch_bytes: usize,

    /// Events the Kafka producer may hold undelivered; beyond it the API answers 503.
    #[arg(
        long,
        env = "UGC_KAFKA_QUEUE_MESSAGES",
        default_value_t = 100_000,
        global = true
    )]
    pub kafka_queue_messages: usize,

    /// KiB the Kafka producer may hold undelivered; beyond it the API answers 503.
    #[arg(
        long,
        env = "UGC_KAFKA_QUEUE_KBYTES",
        default_value_t = 64 * 1024,
        global = true
    )]
    pub kafka_queue_kbytes: usize,

    /// Deadline of an event's delivery to Kafka (every in-sync replica), in ms; past it
    /// the API answers 503.
    #[arg(
        long,
        env = "UGC_KAFKA_DELIVERY_TIMEOUT_MS",
        default_value_t = 1000,
        global = true
    )]
    pub kafka_delivery_timeout_ms: u64,

    /// Consumer group the loaders share the partitions in.
    #[arg(
        long,
        env = "UGC_KAFKA_GROUP",
        default_value = "ugc-loader",
        global = true
    )]
    pub kafka_group: String,

    /// A loader silent this long loses its partitions to the other loaders, in ms.
    #[arg(
        long,
        env = "UGC_KAFKA_SESSION_TIMEOUT_MS",
        default_value_t = 10_000,
        global = true
    )]
    pub kafka_session_timeout_ms: u64,

    /// The rebalance timeout, in ms (`max.poll.interval.ms`): the longest a loader may go
    /// between polls of the log, and so the longest a rebalance waits for a loader that
    /// is alive but busy. A loader holding one batch for 80% of it (a store down that
    /// long) gives the batch up uninserted; a partition on which the group commits
    /// nothing for this long while records wait makes the loaders rejoin the group
    /// afresh. At least the session timeout.
    #[arg(
        long,
        env = "UGC_KAFKA_MAX_POLL_INTERVAL_MS",
        default_value_t = 20_000,
        global = true
    )]
    pub kafka_max_poll_interval_ms: u64,

    /// librdkafka debug contexts to log (e.g. `cgrp,consumer`), at debug level under the
    /// `librdkafka` target (so with `--log librdkafka=debug,info`); empty for none.
    #[arg(long, env = "UGC_KAFKA_DEBUG", default_value = "", global = true)]
    pub kafka_debug: String,

    /// Partition assignment in the loaders' group: `range` (eager: every loader releases
    /// all partitions at a rebalance, then they are dealt again) or `cooperative-sticky`
    /// (only moved partitions pause; needs a broker that relays owned partitions, as
    /// Apache Kafka does).
    #[arg(long, env = "UGC_KAFKA_ASSIGNMENT", value_enum, default_value_t = Assignment::Range, global = true)]
    pub kafka_assignment: Assignment,

    /// Path of libchdb.so [default: $UGC_CACHE_DIR or ~/.cache/ugc, then /chdb/<version>/libchdb.so,
    /// where scripts/fetch-chdb installs it].
    #[arg(long, env = "UGC_CHDB_LIB", global = true)]
    pub chdb_lib: Option<PathBuf>,

    /// Memory cap of the embedded ClickHouse engine, in bytes.
    #[arg(
        long,
        env = "UGC_CHDB_MAX_MEMORY",
        default_value_t = 2_000_000_000,
        global = true
    )]
    pub chdb_max_memory: u64,

    /// The analytics store: `chdb` (embedded, under --data-dir) or `clickhouse` (a
    /// server or cluster at --clickhouse-url).
    #[arg(long, env = "UGC_STORE", value_enum, default_value_t = StoreBackend::Chdb, global = true)]
    pub store: StoreBackend,

    /// HTTP interface of the ClickHouse server (with --store clickhouse).
    #[arg(
        long,
        env = "UGC_CLICKHOUSE_URL",
        default_value = "http://127.0.0.1:8123",
        global = true
    )]
    pub clickhouse_url: String,

    /// ClickHouse user [default: the server's default user].
    #[arg(long, env = "UGC_CLICKHOUSE_USER", global = true)]
    pub clickhouse_user: Option<String>,

    /// ClickHouse password.
    #[arg(
        long,
        env = "UGC_CLICKHOUSE_PASSWORD",
        hide_env_values = true,
        global = true
    )]
    pub clickhouse_password: Option<String>,

    /// ClickHouse database holding ugc's tables (analysts' SQL names it: `ugc.events`).
    #[arg(
        long,
        env = "UGC_CLICKHOUSE_DATABASE",
        default_value = "ugc",
        global = true
    )]
    pub clickhouse_database: String,

    /// Name of the ClickHouse cluster (in the servers' `remote_servers`): replicated
    /// tables on every node, DDL ON CLUSTER, reads and writes through Distributed tables.
    #[arg(long, env = "UGC_CLICKHOUSE_CLUSTER", global = true)]
    pub clickhouse_cluster: Option<String>,

    /// Where ratings and bookmarks live: unset for SQLite at `<data-dir>/content.db`,
    /// `postgres://user:password@host:port/db` for PostgreSQL (or `sqlite://PATH`).
    #[arg(long, env = "UGC_CONTENT_URL", hide_env_values = true, global = true)]
    pub content_url: Option<String>,

    /// Most rows an analyst's query returns.
    #[arg(
        long,
        env = "UGC_QUERY_MAX_ROWS",
        default_value_t = 10_000,
        global = true
    )]
    pub query_max_rows: u64,

    /// Time limit of an analyst's query, in seconds.
    #[arg(
        long,
        env = "UGC_QUERY_TIMEOUT_SECS",
        default_value_t = 10,
        global = true
    )]
    pub query_timeout_secs: u64,

    /// Largest page of the "continue watching" list.
    #[arg(
        long,
        env = "UGC_PROGRESS_PAGE_MAX",
        default_value_t = 100,
        global = true
    )]
    pub progress_page_max: u32,

    /// Seed-compatible routes to serve: `all`, `none`, or a list such as `000,004`.
    #[arg(long, env = "UGC_COMPAT", default_value = "all", global = true)]
    pub compat: ugc_edge::compat::Seeds,

    /// Accept tokenless events on seed 003's player routes (its player sends no token).
    /// Such events carry no user.
    #[arg(long, env = "UGC_COMPAT_ANONYMOUS", default_value_t = false, action = clap::ArgAction::Set, global = true)]
    pub compat_anonymous: bool,

    /// Log filter (tracing EnvFilter syntax), e.g. `info` or `ugc=debug,info`.
    #[arg(long, env = "UGC_LOG", default_value = "info", global = true)]
    pub log: String,

    /// Serve `GET /metrics` (Prometheus text) on this address instead of the main one, so
    /// it can be kept off the public port.
    #[arg(long, env = "UGC_METRICS_LISTEN", global = true)]
    pub metrics_listen: Option<SocketAddr>,

    /// One log line per request (target `ugc::access`): route, status, latency,
    /// request id.
    #[arg(long, env = "UGC_ACCESS_LOG", default_value_t = true, action = clap::ArgAction::Set, global = true)]
    pub access_log: bool,

    /// Log line format.
    #[arg(long, env = "UGC_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
}

/// A typed setting's name as written in flags, variables and files (`clickhouse`, `per-type`).
pub fn name_of(v: &impl ValueEnum) -> String {
    v.to_possible_value()
        .map(|p| p.get_name().to_owned())
        .unwrap_or_default()
}

/// What one process runs. (A token's `roles` are another thing: who the caller is.)
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ProcessRole {
    /// Ingest API and loader.
    All,
    /// Ingest and reads.
    Api,
    /// Log to store; serves only /healthz and /readyz.
    Loader,
}

impl ProcessRole {
    pub fn runs_api(self) -> bool {
        matches!(self, ProcessRole::All | ProcessRole::Api)
    }

    pub fn runs_loader(self) -> bool {
        matches!(self, ProcessRole::All | ProcessRole::Loader)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogBackend {
    Embedded,
    Kafka,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum StoreBackend {
    Chdb,
    Clickhouse,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum TopicMode {
    Single,
    PerType,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum KafkaCompression {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl From<KafkaCompression> for ugc_log::kafka::Compression {
    fn from(c: KafkaCompression) -> Self {
        use ugc_log::kafka::Compression as C;
        match c {
            KafkaCompression::None => C::None,
            KafkaCompression::Gzip => C::Gzip,
            KafkaCompression::Snappy => C::Snappy,
            KafkaCompression::Lz4 => C::Lz4,
            KafkaCompression::Zstd => C::Zstd,
        }
    }
}

/// librdkafka's `partition.assignment.strategy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Assignment {
    Range,
    Roundrobin,
    CooperativeSticky,
}

impl Assignment {
    pub fn as_str(self) -> &'static str {
        match self {
            Assignment::Range => "range",
            Assignment::Roundrobin => "roundrobin",
            Assignment::CooperativeSticky => "cooperative-sticky",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

impl Settings {
    pub fn log_ack_timeout(&self) -> Duration {
        Duration::from_millis(self.log_ack_timeout_ms)
    }
    pub fn chdb_library(&self) -> PathBuf {
        self.chdb_lib
            .clone()
            .unwrap_or_else(ugc_chdb::default_library_path)
    }
    pub fn secret_file(&self) -> PathBuf {
        self.data_dir.join("jwt-secret")
    }
}

/// A CIDR, or a single address as its /32 or /128.
fn parse_rate(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 => Ok(r),
        _ => Err(format!(
            "`{s}` is not a positive number of events per second"
        )),
    }
}

/// An origin as browsers send it: scheme, host, optional port; no path.
fn parse_origin(s: &str) -> Result<String, String> {
    let o = s.trim().trim_end_matches('/');
    let rest = o
        .strip_prefix("https://")
        .or_else(|| o.strip_prefix("http://"))
        .ok_or_else(|| format!("`{s}` is not an origin: expected http(s)://host[:port]"))?;
    if rest.is_empty() || rest.contains(['/', '?', '#', ' ', '*']) {
        return Err(format!(
            "`{s}` is not an origin: expected http(s)://host[:port], no path"
        ));
    }
    Ok(o.to_owned())
}

fn parse_net(s: &str) -> Result<IpNet, String> {
    s.parse::<IpNet>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
        .map_err(|_| format!("`{s}` is neither an IP address nor a CIDR"))
}

/// Parses the command line, then fills whatever flags and environment left at its
/// default from the `--config` file, by re-parsing with the file's values as flags.
pub fn parse() -> anyhow::Result<Cli> {
    parse_from(std::env::args_os().collect()).map_err(|e| match e.downcast::<clap::Error>() {
        // --help, --version and usage errors print and exit the way clap does.
        Ok(clap_error) => clap_error.exit(),
        Err(e) => e,
    })
}

pub fn parse_from(args: Vec<OsString>) -> anyhow::Result<Cli> {
    let cmd = Cli::command();
    let matches = cmd.clone().try_get_matches_from(&args)?;
    let Some(path) = matches.get_one::<PathBuf>("config").cloned() else {
        return Ok(Cli::from_arg_matches(&matches)?);
    };
    let mut args = args;
    for (key, value) in read_file(&path)? {
        let id = key.replace('-', "_");
        if !cmd.get_arguments().any(|a| a.get_id() == id.as_str()) || id == "config" {
            bail!(
                "{}: unknown setting `{key}` (see `ugc --help`)",
                path.display()
            );
        }
        if matches!(
            matches.value_source(&id),
            None | Some(ValueSource::DefaultValue)
        ) {
            // Before any subcommand, so that a file key is never read as a subcommand's
            // flag of the same name (`role` vs `ugc token --role`).
            args.insert(1, format!("--{}={value}", id.replace('_', "-")).into());
        }
    }
    let matches = cmd.try_get_matches_from(&args)?;
    Ok(Cli::from_arg_matches(&matches)?)
}

fn read_file(path: &Path) -> anyhow::Result<Vec<(String, String)>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    let table: toml::Table = text
        .parse()
        .with_context(|| format!("config file {} is not valid TOML", path.display()))?;
    table
        .into_iter()
        .map(|(k, v)| {
            let v = match v {
                toml::Value::String(s) => s,
                toml::Value::Array(items) => items
                    .iter()
                    .map(|i| i.as_str().map_or_else(|| i.to_string(), str::to_owned))
                    .collect::<Vec<_>>()
                    .join(","),
                other => other.to_string(),
            };
            Ok((k, v))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_fills_defaults_and_flags_win() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("ugc.toml");
        std::fs::write(&file, "listen = \"127.0.0.1:9999\"\nmax-batch = 7\ntrusted_proxies = [\"10.0.0.0/8\", \"::1\"]\n").unwrap();
        let args = |extra: &[&str]| {
            let mut a: Vec<OsString> = vec!["ugc".into(), "--config".into(), file.clone().into()];
            a.extend(extra.iter().map(OsString::from));
            a
        };
        let cli = parse_from(args(&[])).unwrap();
        assert_eq!(cli.settings.listen.port(), 9999);
        assert_eq!(cli.settings.max_batch, 7);
        assert_eq!(cli.settings.trusted_proxies.len(), 2);
        assert!(cli.settings.cors_origins.is_empty());
        std::fs::write(
            &file,
            "cors_origins = [\"https://cinema.example\", \"http://127.0.0.1:9000/\"]\nmedia_dir = \"/srv/films\"\n",
        )
        .unwrap();
        let cli = parse_from(args(&[])).unwrap();
        assert_eq!(
            cli.settings.cors_origins,
            ["https://cinema.example", "http://127.0.0.1:9000"]
        );
        assert_eq!(cli.settings.media_dir, Some(PathBuf::from("/srv/films")));
        let err = parse_from(vec![
            "ugc".into(),
            "--cors-origins".into(),
            "https://a.example/app".into(),
        ])
        .unwrap_err();
        assert!(err.to_string().contains("not an origin"), "{err}");
        std::fs::write(&file, "listen = \"127.0.0.1:9999\"\nmax-batch = 7\n").unwrap();
        let cli = parse_from(args(&["--max-batch", "9"])).unwrap();
        assert_eq!(cli.settings.max_batch, 9);
    }

    #[test]
    fn unknown_file_keys_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("ugc.toml");
        std::fs::write(&file, "lisen = \"x\"\n").unwrap();
        let err = parse_from(vec!["ugc".into(), "--config".into(), file.into()]).unwrap_err();
        assert!(err.to_string().contains("lisen"));
    }
}
