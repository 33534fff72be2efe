//! A ClickHouse server, or a cluster, over its HTTP interface.
//!
//! The SQL is [`sql`]'s, the same as the embedded engine's, built for the server's
//! [`Dialect`] (detected with `SELECT version()` when connecting) and, for a cluster,
//! over replicated local tables behind `Distributed` tables of the usual names.
//!
//! Transport: the official `clickhouse` crate (hyper; ClickHouse's LZ4 framing for
//! inserts). Its typed rows are not used: its RowBinary layouts differ by server version
//! (DateTime64 vs DateTime) and its typed SELECT does not work against 18.16. Rows go
//! in as JSONEachRow built by [`sql`] (the embedded engine's rows, LZ4-compressed on the
//! wire), and results come back as JSONEachRow/JSON text, typed on our side.
//!
//! Cluster inserts go into the `Distributed` tables with `insert_distributed_sync = 1`:
//! one request; the server splits the block by the same shard key the reads use; the
//! call returns only once every shard has its part, so the loader never commits rows
//! a shard does not hold; and each shard's part of a retried batch is the same block as
//! before, which its replicated table drops. Per-shard inserts from here would need the
//! topology and the hash on our side for no gain in safety.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;

use crate::chdb::{parse_json_format, parse_with};
use crate::engine::{self, Engine};
use crate::errors::{self, for_insert};
use crate::sandbox;
use crate::sql::{self, DeadLetterRow, Dialect, EventRow, ProgressRow, Schema};
use crate::{QueryLimits, QueryRows, StoreBatch, StoreError};

#[derive(Clone, Debug)]
pub struct ClickHouseConfig {
    /// HTTP interface, e.g. `http://127.0.0.1:8123`.
    pub url: String,
    pub user: Option<String>,
    pub password: Option<String>,
    pub database: String,
    /// The cluster's name in the servers' `remote_servers`, for a cluster.
    pub cluster: Option<String>,
    /// Time limit of analysts' queries.
    pub analyst_max_time: Duration,
    /// libchdb.so, whose ClickHouse parser reads analysts' statements (see
    /// `sandboxed_select`); loaded on the first analyst query.
    pub parser_library: PathBuf,
    /// Longest any one request may take before it counts as failed.
    pub request_timeout: Duration,
    /// Attempts per call on transient errors, and the first and longest pause between them.
    pub attempts: u32,
    pub retry_min: Duration,
    pub retry_max: Duration,
}

impl ClickHouseConfig {
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            user: None,
            password: None,
            database: sql::DATABASE.to_owned(),
            cluster: None,
            analyst_max_time: Duration::from_secs(10),
            parser_library: std::env::var_os("UGC_CHDB_LIB")
                .map(PathBuf::from)
                .unwrap_or_else(ugc_chdb::default_library_path),
            request_timeout: Duration::from_secs(120),
            attempts: 3,
            retry_min: Duration::from_millis(100),
            retry_max: Duration::from_secs(2),
        }
    }
}

pub use crate::sql::{KAFKA_ENGINE_HOURLY_VIEW, KAFKA_ENGINE_TABLE, KAFKA_ENGINE_VIEW};

/// Where a Kafka engine table reads ugc's log ([`ClickHouseStore::create_kafka_engine`]).
#[derive(Clone, Debug)]
pub struct KafkaEngineSource {
    /// Bootstrap brokers, `host:port[,host:port...]`, as the server reaches them.
    pub brokers: String,
    pub topics: Vec<String>,
    /// The engine's consumer group: not the loaders' (they would share the records out).
    pub group: String,
    /// Consumers of the engine table, at most the topic's partitions.
    pub consumers: u32,
}

pub struct ClickHouseStore {
    client: ::clickhouse::Client,
    /// The same, compressing request bodies.
    inserter: ::clickhouse::Client,
    analyst: ::clickhouse::Client,
    schema: Schema,
    config: ClickHouseConfig,
    /// Tokens of inserts whose outcome is unknown, on servers that cannot drop a
    /// retried insert themselves (18.16 on one node): their next attempt checks first.
    uncertain: Mutex<HashSet<String>>,
    /// The ClickHouse parser that reads analysts' statements, once loaded.
    parser: tokio::sync::OnceCell<Arc<Mutex<ugc_chdb::Connection>>>,
}

