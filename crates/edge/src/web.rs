//! What a browser loads from ugc: the `ugc.js` SDK (and its in-browser unit tests), the
//! player page, and the media it plays. Everything here is built into the binary except
//! the films under `UGC_MEDIA_DIR`, so a page never fetches anything from elsewhere.

use std::path::{Path, PathBuf};

use axum::body::Body;
use axum::extract::{Path as UrlPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tower_http::services::ServeDir;
use ugc_model::{FieldError, FilmId};

use crate::error::ApiError;
use crate::state::AppState;

const UGC_JS: &str = include_str!("../assets/ugc.js");
const SDK_TEST_HTML: &str = include_str!("../assets/sdk-test.html");
const SDK_TEST_JS: &str = include_str!("../assets/ugc.test.js");
const PLAYER_HTML: &str = include_str!("../assets/player.html");
const DASHBOARD_HTML: &str = include_str!("../assets/dashboard.html");
/// Chart.js (MIT), the UMD build from its npm package as published, license beside it;
/// `scripts/vendor-chartjs` replaces both with another version.
const CHART_JS: &str = include_str!("../assets/vendor/chart.js/chart.umd.min.js");
const SAMPLE: &[(&str, u32, &[u8])] = &[
    ("240.webm", 240, include_bytes!("../assets/sample-240.webm")),
    ("360.webm", 360, include_bytes!("../assets/sample-360.webm")),
];

fn text(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            // Revalidated on each load, so a new binary's SDK is picked up at once.
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

pub async fn sdk() -> Response {
    text("text/javascript; charset=utf-8", UGC_JS)
}

pub async fn sdk_test_page() -> Response {
    text("text/html; charset=utf-8", SDK_TEST_HTML)
}

pub async fn sdk_test_js() -> Response {
    text("text/javascript; charset=utf-8", SDK_TEST_JS)
}

/// The analysts' dashboard: charts of the analytics routes. The page holds no data; its
/// script asks the API with the analyst's token (`#token=` or the `access_token` cookie).
pub async fn dashboard() -> Response {
    text("text/html; charset=utf-8", DASHBOARD_HTML)
}

pub async fn chart_js() -> Response {
    text("text/javascript; charset=utf-8", CHART_JS)
}

/// One playable version of a film, as the player's quality menu lists it.
#[derive(Serialize, Debug, PartialEq)]
pub struct Rendition {
    pub label: String,
    pub height: u32,
    pub src: String,
}

/// The renditions of a film in `dir` (`<film_id>/<height>.mp4` or `.webm`), lowest first.
pub fn renditions_in(dir: &Path, film: &FilmId) -> Vec<Rendition> {
    let mut out: Vec<Rendition> = std::fs::read_dir(dir.join(film.to_string()))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let (height, ext) = name.split_once('.')?;
            let height: u32 = height.parse().ok()?;
            matches!(ext, "mp4" | "webm").then(|| Rendition {
                label: format!("{height}p"),
                height,
                src: format!("/media/{film}/{name}"),
            })
        })
        .collect();
    out.sort_by_key(|r| r.height);
    // Two files of one height (mp4 and webm): the player needs one.
    out.dedup_by_key(|r| r.height);
    out
}

fn sample_renditions() -> Vec<Rendition> {
    SAMPLE
        .iter()
        .map(|(name, height, _)| Rendition {
            label: format!("{height}p"),
            height: *height,
            src: format!("/media/sample/{name}"),
        })
        .collect()
}

/// The player page of a film. Its film, renditions and sample flag are put into the
/// page as JSON; the page's script does the rest.
pub async fn player(
    State(state): State<AppState>,
    UrlPath(film_id): UrlPath<String>,
) -> Result<Response, ApiError> {
    let film: FilmId = serde_json::from_value(serde_json::Value::String(film_id))
        .map_err(|e| ApiError::Validation(vec![FieldError::new("film_id", e.to_string())]))?;
    let mut renditions = state
        .config()
        .media_dir
        .as_deref()
        .map(|dir| renditions_in(dir, &film))
        .unwrap_or_default();
    let sample = renditions.is_empty();
    if sample {
        renditions = sample_renditions();
    }
    let config = serde_json::json!({ "film_id": film, "renditions": renditions, "sample": sample });
    // `</` cannot close the script element the JSON sits in.
    let config = config.to_string().replace("</", "<\\/");
    let html = PLAYER_HTML.replace("{{CONFIG}}", &config);
    Ok((
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        html,
    )
        .into_response())
}

/// `/media/sample/<file>` from the binary; anything else from `UGC_MEDIA_DIR`.
pub async fn media(
    State(state): State<AppState>,
    UrlPath(path): UrlPath<String>,
    req: Request,
) -> Result<Response, ApiError> {
    if let Some(name) = path.strip_prefix("sample/") {
        let (_, _, bytes) = SAMPLE
            .iter()
            .find(|(n, _, _)| *n == name)
            .ok_or_else(|| ApiError::NotFound(format!("no sample file {name}")))?;
        return Ok(ranged(req.headers(), bytes, "video/webm"));
    }
    let Some(dir) = state.config().media_dir.clone() else {
        return Err(ApiError::NotFound(
            "no media directory is configured".into(),
        ));
    };
    serve_file(dir, &path, req).await
}

