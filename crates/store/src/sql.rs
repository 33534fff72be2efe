//! Every statement the product sends to ClickHouse, in one place, so the embedded engine
//! and a ClickHouse server run the same SQL. Values are inlined as escaped literals
//! because old servers (18.16) have no query parameters; only [`quote`] builds literals.

use serde::{Deserialize, Serialize};
use ugc_model::{Envelope, Event, FilmId, Timestamp, UserId};

use crate::{LogPosition, Progress};

pub const DATABASE: &str = "ugc";

/// A schema change. Versions are applied in order, once, and recorded in
/// `ugc.schema_migrations`; every statement is idempotent on its own too, so a crash
/// half-way through a migration is repaired by running it again.
pub struct Migration {
    pub version: u32,
    pub name: &'static str,
    pub statements: &'static [&'static str],
}

// Atomic explicitly: clickhouse-local's (chDB's) default database overlays the file
// system, and our tables must live apart from it.
pub const CREATE_DATABASE: &str = "CREATE DATABASE IF NOT EXISTS ugc ENGINE = Atomic";

pub const CREATE_MIGRATIONS: &str = "CREATE TABLE IF NOT EXISTS ugc.schema_migrations \
    (version UInt32, name String, applied_at DateTime DEFAULT now()) \
    ENGINE = ReplacingMergeTree ORDER BY version";

pub const APPLIED_MIGRATIONS: &str =
    "SELECT DISTINCT version FROM ugc.schema_migrations ORDER BY version";

pub fn record_migration(m: &Migration) -> String {
    format!(
        "INSERT INTO ugc.schema_migrations (version, name) VALUES ({}, {})",
        m.version,
        quote(m.name)
    )
}

pub const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    name: "events, progress, dead letters",
    statements: &[
        // The wide table analysts query. Partitioned by month of arrival (bounded, unlike a
        // client's clock); ordered for per-type, per-film questions. ReplacingMergeTree on
        // a key that ends in event_id folds a client's retried event (same id) into one
        // row at merge time; a loader's retried batch is dropped at insert time by the
        // dedup token (non_replicated_deduplication_window).
        "CREATE TABLE IF NOT EXISTS ugc.events (
            event_id UUID,
            event_type LowCardinality(String),
            user_id String,
            film_id UUID,
            occurred_at DateTime64(3, 'UTC'),
            received_at DateTime64(3, 'UTC'),
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
        ) ENGINE = ReplacingMergeTree
        PARTITION BY toYYYYMM(received_at)
        ORDER BY (event_type, film_id, user_id, event_id)
        SETTINGS non_replicated_deduplication_window = 1000",
        // "Where did I stop?": keyed by viewer then film, so both progress reads are
        // primary-key range reads. Per (user, film) the engine keeps the latest position
        // row and the latest finished row; reads pick whichever is newer.
        "CREATE TABLE IF NOT EXISTS ugc.progress (
            user_id String,
            film_id UUID,
            finished UInt8,
            position UInt32,
            updated_at DateTime64(3, 'UTC'),
            event_id UUID
        ) ENGINE = ReplacingMergeTree(updated_at)
        ORDER BY (user_id, film_id, finished)
        SETTINGS non_replicated_deduplication_window = 1000",
        "CREATE TABLE IF NOT EXISTS ugc.dead_letters (
            log_partition UInt32,
            log_offset UInt64,
            reason String,
            payload String,
            loaded_at DateTime DEFAULT now()
        ) ENGINE = ReplacingMergeTree
        ORDER BY (log_partition, log_offset)
        SETTINGS non_replicated_deduplication_window = 1000",
    ],
}];

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

/// Header of a batch insert; the rows follow as JSONEachRow lines.
/// `dedup_token` makes a retried insert of the same batch a no-op. Synchronous insert,
/// so the batch is one block, written before the call returns (chDB defaults to async).
pub fn insert_header(table: &str, dedup_token: &str) -> String {
    format!(
        "INSERT INTO ugc.{table} SETTINGS insert_deduplication_token = {}, async_insert = 0 FORMAT JSONEachRow\n",
        quote(dedup_token)
    )
}

