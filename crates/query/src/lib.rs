//! The read side of the pipeline: what the player asks ("where did I stop?", "continue
//! watching") and what analysts ask (read-only SQL). It owns the rules of asking —
//! who may run SQL, which statements, how many rows, how long — and leaves the SQL
//! itself to the store. Beside it, the one write an admin asks of the store: erasing a
//! user's data ([`erasure`]).

pub mod erasure;

use std::sync::Arc;

use serde::Serialize;
use ugc_model::{FilmId, Progress, UserId};
/// The analytics questions and answers, typed, for the edge to parse into and answer from.
pub use ugc_store::analytics;
use ugc_store::analytics::{AnalyticsAnswer, AnalyticsRequest};
/// The store's types this crate's answers carry, so its callers need not reach the store.
pub use ugc_store::{Column, QueryRows, StoreError};
use ugc_store::{EventStore, QueryLimits};

/// An analytics answer, how long the store took, and the statement it ran.
pub struct Analyzed {
    pub answer: AnalyticsAnswer,
    pub took: std::time::Duration,
    pub sql: String,
}

/// Roles whose tokens may run SQL.
pub const ANALYST_ROLES: &[&str] = &["admin", "analyst"];
/// Longest statement accepted, to keep the parser's work bounded.
pub const MAX_SQL_BYTES: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("this needs a token with one of the roles: admin, analyst")]
    Forbidden,
    #[error("this needs a token with the role admin")]
    AdminOnly,
    #[error("{0}")]
    InvalidSql(String),
    /// The statement parsed, but reaches outside what analysts may read.
    #[error("{0}")]
    NotAllowed(String),
    #[error("{0}")]
    InvalidParameter(&'static str, String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Clone)]
pub struct QueryService {
    store: Arc<dyn EventStore>,
    limits: QueryLimits,
    max_page: u32,
    erasures: erasure::Erasures,
}

/// One page of the "continue watching" list.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ProgressPage {
    pub items: Vec<Progress>,
    pub limit: u32,
    pub offset: u32,
    /// Offset of the next page, absent on the last page.
    pub next_offset: Option<u32>,
}

impl QueryService {
    pub fn new(store: Arc<dyn EventStore>, limits: QueryLimits, max_page: u32) -> Self {
        Self {
            erasures: erasure::Erasures::new(store.clone()),
            store,
            limits,
            max_page: max_page.max(1),
        }
    }

    pub async fn film_progress(
        &self,
        user: &UserId,
        film: FilmId,
    ) -> Result<Option<Progress>, QueryError> {
        Ok(self.store.film_progress(user, film).await?)
    }

    pub async fn continue_watching(
        &self,
        user: &UserId,
        limit: Option<u32>,
        offset: Option<u32>,
    ) -> Result<ProgressPage, QueryError> {
        let limit = limit.unwrap_or(20);
        if limit == 0 || limit > self.max_page {
            return Err(QueryError::InvalidParameter(
                "limit",
                format!("must be between 1 and {}", self.max_page),
            ));
        }
        let offset = offset.unwrap_or(0);
        // One extra row answers "is there a next page?" without a count query.
        let mut items = self
            .store
            .continue_watching(user, limit + 1, offset)
            .await?;
        let more = items.len() > limit as usize;
        items.truncate(limit as usize);
        Ok(ProgressPage {
            items,
            limit,
            offset,
            next_offset: more.then_some(offset + limit),
        })
    }

    /// Runs an analyst's statement. Who may ask is decided here; what the statement
    /// may touch is decided by the store from the engine's own parse of it
    /// (`ugc_store::sandbox`), and what it may use by the engine's read-only session.
    pub async fn analyst_sql<R: AsRef<str>>(
        &self,
        roles: &[R],
        sql: &str,
    ) -> Result<QueryRows, QueryError> {
        if !roles.iter().any(|r| ANALYST_ROLES.contains(&r.as_ref())) {
            return Err(QueryError::Forbidden);
        }
        if sql.len() > MAX_SQL_BYTES {
            return Err(QueryError::InvalidSql(format!(
                "statement is longer than {MAX_SQL_BYTES} bytes"
            )));
        }
        if sql.trim().is_empty() {
            return Err(QueryError::InvalidSql("empty statement".into()));
        }
        match self.store.select(sql, self.limits).await {
            Err(StoreError::Rejected(msg)) => Err(QueryError::InvalidSql(msg)),
            Err(StoreError::NotAllowed(msg)) => Err(QueryError::NotAllowed(msg)),
            other => Ok(other?),
        }
    }

    /// Answers one question of the analytics API (roles `admin` or `analyst`), with the
    /// time the store took to answer it.
    pub async fn analytics<R: AsRef<str>>(
        &self,
        roles: &[R],
        request: &AnalyticsRequest,
    ) -> Result<Analyzed, QueryError> {
        if !roles.iter().any(|r| ANALYST_ROLES.contains(&r.as_ref())) {
            return Err(QueryError::Forbidden);
        }
        let started = std::time::Instant::now();
        let answer = self.store.analytics(request).await?;
        Ok(Analyzed {
            answer,
            took: started.elapsed(),
            sql: self.store.analytics_sql(request),
        })
    }

    /// Erasure of users' data, for admins.
    pub fn erasures(&self) -> &erasure::Erasures {
        &self.erasures
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        self.store.ping().await
    }
}