impl ClickHouseStore {
    /// Connects and detects the server's version. Fails with `Unavailable` while the
    /// server does not answer (after the configured retries).
    pub async fn connect(config: ClickHouseConfig) -> Result<Self, StoreError> {
        // Answers uncompressed: 18.16 sends an empty body for `compress=1` over HTTP,
        // and what we read is small. Inserts, the bulk of the bytes, go LZ4-compressed.
        let mut client = ::clickhouse::Client::default()
            .with_url(config.url.trim_end_matches('/'))
            .with_compression(::clickhouse::Compression::None)
            .with_validation(false);
        if let Some(u) = &config.user {
            client = client.with_user(u);
        }
        if let Some(p) = &config.password {
            client = client.with_password(p);
        }
        if config.cluster.is_some() {
            // Reads and writes prefer the same replicas (the node we talk to for its own
            // shard, then the first live replica in config order), so a viewer reads
            // what was just written; a failed replica is skipped for both.
            client = client
                .with_option("insert_distributed_sync", "1")
                .with_option("load_balancing", "in_order");
        }
        let inserter = client
            .clone()
            .with_compression(::clickhouse::Compression::Lz4);
        let mut analyst = client
            .clone()
            .with_option("database", config.database.clone());
        for (k, v) in sql::analyst_settings(config.analyst_max_time.as_secs()) {
            analyst = analyst.with_option(k, v);
        }
        let mut store = Self {
            client,
            inserter,
            analyst,
            schema: Schema {
                database: config.database.clone(),
                dialect: Dialect::CURRENT,
                cluster: config.cluster.clone(),
            },
            config,
            uncertain: Mutex::default(),
            parser: tokio::sync::OnceCell::new(),
        };
        let version = store.text("SELECT version()".into()).await?;
        store.schema.dialect = Dialect::from_version(&version).map_err(StoreError::Rejected)?;
        tracing::info!(
            url = %store.config.url,
            version = version.trim(),
            cluster = store.schema.cluster.as_deref().unwrap_or("-"),
            dedup = store.dedup_mechanism(),
            "connected to ClickHouse"
        );
        Ok(store)
    }

    /// The parser engine, loaded on first use: a process that serves no analyst never
    /// pays for it (~200 MB of RSS once loaded).
    async fn parser(&self) -> Result<Arc<Mutex<ugc_chdb::Connection>>, StoreError> {
        let library = self.config.parser_library.clone();
        self.parser
            .get_or_try_init(|| async move {
                tokio::task::spawn_blocking(move || {
                    let unavailable = |e: String| {
                        StoreError::Unavailable(format!(
                            "analysts' SQL needs ClickHouse's parser from libchdb.so ({}): {e}",
                            library.display()
                        ))
                    };
                    let lib = ugc_chdb::Library::load(&library)
                        .map_err(|e| unavailable(e.to_string()))?;
                    // The engine wants a directory; it holds nothing, no table is made.
                    let dir =
                        std::env::temp_dir().join(format!("ugc-sql-parser-{}", std::process::id()));
                    std::fs::create_dir_all(&dir).map_err(|e| unavailable(e.to_string()))?;
                    let conn = ugc_chdb::Connection::open(&lib, &dir, &[])
                        .map_err(|e| unavailable(e.to_string()))?;
                    Ok(Arc::new(Mutex::new(conn)))
                })
                .await
                .map_err(|e| StoreError::Unavailable(format!("parser task failed: {e}")))?
            })
            .await
            .cloned()
    }

    pub fn dialect(&self) -> Dialect {
        self.schema.dialect
    }