#[derive(Serialize)]
pub struct EventRow<'a> {
    event_id: &'a uuid::Uuid,
    event_type: &'static str,
    user_id: &'a str,
    film_id: uuid::Uuid,
    occurred_at: String,
    received_at: String,
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
    pub fn new(pos: LogPosition, e: &'a Envelope) -> Self {
        let (quality_from, quality_to) = match &e.event {
            Event::QualityChange { from, to, .. } => (Some(from.as_str()), Some(to.as_str())),
            _ => (None, None),
        };
        let data = match &e.event {
            Event::PageView { params, .. } => serde_json::to_string(params).unwrap_or_default(),
            Event::Custom { data, .. } => data.to_string(),
            _ => String::new(),
        };
        let ctx = &e.context;
        Self {
            event_id: e.event_id.as_uuid(),
            event_type: e.event.type_name(),
            user_id: e.user_id.as_ref().map_or("", UserId::as_str),
            // The nil UUID stands for "not about a film": key columns cannot be Nullable.
            film_id: e
                .event
                .film_id()
                .map_or(uuid::Uuid::nil(), |f| *f.as_uuid()),
            occurred_at: e.occurred_at.to_sql_string(),
            received_at: e.received_at.to_sql_string(),
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
    updated_at: String,
    event_id: &'a uuid::Uuid,
}

impl<'a> ProgressRow<'a> {
    /// The progress row an event implies, if it says anything about where the viewer is.
    pub fn from_event(e: &'a Envelope) -> Option<Self> {
        let user = e.user_id.as_ref()?;
        // The nil film is "film unknown" (seed 003's player sends none): nothing to resume.
        let film_id = e.event.film_id().filter(|f| !f.as_uuid().is_nil())?;
        let finished = matches!(e.event, Event::FullView { .. });
        let position = e.event.position();
        if !finished && position.is_none() {
            return None;
        }
        Some(Self {
            user_id: user.as_str(),
            film_id: *film_id.as_uuid(),
            finished: finished as u8,
            position: position.map_or(0, |p| p.seconds()),
            updated_at: e.occurred_at.to_sql_string(),
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
}

/// Per film: the latest position report, and whether the newest event was a finish.
const PROGRESS_SELECT: &str = "SELECT toString(film_id) AS film, \
    argMaxIf(position, updated_at, finished = 0) AS last_position, \
    argMax(finished, updated_at) AS is_finished, \
    max(updated_at) AS last_seen \
    FROM ugc.progress";

pub fn film_progress(user: &UserId, film: FilmId) -> String {
    format!(
        "{PROGRESS_SELECT} WHERE user_id = {} AND film_id = toUUID({}) GROUP BY film_id",
        quote(user.as_str()),
        quote(&film.to_string())
    )
}

pub fn continue_watching(user: &UserId, limit: u32, offset: u32) -> String {
    format!(
        "{PROGRESS_SELECT} WHERE user_id = {} GROUP BY film_id HAVING is_finished = 0 \
         ORDER BY last_seen DESC, film LIMIT {limit} OFFSET {offset}",
        quote(user.as_str())
    )
}

#[derive(Deserialize)]
pub struct ProgressOut {
    film: uuid::Uuid,
    last_position: u32,
    is_finished: u8,
    last_seen: String,
}

impl ProgressOut {
    pub fn into_progress(self) -> Result<Progress, String> {
        Ok(Progress {
            film_id: FilmId::from(self.film),
            position: self.last_position,
            finished: self.is_finished != 0,
            updated_at: Timestamp::parse_sql(&self.last_seen)?,
        })
    }
}

/// Settings of the analysts' session, applied in this order. `readonly = 1` comes last:
/// after it the session can change no setting, write nothing and call no table function
/// that reaches outside (file, url, remote). A per-query `SETTINGS readonly = 1` would
/// not do: the same query could switch it back off.
pub fn analyst_session(max_seconds: u64) -> Vec<String> {
    vec![
        format!("SET max_execution_time = {}", max_seconds.max(1)),
        "SET output_format_json_quote_64bit_integers = 0".into(),
        "SET readonly = 1".into(),
    ]
}

/// Wraps an analyst's statement in a subquery, so that exactly one SELECT can run, with
/// a row cap (one extra row tells us the result was cut).
pub fn analyst_select(sql: &str, max_rows: u64) -> String {
    format!(
        "SELECT * FROM (\n{}\n) LIMIT {}",
        sql.trim().trim_end_matches(';'),
        max_rows + 1
    )
}

pub fn recent_event_ids(window_secs: u64, limit: usize) -> String {
    format!(
        "SELECT toString(event_id) AS id FROM ugc.events WHERE received_at >= now() - {window_secs} \
         ORDER BY received_at DESC LIMIT {limit}"
    )
}

pub const PING: &str = "SELECT 1";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_hostile_strings() {
        assert_eq!(quote(r"a'b\c"), r"'a\'b\\c'");
    }
}
