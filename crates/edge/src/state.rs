use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;
use ugc_content::ContentService;
use ugc_log::LogProducer;
use ugc_model::UserId;
use ugc_query::QueryService;

use crate::auth::Verifier;
use crate::compat::CompatConfig;
use crate::error::ApiError;
use crate::limit::{RateLimit, RateLimiter};

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
    /// One log line per request (target `ugc::access`).
    pub access_log: bool,
    /// Events per second per user on ingest; `None`: no limit.
    pub rate_limit: Option<RateLimit>,
    /// Origins (`https://cinema.example`) whose pages may call the API; empty: none.
    pub cors_origins: Vec<String>,
    /// Films' renditions (`<film_id>/<height>.mp4|.webm`); `None`: the built-in sample.
    pub media_dir: Option<std::path::PathBuf>,
}

impl Default for EdgeConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 1024 * 1024,
            max_batch: 1000,
            trusted_proxies: vec![],
            compat: CompatConfig::default(),
            access_log: true,
            rate_limit: None,
            cors_origins: vec![],
            media_dir: None,
        }
    }
}

/// Everything a handler needs; cheap to clone.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

struct Inner {
    producer: Arc<dyn LogProducer>,
    queries: QueryService,
    content: ContentService,
    verifier: Verifier,
    config: EdgeConfig,
    limiter: Option<RateLimiter>,
}

impl AppState {
    pub fn new(
        producer: Arc<dyn LogProducer>,
        queries: QueryService,
        content: ContentService,
        verifier: Verifier,
        config: EdgeConfig,
    ) -> Self {
        Self(Arc::new(Inner {
            producer,
            queries,
            content,
            verifier,
            limiter: config.rate_limit.map(RateLimiter::new),
            config,
        }))
    }
    pub fn producer(&self) -> &dyn LogProducer {
        self.0.producer.as_ref()
    }
    pub fn queries(&self) -> &QueryService {
        &self.0.queries
    }
    pub fn content(&self) -> &ContentService {
        &self.0.content
    }
    pub fn verifier(&self) -> &Verifier {
        &self.0.verifier
    }
    pub fn config(&self) -> &EdgeConfig {
        &self.0.config
    }

    /// Counts `n` events of a user (anonymous events: of their address) against the
    /// rate limit; all are admitted or none is (429 with Retry-After).
    pub fn admit(
        &self,
        user: Option<&UserId>,
        ip: Option<IpAddr>,
        n: usize,
    ) -> Result<(), ApiError> {
        let Some(limiter) = &self.0.limiter else {
            return Ok(());
        };
        let key = match (user, ip) {
            (Some(u), _) => format!("u:{u}"),
            (None, Some(ip)) => format!("ip:{ip}"),
            (None, None) => "anonymous".to_owned(),
        };
        let n = u32::try_from(n).unwrap_or(u32::MAX);
        limiter.admit(&key, n).map_err(|l| {
            let reason = if l.over_burst {
                format!(
                    "{n} events in one request are more than this user's burst allows; send fewer at a time"
                )
            } else {
                "too many events from this user; slow down".to_owned()
            };
            ApiError::RateLimited {
                reason,
                // Whole seconds, rounded up, so a client that waits that long gets in.
                retry_after_secs: l.retry_after.as_secs_f64().ceil().max(1.0) as u64,
            }
        })
    }
}
