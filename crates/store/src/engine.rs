//! What both stores are made of: a ClickHouse engine that runs a statement and answers
//! rows. The parts of [`EventStore`](crate::EventStore) that are only SQL (migrations,
//! progress reads, erasures) are written once here, over that seam; the stores keep
//! what really differs (sessions, HTTP, insert dedup, the analyst's parser).

use async_trait::async_trait;
use std::time::Duration;

use ugc_model::{EventId, FilmId, UserId};

use crate::sql::{self, CountRow, ErasureRow, ProgressOut, Schema};
use crate::{
    Erasure, EventStore, Progress, QueryLimits, QueryRows, StoreBatch, StoreError, StoreOverview,
};

#[async_trait]
pub(crate) trait Engine: Send + Sync {
    fn schema(&self) -> &Schema;
    /// Runs a statement that answers nothing (DDL, a mutation, a small insert).
    async fn execute(&self, sql: String) -> Result<(), StoreError>;
    /// Runs a SELECT and answers its rows as `JSONEachRow`.
    async fn each_row(&self, sql: String) -> Result<Vec<u8>, StoreError>;
    /// Runs a read-only SELECT of the analytics API; the embedded engine runs it in the
    /// analysts' session, so a long one never holds up the loader's inserts.
    async fn report_rows(&self, sql: String) -> Result<Vec<u8>, StoreError> {
        self.each_row(sql).await
    }
    /// Stores a batch exactly once; each engine dedups retries its own way.
    async fn write_batch(&self, batch: &StoreBatch) -> Result<(), StoreError>;
    /// Runs an analyst's statement through the sandbox, in the analysts' session.
    async fn sandboxed_select(
        &self,
        sql: &str,
        limits: QueryLimits,
    ) -> Result<QueryRows, StoreError>;
    /// One quick attempt, no retries: readiness must answer fast.
    async fn probe(&self) -> Result<(), StoreError>;
}

/// Every engine is an event store: what is only SQL is written once below, and the
/// three calls that really differ come from the engine.
#[async_trait]
impl<E: Engine + 'static> EventStore for E {
    async fn migrate(&self) -> Result<(), StoreError> {
        migrate(self).await
    }

    async fn insert(&self, batch: &StoreBatch) -> Result<(), StoreError> {
        self.write_batch(batch).await
    }

    async fn film_progress(
        &self,
        user: &UserId,
        film: FilmId,
    ) -> Result<Option<Progress>, StoreError> {
        film_progress(self, user, film).await
    }

    async fn continue_watching(
        &self,
        user: &UserId,
        limit: u32,
        offset: u32,
    ) -> Result<Vec<Progress>, StoreError> {
        continue_watching(self, user, limit, offset).await
    }

    async fn select(&self, sql: &str, limits: QueryLimits) -> Result<QueryRows, StoreError> {
        self.sandboxed_select(sql, limits).await
    }

    async fn recent_event_ids(
        &self,
        window: Duration,
        limit: usize,
    ) -> Result<Vec<(Option<UserId>, EventId)>, StoreError> {
        recent_event_ids(self, window, limit).await
    }

    async fn record_erasure(&self, erasure: &Erasure) -> Result<(), StoreError> {
        record_erasure(self, erasure).await
    }

    async fn erasures(&self) -> Result<Vec<Erasure>, StoreError> {
        erasures(self).await
    }

    async fn erase(&self, erasure: &Erasure) -> Result<(), StoreError> {
        erase(self, erasure).await
    }

    async fn rows_left(&self, erasure: &Erasure) -> Result<u64, StoreError> {
        rows_left(self, erasure).await
    }

    async fn overview(&self) -> Result<StoreOverview, StoreError> {
        overview(self).await
    }

    async fn analytics(
        &self,
        request: &crate::analytics::AnalyticsRequest,
    ) -> Result<crate::analytics::AnalyticsAnswer, StoreError> {
        analytics(self, request).await
    }

    fn analytics_sql(&self, request: &crate::analytics::AnalyticsRequest) -> String {
        crate::analytics::statement(self.schema(), request)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.probe().await
    }
}

async fn analytics(
    engine: &(impl Engine + ?Sized),
    request: &crate::analytics::AnalyticsRequest,
) -> Result<crate::analytics::AnalyticsAnswer, StoreError> {
    let out = engine
        .report_rows(crate::analytics::statement(engine.schema(), request))
        .await?;
    crate::analytics::decode(request, &out)
}

