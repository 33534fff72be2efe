//! Black-box: when the log cannot take more, the API answers 503 with Retry-After at
//! once — never a hang, never a 2xx for an event that is not durable.

mod common;

use std::time::{Duration, Instant};

use common::{Server, new_user, read};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_log_queue_answers_503_with_retry_after_and_stores_exactly_the_acknowledged() {
    // One waiting append at most: a burst of concurrent requests must overflow it.
    let server = Server::start(&["--log-queue", "1"]).await;
    let user = new_user();
    let token = server.token(&user, &[]);
    let url = format!("{}/api/v1/events/batch", server.base);
    let batch: Vec<_> = (0..50).map(|i| json!({"type":"view_progress","film_id":"1ec4cd73-2fd5-4f25-af68-b6595d279af2","film_timestamp":i})).collect();
    let body = json!(batch);

    let started = Instant::now();
    let requests = (0..300).map(|_| {
        let req = server.http.post(&url).bearer_auth(&token).json(&body);
        tokio::spawn(async move {
            let r = req.send().await.expect("request failed");
            let retry_after = r
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            let (status, body) = read(r).await;
            (status, retry_after, body)
        })
    });
    let (mut accepted, mut refused) = (0u64, 0u64);
    for r in futures_join(requests.collect()).await {
        match r {
            (202, _, body) => accepted += body["accepted"].as_u64().unwrap(),
            (503, Some(secs), body) => {
                assert!(secs >= 1, "Retry-After must say when");
                assert_eq!(body["error"], "unavailable");
                refused += 1;
            }
            (status, retry_after, body) => {
                panic!("unexpected answer {status} (Retry-After {retry_after:?}): {body}")
            }
        }
    }
    println!(
        "accepted {accepted} events, refused {refused} requests in {:?}",
        started.elapsed()
    );
    assert!(
        refused > 0,
        "300 concurrent appends into a queue of one must see refusals"
    );
    assert!(accepted > 0, "and some must get through");

    server
        .wait_for(
            &format!("SELECT count() FROM ugc.events WHERE user_id = '{user}'"),
            json!(accepted),
            Duration::from_secs(60),
        )
        .await;
    // Nothing beyond the acknowledged arrives later either: the log is drained.
    let (_, sentinel) = server
        .post(
            "/api/v1/events",
            &token,
            &json!({"type":"full_view","film_id":"1ec4cd73-2fd5-4f25-af68-b6595d279af2"}),
        )
        .await;
    let id = sentinel["event_id"]
        .as_str()
        .expect("the sentinel was accepted")
        .to_owned();
    server
        .wait_for(
            &format!("SELECT count() FROM ugc.events WHERE event_id = toUUID('{id}')"),
            json!(1),
            Duration::from_secs(30),
        )
        .await;
    let rows = server.sql(&format!("SELECT count() AS n FROM ugc.events WHERE user_id = '{user}' AND event_type = 'view_progress'")).await;
    assert_eq!(rows[0]["n"], accepted);
}

async fn futures_join<T>(handles: Vec<tokio::task::JoinHandle<T>>) -> Vec<T> {
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        out.push(h.await.expect("request task panicked"));
    }
    out
}