async fn serve_file(dir: PathBuf, path: &str, req: Request) -> Result<Response, ApiError> {
    let (mut parts, body) = req.into_parts();
    // ServeDir resolves the request path against the directory (refusing `..`).
    parts.uri = format!("/{path}")
        .parse()
        .map_err(|_| ApiError::NotFound(format!("no media file {path}")))?;
    let res = ServeDir::new(dir)
        .try_call(Request::from_parts(parts, body))
        .await
        .map_err(|e| ApiError::Internal(format!("media: {e}")))?;
    if res.status() == StatusCode::NOT_FOUND {
        return Err(ApiError::NotFound(format!("no media file {path}")));
    }
    Ok(res.map(Body::new))
}

/// The bytes, or the one range asked for (`bytes=a-b`, `a-`, `-n`): media elements seek
/// with range requests. A malformed or multi-range header gets the whole file, as RFC
/// 9110 allows; an unsatisfiable one a 416.
fn ranged(headers: &HeaderMap, bytes: &'static [u8], content_type: &'static str) -> Response {
    let len = bytes.len() as u64;
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("bytes="))
        .filter(|v| !v.contains(','))
        .and_then(|v| v.split_once('-'))
        .and_then(|(a, b)| match (a.trim(), b.trim()) {
            ("", n) => n.parse::<u64>().ok().map(|n| (len.saturating_sub(n), len)),
            (a, "") => a.parse::<u64>().ok().map(|a| (a, len)),
            (a, b) => Some((
                a.parse().ok()?,
                b.parse::<u64>().ok()?.saturating_add(1).min(len),
            )),
        });
    let common = [
        (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
        (header::ACCEPT_RANGES, HeaderValue::from_static("bytes")),
        // Built in: the same URL always has the same bytes for one binary.
        (
            header::CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=3600"),
        ),
    ];
    match range {
        None => (common, bytes).into_response(),
        Some((start, end)) if start < end => {
            let content_range = format!("bytes {start}-{}/{len}", end - 1);
            (
                StatusCode::PARTIAL_CONTENT,
                common,
                [(header::CONTENT_RANGE, content_range)],
                &bytes[start as usize..end as usize],
            )
                .into_response()
        }
        Some(_) => (
            StatusCode::RANGE_NOT_SATISFIABLE,
            [(header::CONTENT_RANGE, format!("bytes */{len}"))],
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(h: &str) -> (StatusCode, Option<String>) {
        let mut headers = HeaderMap::new();
        headers.insert(header::RANGE, h.parse().unwrap());
        let res = ranged(&headers, b"0123456789", "video/webm");
        let cr = res
            .headers()
            .get(header::CONTENT_RANGE)
            .map(|v| v.to_str().unwrap().to_owned());
        (res.status(), cr)
    }

    #[test]
    fn single_ranges_are_served_and_others_fall_back_or_fail() {
        assert_eq!(
            range("bytes=2-4"),
            (StatusCode::PARTIAL_CONTENT, Some("bytes 2-4/10".into()))
        );
        assert_eq!(
            range("bytes=7-"),
            (StatusCode::PARTIAL_CONTENT, Some("bytes 7-9/10".into()))
        );
        assert_eq!(
            range("bytes=-3"),
            (StatusCode::PARTIAL_CONTENT, Some("bytes 7-9/10".into()))
        );
        assert_eq!(
            range("bytes=5-100"),
            (StatusCode::PARTIAL_CONTENT, Some("bytes 5-9/10".into()))
        );
        assert_eq!(range("bytes=0-1,4-5"), (StatusCode::OK, None));
        assert_eq!(
            range("bytes=20-"),
            (StatusCode::RANGE_NOT_SATISFIABLE, Some("bytes */10".into()))
        );
    }

    #[test]
    fn renditions_come_from_the_films_folder_lowest_first() {
        let dir = std::env::temp_dir().join(format!("ugc-media-{}", std::process::id()));
        let film: FilmId =
            serde_json::from_str("\"1ec4cd73-2fd5-4f25-af68-b6595d279af2\"").unwrap();
        let folder = dir.join(film.to_string());
        std::fs::create_dir_all(&folder).unwrap();
        for f in ["720.mp4", "360.webm", "360.mp4", "poster.jpg", "x.webm"] {
            std::fs::write(folder.join(f), b"").unwrap();
        }
        let got: Vec<String> = renditions_in(&dir, &film)
            .into_iter()
            .map(|r| r.label)
            .collect();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(got, ["360p", "720p"]);
    }
}
