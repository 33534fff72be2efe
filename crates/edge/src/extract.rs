//! Request extractors: the caller (from a token), the client's address, and a JSON body
//! read under a size limit. Each rejects with an [`ApiError`], so handlers only see
//! valid inputs.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::HeaderMap;
use axum::http::header::{AUTHORIZATION, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, COOKIE};
use axum::http::request::Parts;
use serde_json::Value;

use crate::auth::{AuthError, Principal};
use crate::error::ApiError;
use crate::state::AppState;

/// Cookies in which the seeds' auth services hand out the access token.
const TOKEN_COOKIES: &[&str] = &["access_token_cookie", "access_token"];

impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = token_from(&parts.headers).ok_or(AuthError::Missing)?;
        Ok(state.verifier().verify(token)?)
    }
}

/// The caller if a token was sent; an invalid token is still a 401. For the routes
/// that may accept anonymous events.
pub struct MaybePrincipal(pub Option<Principal>);

impl FromRequestParts<AppState> for MaybePrincipal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        match token_from(&parts.headers) {
            None => Ok(MaybePrincipal(None)),
            Some(token) => Ok(MaybePrincipal(Some(state.verifier().verify(token)?))),
        }
    }
}

/// The token of an `Authorization: Bearer <jwt>` header: the one place that reads it.
pub(crate) fn bearer_from(headers: &HeaderMap) -> Option<&str> {
    let auth = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = auth.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The caller's token: the Bearer header when there is one, else the seeds' cookies.
pub(crate) fn token_from(headers: &HeaderMap) -> Option<&str> {
    if headers.contains_key(AUTHORIZATION) {
        return bearer_from(headers);
    }
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| TOKEN_COOKIES.contains(k))
        .map(|(_, v)| v.trim_matches('"'))
}

/// The client's address: the TCP peer, or — only when the peer is a configured trusted
/// proxy — the right-most address in `X-Forwarded-For` that is not itself a proxy.
pub struct ClientIp(pub Option<IpAddr>);

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip());
        let proxies = &state.config().trusted_proxies;
        let trusted = |ip: &IpAddr| proxies.iter().any(|net| net.contains(ip));
        let Some(peer) = peer else {
            return Ok(ClientIp(None));
        };
        if !trusted(&peer) {
            return Ok(ClientIp(Some(peer)));
        }
        let forwarded = parts
            .headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .collect::<Vec<_>>();
        let client = forwarded
            .iter()
            .rev()
            .filter_map(|s| s.parse::<IpAddr>().ok())
            .find(|ip| !trusted(ip));
        Ok(ClientIp(Some(client.unwrap_or(peer))))
    }
}

/// A JSON document read under the configured body limit. Malformed JSON is a 400, a
/// wrong content type or encoding a 415, too many bytes a 413. A body may come
/// `Content-Encoding: gzip` or `zstd`: the limit then holds for the inflated bytes too,
/// and a body that inflates more than [`MAX_RATIO`] times (a decompression bomb) is a 413
/// — found without ever holding more than the limit in memory.
pub struct JsonBody(pub Value);

/// The most a compressed body may inflate: JSON events compress 5–20 times; 1 GB of
/// zeros in 1 MB of gzip is an attack.
pub const MAX_RATIO: usize = 100;

/// Inflates `body` through `decoder`, stopping one byte past the limit.
fn inflate(
    body: &[u8],
    limit: usize,
    decoder: impl std::io::Read,
    too_large: impl Fn() -> ApiError,
) -> Result<Vec<u8>, ApiError> {
    use std::io::Read as _;
    let cap = limit.min(body.len().saturating_mul(MAX_RATIO));
    let mut out = Vec::with_capacity(cap.min(64 * 1024));
    decoder
        .take(cap as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| ApiError::MalformedJson(format!("cannot decompress the body: {e}")))?;
    if out.len() > cap {
        return Err(too_large());
    }
    Ok(out)
}

impl FromRequest<AppState> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let (content_type, mime) = mime_of(&req);
        if !is_json(&mime) {
            return Err(ApiError::UnsupportedMediaType(content_type));
        }
        read_json(req, state).await.map(JsonBody)
    }
}

fn mime_of(req: &Request) -> (String, String) {
    let content_type = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    (content_type.to_owned(), mime)
}

fn is_json(mime: &str) -> bool {
    mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
}

/// A beacon's JSON document: like [`JsonBody`], but also sent as `text/plain`, the type
/// that keeps `sendBeacon` and keepalive fetches CORS simple requests (no preflight).
pub struct BeaconBody(pub Value);

impl FromRequest<AppState> for BeaconBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let (content_type, mime) = mime_of(&req);
        if !(is_json(&mime) || mime == "text/plain") {
            return Err(ApiError::UnsupportedMediaType(format!(
                "{content_type} (a beacon is text/plain or application/json)"
            )));
        }
        read_json(req, state).await.map(BeaconBody)
    }
}

/// The body as JSON, read under the configured limit, inflated first when it comes
/// `Content-Encoding: gzip` or `zstd` (see [`JsonBody`]).
async fn read_json(req: Request, state: &AppState) -> Result<Value, ApiError> {
    let limit = state.config().max_body_bytes;
    let too_large = || {
        metrics::counter!("ugc_http_body_too_large_total").increment(1);
        ApiError::TooLarge {
            what: "the request body",
            limit: format!("{limit} bytes"),
        }
    };
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let encoding = req
        .headers()
        .get(CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_ascii_lowercase())
        .filter(|v| !v.is_empty() && v != "identity");
    if let Some(e) = encoding.as_deref()
        && !matches!(e, "gzip" | "x-gzip" | "zstd")
    {
        return Err(ApiError::UnsupportedMediaType(format!(
            "Content-Encoding {e} (gzip, zstd or none)"
        )));
    }
    let bytes = axum::body::to_bytes(req.into_body(), limit)
        .await
        .map_err(|e| {
            // A chunked body has no Content-Length to check up front; it trips the limit here.
            let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
            while let Some(s) = source {
                if s.is::<http_body_util::LengthLimitError>() {
                    return too_large();
                }
                source = s.source();
            }
            ApiError::MalformedJson(format!("could not read the body: {e}"))
        })?;
    let bytes = match encoding.as_deref() {
        Some("gzip" | "x-gzip") => axum::body::Bytes::from(inflate(
            &bytes,
            limit,
            flate2::read::MultiGzDecoder::new(&bytes[..]),
            too_large,
        )?),
        Some(_) => axum::body::Bytes::from(inflate(
            &bytes,
            limit,
            zstd::stream::read::Decoder::new(&bytes[..])
                .map_err(|e| ApiError::MalformedJson(format!("cannot decompress the body: {e}")))?,
            too_large,
        )?),
        None => bytes,
    };
    serde_json::from_slice(&bytes).map_err(|e| ApiError::MalformedJson(e.to_string()))
}
