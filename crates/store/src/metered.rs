//! A store that counts and times what is asked of it: reads by kind, inserts, and
//! errors by class, whichever engine answers.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use ugc_model::{EventId, FilmId, UserId};

use crate::{
    Erasure, EventStore, Progress, QueryLimits, QueryRows, StoreBatch, StoreError, StoreOverview,
};

pub struct Metered {
    inner: Arc<dyn EventStore>,
}

const READS: &[&str] = &[
    "film_progress",
    "continue_watching",
    "analyst_sql",
    "recent_event_ids",
    "erasures",
    "rows_left",
    "overview",
    "analytics",
];

impl Metered {
    pub fn new(inner: Arc<dyn EventStore>) -> Self {
        for kind in READS {
            metrics::counter!("ugc_store_reads_total", "kind" => *kind).absolute(0);
            let _ = metrics::histogram!("ugc_store_read_duration_seconds", "kind" => *kind);
        }
        metrics::counter!("ugc_store_inserts_total").absolute(0);
        let _ = metrics::histogram!("ugc_store_insert_duration_seconds");
        for class in ["transient", "rejected", "timeout", "not_allowed"] {
            metrics::counter!("ugc_store_errors_total", "class" => class).absolute(0);
        }
        Self { inner }
    }
}

impl StoreError {
    /// The class of the error, as a metric label: what the caller should do about it.
    pub fn class(&self) -> &'static str {
        match self {
            StoreError::Unavailable(_) => "transient",
            StoreError::Rejected(_) => "rejected",
            StoreError::Timeout(_) => "timeout",
            StoreError::NotAllowed(_) => "not_allowed",
        }
    }
}

fn counted<T>(result: &Result<T, StoreError>) {
    if let Err(e) = result {
        metrics::counter!("ugc_store_errors_total", "class" => e.class()).increment(1);
    }
}

async fn read<T>(
    kind: &'static str,
    f: impl std::future::Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    let started = Instant::now();
    let result = f.await;
    metrics::counter!("ugc_store_reads_total", "kind" => kind).increment(1);
    metrics::histogram!("ugc_store_read_duration_seconds", "kind" => kind)
        .record(started.elapsed().as_secs_f64());
    counted(&result);
    result
}

#[async_trait]
impl EventStore for Metered {
    async fn migrate(&self) -> Result<(), StoreError> {
        let r = self.inner.migrate().await;
        counted(&r);
        r
    }

    async fn insert(&self, batch: &StoreBatch) -> Result<(), StoreError> {
        let started = Instant::now();
        let r = self.inner.insert(batch).await;
        metrics::counter!("ugc_store_inserts_total").increment(1);
        metrics::histogram!("ugc_store_insert_duration_seconds")
            .record(started.elapsed().as_secs_f64());
        counted(&r);
        r
    }

    async fn film_progress(
        &self,
        user: &UserId,
        film: FilmId,
    ) -> Result<Option<Progress>, StoreError> {
        read("film_progress", self.inner.film_progress(user, film)).await
    }

    async fn continue_watching(
        &self,
        user: &UserId,
        limit: u32,
        offset: u32,
    ) -> Result<Vec<Progress>, StoreError> {
        read(
            "continue_watching",
            self.inner.continue_watching(user, limit, offset),
        )
        .await
    }

    async fn select(&self, sql: &str, limits: QueryLimits) -> Result<QueryRows, StoreError> {
        read("analyst_sql", self.inner.select(sql, limits)).await
    }

    async fn recent_event_ids(
        &self,
        window: Duration,
        limit: usize,
    ) -> Result<Vec<(Option<UserId>, EventId)>, StoreError> {
        read(
            "recent_event_ids",
            self.inner.recent_event_ids(window, limit),
        )
        .await
    }

    async fn record_erasure(&self, erasure: &Erasure) -> Result<(), StoreError> {
        let r = self.inner.record_erasure(erasure).await;
        counted(&r);
        r
    }

    async fn erasures(&self) -> Result<Vec<Erasure>, StoreError> {
        read("erasures", self.inner.erasures()).await
    }

    async fn erase(&self, erasure: &Erasure) -> Result<(), StoreError> {
        let r = self.inner.erase(erasure).await;
        counted(&r);
        r
    }

    async fn rows_left(&self, erasure: &Erasure) -> Result<u64, StoreError> {
        read("rows_left", self.inner.rows_left(erasure)).await
    }

    async fn analytics(
        &self,
        request: &crate::analytics::AnalyticsRequest,
    ) -> Result<crate::analytics::AnalyticsAnswer, StoreError> {
        read("analytics", self.inner.analytics(request)).await
    }

    fn analytics_sql(&self, request: &crate::analytics::AnalyticsRequest) -> String {
        self.inner.analytics_sql(request)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }

    async fn overview(&self) -> Result<StoreOverview, StoreError> {
        read("overview", self.inner.overview()).await
    }
}
