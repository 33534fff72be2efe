//! Request extractors: the caller (from a token), the client's address, and a JSON body
//! read under a size limit. Each rejects with an [`ApiError`], so handlers only see
//! valid inputs.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::HeaderMap;
use axum::http::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, COOKIE};
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

/// The token of an `Authorization: Bearer` header, if there is such a header.
pub(crate) fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let auth = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok())?;
    let (scheme, token) = auth.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

pub(crate) fn token_from(headers: &HeaderMap) -> Option<&str> {
    if headers.contains_key(AUTHORIZATION) {
        return bearer_token(headers);
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
/// wrong content type a 415, too many bytes a 413.
pub struct JsonBody(pub Value);

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

/// The body as JSON, read under the configured limit.
async fn read_json(req: Request, state: &AppState) -> Result<Value, ApiError> {
    let limit = state.config().max_body_bytes;
    let too_large = || ApiError::TooLarge {
        what: "the request body",
        limit: format!("{limit} bytes"),
    };
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
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
    serde_json::from_slice(&bytes).map_err(|e| ApiError::MalformedJson(e.to_string()))
}
