use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

use crate::{EventId, FilmId, ReviewId, ReviewText, Score, Timestamp, UserId, Vote};

/// Seconds into a film. A week bounds anything a player can report (series marathons
/// included) and keeps garbage like 2^31 out of the tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(try_from = "i64", into = "u32")]
#[schema(value_type = u32, maximum = 604800)]
pub struct FilmPosition(u32);

impl FilmPosition {
    pub const MAX: u32 = 7 * 24 * 3600;
    pub fn seconds(&self) -> u32 {
        self.0
    }
}

impl TryFrom<i64> for FilmPosition {
    type Error = String;
    fn try_from(v: i64) -> Result<Self, String> {
        if v < 0 {
            return Err(format!("must be >= 0 seconds, got {v}"));
        }
        if v > Self::MAX as i64 {
            return Err(format!("must be <= {} seconds, got {v}", Self::MAX));
        }
        Ok(Self(v as u32))
    }
}

impl From<FilmPosition> for u32 {
    fn from(p: FilmPosition) -> u32 {
        p.0
    }
}

/// A video quality label as players name them ("720p", "1080", "auto").
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(try_from = "String", into = "String")]
#[schema(value_type = String, max_length = 32, example = "720p")]
pub struct Quality(String);

impl Quality {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Quality {
    type Error = &'static str;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        bounded_label(&s, 32)?;
        Ok(Self(s))
    }
}

impl From<Quality> for String {
    fn from(q: Quality) -> String {
        q.0
    }
}

/// Name of a `custom` event: a short dotted identifier, so analysts can group by it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(try_from = "String", into = "String")]
#[schema(value_type = String, max_length = 64, pattern = "^[A-Za-z0-9_.:-]{1,64}$", example = "trailer_click")]
pub struct EventName(String);

impl EventName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for EventName {
    type Error = &'static str;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        if s.is_empty() || s.len() > 64 {
            return Err("must be 1 to 64 characters");
        }
        if !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.:-".contains(&b))
        {
            return Err("may only contain letters, digits and _ . : -");
        }
        Ok(Self(s))
    }
}

impl From<EventName> for String {
    fn from(n: EventName) -> String {
        n.0
    }
}

fn bounded_label(s: &str, max: usize) -> Result<(), &'static str> {
    if s.trim().is_empty() {
        return Err("must not be empty");
    }
    if s.len() > max {
        return Err("is too long");
    }
    if s.chars().any(char::is_control) {
        return Err("contains control characters");
    }
    Ok(())
}

/// The seven pages of the catalogue API whose views are tracked (seed 003).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Page {
    FilmsList,
    Film,
    FilmSearch,
    Genres,
    Genre,
    Person,
    PersonSearch,
}

impl Page {
    pub fn as_str(&self) -> &'static str {
        match self {
            Page::FilmsList => "films_list",
            Page::Film => "film",
            Page::FilmSearch => "film_search",
            Page::Genres => "genres",
            Page::Genre => "genre",
            Page::Person => "person",
            Page::PersonSearch => "person_search",
        }
    }
}

/// What the viewer did. The `type` tag selects the variant.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// The player's periodic position report (seed 004).
    ViewProgress {
        film_id: FilmId,
        film_timestamp: FilmPosition,
    },
    Pause {
        film_id: FilmId,
        position: FilmPosition,
    },
    /// The film was watched to the end.
    FullView {
        film_id: FilmId,
    },
    QualityChange {
        film_id: FilmId,
        from: Quality,
        to: Quality,
        position: FilmPosition,
    },
    PageView {
        page: Page,
        #[serde(default)]
        #[schema(value_type = Object)]
        params: Map<String, Value>,
    },
    /// Player health: the first frame after `startup_ms` milliseconds.
    PlaybackStart {
        film_id: FilmId,
        #[schema(maximum = 3600000)]
        startup_ms: u32,
    },
    /// Player health: playback stalled for `duration_ms` at `position` (after the first
    /// frame and outside seeks).
    Rebuffer {
        film_id: FilmId,
        position: FilmPosition,
        #[schema(maximum = 3600000)]
        duration_ms: u32,
    },
    /// Player health: the media element reported an error.
    PlaybackError {
        film_id: FilmId,
        /// The player's error code (`MediaError.code`, or the player's own).
        code: u32,
        #[schema(max_length = 512)]
        message: String,
        /// Whether playback stopped because of it.
        fatal: bool,
    },
    /// Anything else a client tracks; `data` is kept as sent.
    Custom {
        name: EventName,
        #[serde(default)]
        #[schema(value_type = Object)]
        data: Value,
    },
    // What viewers do to content. Recorded by the content routes (through their outbox),
    // never accepted from clients on ingest: a client could not forge a rating this way.
    /// A viewer set or replaced their rating of a film.
    RatingSet {
        film_id: FilmId,
        score: Score,
    },
    RatingRemoved {
        film_id: FilmId,
    },
    ReviewPosted {
        film_id: FilmId,
        review_id: ReviewId,
        text: ReviewText,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        score: Option<Score>,
    },
    /// The author changed their review; only what changed is present.
    ReviewEdited {
        film_id: FilmId,
        review_id: ReviewId,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        text: Option<ReviewText>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        score: Option<Score>,
    },
    ReviewRemoved {
        film_id: FilmId,
        review_id: ReviewId,
    },
    ReviewVoted {
        film_id: FilmId,
        review_id: ReviewId,
        value: Vote,
    },
    ReviewVoteRemoved {
        film_id: FilmId,
        review_id: ReviewId,
    },
    BookmarkAdded {
        film_id: FilmId,
    },
    BookmarkRemoved {
        film_id: FilmId,
    },
}

