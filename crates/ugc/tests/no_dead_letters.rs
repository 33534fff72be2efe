//! Black-box: the edge says 2xx only for what the loader will store. Every route's
//! accepted shapes — hostile ones included (values where typed strings belong, duplicate
//! keys after mapping, nesting at the limit) — end up in `ugc.events`, and nothing in
//! `ugc.dead_letters`; what the loader could not decode is refused up front with a 4xx
//! naming the field.

mod common;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{SECRET, Server, new_user, read};
use jsonwebtoken::{EncodingKey, Header, encode};
use serde_json::{Value, json};

const FILM: &str = "1ec4cd73-2fd5-4f25-af68-b6595d279af2";

/// The one limit the edge checks and the loader is tested to decode (`ugc-model`'s unit
/// tests decode a record at exactly this depth).
const MAX_DEPTH: usize = ugc_model::MAX_VALUE_DEPTH;

/// `depth` levels of objects: `{"a":{"a":...{}}}`.
fn nested(depth: usize) -> Value {
    (1..depth).fold(json!({}), |v, _| json!({ "a": v }))
}

/// A token shaped like the seeds' auth services issued: the user in `user_id`.
fn seed_token(user: &str) -> String {
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    encode(
        &Header::default(),
        &json!({"user_id": user, "exp": exp}),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

enum Auth<'a> {
    Bearer(&'a str),
    Cookie(&'static str, &'a str),
    None,
}

struct Client<'a> {
    server: &'a Server,
    /// Events the server said it took, by what its answers say.
    acknowledged: usize,
}

impl Client<'_> {
    async fn send(
        &self,
        method: &str,
        path: &str,
        auth: &Auth<'_>,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let url = format!("{}{path}", self.server.base);
        let mut r = match method {
            "GET" => self.server.http.get(url),
            _ => self.server.http.post(url),
        };
        r = match auth {
            Auth::Bearer(t) => r.bearer_auth(t),
            Auth::Cookie(name, t) => r.header("cookie", format!("{name}={t}")),
            Auth::None => r,
        };
        if let Some(b) = body {
            r = r.json(b);
        }
        read(r.send().await.unwrap()).await
    }

    /// Sends a request that must be taken, and counts the `events` it carries.
    async fn accepted(
        &mut self,
        method: &str,
        path: &str,
        auth: &Auth<'_>,
        body: Option<&Value>,
        events: usize,
    ) -> Value {
        let (status, answer) = self.send(method, path, auth, body).await;
        assert!(
            (200..300).contains(&status),
            "{method} {path} {body:?}: {status} {answer}"
        );
        self.acknowledged += events;
        answer
    }

    /// Sends a request that must be refused with 422 naming `field`.
    async fn refused(&self, path: &str, auth: &Auth<'_>, body: &Value, field: &str) {
        let (status, answer) = self.send("POST", path, auth, Some(body)).await;
        assert_eq!(status, 422, "{path}: {answer}");
        let fields: Vec<&str> = answer["errors"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| e["field"].as_str())
            .collect();
        assert_eq!(fields, [field], "{path}: {answer}");
    }
}

