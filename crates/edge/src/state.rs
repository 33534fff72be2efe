use std::sync::Arc;

use ipnet::IpNet;
use ugc_log::LogProducer;
use ugc_query::QueryService;

use crate::auth::Verifier;
use crate::compat::CompatConfig;

/// Limits and policies of the edge.
#[derive(Clone, Debug)]
pub struct EdgeConfig {
    /// Largest request body, in bytes.
    pub max_body_bytes: usize,
    /// Most events in one batch request.
    pub max_batch: usize,
    /// Peers whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpNet>,
    /// Which seed services' routes are served, and whether their anonymous events are.
    pub compat: CompatConfig,
}

impl Default for EdgeConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 1024 * 1024,
            max_batch: 1000,
            trusted_proxies: vec![],
            compat: CompatConfig::default(),
        }
    }
}

/// Everything a handler needs; cheap to clone.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

struct Inner {
    producer: Arc<dyn LogProducer>,
    queries: QueryService,
    verifier: Verifier,
    config: EdgeConfig,
}

impl AppState {
    pub fn new(
        producer: Arc<dyn LogProducer>,
        queries: QueryService,
        verifier: Verifier,
        config: EdgeConfig,
    ) -> Self {
        Self(Arc::new(Inner {
            producer,
            queries,
            verifier,
            config,
        }))
    }
    pub fn producer(&self) -> &dyn LogProducer {
        self.0.producer.as_ref()
    }
    pub fn queries(&self) -> &QueryService {
        &self.0.queries
    }
    pub fn verifier(&self) -> &Verifier {
        &self.0.verifier
    }
    pub fn config(&self) -> &EdgeConfig {
        &self.0.config
    }
}
