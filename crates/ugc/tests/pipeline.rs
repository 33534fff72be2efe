//! Black-box: events of every type travel HTTP → log → loader → store, and the
//! progress endpoints answer from what was stored.

mod common;

use std::time::Duration;

use common::{Server, new_user};
use serde_json::{Value, json};

const FILM_A: &str = "1ec4cd73-2fd5-4f25-af68-b6595d279af2";
const FILM_B: &str = "2b5e3c1a-0d4f-4e7a-9c8b-3f2a1d0e9c8b";
const FILM_C: &str = "3c6f4d2b-1e5a-4f8b-8d9c-4a3b2e1f0d9c";

fn at(sec: u32) -> String {
    format!("2026-11-20T10:00:{sec:02}Z")
}

#[tokio::test]
async fn every_event_type_lands_in_the_store_and_progress_answers_from_it() {
    let server = Server::start(&[]).await;
    let user = new_user();
    let token = server.token(&user, &[]);
    let events = [
        json!({"type":"view_progress","film_id":FILM_B,"film_timestamp":30,"occurred_at":at(1)}),
        json!({"type":"full_view","film_id":FILM_B,"occurred_at":at(2)}),
        json!({"type":"view_progress","film_id":FILM_A,"film_timestamp":100,"occurred_at":at(3)}),
        json!({"type":"pause","film_id":FILM_A,"position":120,"occurred_at":at(4)}),
        json!({"type":"quality_change","film_id":FILM_A,"from":"720p","to":"1080p","position":130,"occurred_at":at(5),
               "context":{"language":"ru-RU","timezone":"Europe/Moscow","app_version":"web-1.2","device":"tv"}}),
        json!({"type":"view_progress","film_id":FILM_C,"film_timestamp":50,"occurred_at":at(6)}),
        json!({"type":"page_view","page":"film_search","params":{"query":"matrix","page":1}}),
        json!({"type":"custom","name":"trailer_click","data":{"trailer":"teaser-2"}}),
    ];
    let mut ids = Vec::new();
    for e in &events {
        let (status, body) = server.post("/api/v1/events", &token, e).await;
        assert_eq!(status, 202, "{e} → {body}");
        ids.push(
            body["event_id"]
                .as_str()
                .expect("event_id in the answer")
                .to_owned(),
        );
    }

    let count = format!("SELECT count() FROM ugc.events WHERE user_id = '{user}'");
    server
        .wait_for(&count, json!(events.len()), Duration::from_secs(30))
        .await;

    let types = server
        .sql(&format!("SELECT event_type, count() AS n FROM ugc.events WHERE user_id = '{user}' GROUP BY event_type ORDER BY event_type"))
        .await;
    let types: Vec<(String, u64)> = types
        .iter()
        .map(|r| {
            (
                r["event_type"].as_str().unwrap().to_owned(),
                r["n"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        types,
        [
            ("custom", 1),
            ("full_view", 1),
            ("page_view", 1),
            ("pause", 1),
            ("quality_change", 1),
            ("view_progress", 3)
        ]
        .map(|(t, n)| (t.to_owned(), n))
    );

    // Fields arrive typed and enriched.
    let rows = server
        .sql(&format!(
            "SELECT toString(event_id) AS id, quality_from, quality_to, position, language, timezone, app_version, context, client_ip \
             FROM ugc.events WHERE event_type = 'quality_change' AND user_id = '{user}'"
        ))
        .await;
    let q = &rows[0];
    assert_eq!(q["id"], ids[4].as_str());
    assert_eq!(
        (
            q["quality_from"].as_str(),
            q["quality_to"].as_str(),
            q["position"].as_u64()
        ),
        (Some("720p"), Some("1080p"), Some(130))
    );
    assert_eq!(
        (
            q["language"].as_str(),
            q["timezone"].as_str(),
            q["app_version"].as_str()
        ),
        (Some("ru-RU"), Some("Europe/Moscow"), Some("web-1.2"))
    );
    assert!(
        q["context"].as_str().unwrap().contains("\"device\":\"tv\""),
        "unknown context keys are kept: {q}"
    );
    assert_eq!(q["client_ip"], "127.0.0.1");
    let rows = server.sql(&format!("SELECT page, data FROM ugc.events WHERE event_type = 'page_view' AND user_id = '{user}'")).await;
    assert_eq!(rows[0]["page"], "film_search");
    assert!(rows[0]["data"].as_str().unwrap().contains("matrix"));

    // Where did I stop? The latest position report wins.
    let (status, p) = server
        .get(&format!("/api/v1/films/{FILM_A}/progress"), &token)
        .await;
    assert_eq!(status, 200, "{p}");
    assert_eq!(
        (p["position"].as_u64(), p["finished"].as_bool()),
        (Some(130), Some(false))
    );
    let (status, p) = server
        .get(&format!("/api/v1/films/{FILM_B}/progress"), &token)
        .await;
    assert_eq!(status, 200, "{p}");
    assert_eq!(p["finished"], true);
    let (status, _) = server
        .get(
            &format!("/api/v1/films/{}/progress", uuid::Uuid::new_v4()),
            &token,
        )
        .await;
    assert_eq!(status, 404);

    // Continue watching: started, not finished, latest first, paginated.
    let films = |v: &Value| {
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["film_id"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    let (status, page) = server.get("/api/v1/progress", &token).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(films(&page), [FILM_C, FILM_A]);
    let (_, page) = server.get("/api/v1/progress?limit=1", &token).await;
    assert_eq!(
        (films(&page), page["next_offset"].as_u64()),
        (vec![FILM_C.to_owned()], Some(1))
    );
    let (_, page) = server
        .get("/api/v1/progress?limit=1&offset=1", &token)
        .await;
    assert_eq!(
        (films(&page), page["next_offset"].clone()),
        (vec![FILM_A.to_owned()], Value::Null)
    );

    // Another viewer sees none of it.
    let other = server.token(&new_user(), &[]);
    assert_eq!(
        server
            .get(&format!("/api/v1/films/{FILM_A}/progress"), &other)
            .await
            .0,
        404
    );
    assert_eq!(
        films(&server.get("/api/v1/progress", &other).await.1),
        Vec::<String>::new()
    );
}

#[tokio::test]
async fn a_mixed_batch_accepts_the_valid_items_and_names_each_rejection() {
    let server = Server::start(&[]).await;
    let user = new_user();
    let token = server.token(&user, &[]);
    let batch = json!([
        {"type":"view_progress","film_id":FILM_A,"film_timestamp":10},
        {"type":"view_progress","film_id":"not-a-uuid","film_timestamp":10},
        {"type":"rewind","film_id":FILM_A},
        {"type":"pause","film_id":FILM_A,"position":11},
    ]);
    let (status, body) = server.post("/api/v1/events/batch", &token, &batch).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(
        (body["accepted"].as_u64(), body["rejected"].as_u64()),
        (Some(2), Some(2))
    );
    let results = body["results"].as_array().unwrap();
    assert_eq!(results[0]["status"], "accepted");
    assert_eq!(
        (results[1]["index"].as_u64(), results[1]["field"].as_str()),
        (Some(1), Some("film_id"))
    );
    assert_eq!(
        (results[2]["index"].as_u64(), results[2]["field"].as_str()),
        (Some(2), Some("type"))
    );
    assert!(results[2]["reason"].as_str().unwrap().contains("rewind"));
    assert_eq!(body["event_ids"].as_array().unwrap().len(), 2);

    server
        .wait_for(
            &format!("SELECT count() FROM ugc.events WHERE user_id = '{user}'"),
            json!(2),
            Duration::from_secs(30),
        )
        .await;

    // The `{"events": [...]}` form works too; a batch with nothing valid is a 422.
    let (status, body) = server
        .post(
            "/api/v1/events/batch",
            &token,
            &json!({"events":[{"type":"pause"}]}),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["results"][0]["status"], "rejected");
}

#[tokio::test]
async fn the_token_names_the_user_whatever_the_body_says() {
    let server = Server::start(&[]).await;
    let user = new_user();
    let token = server.token(&user, &[]);
    let body = json!({"type":"view_progress","film_id":FILM_A,"film_timestamp":5,"user_id":"someone-else"});
    let (status, answer) = server
        .post("/api/v1/events?user_id=someone-else", &token, &body)
        .await;
    assert_eq!(status, 202, "{answer}");
    let id = answer["event_id"].as_str().unwrap().to_owned();
    let rows = server
        .wait_for(
            &format!("SELECT user_id, context FROM ugc.events WHERE event_id = toUUID('{id}')"),
            json!(user),
            Duration::from_secs(30),
        )
        .await;
    assert!(
        rows[0]["context"]
            .as_str()
            .unwrap()
            .contains("someone-else"),
        "the false claim is recorded for audit: {rows:?}"
    );
    assert_eq!(
        server
            .sql("SELECT count() AS n FROM ugc.events WHERE user_id = 'someone-else'")
            .await[0]["n"],
        0
    );
}

#[tokio::test]
async fn a_client_event_id_is_kept_and_a_retry_is_stored_once() {
    let server = Server::start(&[]).await;
    let token = server.token(&new_user(), &[]);
    let id = uuid::Uuid::new_v4().to_string();
    let body = json!({"type":"full_view","film_id":FILM_C,"event_id":id});
    for _ in 0..3 {
        let (status, answer) = server.post("/api/v1/events", &token, &body).await;
        assert_eq!(
            (status, answer["event_id"].as_str()),
            (202, Some(id.as_str()))
        );
    }
    // The log is ordered: once a later event is in the store, so is everything before it.
    let (_, sentinel) = server
        .post(
            "/api/v1/events",
            &token,
            &json!({"type":"full_view","film_id":FILM_A}),
        )
        .await;
    let sentinel = sentinel["event_id"].as_str().unwrap().to_owned();
    server
        .wait_for(
            &format!("SELECT count() FROM ugc.events WHERE event_id = toUUID('{sentinel}')"),
            json!(1),
            Duration::from_secs(30),
        )
        .await;
    let rows = server
        .sql(&format!(
            "SELECT count() AS n FROM ugc.events WHERE event_id = toUUID('{id}')"
        ))
        .await;
    assert_eq!(rows[0]["n"], 1, "three posts of one event id are one row");
}

#[tokio::test]
async fn with_no_key_configured_the_server_and_ugc_token_share_a_generated_secret() {
    let server = Server::start_without_secret(&[]).await;
    assert!(
        server.data_dir().join("jwt-secret").exists(),
        "the secret is generated into the data directory"
    );
    assert!(
        server.log().contains("NO JWT KEY CONFIGURED"),
        "and the server says so loudly"
    );
    let token = server.token(&new_user(), &[]);
    let (status, body) = server
        .post(
            "/api/v1/events",
            &token,
            &json!({"type":"full_view","film_id":FILM_A}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
}

#[tokio::test]
async fn the_openapi_document_and_interactive_docs_are_served() {
    let server = Server::start(&[]).await;
    let doc: Value = server
        .http
        .get(format!("{}/openapi.json", server.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for path in [
        "/api/v1/events",
        "/api/v1/events/batch",
        "/api/v1/films/{film_id}/progress",
        "/api/v1/progress",
        "/api/v1/query",
        "/readyz",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} is documented");
    }
    assert!(
        doc["components"]["schemas"]["Event"].is_object(),
        "the event catalogue is documented"
    );
    let docs = server
        .http
        .get(format!("{}/docs", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(docs.status(), 200);
    assert!(
        docs.text()
            .await
            .unwrap()
            .contains("swagger-initializer.js")
    );
    let init = server
        .http
        .get(format!("{}/docs/swagger-initializer.js", server.base))
        .send()
        .await
        .unwrap();
    assert!(
        init.text().await.unwrap().contains("/openapi.json"),
        "the docs page loads the document"
    );
}

#[tokio::test]
async fn an_event_id_is_deduplicated_per_user_also_across_a_restart() {
    let mut server = Server::start(&[]).await;
    let (a, b) = (new_user(), new_user());
    let id = uuid::Uuid::new_v4().to_string();
    let body = json!({"type":"full_view","film_id":FILM_C,"event_id":id});
    let count = |user: &str| {
        format!(
            "SELECT count() FROM ugc.events WHERE event_id = toUUID('{id}') AND user_id = '{user}'"
        )
    };
    async fn post(server: &Server, user: &str, body: &Value) {
        let token = server.token(user, &[]);
        let (status, answer) = server.post("/api/v1/events", &token, body).await;
        assert_eq!((status, &answer["event_id"]), (202, &body["event_id"]));
    }
    // Both users in one loader batch: each keeps an event; A's repeat is dropped.
    post(&server, &a, &body).await;
    post(&server, &b, &body).await;
    post(&server, &a, &body).await;
    let within = Duration::from_secs(30);
    server.wait_for(&count(&a), json!(1), within).await;
    server.wait_for(&count(&b), json!(1), within).await;
    // After a restart the loader re-reads the stored ids, with their users: a third
    // user's event with the same id is stored, A's and B's repeats are not.
    server.restart().await;
    let c = new_user();
    post(&server, &a, &body).await;
    post(&server, &c, &body).await;
    post(&server, &b, &body).await;
    // The log is ordered: once a later event of each user is stored, so are their repeats.
    let mut sentinels = vec![];
    for user in [&a, &b, &c] {
        let token = server.token(user, &[]);
        let (_, answer) = server
            .post(
                "/api/v1/events",
                &token,
                &json!({"type":"full_view","film_id":FILM_A}),
            )
            .await;
        sentinels.push(answer["event_id"].as_str().unwrap().to_owned());
    }
    for s in &sentinels {
        server
            .wait_for(
                &format!("SELECT count() FROM ugc.events WHERE event_id = toUUID('{s}')"),
                json!(1),
                within,
            )
            .await;
    }
    for user in [&a, &b, &c] {
        let rows = server.sql(&count(user)).await;
        assert_eq!(
            rows[0].as_object().unwrap().values().next(),
            Some(&json!(1)),
            "user {user}"
        );
    }
}
