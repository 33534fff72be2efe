//! The player page and `ugc.js` in a real headless Chromium (over WebDriver) against the
//! real `ugc` binary: what a viewer does arrives in the store once each, resumes where it
//! stopped, and survives a closed tab, a dropped network and an overloaded server.

mod common;

use std::time::Duration;

use common::browser::Browser;
use common::{Server, new_user};
use serde_json::{Value, json};

const WITHIN: Duration = Duration::from_secs(30);

/// Opens the player of `film` for `user` (token in the fragment) and waits until it is ready.
async fn open_player(browser: &Browser, server: &Server, user: &str, film: &str) {
    let token = server.token(user, &[]);
    browser
        .goto(&format!("{}/player/{film}#token={token}", server.base))
        .await;
    browser
        .wait_until(
            "window.player && window.player.ready",
            WITHIN,
            "the player loads",
        )
        .await;
}

fn film() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Counts of each event type a user has in the store, once `total` rows are there.
async fn types_of(server: &Server, user: &str, total: usize) -> Vec<(String, u64)> {
    server
        .wait_for(
            &format!("SELECT count() AS n FROM ugc.events WHERE user_id = '{user}' AND event_type != 'rebuffer'"),
            json!(total),
            WITHIN,
        )
        .await;
    server
        .sql(&format!(
            "SELECT event_type, count() AS n, uniqExact(event_id) AS ids FROM ugc.events \
             WHERE user_id = '{user}' AND event_type != 'rebuffer' GROUP BY event_type ORDER BY event_type"
        ))
        .await
        .iter()
        .map(|r| {
            assert_eq!(r["n"], r["ids"], "an event stored twice: {r}");
            (r["event_type"].as_str().unwrap().to_owned(), r["n"].as_u64().unwrap())
        })
        .collect()
}

#[tokio::test]
async fn a_viewing_in_the_player_is_stored_once_each() {
    let server = Server::start(&[]).await;
    let browser = Browser::start().await;
    let (user, film) = (new_user(), film());
    open_player(&browser, &server, &user, &film).await;

    browser.click("#play").await;
    browser
        .wait_until(
            "document.getElementById('video').currentTime > 1",
            WITHIN,
            "it plays",
        )
        .await;
    browser.click("#play").await; // pause
    browser
        .wait_until(
            "document.getElementById('video').paused",
            WITHIN,
            "it pauses",
        )
        .await;
    let paused_at = browser
        .js("return Math.floor(document.getElementById('video').currentTime);")
        .await;
    browser.click("#quality option[value='240p']").await;
    browser
        .wait_until(
            "window.player.rendition === '240p' && window.player.settled()",
            WITHIN,
            "240p loads",
        )
        .await;
    browser.click("#quality option[value='360p']").await;
    browser
        .wait_until(
            "window.player.rendition === '360p' && window.player.settled()",
            WITHIN,
            "360p loads",
        )
        .await;
    // The position survives a switch.
    let after_switch = browser
        .wait_until("!document.getElementById('video').seeking && Math.floor(document.getElementById('video').currentTime) + 1", WITHIN, "the switch settles")
        .await;
    assert_eq!(
        after_switch.as_u64().unwrap() - 1,
        paused_at.as_u64().unwrap()
    );
    // The screenshot the README shows: the player as the test browser sees it. Written
    // into docs/ only when asked (UGC_UPDATE_SCREENSHOT=1), so a test run leaves the
    // tree as it was.
    let png = browser.screenshot_png().await;
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
    if std::env::var_os("UGC_UPDATE_SCREENSHOT").is_some_and(|v| v == "1") {
        let docs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs");
        std::fs::write(docs.join("player.png"), png).unwrap();
    }

    // Near the end, then play it out.
    browser
        .js("const s = document.getElementById('seek'); s.value = 6.5; s.dispatchEvent(new Event('input')); return true;")
        .await;
    browser
        .wait_until("!document.getElementById('video').seeking && document.getElementById('video').currentTime >= 6", WITHIN, "the seek lands")
        .await;
    browser.click("#play").await;
    browser
        .wait_until(
            "document.getElementById('video').ended",
            WITHIN,
            "the film ends",
        )
        .await;
    let flushed = browser.js_await("ugc.flush()").await;
    assert_eq!(flushed["pending"], 0, "{flushed}");

    let types = types_of(&server, &user, 7).await;
    let want: Vec<(String, u64)> = [
        ("full_view", 1),
        ("pause", 1),
        ("playback_start", 1),
        ("quality_change", 2),
        ("view_progress", 2),
    ]
    .iter()
    .map(|(t, n)| (t.to_string(), *n))
    .collect();
    assert_eq!(types, want);
    let switches = server
        .sql(&format!(
            "SELECT quality_from AS f, quality_to AS t, position AS p FROM ugc.events \
             WHERE user_id = '{user}' AND event_type = 'quality_change' ORDER BY occurred_at"
        ))
        .await;
    assert_eq!(
        switches,
        [
            json!({"f": "auto", "t": "240p", "p": paused_at}),
            json!({"f": "240p", "t": "360p", "p": paused_at})
        ]
    );
    let rows = server
        .sql(&format!(
            "SELECT event_type, position AS p, film_id AS f, data FROM ugc.events WHERE user_id = '{user}' \
             AND event_type IN ('pause', 'view_progress', 'playback_start') ORDER BY occurred_at"
        ))
        .await;
    assert_eq!(
        rows[1],
        json!({"event_type": "pause", "p": paused_at, "f": film, "data": ""})
    );
    assert_eq!(
        rows[2]["p"], paused_at,
        "the pause's position report: {rows:?}"
    );
    assert_eq!(rows[3]["p"], 6, "the seek's position report: {rows:?}");
    let startup: Value = serde_json::from_str(rows[0]["data"].as_str().unwrap()).unwrap();
    assert!(startup["startup_ms"].as_u64().is_some(), "{rows:?}");
    // Finished: the film no longer offers to resume.
    let (status, progress) = server
        .get(
            &format!("/api/v1/films/{film}/progress"),
            &server.token(&user, &[]),
        )
        .await;
    assert_eq!((status, progress["finished"].clone()), (200, json!(true)));
    assert_eq!(browser.js("return window.player.errors;").await, json!([]));
}

