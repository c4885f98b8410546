//! The access-token contract: HS256 JWTs with `sub`, `email`, `iat`, `exp`, `iss`, `aud`, `jti`.

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;
use std::time::Duration;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Shortest accepted secret. HS256 keys shorter than the hash output (32 bytes) weaken the
/// MAC (RFC 7518 §3.2).
pub const MIN_SECRET_BYTES: usize = 32;

/// Clock skew tolerated on `exp` and `iat`. Small on purpose: both services run on hosts with
/// synchronised clocks, and every second of leeway extends a stolen token's life.
pub const LEEWAY: Duration = Duration::from_secs(30);

/// Verified tokens remembered, so a client's every call does not re-verify the same token.
/// Only tokens that passed full verification get in, so filling it takes that many logins;
/// at ~450 bytes an entry it stays under 2 MiB.
const VERIFIED_CACHE_ENTRIES: usize = 4096;

/// The only algorithm minted or accepted. Pinning it defeats `alg: none` and algorithm
/// confusion (an attacker choosing HS384/RS256 in the header).
const ALGORITHM: Algorithm = Algorithm::HS256;

/// The shared HMAC secret. Its `Debug` never prints the bytes.
#[derive(Clone)]
pub struct JwtSecret(Vec<u8>);

impl JwtSecret {
    /// Accepts a secret of at least [`MIN_SECRET_BYTES`] bytes.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Result<Self, SecretTooShort> {
        let bytes = bytes.into();
        if bytes.len() < MIN_SECRET_BYTES {
            return Err(SecretTooShort { len: bytes.len() });
        }
        Ok(Self(bytes))
    }
}

impl JwtSecret {
    /// The raw bytes, for deriving other keys from the secret (never for logging).
    pub fn expose_for_key_derivation(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for JwtSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JwtSecret(<redacted>)")
    }
}

#[derive(Debug, thiserror::Error)]
#[error("must be at least {MIN_SECRET_BYTES} bytes long (got {len})")]
pub struct SecretTooShort {
    len: usize,
}

/// The claims of an access token, as they travel on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user id (a UUID).
    pub sub: String,
    pub email: String,
    /// Issued at, seconds since the Unix epoch.
    pub iat: u64,
    /// Expires at, seconds since the Unix epoch.
    pub exp: u64,
    pub iss: String,
    pub aud: String,
    /// Unique token id (a UUID v4), so two tokens minted in the same second differ.
    pub jti: String,
    /// The session the token belongs to (a UUID). Absent from tokens minted before sessions
    /// existed; those stay valid until they expire and are revoked by user-wide events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
}

/// The claims of a service token: what task-service presents to auth-service's internal RPCs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct ServiceClaims {
    sub: String,
    iat: u64,
    exp: u64,
    iss: String,
    aud: String,
    jti: String,
}

/// Why a token was refused. Each variant is a short, token-free message for the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token has expired: log in again")]
    Expired,
    #[error("token signature is invalid")]
    BadSignature,
    #[error("token was signed with a key this service does not know (unknown `kid`)")]
    UnknownKey,
    #[error("token algorithm is not accepted: only HS256 tokens are")]
    Algorithm,
    #[error("token was issued by another issuer")]
    Issuer,
    #[error("token was issued for another audience")]
    Audience,
    #[error("token claims are missing or invalid")]
    Claims,
    #[error("token is not valid yet (issued or valid from a time in the future: check the issuer's clock)")]
    NotYetValid,
    #[error("token is malformed")]
    Malformed,
}

/// The caller, as proven by a verified token. Handlers take it from the request extensions
/// (see [`crate::auth`]); no RPC ever takes a user id from the request body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthenticatedUser {
    pub id: Uuid,
    pub email: String,
    /// The token's session (`sid`); `None` for a token minted before sessions existed.
    pub session_id: Option<Uuid>,
    /// The token's `iat`, seconds since the Unix epoch.
    pub issued_at: u64,
    /// The token's `exp`, seconds since the Unix epoch.
    pub expires_at: u64,
}

/// A freshly minted token.
#[derive(Debug, Clone)]
pub struct MintedToken {
    pub token: String,
    pub claims: Claims,
    /// Lifetime in seconds, as announced to the client (`expires_in`).
    pub expires_in: u64,
}

