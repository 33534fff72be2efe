//! The embedded store: ClickHouse's engine in-process through libchdb.
//!
//! chDB runs one engine per process; its calls block, so each connection sits behind a
//! mutex and every call runs on tokio's blocking pool. Two sessions share the engine:
//! one for the product's own statements (inserts, progress reads) and one, locked
//! read-only with a time limit, for analysts' SQL, so a slow analyst query never holds
//! up the loader.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
use ugc_chdb::{Connection, Library};
use ugc_model::{EventId, FilmId, UserId};

use crate::sql::{self, DeadLetterRow, EventRow, ProgressOut, ProgressRow, Schema};
use crate::{Column, EventStore, Progress, QueryLimits, QueryRows, StoreBatch, StoreError};

/// ClickHouse error codes that mean "the statement is wrong", not "try again".
const TIMEOUT_EXCEEDED: u32 = 159;

#[derive(Clone, Debug)]
pub struct ChdbConfig {
    pub library: PathBuf,
    pub data_dir: PathBuf,
    /// Extra engine arguments, e.g. `--max_server_memory_usage=2000000000`.
    pub engine_args: Vec<String>,
    /// Time limit of analysts' queries.
    pub analyst_max_time: Duration,
}

#[derive(Clone)]
pub struct ChdbStore {
    conn: Arc<Mutex<Connection>>,
    analyst: Arc<Mutex<Connection>>,
    schema: Schema,
}

impl ChdbStore {
    pub fn open(config: &ChdbConfig) -> Result<Self, StoreError> {
        let lib =
            Library::load(&config.library).map_err(|e| StoreError::Unavailable(e.to_string()))?;
        std::fs::create_dir_all(&config.data_dir).map_err(|e| {
            StoreError::Unavailable(format!("cannot create {}: {e}", config.data_dir.display()))
        })?;
        let unavailable = |e: ugc_chdb::Error| StoreError::Unavailable(e.to_string());
        let mut conn =
            Connection::open(&lib, &config.data_dir, &config.engine_args).map_err(unavailable)?;
        conn.query(&sql::create_database(&Schema::embedded()), "TabSeparated")
            .map_err(unavailable)?;
        let mut analyst = Connection::open(&lib, &config.data_dir, &[]).map_err(unavailable)?;
        for stmt in sql::analyst_session(config.analyst_max_time.as_secs()) {
            analyst.query(&stmt, "TabSeparated").map_err(unavailable)?;
        }
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
            analyst: Arc::new(Mutex::new(analyst)),
            schema: Schema::embedded(),
        })
    }

    pub fn data_dir_of(data_dir: &Path) -> PathBuf {
        data_dir.join("chdb")
    }

    /// Runs one statement on the blocking pool and returns its raw output.
    async fn run(&self, sql: String, format: &'static str) -> Result<Vec<u8>, StoreError> {
        Self::run_on(self.conn.clone(), sql, format).await
    }

    async fn run_on(
        conn: Arc<Mutex<Connection>>,
        sql: String,
        format: &'static str,
    ) -> Result<Vec<u8>, StoreError> {
        tokio::task::spawn_blocking(move || {
            // A poisoned lock means a panic mid-call on another thread; the connection
            // itself is still a valid handle, so keep serving.
            let mut conn = conn.lock().unwrap_or_else(|p| p.into_inner());
            conn.query(&sql, format)
                .map(|o| o.data)
                .map_err(|e| match e.code() {
                    Some(TIMEOUT_EXCEEDED) => StoreError::Timeout(Duration::ZERO),
                    Some(_) => StoreError::Rejected(e.to_string()),
                    None => StoreError::Unavailable(e.to_string()),
                })
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("store task failed: {e}")))?
    }

    async fn rows<T: serde::de::DeserializeOwned>(
        &self,
        sql: String,
    ) -> Result<Vec<T>, StoreError> {
        let out = self.run(sql, "JSONEachRow").await?;
        out.split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| {
                serde_json::from_slice(l)
                    .map_err(|e| StoreError::Unavailable(format!("unreadable store output: {e}")))
            })
            .collect()
    }

    async fn insert_rows<R: serde::Serialize>(
        &self,
        table: &str,
        token: &str,
        rows: impl Iterator<Item = R>,
    ) -> Result<(), StoreError> {
        let mut body = sql::insert_statement(&self.schema, table, token).into_bytes();
        let header_len = body.len();
        for row in rows {
            serde_json::to_writer(&mut body, &row)
                .map_err(|e| StoreError::Rejected(e.to_string()))?;
            body.push(b'\n');
        }
        if body.len() == header_len {
            return Ok(());
        }
        // The body is JSON text plus our header, hence valid UTF-8.
        let text = String::from_utf8(body).map_err(|e| StoreError::Rejected(e.to_string()))?;
        self.run(text, "JSONEachRow").await.map(drop)
    }
}

