//! Black-box: seed 003's content service (`/ugc_fastapi`: films, ratings, reviews,
//! bookmarks), each of its requests as its clients sent them, answered with its field
//! names, status codes and `detail` texts — its defects fixed — on the same tables the
//! native content routes use. Runs against SQLite, and against PostgreSQL with
//! `UGC_TEST_CONTENT=postgres` (scripts/test runs both).

mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use common::{SECRET, Server, new_user, read};
use jsonwebtoken::{EncodingKey, Header, encode};
use serde_json::{Value, json};

/// A token as seed 003's auth service issued it: the user in `user_id`.
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

const DESC: &str = "In descending order of the creation time";
const ASC: &str = "In ascending order of the creation time";

fn sorted(path: &str, sort: &str) -> String {
    format!("{path}?sort={}", sort.replace(' ', "%20"))
}

struct Client<'a> {
    server: &'a Server,
    token: String,
}

impl Client<'_> {
    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        self.server
            .send(
                method,
                &format!("/ugc_fastapi{path}"),
                &self.token,
                body.as_ref(),
            )
            .await
    }
    async fn get(&self, path: &str) -> (u16, Value) {
        self.call("GET", path, None).await
    }
    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.call("POST", path, Some(body)).await
    }
    async fn patch(&self, path: &str, body: Value) -> (u16, Value) {
        self.call("PATCH", path, Some(body)).await
    }
    async fn delete(&self, path: &str) -> (u16, Value) {
        self.call("DELETE", path, None).await
    }
}

fn ids(list: &Value) -> Vec<&str> {
    list.as_array()
        .unwrap_or_else(|| panic!("not a list: {list}"))
        .iter()
        .map(|x| x["id"].as_str().unwrap())
        .collect()
}

fn detail(text: &str) -> Value {
    json!({ "detail": text })
}

