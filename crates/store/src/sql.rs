//! Every statement the product sends to ClickHouse, in one place, so the embedded engine
//! and a ClickHouse server run the same SQL. Values are inlined as escaped literals
//! because old servers (18.16) have no query parameters; only [`quote`] builds literals.

use serde::{Deserialize, Serialize};
use ugc_model::{Envelope, Event, FilmId, Timestamp, UserId};

use crate::{LogPosition, Progress};

pub const DATABASE: &str = "ugc";

/// What a ClickHouse version can do, decided once from `SELECT version()`. The SQL is one
/// set of statements; where a server lacks a feature, the statement is built differently
/// here and nowhere else. The reference for "current" is the embedded engine (chDB).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dialect {
    /// `DateTime64(3)` (20.1+). Without it a time is `DateTime` plus a `<name>_ms`
    /// column with the milliseconds.
    pub datetime64: bool,
    /// `LowCardinality` without an experimental flag (19.x+). 18.16 has it only behind
    /// `allow_experimental_low_cardinality_type`: we use plain `String` there.
    pub low_cardinality: bool,
    /// `insert_deduplication_token` and `non_replicated_deduplication_window` (22.2+).
    pub dedup_token: bool,
    /// The `async_insert` setting (21.11+); chDB enables it by default.
    pub async_insert: bool,
    /// The Atomic database engine (20.5+).
    pub atomic_database: bool,
    /// `SimpleAggregateFunction` columns (19.8+): plain values an aggregating table
    /// folds on merge, read without `…Merge`.
    pub simple_aggregates: bool,
}

impl Dialect {
    /// The embedded engine (chDB 26.x) and any current server.
    pub const CURRENT: Dialect = Dialect::from_parts(26, 5);

    pub const fn from_parts(major: u32, minor: u32) -> Dialect {
        const fn at_least(major: u32, minor: u32, m: u32, n: u32) -> bool {
            major > m || (major == m && minor >= n)
        }
        Dialect {
            datetime64: at_least(major, minor, 20, 1),
            low_cardinality: at_least(major, minor, 19, 1),
            dedup_token: at_least(major, minor, 22, 2),
            async_insert: at_least(major, minor, 21, 11),
            atomic_database: at_least(major, minor, 20, 5),
            simple_aggregates: at_least(major, minor, 19, 8),
        }
    }

    /// From what `SELECT version()` prints, e.g. `18.16.1` or `26.5.3.1`.
    pub fn from_version(v: &str) -> Result<Dialect, String> {
        let mut parts = v.trim().split('.').map(str::parse::<u32>);
        match (parts.next(), parts.next()) {
            (Some(Ok(major)), Some(Ok(minor))) => Ok(Dialect::from_parts(major, minor)),
            _ => Err(format!("unrecognised ClickHouse version `{}`", v.trim())),
        }
    }
}

/// Where the schema lives: database, dialect, and (for a cluster) the cluster's name.
#[derive(Clone, Debug)]
pub struct Schema {
    pub database: String,
    pub dialect: Dialect,
    /// With a cluster, each table is a `Replicated*MergeTree` table `<name>_local` on
    /// every node (DDL `ON CLUSTER`) and a `Distributed` table `<name>` over them, so
    /// every query reads `<db>.<name>` whatever the topology.
    pub cluster: Option<String>,
}

impl Schema {
    /// The embedded engine: database `ugc`, current dialect, one node.
    pub fn embedded() -> Schema {
        Schema {
            database: DATABASE.to_owned(),
            dialect: Dialect::CURRENT,
            cluster: None,
        }
    }

    fn db(&self) -> &str {
        &self.database
    }

    /// The database that holds the product's tables, the only one analysts read.
    pub fn database(&self) -> &str {
        &self.database
    }

    fn on_cluster(&self) -> String {
        self.cluster
            .as_ref()
            .map_or_else(String::new, |c| format!(" ON CLUSTER {c}"))
    }

    /// The type of a time column, and its millisecond companion where DateTime64 is missing.
    fn time_column(&self, name: &str) -> String {
        if self.dialect.datetime64 {
            format!("{name} DateTime64(3, 'UTC')")
        } else {
            format!("{name} DateTime('UTC'),\n            {name}_ms UInt16")
        }
    }

    fn low_cardinality_string(&self) -> &'static str {
        if self.dialect.low_cardinality {
            "LowCardinality(String)"
        } else {
            "String"
        }
    }

    /// `CREATE TABLE` for one logical table: the table itself on one node; on a cluster
    /// the replicated `<name>_local` tables plus the `Distributed` table `<name>` sharded
    /// by `shard_key`. `engine` is a MergeTree family name, `version` its version column.
    fn create_table(
        &self,
        name: &str,
        columns: &str,
        engine: &str,
        version: Option<&str>,
        keys: &str,
        shard_key: &str,
    ) -> Vec<String> {
        let db = self.db();
        let version = version.unwrap_or_default();
        match &self.cluster {
            None => {
                // The dedup token needs a window on non-replicated tables; old servers
                // have neither (see `insert_statement`).
                let settings = if self.dialect.dedup_token {
                    " SETTINGS non_replicated_deduplication_window = 1000"
                } else {
                    ""
                };
                vec![format!(
                    "CREATE TABLE IF NOT EXISTS {db}.{name} ({columns}) ENGINE = {engine}({version}) {keys}{settings}"
                )]
            }
            Some(cluster) => {
                let version = if version.is_empty() {
                    String::new()
                } else {
                    format!(", {version}")
                };
                vec![
                    format!(
                        "CREATE TABLE IF NOT EXISTS {db}.{name}_local ON CLUSTER {cluster} ({columns}) \
                         ENGINE = Replicated{engine}('/clickhouse/tables/{{shard}}/{db}/{name}', '{{replica}}'{version}) {keys}"
                    ),
                    // The shard key must be deterministic (never rand()): a retried block
                    // has to split into the same per-shard blocks to be recognised.
                    format!(
                        "CREATE TABLE IF NOT EXISTS {db}.{name} ON CLUSTER {cluster} ({columns}) \
                         ENGINE = Distributed({cluster}, {db}, {name}_local, {shard_key})"
                    ),
                ]
            }
        }
    }
}