    /// How a retried insert of the same batch is dropped on this server (see
    /// [`sql::insert_statement`]).
    pub fn dedup_mechanism(&self) -> &'static str {
        match (
            self.schema.dialect.dedup_token,
            self.schema.cluster.is_some(),
        ) {
            (true, true) => "insert_deduplication_token on replicated tables",
            (true, false) => "insert_deduplication_token (non_replicated_deduplication_window)",
            (false, true) => "replicated block dedup of identical retried blocks",
            (false, false) => "log positions checked before a retried insert",
        }
    }

    /// The statements that make this server load ugc's topic itself: a Kafka engine
    /// table and materialized views into `events` and `hourly` (see [`sql::kafka_engine`]). One
    /// server only: on a cluster each node's engine would take a share of the topic and
    /// the view's inserts into the Distributed table would not wait for the shards.
    pub fn kafka_engine_statements(
        &self,
        source: &KafkaEngineSource,
    ) -> Result<Vec<String>, StoreError> {
        if self.schema.cluster.is_some() {
            return Err(StoreError::Rejected(
                "the Kafka engine's tables are for one server, not a cluster".into(),
            ));
        }
        Ok(sql::kafka_engine(&self.schema, source))
    }

    /// Creates the Kafka engine table and its views ([`Self::kafka_engine_statements`])
    /// over the migrated schema; the server starts reading the topic at once.
    pub async fn create_kafka_engine(&self, source: &KafkaEngineSource) -> Result<(), StoreError> {
        for statement in self.kafka_engine_statements(source)? {
            self.execute(statement).await?;
        }
        Ok(())
    }

    fn server_drops_retries(&self) -> bool {
        self.schema.dialect.dedup_token || self.schema.cluster.is_some()
    }

    /// Runs `op` until it succeeds, fails for good, or runs out of attempts; transient
    /// failures wait with the one backoff policy (`ugc-retry`).
    async fn retrying<T, F, Fut>(&self, what: &str, op: F) -> Result<T, StoreError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, StoreError>>,
    {
        ugc_retry::retry(
            ugc_retry::Backoff::new(self.config.retry_min, self.config.retry_max),
            Some(self.config.attempts),
            |e| matches!(e, StoreError::Unavailable(_)),
            |attempt, e| tracing::debug!(what, attempt, error = %e, "ClickHouse call failed; retrying"),
            op,
        )
        .await
    }

    async fn fetch(
        &self,
        client: &::clickhouse::Client,
        sql: &str,
        format: &str,
        timeout: Duration,
    ) -> Result<bytes::Bytes, StoreError> {
        // The crate reads `?` as a bind marker; `??` is a literal `?`.
        let query = client.query(&sql.replace('?', "??"));
        let run = async {
            let mut cursor = query.fetch_bytes(format).map_err(classify)?;
            cursor.collect().await.map_err(classify)
        };
        tokio::time::timeout(timeout, run)
            .await
            .unwrap_or_else(|_| {
                Err(StoreError::Unavailable(format!(
                    "no answer within {timeout:?}"
                )))
            })
    }

    async fn text(&self, sql: String) -> Result<String, StoreError> {
        let out = self
            .retrying("query", || {
                self.fetch(
                    &self.client,
                    &sql,
                    "TabSeparated",
                    self.config.request_timeout,
                )
            })
            .await?;
        Ok(String::from_utf8_lossy(&out).into_owned())
    }

    async fn execute(&self, sql: String) -> Result<(), StoreError> {
        self.text(sql).await.map(drop)
    }

    async fn rows<T: serde::de::DeserializeOwned>(
        &self,
        sql: String,
    ) -> Result<Vec<T>, StoreError> {
        engine::rows(self, sql).await
    }

    /// One INSERT of pre-serialized JSONEachRow lines. On servers that drop a retried
    /// block it is retried here; elsewhere the caller decides (an attempt that failed
    /// may still have stored the rows).
    async fn insert_body(
        &self,
        table: &str,
        token: &str,
        body: bytes::Bytes,
    ) -> Result<(), StoreError> {
        if body.is_empty() {
            return Ok(());
        }
        let statement = sql::insert_statement(&self.schema, table, token);
        let once = || async {
            let mut insert = self.inserter.insert_formatted_with(statement.clone());
            let run = async {
                insert
                    // A clone shares the buffer: retries send it again without a copy.
                    .send(body.clone())
                    .await
                    .map_err(classify)?;
                insert.end().await.map_err(classify)
            };
            tokio::time::timeout(self.config.request_timeout, run)
                .await
                .unwrap_or_else(|_| {
                    Err(StoreError::Unavailable(format!(
                        "insert not confirmed within {:?}",
                        self.config.request_timeout
                    )))
                })
                .map_err(for_insert)
        };
        if self.server_drops_retries() {
            self.retrying("insert", once).await
        } else {
            once().await
        }
    }

    /// Without server-side dedup: what of a batch whose earlier attempt failed is
    /// already stored, by log position (events, dead letters) and event id (progress).
    async fn already_stored(
        &self,
        batch: &StoreBatch,
    ) -> Result<(HashSet<(u32, u64)>, HashSet<uuid::Uuid>), StoreError> {
        let mut ranges: HashMap<u32, (u64, u64)> = HashMap::new();
        let positions = batch
            .events
            .iter()
            .map(|(p, _)| p)
            .chain(batch.dead_letters.iter().map(|d| &d.position));
        for p in positions {
            let r = ranges.entry(p.partition).or_insert((p.offset, p.offset));
            r.0 = r.0.min(p.offset);
            r.1 = r.1.max(p.offset);
        }
        #[derive(serde::Deserialize)]
        struct Offset {
            log_offset: serde_json::Value,
        }
        let mut stored = HashSet::new();
        for (partition, (from, to)) in ranges {
            for table in ["events", "dead_letters"] {
                let rows: Vec<Offset> = self
                    .rows(sql::stored_offsets(
                        &self.schema,
                        table,
                        partition,
                        from,
                        to,
                    ))
                    .await?;
                for r in rows {
                    let offset = match &r.log_offset {
                        serde_json::Value::Number(n) => n.as_u64(),
                        serde_json::Value::String(s) => s.parse().ok(),
                        _ => None,
                    };
                    if let Some(o) = offset {
                        stored.insert((partition, o));
                    }
                }
            }
        }
        let ids: Vec<uuid::Uuid> = batch
            .events
            .iter()
            .map(|(_, e)| *e.event_id.as_uuid())
            .collect();
        #[derive(serde::Deserialize)]
        struct Id {
            id: uuid::Uuid,
        }
        let mut progress = HashSet::new();
        for chunk in ids.chunks(5000) {
            let rows: Vec<Id> = self
                .rows(sql::stored_progress_ids(&self.schema, chunk))
                .await?;
            progress.extend(rows.into_iter().map(|r| r.id));
        }
        Ok((stored, progress))
    }

    fn mark_uncertain(&self, token: &str, uncertain: bool) {
        if let Ok(mut set) = self.uncertain.lock() {
            if uncertain {
                set.insert(token.to_owned());
            } else {
                set.remove(token);
            }
        }
    }

    async fn insert_batch(&self, batch: &StoreBatch) -> Result<(), StoreError> {
        let d = self.schema.dialect;
        let check = !self.server_drops_retries()
            && self
                .uncertain
                .lock()
                .map(|s| s.contains(&batch.token))
                .unwrap_or(true);
        let (stored, stored_progress) = if check {
            self.already_stored(batch).await?
        } else {
            Default::default()
        };
        let fresh = |p: &crate::LogPosition| !stored.contains(&(p.partition, p.offset));
        let mut events = Vec::new();
        let mut progress = Vec::new();
        for (p, e) in &batch.events {
            if fresh(p) {
                serde_json::to_writer(&mut events, &EventRow::for_dialect(&d, *p, e))
                    .map_err(|e| StoreError::Rejected(e.to_string()))?;
                events.push(b'\n');
            }
            let row = ProgressRow::for_dialect(&d, e)
                .filter(|_| !stored_progress.contains(e.event_id.as_uuid()));
            if let Some(row) = row {
                serde_json::to_writer(&mut progress, &row)
                    .map_err(|e| StoreError::Rejected(e.to_string()))?;
                progress.push(b'\n');
            }
        }
        let mut dead = Vec::new();
        let loaded_at = sql::now_seconds();
        for dl in batch.dead_letters.iter().filter(|dl| fresh(&dl.position)) {
            let row = DeadLetterRow {
                log_partition: dl.position.partition,
                log_offset: dl.position.offset,
                reason: &dl.reason,
                payload: String::from_utf8_lossy(&dl.payload).into_owned(),
                loaded_at,
            };
            serde_json::to_writer(&mut dead, &row)
                .map_err(|e| StoreError::Rejected(e.to_string()))?;
            dead.push(b'\n');
        }
        // Each table gets its own token derived from the batch's: the dedup window is per
        // table, and an insert that died between tables is completed on retry. Progress
        // goes first, so an event seen in `events` has its position readable too.
        self.insert_body(
            "progress",
            &format!("{}:progress", batch.token),
            progress.into(),
        )
        .await?;
        self.insert_body("events", &format!("{}:events", batch.token), events.into())
            .await?;
        self.insert_body(
            "dead_letters",
            &format!("{}:dead", batch.token),
            dead.into(),
        )
        .await
    }
}

