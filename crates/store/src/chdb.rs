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

use crate::engine::Engine;
use crate::errors;
use crate::sandbox::{self, ParsedSelect};
use crate::sql::{self, DeadLetterRow, EventRow, ProgressRow, Schema};
use crate::{Column, QueryLimits, QueryRows, StoreBatch, StoreError};

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
        let schema = Schema::embedded();
        let access = write_access_config(&config.data_dir, &schema)?;
        let mut args = vec![format!("--config-file={}", access.display())];
        args.extend(config.engine_args.iter().cloned());
        let mut conn = Connection::open(&lib, &config.data_dir, &args).map_err(unavailable)?;
        conn.query(&sql::create_database(&schema), "TabSeparated")
            .map_err(unavailable)?;
        let mut analyst = Connection::open(&lib, &config.data_dir, &[]).map_err(unavailable)?;
        for stmt in sql::analyst_session(&schema, config.analyst_max_time.as_secs()) {
            analyst.query(&stmt, "TabSeparated").map_err(unavailable)?;
        }
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
            analyst: Arc::new(Mutex::new(analyst)),
            schema,
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
            conn.query(&sql, format).map(|o| o.data).map_err(classify)
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("store task failed: {e}")))?
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
        self.run(text, "JSONEachRow")
            .await
            .map(drop)
            .map_err(errors::for_insert)
    }
}

#[async_trait]
impl Engine for ChdbStore {
    fn schema(&self) -> &Schema {
        &self.schema
    }

    async fn execute(&self, sql: String) -> Result<(), StoreError> {
        self.run(sql, "TabSeparated").await.map(drop)
    }

    async fn each_row(&self, sql: String) -> Result<Vec<u8>, StoreError> {
        self.run(sql, "JSONEachRow").await
    }

    async fn report_rows(&self, sql: String) -> Result<Vec<u8>, StoreError> {
        Self::run_on(self.analyst.clone(), sql, "JSONEachRow").await
    }

    async fn write_batch(&self, batch: &StoreBatch) -> Result<(), StoreError> {
        // Each table gets its own token derived from the batch's: the dedup window is per
        // table, and an insert that died between tables is completed on retry. Progress
        // goes first, so an event seen in `events` has its position readable too.
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
            "events",
            &format!("{}:events", batch.token),
            batch
                .events
                .iter()
                .map(|(p, e)| EventRow::for_dialect(&self.schema.dialect, *p, e)),
        )
        .await?;
        let loaded_at = sql::now_seconds();
        self.insert_rows(
            "dead_letters",
            &format!("{}:dead", batch.token),
            batch.dead_letters.iter().map(|d| DeadLetterRow {
                log_partition: d.position.partition,
                log_offset: d.position.offset,
                reason: &d.reason,
                payload: String::from_utf8_lossy(&d.payload).into_owned(),
                loaded_at,
            }),
        )
        .await
    }

    async fn sandboxed_select(
        &self,
        sql: &str,
        limits: QueryLimits,
    ) -> Result<QueryRows, StoreError> {
        let (conn, sql, db) = (
            self.analyst.clone(),
            sql.to_owned(),
            self.schema.database().to_owned(),
        );
        let out = tokio::task::spawn_blocking(move || {
            let mut conn = conn.lock().unwrap_or_else(|p| p.into_inner());
            let parsed = parse_with(&mut conn, &sql)?;
            sandbox::check(&parsed, &db).map_err(|r| StoreError::NotAllowed(r.0))?;
            // Not FORMAT JSON: chDB 26.5 writes a broken document for an empty result
            // WITH TOTALS; this format drops totals, which the answer has no place for.
            conn.query(
                &sandbox::wrapped(&parsed, limits.max_rows),
                "JSONCompactEachRowWithNamesAndTypes",
            )
            .map(|o| o.data)
            .map_err(classify)
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("store task failed: {e}")))?
        .map_err(|e| match e {
            StoreError::Timeout(_) => StoreError::Timeout(limits.max_time),
            e => e,
        })?;
        parse_compact_format(&out, limits.max_rows)
    }

    async fn probe(&self) -> Result<(), StoreError> {
        self.run(sql::PING.into(), "TabSeparated").await.map(drop)
    }
}

/// chDB's errors carry ClickHouse's codes, read as a server's are; an error without a
/// code is the library failing, not the statement.
fn classify(e: ugc_chdb::Error) -> StoreError {
    match e.code() {
        Some(_) => errors::classify(e.to_string()),
        None => StoreError::Unavailable(e.to_string()),
    }
}

