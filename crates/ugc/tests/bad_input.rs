//! Black-box: bad input of every kind gets its 4xx with a JSON body naming the problem,
//! never a 5xx, and tokens that must not pass do not.

mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use common::{SECRET, Server, new_user, read};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};

const FILM: &str = "1ec4cd73-2fd5-4f25-af68-b6595d279af2";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn sign(alg: Algorithm, key: &EncodingKey, kid: Option<&str>, claims: &Value) -> String {
    let mut h = Header::new(alg);
    h.kid = kid.map(str::to_owned);
    encode(&h, claims, key).unwrap()
}

fn hs(claims: &Value, secret: &str) -> String {
    sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(secret.as_bytes()),
        None,
        claims,
    )
}

fn fields(body: &Value) -> Vec<String> {
    body["errors"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| e["field"].as_str().unwrap_or("").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

async fn post_raw(
    server: &Server,
    token: Option<&str>,
    content_type: Option<&str>,
    body: impl Into<reqwest::Body>,
) -> (u16, Value) {
    let mut r = server
        .http
        .post(format!("{}/api/v1/events", server.base))
        .body(body);
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    if let Some(ct) = content_type {
        r = r.header("content-type", ct);
    }
    read(r.send().await.unwrap()).await
}

#[tokio::test]
async fn malformed_invalid_and_oversized_requests_get_their_4xx() {
    let server = Server::start(&["--max-body-bytes", "4096", "--max-batch", "10"]).await;
    let token = server.token(&new_user(), &[]);
    let json_ct = Some("application/json");

    let (status, body) = post_raw(&server, Some(&token), json_ct, "{\"type\": \"pause\",").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("malformed_json")),
        "{body}"
    );

    let (status, body) = server
        .post(
            "/api/v1/events",
            &token,
            &json!({"type":"view_progress","film_id":FILM,"film_timestamp":"754"}),
        )
        .await;
    assert_eq!(
        (status, fields(&body)),
        (422, vec!["film_timestamp".to_owned()]),
        "{body}"
    );

    let (status, body) = server
        .post(
            "/api/v1/events",
            &token,
            &json!({"type":"teleport","film_id":FILM}),
        )
        .await;
    assert_eq!(
        (status, fields(&body)),
        (422, vec!["type".to_owned()]),
        "{body}"
    );

    let (status, body) = server
        .post("/api/v1/events", &token, &json!({"type":"view_progress"}))
        .await;
    assert_eq!(
        (status, fields(&body)),
        (422, vec!["film_id".to_owned(), "film_timestamp".to_owned()]),
        "{body}"
    );

    let (status, body) = server
        .post(
            "/api/v1/events",
            &token,
            &json!({"type":"pause","film_id":FILM,"position":-5,"context":{"timezone":7}}),
        )
        .await;
    assert_eq!(
        (status, fields(&body)),
        (
            422,
            vec!["context.timezone".to_owned(), "position".to_owned()]
        ),
        "{body}"
    );

    let (status, _) = server.post("/api/v1/events", &token, &json!([1, 2])).await;
    assert_eq!(status, 422);

    let event = json!({"type":"full_view","film_id":FILM}).to_string();
    assert_eq!(
        post_raw(&server, Some(&token), Some("text/plain"), event.clone())
            .await
            .0,
        415
    );
    assert_eq!(post_raw(&server, Some(&token), None, event).await.0, 415);

    let big = json!({"type":"custom","name":"big","data":{"blob":"x".repeat(5000)}});
    let (status, body) = server.post("/api/v1/events", &token, &big).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (413, Some("too_large")),
        "{body}"
    );

    let batch: Vec<Value> = (0..11)
        .map(|_| json!({"type":"full_view","film_id":FILM}))
        .collect();
    let (status, body) = server
        .post("/api/v1/events/batch", &token, &json!(batch))
        .await;
    assert_eq!(status, 413, "{body}");
    let (status, _) = server
        .post("/api/v1/events/batch", &token, &json!([]))
        .await;
    assert_eq!(status, 422);

    let (status, body) = server
        .get("/api/v1/films/not-a-uuid/progress", &token)
        .await;
    assert_eq!((status, fields(&body)), (422, vec!["film_id".to_owned()]));
    let (status, _) = server.get("/api/v1/progress?limit=0", &token).await;
    assert_eq!(status, 422);
    let (status, _) = server.get("/api/v1/progress?limit=many", &token).await;
    assert_eq!(status, 422);
}

