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

/// Admits one SELECT without a SETTINGS clause. The engine's read-only session is the
/// real guard, but a query-level `SETTINGS readonly = 0` lifts it in the embedded engine
/// (seen with chDB 26.5), so settings are refused here: analysts get fixed limits.
fn check_select(sql: &str) -> Result<(), QueryError> {
    if sql.len() > MAX_SQL_BYTES {
        return Err(QueryError::InvalidSql(format!(
            "statement is longer than {MAX_SQL_BYTES} bytes"
        )));
    }
    let words = bare_words(sql);
    match words.first().map(|w| w.to_ascii_uppercase()).as_deref() {
        Some("SELECT" | "WITH") => {}
        None => return Err(QueryError::InvalidSql("empty statement".into())),
        Some(k) => {
            return Err(QueryError::InvalidSql(format!(
                "only SELECT statements may run here, not {k}"
            )));
        }
    }
    if words.iter().any(|w| w.eq_ignore_ascii_case("SETTINGS")) {
        return Err(QueryError::InvalidSql(
            "SETTINGS clauses are not allowed: analysts' queries run with fixed limits".into(),
        ));
    }
    Ok(())
}

/// The unquoted words of a statement: string literals, quoted identifiers and comments
/// are skipped, so `'SETTINGS'` in a string or `` `settings` `` as a column is no keyword.
fn bare_words(sql: &str) -> Vec<&str> {
    let b = sql.as_bytes();
    let mut words = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            q @ (b'\'' | b'"' | b'`') => {
                i += 1;
                while i < b.len() && b[i] != q {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            }
            b'-' if b.get(i + 1) == Some(&b'-') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i < b.len() && !(b[i] == b'*' && b.get(i + 1) == Some(&b'/')) {
                    i += 1;
                }
                i += 2;
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                let start = i;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                    i += 1;
                }
                words.push(&sql[start..i]);
            }
            _ => i += 1,
        }
    }
    words
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

    #[test]
    fn settings_clauses_are_refused_but_the_word_in_strings_is_not() {
        assert!(check_select("SELECT 1 SETTINGS readonly = 0").is_err());
        assert!(check_select("select * from (select 1 settings max_threads=1)").is_err());
        assert!(check_select("SELECT 'SETTINGS' AS s, `settings` FROM t -- settings").is_ok());
        assert!(check_select("SELECT 'it\\'s SETTINGS' /* SETTINGS */").is_ok());
    }
}