/// A schema change. Versions are applied in order, once, and recorded in
/// `<db>.schema_migrations`; every statement is idempotent on its own too, so a crash
/// half-way through a migration is repaired by running it again.
pub struct Migration {
    pub version: u32,
    pub name: &'static str,
    pub statements: fn(&Schema) -> Vec<String>,
}

pub fn create_database(s: &Schema) -> String {
    // Atomic explicitly where it exists: clickhouse-local's (chDB's) default database
    // overlays the file system, and our tables must live apart from it.
    let engine = if s.dialect.atomic_database {
        " ENGINE = Atomic"
    } else {
        ""
    };
    format!(
        "CREATE DATABASE IF NOT EXISTS {}{}{engine}",
        s.db(),
        s.on_cluster()
    )
}

pub fn create_migrations(s: &Schema) -> Vec<String> {
    s.create_table(
        "schema_migrations",
        "version UInt32, name String, applied_at DateTime DEFAULT now()",
        "ReplacingMergeTree",
        None,
        "ORDER BY version",
        "version",
    )
}

pub fn applied_migrations(s: &Schema) -> String {
    format!(
        "SELECT DISTINCT version FROM {}.schema_migrations ORDER BY version",
        s.db()
    )
}

pub fn record_migration(s: &Schema, m: &Migration) -> String {
    format!(
        "INSERT INTO {}.schema_migrations (version, name) VALUES ({}, {})",
        s.db(),
        m.version,
        quote(m.name)
    )
}

pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "events, progress, dead letters",
        statements: migration_1,
    },
    Migration {
        version: 2,
        name: "erasures",
        statements: migration_2,
    },
    Migration {
        version: 3,
        name: "hourly viewing aggregates",
        statements: migration_3,
    },
];

/// The analytics API's pre-aggregated viewings (see [`crate::analytics`]): a table of
/// per-(hour, film, viewer) states, a materialized view that feeds it from every insert
/// into `events`, and the events already stored. Every fold is idempotent (maxima, sets
/// of values that carry their event id), so an event that reaches the view twice — a
/// client's retried event, a block inserted again, the backfill overlapping the view —
/// changes no answer.
fn migration_3(s: &Schema) -> Vec<String> {
    let db = s.db();
    let mut out = s.create_table(
        "hourly",
        &crate::analytics::hourly_columns(s),
        "AggregatingMergeTree",
        None,
        // user_id follows from user_key; in the key so that merges never pick one.
        "ORDER BY (film_id, user_key, hour, user_id)",
        "sipHash64(toString(user_id))",
    );
    // On a cluster the view sits beside each replica's local tables and fires on the
    // replica that takes an insert; `hourly_local` is replicated like `events_local`.
    let (from, to) = match s.cluster {
        Some(_) => ("events_local", "hourly_local"),
        None => ("events", "hourly"),
    };
    out.push(format!(
        "CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.hourly_mv{} TO {db}.{to} AS {}",
        s.on_cluster(),
        crate::analytics::hourly_select(s, &format!("{db}.{from}"), "1")
    ));
    out.push(format!(
        "INSERT INTO {db}.hourly {}",
        crate::analytics::hourly_select(s, &format!("{db}.events"), "1")
    ));
    out
}

/// Users whose data was erased ("right to be forgotten"), with the second of the
/// request: the loader drops their events received up to then, and the erasure job
/// reads its progress from here, whichever instance serves the request.
fn migration_2(s: &Schema) -> Vec<String> {
    s.create_table(
        "erasures",
        "
            job_id UUID,
            user_id String,
            requested_secs UInt64
        ",
        "ReplacingMergeTree",
        None,
        "ORDER BY job_id",
        "sipHash64(toString(user_id))",
    )
}

/// Records an erasure request.
pub fn insert_erasure(s: &Schema, job: uuid::Uuid, user: &UserId, requested_secs: u64) -> String {
    format!(
        "INSERT INTO {}.erasures (job_id, user_id, requested_secs) VALUES (toUUID({}), {}, {requested_secs})",
        s.db(),
        quote(&job.to_string()),
        quote(user.as_str())
    )
}

/// Every erasure request (a small table: one row per erased user).
pub fn erasures(s: &Schema) -> String {
    format!(
        "SELECT toString(job_id) AS job, user_id AS user, max(requested_secs) AS secs \
         FROM {}.erasures GROUP BY job_id, user_id",
        s.db()
    )
}