#[tokio::test]
async fn seed_003_needs_a_bearer_header_and_a_good_token() {
    let server = Server::start(&[]).await;
    let url = format!("{}/ugc_fastapi/films/", server.base);
    let r = server.http.get(&url).send().await.unwrap();
    let (status, body) = read(r).await;
    assert_eq!((status, body), (403, detail("Not authenticated")));
    let r = server
        .http
        .post(format!("{}/ugc_fastapi/bookmarks/", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(read(r).await, (403, detail("Not authenticated")));
    // The seed answered 500 for a token it could not decode.
    let (status, body) = server.get("/ugc_fastapi/films/", "not.a.token").await;
    assert_eq!(status, 401, "{body}");
    // The user comes from the token's `user_id`, as every other route reads it.
    let user = new_user();
    let me = Client {
        server: &server,
        token: seed_token(&user),
    };
    let (status, _) = me.post("/films/", json!({"title": "Solaris"})).await;
    assert_eq!(status, 201);
    let (status, bookmark) = me.post("/bookmarks/", json!({})).await;
    assert_eq!(status, 201, "{bookmark}");
    assert_eq!(bookmark["user_id"], user.as_str());
}

#[tokio::test]
async fn seed_003_films_are_registered_listed_edited_and_removed() {
    let server = Server::start(&[]).await;
    let me = Client {
        server: &server,
        token: seed_token(&new_user()),
    };
    assert_eq!(
        me.get("/films/").await,
        (404, detail("Films were not found."))
    );

    let (status, a) = me
        .post(
            "/films/",
            json!({"title": "  The Cranes Are Flying ", "description": "Moscow, 1941."}),
        )
        .await;
    assert_eq!(status, 201, "{a}");
    assert_eq!(a["title"], "The Cranes Are Flying");
    assert_eq!(a["description"], "Moscow, 1941.");
    assert_eq!(
        (a["ratings"].clone(), a["reviews"].clone()),
        (json!([]), json!([]))
    );
    assert!(a["created_at"].is_string(), "{a}");
    let a_id = a["id"].as_str().unwrap().to_owned();
    let (status, b) = me
        .post("/films/", json!({"title": "Stalker", "description": null}))
        .await;
    assert_eq!(status, 201, "{b}");
    let b_id = b["id"].as_str().unwrap().to_owned();

    let (status, list) = me.get("/films/").await;
    assert_eq!(status, 200);
    assert_eq!(
        ids(&list),
        [b_id.as_str(), a_id.as_str()],
        "newest first by default"
    );
    let (_, list) = me.get(&sorted("/films/", DESC)).await;
    assert_eq!(ids(&list), [b_id.as_str(), a_id.as_str()]);
    let (_, list) = me.get(&sorted("/films/", ASC)).await;
    assert_eq!(ids(&list), [a_id.as_str(), b_id.as_str()]);
    let (status, body) = me.get("/films/?sort=newest").await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["errors"][0]["field"], "sort", "{body}");

    let (status, got) = me.get(&format!("/films/{a_id}")).await;
    assert_eq!(
        (status, got["title"].clone()),
        (200, json!("The Cranes Are Flying"))
    );
    let unknown = uuid::Uuid::new_v4();
    assert_eq!(
        me.get(&format!("/films/{unknown}")).await,
        (404, detail("Film with the specified ID was not found."))
    );
    let (status, body) = me.get("/films/42").await;
    assert_eq!(
        (status, body["errors"][0]["field"].clone()),
        (422, json!("film_id"))
    );

    let (status, edited) = me
        .patch(
            &format!("/films/{a_id}"),
            json!({"description": "Moscow, 1941. A war, a love."}),
        )
        .await;
    assert_eq!(status, 200, "{edited}");
    assert_eq!(edited["title"], "The Cranes Are Flying");
    assert_eq!(edited["description"], "Moscow, 1941. A war, a love.");
    assert_eq!(
        me.patch(&format!("/films/{unknown}"), json!({"title": "x"}))
            .await
            .0,
        404
    );
    let (status, _) = me.post("/films/", json!({"description": "no title"})).await;
    assert_eq!(status, 422);

    assert_eq!(me.delete(&format!("/films/{b_id}")).await.0, 204);
    assert_eq!(me.get(&format!("/films/{b_id}")).await.0, 404);
    assert_eq!(
        me.delete(&format!("/films/{b_id}")).await,
        (404, detail("Film with the specified ID was not found."))
    );
}

#[tokio::test]
async fn seed_003_ratings_are_the_viewers_ratings_and_their_owner_edits_them() {
    let server = Server::start(&[]).await;
    let (u1, u2, u3) = (new_user(), new_user(), new_user());
    let c = |u: &str| Client {
        server: &server,
        token: seed_token(u),
    };
    let (one, two, three) = (c(&u1), c(&u2), c(&u3));
    let (_, film) = one
        .post(
            "/films/",
            json!({"title": "Mirror", "description": "A memory."}),
        )
        .await;
    let f = film["id"].as_str().unwrap().to_owned();

    // No rating yet: 404, not the seed's 500.
    assert_eq!(
        one.get(&format!("/ratings/{f}/film")).await,
        (
            404,
            detail("Rating records of the film with the specified ID were not found.")
        )
    );
    let (status, r1) = one
        .post(&format!("/ratings/{f}"), json!({"rating": 8}))
        .await;
    assert_eq!(status, 201, "{r1}");
    assert_eq!(
        (
            r1["rating"].clone(),
            r1["user_id"].clone(),
            r1["film_id"].clone()
        ),
        (json!(8), json!(u1), json!(f))
    );
    assert!(r1["created_at"].is_string(), "{r1}");
    let rid1 = r1["id"].as_str().unwrap().to_owned();
    let (status, _) = two
        .post(&format!("/ratings/{f}"), json!({"rating": 7}))
        .await;
    assert_eq!(status, 201);
    assert_eq!(
        one.get(&format!("/ratings/{f}/film")).await,
        (200, json!({"avg_rating_value": 7.5}))
    );
    for bad in [
        json!({"rating": 0}),
        json!({"rating": 11}),
        json!({"rating": "8"}),
        json!({}),
    ] {
        let (status, body) = one.post(&format!("/ratings/{f}"), bad.clone()).await;
        assert_eq!(
            (status, body["errors"][0]["field"].clone()),
            (422, json!("rating")),
            "{bad}"
        );
    }
    let unknown = uuid::Uuid::new_v4();
    assert_eq!(
        one.post(&format!("/ratings/{unknown}"), json!({"rating": 5}))
            .await,
        (404, detail("Film with the specified ID was not found."))
    );

    let (status, got) = three.get(&format!("/ratings/{rid1}")).await;
    assert_eq!((status, got), (200, r1.clone()));
    assert_eq!(
        one.get(&format!("/ratings/{unknown}")).await,
        (
            404,
            detail("Rating record with the specified ID was not found.")
        )
    );
    // Reachable (the seed took `me` for a rating id).
    let (status, mine) = one.get("/ratings/me/users").await;
    assert_eq!(status, 200, "{mine}");
    assert_eq!(ids(&mine), [rid1.as_str()]);
    assert_eq!(
        three.get("/ratings/me/users").await,
        (
            404,
            detail("Rating records of the spicified user were not found.")
        )
    );

    // The owner edits their rating (the seed always said 403); others may not.
    let (status, edited) = one
        .patch(&format!("/ratings/{rid1}"), json!({"rating": 10}))
        .await;
    assert_eq!(status, 200, "{edited}");
    assert_eq!(
        (edited["id"].clone(), edited["rating"].clone()),
        (json!(rid1), json!(10))
    );
    assert_eq!(
        two.patch(&format!("/ratings/{rid1}"), json!({"rating": 1}))
            .await,
        (
            403,
            detail("You don't have the permissions to edit this rating.")
        )
    );
    assert_eq!(
        one.get(&format!("/ratings/{f}/film")).await,
        (200, json!({"avg_rating_value": 8.5}))
    );
    // Rating again replaces the viewer's one rating of the film: same id.
    let (status, again) = one
        .post(&format!("/ratings/{f}"), json!({"rating": 9}))
        .await;
    assert_eq!(
        (status, again["id"].clone(), again["rating"].clone()),
        (201, json!(rid1), json!(9))
    );
    let (status, list) = three.get(&format!("/ratings/{f}/films")).await;
    assert_eq!(status, 200);
    assert_eq!(list.as_array().unwrap().len(), 2, "{list}");

    // The same tables as the native routes.
    let (status, summary) = server
        .get(&format!("/api/v1/films/{f}/rating"), &seed_token(&u1))
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        (summary["count"].clone(), summary["my_score"].clone()),
        (json!(2), json!(9))
    );

    assert_eq!(
        two.delete(&format!("/ratings/{rid1}")).await,
        (
            403,
            detail("You don't have the permissions to edit this rating.")
        )
    );
    assert_eq!(one.delete(&format!("/ratings/{rid1}")).await.0, 204);
    assert_eq!(one.get(&format!("/ratings/{rid1}")).await.0, 404);
    assert_eq!(one.delete(&format!("/ratings/{rid1}")).await.0, 404);
    assert_eq!(
        one.get(&format!("/ratings/{f}/film")).await,
        (200, json!({"avg_rating_value": 7.0}))
    );
}

