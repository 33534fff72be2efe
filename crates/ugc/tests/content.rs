//! Ratings and bookmarks, black-box: the real binary over HTTP. Runs against SQLite by
//! default and against PostgreSQL with `UGC_TEST_CONTENT=postgres` (scripts/test runs
//! both), so the two backends answer alike.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::{SECRET, Server, new_user};
use jsonwebtoken::{EncodingKey, Header, encode};
use serde_json::{Value, json};

fn token(user: &str) -> String {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    encode(
        &Header::default(),
        &json!({"sub": user, "exp": exp}),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

fn film() -> String {
    uuid::Uuid::new_v4().to_string()
}

async fn rate(s: &Server, user: &str, film: &str, score: i64) -> (u16, Value) {
    s.send(
        "PUT",
        &format!("/api/v1/films/{film}/rating"),
        &token(user),
        Some(&json!({ "score": score })),
    )
    .await
}

async fn summary(s: &Server, user: &str, film: &str) -> Value {
    let (status, body) = s
        .get(&format!("/api/v1/films/{film}/rating"), &token(user))
        .await;
    assert_eq!(status, 200, "{body}");
    body
}

fn first_field(body: &Value) -> &str {
    body["errors"][0]["field"].as_str().unwrap_or("")
}

#[tokio::test]
async fn a_rating_is_set_replaced_removed_and_summarised() {
    let s = Server::start(&[]).await;
    let (a, b, c) = (new_user(), new_user(), new_user());
    let f = film();

    let empty = summary(&s, &a, &f).await;
    assert_eq!(empty["count"], 0);
    assert_eq!(empty["average"], Value::Null);
    assert_eq!(empty["my_score"], Value::Null);
    assert_eq!(
        empty["distribution"],
        json!([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])
    );

    let (status, body) = rate(&s, &a, &f, 10).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["film_id"], f);
    assert_eq!(body["score"], 10);
    assert!(body["updated_at"].is_string());
    assert_eq!(rate(&s, &b, &f, 0).await.0, 200);
    assert_eq!(rate(&s, &c, &f, 7).await.0, 200);

    let sum = summary(&s, &a, &f).await;
    assert_eq!(sum["count"], 3);
    assert_eq!(sum["total"], 17);
    assert!((sum["average"].as_f64().unwrap() - 17.0 / 3.0).abs() < 1e-9);
    assert_eq!(sum["likes"], 1);
    assert_eq!(sum["dislikes"], 1);
    assert_eq!(
        sum["distribution"],
        json!([1, 0, 0, 0, 0, 0, 0, 1, 0, 0, 1])
    );
    assert_eq!(sum["my_score"], 10);
    assert_eq!(summary(&s, &b, &f).await["my_score"], 0);

    // Replacing moves the caller's rating between scores; the count stays.
    assert_eq!(rate(&s, &a, &f, 4).await.0, 200);
    let sum = summary(&s, &a, &f).await;
    assert_eq!(sum["count"], 3);
    assert_eq!(sum["total"], 11);
    assert_eq!(sum["likes"], 0);
    assert_eq!(
        sum["distribution"],
        json!([1, 0, 0, 0, 1, 0, 0, 1, 0, 0, 0])
    );
    assert_eq!(sum["my_score"], 4);
    // The same score again changes nothing but the time.
    assert_eq!(rate(&s, &a, &f, 4).await.0, 200);
    assert_eq!(summary(&s, &a, &f).await["total"], 11);

    let path = format!("/api/v1/films/{f}/rating");
    assert_eq!(s.send("DELETE", &path, &token(&a), None).await.0, 204);
    let (status, body) = s.send("DELETE", &path, &token(&a), None).await;
    assert_eq!(status, 404, "{body}");
    let sum = summary(&s, &a, &f).await;
    assert_eq!(sum["count"], 2);
    assert_eq!(sum["total"], 7);
    assert_eq!(sum["my_score"], Value::Null);
    assert_eq!(
        sum["distribution"],
        json!([1, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0])
    );
}

#[tokio::test]
async fn sixty_four_concurrent_raters_of_one_film_lose_no_update() {
    let s = Server::start(&[]).await;
    let f = film();
    let users: Vec<String> = (0..64).map(|_| new_user()).collect();
    // Everyone rates at once, then everyone changes their mind at once.
    for round in 0..2i64 {
        let mut all = tokio::task::JoinSet::new();
        for (i, u) in users.iter().enumerate() {
            let put = s
                .http
                .put(format!("{}/api/v1/films/{f}/rating", s.base))
                .bearer_auth(token(u))
                .json(&json!({ "score": (i as i64 + round * 3) % 11 }));
            all.spawn(async move { common::read(put.send().await.unwrap()).await });
        }
        while let Some(answer) = all.join_next().await {
            let (status, body) = answer.unwrap();
            assert_eq!(status, 200, "{body}");
        }
    }
    let mut distribution = [0i64; 11];
    let mut total = 0;
    for i in 0..64i64 {
        let score = (i + 3) % 11;
        distribution[score as usize] += 1;
        total += score;
    }
    let sum = summary(&s, &users[0], &f).await;
    assert_eq!(sum["count"], 64);
    assert_eq!(sum["total"], total);
    assert_eq!(sum["distribution"], json!(distribution));
    assert_eq!(sum["likes"], distribution[10]);
    assert_eq!(sum["dislikes"], distribution[0]);
}

#[tokio::test]
async fn a_bookmark_is_added_once_listed_and_removed() {
    let s = Server::start(&[]).await;
    let u = new_user();
    let f = film();
    let path = format!("/api/v1/me/bookmarks/{f}");
    let (status, first) = s.send("PUT", &path, &token(&u), None).await;
    assert_eq!(status, 201, "{first}");
    assert_eq!(first["film_id"], f);
    let (status, again) = s.send("PUT", &path, &token(&u), None).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["created_at"], first["created_at"]);

    let (status, list) = s.get("/api/v1/me/bookmarks", &token(&u)).await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["items"], json!([first]));
    assert_eq!(list["next_cursor"], Value::Null);
    // Someone else's list is their own.
    let (_, other) = s.get("/api/v1/me/bookmarks", &token(&new_user())).await;
    assert_eq!(other["items"], json!([]));

    assert_eq!(s.send("DELETE", &path, &token(&u), None).await.0, 204);
    let (status, body) = s.send("DELETE", &path, &token(&u), None).await;
    assert_eq!(status, 404, "{body}");
    let (_, list) = s.get("/api/v1/me/bookmarks", &token(&u)).await;
    assert_eq!(list["items"], json!([]));
}

