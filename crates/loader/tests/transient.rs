//! The loader against the real embedded log and the real chDB store: a transient error
//! of the engine during a load (here "too many parts", forced with the table's own
//! setting) makes the loader back off and retry; nothing goes to dead letters, and
//! every event is stored once the engine takes inserts again.

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::scalar;
use tokio::sync::watch;
use ugc_loader::{Loader, LoaderConfig};
use ugc_log::embedded::{EmbeddedLog, EmbeddedLogConfig};
use ugc_log::{LogProducer, OutRecord};
use ugc_model::{Timestamp, UserId};
use ugc_store::{EventStore, LogPosition, StoreBatch};

fn envelope(user: &UserId) -> ugc_model::Envelope {
    let event = serde_json::json!({
        "type": "pause",
        "film_id": "1ec4cd73-2fd5-4f25-af68-b6595d279af2",
        "position": 7,
    });
    common::envelope(user, event, Timestamp::now())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transient_engine_error_during_a_load_backs_off_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = common::open_store(dir.path()).await;
    // A second session of the same engine, as an operator's would be.
    let lib = ugc_chdb::Library::load(&common::chdb_library()).unwrap();
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
