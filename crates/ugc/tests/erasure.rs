//! Right to be forgotten, from outside: an admin erases a user's data; the job says when
//! nothing of that user is left in the store; other users keep theirs; nobody but an
//! admin may ask. Runs on chDB by default and on a ClickHouse server or cluster with
//! `UGC_TEST_STORE` (see scripts/test).

mod common;

use std::time::{Duration, Instant};

use common::{Server, new_user, read};
use serde_json::{Value, json};

async fn send_some(server: &Server, user: &str, film: &str) {
    let token = server.token(user, &[]);
    let (status, body) = server
        .post(
            "/api/v1/events/batch",
            &token,
            &json!([
                {"type": "view_progress", "film_id": film, "film_timestamp": 100},
                {"type": "pause", "film_id": film, "position": 101},
                {"type": "view_progress", "film_id": film, "film_timestamp": 200},
            ]),
        )
        .await;
    assert_eq!(status, 202, "{body}");
}

async fn rows_of(server: &Server, user: &str) -> (u64, u64) {
    let n = |rows: Vec<Value>| rows[0]["n"].as_u64().unwrap();
    (
        n(server
            .sql(&format!(
                "SELECT count() AS n FROM ugc.events WHERE user_id = '{user}'"
            ))
            .await),
        n(server
            .sql(&format!(
                "SELECT count() AS n FROM ugc.progress WHERE user_id = '{user}'"
            ))
            .await),
    )
}

#[tokio::test]
async fn an_admin_erases_a_users_data_and_the_job_says_when_it_is_gone() {
    let server = Server::start(&[]).await;
    let (gone, kept) = (new_user(), new_user());
    let film = uuid::Uuid::new_v4().to_string();
    send_some(&server, &gone, &film).await;
    send_some(&server, &kept, &film).await;
    for user in [&gone, &kept] {
        server
            .wait_for(
                &format!(
                    "SELECT uniqExact(event_id) AS n FROM ugc.events WHERE user_id = '{user}'"
                ),
                json!(3),
                Duration::from_secs(30),
            )
            .await;
    }
    let viewer_token = server.token(&gone, &[]);
    let (status, _) = server
        .get(&format!("/api/v1/films/{film}/progress"), &viewer_token)
        .await;
    assert_eq!(status, 200);

    let delete = |token: String, user: String| {
        let http = server.http.clone();
        let url = format!("{}/api/v1/users/{user}/data", server.base);
        async move { read(http.delete(url).bearer_auth(token).send().await.unwrap()).await }
    };
    // Only admins.
    for roles in [&[][..], &["analyst"][..]] {
        let (status, body) = delete(server.token(&new_user(), roles), gone.clone()).await;
        assert_eq!(status, 403, "{roles:?}: {body}");
    }
    let admin = server.token(&new_user(), &["admin"]);
    let (status, body) = delete(admin.clone(), String::new()).await;
    assert!(
        status == 404 || status == 405 || status == 422,
        "{status} {body}"
    );

    let (status, job) = delete(admin.clone(), gone.clone()).await;
    assert_eq!(status, 202, "{job}");
    assert_eq!(job["user_id"], gone.as_str());
    let url = job["status_url"].as_str().unwrap().to_owned();
    assert_eq!(
        url,
        format!("/api/v1/jobs/{}", job["job_id"].as_str().unwrap())
    );

    let deadline = Instant::now() + Duration::from_secs(120);
    let done = loop {
        let (status, body) = server.get(&url, &admin).await;
        assert_eq!(status, 200, "{body}");
        if body["status"] == "done" {
            break body;
        }
        assert!(Instant::now() < deadline, "the job did not finish: {body}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(done["remaining_rows"], 0, "{done}");
    assert_eq!(
        rows_of(&server, &gone).await,
        (0, 0),
        "nothing of the user is left"
    );
    let (status, _) = server
        .get(&format!("/api/v1/films/{film}/progress"), &viewer_token)
        .await;
    assert_eq!(status, 404, "the erased viewer's position is gone");
    let (events, progress) = rows_of(&server, &kept).await;
    assert!(
        events >= 3 && progress >= 1,
        "another user keeps theirs: {events} {progress}"
    );

    // The job is remembered; other ids are not jobs.
    let (status, _) = server.get(&url, &admin).await;
    assert_eq!(status, 200);
    let (status, _) = server
        .get(&format!("/api/v1/jobs/{}", uuid::Uuid::new_v4()), &admin)
        .await;
    assert_eq!(status, 404);
    let (status, body) = server.get("/api/v1/jobs/not-a-uuid", &admin).await;
    assert_eq!(
        (status, body["errors"][0]["field"].as_str()),
        (422, Some("job_id"))
    );
    let (status, _) = server
        .get(&url, &server.token(&new_user(), &["analyst"]))
        .await;
    assert_eq!(status, 403);
}
