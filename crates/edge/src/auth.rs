//! Token verification. The key decides the algorithm family, never the token: an HS256
//! token is only checked against a shared secret, an RS/ES token only against a public
//! key, so the "sign HS256 with the public key" confusion and `alg: none` are refused.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};
use jsonwebtoken::{
    Algorithm, DecodingKey, EncodingKey, Header, Validation, decode, decode_header, encode,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use ugc_model::UserId;

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error(
        "missing token: send `Authorization: Bearer <jwt>` or the `access_token_cookie` cookie"
    )]
    Missing,
    #[error("invalid token: {0}")]
    Invalid(String),
}

#[derive(Debug, thiserror::Error)]
#[error("auth configuration: {0}")]
pub struct AuthConfigError(String);

#[derive(Clone, Debug, Default)]
pub struct AuthConfig {
    /// Shared secret for HS256/384/512.
    pub hs_secret: Option<String>,
    /// PEM public key (RSA or EC) for RS256/384/512, PS*, ES256/384.
    pub public_key_pem: Option<Vec<u8>>,
    /// A JWKS document (`{"keys":[...]}`) with public keys.
    pub jwks: Option<Vec<u8>>,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    pub leeway: Duration,
    /// Most verified tokens remembered (0: verify every request's signature).
    pub cache_size: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Family {
    Hmac,
    Rsa,
    Ec,
}

fn family(alg: Algorithm) -> Option<Family> {
    use Algorithm::*;
    match alg {
        HS256 | HS384 | HS512 => Some(Family::Hmac),
        RS256 | RS384 | RS512 | PS256 | PS384 | PS512 => Some(Family::Rsa),
        ES256 | ES384 => Some(Family::Ec),
        _ => None,
    }
}

fn algorithms(f: Family) -> Vec<Algorithm> {
    use Algorithm::*;
    match f {
        Family::Hmac => vec![HS256, HS384, HS512],
        Family::Rsa => vec![RS256, RS384, RS512, PS256, PS384, PS512],
        Family::Ec => vec![ES256, ES384],
    }
}

struct Key {
    family: Family,
    kid: Option<String>,
    key: DecodingKey,
}

/// Who is calling, as the token says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    pub user: UserId,
    pub roles: Vec<String>,
}

pub struct Verifier {
    keys: Vec<Key>,
    issuer: Option<String>,
    audience: Option<String>,
    leeway: u64,
    cache: Option<TokenCache>,
}

/// Tokens already verified, so that a client sending many events with one token pays
/// for one signature check (RSA/ECDSA verification costs tens of microseconds; a
/// SHA-256 of the token, one). Keyed by the token's hash, never the token itself, so a
/// memory dump does not hand out credentials. An entry is used only until the token's
/// `exp` plus the configured leeway — exactly as long as a fresh check would pass.
struct TokenCache {
    entries: Mutex<HashMap<[u8; 32], Cached>>,
    cap: usize,
}

struct Cached {
    principal: Principal,
    /// Unix seconds after which the token is refused (`exp` + leeway).
    until: u64,
}

enum Lookup {
    Hit(Principal),
    Expired,
    Miss,
}

impl TokenCache {
    fn get(&self, key: &[u8; 32], now: u64) -> Lookup {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        match entries.get(key) {
            Some(c) if now <= c.until => Lookup::Hit(c.principal.clone()),
            Some(_) => Lookup::Expired,
            None => Lookup::Miss,
        }
    }

    fn insert(&self, key: [u8; 32], principal: Principal, until: u64, now: u64) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= self.cap {
            // Expired tokens first; if the cache is still full, drop a tenth of it. A
            // dropped entry costs one more signature check, nothing else.
            entries.retain(|_, c| now <= c.until);
            if entries.len() >= self.cap {
                let drop: Vec<[u8; 32]> = entries.keys().take(self.cap / 10 + 1).copied().collect();
                for k in drop {
                    entries.remove(&k);
                }
            }
        }
        entries.insert(key, Cached { principal, until });
    }
}