/// One HMAC key and the id (`kid`) tokens name it by.
struct Key {
    kid: String,
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl Key {
    fn new(bytes: &[u8]) -> Self {
        Self {
            kid: key_id(bytes),
            encoding: EncodingKey::from_secret(bytes),
            decoding: DecodingKey::from_secret(bytes),
        }
    }
}

/// HMAC-SHA256 of `label` under `secret`: derives ids and subkeys that reveal nothing of it.
pub fn derive_key(secret: &[u8], label: &[u8]) -> [u8; 32] {
    use hmac::Mac as _;
    // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
    let mut mac = <hmac::Hmac<sha2::Sha256> as hmac::Mac>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
    mac.update(label);
    mac.finalize().into_bytes().into()
}

/// The `kid` of a secret: 16 hex digits of a keyed hash, the same on every service holding
/// the secret, useless for guessing it.
fn key_id(secret: &[u8]) -> String {
    derive_key(secret, b"todo-grpc key id v1")[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// A set of keys: the first signs, every one verifies.
struct KeyRing(Vec<Key>);

impl KeyRing {
    fn signing(&self) -> &Key {
        &self.0[0]
    }

    /// The keys a token may have been signed with: the one its `kid` names, or, for a token
    /// without `kid` (minted before key ids existed), every key.
    fn candidates(&self, kid: Option<&str>) -> Result<Vec<&Key>, TokenError> {
        match kid {
            Some(kid) => self.0.iter().find(|k| k.kid == kid).map(|k| vec![k]).ok_or(TokenError::UnknownKey),
            None => Ok(self.0.iter().collect()),
        }
    }
}

/// Keys and rules for minting and verifying tokens, built once at start-up.
pub struct TokenKeys {
    /// Signs with `JWT_SECRET`, verifies with it and every verification-only secret.
    user_keys: KeyRing,
    /// The same secrets, each through [`derive`]: a user's token never verifies as a service
    /// token, nor the other way round.
    service_keys: KeyRing,
    validation: Validation,
    service_validation: Validation,
    issuer: String,
    audience: String,
    /// Token (the whole string, signature included) -> its user and `exp`: a client sends the
    /// same token on every call, and a hit costs a hash of the string and a lock where a full
    /// verification costs two base64 decodes, two JSON parses and an HMAC (BENCHMARKS.md).
    verified: Mutex<HashMap<Box<str>, Verified>>,
}

#[derive(Clone)]
struct Verified {
    user: AuthenticatedUser,
    exp: u64,
}

impl fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenKeys")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("signing_kid", &self.signing_key_id())
            .finish_non_exhaustive()
    }
}

/// The process cannot mint and verify tokens: a misbuilt binary (for example without a
/// jsonwebtoken crypto backend). Detected before the server listens.
#[derive(Debug, thiserror::Error)]
#[error("token self-test failed: {0}")]
pub struct SelfTestFailed(String);

/// How long a service token lives: one connection attempt of the follower.
const SERVICE_TOKEN_TTL: Duration = Duration::from_secs(300);

fn validation(issuer: &str, audience: &str, required: &[&str]) -> Validation {
    let mut validation = Validation::new(ALGORITHM);
    validation.set_required_spec_claims(required);
    validation.set_issuer(&[issuer]);
    validation.set_audience(&[audience]);
    validation.leeway = LEEWAY.as_secs();
    validation.validate_exp = true;
    validation.validate_nbf = false;
    validation
}

impl TokenKeys {
    /// Builds the keys and proves, with a probe token, that minting and verifying work.
    pub fn new(secret: &JwtSecret, issuer: &str, audience: &str) -> Result<Self, SelfTestFailed> {
        Self::with_verification_secrets(secret, &[], issuer, audience)
    }

    /// Signs with `secret`; also accepts tokens signed with any of `verification_only`
    /// (the secrets being rotated out or in).
    pub fn with_verification_secrets(
        secret: &JwtSecret,
        verification_only: &[JwtSecret],
        issuer: &str,
        audience: &str,
    ) -> Result<Self, SelfTestFailed> {
        let secrets = std::iter::once(secret).chain(verification_only);
        let user_keys = KeyRing(secrets.clone().map(|s| Key::new(&s.0)).collect());
        let service_keys =
            KeyRing(secrets.map(|s| Key::new(&derive_key(&s.0, b"todo-grpc service token key v1"))).collect());
        // jsonwebtoken requires only `exp` by default and checks `iss`/`aud` only when present;
        // every claim of the contract is mandatory here. (`iat`, `email` and `jti` are required
        // by `Claims` itself: a token without them fails to deserialize.)
        let keys = Self {
            user_keys,
            service_keys,
            validation: validation(issuer, audience, &["exp", "sub", "iss", "aud"]),
            service_validation: validation(issuer, &service_audience(audience), &["exp", "sub", "iss", "aud"]),
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            verified: Mutex::new(HashMap::new()),
        };
        keys.self_test()?;
        Ok(keys)
    }