/// Walks every page of `path`; between pages, `between` writes more.
async fn walk(
    s: &Server,
    user: &str,
    path: &str,
    limit: u32,
    between: impl AsyncFnMut(),
) -> Vec<Value> {
    let mut between = between;
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let sep = if path.contains('?') { '&' } else { '?' };
        let url = match &cursor {
            Some(c) => format!("{path}{sep}limit={limit}&cursor={c}"),
            None => format!("{path}{sep}limit={limit}"),
        };
        let (status, page) = s.get(&url, &token(user)).await;
        assert_eq!(status, 200, "{page}");
        let got = page["items"].as_array().unwrap();
        assert!(got.len() <= limit as usize);
        items.extend(got.iter().cloned());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return items,
        }
        between().await;
    }
}

#[tokio::test]
async fn lists_page_by_keyset_without_repeats_or_skips_while_others_write() {
    let s = Server::start(&[]).await;
    let u = new_user();
    let mut films = Vec::new();
    for i in 0..25 {
        let f = film();
        assert_eq!(rate(&s, &u, &f, i % 11).await.0, 200);
        let (status, _) = s
            .send(
                "PUT",
                &format!("/api/v1/me/bookmarks/{f}"),
                &token(&u),
                None,
            )
            .await;
        assert_eq!(status, 201);
        films.push(f);
    }
    let newest_first: Vec<Value> = films.iter().rev().map(|f| json!(f)).collect();

    // New items arrive while the client pages: they are newer than the first page, so
    // the walk neither repeats nor skips anything that was there when it started.
    let items = walk(&s, &u, "/api/v1/me/bookmarks", 10, async || {
        let f = film();
        s.send(
            "PUT",
            &format!("/api/v1/me/bookmarks/{f}"),
            &token(&u),
            None,
        )
        .await;
    })
    .await;
    let got: Vec<Value> = items.iter().map(|i| i["film_id"].clone()).collect();
    assert_eq!(got, newest_first);

    let mut rated_meanwhile = 0;
    let items = walk(&s, &u, "/api/v1/me/ratings", 7, async || {
        rate(&s, &u, &film(), 5).await;
        rated_meanwhile += 1;
    })
    .await;
    let got: Vec<Value> = items.iter().map(|i| i["film_id"].clone()).collect();
    assert_eq!(got, newest_first);
    let unique: HashSet<String> = got.iter().map(|v| v.to_string()).collect();
    assert_eq!(unique.len(), 25);

    assert_eq!(rated_meanwhile, 3, "pages of 7, 7, 7 and 4");

    // Everything on one page: no cursor to a next one.
    let (_, page) = s.get("/api/v1/me/ratings?limit=100", &token(&u)).await;
    assert_eq!(
        page["items"].as_array().unwrap().len(),
        25 + rated_meanwhile
    );
    assert_eq!(page["next_cursor"], Value::Null);
}

