//! `ugc kafka-engine-ddl`: ClickHouse's own loader for ugc's topic, the alternative the
//! storage study measures against ugc's (bench/README.md, "Storage study"). Prints the
//! Kafka engine table and the materialized views into `events` and the analytics'
//! `hourly` for the configured server and topic; with `--apply`, migrates the schema,
//! starts the engine's consumer group at the beginning of the topic and creates them.

use clap::Args;
use ugc_log::kafka::KafkaLog;
use ugc_store::clickhouse::KafkaEngineSource;

use crate::configuration::{LogBackend, Settings, StoreBackend};
use crate::{process, startup};

#[derive(Args, Debug, Clone)]
pub struct KafkaEngineArgs {
    /// Create what is printed (schema, the group's start offsets, the engine table and
    /// its views) instead of only printing it.
    #[arg(long)]
    pub apply: bool,

    /// The engine's consumer group; never the loaders' (--kafka-group), or the two would
    /// share the partitions out and each store a part.
    #[arg(
        long,
        env = "UGC_KAFKA_ENGINE_GROUP",
        default_value = "ugc-clickhouse-engine"
    )]
    pub kafka_engine_group: String,

    /// Consumers of the engine table (at most the topic's partitions).
    #[arg(long, env = "UGC_KAFKA_ENGINE_CONSUMERS", default_value_t = 1)]
    pub kafka_engine_consumers: u32,

    /// Brokers as the ClickHouse server reaches them [default: --kafka-brokers].
    #[arg(long, env = "UGC_KAFKA_ENGINE_BROKERS")]
    pub kafka_engine_brokers: Option<String>,
}

pub async fn run(s: &Settings, args: &KafkaEngineArgs) -> anyhow::Result<()> {
    if s.store != StoreBackend::Clickhouse || s.log_backend != LogBackend::Kafka {
        anyhow::bail!(
            "kafka-engine-ddl needs --store clickhouse and --log-backend kafka: the engine is \
             a ClickHouse server's table reading a Kafka topic"
        );
    }
    if args.kafka_engine_group == s.kafka_group {
        anyhow::bail!(
            "--kafka-engine-group must differ from the loaders' --kafka-group ({})",
            s.kafka_group
        );
    }
    let kafka = process::kafka_config(s)?;
    let source = KafkaEngineSource {
        brokers: args
            .kafka_engine_brokers
            .clone()
            .unwrap_or_else(|| kafka.brokers.clone()),
        topics: kafka.layout.topics(),
        group: args.kafka_engine_group.clone(),
        consumers: args.kafka_engine_consumers,
    };
    let store = startup::open_clickhouse(s, args.apply).await?;
    let statements = store.kafka_engine_statements(&source)?;
    println!(
        "-- ClickHouse's Kafka engine loading {} into {}.events (group {}).\n\
         -- Not beside ugc's loaders on the same database: both would store every event.",
        source.topics.join(","),
        s.clickhouse_database,
        source.group
    );
    for sql in &statements {
        println!("{sql};\n");
    }
    if !args.apply {
        return Ok(());
    }
    let log = KafkaLog::new(kafka)?;
    let started = log.start_group_at_beginning(&source.group).await?;
    tracing::info!(
        group = %source.group,
        partitions = started,
        "the engine's group starts at the beginning of partitions it had no offset for"
    );
    store.create_kafka_engine(&source).await?;
    tracing::info!(
        database = %s.clickhouse_database,
        "created the Kafka engine table and its views: the server is loading the topic"
    );
    Ok(())
}
