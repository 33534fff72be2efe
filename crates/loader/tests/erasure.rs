//! The loader against the real embedded log and the real chDB store: events of a user
//! whose data was erased after they arrived are dropped when they are loaded later (the
//! erasure is remembered), while other users' events and the user's later events load.

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use ugc_loader::{Loader, LoaderConfig};
use ugc_log::embedded::{EmbeddedLog, EmbeddedLogConfig};
use ugc_log::{LogProducer, OutRecord};
use ugc_model::{Envelope, Timestamp, UserId};
use ugc_store::{Erasure, EventStore};

fn envelope(user: &UserId, received_at: Timestamp) -> ugc_model::Envelope {
    let event = serde_json::json!({
        "type": "view_progress",
        "film_id": "1ec4cd73-2fd5-4f25-af68-b6595d279af2",
        "film_timestamp": 42,
    });
    common::envelope(user, event, received_at)
}

async fn count(store: &ugc_store::chdb::ChdbStore, user: &str) -> serde_json::Value {
    common::scalar(
        store,
        &format!("SELECT count() AS n FROM ugc.events WHERE user_id = '{user}'"),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_of_an_erased_user_still_in_the_log_are_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let store = common::open_store(dir.path()).await;
    let log =
        EmbeddedLog::open(&dir.path().join("log.redb"), EmbeddedLogConfig::default()).unwrap();

    let (erased, kept) = (
        UserId::parse("erased-user").unwrap(),
        UserId::parse("kept-user").unwrap(),
    );
    let now = Timestamp::now();
    let later = Timestamp::from_millis(now.millis() + 10_000).unwrap();
    let record = |e: Envelope| OutRecord {
        key: None,
        kind: "view_progress",
        payload: e.encode(),
    };
    // In the log before the erasure: three of the erased user's, two of another's; and
    // one of the erased user's that arrives after it (they came back).
    log.producer()
        .append(vec![
            record(envelope(&erased, now)),
            record(envelope(&kept, now)),
            record(envelope(&erased, now)),
            record(envelope(&kept, now)),
            record(envelope(&erased, now)),
            record(envelope(&erased, later)),
        ])
        .await
        .unwrap();
    store
        .record_erasure(&Erasure {
            job: uuid::Uuid::now_v7(),
            user: erased.clone(),
            requested_secs: (now.millis() / 1000) as u64,
        })
        .await
        .unwrap();

    let (stop, stopped) = watch::channel(false);
    let loader = Loader::new(
        Box::new(log.consumer()),
        Arc::new(store.clone()),
        LoaderConfig::default(),
    );
    let status = loader.status();
    let task = tokio::spawn(loader.run(stopped));
    let deadline = Instant::now() + Duration::from_secs(30);
    while status.rows_loaded.load(Ordering::Relaxed) + status.erased_dropped.load(Ordering::Relaxed)
        < 6
    {
        assert!(Instant::now() < deadline, "the log was not loaded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status.erased_dropped.load(Ordering::Relaxed), 3);
    assert_eq!(count(&store, "kept-user").await, 2);
    assert_eq!(
        count(&store, "erased-user").await,
        1,
        "only the event that arrived after the erasure"
    );
    stop.send(true).unwrap();
    task.await.unwrap();
}
