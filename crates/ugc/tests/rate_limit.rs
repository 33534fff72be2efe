//! Black-box: the per-user rate limit on ingest. A user over the limit gets 429 with
//! Retry-After on every ingest route, while another user is served; a batch counts its
//! events and is refused whole.

mod common;

use std::time::Duration;

use common::{Server, new_user, read};
use serde_json::{Value, json};

const FILM: &str = "1ec4cd73-2fd5-4f25-af68-b6595d279af2";

fn retry_after(r: &reqwest::Response) -> u64 {
    r.headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn a_user_over_the_limit_gets_429_while_another_is_served() {
    // Five events at once, then one per ten seconds: slow enough that the refill during
    // the test cannot let a refused request through.
    let server = Server::start(&["--rate-limit-per-user", "0.1", "--rate-limit-burst", "5"]).await;
    let (a, b, c) = (new_user(), new_user(), new_user());
    let (ta, tb, tc) = (
        server.token(&a, &[]),
        server.token(&b, &[]),
        server.token(&c, &[]),
    );
    let event = json!({"type":"full_view","film_id":FILM});

    for _ in 0..5 {
        let (status, body) = server.post("/api/v1/events", &ta, &event).await;
        assert_eq!(status, 202, "{body}");
    }
    let over = server
        .http
        .post(format!("{}/api/v1/events", server.base))
        .bearer_auth(&ta)
        .json(&event)
        .send()
        .await
        .unwrap();
    let secs = retry_after(&over);
    let (status, body) = read(over).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (429, Some("rate_limited")),
        "{body}"
    );
    assert!((1..=10).contains(&secs), "Retry-After: {secs}");

    // The seed routes that ingest count against the same allowance.
    for (path, body) in [
        ("/api/v1/", json!({"film_id": FILM, "film_timestamp": 5})),
        ("/api/pause", json!({"pause_at": 5})),
    ] {
        let r = server
            .http
            .post(format!("{}{path}", server.base))
            .bearer_auth(&ta)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(retry_after(&r) >= 1, "{path}");
        assert_eq!(read(r).await.0, 429, "{path}");
    }

    // Another user is not affected.
    let (status, _) = server.post("/api/v1/events", &tb, &event).await;
    assert_eq!(status, 202);
    let (status, _) = server
        .post(
            "/api/v1/",
            &tb,
            &json!({"film_id": FILM, "film_timestamp": 5}),
        )
        .await;
    assert_eq!(status, 200);

    // A batch counts events: 3 of 5 taken, a batch of 3 refused whole, then 2 fit.
    let batch = |n: usize| Value::Array(vec![event.clone(); n]);
    let (status, body) = server.post("/api/v1/events/batch", &tc, &batch(3)).await;
    assert_eq!((status, body["accepted"].as_u64()), (202, Some(3)));
    let (status, body) = server.post("/api/v1/events/batch", &tc, &batch(3)).await;
    assert_eq!(status, 429, "{body}");
    let (status, body) = server.post("/api/v1/events/batch", &tc, &batch(2)).await;
    assert_eq!((status, body["accepted"].as_u64()), (202, Some(2)));

    // What was refused is nowhere: once a later event (B's, within B's allowance) is
    // stored, the log before it is too, and the store holds exactly what was acknowledged.
    let (status, _) = server.post("/api/v1/events", &tb, &event).await;
    assert_eq!(status, 202);
    let count = |user: &str| format!("SELECT count() FROM ugc.events WHERE user_id = '{user}'");
    server
        .wait_for(&count(&b), json!(3), Duration::from_secs(30))
        .await;
    for user in [&a, &c] {
        let rows = server.sql(&count(user)).await;
        assert_eq!(
            rows[0].as_object().unwrap().values().next(),
            Some(&json!(5))
        );
    }
}

#[tokio::test]
async fn without_the_setting_there_is_no_limit() {
    let server = Server::start(&[]).await;
    let token = server.token(&new_user(), &[]);
    let batch = Value::Array(vec![json!({"type":"full_view","film_id":FILM}); 1000]);
    for _ in 0..3 {
        let (status, _) = server.post("/api/v1/events/batch", &token, &batch).await;
        assert_eq!(status, 202);
    }
}
