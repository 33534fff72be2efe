//! A real headless Chromium driven over WebDriver (`chromedriver`, Debian's
//! chromium-driver). The protocol is plain HTTP + JSON, so this speaks it with the
//! reqwest client the tests already have rather than pulling in a WebDriver crate.
//! A missing browser or driver fails the test loudly.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};
use ugc_testkit::free_port;

pub struct Browser {
    http: reqwest::Client,
    /// `http://127.0.0.1:<port>/session/<id>`
    session: String,
    driver: Child,
    _profile: tempfile::TempDir,
}

fn find(program: &str) -> String {
    if program.contains('/') {
        return program.to_owned();
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(program))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("{program} is not installed: scripts/test installs chromium and chromium-driver")
        })
        .display()
        .to_string()
}

impl Browser {
    /// Chromium with no network but 127.0.0.1 (anything else fails to resolve), and
    /// media allowed to play without a gesture.
    pub async fn start() -> Browser {
        let chromium = find(&std::env::var("UGC_CHROMIUM").unwrap_or_else(|_| "chromium".into()));
        let driver_bin =
            find(&std::env::var("UGC_CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".into()));
        let port = free_port();
        let driver = {
            use std::os::unix::process::CommandExt;
            Command::new(&driver_bin)
                .arg(format!("--port={port}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                // Its own process group, so Drop can end the driver and the browser it started.
                .process_group(0)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {driver_bin}: {e}"))
        };
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = http.get(format!("{base}/status")).send().await;
            if let Ok(r) = ready {
                let v: Value = r.json().await.unwrap_or_default();
                if v["value"]["ready"] == true {
                    break;
                }
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver did not start within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let profile = tempfile::tempdir().unwrap();
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--mute-audio",
                    "--window-size=1280,860",
                    "--autoplay-policy=no-user-gesture-required",
                    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost",
                    format!("--user-data-dir={}", profile.path().display()),
                ]
            }
        }}});
        let res: Value = http
            .post(format!("{base}/session"))
            .json(&caps)
            .send()
            .await
            .expect("chromedriver answers")
            .json()
            .await
            .unwrap();
        let id = res["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {res}"))
            .to_owned();
        Browser {
            http,
            session: format!("{base}/session/{id}"),
            driver,
            _profile: profile,
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut req = self
            .http
            .request(method.clone(), format!("{}{path}", self.session));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res: Value = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}"))
            .json()
            .await
            .unwrap_or_default();
        if let Some(err) = res["value"]["error"].as_str() {
            panic!(
                "WebDriver {method} {path}: {err}: {}",
                res["value"]["message"]
            );
        }
        res["value"].clone()
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    pub async fn goto(&self, url: &str) {
        self.post("/url", json!({ "url": url })).await;
    }

    /// Runs `body` (a function body: `return …`) in the page.
    pub async fn js(&self, body: &str) -> Value {
        self.post("/execute/sync", json!({ "script": body, "args": [] }))
            .await
    }

    /// Runs `expr`, a promise, in the page and returns what it resolves to.
    pub async fn js_await(&self, expr: &str) -> Value {
        let script = format!(
            "const done = arguments[arguments.length - 1]; Promise.resolve().then(() => {expr}).then(done, (e) => done({{error: String(e)}}));"
        );
        self.post("/timeouts", json!({ "script": 60_000 })).await;
        self.post("/execute/async", json!({ "script": script, "args": [] }))
            .await
    }

    /// Polls `expr` in the page until it is truthy; fails with `what` at the deadline.
    pub async fn wait_until(&self, expr: &str, within: Duration, what: &str) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let v = self.js(&format!("return {expr};")).await;
            if !(v.is_null() || v == false || v == 0 || v == "") {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: `{expr}` not true within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn element(&self, css: &str) -> String {
        let v = self
            .post("/element", json!({ "using": "css selector", "value": css }))
            .await;
        v.as_object()
            .and_then(|o| o.values().next())
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("no element {css}"))
            .to_owned()
    }

    /// A real click, as a viewer's (a user gesture for the page).
    pub async fn click(&self, css: &str) {
        let id = self.element(css).await;
        self.post(&format!("/element/{id}/click"), json!({})).await;
    }

    /// A Chrome DevTools command on the current page (network emulation and the like).
    pub async fn cdp(&self, cmd: &str, params: Value) -> Value {
        self.post("/goog/cdp/execute", json!({ "cmd": cmd, "params": params }))
            .await
    }

    pub async fn screenshot_png(&self) -> Vec<u8> {
        let b64 = self.call(reqwest::Method::GET, "/screenshot", None).await;
        base64::engine::general_purpose::STANDARD
            .decode(b64.as_str().unwrap_or_default())
            .expect("a base64 screenshot")
    }

    /// Opens a new tab and makes it current; returns its handle.
    pub async fn new_tab(&self) -> String {
        let v = self.post("/window/new", json!({ "type": "tab" })).await;
        let handle = v["handle"].as_str().unwrap().to_owned();
        self.switch_to(&handle).await;
        handle
    }

    pub async fn switch_to(&self, handle: &str) {
        self.post("/window", json!({ "handle": handle })).await;
    }

    pub async fn current_tab(&self) -> String {
        self.call(reqwest::Method::GET, "/window", None)
            .await
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// Closes the current tab, as a viewer closing it: the page gets its pagehide.
    pub async fn close_tab(&self) {
        self.call(reqwest::Method::DELETE, "/window", None).await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The driver's process group holds the browser too: end them together.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.driver.id())])
            .status();
        let _ = self.driver.wait();
    }
}