#[tokio::test]
async fn tokens_that_must_not_pass_get_401_and_good_ones_pass_by_header_or_cookie() {
    let server = Server::start(&[]).await;
    let event = json!({"type":"full_view","film_id":FILM});
    let user = new_user();
    let good = hs(&json!({"sub": user, "exp": now() + 600}), SECRET);

    let (status, body) = post_raw(&server, None, Some("application/json"), event.to_string()).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("unauthorized")),
        "{body}"
    );

    let refused = [
        ("garbage", "not.a.jwt".to_owned()),
        (
            "wrong key",
            hs(
                &json!({"sub": user, "exp": now() + 600}),
                "some-other-secret-0123456789",
            ),
        ),
        (
            "expired",
            hs(&json!({"sub": user, "exp": now() - 3600}), SECRET),
        ),
        (
            "not yet valid",
            hs(
                &json!({"sub": user, "exp": now() + 7200, "nbf": now() + 3600}),
                SECRET,
            ),
        ),
        ("no exp", hs(&json!({"sub": user}), SECRET)),
        ("no user", hs(&json!({"exp": now() + 600}), SECRET)),
        // {"alg":"none","typ":"JWT"} with a valid payload and no signature.
        (
            "alg none",
            format!(
                "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{}.",
                b64(&json!({"sub": user, "exp": now() + 600}).to_string())
            ),
        ),
    ];
    for (what, token) in &refused {
        let (status, body) = server.post("/api/v1/events", token, &event).await;
        assert_eq!(status, 401, "{what}: {body}");
    }

    // The token is read from the header or from the cookies the seeds' auth services set;
    // `user_id` names the user where `sub` is absent.
    let seed_style = hs(&json!({"user_id": user, "exp": now() + 600}), SECRET);
    for cookie in [
        format!("access_token_cookie={good}"),
        format!("theme=dark; access_token={seed_style}"),
    ] {
        let r = server
            .http
            .post(format!("{}/api/v1/events", server.base))
            .header("cookie", cookie)
            .json(&event)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
    }
    let r = server
        .http
        .post(format!("{}/api/v1/events", server.base))
        .header("authorization", format!("bearer {good}"))
        .json(&event)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
}

fn b64(s: &str) -> String {
    const T: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let b = s.as_bytes();
    let mut out = String::new();
    for chunk in b.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, &v)| acc | (v as u32) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