#[tokio::test]
async fn a_second_visit_resumes_where_the_viewer_stopped() {
    let server = Server::start(&[]).await;
    let browser = Browser::start().await;
    let (user, film) = (new_user(), film());
    open_player(&browser, &server, &user, &film).await;
    assert_eq!(
        browser.js("return window.player.resumedFrom;").await,
        Value::Null
    );
    browser.click("#play").await;
    browser
        .wait_until(
            "document.getElementById('video').currentTime >= 3",
            WITHIN,
            "it plays",
        )
        .await;
    browser.click("#play").await;
    browser
        .wait_until(
            "document.getElementById('video').paused",
            WITHIN,
            "it pauses",
        )
        .await;
    let stopped = browser
        .js("return Math.floor(document.getElementById('video').currentTime);")
        .await;
    browser.js_await("ugc.flush()").await;
    let token = server.token(&user, &[]);
    let deadline = std::time::Instant::now() + WITHIN;
    loop {
        let (status, p) = server
            .get(&format!("/api/v1/films/{film}/progress"), &token)
            .await;
        if status == 200 && p["position"] == stopped {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "progress is {status} {p}, wanted {stopped}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    browser.js("location.reload(); return true;").await;
    browser
        .wait_until(
            "window.player && window.player.ready",
            WITHIN,
            "the player reloads",
        )
        .await;
    assert_eq!(
        browser.js("return window.player.resumedFrom;").await,
        stopped
    );
    let at = browser
        .js("return Math.floor(document.getElementById('video').currentTime);")
        .await;
    assert_eq!(at, stopped, "the video starts at the stored position");
}

#[tokio::test]
async fn events_of_a_closed_tab_arrive() {
    let server = Server::start(&[]).await;
    let browser = Browser::start().await;
    let first = browser.current_tab().await;
    browser.new_tab().await;
    let user = new_user();
    open_player(&browser, &server, &user, &film()).await;
    browser
        .js("for (let i = 0; i < 5; i++) ugc.track({type: 'custom', name: 'closed_tab', data: {i}}); return ugc.pending();")
        .await;
    // Well before the 5 s flush: only the way out can carry them.
    browser.close_tab().await;
    browser.switch_to(&first).await;
    server
        .wait_for(
            &format!("SELECT count() AS n, uniqExact(event_id) AS ids FROM ugc.events WHERE user_id = '{user}' AND name = 'closed_tab'"),
            json!(5),
            Duration::from_secs(10),
        )
        .await;
    let rows = server
        .sql(&format!(
            "SELECT uniqExact(event_id) AS ids FROM ugc.events WHERE user_id = '{user}'"
        ))
        .await;
    assert_eq!(rows[0]["ids"], 5);
}

#[tokio::test]
async fn events_tracked_offline_arrive_once_after_a_reload() {
    let server = Server::start(&[]).await;
    let browser = Browser::start().await;
    let user = new_user();
    open_player(&browser, &server, &user, &film()).await;
    browser.cdp("Network.enable", json!({})).await;
    let offline = |on: bool| json!({"offline": on, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1});
    browser
        .cdp("Network.emulateNetworkConditions", offline(true))
        .await;
    browser
        .js("for (let i = 0; i < 50; i++) ugc.track({type: 'custom', name: 'offline', data: {i}}); return true;")
        .await;
    let r = browser.js_await("ugc.flush()").await;
    assert_eq!(r["pending"], 50, "nothing can leave offline: {r}");
    let stored = browser
        .js("return Object.keys(localStorage).filter(k => k.startsWith('ugc.q.')).map(k => JSON.parse(localStorage.getItem(k)).length);")
        .await;
    assert_eq!(stored, json!([50]), "the queue is in localStorage");
    browser
        .cdp("Network.emulateNetworkConditions", offline(false))
        .await;
    browser.js("location.reload(); return true;").await;
    server
        .wait_for(
            &format!(
                "SELECT count() AS n FROM ugc.events WHERE user_id = '{user}' AND name = 'offline'"
            ),
            json!(50),
            WITHIN,
        )
        .await;
    browser
        .wait_until(
            "window.player && window.player.ready && ugc.pending() === 0",
            WITHIN,
            "the new page empties the queue",
        )
        .await;
    let rows = server
        .sql(&format!(
            "SELECT count() AS n, uniqExact(event_id) AS ids, uniqExact(data) AS payloads FROM ugc.events \
             WHERE user_id = '{user}' AND name = 'offline'"
        ))
        .await;
    assert_eq!(rows[0], json!({"n": 50, "ids": 50, "payloads": 50}));
}

/// The server refuses for a while (the per-user rate limit: 429 with Retry-After), then
/// takes everything: nothing lost, nothing doubled.
#[tokio::test]
async fn an_overloaded_server_loses_and_doubles_nothing() {
    let server = Server::start(&["--rate-limit-per-user", "20", "--rate-limit-burst", "20"]).await;
    let browser = Browser::start().await;
    let user = new_user();
    open_player(&browser, &server, &user, &film()).await;
    browser
        .js("for (let i = 0; i < 100; i++) ugc.track({type: 'custom', name: 'overload', data: {i}}); return true;")
        .await;
    let deadline = std::time::Instant::now() + WITHIN;
    while browser.js("return ugc.pending();").await != 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the queue does not empty: {} {}",
            browser.js("return ugc.stats();").await,
            browser.js("return window.player.errors;").await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server
        .wait_for(
            &format!(
                "SELECT count() AS n FROM ugc.events WHERE user_id = '{user}' AND name = 'overload'"
            ),
            json!(100),
            WITHIN,
        )
        .await;
    browser
        .wait_until("ugc.pending() === 0", WITHIN, "the queue empties")
        .await;
    let stats = browser.js("return ugc.stats();").await;
    assert!(
        stats["retries"].as_u64().unwrap() >= 1,
        "the server did refuse: {stats}"
    );
    assert_eq!(stats["sent"], 100, "{stats}");
    let rows = server
        .sql(&format!(
            "SELECT count() AS n, uniqExact(data) AS payloads FROM ugc.events WHERE user_id = '{user}' AND name = 'overload'"
        ))
        .await;
    assert_eq!(rows[0], json!({"n": 100, "payloads": 100}));
}

/// The server answers 503 + Retry-After for a while, for a real cause: its log queue
/// (one waiting append at most) is kept full by another client's flood of batches. The
/// SDK keeps its events and retries; once the flood stops, everything arrives: nothing
/// lost, nothing doubled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_answering_503_loses_and_doubles_nothing() {
    let server = Server::start(&["--log-queue", "1"]).await;
    let browser = Browser::start().await;
    let user = new_user();
    open_player(&browser, &server, &user, &film()).await;

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flooder = server.token(&new_user(), &[]);
    let url = format!("{}/api/v1/events/batch", server.base);
    let batch = json!(
        (0..50)
            .map(|i| json!({"type": "custom", "name": "flood", "data": {"i": i}}))
            .collect::<Vec<_>>()
    );
    let flood: Vec<_> = (0..24)
        .map(|_| {
            let (http, url, token, body, stop) = (
                server.http.clone(),
                url.clone(),
                flooder.clone(),
                batch.clone(),
                stop.clone(),
            );
            tokio::spawn(async move {
                let mut refused = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let r = http.post(&url).bearer_auth(&token).json(&body).send().await;
                    if r.is_ok_and(|r| r.status() == 503) {
                        refused += 1;
                    }
                }
                refused
            })
        })
        .collect();

    browser
        .js("for (let i = 0; i < 100; i++) ugc.track({type: 'custom', name: 'overload', data: {i}}); ugc.flush(); return true;")
        .await;
    // The SDK meets the 503 (reported to the page's onError as a retry).
    browser
        .wait_until(
            "window.player.errors.some(e => e.kind === 'retrying' && /503/.test(e.message))",
            WITHIN,
            "the SDK is answered 503 while the log queue is full",
        )
        .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut refused = 0;
    for f in flood {
        refused += f.await.unwrap();
    }
    assert!(refused > 0, "the flood itself met 503s");

    browser
        .wait_until(
            "ugc.pending() === 0",
            WITHIN,
            "the queue empties once the server recovers",
        )
        .await;
    let stats = browser.js("return ugc.stats();").await;
    assert_eq!(stats["sent"], 100, "{stats}");
    assert_eq!(stats["rejected"], 0, "{stats}");
    server
        .wait_for(
            &format!(
                "SELECT count() AS n FROM ugc.events WHERE user_id = '{user}' AND name = 'overload'"
            ),
            json!(100),
            WITHIN,
        )
        .await;
    let rows = server
        .sql(&format!(
            "SELECT count() AS n, uniqExact(event_id) AS ids, uniqExact(data) AS payloads FROM ugc.events \
             WHERE user_id = '{user}' AND name = 'overload'"
        ))
        .await;
    assert_eq!(rows[0], json!({"n": 100, "ids": 100, "payloads": 100}));
}