#[async_trait]
impl EventStore for ChdbStore {
    async fn migrate(&self) -> Result<(), StoreError> {
        let s = &self.schema;
        self.run(sql::create_database(s), "TabSeparated").await?;
        for stmt in sql::create_migrations(s) {
            self.run(stmt, "TabSeparated").await?;
        }
        #[derive(serde::Deserialize)]
        struct Applied {
            version: u32,
        }
        let applied: Vec<u32> = self
            .rows::<Applied>(sql::applied_migrations(s))
            .await?
            .into_iter()
            .map(|a| a.version)
            .collect();
        for m in sql::MIGRATIONS
            .iter()
            .filter(|m| !applied.contains(&m.version))
        {
            for stmt in (m.statements)(s) {
                self.run(stmt, "TabSeparated").await?;
            }
            self.run(sql::record_migration(s, m), "TabSeparated")
                .await?;
            tracing::info!(
                version = m.version,
                name = m.name,
                "schema migration applied"
            );
        }
        Ok(())
    }

    async fn insert(&self, batch: &StoreBatch) -> Result<(), StoreError> {
        // Each table gets its own token derived from the batch's: the dedup window is per
        // table, and an insert that died between tables is completed on retry.
        self.insert_rows(
            "events",
            &format!("{}:events", batch.token),
            batch
                .events
                .iter()
                .map(|(p, e)| EventRow::for_dialect(&self.schema.dialect, *p, e)),
        )
        .await?;
        self.insert_rows(
            "progress",
            &format!("{}:progress", batch.token),
            batch
                .events
                .iter()
                .filter_map(|(_, e)| ProgressRow::for_dialect(&self.schema.dialect, e)),
        )
        .await?;
        self.insert_rows(
            "dead_letters",
            &format!("{}:dead", batch.token),
            batch.dead_letters.iter().map(|d| DeadLetterRow {
                log_partition: d.position.partition,
                log_offset: d.position.offset,
                reason: &d.reason,
                payload: String::from_utf8_lossy(&d.payload).into_owned(),
            }),
        )
        .await
    }

    async fn film_progress(
        &self,
        user: &UserId,
        film: FilmId,
    ) -> Result<Option<Progress>, StoreError> {
        let rows: Vec<ProgressOut> = self
            .rows(sql::film_progress(&self.schema, user, film))
            .await?;
        Ok(ProgressOut::into_progress_list(rows)?.into_iter().next())
    }

    async fn continue_watching(
        &self,
        user: &UserId,
        limit: u32,
        offset: u32,
    ) -> Result<Vec<Progress>, StoreError> {
        let rows: Vec<ProgressOut> = self
            .rows(sql::continue_watching(&self.schema, user, limit, offset))
            .await?;
        ProgressOut::into_progress_list(rows)
    }

    async fn select(&self, sql: &str, limits: QueryLimits) -> Result<QueryRows, StoreError> {
        let wrapped = sql::analyst_select(sql, limits.max_rows);
        let out = Self::run_on(self.analyst.clone(), wrapped, "JSON")
            .await
            .map_err(|e| match e {
                StoreError::Timeout(_) => StoreError::Timeout(limits.max_time),
                e => e,
            })?;
        parse_json_format(&out, limits.max_rows)
    }

    async fn recent_event_ids(
        &self,
        window: Duration,
        limit: usize,
    ) -> Result<Vec<(Option<UserId>, EventId)>, StoreError> {
        #[derive(serde::Deserialize)]
        struct Row {
            user_id: String,
            id: uuid::Uuid,
        }
        let rows: Vec<Row> = self
            .rows(sql::recent_event_ids(&self.schema, window.as_secs(), limit))
            .await?;
        // Anonymous events are stored with an empty user.
        Ok(rows
            .into_iter()
            .map(|r| (UserId::parse(r.user_id).ok(), EventId::from(r.id)))
            .collect())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.run(sql::PING.into(), "TabSeparated").await.map(drop)
    }
}

/// Reads ClickHouse's `FORMAT JSON` output: `{"meta":[{name,type}],"data":[{...}],...}`.
pub fn parse_json_format(out: &[u8], max_rows: u64) -> Result<QueryRows, StoreError> {
    #[derive(serde::Deserialize)]
    struct Out {
        meta: Vec<Column>,
        data: Vec<serde_json::Map<String, Value>>,
    }
    let mut out: Out = serde_json::from_slice(out)
        .map_err(|e| StoreError::Unavailable(format!("unreadable query output: {e}")))?;
    let truncated = out.data.len() as u64 > max_rows;
    out.data.truncate(max_rows as usize);
    Ok(QueryRows {
        columns: out.meta,
        rows: out.data,
        truncated,
    })
}