    fn self_test(&self) -> Result<(), SelfTestFailed> {
        let probe = Uuid::new_v4();
        // A panic here would come from a crypto backend misconfiguration inside jsonwebtoken;
        // turn it into an error so start-up reports it in one line.
        let result = std::panic::catch_unwind(|| {
            let minted = self
                .mint_for_session(probe, "probe@self-test.invalid", probe, Duration::from_secs(60))
                .map_err(|e| e.to_string())?;
            let (user, _) = self.verify_fully(&minted.token).map_err(|e| e.to_string())?;
            let service = self.mint_service_token("self-test").map_err(|e| e.to_string())?;
            if self.verify_fully(&service).is_ok() {
                return Err("a service token verified as a user's token".to_owned());
            }
            self.verify_service_token(&service).map_err(|e| e.to_string())?;
            if user.id == probe && user.session_id == Some(probe) {
                Ok(())
            } else {
                Err("probe token round-tripped to another subject".to_owned())
            }
        });
        match result {
            Ok(Ok(())) => Ok(()),
            Ok(Err(reason)) => Err(SelfTestFailed(reason)),
            Err(_) => Err(SelfTestFailed("the JWT crypto backend panicked".to_owned())),
        }
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    pub fn audience(&self) -> &str {
        &self.audience
    }

    /// The `kid` of the signing secret (safe to log).
    pub fn signing_key_id(&self) -> &str {
        &self.user_keys.signing().kid
    }

    /// Mints a token for `user_id` without a session, as tokens were before sessions existed.
    /// Tests and tools use it; the service mints through [`TokenKeys::mint_for_session`].
    pub fn mint(&self, user_id: Uuid, email: &str, ttl: Duration) -> Result<MintedToken, MintError> {
        self.mint_claims(user_id, email, None, ttl)
    }

    /// Mints an access token of `session` that expires after `ttl`.
    pub fn mint_for_session(
        &self,
        user_id: Uuid,
        email: &str,
        session: Uuid,
        ttl: Duration,
    ) -> Result<MintedToken, MintError> {
        self.mint_claims(user_id, email, Some(session), ttl)
    }

    fn mint_claims(
        &self,
        user_id: Uuid,
        email: &str,
        session: Option<Uuid>,
        ttl: Duration,
    ) -> Result<MintedToken, MintError> {
        let iat = jsonwebtoken::get_current_timestamp();
        let claims = Claims {
            sub: user_id.to_string(),
            email: email.to_owned(),
            iat,
            exp: iat.saturating_add(ttl.as_secs()),
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            jti: Uuid::new_v4().to_string(),
            sid: session.map(|s| s.to_string()),
        };
        self.sign(&claims).map(|token| MintedToken { token, claims, expires_in: ttl.as_secs() })
    }

    /// Signs arbitrary claims with this service's key. Public so tests and tools can build
    /// tokens with chosen claims; the service itself mints through [`TokenKeys::mint_for_session`].
    pub fn sign<C: Serialize>(&self, claims: &C) -> Result<String, MintError> {
        sign_with(self.user_keys.signing(), claims)
    }

    /// A short-lived token naming `service`, for auth-service's internal RPCs.
    pub fn mint_service_token(&self, service: &str) -> Result<String, MintError> {
        let iat = jsonwebtoken::get_current_timestamp();
        let claims = ServiceClaims {
            sub: service.to_owned(),
            iat,
            exp: iat.saturating_add(SERVICE_TOKEN_TTL.as_secs()),
            iss: self.issuer.clone(),
            aud: service_audience(&self.audience),
            jti: Uuid::new_v4().to_string(),
        };
        sign_with(self.service_keys.signing(), &claims)
    }

    /// Verifies a service token; returns the service it names.
    pub fn verify_service_token(&self, token: &str) -> Result<String, TokenError> {
        let claims: ServiceClaims = decode_with(&self.service_keys, &self.service_validation, token)?;
        Ok(claims.sub)
    }

    /// Verifies signature, algorithm, issuer, audience, expiry and claim shapes; a token that
    /// passed before is only checked for expiry again.
    pub fn verify(&self, token: &str) -> Result<AuthenticatedUser, TokenError> {
        let now = jsonwebtoken::get_current_timestamp();
        if let Some(user) = self.remembered(token, now) {
            return Ok(user);
        }
        let (user, exp) = self.verify_fully(token)?;
        self.remember(token, &user, exp, now);
        Ok(user)
    }

    /// The user of a token verified before, if it has not expired since (with the same leeway
    /// as a full verification). An expired entry is dropped.
    fn remembered(&self, token: &str, now: u64) -> Option<AuthenticatedUser> {
        let mut verified = self.verified.lock().unwrap_or_else(|p| p.into_inner());
        let entry = verified.get(token)?;
        if entry.exp.saturating_add(LEEWAY.as_secs()) >= now {
            return Some(entry.user.clone());
        }
        verified.remove(token);
        None
    }

    fn remember(&self, token: &str, user: &AuthenticatedUser, exp: u64, now: u64) {
        let mut verified = self.verified.lock().unwrap_or_else(|p| p.into_inner());
        if verified.len() >= VERIFIED_CACHE_ENTRIES {
            verified.retain(|_, v| v.exp.saturating_add(LEEWAY.as_secs()) >= now);
            if verified.len() >= VERIFIED_CACHE_ENTRIES {
                // Still full of live tokens: start over rather than track recency on every hit.
                verified.clear();
            }
        }
        verified.insert(token.into(), Verified { user: user.clone(), exp });
    }

    fn verify_fully(&self, token: &str) -> Result<(AuthenticatedUser, u64), TokenError> {
        let claims: Claims = decode_with(&self.user_keys, &self.validation, token)?;
        let id = Uuid::try_parse(&claims.sub).map_err(|_| TokenError::Claims)?;
        let session_id = claims.sid.as_deref().map(Uuid::try_parse).transpose().map_err(|_| TokenError::Claims)?;
        let now = jsonwebtoken::get_current_timestamp();
        if claims.iat > claims.exp {
            return Err(TokenError::Claims);
        }
        if claims.iat > now.saturating_add(LEEWAY.as_secs()) {
            return Err(TokenError::NotYetValid);
        }
        let user =
            AuthenticatedUser { id, email: claims.email, session_id, issued_at: claims.iat, expires_at: claims.exp };
        Ok((user, claims.exp))
    }
}

/// The audience of service tokens: never the audience of users' tokens.
fn service_audience(audience: &str) -> String {
    format!("{audience}-internal")
}

fn sign_with<C: Serialize>(key: &Key, claims: &C) -> Result<String, MintError> {
    let mut header = Header::new(ALGORITHM);
    header.kid = Some(key.kid.clone());
    jsonwebtoken::encode(&header, claims, &key.encoding).map_err(|e| MintError(e.to_string()))
}

/// Decodes and verifies `token` with the key its `kid` names (or, without one, each key).
fn decode_with<C: serde::de::DeserializeOwned>(
    ring: &KeyRing,
    validation: &Validation,
    token: &str,
) -> Result<C, TokenError> {
    // A header naming an algorithm jsonwebtoken does not know (`none`, say) fails to parse,
    // like a malformed one: tell the two apart.
    let header = jsonwebtoken::decode_header(token)
        .map_err(|_| if header_names_an_algorithm(token) { TokenError::Algorithm } else { TokenError::Malformed })?;
    if header.alg != ALGORITHM {
        return Err(TokenError::Algorithm);
    }
    for key in ring.candidates(header.kid.as_deref())? {
        match jsonwebtoken::decode::<C>(token, &key.decoding, validation) {
            Ok(data) => return Ok(data.claims),
            Err(e) if matches!(e.kind(), ErrorKind::InvalidSignature) => continue,
            Err(e) => return Err(classify(e.kind())),
        }
    }
    Err(TokenError::BadSignature)
}

#[derive(Debug, thiserror::Error)]
#[error("could not sign token: {0}")]
pub struct MintError(String);

/// Whether the token's header is JSON whose `alg` is a string naming no algorithm
/// jsonwebtoken knows (`none`, say).
fn header_names_an_algorithm(token: &str) -> bool {
    use base64::Engine as _;
    let header = token.split('.').next().unwrap_or_default();
    let Ok(json) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(header) else { return false };
    let Ok(header) = serde_json::from_slice::<serde_json::Value>(&json) else { return false };
    header.get("alg").and_then(|a| a.as_str()).is_some_and(|alg| alg.parse::<jsonwebtoken::Algorithm>().is_err())
}

fn classify(kind: &ErrorKind) -> TokenError {
    match kind {
        ErrorKind::ExpiredSignature => TokenError::Expired,
        ErrorKind::InvalidSignature => TokenError::BadSignature,
        ErrorKind::InvalidAlgorithm
        | ErrorKind::InvalidAlgorithmName
        | ErrorKind::MissingAlgorithm
        | ErrorKind::UnsupportedAlgorithm => TokenError::Algorithm,
        ErrorKind::InvalidIssuer => TokenError::Issuer,
        ErrorKind::InvalidAudience => TokenError::Audience,
        ErrorKind::MissingRequiredClaim(_) | ErrorKind::InvalidClaimFormat(_) | ErrorKind::InvalidSubject => {
            TokenError::Claims
        }
        ErrorKind::ImmatureSignature => TokenError::NotYetValid,
        // A JSON error after the signature was checked means well-signed but incomplete claims;
        // before it (in the header), a malformed token. Both are refusals; the message for the
        // former is more useful to a client developer.
        ErrorKind::Json(_) => TokenError::Claims,
        _ => TokenError::Malformed,
    }
}

#[cfg(test)]
mod tests;