/// A 64-bit integer as ClickHouse writes it in JSON: a number, or (servers quote 64-bit
/// integers by default) a string of digits.
fn lenient_u64<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    match serde_json::Value::deserialize(d)? {
        serde_json::Value::Number(n) => n.as_u64(),
        serde_json::Value::String(s) => s.parse().ok(),
        _ => None,
    }
    .ok_or_else(|| serde::de::Error::custom("expected an unsigned integer"))
}

/// A row of [`erasures`].
#[derive(Deserialize)]
pub struct ErasureRow {
    job: uuid::Uuid,
    user: String,
    #[serde(deserialize_with = "lenient_u64")]
    secs: u64,
}

impl ErasureRow {
    pub fn into_erasure(self) -> Result<crate::Erasure, crate::StoreError> {
        Ok(crate::Erasure {
            job: self.job,
            user: UserId::parse(self.user)
                .map_err(|e| crate::StoreError::Unavailable(format!("bad erasure row: {e}")))?,
            requested_secs: self.secs,
        })
    }
}

/// Rows of `events` and the newest arrival (Unix seconds; 0 while empty).
pub fn events_overview(s: &Schema) -> String {
    format!(
        "SELECT count() AS n, toUInt64(toUnixTimestamp(max(received_at))) AS newest FROM {}.events",
        s.db()
    )
}

/// Dead letters stored within the last hour by reason class (the loader's metric's
/// `reason`), each log position once (the table folds repeats only when it merges).
pub fn dead_letters_last_hour(s: &Schema) -> String {
    format!(
        "SELECT if(position(reason, 'store refused the row') = 1, 'refused_by_store', 'undecodable') \
         AS reason_class, uniqExact(log_partition, log_offset) AS n FROM {}.dead_letters \
         WHERE loaded_at >= now() - 3600 GROUP BY reason_class",
        s.db()
    )
}

/// A row of [`events_overview`].
#[derive(Deserialize)]
pub struct EventsOverviewRow {
    #[serde(deserialize_with = "lenient_u64")]
    pub n: u64,
    #[serde(deserialize_with = "lenient_u64")]
    pub newest: u64,
}

/// A row of [`dead_letters_last_hour`]. The class has an alias of its own: on 18.16 an
/// alias named like the column it reads (`reason`) refers to itself.
#[derive(Deserialize)]
pub struct ReasonCountRow {
    #[serde(rename = "reason_class")]
    pub reason: String,
    #[serde(deserialize_with = "lenient_u64")]
    pub n: u64,
}

/// The count of [`user_rows`].
#[derive(Deserialize)]
pub struct CountRow {
    #[serde(deserialize_with = "lenient_u64")]
    pub n: u64,
}

/// The tables that hold a user's data: which rows an erasure deletes, and which must be
/// gone before it is done, as conditions on the request's second `{r}`. Events and
/// progress: rows up to the request (later ones are the user's new data). `hourly`
/// (derived from events, by the time events happened): all the user's rows, and the
/// check waits only for the hours before the request's, since events the user sends
/// later may start that hour again.
const ERASED_TABLES: &[(&str, &str, &str)] = &[
    (
        "events",
        "toUnixTimestamp(received_at) <= {r}",
        "toUnixTimestamp(received_at) <= {r}",
    ),
    (
        "progress",
        "toUnixTimestamp(updated_at) <= {r}",
        "toUnixTimestamp(updated_at) <= {r}",
    ),
    ("hourly", "1", "hour * 3600 + 3600 <= {r}"),
];

/// Deletes a user's rows (see [`ERASED_TABLES`]), as mutations (`ALTER … DELETE`:
/// 18.16 has no lightweight `DELETE`); on a cluster on every replica of every shard.
pub fn erase_user(s: &Schema, user: &UserId, requested_secs: u64) -> Vec<String> {
    ERASED_TABLES
        .iter()
        .map(|(table, deleted, _)| {
            let (table, on_cluster) = match &s.cluster {
                Some(_) => (format!("{table}_local"), s.on_cluster()),
                None => (table.to_string(), String::new()),
            };
            format!(
                "ALTER TABLE {}.{table}{on_cluster} DELETE WHERE user_id = {} AND {}",
                s.db(),
                quote(user.as_str()),
                deleted.replace("{r}", &requested_secs.to_string())
            )
        })
        .collect()
}

/// Rows of a user an erasure must remove still in the store, over every table.
pub fn user_rows(s: &Schema, user: &UserId, requested_secs: u64) -> String {
    let counts: Vec<String> = ERASED_TABLES
        .iter()
        .map(|(table, _, left)| {
            format!(
                "(SELECT count() FROM {}.{table} WHERE user_id = {} AND {})",
                s.db(),
                quote(user.as_str()),
                left.replace("{r}", &requested_secs.to_string())
            )
        })
        .collect();
    format!("SELECT {} AS n", counts.join(" + "))
}

