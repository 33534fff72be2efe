//! The API's side: append = produce every record and wait for every delivery report.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rdkafka::error::KafkaError;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer as _};
use rdkafka::types::RDKafkaErrorCode;

use super::{KafkaLog, TopicLayout, unavailable};
use crate::{LogError, LogProducer, OutRecord};

/// How long a readiness answer is reused: probes come often, a metadata round trip each
/// time would be wasted.
const CHECK_CACHE: Duration = Duration::from_secs(1);
/// How long librdkafka keeps retrying a record after the API gave up waiting for it.
const RETRY_WINDOW: Duration = Duration::from_secs(30);

pub struct KafkaProducer {
    log: KafkaLog,
    producer: FutureProducer,
    last_check: Mutex<Option<(Instant, Result<(), String>)>>,
}

impl KafkaProducer {
    pub(super) fn new(log: KafkaLog) -> Result<Self, LogError> {
        let c = log.config();
        let producer: FutureProducer = c
            .client("ugc-api")
            // A 2xx means every in-sync replica has the record, and a retried produce
            // is not written twice.
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("compression.type", c.compression.as_str())
            .set("linger.ms", c.linger.as_millis().to_string())
            .set("batch.size", c.batch_bytes.to_string())
            .set(
                "queue.buffering.max.messages",
                c.queue_max_messages.to_string(),
            )
            .set("queue.buffering.max.kbytes", c.queue_max_kbytes.to_string())
            // The API answers 503 once `delivery_timeout` passes, but librdkafka keeps
            // retrying the record for a while: a broker back within the window takes it
            // without the producer-epoch bump that expiring records would force (some
            // brokers mishandle that bump). A client retry of the 503 carries the same
            // event id, so a record delivered late is still loaded once.
            .set(
                "message.timeout.ms",
                RETRY_WINDOW.max(c.delivery_timeout).as_millis().to_string(),
            )
            // Records without a key (anonymous events) go to random partitions.
            .set("partitioner", "consistent_random")
            .create()
            .map_err(unavailable)?;
        // Series exist from the start, so a scrape before the first error shows zeros.
        for reason in ["queue_full", "timed_out", "refused"] {
            metrics::counter!("ugc_log_kafka_delivery_errors_total", "reason" => reason)
                .absolute(0);
        }
        Ok(Self {
            log,
            producer,
            last_check: Mutex::new(None),
        })
    }

    fn topic<'a>(&'a self, kind: &str, buf: &'a mut String) -> &'a str {
        match &self.log.config().layout {
            TopicLayout::Single { topic } => topic,
            TopicLayout::PerType { prefix, .. } => {
                buf.clear();
                buf.push_str(prefix);
                buf.push('.');
                buf.push_str(kind);
                buf
            }
        }
    }

    async fn probe(&self) -> Result<(), String> {
        let topic = self.log.config().layout.topics().remove(0);
        let client = self.producer.clone();
        // A metadata request needs a live broker connection (and reopens one a broker
        // closed while idle): the answer says whether an append could succeed.
        tokio::task::spawn_blocking(move || {
            client
                .client()
                .fetch_metadata(Some(&topic), Duration::from_secs(1))
                .map_err(|e| format!("no Kafka broker answers: {e}"))
                .and_then(|m| match m.topics().first().and_then(|t| t.error()) {
                    Some(e) => Err(format!(
                        "Kafka topic {topic}: {}",
                        RDKafkaErrorCode::from(e)
                    )),
                    None => Ok(()),
                })
        })
        .await
        .map_err(|e| e.to_string())?
    }
}

fn produce_error(e: &KafkaError, timeout: Duration) -> LogError {
    match e {
        KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull) => LogError::Overloaded,
        KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut) => {
            LogError::Timeout(timeout)
        }
        e => LogError::Unavailable(format!("Kafka: {e}")),
    }
}

/// Counts a record librdkafka could not take or deliver, by why.
fn count_delivery_error(e: &KafkaError) {
    let reason = match e {
        KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull) => "queue_full",
        KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut) => "timed_out",
        _ => "refused",
    };
    metrics::counter!("ugc_log_kafka_delivery_errors_total", "reason" => reason).increment(1);
}

/// The delivery reports an append stopped waiting for (its deadline passed, or an
/// earlier record failed): awaited on their own task, so that failures librdkafka
/// reports later are still counted.
fn count_late(deliveries: VecDeque<DeliveryFuture>) {
    if deliveries.is_empty() {
        return;
    }
    tokio::spawn(async move {
        for d in deliveries {
            if let Ok(Err((e, _))) = d.await {
                count_delivery_error(&e);
            }
        }
    });
}

#[async_trait]
impl LogProducer for KafkaProducer {
    async fn append(&self, records: Vec<OutRecord>) -> Result<(), LogError> {
        let timeout = self.log.config().delivery_timeout;
        let mut deliveries = VecDeque::with_capacity(records.len());
        let mut buf = String::new();
        for r in &records {
            let topic = self.topic(r.kind, &mut buf);
            let mut record = FutureRecord::<[u8], [u8]>::to(topic).payload(&r.payload);
            if let Some(key) = &r.key {
                record = record.key(key);
            }
            match self.producer.send_result(record) {
                Ok(delivery) => deliveries.push_back(delivery),
                // Records queued before this one may still be delivered; the client
                // gets a 503 and may retry with the same event ids.
                Err((e, _)) => {
                    count_delivery_error(&e);
                    count_late(deliveries);
                    return Err(produce_error(&e, timeout));
                }
            }
        }
        // The deadline of the answer: records undelivered by then get a 503 (and may
        // still be delivered within the retry window). Each report is awaited in
        // place, so whatever is left at the deadline can be handed to `count_late`.
        let all = async {
            while let Some(d) = deliveries.front_mut() {
                let report = d.await;
                deliveries.pop_front();
                match report {
                    Ok(Ok(_)) => {}
                    Ok(Err((e, _))) => {
                        count_delivery_error(&e);
                        return Err(produce_error(&e, timeout));
                    }
                    Err(_) => return Err(LogError::Closed),
                }
            }
            Ok(())
        };
        let result = match tokio::time::timeout(timeout, all).await {
            Ok(result) => result,
            Err(_) => Err(LogError::Timeout(timeout)),
        };
        count_late(deliveries);
        result
    }

    fn queue_depth(&self) -> Option<u64> {
        Some(self.producer.in_flight_count().max(0) as u64)
    }

    async fn check(&self) -> Result<(), LogError> {
        if !self.log.topics_ready() {
            return Err(LogError::Unavailable(
                "the Kafka topics are not created yet".into(),
            ));
        }
        let cached = self
            .last_check
            .lock()
            .ok()
            .and_then(|g| g.clone())
            .filter(|(at, _)| at.elapsed() < CHECK_CACHE);
        let result = match cached {
            Some((_, r)) => r,
            None => {
                let r = self.probe().await;
                if let Ok(mut g) = self.last_check.lock() {
                    *g = Some((Instant::now(), r.clone()));
                }
                r
            }
        };
        result.map_err(LogError::Unavailable)
    }
}