#[async_trait]
impl Engine for ClickHouseStore {
    fn schema(&self) -> &Schema {
        &self.schema
    }

    async fn execute(&self, sql: String) -> Result<(), StoreError> {
        // A distributed DDL or mutation that times out waiting for a node is not a bad
        // statement: it is not confirmed yet.
        ClickHouseStore::execute(self, sql)
            .await
            .map_err(|e| match e {
                StoreError::Timeout(_) => {
                    StoreError::Unavailable("not confirmed by every node in time".into())
                }
                e => e,
            })
    }

    async fn each_row(&self, sql: String) -> Result<Vec<u8>, StoreError> {
        let out = self
            .retrying("query", || {
                self.fetch(
                    &self.client,
                    &sql,
                    "JSONEachRow",
                    self.config.request_timeout,
                )
            })
            .await?;
        Ok(out.to_vec())
    }

    async fn write_batch(&self, batch: &StoreBatch) -> Result<(), StoreError> {
        let result = self.insert_batch(batch).await;
        if !self.server_drops_retries() {
            // A refused batch stored nothing; any other failure may have stored part.
            self.mark_uncertain(
                &batch.token,
                matches!(
                    result,
                    Err(StoreError::Unavailable(_) | StoreError::Timeout(_))
                ),
            );
        }
        result
    }

