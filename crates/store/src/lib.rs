//! The analytics store: where events end up and where every read comes from.
//!
//! [`EventStore`] is the seam. [`chdb::ChdbStore`] is the embedded implementation (the
//! ClickHouse engine as a library); [`clickhouse::ClickHouseStore`] is a ClickHouse
//! server or cluster over HTTP. Both run the same SQL from [`sql`].

pub mod analytics;
pub mod chdb;
pub mod clickhouse;
mod engine;
pub mod errors;
pub mod metered;
pub mod sandbox;
pub(crate) mod sql;

use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;
use serde_json::Value;
use ugc_model::{Envelope, EventId, FilmId, UserId};

/// The database the tables live in unless configured otherwise (analysts' SQL names
/// it: `ugc.events`).
pub use sql::DATABASE;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store cannot serve now (down, overloaded, timed out): retry later.
    #[error("the analytics store is unavailable: {0}")]
    Unavailable(String),
    /// The store understood and refused: bad SQL, a type error. Retrying won't help.
    #[error("the analytics store refused the statement: {0}")]
    Rejected(String),
    /// An analyst's statement parsed, but reaches outside what analysts may read
    /// (see [`sandbox`]).
    #[error("{0}")]
    NotAllowed(String),
    /// A query ran past its time limit.
    #[error("the query ran longer than {0:?}")]
    Timeout(Duration),
}

/// Where a record sat in the log; kept with each row so any row can be traced back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogPosition {
    pub partition: u32,
    pub offset: u64,
}

/// A log record the loader could not decode, kept with the reason.
#[derive(Clone, Debug)]
pub struct DeadLetter {
    pub position: LogPosition,
    pub reason: String,
    pub payload: Vec<u8>,
}

/// One loader batch. `token` is deterministic for the log range the batch came from,
/// so a retried insert of the same range is recognised and dropped by the store.
#[derive(Clone, Debug, Default)]
pub struct StoreBatch {
    pub token: String,
    pub events: Vec<(LogPosition, Envelope)>,
    pub dead_letters: Vec<DeadLetter>,
}

/// The viewer's last known state in one film (defined once, in `ugc-model`).
pub use ugc_model::Progress;

/// A request to erase everything stored of one user ("right to be forgotten"), up to
/// the second it was made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Erasure {
    pub job: uuid::Uuid,
    pub user: UserId,
    /// Unix seconds of the request: rows of the user that arrived up to then go.
    pub requested_secs: u64,
}

/// Bounds on an analyst's query.
#[derive(Clone, Copy, Debug)]
pub struct QueryLimits {
    pub max_rows: u64,
    pub max_time: Duration,
}

/// Rows of an analyst's query, in the column order the query gave.
#[derive(Clone, Debug, Serialize)]
pub struct QueryRows {
    pub columns: Vec<Column>,
    pub rows: Vec<serde_json::Map<String, Value>>,
    /// True when the row limit cut the result.
    pub truncated: bool,
}

/// What an operator asks of the store: how much it holds, how fresh it is, and what
/// went to dead letters lately.
#[derive(Clone, Debug, Default, Serialize)]
pub struct StoreOverview {
    /// Rows of `events` (before background merges fold repeats).
    pub rows: u64,
    /// Unix seconds of the newest stored event's arrival; `None` while empty.
    pub newest_event_secs: Option<u64>,
    /// Dead letters stored within the last hour, by reason: `undecodable` (the log
    /// record is not an event) or `refused_by_store`.
    pub dead_letters_last_hour: std::collections::BTreeMap<String, u64>,
}

#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct Column {
    pub name: String,
    #[serde(rename = "type")]
    pub type_: String,
}

#[async_trait]
pub trait EventStore: Send + Sync + 'static {
    /// Creates and migrates the schema; idempotent.
    async fn migrate(&self) -> Result<(), StoreError>;

    /// Inserts a batch. Inserting the same batch (same token, same rows) twice stores
    /// its rows once.
    async fn insert(&self, batch: &StoreBatch) -> Result<(), StoreError>;

    async fn film_progress(
        &self,
        user: &UserId,
        film: FilmId,
    ) -> Result<Option<Progress>, StoreError>;

    /// Films started and not finished, most recent first.
    async fn continue_watching(
        &self,
        user: &UserId,
        limit: u32,
        offset: u32,
    ) -> Result<Vec<Progress>, StoreError>;

    /// Runs one read-only `SELECT` for an analyst, bounded by `limits`: the engine
    /// parses it, [`sandbox::check`] admits it, and the engine runs its canonical text
    /// in a session held to `readonly` and the limits. Every caller goes through this.
    async fn select(&self, sql: &str, limits: QueryLimits) -> Result<QueryRows, StoreError>;

    /// Users and ids of the events that arrived within the last `window`, newest first, at
    /// most `limit` (`None`: an anonymous event): what the loader needs to recognise a
    /// client's retry after a restart. Ids are the clients', so they repeat across users.
    async fn recent_event_ids(
        &self,
        window: Duration,
        limit: usize,
    ) -> Result<Vec<(Option<UserId>, EventId)>, StoreError>;

    /// Records an erasure request, where every loader and API instance can read it.
    async fn record_erasure(&self, erasure: &Erasure) -> Result<(), StoreError>;

    /// Every erasure request ever recorded.
    async fn erasures(&self) -> Result<Vec<Erasure>, StoreError>;

    /// Starts deleting the user's rows up to the request (on every replica); the
    /// deletes finish in the background: see [`EventStore::rows_left`].
    async fn erase(&self, erasure: &Erasure) -> Result<(), StoreError>;

    /// Rows of the user up to the request still stored.
    async fn rows_left(&self, erasure: &Erasure) -> Result<u64, StoreError>;

    /// Answers one question of the analytics API with one statement
    /// ([`analytics::statement`]), read-only, like an analyst's query.
    async fn analytics(
        &self,
        request: &analytics::AnalyticsRequest,
    ) -> Result<analytics::AnalyticsAnswer, StoreError>;

    /// The statement [`EventStore::analytics`] runs for `request`, as this store's
    /// dialect writes it: analysts can take it to `POST /api/v1/query` and go on from it.
    fn analytics_sql(&self, request: &analytics::AnalyticsRequest) -> String;

    /// Is the store usable right now?
    async fn ping(&self) -> Result<(), StoreError>;

    /// Rows stored, the newest arrival, and dead letters by reason in the last hour.
    async fn overview(&self) -> Result<StoreOverview, StoreError>;
}
