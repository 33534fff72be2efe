//! The loader against the real embedded log and the real chDB store: a transient error
//! of the engine during a load (here "too many parts", forced with the table's own
//! setting) makes the loader back off and retry; nothing goes to dead letters, and
//! every event is stored once the engine takes inserts again.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use ugc_loader::{Loader, LoaderConfig};
use ugc_log::embedded::{EmbeddedLog, EmbeddedLogConfig};
use ugc_log::{LogProducer, OutRecord};
use ugc_model::{ENVELOPE_VERSION, Envelope, EventId, Timestamp, UserId, parse_event};
use ugc_store::chdb::{ChdbConfig, ChdbStore};
use ugc_store::{EventStore, LogPosition, QueryLimits, StoreBatch};

fn envelope(user: &UserId) -> Envelope {
    let incoming = parse_event(&serde_json::json!({
        "type": "pause",
        "film_id": "1ec4cd73-2fd5-4f25-af68-b6595d279af2",
        "position": 7,
    }))
    .unwrap();
    Envelope {
        v: ENVELOPE_VERSION,
        event_id: EventId::new_v7(),
        user_id: Some(user.clone()),
        received_at: Timestamp::now(),
        occurred_at: Timestamp::now(),
        client_ip: None,
        context: incoming.context,
        event: incoming.event,
    }
}

async fn scalar(store: &ChdbStore, sql: &str) -> serde_json::Value {
    let limits = QueryLimits {
        max_rows: 10,
        max_time: Duration::from_secs(10),
    };
    let rows = store.select(sql, limits).await.expect(sql);
    rows.rows[0].values().next().cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transient_engine_error_during_a_load_backs_off_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let library: std::path::PathBuf = std::env::var_os("UGC_CHDB_LIB")
        .map(Into::into)
        .unwrap_or_else(ugc_chdb::default_library_path);
    let store = ChdbStore::open(&ChdbConfig {
        library: library.clone(),
        data_dir: dir.path().join("chdb"),
        engine_args: vec![],
        analyst_max_time: Duration::from_secs(10),
    })
    .unwrap();
    store.migrate().await.unwrap();
    // A second session of the same engine, as an operator's would be.
    let lib = ugc_chdb::Library::load(&library).unwrap();
    let mut operator = ugc_chdb::Connection::open(&lib, &dir.path().join("chdb"), &[]).unwrap();

    // One part in this month's partition, then no insert may add another.
    let user = UserId::parse("transient-test").unwrap();
    store
        .insert(&StoreBatch {
            token: "seed".into(),
            events: vec![(
                LogPosition {
                    partition: 9,
                    offset: 0,
                },
                envelope(&user),
            )],
            dead_letters: vec![],
        })
        .await
        .unwrap();
    operator
        .query(
            "ALTER TABLE ugc.events MODIFY SETTING parts_to_throw_insert = 1",
            "TabSeparated",
        )
        .unwrap();

    let log =
        EmbeddedLog::open(&dir.path().join("log.redb"), EmbeddedLogConfig::default()).unwrap();
    let records: Vec<OutRecord> = (0..50)
        .map(|_| OutRecord {
            key: None,
            kind: "pause",
            payload: envelope(&user).encode(),
        })
        .collect();
    log.producer().append(records).await.unwrap();

    let (stop, stopped) = watch::channel(false);
    let loader = Loader::new(
        Box::new(log.consumer()),
        Arc::new(store.clone()),
        LoaderConfig {
            retry_max: Duration::from_millis(300),
            ..LoaderConfig::default()
        },
    );
    let status = loader.status();
    let task = tokio::spawn(loader.run(stopped));

    // The engine refuses the load: the loader says so and retries.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if status.last_error().is_some_and(|e| e.contains("Code: 252")) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the loader never met the engine's refusal: {:?}",
            status.last_error()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status.rows_loaded.load(Ordering::Relaxed), 0);
    assert_eq!(status.dead_letters.load(Ordering::Relaxed), 0);

    // The engine takes inserts again: everything lands, nothing is dead-lettered.
    operator
        .query(
            "ALTER TABLE ugc.events MODIFY SETTING parts_to_throw_insert = 3000",
            "TabSeparated",
        )
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while status.rows_loaded.load(Ordering::Relaxed) < 50 {
        assert!(Instant::now() < deadline, "the load did not resume");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        scalar(
            &store,
            "SELECT uniqExact(event_id) FROM ugc.events WHERE user_id = 'transient-test'"
        )
        .await,
        51
    );
    assert_eq!(
        scalar(&store, "SELECT count() FROM ugc.dead_letters").await,
        0
    );
    assert_eq!(status.dead_letters.load(Ordering::Relaxed), 0);
    stop.send(true).unwrap();
    task.await.unwrap();
}