    /// The server runs the canonical text of the statement under the request-level
    /// `readonly = 1` and limits, which the statement cannot lift. The parse comes from
    /// ClickHouse's own parser in the embedded engine (26.5): 18.16 has neither
    /// `formatQuery` nor `EXPLAIN AST`. Running the canonical text, not the original,
    /// closes every gap between the two parsers (e.g. nested comments, `#` comments):
    /// the server runs exactly what was checked, or refuses it as a syntax error.
    async fn sandboxed_select(
        &self,
        sql: &str,
        limits: QueryLimits,
    ) -> Result<QueryRows, StoreError> {
        let parser = self.parser().await?;
        let text = sql.to_owned();
        let parsed = tokio::task::spawn_blocking(move || {
            let mut conn = parser.lock().unwrap_or_else(|p| p.into_inner());
            parse_with(&mut conn, &text)
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("parser task failed: {e}")))??;
        sandbox::check(&parsed, self.schema.database()).map_err(|r| StoreError::NotAllowed(r.0))?;
        let wrapped = sandbox::wrapped(&parsed, limits.max_rows);
        // The server enforces max_execution_time; the client waits a little longer.
        let wait = limits.max_time + Duration::from_secs(5);
        let out = self
            .retrying("select", || {
                self.fetch(&self.analyst, &wrapped, "JSON", wait)
            })
            .await
            .map_err(|e| match e {
                StoreError::Timeout(_) => StoreError::Timeout(limits.max_time),
                e => e,
            })?;
        parse_json_format(&out, limits.max_rows)
    }

    async fn probe(&self) -> Result<(), StoreError> {
        // One attempt, a short wait: readiness must answer quickly, not retry.
        self.fetch(
            &self.client,
            sql::PING,
            "TabSeparated",
            Duration::from_secs(5),
        )
        .await
        .map(drop)
    }
}

fn classify(e: ::clickhouse::error::Error) -> StoreError {
    use ::clickhouse::error::Error as E;
    match e {
        // Without a ClickHouse code: a proxy or a dying server (5xx without a body).
        E::BadResponse(msg) => errors::classify(msg),
        E::InvalidParams(e) => StoreError::Rejected(e.to_string()),
        other => StoreError::Unavailable(other.to_string()),
    }
}