/// An item the server rejects is reported to onError and dropped, never retried.
#[tokio::test]
async fn rejected_items_are_reported_and_dropped() {
    let server = Server::start(&[]).await;
    let browser = Browser::start().await;
    let user = new_user();
    open_player(&browser, &server, &user, &film()).await;
    browser
        .js("ugc.track({type: 'custom', name: 'fine'}); ugc.track({type: 'custom', name: 'not ok!'}); return true;")
        .await;
    let r = browser.js_await("ugc.flush()").await;
    assert_eq!(r["pending"], 0, "{r}");
    let errors = browser
        .js("return window.player.errors.filter(e => e.kind === 'rejected').map(e => [e.field, e.event.name]);")
        .await;
    assert_eq!(errors, json!([["name", "not ok!"]]));
    server
        .wait_for(
            &format!(
                "SELECT count() AS n FROM ugc.events WHERE user_id = '{user}' AND name = 'fine'"
            ),
            json!(1),
            WITHIN,
        )
        .await;
}

/// The SDK's own unit tests, in the same browser.
#[tokio::test]
async fn the_sdk_unit_tests_pass_in_the_browser() {
    let server = Server::start(&[]).await;
    let browser = Browser::start().await;
    browser
        .goto(&format!("{}/sdk/test.html", server.base))
        .await;
    let results = browser
        .wait_until(
            "window.ugcTestResults && window.ugcTestResults.done && window.ugcTestResults",
            WITHIN,
            "the SDK tests finish",
        )
        .await;
    assert_eq!(results["failed"], json!([]), "{results}");
    assert_eq!(results["passed"], 7, "{results}");
}

