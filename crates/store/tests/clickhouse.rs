//! The ClickHouse store against real servers (the Debian package's 18.16): one node,
//! and a 2 shards × 2 replicas cluster.

use std::time::{Duration, Instant};

use serde_json::json;
use ugc_model::{Envelope, FilmId, UserId};
use ugc_store::clickhouse::{ClickHouseConfig, ClickHouseStore};
use ugc_store::{EventStore, LogPosition, QueryLimits, StoreBatch, StoreError};
use ugc_testkit::{CLUSTER_NAME, ClickHouse, Cluster};

const FILM_A: &str = "1ec4cd73-2fd5-4f25-af68-b6595d279af2";
const FILM_B: &str = "2b5e3c1a-0d4f-4e7a-9c8b-3f2a1d0e9c8b";

fn envelope(user: &str, at: &str, event: serde_json::Value) -> Envelope {
    let v = json!({
        "v": 1,
        "event_id": uuid::Uuid::now_v7().to_string(),
        "user_id": user,
        "received_at": at,
        "occurred_at": at,
        "event": event,
    });
    Envelope::decode(v.to_string().as_bytes()).expect("a valid envelope")
}

/// Two position reports within one second (the later one wins by milliseconds), and a
/// finished film.
fn batch(token: &str, user: &str, first_offset: u64) -> StoreBatch {
    let events = vec![
        envelope(
            user,
            "2026-11-20T10:00:01.100Z",
            json!({"type":"view_progress","film_id":FILM_A,"film_timestamp":10}),
        ),
        envelope(
            user,
            "2026-11-20T10:00:01.900Z",
            json!({"type":"pause","film_id":FILM_A,"position":20}),
        ),
        envelope(
            user,
            "2026-11-20T10:00:02.000Z",
            json!({"type":"full_view","film_id":FILM_B}),
        ),
    ];
    StoreBatch {
        token: token.to_owned(),
        events: events
            .into_iter()
            .enumerate()
            .map(|(i, e)| {
                (
                    LogPosition {
                        partition: 0,
                        offset: first_offset + i as u64,
                    },
                    e,
                )
            })
            .collect(),
        dead_letters: vec![],
    }
}

const LIMITS: QueryLimits = QueryLimits {
    max_rows: 100,
    max_time: Duration::from_secs(10),
};

async fn count(store: &ClickHouseStore, user: &str) -> u64 {
    let rows = store
        .select(
            &format!("SELECT count() AS n FROM ugc.events WHERE user_id = '{user}'"),
            LIMITS,
        )
        .await
        .expect("count");
    rows.rows[0]["n"].as_u64().expect("a number")
}

async fn check_reads(store: &ClickHouseStore, user: &str) {
    let u = UserId::parse(user).unwrap();
    let a = FilmId::from(uuid::Uuid::parse_str(FILM_A).unwrap());
    let p = store.film_progress(&u, a).await.unwrap().expect("progress");
    assert_eq!(
        (p.position, p.finished),
        (20, false),
        "the later report of the same second wins"
    );
    assert_eq!(
        p.updated_at.millis() % 1000,
        900,
        "milliseconds survive DateTime + _ms"
    );
    let cw = store.continue_watching(&u, 10, 0).await.unwrap();
    assert_eq!(cw.len(), 1, "the finished film is not listed: {cw:?}");
    assert_eq!(cw[0].film_id, a);
}

