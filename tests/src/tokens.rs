//! Tokens: the keys the test services share, valid claims to alter, and forged and bad
//! tokens built from them.

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use todo_shared::config::TokenConfig;
use todo_shared::token::{JwtSecret, TokenKeys};

use crate::{AUDIENCE, ISSUER, SECRET};

pub fn token_config() -> TokenConfig {
    TokenConfig {
        secret: JwtSecret::new(SECRET.as_bytes().to_vec()).expect("secret"),
        verification_secrets: Vec::new(),
        issuer: ISSUER.to_owned(),
        audience: AUDIENCE.to_owned(),
    }
}
/// The keys the test services use, for minting tokens with chosen claims.
pub fn keys() -> Arc<TokenKeys> {
    Arc::new(TokenKeys::new(&token_config().secret, ISSUER, AUDIENCE).expect("keys"))
}

pub fn now_secs() -> i64 {
    i64::try_from(jsonwebtoken::get_current_timestamp()).expect("time")
}

/// Valid claims for `user` (a JSON object), to alter before signing.
pub fn claims_for(user: uuid::Uuid) -> serde_json::Value {
    let now = now_secs();
    serde_json::json!({
        "sub": user.to_string(),
        "email": "someone@example.com",
        "iat": now,
        "exp": now + 3600,
        "iss": ISSUER,
        "aud": AUDIENCE,
        "jti": uuid::Uuid::new_v4().to_string(),
    })
}

/// A JWT with any header `alg`, signed with HMAC-SHA256 over `secret` (or unsigned when
/// `secret` is `None`): the raw material of forged tokens.
pub fn forge(alg: &str, claims: &serde_json::Value, secret: Option<&[u8]>) -> String {
    let header = URL_SAFE_NO_PAD.encode(serde_json::json!({ "alg": alg, "typ": "JWT" }).to_string());
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    let signing_input = format!("{header}.{payload}");
    let signature = match secret {
        None => String::new(),
        Some(secret) => {
            let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("hmac key");
            mac.update(signing_input.as_bytes());
            URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
        }
    };
    format!("{signing_input}.{signature}")
}

/// The decoded payload of a JWT, without verifying it (to inspect what the server minted).
pub fn payload_of(token: &str) -> serde_json::Value {
    let payload = token.split('.').nth(1).expect("three parts");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("base64url")).expect("json")
}

/// A catalogue of bad bearer values and tokens, each with a label, for `user`.
pub fn bad_authorizations(user: uuid::Uuid) -> Vec<(&'static str, Option<String>)> {
    let secret = SECRET.as_bytes();
    let good = forge("HS256", &claims_for(user), Some(secret));
    let mut expired = claims_for(user);
    expired["iat"] = serde_json::json!(now_secs() - 7200);
    expired["exp"] = serde_json::json!(now_secs() - 3600);
    let mut wrong_aud = claims_for(user);
    wrong_aud["aud"] = serde_json::json!("someone-else");
    let mut wrong_iss = claims_for(user);
    wrong_iss["iss"] = serde_json::json!("evil-issuer");
    let hs512 = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS512),
        &claims_for(user),
        &jsonwebtoken::EncodingKey::from_secret(secret),
    )
    .expect("hs512");
    let tampered = {
        let parts: Vec<&str> = good.split('.').collect();
        let mut claims = claims_for(user);
        claims["sub"] = serde_json::json!(uuid::Uuid::new_v4().to_string());
        format!("{}.{}.{}", parts[0], URL_SAFE_NO_PAD.encode(claims.to_string()), parts[2])
    };
    vec![
        ("no authorization metadata", None),
        ("Basic scheme", Some("Basic dXNlcjpwYXNz".to_owned())),
        ("Bearer with no token", Some("Bearer ".to_owned())),
        ("malformed token", Some("Bearer not-a-jwt".to_owned())),
        ("expired token", Some(format!("Bearer {}", forge("HS256", &expired, Some(secret))))),
        (
            "token signed with another secret",
            Some(format!(
                "Bearer {}",
                forge("HS256", &claims_for(user), Some(b"another-secret-another-secret-another"))
            )),
        ),
        ("alg none", Some(format!("Bearer {}", forge("none", &claims_for(user), None)))),
        ("HS512 token", Some(format!("Bearer {hs512}"))),
        ("tampered payload", Some(format!("Bearer {tampered}"))),
        ("wrong audience", Some(format!("Bearer {}", forge("HS256", &wrong_aud, Some(secret))))),
        ("wrong issuer", Some(format!("Bearer {}", forge("HS256", &wrong_iss, Some(secret))))),
    ]
}
