//! What the load looks like: many users with real signed tokens, and a viewer's event mix
//! (mostly position reports, some pauses, quality switches and page views).
//!
//! The suite is a client like any other: it signs tokens with `jsonwebtoken`, and builds
//! the log records it appends straight to a log from `ugc-model`'s public `Envelope`.

use std::net::{IpAddr, Ipv4Addr};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use ugc_log::OutRecord;
use ugc_model::{ENVELOPE_VERSION, Envelope, EventId, Timestamp, UserId, parse_event};
use uuid::Uuid;

/// The HS256 secret of every server the suite starts; tokens are minted with it.
pub const SECRET: &str = "ugc-bench-hs256-secret-0123456789abcdef";

/// The RSA key pair of the token-cache scenario: the test-only pair of the black-box
/// tests, so that no key is generated at run time.
pub const RS256_PRIVATE: &str = include_str!("../../ugc/tests/fixtures/rsa-private.pem");
pub const RS256_PUBLIC: &str = include_str!("../../ugc/tests/fixtures/rsa-public.pem");

/// Films viewers watch; a catalogue, not one hot key.
const FILMS: usize = 500;

pub use ugc_testkit::Rng;

/// The records one batch request becomes.
pub type Batch = Vec<OutRecord>;

pub struct User {
    pub id: UserId,
    pub token: String,
}

pub struct Workload {
    pub users: Vec<User>,
    films: Vec<Uuid>,
}

/// An HS256 token for `user` with `roles`, signed with [`SECRET`], valid for a day
/// (longer than any run): the claims `ugc token` puts in one.
pub fn token(user: &UserId, roles: &[String]) -> anyhow::Result<String> {
    let now = Timestamp::now().millis() / 1000;
    Ok(jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &json!({"sub": user.as_str(), "roles": roles, "iat": now, "exp": now + 24 * 3600}),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )?)
}

/// Unix milliseconds as an RFC 3339 time, as clients send `occurred_at`.
pub fn rfc3339(ms: i64) -> anyhow::Result<String> {
    Ok(Timestamp::from_millis(ms)
        .map_err(anyhow::Error::msg)?
        .to_rfc3339())
}

/// The log record of `env`, as the API appends it: keyed by user, so one user's events
/// stay in order on one partition.
pub fn record(env: &Envelope) -> OutRecord {
    OutRecord {
        key: env.user_id.as_ref().map(|u| u.as_str().as_bytes().to_vec()),
        kind: env.event.type_name(),
        payload: env.encode(),
    }
}

