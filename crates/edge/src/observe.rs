//! What an operator sees of each request: its id, an access log line, and metrics.
//!
//! - The id comes from `X-Request-Id` when the client (or a proxy such as nginx) sent a
//!   sane one, else a new UUIDv7; it is echoed in the answer, carried by every log line
//!   of the request (a tracing span), and stored in the context of the events the
//!   request appends (`context.request_id`). tower-http's request-id layers set and
//!   echo an id but take any header value as it is; here an id must be a short token,
//!   since it ends up in logs and in the store.
//! - Requests are counted by route template, method and status class, and timed by
//!   route. The route is the template axum matched, never the raw path, so ids in
//!   paths cannot blow up the number of series.

use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

pub const REQUEST_ID: &str = "x-request-id";

tokio::task_local! {
    static CURRENT: String;
}

/// The id of the request being served, if any (read by `enrich`).
pub fn request_id() -> Option<String> {
    CURRENT.try_with(Clone::clone).ok()
}

/// 1–128 characters of letters, digits and `-_.:`: what request ids are in practice
/// (UUIDs, nginx's `$request_id` hex), and safe in a log line or a store column.
fn sane(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// The caller as log lines name it: the first 16 hex digits of the SHA-256 of the user
/// id. Lines of one user can be tied together, but neither the id nor the token is in
/// the log.
pub fn user_hash(user: &str) -> String {
    use sha2::{Digest, Sha256};
    use std::fmt::Write;
    let mut hash = String::with_capacity(16);
    for b in &Sha256::digest(user.as_bytes())[..8] {
        let _ = write!(hash, "{b:02x}");
    }
    hash
}

/// Names the verified caller on the request's span (`user`), so every line of the
/// request from here on carries it, the access line included.
pub fn record_user(user: &str) {
    tracing::Span::current().record("user", user_hash(user));
}

/// Whether one line per request goes to the log (target `ugc::access`).
#[derive(Clone, Copy, Debug)]
pub struct AccessLog(pub bool);

pub async fn observe(
    axum::extract::State(access_log): axum::extract::State<AccessLog>,
    mut req: Request,
    next: Next,
) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = req.method().as_str().to_owned();
    let id = req
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| sane(v))
        .map_or_else(|| uuid::Uuid::now_v7().to_string(), str::to_owned);
    if let Ok(v) = HeaderValue::from_str(&id) {
        req.headers_mut().insert(REQUEST_ID, v);
    }
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        route = %route,
        method = %method,
        user = tracing::field::Empty
    );
    let started = Instant::now();
    let mut response = CURRENT
        .scope(id.clone(), next.run(req))
        .instrument(span.clone())
        .await;
    let elapsed = started.elapsed();
    if let Ok(v) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID, v);
    }
    let status = response.status().as_u16();
    let class = match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    };
    metrics::histogram!("ugc_http_request_duration_seconds", "route" => route.clone())
        .record(elapsed.as_secs_f64());
    metrics::counter!(
        "ugc_http_requests_total",
        "route" => route,
        "method" => method,
        "status" => class
    )
    .increment(1);
    if access_log.0 {
        let _in = span.enter();
        tracing::info!(
            target: "ugc::access",
            status,
            latency_ms = elapsed.as_secs_f64() * 1000.0,
            "request served"
        );
    }
    response
}

#[cfg(test)]
mod tests {
    use super::sane;

    #[test]
    fn a_user_is_logged_as_a_short_hash() {
        let id = "0190c7e2-6b5f-7cc3-9f0e-2f3b7c1d9a10";
        let h = super::user_hash(id);
        assert_eq!(h.len(), 16);
        assert!(h.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(
            h,
            super::user_hash(id),
            "stable, so lines can be tied together"
        );
        assert_ne!(h, super::user_hash("0190c7e2-6b5f-7cc3-9f0e-2f3b7c1d9a11"));
    }

    #[test]
    fn only_short_plain_ids_are_taken_from_clients() {
        assert!(sane("0190c7e2-6b5f-7cc3-9f0e-2f3b7c1d9a10"));
        assert!(sane("a1b2c3d4e5f6"));
        assert!(!sane(""));
        assert!(!sane(&"x".repeat(129)));
        assert!(!sane("id with spaces"));
        assert!(!sane("id\nforged log line"));
        assert!(!sane("<script>"));
    }
}