fn migration_1(s: &Schema) -> Vec<String> {
    let mut out = Vec::new();
    // The wide table analysts query. Partitioned by month of arrival (bounded, unlike a
    // client's clock); ordered for per-type, per-film questions. ReplacingMergeTree on
    // a key that ends in event_id folds a client's retried event (same id) into one
    // row at merge time; a loader's retried batch is dropped at insert time (see
    // `insert_statement`). Sharded by user, so one viewer's rows live on one shard.
    out.extend(s.create_table(
        "events",
        &format!(
            "
            event_id UUID,
            event_type {lc},
            user_id String,
            film_id UUID,
            {occurred_at},
            {received_at},
            position Nullable(UInt32),
            quality_from Nullable(String),
            quality_to Nullable(String),
            page Nullable(String),
            name Nullable(String),
            data String,
            language String,
            timezone String,
            app_version String,
            context String,
            client_ip String,
            log_partition UInt32,
            log_offset UInt64
        ",
            lc = s.low_cardinality_string(),
            occurred_at = s.time_column("occurred_at"),
            received_at = s.time_column("received_at"),
        ),
        "ReplacingMergeTree",
        None,
        "PARTITION BY toYYYYMM(received_at) ORDER BY (event_type, film_id, user_id, event_id)",
        "sipHash64(toString(user_id))",
    ));
    // "Where did I stop?": keyed by viewer then film, so both progress reads are
    // primary-key range reads. Per (user, film) the engine keeps the latest position
    // row and the latest finished row; reads pick whichever is newer. Sharded like
    // `events` (hash functions of 18.16 reject UUID, hence toString).
    out.extend(s.create_table(
        "progress",
        &format!(
            "
            user_id String,
            film_id UUID,
            finished UInt8,
            position UInt32,
            {updated_at},
            event_id UUID
        ",
            updated_at = s.time_column("updated_at"),
        ),
        "ReplacingMergeTree",
        Some("updated_at"),
        "ORDER BY (user_id, film_id, finished)",
        "sipHash64(toString(user_id))",
    ));
    // loaded_at is the time of the insert attempt: a retried dead-letter block differs,
    // so replicated block dedup may keep both; the key (log position) folds them at merge.
    out.extend(s.create_table(
        "dead_letters",
        "
            log_partition UInt32,
            log_offset UInt64,
            reason String,
            payload String,
            loaded_at DateTime DEFAULT now()
        ",
        "ReplacingMergeTree",
        None,
        "ORDER BY (log_partition, log_offset)",
        "log_offset",
    ));
    out
}

/// A ClickHouse string literal.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        match c {
            '\'' => out.push_str("\\'"),
            '\\' => out.push_str("\\\\"),
            '\0' => out.push_str("\\0"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// The statement of a batch insert; the rows follow as JSONEachRow lines.
///
/// How a retried insert of the same batch is dropped, by server:
/// - current versions (22.2+, chDB): `insert_deduplication_token`, derived from the
///   loader's deterministic batch token, against `non_replicated_deduplication_window`
///   on one node, or the replicated tables' block log on a cluster;
/// - replicated tables of any version (an 18.16 cluster): the block itself. The loader
///   builds the same block for the same log range, and each shard drops a block whose
///   checksum it already has (`replicated_deduplication_window`, 100 blocks per table);
/// - 18.16 on one node has neither: the store checks a retried batch's log positions
///   before inserting it again (`ClickHouseStore`), and the loader's window of recent
///   event ids, re-read from the store at start, drops what a crash left stored.
///
/// Synchronous (`async_insert = 0` where the setting exists: chDB defaults to async), so
/// the batch is one block, written before the call returns.
pub fn insert_statement(s: &Schema, table: &str, dedup_token: &str) -> String {
    let mut settings = Vec::new();
    if s.dialect.dedup_token {
        settings.push(format!(
            "insert_deduplication_token = {}",
            quote(dedup_token)
        ));
    }
    if s.dialect.async_insert {
        settings.push("async_insert = 0".to_owned());
    }
    let settings = if settings.is_empty() {
        String::new()
    } else {
        format!(" SETTINGS {}", settings.join(", "))
    };
    format!(
        "INSERT INTO {}.{table}{settings} FORMAT JSONEachRow\n",
        s.db()
    )
}

/// A time as a row value: text with milliseconds where DateTime64 exists, else Unix
/// seconds (every version parses those in JSONEachRow) plus a `<name>_ms` field.
#[derive(Serialize)]
#[serde(untagged)]
pub enum TimeValue {
    Text(String),
    Seconds(i64),
}

fn time_value(d: &Dialect, t: &Timestamp) -> (TimeValue, Option<u16>) {
    if d.datetime64 {
        (TimeValue::Text(t.to_sql_string()), None)
    } else {
        (
            TimeValue::Seconds(t.millis().div_euclid(1000)),
            Some(t.millis().rem_euclid(1000) as u16),
        )
    }
}

#[derive(Serialize)]
pub struct EventRow<'a> {
    event_id: &'a uuid::Uuid,
    event_type: &'static str,
    user_id: &'a str,
    film_id: uuid::Uuid,
    occurred_at: TimeValue,
    #[serde(skip_serializing_if = "Option::is_none")]
    occurred_at_ms: Option<u16>,
    received_at: TimeValue,
    #[serde(skip_serializing_if = "Option::is_none")]
    received_at_ms: Option<u16>,
    position: Option<u32>,
    quality_from: Option<&'a str>,
    quality_to: Option<&'a str>,
    page: Option<&'static str>,
    name: Option<&'a str>,
    data: String,
    language: &'a str,
    timezone: &'a str,
    app_version: &'a str,
    context: String,
    client_ip: String,
    log_partition: u32,
    log_offset: u64,
}