impl Event {
    pub fn type_name(&self) -> &'static str {
        match self {
            Event::ViewProgress { .. } => "view_progress",
            Event::Pause { .. } => "pause",
            Event::FullView { .. } => "full_view",
            Event::QualityChange { .. } => "quality_change",
            Event::PageView { .. } => "page_view",
            Event::PlaybackStart { .. } => "playback_start",
            Event::Rebuffer { .. } => "rebuffer",
            Event::PlaybackError { .. } => "playback_error",
            Event::Custom { .. } => "custom",
            Event::RatingSet { .. } => "rating_set",
            Event::RatingRemoved { .. } => "rating_removed",
            Event::ReviewPosted { .. } => "review_posted",
            Event::ReviewEdited { .. } => "review_edited",
            Event::ReviewRemoved { .. } => "review_removed",
            Event::ReviewVoted { .. } => "review_voted",
            Event::ReviewVoteRemoved { .. } => "review_vote_removed",
            Event::BookmarkAdded { .. } => "bookmark_added",
            Event::BookmarkRemoved { .. } => "bookmark_removed",
        }
    }

    /// Player health events say how playback went, not where the viewer is: they never
    /// move "continue watching".
    pub fn is_health(&self) -> bool {
        matches!(
            self,
            Event::PlaybackStart { .. } | Event::Rebuffer { .. } | Event::PlaybackError { .. }
        )
    }

    pub fn film_id(&self) -> Option<FilmId> {
        match self {
            Event::ViewProgress { film_id, .. }
            | Event::Pause { film_id, .. }
            | Event::FullView { film_id }
            | Event::QualityChange { film_id, .. }
            | Event::RatingSet { film_id, .. }
            | Event::RatingRemoved { film_id }
            | Event::ReviewPosted { film_id, .. }
            | Event::ReviewEdited { film_id, .. }
            | Event::ReviewRemoved { film_id, .. }
            | Event::ReviewVoted { film_id, .. }
            | Event::ReviewVoteRemoved { film_id, .. }
            | Event::BookmarkAdded { film_id }
            | Event::BookmarkRemoved { film_id }
            | Event::PlaybackStart { film_id, .. }
            | Event::Rebuffer { film_id, .. }
            | Event::PlaybackError { film_id, .. } => Some(*film_id),
            Event::PageView { .. } | Event::Custom { .. } => None,
        }
    }

    /// Whether this is a content event (a rating, review, vote or bookmark change).
    pub fn is_content(&self) -> bool {
        CONTENT_EVENT_TYPES.contains(&self.type_name())
    }

    /// The position in the film this event reports, if any.
    pub fn position(&self) -> Option<FilmPosition> {
        match self {
            Event::ViewProgress { film_timestamp, .. } => Some(*film_timestamp),
            Event::Pause { position, .. }
            | Event::QualityChange { position, .. }
            | Event::Rebuffer { position, .. } => Some(*position),
            _ => None,
        }
    }
}