pub(crate) async fn rows<T: serde::de::DeserializeOwned>(
    engine: &(impl Engine + ?Sized),
    sql: String,
) -> Result<Vec<T>, StoreError> {
    let out = engine.each_row(sql).await?;
    out.split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| {
            serde_json::from_slice(l)
                .map_err(|e| StoreError::Unavailable(format!("unreadable store output: {e}")))
        })
        .collect()
}

/// Creates the schema and applies the migrations not yet recorded, in order.
pub(crate) async fn migrate(engine: &(impl Engine + ?Sized)) -> Result<(), StoreError> {
    let s = engine.schema();
    engine.execute(sql::create_database(s)).await?;
    for stmt in sql::create_migrations(s) {
        engine.execute(stmt).await?;
    }
    #[derive(serde::Deserialize)]
    struct Applied {
        version: u32,
    }
    let applied: Vec<u32> = rows::<Applied>(engine, sql::applied_migrations(s))
        .await?
        .into_iter()
        .map(|a| a.version)
        .collect();
    for m in sql::MIGRATIONS
        .iter()
        .filter(|m| !applied.contains(&m.version))
    {
        for stmt in (m.statements)(s) {
            engine.execute(stmt).await?;
        }
        engine.execute(sql::record_migration(s, m)).await?;
        tracing::info!(
            version = m.version,
            name = m.name,
            "schema migration applied"
        );
    }
    Ok(())
}

async fn film_progress(
    engine: &(impl Engine + ?Sized),
    user: &UserId,
    film: FilmId,
) -> Result<Option<Progress>, StoreError> {
    let out: Vec<ProgressOut> =
        rows(engine, sql::film_progress(engine.schema(), user, film)).await?;
    Ok(ProgressOut::into_progress_list(out)?.into_iter().next())
}

async fn continue_watching(
    engine: &(impl Engine + ?Sized),
    user: &UserId,
    limit: u32,
    offset: u32,
) -> Result<Vec<Progress>, StoreError> {
    let out: Vec<ProgressOut> = rows(
        engine,
        sql::continue_watching(engine.schema(), user, limit, offset),
    )
    .await?;
    ProgressOut::into_progress_list(out)
}

/// Ids of recently received events with their users (`None`: an anonymous event,
/// stored with an empty user), newest first.
async fn recent_event_ids(
    engine: &(impl Engine + ?Sized),
    window: Duration,
    limit: usize,
) -> Result<Vec<(Option<UserId>, EventId)>, StoreError> {
    #[derive(serde::Deserialize)]
    struct Row {
        user_id: String,
        id: uuid::Uuid,
    }
    let out: Vec<Row> = rows(
        engine,
        sql::recent_event_ids(engine.schema(), window.as_secs(), limit),
    )
    .await?;
    Ok(out
        .into_iter()
        .map(|r| (UserId::parse(r.user_id).ok(), EventId::from(r.id)))
        .collect())
}

async fn record_erasure(engine: &(impl Engine + ?Sized), e: &Erasure) -> Result<(), StoreError> {
    engine
        .execute(sql::insert_erasure(
            engine.schema(),
            e.job,
            &e.user,
            e.requested_secs,
        ))
        .await
}

async fn erasures(engine: &(impl Engine + ?Sized)) -> Result<Vec<Erasure>, StoreError> {
    let out: Vec<ErasureRow> = rows(engine, sql::erasures(engine.schema())).await?;
    out.into_iter().map(ErasureRow::into_erasure).collect()
}

async fn erase(engine: &(impl Engine + ?Sized), e: &Erasure) -> Result<(), StoreError> {
    for stmt in sql::erase_user(engine.schema(), &e.user, e.requested_secs) {
        engine.execute(stmt).await?;
    }
    Ok(())
}

async fn overview(engine: &(impl Engine + ?Sized)) -> Result<StoreOverview, StoreError> {
    let events: Vec<sql::EventsOverviewRow> =
        rows(engine, sql::events_overview(engine.schema())).await?;
    let dead: Vec<sql::ReasonCountRow> =
        rows(engine, sql::dead_letters_last_hour(engine.schema())).await?;
    let first = events.first();
    Ok(StoreOverview {
        rows: first.map_or(0, |r| r.n),
        newest_event_secs: first.map(|r| r.newest).filter(|s| *s > 0),
        dead_letters_last_hour: dead.into_iter().map(|r| (r.reason, r.n)).collect(),
    })
}

async fn rows_left(engine: &(impl Engine + ?Sized), e: &Erasure) -> Result<u64, StoreError> {
    let out: Vec<CountRow> = rows(
        engine,
        sql::user_rows(engine.schema(), &e.user, e.requested_secs),
    )
    .await?;
    Ok(out.first().map_or(0, |r| r.n))
}
