//! The read side of the pipeline: what the player asks ("where did I stop?", "continue
//! watching") and what analysts ask (read-only SQL). It owns the rules of asking —
//! who may run SQL, which statements, how many rows, how long — and leaves the SQL
//! itself to the store.

use std::sync::Arc;

use serde::Serialize;
use ugc_model::{FilmId, UserId};
use ugc_store::{EventStore, Progress, QueryLimits, QueryRows, StoreError};

/// Roles whose tokens may run SQL.
pub const ANALYST_ROLES: &[&str] = &["admin", "analyst"];
/// Longest statement accepted, to keep the parser's work bounded.
pub const MAX_SQL_BYTES: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("this needs a token with one of the roles: admin, analyst")]
    Forbidden,
    #[error("{0}")]
    InvalidSql(String),
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
}

/// One page of the "continue watching" list.
#[derive(Debug, Serialize)]
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

    /// Runs an analyst's statement. Only a single SELECT (or WITH … SELECT) gets through:
    /// the keyword check gives a clear error, and the store wraps the statement in a
    /// subquery under `readonly`, which is what actually enforces it.
    pub async fn analyst_sql<R: AsRef<str>>(
        &self,
        roles: &[R],
        sql: &str,
    ) -> Result<QueryRows, QueryError> {
        if !roles.iter().any(|r| ANALYST_ROLES.contains(&r.as_ref())) {
            return Err(QueryError::Forbidden);
        }
        check_select(sql)?;
        match self.store.select(sql, self.limits).await {
            Err(StoreError::Rejected(msg)) => Err(QueryError::InvalidSql(msg)),
            other => Ok(other?),
        }
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        self.store.ping().await
    }
}

fn check_select(sql: &str) -> Result<(), QueryError> {
    if sql.len() > MAX_SQL_BYTES {
        return Err(QueryError::InvalidSql(format!(
            "statement is longer than {MAX_SQL_BYTES} bytes"
        )));
    }
    let body = strip_leading_comments(sql);
    let keyword: String = body
        .chars()
        .take_while(|c| c.is_ascii_alphabetic())
        .collect::<String>()
        .to_ascii_uppercase();
    match keyword.as_str() {
        "SELECT" | "WITH" => Ok(()),
        "" => Err(QueryError::InvalidSql("empty statement".into())),
        k => Err(QueryError::InvalidSql(format!(
            "only SELECT statements may run here, not {k}"
        ))),
    }
}

fn strip_leading_comments(mut s: &str) -> &str {
    loop {
        s = s.trim_start();
        if let Some(rest) = s.strip_prefix("--") {
            s = rest.split_once('\n').map_or("", |(_, r)| r);
        } else if let Some(rest) = s.strip_prefix("/*") {
            s = rest.split_once("*/").map_or("", |(_, r)| r);
        } else {
            return s;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_select_passes_the_keyword_check() {
        assert!(check_select("  -- top films\n select 1").is_ok());
        assert!(check_select("/* x */ WITH a AS (SELECT 1) SELECT * FROM a").is_ok());
        assert!(check_select("DROP TABLE ugc.events").is_err());
        assert!(check_select("insert into x values (1)").is_err());
        assert!(check_select("   ").is_err());
    }
}