/// The types of content events, which only the content routes record.
pub const CONTENT_EVENT_TYPES: &[&str] = &[
    "rating_set",
    "rating_removed",
    "review_posted",
    "review_edited",
    "review_removed",
    "review_voted",
    "review_vote_removed",
    "bookmark_added",
    "bookmark_removed",
];

/// Where the client runs. Known keys are typed; anything else is kept in `extra`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Context {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 35, example = "ru-RU")]
    pub language: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 64, example = "Europe/Moscow")]
    pub timezone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 64, example = "web-2.3.1")]
    pub app_version: Option<String>,
    #[serde(flatten, default, skip_serializing_if = "Map::is_empty")]
    #[schema(value_type = Object)]
    pub extra: Map<String, Value>,
}

impl Context {
    pub fn is_empty(&self) -> bool {
        self.language.is_none()
            && self.timezone.is_none()
            && self.app_version.is_none()
            && self.extra.is_empty()
    }
}

/// Deepest nesting of arrays and objects accepted in a client's free-form values: `data`
/// of a `custom` event, `params` of a `page_view`, and each value of the context. The
/// loader decodes a log record with serde_json, whose recursion limit (128) counts the
/// envelope's own levels too (record, then event or context, then the value); a limit well
/// below it leaves room for those and for any later wrapping, and is more than any real
/// client needs. The edge refuses deeper values, so it never acknowledges an event the
/// loader would send to dead letters.
pub const MAX_VALUE_DEPTH: usize = 64;

/// How deeply `v` nests arrays and objects: 0 for a scalar, 1 for `{}` or `[1]`.
pub fn value_depth(v: &Value) -> usize {
    // Iterative, so a hostile value cannot exhaust the stack while being measured.
    let mut deepest = 0;
    let mut stack = vec![(v, 0usize)];
    while let Some((v, d)) = stack.pop() {
        match v {
            Value::Array(a) => {
                deepest = deepest.max(d + 1);
                stack.extend(a.iter().map(|c| (c, d + 1)));
            }
            Value::Object(o) => {
                deepest = deepest.max(d + 1);
                stack.extend(o.values().map(|c| (c, d + 1)));
            }
            _ => {}
        }
    }
    deepest
}

/// Version of the [`Envelope`] encoding, so a loader can refuse what it does not know.
pub const ENVELOPE_VERSION: u8 = 1;

/// One record of the event log: the client's event plus what the edge knows for sure.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    pub v: u8,
    pub event_id: EventId,
    /// `None` only for anonymous events, which the edge accepts only where configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<UserId>,
    pub received_at: Timestamp,
    /// The client's clock if it sent one, else `received_at`.
    pub occurred_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ip: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Context::is_empty")]
    pub context: Context,
    pub event: Event,
}

impl Envelope {
    pub fn encode(&self) -> Vec<u8> {
        // Serializing plain data structures into a Vec cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        let env: Envelope = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        if env.v != ENVELOPE_VERSION {
            return Err(format!("unknown envelope version {}", env.v));
        }
        Ok(env)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn nested(depth: usize) -> Value {
        (1..depth).fold(json!({}), |v, _| json!({ "a": v }))
    }

    fn envelope(data: Value, context_value: Value) -> Envelope {
        let mut context = Context {
            language: Some("ru".into()),
            ..Context::default()
        };
        context.extra.insert("device".into(), context_value);
        Envelope {
            v: ENVELOPE_VERSION,
            event_id: EventId::new_v7(),
            user_id: Some(UserId::parse("u1").unwrap()),
            received_at: Timestamp::now(),
            occurred_at: Timestamp::now(),
            client_ip: None,
            context,
            event: Event::Custom {
                name: EventName::try_from("x".to_owned()).unwrap(),
                data,
            },
        }
    }

    /// The edge's limit and the loader's decoder agree: a record holding values at the
    /// deepest nesting the edge accepts decodes, both in `data` and in the context.
    #[test]
    fn the_loader_decodes_values_at_the_edge_limit() {
        let deep = nested(MAX_VALUE_DEPTH);
        let env = envelope(deep.clone(), deep);
        assert_eq!(Envelope::decode(&env.encode()).unwrap(), env);
    }

    /// Why the limit exists: a value the client's JSON parser still took (126 levels)
    /// no longer decodes once wrapped in a record.
    #[test]
    fn a_value_nested_near_the_parser_limit_does_not_decode_in_a_record() {
        let env = envelope(nested(126), json!(1));
        assert!(Envelope::decode(&env.encode()).is_err());
    }
}