impl<'a> EventRow<'a> {
    pub fn for_dialect(d: &Dialect, pos: LogPosition, e: &'a Envelope) -> Self {
        let (quality_from, quality_to) = match &e.event {
            Event::QualityChange { from, to, .. } => (Some(from.as_str()), Some(to.as_str())),
            _ => (None, None),
        };
        let data = match &e.event {
            Event::PageView { params, .. } => serde_json::to_string(params).unwrap_or_default(),
            Event::Custom { data, .. } => data.to_string(),
            // Content events keep their ids and values (the event's own JSON) in `data`.
            e if e.is_content() => serde_json::to_string(e).unwrap_or_default(),
            // Player health: the measurements that have no column of their own.
            Event::PlaybackStart { startup_ms, .. } => {
                serde_json::json!({ "startup_ms": startup_ms }).to_string()
            }
            Event::Rebuffer { duration_ms, .. } => {
                serde_json::json!({ "duration_ms": duration_ms }).to_string()
            }
            Event::PlaybackError {
                code,
                message,
                fatal,
                ..
            } => {
                serde_json::json!({ "code": code, "message": message, "fatal": fatal }).to_string()
            }
            _ => String::new(),
        };
        let ctx = &e.context;
        let (occurred_at, occurred_at_ms) = time_value(d, &e.occurred_at);
        let (received_at, received_at_ms) = time_value(d, &e.received_at);
        Self {
            event_id: e.event_id.as_uuid(),
            event_type: e.event.type_name(),
            user_id: e.user_id.as_ref().map_or("", UserId::as_str),
            // The nil UUID stands for "not about a film": key columns cannot be Nullable.
            film_id: e
                .event
                .film_id()
                .map_or(uuid::Uuid::nil(), |f| *f.as_uuid()),
            occurred_at,
            occurred_at_ms,
            received_at,
            received_at_ms,
            position: e.event.position().map(|p| p.seconds()),
            quality_from,
            quality_to,
            page: match &e.event {
                Event::PageView { page, .. } => Some(page.as_str()),
                _ => None,
            },
            name: match &e.event {
                Event::Custom { name, .. } => Some(name.as_str()),
                _ => None,
            },
            data,
            language: ctx.language.as_deref().unwrap_or(""),
            timezone: ctx.timezone.as_deref().unwrap_or(""),
            app_version: ctx.app_version.as_deref().unwrap_or(""),
            context: if ctx.extra.is_empty() {
                String::new()
            } else {
                serde_json::to_string(&ctx.extra).unwrap_or_default()
            },
            client_ip: e.client_ip.map(|ip| ip.to_string()).unwrap_or_default(),
            log_partition: pos.partition,
            log_offset: pos.offset,
        }
    }
}

#[derive(Serialize)]
pub struct ProgressRow<'a> {
    user_id: &'a str,
    film_id: uuid::Uuid,
    finished: u8,
    position: u32,
    updated_at: TimeValue,
    #[serde(skip_serializing_if = "Option::is_none")]
    updated_at_ms: Option<u16>,
    event_id: &'a uuid::Uuid,
}

impl<'a> ProgressRow<'a> {
    /// The progress row an event implies, if it says anything about where the viewer is.
    pub fn for_dialect(d: &Dialect, e: &'a Envelope) -> Option<Self> {
        let user = e.user_id.as_ref()?;
        // A stall's position is a health measurement, not where the viewer chose to be.
        if e.event.is_health() {
            return None;
        }
        // The nil film is "film unknown" (seed 003's player sends none): nothing to resume.
        let film_id = e.event.film_id().filter(|f| !f.as_uuid().is_nil())?;
        let finished = matches!(e.event, Event::FullView { .. });
        let position = e.event.position();
        if !finished && position.is_none() {
            return None;
        }
        let (updated_at, updated_at_ms) = time_value(d, &e.occurred_at);
        Some(Self {
            user_id: user.as_str(),
            film_id: *film_id.as_uuid(),
            finished: finished as u8,
            position: position.map_or(0, |p| p.seconds()),
            updated_at,
            updated_at_ms,
            event_id: e.event_id.as_uuid(),
        })
    }
}

#[derive(Serialize)]
pub struct DeadLetterRow<'a> {
    pub log_partition: u32,
    pub log_offset: u64,
    pub reason: &'a str,
    pub payload: String,
    /// Written, not left to the column's DEFAULT: 18.16 fills a field missing from
    /// JSONEachRow with the type's zero (1970), not with `now()`.
    pub loaded_at: i64,
}

/// Now, in Unix seconds: a `DateTime` value every dialect parses from JSONEachRow.
pub fn now_seconds() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// A time column as Unix milliseconds (an integer), the one form both dialects give:
/// the progress reads order and compare by it.
fn millis(s: &Schema, col: &str) -> String {
    if s.dialect.datetime64 {
        format!("toUnixTimestamp64Milli({col})")
    } else {
        format!("(toUInt64({col}) * 1000 + {col}_ms)")
    }
}

/// Per film: the latest position report, and whether the newest event was a finish.
fn progress_select(s: &Schema) -> String {
    let t = millis(s, "updated_at");
    format!(
        "SELECT toString(film_id) AS film, \
         argMaxIf(position, {t}, finished = 0) AS last_position, \
         argMax(finished, {t}) AS is_finished, \
         max({t}) AS last_seen \
         FROM {}.progress",
        s.db()
    )
}