impl Verifier {
    pub fn new(config: &AuthConfig) -> Result<Self, AuthConfigError> {
        let mut keys = Vec::new();
        if let Some(secret) = &config.hs_secret {
            if secret.len() < 16 {
                return Err(AuthConfigError(
                    "the HS256 secret must be at least 16 bytes".into(),
                ));
            }
            keys.push(Key {
                family: Family::Hmac,
                kid: None,
                key: DecodingKey::from_secret(secret.as_bytes()),
            });
        }
        if let Some(pem) = &config.public_key_pem {
            let key = if let Ok(k) = DecodingKey::from_rsa_pem(pem) {
                Key {
                    family: Family::Rsa,
                    kid: None,
                    key: k,
                }
            } else if let Ok(k) = DecodingKey::from_ec_pem(pem) {
                Key {
                    family: Family::Ec,
                    kid: None,
                    key: k,
                }
            } else {
                return Err(AuthConfigError(
                    "the public key is neither an RSA nor an EC PEM".into(),
                ));
            };
            keys.push(key);
        }
        if let Some(jwks) = &config.jwks {
            let set: JwkSet =
                serde_json::from_slice(jwks).map_err(|e| AuthConfigError(format!("JWKS: {e}")))?;
            for jwk in &set.keys {
                let family = match &jwk.algorithm {
                    AlgorithmParameters::RSA(_) => Family::Rsa,
                    AlgorithmParameters::EllipticCurve(_) => Family::Ec,
                    // Shared secrets do not belong in a key set that is meant to be public.
                    _ => continue,
                };
                let key = DecodingKey::from_jwk(jwk)
                    .map_err(|e| AuthConfigError(format!("JWKS key: {e}")))?;
                keys.push(Key {
                    family,
                    kid: jwk.common.key_id.clone(),
                    key,
                });
            }
        }
        if keys.is_empty() {
            return Err(AuthConfigError(
                "no key configured: set a secret, a public key or a JWKS file".into(),
            ));
        }
        Ok(Self {
            keys,
            issuer: config.issuer.clone(),
            audience: config.audience.clone(),
            leeway: config.leeway.as_secs(),
            cache: (config.cache_size > 0).then(|| TokenCache {
                entries: Mutex::new(HashMap::new()),
                cap: config.cache_size,
            }),
        })
    }

    /// Verifies the token and names its user (hashed) on the request's log span.
    pub fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let p = self.verify_at(token, now)?;
        crate::observe::record_user(p.user.as_str());
        Ok(p)
    }

    fn verify_at(&self, token: &str, now: u64) -> Result<Principal, AuthError> {
        let Some(cache) = &self.cache else {
            return self.check(token).map(|(p, _)| p);
        };
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        match cache.get(&key, now) {
            Lookup::Hit(p) => return Ok(p),
            Lookup::Expired => return Err(AuthError::Invalid("ExpiredSignature".into())),
            Lookup::Miss => {}
        }
        let (principal, exp) = self.check(token)?;
        if let Some(exp) = exp {
            cache.insert(key, principal.clone(), exp.saturating_add(self.leeway), now);
        }
        Ok(principal)
    }

    /// Verifies the signature and the claims; returns the caller and the token's `exp`.
    fn check(&self, token: &str) -> Result<(Principal, Option<u64>), AuthError> {
        let header = decode_header(token)
            .map_err(|e| AuthError::Invalid(format!("unreadable header: {e}")))?;
        let fam = family(header.alg).ok_or_else(|| {
            AuthError::Invalid(format!("algorithm {:?} is not accepted", header.alg))
        })?;
        let candidates =
            self.keys
                .iter()
                .filter(|k| k.family == fam)
                .filter(|k| match (&header.kid, &k.kid) {
                    (Some(want), Some(have)) => want == have,
                    _ => true,
                });
        let mut last = AuthError::Invalid(format!("no key configured for {:?} tokens", header.alg));
        for k in candidates {
            match decode::<Claims>(token, &k.key, &self.validation(fam, header.alg)) {
                Ok(data) => {
                    let exp = data.claims.exp.as_ref().and_then(|v| {
                        v.as_u64()
                            .or_else(|| v.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))
                    });
                    return data.claims.principal().map(|p| (p, exp));
                }
                Err(e) => last = AuthError::Invalid(e.to_string()),
            }
        }
        Err(last)
    }

    fn validation(&self, fam: Family, alg: Algorithm) -> Validation {
        let mut v = Validation::new(alg);
        v.algorithms = algorithms(fam);
        v.leeway = self.leeway;
        v.validate_exp = true;
        v.validate_nbf = true;
        // A configured issuer or audience must be *present*, not merely right when present.
        v.required_spec_claims = HashSet::from(["exp".to_owned()]);
        match &self.audience {
            Some(aud) => {
                v.set_audience(&[aud]);
                v.required_spec_claims.insert("aud".to_owned());
            }
            None => v.validate_aud = false,
        }
        if let Some(iss) = &self.issuer {
            v.set_issuer(&[iss]);
            v.required_spec_claims.insert("iss".to_owned());
        }
        v
    }
}

#[derive(Deserialize)]
struct Claims {
    #[serde(default)]
    exp: Option<Value>,
    #[serde(default)]
    sub: Option<Value>,
    #[serde(default)]
    user_id: Option<Value>,
    #[serde(default)]
    roles: Option<Value>,
    #[serde(default)]
    role: Option<Value>,
}

impl Claims {
    fn principal(self) -> Result<Principal, AuthError> {
        // Auth services put the user in `sub` (RFC 7519) or, like seed 000's, `user_id`;
        // some issue numeric ids.
        let user = [self.sub, self.user_id]
            .into_iter()
            .flatten()
            .find_map(|v| match v {
                Value::String(s) => Some(s),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            })
            .ok_or_else(|| {
                AuthError::Invalid("the token names no user (`sub` or `user_id`)".into())
            })?;
        let user = UserId::parse(user).map_err(|e| AuthError::Invalid(e.into()))?;
        let mut roles = Vec::new();
        for v in [self.roles, self.role].into_iter().flatten() {
            match v {
                Value::String(s) => roles.push(s),
                Value::Array(a) => {
                    roles.extend(a.into_iter().filter_map(|r| r.as_str().map(str::to_owned)))
                }
                _ => {}
            }
        }
        Ok(Principal { user, roles })
    }
}