/// A page of the cinema's site on another origin may send only when UGC_CORS_ORIGINS
/// lists it; otherwise the browser blocks the request (the preflight fails).
#[tokio::test]
async fn another_origin_sends_only_when_listed() {
    let site = Server::start(&[]).await;
    let open = Server::start(&["--cors-origins", &site.base]).await;
    let closed = Server::start(&[]).await;
    let browser = Browser::start().await;
    browser.goto(&format!("{}/sdk/test.html", site.base)).await;
    // The page's own tests use the client first; then it is ours.
    browser
        .wait_until(
            "window.ugcTestResults && window.ugcTestResults.done",
            WITHIN,
            "the page settles",
        )
        .await;
    let user = new_user();
    for (api, name, want_pending) in [(&open, "cors_open", 0), (&closed, "cors_closed", 1)] {
        let token = api.token(&user, &[]);
        let r = browser
            .js_await(&format!(
                "import('/sdk/ugc.js').then(async ({{default: ugc}}) => {{ \
                   ugc.init({{endpoint: '{}', token: '{token}', flushIntervalMs: 60000}}); \
                   ugc.track({{type: 'custom', name: '{name}'}}); return ugc.flush(); }})",
                api.base
            ))
            .await;
        assert_eq!(r["pending"], want_pending, "{name}: {r}");
    }
    open.wait_for(
        &format!("SELECT count() AS n FROM ugc.events WHERE user_id = '{user}'"),
        json!(1),
        WITHIN,
    )
    .await;
    assert_eq!(
        closed
            .sql(&format!(
                "SELECT count() AS n FROM ugc.events WHERE user_id = '{user}'"
            ))
            .await[0]["n"],
        0
    );
}