/// Asks the engine behind `conn` to parse an analyst's statement, without running it
/// (see [`sandbox`]): its canonical text, then its syntax tree.
pub(crate) fn parse_with(conn: &mut Connection, sql: &str) -> Result<ParsedSelect, StoreError> {
    let out = conn
        .query(&sandbox::format_query(sql), "JSONEachRow")
        .map_err(classify)?;
    let canonical = sandbox::read_formatted(&out.data)
        .map_err(|e| StoreError::Rejected(format!("unreadable parse of the statement: {e}")))?;
    let out = conn
        .query(&sandbox::explain_ast(&canonical), "JSONEachRow")
        .map_err(classify)?;
    sandbox::read_ast(canonical, &out.data)
        .map_err(|e| StoreError::Rejected(format!("unreadable syntax tree of the statement: {e}")))
}

/// The engine's access configuration: its one user may do anything in the product's
/// database and read a few `system` catalogues, and holds no grant on sources outside
/// it (`FILE`, `URL`, `S3`, `REMOTE`, ...). So the engine itself refuses the table
/// functions that read files or the network, and clickhouse-local's overlay of the file
/// system on `default` (``SELECT * FROM `/etc/passwd` ``), whatever SQL reaches it.
/// Written beside the engine's directory on every start.
fn write_access_config(data_dir: &Path, schema: &Schema) -> Result<PathBuf, StoreError> {
    let dir = PathBuf::from(format!("{}.access", data_dir.display()));
    let write = |name: &str, text: String| {
        std::fs::write(dir.join(name), text).map_err(|e| {
            StoreError::Unavailable(format!("cannot write {}: {e}", dir.join(name).display()))
        })
    };
    std::fs::create_dir_all(&dir)
        .map_err(|e| StoreError::Unavailable(format!("cannot create {}: {e}", dir.display())))?;
    let mut grants = format!("<query>GRANT ALL ON {}.*</query>", schema.database());
    for t in sandbox::SYSTEM_TABLES {
        grants.push_str(&format!("<query>GRANT SELECT ON system.{t}</query>"));
    }
    write(
        "users.xml",
        format!(
            "<clickhouse>\n  <profiles><default/></profiles>\n  <quotas><default/></quotas>\n  \
             <users><default>\n    <no_password/>\n    <networks><ip>::/0</ip></networks>\n    \
             <profile>default</profile><quota>default</quota>\n    <grants>{grants}</grants>\n  \
             </default></users>\n</clickhouse>\n"
        ),
    )?;
    let users = dir.join("users.xml");
    write(
        "config.xml",
        format!(
            "<clickhouse><users_config>{}</users_config></clickhouse>\n",
            users
                .display()
                .to_string()
                .replace('&', "&amp;")
                .replace('<', "&lt;")
        ),
    )?;
    Ok(dir.join("config.xml"))
}

/// Reads `JSONCompactEachRowWithNamesAndTypes`: a line of names, a line of types, then
/// a JSON array per row.
fn parse_compact_format(out: &[u8], max_rows: u64) -> Result<QueryRows, StoreError> {
    let unreadable = |e: String| StoreError::Rejected(format!("unreadable query output: {e}"));
    let mut lines = out.split(|b| *b == b'\n').filter(|l| !l.is_empty());
    let mut header = || -> Result<Vec<String>, StoreError> {
        let line = lines.next().ok_or_else(|| unreadable("no header".into()))?;
        serde_json::from_slice(line).map_err(|e| unreadable(e.to_string()))
    };
    let (names, types) = (header()?, header()?);
    let columns: Vec<Column> = names
        .into_iter()
        .zip(types)
        .map(|(name, type_)| Column { name, type_ })
        .collect();
    let mut rows = Vec::new();
    let mut truncated = false;
    for line in lines {
        if rows.len() as u64 == max_rows {
            truncated = true;
            break;
        }
        let values: Vec<Value> =
            serde_json::from_slice(line).map_err(|e| unreadable(e.to_string()))?;
        rows.push(columns.iter().map(|c| c.name.clone()).zip(values).collect());
    }
    Ok(QueryRows {
        columns,
        rows,
        truncated,
    })
}

/// Reads ClickHouse's `FORMAT JSON` output: `{"meta":[{name,type}],"data":[{...}],...}`.
pub fn parse_json_format(out: &[u8], max_rows: u64) -> Result<QueryRows, StoreError> {
    #[derive(serde::Deserialize)]
    struct Out {
        meta: Vec<Column>,
        data: Vec<serde_json::Map<String, Value>>,
    }
    // Output the engine wrote but we cannot read is an answer to this statement, not
    // an outage: the client's to change, never worth a retry.
    let mut out: Out = serde_json::from_slice(out)
        .map_err(|e| StoreError::Rejected(format!("unreadable query output: {e}")))?;
    let truncated = out.data.len() as u64 > max_rows;
    out.data.truncate(max_rows as usize);
    Ok(QueryRows {
        columns: out.meta,
        rows: out.data,
        truncated,
    })
}
