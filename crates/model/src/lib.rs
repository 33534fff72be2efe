//! The event catalogue shared by every stage: what a client may send ([`Event`]),
//! what the edge adds to it ([`Envelope`], the log record), and the newtypes that keep
//! invalid values out of the pipeline.

mod content;
mod event;
mod ids;
mod parse;
mod progress;
mod timestamp;

pub use content::{ReviewId, ReviewText, Score, Vote};
pub use event::{
    CONTENT_EVENT_TYPES, Context, ENVELOPE_VERSION, Envelope, Event, EventName, FilmPosition,
    MAX_VALUE_DEPTH, Page, Quality, value_depth,
};
pub use ids::{EventId, FilmId, UserId};
pub use parse::{EVENT_TYPES, FieldError, IncomingEvent, parse_event};
pub use progress::Progress;
pub use timestamp::Timestamp;