/// `ugc token --player` prints a link a person can open: the player of that film, with
/// a token for the user that the server accepts.
#[tokio::test]
async fn the_token_command_prints_a_player_link() {
    let server = Server::start(&[]).await;
    let (user, film) = (new_user(), film());
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ugc"))
        .args([
            "--jwt-secret",
            common::SECRET,
            "--listen",
            "0.0.0.0:8000",
            "--data-dir",
        ])
        .arg(dir.path())
        .args(["token", "--user", &user, "--player", &film])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let link = String::from_utf8(out.stdout).unwrap();
    let prefix = format!("http://127.0.0.1:8000/player/{film}#token=");
    let token = link
        .trim()
        .strip_prefix(&prefix)
        .unwrap_or_else(|| panic!("{link:?} does not start with {prefix}"));
    let (status, body) = server
        .get(&format!("/api/v1/films/{film}/progress"), token)
        .await;
    assert_eq!(status, 404, "the link's token is the user's: {body}");
}

/// The beacon route takes the token from its text/plain body and names what is wrong;
/// a cookie alone is not enough there.
#[tokio::test]
async fn the_beacon_route_takes_the_token_in_the_body_and_names_what_is_wrong() {
    let server = Server::start(&[]).await;
    let user = new_user();
    let token = server.token(&user, &[]);
    let beacon = |body: String, content_type: &'static str| {
        let req = server
            .http
            .post(format!("{}/api/v1/events/beacon", server.base))
            .header("content-type", content_type)
            .header("cookie", format!("access_token={token}"))
            .body(body);
        async move { common::read(req.send().await.unwrap()).await }
    };
    let event = json!({"type": "custom", "name": "beacon"});
    let (status, body) = beacon(
        json!({"token": token, "events": [event]}).to_string(),
        "text/plain;charset=UTF-8",
    )
    .await;
    assert_eq!(
        (status, body["accepted"].clone()),
        (202, json!(1)),
        "{body}"
    );
    let (status, body) = beacon(json!({"events": [event]}).to_string(), "text/plain").await;
    assert_eq!(status, 401, "the cookie is not read here: {body}");
    let (status, body) = beacon(
        json!({"token": "not-a-jwt", "events": [event]}).to_string(),
        "text/plain",
    )
    .await;
    assert_eq!(status, 401, "{body}");
    for (bad, field) in [
        (json!({"token": 5, "events": [event]}), "token"),
        (json!({"token": token}), "events"),
        (
            json!({"token": token, "events": [event], "extra": 1}),
            "extra",
        ),
    ] {
        let (status, body) = beacon(bad.to_string(), "text/plain").await;
        assert_eq!(
            (status, body["errors"][0]["field"].clone()),
            (422, json!(field)),
            "{body}"
        );
    }
    let (status, _) = beacon("{".into(), "text/plain").await;
    assert_eq!(status, 400);
    let (status, _) = beacon(
        json!({"token": token, "events": [event]}).to_string(),
        "text/html",
    )
    .await;
    assert_eq!(status, 415);
    server
        .wait_for(
            &format!("SELECT count() AS n FROM ugc.events WHERE user_id = '{user}'"),
            json!(1),
            WITHIN,
        )
        .await;
}