#[tokio::test]
async fn every_acknowledged_event_is_stored_and_none_is_dead_lettered() {
    let server = Server::start(&["--compat-anonymous", "true"]).await;
    let user = new_user();
    let token = server.token(&user, &[]);
    let bearer = Auth::Bearer(&token);
    let seed = seed_token(&user);
    // Anonymous seed 003 events carry no user: they are told apart by their film.
    let anon_film = uuid::Uuid::new_v4().to_string();
    let mut c = Client {
        server: &server,
        acknowledged: 0,
    };
    let mut anonymous = Client {
        server: &server,
        acknowledged: 0,
    };
    let deep = nested(MAX_DEPTH);
    let too_deep = nested(MAX_DEPTH + 1);
    let near_parser_limit = nested(126);

    // The canonical API: every type, free-form values at the nesting limit, odd numbers.
    let events = [
        json!({"type":"view_progress","film_id":FILM,"film_timestamp":754,"occurred_at":1716580000123u64}),
        json!({"type":"pause","film_id":FILM,"position":0,"occurred_at":"2024-05-01T20:15:00+03:00"}),
        json!({"type":"full_view","film_id":FILM,"context":{"language":"ru-RU","timezone":"Europe/Moscow","app_version":"tv-1.2"}}),
        json!({"type":"quality_change","film_id":FILM,"from":"360p","to":"1080","position":604800}),
        json!({"type":"playback_start","film_id":FILM,"startup_ms":3_600_000}),
        json!({"type":"rebuffer","film_id":FILM,"position":604800,"duration_ms":0}),
        json!({"type":"playback_error","film_id":FILM,"code":u32::MAX,"message":"é\u{0}".repeat(100),"fatal":false}),
        json!({"type":"page_view","page":"film_search","params":{"query":"матрица","deep":nested(MAX_DEPTH - 1)}}),
        json!({"type":"custom","name":"deep.data","data":deep}),
        json!({"type":"custom","name":"odd:values-1","data":[u64::MAX, i64::MIN, 1.5e300, -0.0, "\u{0}\u{1F3AC}", null, true]}),
        json!({"type":"custom","name":"no_data"}),
        json!({"type":"full_view","film_id":FILM,"occurred_at":"2106-02-07T06:28:15Z"}),
        json!({"type":"full_view","film_id":FILM,"occurred_at":"2000-01-01T00:00:00Z"}),
        json!({"type":"custom","name":"ctx","context":{"device":deep,"seed":"not-a-seed","claimed_user_id":5,"language_raw":[1]}}),
        json!({"type":"custom","name":"ids","user_id":"someone-else","event_id":uuid::Uuid::new_v4().to_string()}),
    ];
    for e in &events {
        c.accepted("POST", "/api/v1/events", &bearer, Some(e), 1)
            .await;
    }
    let batch = json!([events[0], events[5], {"type":"bogus"}, events[10]]);
    let answer = c
        .accepted("POST", "/api/v1/events/batch", &bearer, Some(&batch), 3)
        .await;
    assert_eq!(
        (answer["accepted"].as_u64(), answer["rejected"].as_u64()),
        (Some(3), Some(1))
    );
    c.accepted(
        "POST",
        "/api/v1/events/batch",
        &bearer,
        Some(&json!({"events": [events[3]]})),
        1,
    )
    .await;

    // Seed 000: typed context keys with the wrong types; the body itself as custom data.
    let progress = |extra: Value| {
        let mut b = json!({"movie_id": FILM, "progress": 754.6, "status": "completed", "last_watched": "2024-05-01T20:15:00"});
        b.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        b
    };
    let cookie = Auth::Cookie("access_token_cookie", &seed);
    let s000 = "/ugc/api/v1/produce/send_to_broker";
    for extra in [
        json!({"language": {"code": "ru"}}),
        json!({"language": ["ru", "en"], "timezone": 180, "app_version": false}),
        json!({"language": "x".repeat(100), "timezone": null, "seed": "999", "app_version_raw": 1}),
        json!({"language": "ru", "context": {"language": 5}}),
    ] {
        // movie_progress with status completed is two events: a position and a full view.
        c.accepted(
            "POST",
            &format!("{s000}/movie_progress"),
            &cookie,
            Some(&progress(extra)),
            2,
        )
        .await;
    }
    c.accepted(
        "POST",
        &format!("{s000}/movie_details"),
        &cookie,
        Some(&json!({"movie_id": FILM, "language": 7, "more": nested(MAX_DEPTH - 1)})),
        1,
    )
    .await;
    c.accepted(
        "POST",
        &format!("{s000}/movie_filters"),
        &cookie,
        Some(&json!({"query": "matrix", "page": 1, "timezone": true})),
        1,
    )
    .await;

    // Seed 001: the query string (always text).
    let s001 = "/ugc/send-to-broker";
    let q = "movie_id=1&user_id=12&language=5&timezone=-2147483648&app_version=&movie_name=Matrix";
    c.accepted(
        "GET",
        &format!("{s001}/movie_events?{q}"),
        &Auth::Cookie("access_token", &seed),
        None,
        1,
    )
    .await;
    c.accepted(
        "POST",
        &format!("{s001}/movie_events?{q}&fully_viewed=True"),
        &Auth::Cookie("access_token", &seed),
        None,
        1,
    )
    .await;

    // Seed 002: `version` and `app_version` both sent; typed keys of every JSON type.
    let message = |extra: Value| {
        let mut b = json!({"payload": {"movie_id": FILM, "user_id": "1ec4cd73-0000-4f25-af68-b6595d279af2", "event_data": "5 stars", "event_timestamp": 1621932759},
                           "event_type": "movie_like", "ip": "192.168.1.1"});
        b.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        b
    };
    for extra in [
        json!({"version": "1.0", "app_version": "2.0"}),
        json!({"version": "1.0", "app_version": "1.0", "language": 7, "timezone": false}),
        json!({"version": {"major": 1}, "app_version": [2], "language": {"code": "RU"}, "timezone": -2147483648i64}),
        json!({"version": 3, "language": null, "client_data": {"os": "tv", "deep": nested(MAX_DEPTH - 1)}}),
    ] {
        c.accepted("POST", "/api/v1/produce", &bearer, Some(&message(extra)), 1)
            .await;
    }
    let items = json!([
        message(json!({"version": "1", "app_version": "2"})),
        message(json!({"language": true}))
    ]);
    c.accepted("POST", "/api/v1/batch_produce", &bearer, Some(&items), 2)
        .await;

    // Seed 003: the player's clicks, with a token and anonymously.
    for (path, body) in [
        (
            "/api/pause",
            json!({"pause_at": 754.3, "timestamp": 1716580000123u64, "timezone": -2147483648i64}),
        ),
        (
            "/api/quality-change",
            json!({"quality_before": 360, "quality_after": "720", "changed_at": 120.5, "timestamp": 1716580001123u64, "language": {"x": 1}}),
        ),
        (
            "/api/full-view",
            json!({"timestamp": 1716580002123u64, "app_version": 2.5}),
        ),
    ] {
        c.accepted("POST", path, &bearer, Some(&body), 1).await;
        anonymous
            .accepted(
                "POST",
                &format!("{path}?film_id={anon_film}"),
                &Auth::None,
                Some(&body),
                1,
            )
            .await;
    }

    // Seed 004: a numeric or boolean language, an array version.
    for extra in [
        json!({"language": 5}),
        json!({"language": true, "app_version": [1, 2]}),
        json!({"timezone": {"offset": 3}}),
    ] {
        let mut body = json!({"film_id": FILM, "film_timestamp": 754});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let answer = c
            .accepted("POST", "/api/v1/", &bearer, Some(&body), 1)
            .await;
        assert_eq!(answer, Value::Null);
    }

    // Later than every store keeps (ClickHouse 18.16's DateTime ends in 2106): refused.
    c.refused(
        "/api/v1/events",
        &bearer,
        &json!({"type":"full_view","film_id":FILM,"occurred_at":"9999-12-31T23:59:59Z"}),
        "occurred_at",
    )
    .await;

    // Nested deeper than the loader decodes: refused, naming the field, on every route.
    c.refused(
        "/api/v1/events",
        &bearer,
        &json!({"type":"custom","name":"x","data":near_parser_limit}),
        "data",
    )
    .await;
    c.refused(
        "/api/v1/events",
        &bearer,
        &json!({"type":"custom","name":"x","data":too_deep}),
        "data",
    )
    .await;
    c.refused(
        "/api/v1/events",
        &bearer,
        &json!({"type":"page_view","page":"film","params":{"q":nested(MAX_DEPTH)}}),
        "params",
    )
    .await;
    c.refused(
        "/api/v1/events",
        &bearer,
        &json!({"type":"full_view","film_id":FILM,"context":{"device":too_deep}}),
        "context.device",
    )
    .await;
    c.refused(
        &format!("{s000}/movie_details"),
        &cookie,
        &json!({"movie_id": FILM, "more": nested(MAX_DEPTH)}),
        "more",
    )
    .await;
    c.refused(
        &format!("{s000}/movie_progress"),
        &cookie,
        &progress(json!({"more": too_deep})),
        "more",
    )
    .await;
    let mut deep_payload = message(json!({}));
    deep_payload["payload"]["event_data"] = nested(MAX_DEPTH);
    c.refused("/api/v1/produce", &bearer, &deep_payload, "payload")
        .await;
    c.refused(
        "/api/v1/batch_produce",
        &bearer,
        &json!([message(json!({})), deep_payload]),
        "[1].payload",
    )
    .await;
    c.refused(
        "/api/pause",
        &bearer,
        &json!({"pause_at": 1, "extra": too_deep}),
        "extra",
    )
    .await;
    c.refused(
        "/api/v1/",
        &bearer,
        &json!({"film_id": FILM, "film_timestamp": 1, "extra": too_deep}),
        "extra",
    )
    .await;

    // Everything acknowledged is stored, and nothing of it was dead-lettered (the loader
    // inserts a batch's dead letters with its events). Polled until both counts are
    // reached; a dead letter fails the test at once, with its reason.
    let stored = format!(
        "SELECT countIf(user_id = '{user}') AS mine, \
         countIf(user_id = '' AND film_id = toUUID('{anon_film}')) AS anonymous \
         FROM ugc.events"
    );
    let dead = format!(
        "SELECT reason FROM ugc.dead_letters \
         WHERE position(payload, '{user}') > 0 OR position(payload, '{anon_film}') > 0"
    );
    let want = json!({"mine": c.acknowledged, "anonymous": anonymous.acknowledged});
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let letters = server.sql(&dead).await;
        assert!(
            letters.is_empty(),
            "acknowledged events were dead-lettered: {letters:?}"
        );
        let got = server.sql(&stored).await;
        if got.first() == Some(&want) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "stored {got:?}, acknowledged {want}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The typed context columns hold text; what did not fit is kept beside it.
    let rows = server
        .sql(&format!(
            "SELECT language, timezone, app_version, context FROM ugc.events WHERE user_id = '{user}' AND name = 'movie_like'"
        ))
        .await;
    let typed: Vec<(Value, Value, Value, Value)> = rows
        .iter()
        .map(|r| {
            let context: Value = serde_json::from_str(r["context"].as_str().unwrap()).unwrap();
            (
                r["language"].clone(),
                r["timezone"].clone(),
                r["app_version"].clone(),
                context["app_version_raw"].clone(),
            )
        })
        .collect();
    // `version` is the app version; a differing `app_version` is kept beside it.
    assert!(
        typed
            .iter()
            .any(|t| (&t.2, &t.3) == (&json!("1.0"), &json!("2.0"))),
        "{typed:?}"
    );
    // Numbers and booleans under typed keys are kept as their JSON text.
    assert!(
        typed
            .iter()
            .any(|t| (&t.0, &t.1) == (&json!("7"), &json!("false"))),
        "{typed:?}"
    );
}
