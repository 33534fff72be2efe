//! Turning a client's JSON object into an [`Event`], reporting *every* bad field with its
//! JSON path rather than stopping at the first, so a client developer fixes a payload in
//! one round trip. Each field is deserialized on its own through its newtype, so the
//! validation rules live in one place (the newtypes) and this module only walks fields.

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use utoipa::ToSchema;

use crate::{
    Context, Event, EventId, EventName, FilmId, FilmPosition, MAX_VALUE_DEPTH, Page, Quality,
    Timestamp, value_depth,
};

/// One rejected field: `field` is a JSON path relative to the event (`film_id`,
/// `context.language`), `reason` says what is wrong in words.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct FieldError {
    #[schema(example = "film_id")]
    pub field: String,
    #[schema(example = "invalid type: integer `5`, expected a UUID string")]
    pub reason: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// An event as the client sent it, validated but not yet enriched by the edge.
#[derive(Clone, Debug, PartialEq)]
pub struct IncomingEvent {
    pub event_id: Option<EventId>,
    /// A `user_id` the client put in the body. Never trusted: the token names the user;
    /// the edge records a differing claim for audit.
    pub claimed_user: Option<String>,
    pub occurred_at: Option<Timestamp>,
    pub context: Context,
    pub event: Event,
}

pub const EVENT_TYPES: &[&str] = &[
    "view_progress",
    "pause",
    "full_view",
    "quality_change",
    "page_view",
    "playback_start",
    "rebuffer",
    "playback_error",
    "custom",
];

/// Longest duration a player may report (startup, a stall): an hour. Anything longer is
/// a broken clock, not a measurement.
pub const MAX_DURATION_MS: u32 = 3_600_000;
const COMMON_FIELDS: &[&str] = &["type", "event_id", "occurred_at", "context", "user_id"];

/// Validates one event object. On failure, returns every bad field.
pub fn parse_event(value: &Value) -> Result<IncomingEvent, Vec<FieldError>> {
    let Some(obj) = value.as_object() else {
        return Err(vec![FieldError::new(
            "",
            format!("expected a JSON object, got {}", kind(value)),
        )]);
    };
    let mut f = Fields::new(obj, "");
    let event_id = f.opt::<EventId>("event_id");
    let occurred_at = f.opt::<Timestamp>("occurred_at");
    let context = f.opt_with("context", parse_context);
    let claimed_user = obj.get("user_id").and_then(|v| match v {
        Value::String(s) => Some(s.clone()),
        Value::Null => None,
        other => Some(other.to_string()),
    });

    let event = match obj.get("type") {
        None => {
            f.error(
                "type",
                format!("missing field; one of: {}", EVENT_TYPES.join(", ")),
            );
            // Without a type, no other field can be judged unknown.
            f.allow_any();
            None
        }
        Some(Value::String(t)) => parse_kind(t, &mut f),
        Some(other) => {
            f.error("type", format!("expected a string, got {}", kind(other)));
            f.allow_any();
            None
        }
    };
    f.finish()?;
    match event {
        Some(event) => Ok(IncomingEvent {
            event_id: event_id.flatten(),
            claimed_user,
            occurred_at: occurred_at.flatten(),
            context: context.flatten().unwrap_or_default(),
            event,
        }),
        // finish() returns Err whenever a field failed, so this is unreachable in practice;
        // answering with a validation error keeps it panic-free regardless.
        None => Err(vec![FieldError::new("type", "invalid event")]),
    }
}

