//! Moves the outbox to the event log: append a batch, then forget it. A crash between
//! the two re-sends the batch with the same event ids, which the loader drops as repeats
//! (it dedups by user and event id); an event is never lost, since it leaves the outbox
//! only once the log has it.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, watch};
use ugc_log::{LogProducer, OutRecord};

use crate::{ContentError, ContentStore};

/// Events per append.
const BATCH: i64 = 500;
/// How often the outbox is looked at with no write to say so (and the back-off after a
/// failed append): events of another instance sharing the database, or left by a crash.
const IDLE: Duration = Duration::from_secs(1);

/// Relays until `stop` turns true. `wake` is notified after each committed change.
pub async fn run(
    store: Arc<dyn ContentStore>,
    producer: Arc<dyn LogProducer>,
    wake: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        match relay_once(store.as_ref(), producer.as_ref()).await {
            Ok(n) if n as i64 == BATCH => continue,
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "content outbox relay failed; retrying"),
        }
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep(IDLE) => {}
            _ = stop.changed() => return,
        }
        if *stop.borrow() {
            return;
        }
    }
}

/// One batch: the oldest events, appended together, then removed. How many it moved.
pub async fn relay_once(
    store: &dyn ContentStore,
    producer: &dyn LogProducer,
) -> Result<usize, ContentError> {
    let events = store.outbox(BATCH).await?;
    if events.is_empty() {
        return Ok(0);
    }
    let ids: Vec<String> = events.iter().map(|e| e.event_id.to_string()).collect();
    let records = events
        .iter()
        .map(|env| OutRecord {
            key: env.user_id.as_ref().map(|u| u.as_str().as_bytes().to_vec()),
            kind: env.event.type_name(),
            payload: env.encode(),
        })
        .collect();
    producer
        .append(records)
        .await
        .map_err(|e| ContentError::Unavailable(format!("the event log: {e}")))?;
    store.outbox_done(&ids).await?;
    Ok(ids.len())
}