#[tokio::test]
async fn seed_003_reviews_have_a_title_and_a_body_on_the_native_reviews() {
    let server = Server::start(&[]).await;
    let (u1, u2) = (new_user(), new_user());
    let one = Client {
        server: &server,
        token: seed_token(&u1),
    };
    let two = Client {
        server: &server,
        token: seed_token(&u2),
    };
    let (_, a) = one
        .post(
            "/films/",
            json!({"title": "Ivan's Childhood", "description": null}),
        )
        .await;
    let (_, b) = one
        .post(
            "/films/",
            json!({"title": "Andrei Rublev", "description": null}),
        )
        .await;
    let (a, b) = (
        a["id"].as_str().unwrap().to_owned(),
        b["id"].as_str().unwrap().to_owned(),
    );

    assert_eq!(
        one.get("/reviews/").await,
        (404, detail("Reviews were not found."))
    );
    let (status, r1) = one
        .post(
            &format!("/reviews/{a}"),
            json!({"title": "A first film", "body": "Stark and tender."}),
        )
        .await;
    assert_eq!(status, 201, "{r1}");
    assert_eq!(
        (
            r1["title"].clone(),
            r1["body"].clone(),
            r1["film_id"].clone(),
            r1["user_id"].clone()
        ),
        (
            json!("A first film"),
            json!("Stark and tender."),
            json!(a),
            json!(u1)
        )
    );
    assert!(r1["created_at"].is_string(), "{r1}");
    let id1 = r1["id"].as_str().unwrap().to_owned();
    // One review per viewer and film, as on the native routes.
    let (status, dup) = one
        .post(&format!("/reviews/{a}"), json!({"body": "Again."}))
        .await;
    assert_eq!(
        (status, dup["review_id"].clone()),
        (409, json!(id1)),
        "{dup}"
    );
    let (status, body) = one
        .post(&format!("/reviews/{b}"), json!({"title": "No body"}))
        .await;
    assert_eq!(
        (status, body["errors"][0]["field"].clone()),
        (422, json!("body"))
    );
    assert_eq!(
        one.post(
            &format!("/reviews/{}", uuid::Uuid::new_v4()),
            json!({"body": "x"})
        )
        .await,
        (404, detail("Film with the specified ID was not found."))
    );
    let (status, r2) = two
        .post(
            &format!("/reviews/{a}"),
            json!({"title": null, "body": "Too grim for me."}),
        )
        .await;
    assert_eq!(status, 201, "{r2}");
    assert_eq!(r2["title"], Value::Null);
    let id2 = r2["id"].as_str().unwrap().to_owned();

    let (status, got) = two.get(&format!("/reviews/{id1}")).await;
    assert_eq!((status, got), (200, r1.clone()));
    assert_eq!(
        one.get(&format!("/reviews/{}", uuid::Uuid::new_v4())).await,
        (404, detail("Review with specified ID was not found."))
    );
    let (_, all) = one.get("/reviews/").await;
    assert_eq!(ids(&all), [id2.as_str(), id1.as_str()]);
    let (_, all) = one.get(&sorted("/reviews/", ASC)).await;
    assert_eq!(ids(&all), [id1.as_str(), id2.as_str()]);
    let (_, of_film) = one.get(&sorted(&format!("/reviews/{a}/films"), ASC)).await;
    assert_eq!(ids(&of_film), [id1.as_str(), id2.as_str()]);
    assert_eq!(
        one.get(&format!("/reviews/{b}/films")).await,
        (404, detail("Reviews were not found."))
    );
    let (_, mine) = one.get("/reviews/me/users").await;
    assert_eq!(ids(&mine), [id1.as_str()]);
    let (_, theirs) = one.get(&format!("/reviews/{u2}/users")).await;
    assert_eq!(ids(&theirs), [id2.as_str()]);

    assert_eq!(
        two.patch(&format!("/reviews/{id1}"), json!({"body": "Mine now."}))
            .await,
        (
            403,
            detail("You don't have the permissions to edit this review.")
        )
    );
    let (status, edited) = one
        .patch(
            &format!("/reviews/{id1}"),
            json!({"body": "Stark, tender, and a masterpiece."}),
        )
        .await;
    assert_eq!(status, 200, "{edited}");
    assert_eq!(
        (edited["title"].clone(), edited["body"].clone()),
        (
            json!("A first film"),
            json!("Stark, tender, and a masterpiece.")
        )
    );
    // The native review is the same one.
    let (status, native) = server
        .get(&format!("/api/v1/reviews/{id1}"), &seed_token(&u1))
        .await;
    assert_eq!(status, 200);
    assert_eq!(native["text"], "Stark, tender, and a masterpiece.");
    // A film record embeds its reviews.
    let (_, film) = one.get(&format!("/films/{a}")).await;
    assert_eq!(film["reviews"].as_array().unwrap().len(), 2, "{film}");

    assert_eq!(
        two.delete(&format!("/reviews/{id1}")).await,
        (
            403,
            detail("You don't have the permissions to edit this review.")
        )
    );
    assert_eq!(one.delete(&format!("/reviews/{id1}")).await.0, 204);
    assert_eq!(
        one.get(&format!("/reviews/{id1}")).await,
        (404, detail("Review with specified ID was not found."))
    );
    assert_eq!(
        one.get("/reviews/me/users").await,
        (404, detail("Reviews were not found."))
    );
}

