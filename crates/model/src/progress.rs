use serde::Serialize;
use utoipa::ToSchema;

use crate::{FilmId, Timestamp};

/// The viewer's last known state in one film: what the store derives from their events
/// and what the progress routes answer, one shape for both.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct Progress {
    pub film_id: FilmId,
    /// Seconds into the film at the last position report.
    pub position: u32,
    /// Whether the latest event for this film was "watched to the end".
    pub finished: bool,
    pub updated_at: Timestamp,
}