pub fn film_progress(s: &Schema, user: &UserId, film: FilmId) -> String {
    format!(
        "{} WHERE user_id = {} AND film_id = toUUID({}) GROUP BY film_id",
        progress_select(s),
        quote(user.as_str()),
        quote(&film.to_string())
    )
}

pub fn continue_watching(s: &Schema, user: &UserId, limit: u32, offset: u32) -> String {
    format!(
        "{} WHERE user_id = {} GROUP BY film_id HAVING is_finished = 0 \
         ORDER BY last_seen DESC, film LIMIT {limit} OFFSET {offset}",
        progress_select(s),
        quote(user.as_str())
    )
}

#[derive(Deserialize)]
pub struct ProgressOut {
    film: uuid::Uuid,
    last_position: u32,
    is_finished: u8,
    /// Unix milliseconds; JSON formats may quote 64-bit integers.
    last_seen: serde_json::Value,
}

impl ProgressOut {
    /// Rows of `film_progress`/`continue_watching` as they come back from any engine.
    pub fn into_progress_list(rows: Vec<ProgressOut>) -> Result<Vec<Progress>, crate::StoreError> {
        rows.into_iter()
            .map(|r| r.into_progress().map_err(crate::StoreError::Unavailable))
            .collect()
    }

    pub fn into_progress(self) -> Result<Progress, String> {
        let ms = match &self.last_seen {
            serde_json::Value::Number(n) => n.as_i64(),
            serde_json::Value::String(s) => s.parse().ok(),
            _ => None,
        }
        .ok_or_else(|| format!("bad last_seen `{}`", self.last_seen))?;
        Ok(Progress {
            film_id: FilmId::from(self.film),
            position: self.last_position,
            finished: self.is_finished != 0,
            updated_at: Timestamp::from_millis(ms)?,
        })
    }
}

/// Memory one analyst query may use (bytes): a GROUP BY over millions of distinct keys
/// must fail alone, not take the loader's engine down with it.
pub const ANALYST_MAX_MEMORY: u64 = 1_000_000_000;

/// Settings of analysts' queries, `readonly = 1` last. The embedded engine applies them
/// to a session with `SET` (see [`analyst_session`]); a server takes them as settings of
/// the HTTP request. Either way the query cannot lift them: with `readonly = 1` the
/// engine refuses every change of a setting ("Cannot modify 'readonly' setting in
/// readonly mode" on 26.5, "Cannot execute SET query in readonly mode" on 18.16), and
/// on 18.16 it also refuses every table function.
pub fn analyst_settings(max_seconds: u64) -> Vec<(&'static str, String)> {
    vec![
        ("max_execution_time", max_seconds.max(1).to_string()),
        ("max_memory_usage", ANALYST_MAX_MEMORY.to_string()),
        // A GROUP BY or ORDER BY that outgrows half the limit spills to disk instead of
        // failing: the analytics API's per-viewer aggregations over millions of events.
        (
            "max_bytes_before_external_group_by",
            (ANALYST_MAX_MEMORY / 2).to_string(),
        ),
        (
            "max_bytes_before_external_sort",
            (ANALYST_MAX_MEMORY / 2).to_string(),
        ),
        ("output_format_json_quote_64bit_integers", "0".into()),
        ("readonly", "1".into()),
    ]
}

/// The analysts' session of the embedded engine, applied in this order: its current
/// database is the product's (so a bare table name is one of ours, never the engine's
/// file-system overlay of `default`), and `readonly = 1` comes last: after it the
/// session can change no setting and write nothing. A per-query `SETTINGS readonly = 1`
/// would not do: the same query could switch it back off.
pub fn analyst_session(s: &Schema, max_seconds: u64) -> Vec<String> {
    std::iter::once(format!("USE {}", s.db()))
        .chain(
            analyst_settings(max_seconds)
                .into_iter()
                .map(|(k, v)| format!("SET {k} = {v}")),
        )
        .collect()
}

pub fn recent_event_ids(s: &Schema, window_secs: u64, limit: usize) -> String {
    format!(
        "SELECT user_id, toString(event_id) AS id FROM {}.events WHERE received_at >= now() - {window_secs} \
         ORDER BY received_at DESC LIMIT {limit}",
        s.db()
    )
}

/// Log offsets of one partition already stored within `[from, to]`: how a store without
/// insert dedup (18.16, one node) tells what of a retried batch already landed.
pub fn stored_offsets(s: &Schema, table: &str, partition: u32, from: u64, to: u64) -> String {
    format!(
        "SELECT log_offset FROM {}.{table} WHERE log_partition = {partition} \
         AND log_offset BETWEEN {from} AND {to}",
        s.db()
    )
}

/// Event ids among `ids` that already have a progress row.
pub fn stored_progress_ids(s: &Schema, ids: &[uuid::Uuid]) -> String {
    let list: Vec<String> = ids.iter().map(|i| format!("'{i}'")).collect();
    format!(
        "SELECT toString(event_id) AS id FROM {}.progress WHERE event_id IN ({})",
        s.db(),
        list.join(", ")
    )
}

pub const PING: &str = "SELECT 1";

