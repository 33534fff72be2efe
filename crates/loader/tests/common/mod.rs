//! The loader's tests run it against the real embedded log and the real chDB store;
//! this is what they share.

#![allow(dead_code)] // each test binary uses a different part

use std::path::Path;
use std::time::Duration;

use ugc_model::{ENVELOPE_VERSION, Envelope, EventId, Timestamp, UserId, parse_event};
use ugc_store::chdb::{ChdbConfig, ChdbStore};
use ugc_store::{EventStore, QueryLimits};

pub fn chdb_library() -> std::path::PathBuf {
    let library: std::path::PathBuf = std::env::var_os("UGC_CHDB_LIB")
        .map(Into::into)
        .unwrap_or_else(ugc_chdb::default_library_path);
    assert!(
        library.exists(),
        "libchdb.so not found at {}: run scripts/fetch-chdb",
        library.display()
    );
    library
}

/// A migrated chDB store under `dir/chdb`.
pub async fn open_store(dir: &Path) -> ChdbStore {
    let store = ChdbStore::open(&ChdbConfig {
        library: chdb_library(),
        data_dir: dir.join("chdb"),
        engine_args: vec![],
        analyst_max_time: Duration::from_secs(10),
    })
    .unwrap();
    store.migrate().await.unwrap();
    store
}

/// What the edge would have written to the log for `event` from `user`.
pub fn envelope(user: &UserId, event: serde_json::Value, received_at: Timestamp) -> Envelope {
    let incoming = parse_event(&event).unwrap();
    Envelope {
        v: ENVELOPE_VERSION,
        event_id: EventId::new_v7(),
        user_id: Some(user.clone()),
        received_at,
        occurred_at: received_at,
        client_ip: None,
        context: incoming.context,
        event: incoming.event,
    }
}

/// The first value of the first row of an analyst's query.
pub async fn scalar(store: &ChdbStore, sql: &str) -> serde_json::Value {
    let limits = QueryLimits {
        max_rows: 10,
        max_time: Duration::from_secs(10),
    };
    let rows = store.select(sql, limits).await.expect(sql);
    rows.rows
        .first()
        .and_then(|r| r.values().next().cloned())
        .unwrap_or_default()
}