impl Workload {
    /// `with_tokens`: processes that only build log records need no tokens.
    pub fn new(users: usize, with_tokens: bool) -> anyhow::Result<Self> {
        let mut rng = Rng::new(0x5eed);
        let films = (0..FILMS).map(|_| rng.uuid()).collect();
        let users = (0..users)
            .map(|_| {
                let id = UserId::parse(rng.uuid().to_string()).map_err(anyhow::Error::msg)?;
                let token = if with_tokens {
                    token(&id, &[])?
                } else {
                    String::new()
                };
                Ok(User { id, token })
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Self { users, films })
    }

    /// One event as a client sends it. The mix: 80% view_progress, 8% pause,
    /// 5% quality_change, 6% page_view, 1% full_view.
    pub fn event(&self, rng: &mut Rng) -> Value {
        let film = self.films[rng.below(self.films.len() as u64) as usize].to_string();
        let position = rng.below(7200);
        match rng.below(100) {
            0..80 => json!({"type":"view_progress","film_id":film,"film_timestamp":position}),
            80..88 => json!({"type":"pause","film_id":film,"position":position}),
            88..93 => {
                const Q: [&str; 4] = ["480p", "720p", "1080p", "auto"];
                let from = Q[rng.below(4) as usize];
                let to = Q[rng.below(4) as usize];
                json!({"type":"quality_change","film_id":film,"from":from,"to":to,"position":position})
            }
            93..99 => {
                const PAGES: [&str; 7] = [
                    "films_list",
                    "film",
                    "film_search",
                    "genres",
                    "genre",
                    "person",
                    "person_search",
                ];
                let page = PAGES[rng.below(7) as usize];
                json!({"type":"page_view","page":page,"params":{"page_number": rng.below(20) + 1}})
            }
            _ => json!({"type":"full_view","film_id":film}),
        }
    }

    /// `n` events of one viewer from `start_ms` on, as a player reports them: viewings
    /// one after another, each a film page view, then a position report every minute
    /// or so (with some pauses and quality switches) until the viewer stops (10% to
    /// 150% of the film's length: about a third reach the end and send `full_view`).
    /// Popular films are picked more often. Many reports per (viewer, film), not one:
    /// what analytics over a cinema's events meets.
    pub fn viewings(&self, rng: &mut Rng, n: usize, start_ms: i64) -> anyhow::Result<Vec<Value>> {
        const Q: [&str; 4] = ["480p", "720p", "1080p", "auto"];
        let mut out = Vec::with_capacity(n);
        let mut at = start_ms;
        let push = |mut e: Value, at: i64, out: &mut Vec<Value>| -> anyhow::Result<()> {
            e["occurred_at"] = json!(rfc3339(at)?);
            out.push(e);
            Ok(())
        };
        while out.len() < n {
            // Squaring a uniform draw skews the pick toward the first films.
            let u = rng.below(1 << 20) as f64 / f64::from(1 << 20);
            let f = (((u * u) * self.films.len() as f64) as usize).min(self.films.len() - 1);
            let film = self.films[f].to_string();
            let length = 3600 + (f as u64 * 7919) % 5400;
            let reach = length * (10 + rng.below(141)) / 100;
            let mut quality = Q[rng.below(4) as usize];
            let mut position = 0u64;
            push(
                json!({"type":"page_view","page":"film","params":{"film_id": film}}),
                at,
                &mut out,
            )?;
            while out.len() < n && position < reach.min(length) {
                let step = (30 + rng.below(60)).min(length - position);
                position += step;
                at += 1000 * step as i64;
                let e = if position >= length {
                    json!({"type":"full_view","film_id":film})
                } else {
                    match rng.below(100) {
                        0..8 => {
                            at += 1000 * (1 + rng.below(300) as i64);
                            json!({"type":"pause","film_id":film,"position":position})
                        }
                        8..12 => {
                            let to = Q[rng.below(4) as usize];
                            let from = std::mem::replace(&mut quality, to);
                            json!({"type":"quality_change","film_id":film,"from":from,"to":to,"position":position})
                        }
                        _ => {
                            json!({"type":"view_progress","film_id":film,"film_timestamp":position})
                        }
                    }
                };
                push(e, at, &mut out)?;
            }
            at += 1000 * (10 + rng.below(600) as i64);
        }
        Ok(out)
    }

    /// What the API would append for `event` from `user`: the same parse, and the
    /// envelope the API fills in (id, user, times, address).
    pub fn envelope(&self, event: &Value, user: &User) -> anyhow::Result<Envelope> {
        let incoming = parse_event(event)
            .map_err(|e| anyhow::anyhow!("the workload built an invalid event: {e:?}"))?;
        let now = Timestamp::now();
        Ok(Envelope {
            v: ENVELOPE_VERSION,
            event_id: incoming.event_id.unwrap_or_else(EventId::new_v7),
            user_id: Some(user.id.clone()),
            received_at: now,
            occurred_at: incoming.occurred_at.unwrap_or(now),
            client_ip: Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            context: incoming.context,
            event: incoming.event,
        })
    }

    /// `n` single-event requests like [`Self::single_pool`]'s, each user's with an RS256
    /// token signed by [`RS256_PRIVATE`] instead.
    pub fn single_pool_rs256(&self, n: usize, host: &str) -> anyhow::Result<Vec<Vec<u8>>> {
        let key = EncodingKey::from_rsa_pem(RS256_PRIVATE.as_bytes())?;
        let exp = Timestamp::now().millis() / 1000 + 24 * 3600;
        let tokens = self
            .users
            .iter()
            .map(|u| {
                jsonwebtoken::encode(
                    &Header::new(Algorithm::RS256),
                    &json!({"sub": u.id.as_str(), "exp": exp}),
                    &key,
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut rng = Rng::new(0x51);
        Ok((0..n)
            .map(|i| {
                let body = serde_json::to_vec(&self.event(&mut rng)).unwrap_or_default();
                let token = &tokens[i % tokens.len()];
                http_request("POST", "/api/v1/events", host, Some(token), Some(&body))
            })
            .collect())
    }

    /// `n` single-event requests, spread over all users.
    pub fn single_pool(&self, n: usize, host: &str) -> Vec<Vec<u8>> {
        let mut rng = Rng::new(0x51);
        (0..n)
            .map(|i| {
                let user = &self.users[i % self.users.len()];
                let body = serde_json::to_vec(&self.event(&mut rng)).unwrap_or_default();
                http_request(
                    "POST",
                    "/api/v1/events",
                    host,
                    Some(&user.token),
                    Some(&body),
                )
            })
            .collect()
    }

    /// Seed 004's request, `POST /api/v1/` `{film_id, film_timestamp}`, as its players
    /// send it: one pool of `per_connection` requests per connection, each connection one
    /// viewer watching one film, the position counting up.
    pub fn seed004_pools(
        &self,
        connections: usize,
        per_connection: usize,
        host: &str,
    ) -> Vec<Vec<Vec<u8>>> {
        let mut rng = Rng::new(0x004);
        (0..connections)
            .map(|c| {
                let user = &self.users[c % self.users.len()];
                let film = rng.uuid();
                (0..per_connection)
                    .map(|i| {
                        let body = serde_json::to_vec(
                            &serde_json::json!({"film_id": film, "film_timestamp": 10 * i}),
                        )
                        .unwrap_or_default();
                        http_request("POST", "/api/v1/", host, Some(&user.token), Some(&body))
                    })
                    .collect()
            })
            .collect()
    }

    /// `n` batch requests of `size` events each, with the log records the API would
    /// append for each (the baseline of scenario 2 appends exactly those).
    pub fn batch_pool(
        &self,
        n: usize,
        size: usize,
        host: &str,
    ) -> anyhow::Result<(Vec<Vec<u8>>, Vec<Batch>)> {
        let mut rng = Rng::new(0xba7c);
        let mut requests = Vec::with_capacity(n);
        let mut records = Vec::with_capacity(n);
        for i in 0..n {
            let user = &self.users[i % self.users.len()];
            let events: Vec<Value> = (0..size).map(|_| self.event(&mut rng)).collect();
            let body = serde_json::to_vec(&events)?;
            requests.push(http_request(
                "POST",
                "/api/v1/events/batch",
                host,
                Some(&user.token),
                Some(&body),
            ));
            records.push(
                events
                    .iter()
                    .map(|e| self.envelope(e, user).map(|env| record(&env)))
                    .collect::<anyhow::Result<_>>()?,
            );
        }
        Ok((requests, records))
    }
}

/// A complete HTTP/1.1 request, keep-alive, ready to write to a socket.
pub fn http_request(
    method: &str,
    path: &str,
    host: &str,
    token: Option<&str>,
    body: Option<&[u8]>,
) -> Vec<u8> {
    let mut r = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\n");
    if let Some(t) = token {
        r.push_str("Authorization: Bearer ");
        r.push_str(t);
        r.push_str("\r\n");
    }
    let mut r = r.into_bytes();
    match body {
        Some(b) => {
            r.extend_from_slice(
                format!(
                    "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                    b.len()
                )
                .as_bytes(),
            );
            r.extend_from_slice(b);
        }
        None => r.extend_from_slice(b"\r\n"),
    }
    r
}

/// A `count()` from a JSON answer: a number, or a quoted one (servers before 20.x quote
/// 64-bit integers in JSON).
pub fn as_count(v: &Value) -> Option<u64> {
    v.as_u64().or_else(|| v.as_str()?.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_generated_event_is_valid_and_the_mix_is_mostly_progress() {
        let w = Workload::new(3, false).unwrap();
        let mut rng = Rng::new(7);
        let mut progress = 0;
        for _ in 0..2000 {
            let e = w.event(&mut rng);
            parse_event(&e).unwrap_or_else(|errs| panic!("{e}: {errs:?}"));
            if e["type"] == "view_progress" {
                progress += 1;
            }
        }
        assert!((1400..1800).contains(&progress), "{progress} of 2000");
    }
}