#[tokio::test]
async fn bad_input_is_a_422_naming_the_field() {
    let s = Server::start(&[]).await;
    let u = new_user();
    let f = film();
    let path = format!("/api/v1/films/{f}/rating");
    for (body, field) in [
        (json!({"score": 11}), "score"),
        (json!({"score": -1}), "score"),
        (json!({"score": 7.5}), "score"),
        (json!({"score": "7"}), "score"),
        (json!({}), "score"),
        (json!({"score": 5, "scor": 5}), "scor"),
    ] {
        let (status, answer) = s.send("PUT", &path, &token(&u), Some(&body)).await;
        assert_eq!(status, 422, "{body} → {answer}");
        assert_eq!(first_field(&answer), field, "{body} → {answer}");
    }
    for (method, path) in [
        ("PUT", "/api/v1/films/not-a-film/rating"),
        ("GET", "/api/v1/films/42/rating"),
        ("DELETE", "/api/v1/films/x/rating"),
        ("PUT", "/api/v1/me/bookmarks/nope"),
        ("DELETE", "/api/v1/me/bookmarks/nope"),
    ] {
        let body = json!({"score": 5});
        let (status, answer) = s.send(method, path, &token(&u), Some(&body)).await;
        assert_eq!(status, 422, "{method} {path} → {answer}");
        assert_eq!(first_field(&answer), "film_id");
    }
    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("limit=ten", "limit"),
        ("cursor=zzzz", "cursor"),
        ("cursor=00", "cursor"),
    ] {
        for list in ["ratings", "bookmarks"] {
            let (status, answer) = s
                .get(&format!("/api/v1/me/{list}?{query}"), &token(&u))
                .await;
            assert_eq!(status, 422, "{list}?{query} → {answer}");
            assert_eq!(first_field(&answer), field);
        }
    }
    // Nothing without a token.
    let (status, _) = s.send("PUT", &path, "", Some(&json!({"score": 5}))).await;
    assert_eq!(status, 401);
    let (status, _) = s.get("/api/v1/me/bookmarks", "").await;
    assert_eq!(status, 401);
    // Nothing above was stored.
    assert_eq!(summary(&s, &u, &f).await["count"], 0);
}

async fn stored_events(s: &Server, user: &str) -> Vec<Value> {
    s.sql(&format!(
        "SELECT event_type, toString(film_id) AS film_id, data, toString(event_id) AS event_id \
         FROM ugc.events WHERE user_id = '{user}' ORDER BY occurred_at, event_id"
    ))
    .await
}