/// The Kafka engine table that reads ugc's topic, and the materialized views that turn
/// its records into `events` rows and the analytics' `hourly` rows (`ugc
/// kafka-engine-ddl`): ClickHouse's own loader, the alternative to ugc's. One server only.
///
/// Each record is read whole as one `line` (TabSeparated, one record per row): 18.16's
/// JSONEachRow cannot put the envelope's nested objects into String columns, and it has
/// no format that reads a line raw. TabSeparated unescapes the line first, so a string
/// holding a JSON escape (a quote, a backslash, a control character) reaches the view
/// altered. The view takes the envelope apart with `visitParam*`, which finds a key's
/// first occurrence at any depth: each key is looked up where only the envelope's own
/// keys can come first (see [`kafka_engine_select`]).
pub fn kafka_engine(s: &Schema, src: &crate::clickhouse::KafkaEngineSource) -> Vec<String> {
    let db = s.db();
    vec![
        format!(
            "CREATE TABLE IF NOT EXISTS {db}.{KAFKA_ENGINE_TABLE} (line String) ENGINE = Kafka SETTINGS \
             kafka_broker_list = {}, kafka_topic_list = {}, kafka_group_name = {}, \
             kafka_format = 'TabSeparated', kafka_row_delimiter = '\\n', kafka_num_consumers = {}",
            quote(&src.brokers),
            quote(&src.topics.join(",")),
            quote(&src.group),
            src.consumers.max(1)
        ),
        format!(
            "CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.{KAFKA_ENGINE_VIEW} TO {db}.events AS {} FROM {db}.{KAFKA_ENGINE_TABLE}",
            kafka_engine_select(s)
        ),
        // 18.16 does not chain the view's inserts into `events` on to `hourly_mv`: the
        // analytics' hourly rows get a view of their own on the engine table. The event
        // row's columns are WITH aliases there, not a subquery: 18.16's engine fails a view
        // with a subquery ("There is no query"), and with it the whole block. (A server
        // that chains views folds the same rows in twice, which changes no answer.)
        format!(
            "CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.{KAFKA_ENGINE_HOURLY_VIEW} TO {db}.hourly AS {}\n{}",
            kafka_engine_select(s).replacen("\nSELECT\n", ",\n", 1),
            crate::analytics::hourly_select(s, &format!("{db}.{KAFKA_ENGINE_TABLE}"), "1")
        ),
    ]
}

/// The Kafka engine table of [`kafka_engine`] and its views (into `events`, `hourly`).
pub const KAFKA_ENGINE_TABLE: &str = "events_kafka";
pub const KAFKA_ENGINE_VIEW: &str = "events_kafka_mv";
pub const KAFKA_ENGINE_HOURLY_VIEW: &str = "events_kafka_hourly_mv";