#[tokio::test]
async fn public_keys_verify_rs256_and_es256_and_refuse_key_confusion() {
    let event = json!({"type":"full_view","film_id":FILM});
    let claims = json!({"sub": new_user(), "exp": now() + 600, "iss": "cinema-auth", "aud": "ugc"});
    let rsa =
        EncodingKey::from_rsa_pem(&std::fs::read(fixture("rsa-private.pem")).unwrap()).unwrap();
    let ec = EncodingKey::from_ec_pem(&std::fs::read(fixture("ec-private.pem")).unwrap()).unwrap();
    let rsa_public = std::fs::read_to_string(fixture("rsa-public.pem")).unwrap();

    let pem_server = Server::start_without_secret(&[
        "--jwt-public-key",
        &fixture("rsa-public.pem"),
        "--jwt-issuer",
        "cinema-auth",
        "--jwt-audience",
        "ugc",
    ])
    .await;
    let (status, body) = pem_server
        .post(
            "/api/v1/events",
            &sign(Algorithm::RS256, &rsa, None, &claims),
            &event,
        )
        .await;
    assert_eq!(status, 202, "{body}");
    // HS256 "signed" with the public key as the secret: the classic confusion attack.
    let confused = hs(&claims, &rsa_public);
    assert_eq!(
        pem_server.post("/api/v1/events", &confused, &event).await.0,
        401
    );
    assert_eq!(
        pem_server
            .post(
                "/api/v1/events",
                &sign(Algorithm::ES256, &ec, None, &claims),
                &event
            )
            .await
            .0,
        401
    );
    let wrong_aud = json!({"sub": "u", "exp": now() + 600, "iss": "cinema-auth", "aud": "other"});
    assert_eq!(
        pem_server
            .post(
                "/api/v1/events",
                &sign(Algorithm::RS256, &rsa, None, &wrong_aud),
                &event
            )
            .await
            .0,
        401
    );
    let no_iss = json!({"sub": "u", "exp": now() + 600, "aud": "ugc"});
    assert_eq!(
        pem_server
            .post(
                "/api/v1/events",
                &sign(Algorithm::RS256, &rsa, None, &no_iss),
                &event
            )
            .await
            .0,
        401
    );
    drop(pem_server);

    let jwks_server = Server::start_without_secret(&["--jwt-jwks", &fixture("jwks.json")]).await;
    for (alg, key, kid) in [
        (Algorithm::ES256, &ec, "ec-1"),
        (Algorithm::RS256, &rsa, "rsa-1"),
    ] {
        let (status, body) = jwks_server
            .post(
                "/api/v1/events",
                &sign(alg, key, Some(kid), &claims),
                &event,
            )
            .await;
        assert_eq!(status, 202, "{alg:?}: {body}");
    }
    assert_eq!(
        jwks_server
            .post(
                "/api/v1/events",
                &sign(Algorithm::ES256, &ec, Some("rsa-1"), &claims),
                &event
            )
            .await
            .0,
        401
    );
}

#[tokio::test]
async fn analyst_sql_needs_the_role_and_runs_only_reads() {
    let server = Server::start(&[]).await;
    let viewer = server.token(&new_user(), &[]);
    let analyst = server.token(&new_user(), &["analyst"]);
    let q = |sql: &str| json!({ "sql": sql });

    assert_eq!(
        server
            .post("/api/v1/query", &viewer, &q("SELECT 1"))
            .await
            .0,
        403
    );
    let (status, body) = server
        .post("/api/v1/query", &analyst, &q("SELECT 1 AS one"))
        .await;
    assert_eq!(
        (status, body["rows"][0]["one"].as_u64()),
        (200, Some(1)),
        "{body}"
    );

    for sql in [
        "DROP TABLE ugc.events",
        "INSERT INTO ugc.events (event_type) VALUES ('x')",
        "SELECT 1; DROP TABLE ugc.events",
        "SELECT 1 SETTINGS readonly = 0",
        "SELECT * FROM file('/etc/hostname', 'LineAsString') SETTINGS readonly = 0",
        "SELECT * FROM `/etc/hostname`",
        "SELECT * FROM file('/etc/passwd', 'LineAsString')",
        "SELECT * FROM no_such_table",
        "SELEC 1",
    ] {
        // 403: parsed, but reaches outside what analysts may read; 422: not one
        // SELECT the engine accepts.
        let (status, body) = server.post("/api/v1/query", &analyst, &q(sql)).await;
        assert!(
            status == 403 || (status == 422 && fields(&body) == vec!["sql".to_owned()]),
            "{sql}: {status} {body}"
        );
    }
    // Still there.
    assert_eq!(
        server
            .sql(
                "SELECT count() AS n FROM system.tables WHERE database = 'ugc' AND name = 'events'"
            )
            .await[0]["n"],
        1
    );

    let (status, body) = server
        .post(
            "/api/v1/query",
            &analyst,
            &q("SELECT number FROM system.numbers LIMIT 20000"),
        )
        .await;
    assert_eq!(
        (
            status,
            body["row_count"].as_u64(),
            body["truncated"].as_bool()
        ),
        (200, Some(10_000), Some(true)),
        "{body}"
    );
}
