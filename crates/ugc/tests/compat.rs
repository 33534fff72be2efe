//! Black-box: each seed's client, sending exactly what it sent to its own service, gets
//! that service's status and body from `ugc`, and its events land in the store as
//! canonical events of the token's user.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{SECRET, Server, new_user, read};
use jsonwebtoken::{EncodingKey, Header, encode};
use serde_json::{Value, json};

const FILM: &str = "1ec4cd73-2fd5-4f25-af68-b6595d279af2";

/// A token shaped like the seeds' auth services issued: the user in `user_id`.
fn seed_token(user: &str) -> String {
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    encode(
        &Header::default(),
        &json!({"user_id": user, "exp": exp, "type": "access"}),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

/// Waits until `n` events of `user` are stored and returns them, oldest first.
async fn stored(server: &Server, user: &str, n: usize) -> Vec<Value> {
    let q = format!("SELECT count() FROM ugc.events WHERE user_id = '{user}'");
    server.wait_for(&q, json!(n), Duration::from_secs(30)).await;
    server
        .sql(&format!(
            "SELECT event_type, toString(film_id) AS film, position, quality_from, quality_to, name, data, language, timezone, \
             app_version, context, toUnixTimestamp(occurred_at) AS occurred FROM ugc.events WHERE user_id = '{user}' ORDER BY occurred_at, event_type"
        ))
        .await
}

fn context(row: &Value) -> Value {
    serde_json::from_str(row["context"].as_str().unwrap()).unwrap()
}

#[tokio::test]
async fn seed_000_send_to_broker_with_the_cookie_token() {
    let server = Server::start(&[]).await;
    let user = new_user();
    let url = |t: &str| format!("{}/ugc/api/v1/produce/send_to_broker/{t}", server.base);
    let cookie = format!("access_token_cookie={}", seed_token(&user));
    let body = json!({"movie_id": FILM, "progress": 754.6, "status": "completed", "last_watched": "2024-05-01T20:15:00Z"});

    let r = server
        .http
        .post(url("movie_progress"))
        .header("cookie", &cookie)
        .json(&body)
        .send()
        .await
        .unwrap();
    let (status, answer) = read(r).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["data"], body);
    assert_eq!(
        (answer["user_id"].as_str(), answer["event_type"].as_str()),
        (Some(user.as_str()), Some("movie_progress"))
    );
    assert!(
        answer["detail"].is_string() && answer["topic"].is_string(),
        "{answer}"
    );

    let filters = json!({"query": "matrix", "page": 1, "size": 50});
    let r = server
        .http
        .post(url("movie_filters"))
        .header("cookie", &cookie)
        .json(&filters)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let rows = stored(&server, &user, 3).await;
    let types: Vec<&str> = rows
        .iter()
        .map(|r| r["event_type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["view_progress", "full_view", "custom"], "{rows:?}");
    assert_eq!(
        (rows[0]["film"].as_str(), rows[0]["position"].as_u64()),
        (Some(FILM), Some(754))
    );
    assert_eq!(
        rows[0]["occurred"], 1714594500,
        "last_watched is when it happened"
    );
    assert_eq!(
        context(&rows[0])["status"],
        "completed",
        "every field the client sent is kept"
    );
    assert_eq!(
        rows[1]["occurred"], 1714594500,
        "watched to the end at the same moment"
    );
    let token = format!("Bearer {}", seed_token(&user));
    let progress = server
        .http
        .get(format!("{}/api/v1/films/{FILM}/progress", server.base))
        .header("authorization", token)
        .send()
        .await
        .unwrap();
    let (status, p) = read(progress).await;
    assert_eq!(
        (status, p["finished"].as_bool(), p["position"].as_u64()),
        (200, Some(true), Some(754)),
        "{p}"
    );
    assert_eq!(rows[2]["name"], "movie_filters");
    assert_eq!(
        serde_json::from_str::<Value>(rows[2]["data"].as_str().unwrap()).unwrap(),
        filters
    );

    // The seed's errors: no token, empty body, unknown type.
    let r = server
        .http
        .post(url("movie_progress"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = server
        .http
        .post(url("movie_progress"))
        .header("cookie", &cookie)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = server
        .http
        .post(url("movie_rating"))
        .header("cookie", &cookie)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
}

#[tokio::test]
async fn seed_001_query_string_events_and_the_token_wins_over_user_id() {
    let server = Server::start(&[]).await;
    let user = new_user();
    let cookie = format!("access_token={}", seed_token(&user));
    let url = format!(
        "{}/ugc/send-to-broker/movie_events?movie_id=1&user_id=12&movie_name=Matrix&user_fio=Ivanov&fully_viewed=True",
        server.base
    );
    let (status, answer) = read(
        server
            .http
            .get(&url)
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, answer),
        (200, json!({"status": "Message sent to Kafka"}))
    );
    let url2 = format!(
        "{}/ugc/send-to-broker/movie_events?movie_id=2&movie_name=Alien",
        server.base
    );
    let (status, _) = read(
        server
            .http
            .post(&url2)
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);

    let rows = stored(&server, &user, 2).await;
    let full = rows
        .iter()
        .find(|r| r["event_type"] == "full_view")
        .expect("fully_viewed=True is a full_view");
    let ctx = context(full);
    assert_eq!(
        (ctx["movie_id"].as_str(), ctx["movie_name"].as_str()),
        (Some("1"), Some("Matrix"))
    );
    assert_eq!(
        ctx["claimed_user_id"], "12",
        "the query's user is recorded, not trusted"
    );
    let other = rows.iter().find(|r| r["event_type"] == "custom").unwrap();
    assert_eq!(other["name"], "movie_events");
    assert_eq!(
        server
            .sql("SELECT count() AS n FROM ugc.events WHERE user_id = '12'")
            .await[0]["n"],
        0
    );

    let (status, answer) = read(
        server
            .http
            .get(format!("{}/ugc/send-to-broker/movie_events", server.base))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, answer),
        (400, json!({"error": "Data is required"}))
    );
    assert_eq!(server.http.get(&url).send().await.unwrap().status(), 401);
}

#[tokio::test]
async fn seed_002_produce_and_batch_produce() {
    let server = Server::start(&[]).await;
    let user = new_user();
    let token = server.token(&user, &[]);
    let message = |t: &str| {
        json!({"payload": {"movie_id": FILM, "user_id": "1ec4cd73-0000-4f25-af68-b6595d279af2", "event_data": "5 stars", "event_timestamp": 1621932759},
               "event_type": t, "language": "RU", "timezone": "Europe/Moscow", "ip": "192.168.1.1", "version": "1.0", "client_data": {"os": "tv"}})
    };
    let r = server
        .http
        .post(format!("{}/api/v1/produce", server.base))
        .bearer_auth(&token)
        .json(&message("movie_like"))
        .send()
        .await
        .unwrap();
    let (status, answer) = read(r).await;
    assert_eq!(
        (status, answer),
        (
            201,
            json!({"result": {"was_loaded": true, "movie_id": FILM, "user_id": user}})
        )
    );

    let batch = json!([message("movie_share"), message("movie_watch_history")]);
    let r = server
        .http
        .post(format!("{}/api/v1/batch_produce", server.base))
        .bearer_auth(&token)
        .json(&batch)
        .send()
        .await
        .unwrap();
    assert_eq!(read(r).await, (201, json!({"batch_produced": true})));

    let rows = stored(&server, &user, 3).await;
    let mut names: Vec<&str> = rows.iter().map(|r| r["name"].as_str().unwrap()).collect();
    names.sort();
    assert_eq!(names, ["movie_like", "movie_share", "movie_watch_history"]);
    let like = rows.iter().find(|r| r["name"] == "movie_like").unwrap();
    assert_eq!(like["occurred"], 1621932759);
    assert_eq!(
        (
            like["language"].as_str(),
            like["timezone"].as_str(),
            like["app_version"].as_str()
        ),
        (Some("RU"), Some("Europe/Moscow"), Some("1.0"))
    );
    let data: Value = serde_json::from_str(like["data"].as_str().unwrap()).unwrap();
    assert_eq!(data["event_data"], "5 stars");
    let ctx = context(like);
    assert_eq!(
        (
            ctx["client_reported_ip"].as_str(),
            ctx["client_data"]["os"].as_str()
        ),
        (Some("192.168.1.1"), Some("tv"))
    );
    assert_eq!(
        ctx["claimed_user_id"],
        "1ec4cd73-0000-4f25-af68-b6595d279af2"
    );

    let r = server
        .http
        .post(format!("{}/api/v1/produce", server.base))
        .bearer_auth(&token)
        .json(&message("movie_teleport"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = server
        .http
        .post(format!("{}/api/v1/produce", server.base))
        .json(&message("movie_like"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

async fn seed_003_clicks(server: &Server, token: Option<&str>) -> Vec<u16> {
    let ts = 1716580000123u64;
    let clicks = [
        ("pause", json!({"pause_at": 754.3, "timestamp": ts})),
        (
            "quality-change",
            json!({"quality_before": "360", "quality_after": "720", "changed_at": 120.5, "timestamp": ts + 1000}),
        ),
        ("full-view", json!({"timestamp": ts + 2000})),
    ];
    let mut statuses = vec![];
    for (path, body) in clicks {
        let mut r = server
            .http
            .post(format!("{}/api/{path}", server.base))
            .json(&body);
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        let (status, answer) = read(r.send().await.unwrap()).await;
        if status == 200 {
            assert_eq!(answer, json!({"status": "success"}));
        }
        statuses.push(status);
    }
    statuses
}

#[tokio::test]
async fn seed_003_player_clicks_need_a_token_unless_anonymous_is_switched_on() {
    let server = Server::start(&[]).await;
    assert_eq!(
        seed_003_clicks(&server, None).await,
        [401, 401, 401],
        "anonymous is off by default"
    );
    let user = new_user();
    assert_eq!(
        seed_003_clicks(&server, Some(&server.token(&user, &[]))).await,
        [200, 200, 200]
    );
    let rows = stored(&server, &user, 3).await;
    let types: Vec<&str> = rows
        .iter()
        .map(|r| r["event_type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["pause", "quality_change", "full_view"]);
    assert_eq!(
        (rows[0]["position"].as_u64(), rows[0]["occurred"].as_u64()),
        (Some(754), Some(1716580000))
    );
    assert_eq!(
        (
            rows[1]["quality_from"].as_str(),
            rows[1]["quality_to"].as_str(),
            rows[1]["position"].as_u64()
        ),
        (Some("360"), Some("720"), Some(120))
    );
    drop(server);

    let anonymous = Server::start(&["--compat-anonymous", "true"]).await;
    assert_eq!(seed_003_clicks(&anonymous, None).await, [200, 200, 200]);
    let rows = stored(&anonymous, "", 3).await;
    assert!(
        rows.iter().all(|r| context(r)["seed"] == "003"),
        "anonymous events carry no user: {rows:?}"
    );
}

#[tokio::test]
async fn seed_004_position_reports_answer_null_and_feed_progress() {
    let server = Server::start(&[]).await;
    let user = new_user();
    let token = server.token(&user, &[]);
    let body = json!({"film_id": FILM, "film_timestamp": 754});
    let r = server
        .http
        .post(format!("{}/api/v1/", server.base))
        .bearer_auth(&token)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "null");
    let rows = stored(&server, &user, 1).await;
    assert_eq!(
        (rows[0]["event_type"].as_str(), rows[0]["position"].as_u64()),
        (Some("view_progress"), Some(754))
    );
    let (status, p) = server
        .get(&format!("/api/v1/films/{FILM}/progress"), &token)
        .await;
    assert_eq!((status, p["position"].as_u64()), (200, Some(754)));

    let r = server
        .http
        .post(format!("{}/api/v1/", server.base))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(read(r).await, (403, json!({"detail": "Not authenticated"})));
}

#[tokio::test]
async fn compat_routes_switch_off_per_seed() {
    let server = Server::start(&["--compat", "004"]).await;
    let token = server.token(&new_user(), &[]);
    let r = server
        .http
        .post(format!("{}/api/pause", server.base))
        .bearer_auth(&token)
        .json(&json!({"pause_at": 1, "timestamp": 1716580000123u64}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = server
        .http
        .post(format!("{}/api/v1/", server.base))
        .bearer_auth(&token)
        .json(&json!({"film_id": FILM, "film_timestamp": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let doc: Value = server
        .http
        .get(format!("{}/openapi.json", server.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        doc["paths"]["/api/v1/"].is_object() && doc["paths"]["/api/pause"].is_null(),
        "the document lists what is served"
    );
    drop(server);

    let off = Server::start(&["--compat", "none"]).await;
    let token = off.token(&new_user(), &[]);
    let r = off
        .http
        .post(format!("{}/api/v1/", off.base))
        .bearer_auth(&token)
        .json(&json!({"film_id": FILM, "film_timestamp": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

/// One rule for the seeds' times: RFC 3339, a naive ISO date-time (read as UTC, as the
/// seeds' Python clients print it) or Unix seconds/milliseconds; anything else is a 422
/// naming the field — on seed 000 as on 002 and 003, never silently the arrival time.
#[tokio::test]
async fn every_seed_route_treats_a_bad_time_alike() {
    let server = Server::start(&[]).await;
    let user = new_user();
    let cookie = format!("access_token_cookie={}", seed_token(&user));
    let bearer = format!("Bearer {}", seed_token(&user));
    let send = |path: &str, body: Value| {
        let req = server
            .http
            .post(format!("{}{path}", server.base))
            .header("cookie", &cookie)
            .header("authorization", &bearer)
            .json(&body);
        async move { read(req.send().await.unwrap()).await }
    };
    let cases = [
        (
            "/ugc/api/v1/produce/send_to_broker/movie_progress",
            "last_watched",
            json!({"movie_id": FILM, "progress": 10, "status": "in_progress"}),
        ),
        (
            "/api/v1/produce",
            "event_timestamp",
            json!({"payload": {"movie_id": FILM, "event_data": "5 stars"}, "event_type": "movie_like"}),
        ),
        (
            "/api/pause",
            "timestamp",
            json!({"film_id": FILM, "pause_at": 1}),
        ),
    ];
    for (path, field, body) in cases {
        let with = |t: Value| {
            let mut b = body.clone();
            match b.get_mut("payload") {
                Some(p) => p[field] = t,
                None => b[field] = t,
            }
            b
        };
        let (status, answer) = send(path, with(json!("yesterday"))).await;
        assert_eq!(status, 422, "{path}: {answer}");
        assert!(answer.to_string().contains(field), "{path}: {answer}");
        for ok in [
            json!("2024-05-01T20:15:00"),
            json!("2024-05-01T20:15:00+03:00"),
        ] {
            let (status, answer) = send(path, with(ok.clone())).await;
            assert!(
                (200..300).contains(&status),
                "{path} {ok}: {status} {answer}"
            );
        }
    }
}