/// The `events` row of an envelope read as one string `line`: the same row as
/// [`EventRow`] builds, but for the log position (18.16's Kafka engine has no `_offset`).
///
/// Where keys are looked up: the envelope's scalar fields come before any nested object
/// (serde writes fields in declaration order), so their first occurrence is theirs; the
/// event is looked up after the context object, whose keys are the client's; inside the
/// event, a field is read only for the types that have it, so a key of a page view's
/// `params` or a custom event's `data` is never taken for a film or a position.
fn kafka_engine_select(s: &Schema) -> String {
    let time = |col: &str, text: &str| {
        if s.dialect.datetime64 {
            format!("parseDateTime64BestEffort({text}, 3, 'UTC') AS {col}")
        } else {
            // Whole seconds, then the fraction's first three digits (RFC 3339 leaves
            // the fraction out, or shortens it, when it ends in zeros).
            format!(
                "parseDateTimeBestEffort({text}) AS {col}, \
                 toUInt16(substring(concat(extract({text}, '\\\\.([0-9]+)'), '000'), 1, 3)) AS {col}_ms"
            )
        }
    };
    let uuid = |text: &str| {
        // toUUID('') throws, and a throw loses the records the engine has already
        // committed: an empty value becomes the nil UUID instead. (18.16 was seen to
        // evaluate the view on one empty record after a restart.)
        format!("toUUID(if({text} = '', '00000000-0000-0000-0000-000000000000', {text}))")
    };
    // Their `data` is the event's own JSON.
    let content = ugc_model::CONTENT_EVENT_TYPES
        .iter()
        .map(|t| quote(t))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        r#"WITH
    visitParamExtractRaw(line, 'context') AS ctx,
    visitParamExtractRaw(if(ctx = '', line, substring(line, position(line, '"context":') + 10 + length(ctx))), 'event') AS ev,
    visitParamExtractString(ev, 'type') AS t,
    if(t IN ('page_view', 'custom'), '', visitParamExtractString(ev, 'film_id')) AS film,
    extract(ctx, '^\\{{(?:"(?:language|timezone|app_version)":"(?:\\\\.|[^"\\\\])*",?)*') AS known,
    substring(ctx, length(known) + 1) AS extra
SELECT
    {event_id} AS event_id,
    t AS event_type,
    visitParamExtractString(line, 'user_id') AS user_id,
    {film_id} AS film_id,
    {occurred_at},
    {received_at},
    multiIf(t = 'view_progress', toNullable(toUInt32(visitParamExtractUInt(ev, 'film_timestamp'))),
            t IN ('pause', 'quality_change', 'rebuffer'), toNullable(toUInt32(visitParamExtractUInt(ev, 'position'))),
            NULL) AS position,
    if(t = 'quality_change', toNullable(visitParamExtractString(ev, 'from')), NULL) AS quality_from,
    if(t = 'quality_change', toNullable(visitParamExtractString(ev, 'to')), NULL) AS quality_to,
    if(t = 'page_view', toNullable(visitParamExtractString(ev, 'page')), NULL) AS page,
    if(t = 'custom', toNullable(visitParamExtractString(ev, 'name')), NULL) AS name,
    multiIf(t = 'page_view', if(visitParamHas(ev, 'params'), visitParamExtractRaw(ev, 'params'), '{{}}'),
            t = 'custom', if(visitParamHas(ev, 'data'), visitParamExtractRaw(ev, 'data'), 'null'),
            t IN ({content}), ev,
            t = 'playback_start', concat('{{"startup_ms":', toString(visitParamExtractUInt(ev, 'startup_ms')), '}}'),
            t = 'rebuffer', concat('{{"duration_ms":', toString(visitParamExtractUInt(ev, 'duration_ms')), '}}'),
            t = 'playback_error', concat('{{"code":', toString(visitParamExtractUInt(ev, 'code')),
                ',"message":', visitParamExtractRaw(ev, 'message'), ',"fatal":', visitParamExtractRaw(ev, 'fatal'), '}}'),
            '') AS data,
    visitParamExtractString(known, 'language') AS language,
    visitParamExtractString(known, 'timezone') AS timezone,
    visitParamExtractString(known, 'app_version') AS app_version,
    if(extra IN ('', '}}'), '', concat('{{', extra)) AS context,
    visitParamExtractString(line, 'client_ip') AS client_ip,
    toUInt32(0) AS log_partition,
    toUInt64(0) AS log_offset"#,
        event_id = uuid("visitParamExtractString(line, 'event_id')"),
        film_id = uuid("film"),
        occurred_at = time(
            "occurred_at",
            "visitParamExtractString(line, 'occurred_at')"
        ),
        received_at = time(
            "received_at",
            "visitParamExtractString(line, 'received_at')"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_hostile_strings() {
        assert_eq!(quote(r"a'b\c"), r"'a\'b\\c'");
    }

    #[test]
    fn the_embedded_database_statement_is_the_current_dialects() {
        assert_eq!(
            "CREATE DATABASE IF NOT EXISTS ugc ENGINE = Atomic",
            create_database(&Schema::embedded())
        );
    }

    #[test]
    fn versions_pick_the_dialect() {
        let old = Dialect::from_version("18.16.1").unwrap();
        assert!(!old.datetime64 && !old.low_cardinality && !old.dedup_token && !old.async_insert);
        let new = Dialect::from_version("26.5.3.1\n").unwrap();
        assert_eq!(new, Dialect::CURRENT);
        assert!(Dialect::from_version("x").is_err());
    }

    #[test]
    fn a_cluster_gets_replicated_local_tables_and_distributed_ones() {
        let s = Schema {
            database: "ugc".into(),
            dialect: Dialect::from_parts(18, 16),
            cluster: Some("c".into()),
        };
        let ddl = migration_1(&s).join("\n");
        assert!(ddl.contains("ugc.events_local ON CLUSTER c"));
        assert!(ddl.contains("ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/ugc/progress', '{replica}', updated_at)"));
        assert!(ddl.contains("Distributed(c, ugc, events_local, sipHash64(toString(user_id)))"));
        assert!(ddl.contains("occurred_at_ms UInt16") && !ddl.contains("DateTime64"));
        assert!(!insert_statement(&s, "events", "t").contains("SETTINGS"));
    }

    #[test]
    fn the_kafka_engine_view_fills_the_dialects_time_columns() {
        let src = crate::clickhouse::KafkaEngineSource {
            brokers: "b1:9092,b2:9092".into(),
            topics: vec!["ugc.events".into()],
            group: "ugc-clickhouse".into(),
            consumers: 0,
        };
        let old = Schema {
            database: "ugc".into(),
            dialect: Dialect::from_parts(18, 16),
            cluster: None,
        };
        let ddl = kafka_engine(&old, &src);
        assert_eq!(ddl.len(), 3);
        assert!(
            ddl[2].contains("TO ugc.hourly AS WITH")
                && ddl[2].contains("FROM ugc.events_kafka WHERE")
        );
        assert!(ddl[0].starts_with(
            "CREATE TABLE IF NOT EXISTS ugc.events_kafka (line String) ENGINE = Kafka"
        ));
        assert!(ddl[0].contains("kafka_broker_list = 'b1:9092,b2:9092'"));
        assert!(ddl[0].contains("kafka_group_name = 'ugc-clickhouse'"));
        assert!(ddl[0].contains(r"kafka_row_delimiter = '\n', kafka_num_consumers = 1"));
        assert!(ddl[1].contains("TO ugc.events AS WITH"));
        assert!(ddl[1].ends_with("FROM ugc.events_kafka"));
        assert!(ddl[1].contains("AS occurred_at_ms") && ddl[1].contains("AS received_at_ms"));
        assert!(ddl[1].contains("'review_posted'"));
        let new = kafka_engine(&Schema::embedded(), &src);
        assert!(new[1].contains("parseDateTime64BestEffort("));
        assert!(!new[1].contains("AS occurred_at_ms"));
        // Every column of `events` is filled, by name.
        for line in migration_1(&old)[0].lines() {
            let col = line.split_whitespace().next().unwrap_or("");
            if col.chars().all(|c| c.is_ascii_lowercase() || c == '_') && !col.is_empty() {
                assert!(ddl[1].contains(&format!("AS {col}")), "no {col}");
            }
        }
    }
}
