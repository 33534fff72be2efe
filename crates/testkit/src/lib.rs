//! Real servers for tests (ClickHouse, ZooKeeper, tansu, PostgreSQL), run as plain processes under temp dirs on free ports.
//! Nothing here is a mock: start-up polls for readiness with a deadline and fails loudly
//! (with the server's log) when a server does not come up.

pub mod clickhouse;
pub mod ports;
pub mod postgres;
pub mod rng;
pub mod tansu;

pub use clickhouse::{
    CLUSTER_NAME, ClickHouse, Cluster, KAFKA_ENGINE_CONFIG, SharedServer, ZooKeeper,
    shared_cluster, shared_single,
};
pub use ports::free_port;
pub use postgres::{Postgres, shared_postgres};
pub use rng::Rng;