/// Films from UGC_MEDIA_DIR are listed by the player and served with Range requests;
/// a film with no files plays the built-in sample.
#[tokio::test]
async fn the_media_dir_feeds_the_player_and_serves_ranges() {
    let media = tempfile::tempdir().unwrap();
    let film = film();
    let sample = include_bytes!("../../edge/assets/sample-240.webm");
    std::fs::create_dir_all(media.path().join(&film)).unwrap();
    std::fs::write(media.path().join(&film).join("480.webm"), sample).unwrap();
    std::fs::write(media.path().join(&film).join("1080.mp4"), sample).unwrap();
    let dir = media.path().display().to_string();
    let server = Server::start(&["--media-dir", &dir]).await;
    let get = |path: String, range: Option<&'static str>| {
        let mut req = server.http.get(format!("{}{path}", server.base));
        if let Some(r) = range {
            req = req.header("range", r);
        }
        async move { req.send().await.unwrap() }
    };
    let page = get(format!("/player/{film}"), None)
        .await
        .text()
        .await
        .unwrap();
    let renditions = format!(
        "\"renditions\":[{{\"label\":\"480p\",\"height\":480,\"src\":\"/media/{film}/480.webm\"}},{{\"label\":\"1080p\",\"height\":1080,\"src\":\"/media/{film}/1080.mp4\"}}],\"sample\":false"
    );
    assert!(page.contains(&renditions), "{page}");
    for path in [
        format!("/media/{film}/480.webm"),
        "/media/sample/240.webm".into(),
    ] {
        let res = get(path.clone(), Some("bytes=10-19")).await;
        assert_eq!(res.status(), 206, "{path}");
        assert_eq!(
            res.headers()["content-range"],
            format!("bytes 10-19/{}", sample.len()).as_str(),
            "{path}"
        );
        assert_eq!(&res.bytes().await.unwrap()[..], &sample[10..20], "{path}");
    }
    let other = uuid::Uuid::new_v4();
    let page = get(format!("/player/{other}"), None)
        .await
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("\"src\":\"/media/sample/360.webm\"}],\"sample\":true"),
        "{page}"
    );
    let res = get("/player/not-a-film".into(), None).await;
    assert_eq!(res.status(), 422);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["errors"][0]["field"], "film_id", "{body}");
    assert_eq!(
        get(format!("/media/{film}/720.webm"), None).await.status(),
        404
    );
}