#[tokio::test]
async fn one_server_of_version_18_16() {
    let mut server = ClickHouse::start_single().unwrap_or_else(|e| panic!("{e}"));
    let store = ClickHouseStore::connect(ClickHouseConfig::new(server.url()))
        .await
        .unwrap();
    assert!(!store.dialect().datetime64 && !store.dialect().dedup_token);
    store.migrate().await.unwrap();
    store.migrate().await.expect("migrations are idempotent");

    let user = uuid::Uuid::now_v7().to_string();
    store.insert(&batch("t:0-2", &user, 0)).await.unwrap();
    assert_eq!(count(&store, &user).await, 3);
    check_reads(&store, &user).await;

    // Analysts' SQL: read-only, capped, typed.
    let r = store
        .select(
            "SELECT number FROM system.numbers LIMIT 5",
            QueryLimits {
                max_rows: 3,
                ..LIMITS
            },
        )
        .await
        .unwrap();
    assert!(r.truncated && r.rows.len() == 3);
    assert_eq!(r.columns[0].type_, "UInt64");
    assert_eq!(r.rows[2]["number"], 2, "64-bit integers come as numbers");
    for sql in [
        "SELECT * FROM (SELECT 1 SETTINGS readonly = 0)",
        "SELECT * FROM file('/etc/passwd', CSV, 'a String')",
        "SELECT nope FROM ugc.events",
    ] {
        // Refused by the sandbox (parsed, but outside what analysts may read) or by
        // the engine.
        let e = store.select(sql, LIMITS).await.unwrap_err();
        assert!(
            matches!(e, StoreError::Rejected(_) | StoreError::NotAllowed(_)),
            "{sql}: {e:?}"
        );
    }
    let e = store
        .select(
            "SELECT count() FROM system.numbers WHERE sleepEachRow(1) = 0 OR number < 10",
            QueryLimits {
                max_time: Duration::from_secs(1),
                ..LIMITS
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::Timeout(_)), "{e:?}");

    // Down: every call says "unavailable", the loader's cue to wait; then it comes back.
    server.kill9();
    assert!(matches!(
        store.ping().await,
        Err(StoreError::Unavailable(_))
    ));
    let retried = batch("t:3-5", &user, 3);
    assert!(matches!(
        store.insert(&retried).await,
        Err(StoreError::Unavailable(_))
    ));
    server.start().unwrap_or_else(|e| panic!("{e}"));
    store.ping().await.unwrap();
    store.insert(&retried).await.unwrap();
    assert_eq!(count(&store, &user).await, 6);
}

#[tokio::test]
async fn a_cluster_of_two_shards_and_two_replicas() {
    let mut cluster = Cluster::start(2, 2).unwrap_or_else(|e| panic!("{e}"));
    let mut config = ClickHouseConfig::new(cluster.url());
    config.cluster = Some(CLUSTER_NAME.to_owned());
    let store = ClickHouseStore::connect(config).await.unwrap();
    let began = Instant::now();
    store.migrate().await.unwrap();
    eprintln!(
        "cluster up in {:?}, schema ON CLUSTER in {:?}",
        cluster.started_in,
        began.elapsed()
    );
    store.migrate().await.unwrap();
    for n in &cluster.nodes {
        let tables = n
            .query("SELECT name FROM system.tables WHERE database = 'ugc' ORDER BY name")
            .unwrap();
        assert!(
            tables.contains("events_local") && tables.contains("progress"),
            "{}: {tables}",
            n.name
        );
    }

    // A retried batch (same token, same rows) is stored once: each shard drops the
    // block it already has.
    let users: Vec<String> = (0..8).map(|_| uuid::Uuid::now_v7().to_string()).collect();
    let mut offset = 0;
    for u in &users {
        let b = batch(&format!("t:{offset}"), u, offset);
        store.insert(&b).await.unwrap();
        store.insert(&b).await.unwrap();
        offset += 3;
    }
    for u in &users {
        assert_eq!(count(&store, u).await, 3);
        check_reads(&store, u).await;
    }
    let on = |n: &ClickHouse| -> u64 {
        n.query("SELECT count() FROM ugc.events_local")
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    let s1 = on(cluster.node(0, 0));
    assert!(
        s1 > 0 && s1 < 24,
        "users spread over both shards: {s1} of 24 on shard 1"
    );

    // One replica down: inserts and reads go on through the other; back up, it catches up.
    cluster.node(1, 0).kill9();
    let late = uuid::Uuid::now_v7().to_string();
    store.insert(&batch("t:late", &late, 1000)).await.unwrap();
    assert_eq!(count(&store, &late).await, 3);
    cluster.node(1, 0).start().unwrap_or_else(|e| panic!("{e}"));
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let (a, b) = (on(cluster.node(1, 0)), on(cluster.node(1, 1)));
        if a == b {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the restarted replica has {a} rows, its twin {b}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
