//! The loader against the real embedded log and the real chDB store: a record that
//! cannot be decoded lands in the dead-letter table with its reason, and the events
//! around it still load.

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

fn envelope(user: &UserId) -> ugc_model::Envelope {
    common::envelope(
        user,
        serde_json::json!({"type":"full_view","film_id":"1ec4cd73-2fd5-4f25-af68-b6595d279af2"}),
        Timestamp::now(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecodable_record_goes_to_dead_letters_and_the_rest_loads() {
    let dir = tempfile::tempdir().unwrap();
    let store = common::open_store(dir.path()).await;
    let log =
        EmbeddedLog::open(&dir.path().join("log.redb"), EmbeddedLogConfig::default()).unwrap();

    let user = UserId::parse("dead-letter-test").unwrap();
    let record = |payload: Vec<u8>| OutRecord {
        key: None,
        kind: "full_view",
        payload,
    };
    let producer = log.producer();
    producer
        .append(vec![record(envelope(&user).encode())])
        .await
        .unwrap();
    producer
        .append(vec![
            record(b"{\"not\": \"an envelope\"".to_vec()),
            record(envelope(&user).encode()),
        ])
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

    // Done when the loader has committed both batches: a batch's events, progress and
    // dead letters are separate statements, so the store alone can be seen between them.
    let deadline = Instant::now() + Duration::from_secs(30);
    while status.rows_loaded.load(Ordering::Relaxed) < 2
        || status.dead_letters.load(Ordering::Relaxed) < 1
    {
        assert!(
            Instant::now() < deadline,
            "the two good events and the dead letter were not loaded"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        scalar(
            &store,
            "SELECT count() FROM ugc.events WHERE user_id = 'dead-letter-test'",
        )
        .await,
        2
    );
    assert_eq!(
        scalar(&store, "SELECT count() FROM ugc.dead_letters").await,
        1
    );
    assert_eq!(
        scalar(&store, "SELECT log_offset FROM ugc.dead_letters").await,
        1,
        "the dead letter keeps its log position"
    );
    let reason = scalar(&store, "SELECT reason FROM ugc.dead_letters").await;
    assert!(
        reason.as_str().is_some_and(|r| r.contains("EOF")),
        "the reason says why: {reason}"
    );
    assert_eq!(
        scalar(&store, "SELECT payload FROM ugc.dead_letters").await,
        "{\"not\": \"an envelope\""
    );
    assert_eq!(
        status
            .dead_letters
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );

    stop.send(true).unwrap();
    task.await.unwrap();
}
