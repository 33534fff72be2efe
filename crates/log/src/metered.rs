//! A producer that counts what it appends: the one place every route's events pass
//! through on their way to the log, whichever backend holds them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;

use crate::{LogError, LogProducer, OutRecord};

pub struct Metered {
    inner: Arc<dyn LogProducer>,
    backend: &'static str,
}

impl Metered {
    /// `kinds`: the event types there are, so that each has its series from the start.
    pub fn new(inner: Arc<dyn LogProducer>, backend: &'static str, kinds: &[&'static str]) -> Self {
        // Series exist from the start, so a scrape before the first event shows zeros.
        metrics::counter!("ugc_log_appends_total", "backend" => backend).absolute(0);
        let _ = metrics::histogram!("ugc_log_append_duration_seconds", "backend" => backend);
        for kind in kinds {
            metrics::counter!("ugc_events_accepted_total", "type" => *kind).absolute(0);
        }
        for cause in ["overloaded", "timeout", "unavailable", "closed"] {
            metrics::counter!("ugc_log_unavailable_total", "cause" => cause).absolute(0);
        }
        Self { inner, backend }
    }
}

impl LogError {
    /// The cause as a metric label.
    pub fn cause(&self) -> &'static str {
        match self {
            LogError::Overloaded => "overloaded",
            LogError::Timeout(_) => "timeout",
            LogError::Unavailable(_) => "unavailable",
            LogError::Closed => "closed",
        }
    }
}

#[async_trait]
impl LogProducer for Metered {
    async fn append(&self, records: Vec<OutRecord>) -> Result<(), LogError> {
        let mut kinds: BTreeMap<&'static str, u64> = BTreeMap::new();
        for r in &records {
            *kinds.entry(r.kind).or_default() += 1;
        }
        let started = Instant::now();
        let result = self.inner.append(records).await;
        metrics::histogram!("ugc_log_append_duration_seconds", "backend" => self.backend)
            .record(started.elapsed().as_secs_f64());
        match &result {
            Ok(()) => {
                metrics::counter!("ugc_log_appends_total", "backend" => self.backend).increment(1);
                for (kind, n) in kinds {
                    metrics::counter!("ugc_events_accepted_total", "type" => kind).increment(n);
                }
            }
            Err(e) => {
                metrics::counter!("ugc_log_unavailable_total", "cause" => e.cause()).increment(1)
            }
        }
        result
    }

    async fn check(&self) -> Result<(), LogError> {
        self.inner.check().await
    }

    fn queue_depth(&self) -> Option<u64> {
        self.inner.queue_depth()
    }
}

impl Metered {
    /// Sets `ugc_log_queue_depth` from the producer's queue; the metrics endpoint calls
    /// it when scraped.
    pub fn record_queue_depth(&self) {
        if let Some(depth) = self.inner.queue_depth() {
            metrics::gauge!("ugc_log_queue_depth", "backend" => self.backend).set(depth as f64);
        }
    }
}
