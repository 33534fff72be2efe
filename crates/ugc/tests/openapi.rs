//! The OpenAPI document, from outside: it is a valid OpenAPI 3.1 document (the OpenAPI
//! Initiative's own JSON Schema of 3.1 documents, `fixtures/openapi-3.1-schema.json`),
//! every declared parameter matches its route (path parameters are the route's
//! `{placeholders}`, no more and no fewer; optional query parameters are not required),
//! and every documented route answers.

mod common;

use std::collections::BTreeSet;

use common::Server;
use serde_json::Value;

async fn document(server: &Server) -> Value {
    server
        .http
        .get(format!("{}/openapi.json", server.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn the_document_is_valid_openapi_3_1() {
    let server = Server::start(&[]).await;
    let doc = document(&server).await;
    let schema: Value = serde_json::from_str(include_str!("fixtures/openapi-3.1-schema.json"))
        .expect("the OpenAPI 3.1 schema parses");
    let validator = jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        // Formats too (`uri`, `uri-reference`, ...): 2020-12 only annotates them by default.
        .should_validate_formats(true)
        .build(&schema)
        .expect("the OpenAPI 3.1 schema compiles");
    let errors: Vec<String> = validator
        .iter_errors(&doc)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "/openapi.json is not a valid OpenAPI 3.1 document:\n{}",
        errors.join("\n")
    );
    // The schema cannot see that every `$ref` points somewhere: check that here.
    let text = doc.to_string();
    let mut missing = BTreeSet::new();
    for r in text.split("\"$ref\":\"").skip(1) {
        let target = &r[..r.find('"').unwrap()];
        let pointer = target.strip_prefix('#').expect("refs are local");
        if doc.pointer(pointer).is_none() {
            missing.insert(target.to_owned());
        }
    }
    assert!(missing.is_empty(), "dangling $ref: {missing:?}");
}

#[tokio::test]
async fn every_declared_parameter_matches_its_route() {
    let server = Server::start(&[]).await;
    let doc = document(&server).await;
    assert!(
        doc["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1")),
        "{}",
        doc["openapi"]
    );
    let paths = doc["paths"].as_object().expect("paths");
    assert!(paths.len() >= 10, "{} paths", paths.len());
    let mut operations = BTreeSet::new();
    for (path, item) in paths {
        let placeholders: BTreeSet<String> = path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}'))
            .map(str::to_owned)
            .collect();
        for (method, op) in item.as_object().unwrap() {
            let id = op["operationId"].as_str().unwrap_or_default();
            assert!(operations.insert(id.to_owned()), "operationId {id} twice");
            let params = op["parameters"].as_array().cloned().unwrap_or_default();
            let declared: BTreeSet<String> = params
                .iter()
                .filter(|p| p["in"] == "path")
                .map(|p| p["name"].as_str().unwrap().to_owned())
                .collect();
            assert_eq!(
                declared, placeholders,
                "{method} {path}: path parameters vs the route's placeholders"
            );
            for p in &params {
                if p["in"] == "path" {
                    assert_eq!(p["required"], true, "{method} {path}: {p}");
                }
                assert!(
                    ["path", "query", "header", "cookie"].contains(&p["in"].as_str().unwrap()),
                    "{method} {path}: {p}"
                );
            }
            assert!(
                op["responses"].as_object().is_some_and(|r| !r.is_empty()),
                "{method} {path}"
            );
        }
    }
    // The one that was wrong: continue watching's paging is optional query parameters.
    let params = paths["/api/v1/progress"]["get"]["parameters"]
        .as_array()
        .unwrap();
    for name in ["limit", "offset"] {
        let p = params.iter().find(|p| p["name"] == name).unwrap();
        assert_eq!(
            (p["in"].as_str(), p["required"].as_bool()),
            (Some("query"), Some(false))
        );
    }
}

/// The interactive docs render in a real browser with no network but the server's:
/// Swagger UI's files come from the binary, not a CDN.
#[tokio::test]
async fn the_docs_page_lists_the_operations_in_a_real_browser() {
    let server = Server::start(&[]).await;
    let browser = std::env::var("UGC_CHROMIUM").unwrap_or_else(|_| "chromium".into());
    let profile = tempfile::tempdir().unwrap();
    let out = tokio::process::Command::new(&browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--virtual-time-budget=10000",
            // Nothing but the server: a page that needs the internet stays blank.
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("--dump-dom")
        .arg(format!("{}/docs/", server.base))
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(std::time::Duration::from_secs(90), out)
        .await
        .expect("the browser did not finish within 90 s")
        .unwrap_or_else(|e| panic!("cannot run {browser} (scripts/test installs chromium): {e}"));
    let dom = String::from_utf8_lossy(&out.stdout);
    for path in [
        "/api/v1/events",
        "/api/v1/query",
        "/api/v1/users/{user_id}/data",
    ] {
        assert!(
            dom.contains(&format!("data-path=\"{path}\"")),
            "{path} is not listed on /docs: {}",
            &dom[..dom.len().min(2000)]
        );
    }
}