#[tokio::test]
async fn seed_003_bookmarks_are_the_viewers_bookmarks() {
    let server = Server::start(&[]).await;
    let user = new_user();
    let me = Client {
        server: &server,
        token: seed_token(&user),
    };
    let (status, first) = me.post("/bookmarks/", json!({})).await;
    assert_eq!(status, 201, "{first}");
    assert_eq!(
        (first["film_ids"].clone(), first["user_id"].clone()),
        (json!([]), json!(user))
    );
    // Again: the same record, not the seed's 500.
    let (status, again) = me.post("/bookmarks/", json!({})).await;
    assert_eq!(
        (status, again["id"].clone()),
        (201, first["id"].clone()),
        "{again}"
    );

    let (_, a) = me
        .post(
            "/films/",
            json!({"title": "Nostalghia", "description": null}),
        )
        .await;
    let (_, b) = me
        .post(
            "/films/",
            json!({"title": "The Sacrifice", "description": null}),
        )
        .await;
    let (a, b) = (
        a["id"].as_str().unwrap().to_owned(),
        b["id"].as_str().unwrap().to_owned(),
    );
    let (status, mark) = me.post(&format!("/bookmarks/{a}/films"), json!({})).await;
    assert_eq!(
        (status, mark["film_ids"].clone()),
        (201, json!([a])),
        "{mark}"
    );
    let (status, mark) = me.post(&format!("/bookmarks/{b}/films"), json!({})).await;
    assert_eq!(
        (status, mark["film_ids"].clone()),
        (201, json!([a, b])),
        "{mark}"
    );
    assert_eq!(mark["id"], first["id"]);
    assert_eq!(
        me.post(
            &format!("/bookmarks/{}/films", uuid::Uuid::new_v4()),
            json!({})
        )
        .await,
        (404, detail("Film with the specified ID was not found."))
    );

    let (status, films) = me.get("/bookmarks/me/users/films").await;
    assert_eq!(status, 200, "{films}");
    assert_eq!(ids(&films), [b.as_str(), a.as_str()]);
    let (_, films) = me.get(&sorted("/bookmarks/me/users/films", ASC)).await;
    assert_eq!(ids(&films), [a.as_str(), b.as_str()]);
    assert_eq!(films[0]["title"], "Nostalghia");

    // Un-bookmarking answers the record (the seed answered 500).
    let (status, left) = me.delete(&format!("/bookmarks/me/users/{a}/films")).await;
    assert_eq!(
        (status, left["film_ids"].clone()),
        (200, json!([b])),
        "{left}"
    );
    // The native bookmarks are the same.
    let (status, native) = server.get("/api/v1/me/bookmarks", &seed_token(&user)).await;
    assert_eq!(status, 200);
    assert_eq!(native["items"].as_array().unwrap().len(), 1, "{native}");
    assert_eq!(native["items"][0]["film_id"], b.as_str());
}

#[tokio::test]
async fn seed_003_content_routes_switch_off_with_the_seed() {
    let server = Server::start(&["--compat", "004"]).await;
    let (status, _) = server
        .get("/ugc_fastapi/films/", &seed_token(&new_user()))
        .await;
    assert_eq!(status, 404);
    let (_, doc) = server.get("/openapi.json", "").await;
    assert!(doc["paths"]["/ugc_fastapi/films/"].is_null());
    drop(server);

    let on = Server::start(&[]).await;
    let (_, doc) = on.get("/openapi.json", "").await;
    for path in [
        "/ugc_fastapi/films/",
        "/ugc_fastapi/ratings/{id}/film",
        "/ugc_fastapi/reviews/me/users",
        "/ugc_fastapi/bookmarks/me/users/{film_id}/films",
    ] {
        let item = doc["paths"][path]
            .as_object()
            .unwrap_or_else(|| panic!("{path} is not documented"));
        for op in item.values() {
            assert_eq!(op["tags"], json!(["compat: seed 003"]), "{path}");
        }
    }
}
