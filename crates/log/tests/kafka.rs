//! The Kafka log against a real broker: tansu (the Apache Kafka protocol), started as a
//! child process on a free port for each test.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ugc_log::kafka::{Compression, KafkaConfig, KafkaConsumer, KafkaLog, TopicLayout};
use ugc_log::{Batch, LogConsumer, LogError, LogProducer, OutRecord};
use ugc_testkit::tansu::{Storage, Tansu};

const WITHIN: Duration = Duration::from_secs(60);

fn config(broker: &Tansu, name: &str) -> KafkaConfig {
    KafkaConfig {
        brokers: broker.brokers(),
        layout: TopicLayout::Single {
            topic: format!("{name}.events"),
        },
        dead_letter_topic: format!("{name}.dlq"),
        partitions: 3,
        replication_factor: 1,
        min_insync_replicas: 1,
        group_id: format!("{name}-loaders"),
        session_timeout: Duration::from_secs(6),
        ..KafkaConfig::default()
    }
}

fn rec(user: &str, payload: String) -> OutRecord {
    OutRecord {
        key: Some(user.as_bytes().to_vec()),
        kind: "custom",
        payload: payload.into_bytes(),
    }
}

/// Polls and commits until `want` records came out, or fails at the deadline.
async fn drain(c: &mut KafkaConsumer, want: usize) -> Vec<Batch> {
    let deadline = Instant::now() + WITHIN;
    let mut batches = Vec::new();
    let mut got = 0;
    while got < want {
        assert!(
            Instant::now() < deadline,
            "only {got} of {want} records consumed within {WITHIN:?}"
        );
        match c.poll(1000, Duration::from_millis(100)).await {
            Ok(Some(b)) => {
                got += b.records.len();
                c.commit(&b).await.expect("commit");
                batches.push(b);
            }
            Ok(None) => {}
            // The group may still be forming.
            Err(e) => eprintln!("poll: {e}"),
        }
    }
    batches
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_come_back_in_per_partition_batches_in_order_and_commits_hold() {
    let broker = Tansu::start(Storage::Memory);
    let log = KafkaLog::new(config(&broker, "order")).unwrap();
    log.ensure_topics().await.expect("topics");
    let producer = log.producer().unwrap();
    let users = ["ann", "bob", "cid", "dan", "eve"];
    for seq in 0..20 {
        let batch = users.iter().map(|u| rec(u, format!("{u}:{seq}"))).collect();
        producer.append(batch).await.expect("append");
    }
    producer.check().await.expect("a live broker is ready");

    let mut c = log.consumer().unwrap();
    let batches = drain(&mut c, 100).await;
    assert!(c.take_reassigned(), "the first assignment is announced");
    assert!(!c.take_reassigned(), "once");
    let mut per_user: BTreeMap<String, (u32, Vec<u32>)> = BTreeMap::new();
    for b in &batches {
        let offsets: Vec<u64> = b.records.iter().map(|r| r.offset).collect();
        assert_eq!(
            offsets,
            (b.start..b.end).collect::<Vec<_>>(),
            "a batch is a contiguous range of one partition"
        );
        assert_eq!(
            b.token,
            format!("kafka:order.events:{}:{}-{}", b.partition, b.start, b.end)
        );
        for r in &b.records {
            assert_eq!(r.partition, b.partition);
            let text = String::from_utf8(r.payload.clone()).unwrap();
            let (user, seq) = text.split_once(':').unwrap();
            let e = per_user
                .entry(user.to_owned())
                .or_insert((r.partition, vec![]));
            assert_eq!(e.0, r.partition, "one user's events share a partition");
            e.1.push(seq.parse().unwrap());
        }
    }
    for (user, (_, seqs)) in &per_user {
        assert_eq!(
            *seqs,
            (0..20).collect::<Vec<_>>(),
            "{user}'s events in order"
        );
    }
    let lag: u64 = c
        .lag_reader()
        .read()
        .await
        .unwrap()
        .iter()
        .map(|p| p.lag)
        .sum();
    assert_eq!(lag, 0);
    drop(c);

    // A new member of the group starts at the commits: only what came after.
    producer
        .append(vec![rec("ann", "ann:20".into())])
        .await
        .unwrap();
    let mut c = log.consumer().unwrap();
    let batches = drain(&mut c, 1).await;
    assert_eq!(batches[0].records[0].payload, b"ann:20");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joining_member_takes_partitions_over_and_nothing_committed_comes_back() {
    // The new owner resumes at the last commit, often inside a producer's record batch:
    // only the SQLite engine serves a fetch from there (see `Storage::Memory`).
    let broker = Tansu::start(Storage::Sqlite);
    // Every append must be acknowledged (the count is exact), also while SQLite shares
    // two cores with the other tests: a deadline far from the 1 s default.
    let mut cfg = config(&broker, "share");
    cfg.delivery_timeout = Duration::from_secs(20);
    let log = KafkaLog::new(cfg).unwrap();
    log.ensure_topics().await.expect("topics");
    let producer = log.producer().unwrap();
    let producing = Arc::new(AtomicBool::new(true));
    let consuming = Arc::new(AtomicBool::new(true));
    let produced = Arc::new(AtomicUsize::new(0));
    let seen: Arc<Mutex<Vec<(u32, u64)>>> = Arc::default();

    // Records keep coming until both members have loaded some, so that the join
    // happens mid-stream.
    let writer = {
        let (producing, produced) = (producing.clone(), produced.clone());
        tokio::spawn(async move {
            let mut i = 0;
            while producing.load(Ordering::SeqCst) {
                let batch = (0..10)
                    .map(|j| rec(&format!("user-{j}"), format!("{i}")))
                    .collect();
                producer.append(batch).await.expect("append");
                produced.fetch_add(10, Ordering::SeqCst);
                i += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let member = |mut c: KafkaConsumer| {
        let (consuming, seen) = (consuming.clone(), seen.clone());
        let loaded = Arc::new(AtomicUsize::new(0));
        let counter = loaded.clone();
        let task = tokio::spawn(async move {
            while consuming.load(Ordering::SeqCst) {
                match c.poll(20, Duration::from_millis(100)).await {
                    Ok(Some(b)) => {
                        seen.lock()
                            .unwrap()
                            .extend(b.records.iter().map(|r| (r.partition, r.offset)));
                        counter.fetch_add(b.records.len(), Ordering::SeqCst);
                        c.commit(&b).await.expect("commit");
                    }
                    Ok(None) => {}
                    Err(e) => eprintln!("poll: {e}"),
                }
            }
        });
        (task, loaded)
    };
    let (first, first_loaded) = member(log.consumer().unwrap());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (second, second_loaded) = member(log.consumer().unwrap());
    let deadline = Instant::now() + WITHIN;
    let before = first_loaded.load(Ordering::SeqCst);
    while second_loaded.load(Ordering::SeqCst) == 0 || first_loaded.load(Ordering::SeqCst) == before
    {
        assert!(
            Instant::now() < deadline,
            "the joining member got no partition within {WITHIN:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    producing.store(false, Ordering::SeqCst);
    writer.await.unwrap();
    let total = produced.load(Ordering::SeqCst);
    while seen.lock().unwrap().len() < total {
        assert!(
            Instant::now() < deadline,
            "{} of {total} records handed out",
            seen.lock().unwrap().len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A moment more: anything handed out twice would show now.
    tokio::time::sleep(Duration::from_secs(1)).await;
    consuming.store(false, Ordering::SeqCst);
    first.await.unwrap();
    second.await.unwrap();
    let all = seen.lock().unwrap().clone();
    let distinct: HashSet<(u32, u64)> = all.iter().copied().collect();
    assert_eq!(distinct.len(), total, "every record was handed out");
    assert_eq!(
        all.len(),
        total,
        "a committed record was handed out again after the rebalance"
    );
}
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_broker_fails_appends_within_the_deadline_and_a_restart_recovers() {
    let mut broker = Tansu::start(Storage::Sqlite);
    let mut cfg = config(&broker, "outage");
    cfg.delivery_timeout = Duration::from_millis(1000);
    let log = KafkaLog::new(cfg).unwrap();
    log.ensure_topics().await.expect("topics");
    let producer = log.producer().unwrap();
    producer
        .append(vec![rec("ann", "before".into())])
        .await
        .expect("append");

    broker.kill();
    let t = Instant::now();
    let err = producer
        .append(vec![rec("ann", "during".into())])
        .await
        .expect_err("no broker: no acknowledgement");
    let took = t.elapsed();
    assert!(
        matches!(err, LogError::Timeout(_) | LogError::Unavailable(_)),
        "{err}"
    );
    assert!(took < Duration::from_millis(2500), "failed after {took:?}");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(
        producer.check().await.is_err(),
        "not ready without a broker"
    );

    broker.restart();
    let deadline = Instant::now() + WITHIN;
    loop {
        match producer.append(vec![rec("ann", "after".into())]).await {
            Ok(()) => break,
            Err(e) => assert!(
                Instant::now() < deadline,
                "appends did not recover after the restart: {e}\n{}",
                broker.log()
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut c = log.consumer().unwrap();
    let batches = drain(&mut c, 2).await;
    let payloads: Vec<&[u8]> = batches
        .iter()
        .flat_map(|b| b.records.iter().map(|r| r.payload.as_slice()))
        .collect();
    assert!(payloads.contains(&&b"before"[..]) && payloads.contains(&&b"after"[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_local_queue_is_refused_at_once() {
    let broker = Tansu::start(Storage::Memory);
    let mut cfg = config(&broker, "full");
    cfg.queue_max_messages = 5;
    let log = KafkaLog::new(cfg).unwrap();
    log.ensure_topics().await.expect("topics");
    let producer = log.producer().unwrap();
    let many = (0..50).map(|i| rec("ann", format!("{i}"))).collect();
    match producer.append(many).await {
        Err(LogError::Overloaded) => {}
        other => panic!("50 records into a queue of 5: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_land_in_the_dead_letter_topic_with_their_source() {
    let broker = Tansu::start(Storage::Memory);
    let log = KafkaLog::new(config(&broker, "poison")).unwrap();
    log.ensure_topics().await.expect("topics");
    broker.produce("poison.events", 1, None, b"\xff not an event");
    let mut c = log.consumer().unwrap();
    let batch = drain(&mut c, 1).await.remove(0);
    // drain committed already; copying after a commit is what a replay would do too.
    c.dead_letters(&batch, &[(batch.start, "not JSON".into())])
        .await
        .expect("dead letters");
    let dlq = broker.read_all("poison.dlq", 3, WITHIN);
    assert_eq!(dlq.len(), 1, "{dlq:?}\n{}", broker.log());
    assert_eq!(dlq[0].payload, b"\xff not an event");
    let header = |k: &str| {
        dlq[0]
            .headers
            .iter()
            .find(|(h, _)| h == k)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(header("ugc-reason").as_deref(), Some("not JSON"));
    assert_eq!(header("ugc-source-topic").as_deref(), Some("poison.events"));
    assert_eq!(header("ugc-source-partition").as_deref(), Some("1"));
    assert_eq!(header("ugc-source-offset").as_deref(), Some("0"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_per_type_routes_by_kind_and_zstd_round_trips() {
    let broker = Tansu::start(Storage::Memory);
    let mut cfg = config(&broker, "typed");
    cfg.layout = TopicLayout::PerType {
        prefix: "typed".into(),
        types: vec!["pause".into(), "full_view".into()],
    };
    cfg.compression = Compression::Zstd;
    let log = KafkaLog::new(cfg).unwrap();
    log.ensure_topics().await.expect("topics");
    let producer = log.producer().unwrap();
    let r = |kind: &'static str| OutRecord {
        key: None,
        kind,
        payload: kind.as_bytes().to_vec(),
    };
    producer
        .append(vec![r("pause"), r("full_view"), r("pause")])
        .await
        .expect("append");
    let pauses = broker.read_all("typed.pause", 3, WITHIN);
    assert_eq!(pauses.len(), 2);
    assert!(pauses.iter().all(|p| p.payload == b"pause"));
    let mut c = log.consumer().unwrap();
    let batches = drain(&mut c, 3).await;
    assert!(
        batches
            .iter()
            .any(|b| b.token.starts_with("kafka:typed.full_view:"))
    );
}