#[tokio::test]
async fn every_change_is_an_event_in_the_store() {
    let s = Server::start(&[]).await;
    let u = new_user();
    let f = film();
    assert_eq!(rate(&s, &u, &f, 9).await.0, 200);
    assert_eq!(rate(&s, &u, &f, 3).await.0, 200);
    let rating = format!("/api/v1/films/{f}/rating");
    assert_eq!(s.send("DELETE", &rating, &token(&u), None).await.0, 204);
    let bookmark = format!("/api/v1/me/bookmarks/{f}");
    assert_eq!(s.send("PUT", &bookmark, &token(&u), None).await.0, 201);
    assert_eq!(s.send("PUT", &bookmark, &token(&u), None).await.0, 200);
    assert_eq!(s.send("DELETE", &bookmark, &token(&u), None).await.0, 204);
    // A refused change records nothing.
    assert_eq!(s.send("DELETE", &bookmark, &token(&u), None).await.0, 404);

    s.wait_for(
        &format!("SELECT count() FROM ugc.events WHERE user_id = '{u}'"),
        json!(5),
        Duration::from_secs(30),
    )
    .await;
    let events = stored_events(&s, &u).await;
    let types: Vec<&str> = events
        .iter()
        .map(|e| e["event_type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "rating_set",
            "rating_set",
            "rating_removed",
            "bookmark_added",
            "bookmark_removed"
        ]
    );
    assert!(events.iter().all(|e| e["film_id"] == f));
    let data: Value = serde_json::from_str(events[1]["data"].as_str().unwrap()).unwrap();
    assert_eq!(data["score"], 3);
    assert_eq!(data["film_id"], f);

    // Content events are the server's to record: ingest refuses them from clients.
    let (status, answer) = s
        .post(
            "/api/v1/events",
            &token(&u),
            &json!({"type": "rating_set", "film_id": f, "score": 10}),
        )
        .await;
    assert_eq!(status, 422, "{answer}");
    assert_eq!(first_field(&answer), "type");
}

#[tokio::test]
async fn a_kill_right_after_the_changes_loses_no_event_and_doubles_none() {
    let mut s = Server::start(&[]).await;
    let u = new_user();
    for _ in 0..20 {
        assert_eq!(rate(&s, &u, &film(), 6).await.0, 200);
    }
    // Whether the relay had appended some, all or none of them, after a restart every
    // change is in the store once.
    s.kill9();
    s.restart().await;
    s.wait_for(
        &format!("SELECT count() FROM ugc.events WHERE user_id = '{u}'"),
        json!(20),
        Duration::from_secs(60),
    )
    .await;
    let rows = s
        .sql(&format!(
            "SELECT count() AS n, uniqExact(event_id) AS ids FROM ugc.events FINAL WHERE user_id = '{u}'"
        ))
        .await;
    assert_eq!(rows[0]["n"], 20);
    assert_eq!(rows[0]["ids"], 20);
    let (_, page) = s.get("/api/v1/me/ratings?limit=100", &token(&u)).await;
    assert_eq!(page["items"].as_array().unwrap().len(), 20);
}

