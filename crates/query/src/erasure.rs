//! "Right to be forgotten": an admin erases everything stored of one user.
//!
//! The request is recorded in the store first, so every loader learns of it (they drop
//! that user's events still in the log, see `ugc-loader`) and every API instance can
//! answer for the job. Then a job deletes the user's rows (mutations, on every replica)
//! and waits until none is left — and stays left for longer than a loader takes to
//! notice, so an insert that raced the request is deleted too.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use ugc_model::{Timestamp, UserId};
use ugc_store::{Erasure, EventStore};

use crate::QueryError;

pub const ADMIN_ROLE: &str = "admin";

/// How long a job keeps deleting before it gives up (the next status read restarts it).
const JOB_DEADLINE: Duration = Duration::from_secs(3600);
/// How long nothing of the user must stay in the store before the job is done: longer
/// than a loader takes to re-read the erasures (1 s) and finish a batch.
const SETTLE: Duration = Duration::from_secs(3);
/// How long the count of rows left may stand still before the job deletes again, at
/// first; doubled each time, up to [`MAX_STALL`]. Rows committed just after the delete
/// was issued (a materialized view's, written a moment after the events it reads) are
/// not in the mutation's snapshot and would otherwise stay.
const FIRST_STALL: Duration = Duration::from_secs(5);
const MAX_STALL: Duration = Duration::from_secs(300);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Running,
    Done,
}

/// What `GET /api/v1/jobs/{id}` answers.
#[derive(Clone, Debug, Serialize)]
pub struct ErasureJob {
    pub job_id: uuid::Uuid,
    pub kind: &'static str,
    pub user_id: UserId,
    pub status: JobState,
    /// Rows of the user (up to the request) still stored.
    pub remaining_rows: u64,
    pub requested_at: Timestamp,
}

#[derive(Clone)]
pub struct Erasures {
    store: Arc<dyn EventStore>,
    /// Jobs this instance is running now.
    running: Arc<Mutex<HashSet<uuid::Uuid>>>,
}

fn require_admin<R: AsRef<str>>(roles: &[R]) -> Result<(), QueryError> {
    if roles.iter().any(|r| r.as_ref() == ADMIN_ROLE) {
        Ok(())
    } else {
        Err(QueryError::AdminOnly)
    }
}

impl Erasures {
    pub fn new(store: Arc<dyn EventStore>) -> Self {
        Self {
            store,
            running: Arc::default(),
        }
    }

    /// Records the request and starts the job.
    pub async fn erase_user<R: AsRef<str>>(
        &self,
        roles: &[R],
        user: UserId,
    ) -> Result<ErasureJob, QueryError> {
        require_admin(roles)?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let erasure = Erasure {
            job: uuid::Uuid::now_v7(),
            user,
            requested_secs: now,
        };
        self.store.record_erasure(&erasure).await?;
        tracing::info!(job = %erasure.job, "user data erasure requested");
        self.start(erasure.clone());
        Ok(view(erasure, JobState::Running, 0))
    }

    /// The job's state, read from the store. A job that still has rows to delete and
    /// runs nowhere here (say, its instance restarted) is started again.
    pub async fn job<R: AsRef<str>>(
        &self,
        roles: &[R],
        id: uuid::Uuid,
    ) -> Result<Option<ErasureJob>, QueryError> {
        require_admin(roles)?;
        let Some(erasure) = self
            .store
            .erasures()
            .await?
            .into_iter()
            .find(|e| e.job == id)
        else {
            return Ok(None);
        };
        let left = self.store.rows_left(&erasure).await?;
        let running = self.is_running(id);
        if left > 0 && !running {
            self.start(erasure.clone());
        }
        let state = if left == 0 && !running {
            JobState::Done
        } else {
            JobState::Running
        };
        Ok(Some(view(erasure, state, left)))
    }

    fn is_running(&self, id: uuid::Uuid) -> bool {
        self.running.lock().is_ok_and(|r| r.contains(&id))
    }

    fn start(&self, erasure: Erasure) {
        if !self.running.lock().is_ok_and(|mut r| r.insert(erasure.job)) {
            return;
        }
        let (store, running) = (self.store.clone(), self.running.clone());
        tokio::spawn(async move {
            let job = erasure.job;
            match run(store.as_ref(), &erasure).await {
                Ok(()) => tracing::info!(%job, "user data erased"),
                Err(e) => {
                    tracing::warn!(%job, error = %e, "erasure job stopped; reading its status restarts it")
                }
            }
            if let Ok(mut r) = running.lock() {
                r.remove(&job);
            }
        });
    }
}

async fn run(store: &dyn EventStore, erasure: &Erasure) -> Result<(), String> {
    let deadline = Instant::now() + JOB_DEADLINE;
    let pause = Duration::from_millis(250);
    let mut stall = FIRST_STALL;
    loop {
        if Instant::now() > deadline {
            return Err("gave up after an hour".into());
        }
        if let Err(e) = store.erase(erasure).await {
            tracing::warn!(job = %erasure.job, error = %e, "erasure: delete failed; retrying");
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        // The deletes are mutations that finish in the background.
        let mut gone_since: Option<Instant> = None;
        // The last count of rows left, and since when it has stood there.
        let mut last: Option<(u64, Instant)> = None;
        loop {
            match store.rows_left(erasure).await {
                Ok(0) => {
                    let since = *gone_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= SETTLE {
                        return Ok(());
                    }
                }
                // Rows again after none: an insert raced the request; delete again.
                Ok(_) if gone_since.is_some() => break,
                // Rows that the mutations are not removing: delete again.
                Ok(n) if last.is_some_and(|(m, since)| m == n && since.elapsed() >= stall) => {
                    tracing::info!(job = %erasure.job, rows = n, "erasure: rows left stand still; deleting again");
                    stall = (stall * 2).min(MAX_STALL);
                    break;
                }
                Ok(n) => {
                    if last.is_none_or(|(m, _)| m != n) {
                        last = Some((n, Instant::now()));
                    }
                }
                Err(e) => {
                    tracing::warn!(job = %erasure.job, error = %e, "erasure: cannot count rows; retrying")
                }
            }
            if Instant::now() > deadline {
                return Err("gave up after an hour".into());
            }
            tokio::time::sleep(pause).await;
        }
    }
}

fn view(e: Erasure, status: JobState, remaining_rows: u64) -> ErasureJob {
    let ms = i64::try_from(e.requested_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
    ErasureJob {
        job_id: e.job,
        kind: "erase_user",
        user_id: e.user,
        status,
        remaining_rows,
        requested_at: Timestamp::from_millis(ms).unwrap_or_else(|_| Timestamp::now()),
    }
}