#[derive(Serialize)]
struct MintClaims<'a> {
    sub: &'a str,
    roles: &'a [String],
    iat: u64,
    exp: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    iss: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    aud: Option<&'a str>,
}

/// Signs a development token with the shared secret (`ugc token`).
pub fn mint_hs256(
    config: &AuthConfig,
    user: &UserId,
    roles: &[String],
    ttl: Duration,
) -> Result<String, AuthConfigError> {
    let secret = config
        .hs_secret
        .as_ref()
        .ok_or_else(|| AuthConfigError("minting needs the HS256 secret".into()))?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let claims = MintClaims {
        sub: user.as_str(),
        roles,
        iat: now,
        exp: now + ttl.as_secs(),
        iss: config.issuer.as_deref(),
        aud: config.audience.as_deref(),
    };
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .map_err(|e| AuthConfigError(e.to_string()))
}

pub fn read_key_file(path: &Path) -> Result<Vec<u8>, AuthConfigError> {
    std::fs::read(path).map_err(|e| AuthConfigError(format!("cannot read {}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> AuthConfig {
        AuthConfig {
            hs_secret: Some("0123456789abcdef0123".into()),
            leeway: Duration::from_secs(5),
            ..Default::default()
        }
    }

    #[test]
    fn minted_tokens_verify_and_carry_roles() {
        let c = cfg();
        let user = UserId::parse("1ec4cd73-2fd5-4f25-af68-b6595d279af2").unwrap();
        let t = mint_hs256(&c, &user, &["admin".into()], Duration::from_secs(60)).unwrap();
        let p = Verifier::new(&c).unwrap().verify(&t).unwrap();
        assert_eq!(p.user, user);
        assert_eq!(p.roles, ["admin"]);
    }

    #[test]
    fn a_cached_token_is_refused_past_its_exp() {
        let c = AuthConfig {
            leeway: Duration::from_secs(2),
            cache_size: 10,
            ..cfg()
        };
        let v = Verifier::new(&c).unwrap();
        let user = UserId::parse("viewer").unwrap();
        let t = mint_hs256(&c, &user, &[], Duration::from_secs(60)).unwrap();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert_eq!(v.verify_at(&t, now).unwrap().user, user);
        // Served from the cache while exp + leeway has not passed...
        assert_eq!(v.verify_at(&t, now + 60 + 2).unwrap().user, user);
        // ...and refused after, though a fresh check (on the real clock) would still pass.
        assert!(v.verify_at(&t, now + 60 + 3).is_err());
        assert!(v.verify(&t).is_ok());
    }

    #[test]
    fn the_cache_is_bounded_and_keyed_by_hash() {
        let c = AuthConfig {
            cache_size: 4,
            ..cfg()
        };
        let v = Verifier::new(&c).unwrap();
        let mut tokens = Vec::new();
        for i in 0..20 {
            let user = UserId::parse(format!("viewer-{i}")).unwrap();
            let t = mint_hs256(&c, &user, &[], Duration::from_secs(60)).unwrap();
            assert_eq!(v.verify(&t).unwrap().user, user);
            tokens.push(t);
        }
        let cache = v.cache.as_ref().unwrap();
        let entries = cache.entries.lock().unwrap();
        assert!(entries.len() <= 4, "{} entries", entries.len());
        let last: [u8; 32] = Sha256::digest(tokens[19].as_bytes()).into();
        assert!(entries.contains_key(&last));
    }

    #[test]
    fn a_tampered_token_is_not_served_from_the_cache() {
        let c = AuthConfig {
            cache_size: 10,
            ..cfg()
        };
        let v = Verifier::new(&c).unwrap();
        let user = UserId::parse("viewer").unwrap();
        let t = mint_hs256(&c, &user, &[], Duration::from_secs(60)).unwrap();
        v.verify(&t).unwrap();
        // Another first character of the signature: different bytes, not just padding bits.
        let sig = t.rfind('.').unwrap() + 1;
        let other = if t[sig..].starts_with('A') { "B" } else { "A" };
        let forged = format!("{}{other}{}", &t[..sig], &t[sig + 1..]);
        assert!(v.verify(&forged).is_err());
    }

    #[test]
    fn alg_none_and_garbage_are_refused() {
        let v = Verifier::new(&cfg()).unwrap();
        // {"alg":"none","typ":"JWT"} . {"sub":"u","exp":9999999999} . (no signature)
        let none = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJ1IiwiZXhwIjo5OTk5OTk5OTk5fQ.";
        assert!(v.verify(none).is_err());
        assert!(v.verify("not-a-jwt").is_err());
    }
}