#[tokio::test]
async fn a_database_that_is_down_answers_503_with_retry_after_then_recovers() {
    // Its own PostgreSQL, whatever the suite's backend: this test stops it.
    let mut pg = ugc_testkit::Postgres::start().unwrap_or_else(|e| panic!("{e}"));
    let url = pg.create_database("content").unwrap();
    let s = Server::start(&["--content-url", &url]).await;
    let u = new_user();
    let f = film();
    assert_eq!(rate(&s, &u, &f, 8).await.0, 200);

    pg.kill();
    let r = s
        .http
        .put(format!("{}/api/v1/films/{f}/rating", s.base))
        .bearer_auth(token(&u))
        .json(&json!({"score": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    let (status, _) = s
        .get(&format!("/api/v1/films/{f}/rating"), &token(&u))
        .await;
    assert_eq!(status, 503);
    // Readiness says so, naming the content database.
    let (status, body) = s.get("/readyz", "").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["status"], "not_ready", "{body}");
    assert!(body["content"].is_string(), "{body}");

    pg.restart().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = rate(&s, &u, &f, 2).await;
        if status == 200 {
            break;
        }
        assert_eq!(status, 503, "{body}");
        assert!(std::time::Instant::now() < deadline, "no recovery: {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let sum = summary(&s, &u, &f).await;
    assert_eq!(sum["count"], 1);
    assert_eq!(sum["my_score"], 2);
    let (status, body) = s.get("/readyz", "").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.get("content").is_none(), "{body}");
}

async fn post_review(s: &Server, user: &str, film: &str, body: Value) -> (u16, Value) {
    s.send(
        "POST",
        &format!("/api/v1/films/{film}/reviews"),
        &token(user),
        Some(&body),
    )
    .await
}

async fn vote(s: &Server, user: &str, review: &str, value: i64) -> (u16, Value) {
    s.send(
        "PUT",
        &format!("/api/v1/reviews/{review}/vote"),
        &token(user),
        Some(&json!({ "value": value })),
    )
    .await
}

/// Concurrent changes share commits (SQLite commits the waiting ones together): each still
/// gets its own answer, and a refused one leaves the others' rows alone.
#[tokio::test]
async fn concurrent_posts_each_get_their_own_answer_and_the_refused_ones_change_nothing() {
    let s = Server::start(&[]).await;
    let f = film();
    let users: Vec<String> = (0..32).map(|_| new_user()).collect();
    let mut all = tokio::task::JoinSet::new();
    for (i, u) in users.iter().enumerate() {
        // Twice each, at once: one 201 and one 409 naming the review that won.
        for _ in 0..2 {
            let post = s
                .http
                .post(format!("{}/api/v1/films/{f}/reviews", s.base))
                .bearer_auth(token(u))
                .json(&json!({ "text": format!("review {i}"), "score": i % 11 }));
            let u = u.clone();
            all.spawn(async move { (u, common::read(post.send().await.unwrap()).await) });
        }
    }
    let mut answers: std::collections::HashMap<String, Vec<(u16, Value)>> = Default::default();
    while let Some(answer) = all.join_next().await {
        let (u, reply) = answer.unwrap();
        answers.entry(u).or_default().push(reply);
    }
    for (u, mut replies) in answers {
        replies.sort_by_key(|(status, _)| *status);
        let [(created, review), (conflict, existing)] = &replies[..] else {
            panic!("{u}: {replies:?}");
        };
        assert_eq!((*created, *conflict), (201, 409), "{u}: {replies:?}");
        assert_eq!(existing["review_id"], review["review_id"], "{u}");
    }
    let sum = summary(&s, &users[0], &f).await;
    let mut distribution = [0i64; 11];
    for i in 0..32 {
        distribution[i % 11] += 1;
    }
    assert_eq!(sum["count"], 32);
    assert_eq!(sum["distribution"], json!(distribution));
    let (status, page) = s
        .get(
            &format!("/api/v1/films/{f}/reviews?limit=100"),
            &token(&users[0]),
        )
        .await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["items"].as_array().unwrap().len(), 32);
}

#[tokio::test]
async fn a_review_is_posted_once_edited_by_its_author_and_removed() {
    let s = Server::start(&[]).await;
    let (author, other) = (new_user(), new_user());
    let f = film();

    let (status, review) = post_review(
        &s,
        &author,
        &f,
        json!({"text": "Слишком длинно.", "score": 6}),
    )
    .await;
    assert_eq!(status, 201, "{review}");
    let id = review["review_id"].as_str().unwrap().to_owned();
    assert_eq!(review["film_id"], f);
    assert_eq!(review["user_id"], author);
    assert_eq!(review["text"], "Слишком длинно.");
    assert_eq!(review["score"], 6);
    assert_eq!(review["likes"], 0);
    // The score set the author's rating in the same step.
    assert_eq!(summary(&s, &author, &f).await["my_score"], 6);

    // One review per user and film: the second names the first.
    let (status, again) = post_review(&s, &author, &f, json!({"text": "Again"})).await;
    assert_eq!(status, 409, "{again}");
    assert_eq!(again["review_id"], id);

    let path = format!("/api/v1/reviews/{id}");
    let (status, got) = s.get(&path, &token(&other)).await;
    assert_eq!(status, 200);
    assert_eq!(got, review);

    let edit = json!({"text": "На второй раз лучше."});
    let (status, _) = s.send("PATCH", &path, &token(&other), Some(&edit)).await;
    assert_eq!(status, 403);
    let (status, edited) = s
        .send("PATCH", &path, &token(&author), Some(&json!({"score": 9})))
        .await;
    assert_eq!(status, 200, "{edited}");
    assert_eq!(edited["score"], 9);
    assert_eq!(edited["text"], "Слишком длинно.");
    let (status, edited) = s.send("PATCH", &path, &token(&author), Some(&edit)).await;
    assert_eq!(status, 200, "{edited}");
    assert_eq!(edited["text"], "На второй раз лучше.");
    assert_eq!(summary(&s, &other, &f).await["total"], 9);

    let (_, mine) = s.get("/api/v1/me/reviews", &token(&author)).await;
    assert_eq!(mine["items"][0]["review_id"], id);

    assert_eq!(s.send("DELETE", &path, &token(&other), None).await.0, 403);
    assert_eq!(s.send("DELETE", &path, &token(&author), None).await.0, 204);
    assert_eq!(s.get(&path, &token(&author)).await.0, 404);
    assert_eq!(
        s.send("PATCH", &path, &token(&author), Some(&edit)).await.0,
        404
    );

    // An admin removes anyone's review.
    let (_, second) = post_review(&s, &other, &f, json!({"text": "Fine."})).await;
    let path = format!("/api/v1/reviews/{}", second["review_id"].as_str().unwrap());
    let admin = s.token(&new_user(), &["admin"]);
    assert_eq!(s.send("DELETE", &path, &admin, None).await.0, 204);
    assert_eq!(s.send("DELETE", &path, &admin, None).await.0, 404);
}

#[tokio::test]
async fn votes_count_likes_and_dislikes_of_a_review() {
    let s = Server::start(&[]).await;
    let author = new_user();
    let f = film();
    let (_, review) = post_review(&s, &author, &f, json!({"text": "Watch it."})).await;
    let id = review["review_id"].as_str().unwrap().to_owned();

    assert_eq!(vote(&s, &author, &id, 1).await.0, 403, "one's own review");
    let voters: Vec<String> = (0..5).map(|_| new_user()).collect();
    for (i, v) in voters.iter().enumerate() {
        let (status, body) = vote(&s, v, &id, if i < 3 { 1 } else { -1 }).await;
        assert_eq!(status, 200, "{body}");
    }
    // A changed mind moves one vote; a repeated vote changes nothing.
    let (_, body) = vote(&s, &voters[0], &id, -1).await;
    assert_eq!(
        body,
        json!({"review_id": id, "likes": 2, "dislikes": 3, "my_vote": -1})
    );
    let (_, body) = vote(&s, &voters[0], &id, -1).await;
    assert_eq!(body["dislikes"], 3);

    let path = format!("/api/v1/reviews/{id}/vote");
    assert_eq!(
        s.send("DELETE", &path, &token(&voters[0]), None).await.0,
        204
    );
    assert_eq!(
        s.send("DELETE", &path, &token(&voters[0]), None).await.0,
        404
    );
    let (_, got) = s
        .get(&format!("/api/v1/reviews/{id}"), &token(&author))
        .await;
    assert_eq!(
        (got["likes"].clone(), got["dislikes"].clone()),
        (json!(2), json!(2))
    );

    let missing = uuid::Uuid::new_v4();
    assert_eq!(vote(&s, &voters[1], &missing.to_string(), 1).await.0, 404);
}

#[tokio::test]
async fn a_films_reviews_sort_newest_oldest_and_top_across_pages() {
    let s = Server::start(&[]).await;
    let f = film();
    let mut ids = Vec::new();
    for _ in 0..7 {
        let (status, r) = post_review(&s, &new_user(), &f, json!({"text": "ok"})).await;
        assert_eq!(status, 201);
        ids.push(r["review_id"].clone());
    }
    // Net likes: review 2 gets 3, review 5 gets 1, review 0 gets -1.
    for (review, values) in [(2, vec![1, 1, 1]), (5, vec![1]), (0, vec![-1])] {
        for v in values {
            let id = ids[review].as_str().unwrap();
            assert_eq!(vote(&s, &new_user(), id, v).await.0, 200);
        }
    }
    let u = new_user();
    let ids_of = |items: Vec<Value>| -> Vec<Value> {
        items.iter().map(|i| i["review_id"].clone()).collect()
    };
    let newest: Vec<Value> = ids.iter().rev().cloned().collect();
    let reviews = format!("/api/v1/films/{f}/reviews");
    let list =
        async |sort: &str| walk(&s, &u, &format!("{reviews}?sort={sort}"), 3, async || {}).await;
    assert_eq!(ids_of(list("newest").await), newest);
    assert_eq!(ids_of(list("oldest").await), ids);
    let mut top = vec![ids[2].clone(), ids[5].clone()];
    top.extend([6, 4, 3, 1].iter().map(|&i| ids[i].clone()));
    top.push(ids[0].clone());
    assert_eq!(ids_of(list("top").await), top);

    let (status, body) = s
        .get(&format!("/api/v1/films/{f}/reviews?sort=best"), &token(&u))
        .await;
    assert_eq!(status, 422);
    assert_eq!(first_field(&body), "sort");
    // A cursor of one order is refused by another.
    let (_, page) = s
        .get(
            &format!("/api/v1/films/{f}/reviews?sort=top&limit=2"),
            &token(&u),
        )
        .await;
    let cursor = page["next_cursor"].as_str().unwrap();
    let (status, body) = s
        .get(
            &format!("/api/v1/films/{f}/reviews?sort=newest&cursor={cursor}"),
            &token(&u),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(first_field(&body), "cursor");
}

#[tokio::test]
async fn bad_reviews_and_votes_are_a_422_naming_the_field() {
    let s = Server::start(&[]).await;
    let u = new_user();
    let f = film();
    for (body, field) in [
        (json!({"text": ""}), "text"),
        (json!({"text": "   "}), "text"),
        (json!({"text": "x".repeat(10_001)}), "text"),
        (json!({"text": 5}), "text"),
        (json!({}), "text"),
        (json!({"text": "ok", "score": 11}), "score"),
        (json!({"text": "ok", "rating": 5}), "rating"),
    ] {
        let (status, answer) = post_review(&s, &u, &f, body.clone()).await;
        assert_eq!(status, 422, "{answer}");
        assert_eq!(first_field(&answer), field);
    }
    // 10 000 characters (not bytes) is the limit.
    let (status, _) = post_review(&s, &u, &f, json!({"text": "я".repeat(10_000)})).await;
    assert_eq!(status, 201);
    let (status, body) = s.get("/api/v1/reviews/not-a-uuid", &token(&u)).await;
    assert_eq!(status, 422);
    assert_eq!(first_field(&body), "review_id");
    let (_, mine) = s.get("/api/v1/me/reviews", &token(&u)).await;
    let id = mine["items"][0]["review_id"].as_str().unwrap().to_owned();
    for value in [json!(0), json!(2), json!("1"), json!(0.5)] {
        let (status, body) = s
            .send(
                "PUT",
                &format!("/api/v1/reviews/{id}/vote"),
                &token(&new_user()),
                Some(&json!({ "value": value })),
            )
            .await;
        assert_eq!(status, 422, "{value} → {body}");
        assert_eq!(first_field(&body), "value");
    }
    let (status, body) = s
        .send(
            "PATCH",
            &format!("/api/v1/reviews/{id}"),
            &token(&u),
            Some(&json!({"txt": "typo"})),
        )
        .await;
    assert_eq!(status, 422);
    assert_eq!(first_field(&body), "txt");
}

#[tokio::test]
async fn review_changes_are_events_in_the_store() {
    let s = Server::start(&[]).await;
    let (author, voter) = (new_user(), new_user());
    let f = film();
    let (_, review) = post_review(&s, &author, &f, json!({"text": "Good.", "score": 10})).await;
    let id = review["review_id"].as_str().unwrap().to_owned();
    let path = format!("/api/v1/reviews/{id}");
    let edit = json!({"text": "Very good."});
    assert_eq!(
        s.send("PATCH", &path, &token(&author), Some(&edit)).await.0,
        200
    );
    assert_eq!(vote(&s, &voter, &id, 1).await.0, 200);
    let vote_path = format!("{path}/vote");
    assert_eq!(
        s.send("DELETE", &vote_path, &token(&voter), None).await.0,
        204
    );
    assert_eq!(s.send("DELETE", &path, &token(&author), None).await.0, 204);

    s.wait_for(
        &format!("SELECT count() FROM ugc.events WHERE user_id IN ('{author}', '{voter}')"),
        json!(6),
        Duration::from_secs(30),
    )
    .await;
    let mut types: Vec<String> = stored_events(&s, &author)
        .await
        .into_iter()
        .chain(stored_events(&s, &voter).await)
        .map(|e| e["event_type"].as_str().unwrap().to_owned())
        .collect();
    types.sort();
    assert_eq!(
        types,
        [
            "rating_set",
            "review_edited",
            "review_posted",
            "review_removed",
            "review_vote_removed",
            "review_voted"
        ]
    );
    let posted = stored_events(&s, &author)
        .await
        .into_iter()
        .find(|e| e["event_type"] == "review_posted")
        .unwrap();
    let data: Value = serde_json::from_str(posted["data"].as_str().unwrap()).unwrap();
    assert_eq!(data["review_id"], id);
    assert_eq!(data["text"], "Good.");
    assert_eq!(data["score"], 10);
}

#[tokio::test]
async fn erasing_a_user_removes_their_content_and_puts_the_counts_right() {
    let s = Server::start(&[]).await;
    let (gone, stays) = (new_user(), new_user());
    let f = film();
    assert_eq!(rate(&s, &gone, &f, 10).await.0, 200);
    assert_eq!(rate(&s, &stays, &f, 4).await.0, 200);
    let (_, theirs) = post_review(&s, &gone, &f, json!({"text": "Mine."})).await;
    let (_, kept) = post_review(&s, &stays, &f, json!({"text": "Kept."})).await;
    let kept_id = kept["review_id"].as_str().unwrap().to_owned();
    let theirs_id = theirs["review_id"].as_str().unwrap().to_owned();
    assert_eq!(vote(&s, &gone, &kept_id, 1).await.0, 200);
    assert_eq!(vote(&s, &stays, &theirs_id, -1).await.0, 200);
    let bookmark = format!("/api/v1/me/bookmarks/{f}");
    assert_eq!(s.send("PUT", &bookmark, &token(&gone), None).await.0, 201);

    // Only admins erase.
    let erase = format!("/api/v1/users/{gone}/data");
    assert_eq!(s.send("DELETE", &erase, &token(&stays), None).await.0, 403);
    assert_eq!(summary(&s, &stays, &f).await["count"], 2);

    let admin = s.token(&new_user(), &["admin"]);
    let (status, body) = s.send("DELETE", &erase, &admin, None).await;
    assert_eq!(status, 202, "{body}");

    let sum = summary(&s, &gone, &f).await;
    assert_eq!(sum["count"], 1);
    assert_eq!(sum["total"], 4);
    assert_eq!(sum["likes"], 0);
    assert_eq!(sum["my_score"], Value::Null);
    let review = |id: String| {
        let s = &s;
        let t = token(&stays);
        async move { s.get(&format!("/api/v1/reviews/{id}"), &t).await }
    };
    assert_eq!(review(theirs_id).await.0, 404);
    let (_, kept) = review(kept_id).await;
    assert_eq!(kept["likes"], 0);
    for list in ["ratings", "reviews", "bookmarks"] {
        let (_, page) = s.get(&format!("/api/v1/me/{list}"), &token(&gone)).await;
        assert_eq!(page["items"], json!([]), "{list}");
    }
    // The other viewer's content is untouched.
    let (_, page) = s.get("/api/v1/me/ratings", &token(&stays)).await;
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
}