fn parse_kind(t: &str, f: &mut Fields<'_>) -> Option<Event> {
    match t {
        "view_progress" => {
            f.allow(&["film_id", "film_timestamp"]);
            let film_id = f.req::<FilmId>("film_id");
            let ts = f.req::<FilmPosition>("film_timestamp");
            Some(Event::ViewProgress {
                film_id: film_id?,
                film_timestamp: ts?,
            })
        }
        "pause" => {
            f.allow(&["film_id", "position"]);
            let film_id = f.req::<FilmId>("film_id");
            let position = f.req::<FilmPosition>("position");
            Some(Event::Pause {
                film_id: film_id?,
                position: position?,
            })
        }
        "full_view" => {
            f.allow(&["film_id"]);
            Some(Event::FullView {
                film_id: f.req::<FilmId>("film_id")?,
            })
        }
        "quality_change" => {
            f.allow(&["film_id", "from", "to", "position"]);
            let film_id = f.req::<FilmId>("film_id");
            let from = f.req::<Quality>("from");
            let to = f.req::<Quality>("to");
            let position = f.req::<FilmPosition>("position");
            Some(Event::QualityChange {
                film_id: film_id?,
                from: from?,
                to: to?,
                position: position?,
            })
        }
        "page_view" => {
            f.allow(&["page", "params"]);
            let page = f.req::<Page>("page");
            let params = f
                .opt::<Map<String, Value>>("params")
                .filter(|_| f.shallow("params"));
            Some(Event::PageView {
                page: page?,
                params: params?.unwrap_or_default(),
            })
        }
        "playback_start" => {
            f.allow(&["film_id", "startup_ms"]);
            let film_id = f.req::<FilmId>("film_id");
            let startup_ms = f.duration_ms("startup_ms");
            Some(Event::PlaybackStart {
                film_id: film_id?,
                startup_ms: startup_ms?,
            })
        }
        "rebuffer" => {
            f.allow(&["film_id", "position", "duration_ms"]);
            let film_id = f.req::<FilmId>("film_id");
            let position = f.req::<FilmPosition>("position");
            let duration_ms = f.duration_ms("duration_ms");
            Some(Event::Rebuffer {
                film_id: film_id?,
                position: position?,
                duration_ms: duration_ms?,
            })
        }
        "playback_error" => {
            f.allow(&["film_id", "code", "message", "fatal"]);
            let film_id = f.req::<FilmId>("film_id");
            let code = f.req::<u32>("code");
            let message = f.opt::<String>("message").filter(|m| {
                let long = m.as_ref().is_some_and(|m| m.len() > 512);
                if long {
                    f.error("message", "must be at most 512 bytes");
                }
                !long
            });
            let fatal = f.req::<bool>("fatal");
            Some(Event::PlaybackError {
                film_id: film_id?,
                code: code?,
                message: message?.unwrap_or_default(),
                fatal: fatal?,
            })
        }
        "custom" => {
            f.allow(&["name", "data"]);
            let name = f.req::<EventName>("name");
            let data = f.opt::<Value>("data").filter(|_| f.shallow("data"));
            Some(Event::Custom {
                name: name?,
                data: data?.unwrap_or(Value::Object(Map::new())),
            })
        }
        other if crate::CONTENT_EVENT_TYPES.contains(&other) => {
            f.error(
                "type",
                format!(
                    "`{other}` is recorded by the content routes (/api/v1/films/…), not sent here"
                ),
            );
            f.allow_any();
            None
        }
        other => {
            f.error(
                "type",
                format!(
                    "unknown event type `{other}`; one of: {}",
                    EVENT_TYPES.join(", ")
                ),
            );
            f.allow_any();
            None
        }
    }
}

fn parse_context(value: &Value, path: &str, errors: &mut Vec<FieldError>) -> Option<Context> {
    let Some(obj) = value.as_object() else {
        errors.push(FieldError::new(
            path,
            format!("expected a JSON object, got {}", kind(value)),
        ));
        return None;
    };
    let mut f = Fields::new(obj, path);
    f.allow_any();
    let language = f.opt_label("language", 35);
    let timezone = f.opt_label("timezone", 64);
    let app_version = f.opt_label("app_version", 64);
    let extra: Map<String, Value> = obj
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "language" | "timezone" | "app_version"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for k in extra.keys() {
        f.shallow(k);
    }
    let ok = f.errors.is_empty();
    errors.append(&mut f.errors);
    ok.then(|| Context {
        language: language.flatten(),
        timezone: timezone.flatten(),
        app_version: app_version.flatten(),
        extra,
    })
}

/// Walks the fields of one JSON object, collecting errors instead of returning early.
struct Fields<'a> {
    obj: &'a Map<String, Value>,
    prefix: &'a str,
    allowed: Option<Vec<&'static str>>,
    errors: Vec<FieldError>,
}

impl<'a> Fields<'a> {
    fn new(obj: &'a Map<String, Value>, prefix: &'a str) -> Self {
        Self {
            obj,
            prefix,
            allowed: Some(COMMON_FIELDS.to_vec()),
            errors: Vec::new(),
        }
    }

    fn path(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_owned()
        } else {
            format!("{}.{name}", self.prefix)
        }
    }

    fn error(&mut self, name: &str, reason: impl Into<String>) {
        let path = self.path(name);
        self.errors.push(FieldError::new(path, reason));
    }

    fn allow(&mut self, names: &[&'static str]) {
        if let Some(a) = self.allowed.as_mut() {
            a.extend_from_slice(names);
        }
    }

    fn allow_any(&mut self) {
        self.allowed = None;
    }

    fn req<T: DeserializeOwned>(&mut self, name: &str) -> Option<T> {
        match self.obj.get(name) {
            None | Some(Value::Null) => {
                self.error(name, "missing required field");
                None
            }
            Some(v) => self.de(name, v),
        }
    }

    /// `Some(None)` when absent or null, `None` when present but invalid.
    fn opt<T: DeserializeOwned>(&mut self, name: &str) -> Option<Option<T>> {
        match self.obj.get(name) {
            None | Some(Value::Null) => Some(None),
            Some(v) => self.de(name, v).map(Some),
        }
    }

    fn opt_with<T>(
        &mut self,
        name: &str,
        parse: fn(&Value, &str, &mut Vec<FieldError>) -> Option<T>,
    ) -> Option<Option<T>> {
        match self.obj.get(name) {
            None | Some(Value::Null) => Some(None),
            Some(v) => {
                let path = self.path(name);
                parse(v, &path, &mut self.errors).map(Some)
            }
        }
    }

    /// False, with an error naming the field, when its value nests deeper than the
    /// loader can decode (see [`MAX_VALUE_DEPTH`]).
    fn shallow(&mut self, name: &str) -> bool {
        let deep = self
            .obj
            .get(name)
            .is_some_and(|v| value_depth(v) > MAX_VALUE_DEPTH);
        if deep {
            self.error(
                name,
                format!("nests arrays and objects deeper than {MAX_VALUE_DEPTH} levels"),
            );
        }
        !deep
    }

    /// A required duration in whole milliseconds, at most [`MAX_DURATION_MS`].
    fn duration_ms(&mut self, name: &str) -> Option<u32> {
        let ms = self.req::<u32>(name)?;
        if ms > MAX_DURATION_MS {
            self.error(name, format!("must be <= {MAX_DURATION_MS} ms, got {ms}"));
            return None;
        }
        Some(ms)
    }

    fn opt_label(&mut self, name: &str, max: usize) -> Option<Option<String>> {
        let s = self.opt::<String>(name)?;
        if s.as_ref().is_some_and(|s| s.len() > max) {
            self.error(name, format!("must be at most {max} bytes"));
            return None;
        }
        Some(s)
    }

    fn de<T: DeserializeOwned>(&mut self, name: &str, v: &Value) -> Option<T> {
        match T::deserialize(v) {
            Ok(t) => Some(t),
            Err(e) => {
                self.error(name, e.to_string());
                None
            }
        }
    }

    fn finish(mut self) -> Result<(), Vec<FieldError>> {
        if let Some(allowed) = &self.allowed {
            let unknown: Vec<String> = self
                .obj
                .keys()
                .filter(|k| !allowed.contains(&k.as_str()))
                .cloned()
                .collect();
            for k in unknown {
                self.error(&k, "unknown field");
            }
        }
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(self.errors)
        }
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn fields(errs: &[FieldError]) -> Vec<&str> {
        errs.iter().map(|e| e.field.as_str()).collect()
    }

    #[test]
    fn accepts_the_issue_example() {
        let e = parse_event(&json!({"type":"view_progress","film_id":"1ec4cd73-2fd5-4f25-af68-b6595d279af2","film_timestamp":754})).unwrap();
        assert_eq!(e.event.type_name(), "view_progress");
        assert_eq!(e.event.position().unwrap().seconds(), 754);
    }

    #[test]
    fn reports_every_bad_field_with_its_path() {
        let errs = parse_event(&json!({
            "type":"quality_change","film_id":"nope","from":"","position":-1,
            "context":{"language": "x".repeat(40)}, "bogus": 1
        }))
        .unwrap_err();
        let mut got = fields(&errs);
        got.sort();
        assert_eq!(
            got,
            [
                "bogus",
                "context.language",
                "film_id",
                "from",
                "position",
                "to"
            ]
        );
    }

    #[test]
    fn unknown_or_missing_type_names_the_type_field() {
        assert_eq!(
            fields(&parse_event(&json!({"type":"teleport"})).unwrap_err()),
            ["type"]
        );
        assert_eq!(
            fields(&parse_event(&json!({"film_id":"x"})).unwrap_err()),
            ["type"]
        );
        assert_eq!(fields(&parse_event(&json!([1])).unwrap_err()), [""]);
    }

    /// `depth` levels of objects: `{"a":{"a":...{}}}`.
    pub(crate) fn nested(depth: usize) -> Value {
        (1..depth).fold(json!({}), |v, _| json!({ "a": v }))
    }

    #[test]
    fn values_nested_beyond_the_limit_are_refused_by_field() {
        assert_eq!(
            crate::value_depth(&nested(MAX_VALUE_DEPTH)),
            MAX_VALUE_DEPTH
        );
        let ok = |deep: Value| {
            [
                json!({"type":"custom","name":"x","data": deep}),
                json!({"type":"page_view","page":"film","params": deep}),
                json!({"type":"custom","name":"x","context": {"device": deep}}),
            ]
        };
        for e in ok(nested(MAX_VALUE_DEPTH)) {
            parse_event(&e).unwrap();
        }
        let errs: Vec<Vec<FieldError>> = ok(nested(MAX_VALUE_DEPTH + 1))
            .iter()
            .map(|e| parse_event(e).unwrap_err())
            .collect();
        assert_eq!(fields(&errs[0]), ["data"]);
        assert_eq!(fields(&errs[1]), ["params"]);
        assert_eq!(fields(&errs[2]), ["context.device"]);
    }

    #[test]
    fn player_health_events_are_validated_like_the_others() {
        let film = "1ec4cd73-2fd5-4f25-af68-b6595d279af2";
        for ok in [
            json!({"type":"playback_start","film_id":film,"startup_ms":350}),
            json!({"type":"rebuffer","film_id":film,"position":12,"duration_ms":800}),
            json!({"type":"playback_error","film_id":film,"code":3,"message":"decode","fatal":true}),
        ] {
            let e = parse_event(&ok).unwrap();
            assert!(e.event.is_health(), "{ok}");
        }
        let errs = parse_event(
            &json!({"type":"rebuffer","film_id":film,"position":-1,"duration_ms":3_600_001}),
        )
        .unwrap_err();
        assert_eq!(fields(&errs), ["position", "duration_ms"]);
        let errs = parse_event(
            &json!({"type":"playback_error","film_id":film,"code":"x","message":"m".repeat(513)}),
        )
        .unwrap_err();
        let mut got = fields(&errs);
        got.sort();
        assert_eq!(got, ["code", "fatal", "message"]);
        assert_eq!(
            fields(&parse_event(&json!({"type":"playback_start","film_id":film})).unwrap_err()),
            ["startup_ms"]
        );
    }

    #[test]
    fn context_keeps_unknown_keys() {
        let e = parse_event(
            &json!({"type":"page_view","page":"film_search","params":{"query":"matrix"},
            "context":{"language":"ru","device":"tv"}}),
        )
        .unwrap();
        assert_eq!(e.context.language.as_deref(), Some("ru"));
        assert_eq!(e.context.extra["device"], "tv");
    }
}
