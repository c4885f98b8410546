//! WatchTasks resume tokens: a position in the caller's change log, opaque and tamper-proof.
//!
//! Bound by an HMAC to the user it was issued to, so another user's token (or an altered one)
//! is refused as INVALID_ARGUMENT, like a malformed one.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use uuid::Uuid;

type HmacSha256 = Hmac<Sha256>;

/// Format version, first byte of every token.
const VERSION: u8 = 1;
/// version (1) + position (8).
const PAYLOAD_LEN: usize = 9;
/// 128 bits of HMAC-SHA256.
const TAG_LEN: usize = 16;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("is not a resume token this service issued to you: start again with an empty resume_token")]
pub struct InvalidResumeToken;

#[derive(Clone)]
pub struct ResumeTokens {
    key: HmacSha256,
}

impl ResumeTokens {
    /// Derives the token key from `secret`, apart from its other uses.
    pub fn new(secret: &[u8]) -> Self {
        // A key for HMAC-SHA256 may be any length, so neither call can fail.
        let mut derive = <HmacSha256 as Mac>::new_from_slice(secret).unwrap_or_else(|_| unreachable!());
        derive.update(b"todo-grpc/task-service/resume-token/v1");
        let key = derive.finalize().into_bytes();
        Self { key: <HmacSha256 as Mac>::new_from_slice(&key).unwrap_or_else(|_| unreachable!()) }
    }

    pub fn encode(&self, user: Uuid, position: i64) -> String {
        let mut token = [0u8; PAYLOAD_LEN + TAG_LEN];
        token[0] = VERSION;
        token[1..PAYLOAD_LEN].copy_from_slice(&position.to_be_bytes());
        let mut mac = self.key.clone();
        mac.update(user.as_bytes());
        mac.update(&token[..PAYLOAD_LEN]);
        token[PAYLOAD_LEN..].copy_from_slice(&mac.finalize().into_bytes()[..TAG_LEN]);
        URL_SAFE_NO_PAD.encode(token)
    }

    pub fn decode(&self, user: Uuid, token: &str) -> Result<i64, InvalidResumeToken> {
        if token.len() > 64 {
            return Err(InvalidResumeToken);
        }
        let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| InvalidResumeToken)?;
        if bytes.len() != PAYLOAD_LEN + TAG_LEN || bytes[0] != VERSION {
            return Err(InvalidResumeToken);
        }
        let (payload, tag) = bytes.split_at(PAYLOAD_LEN);
        let mut mac = self.key.clone();
        mac.update(user.as_bytes());
        mac.update(payload);
        mac.verify_truncated_left(tag).map_err(|_| InvalidResumeToken)?;
        let mut position = [0u8; 8];
        position.copy_from_slice(&payload[1..]);
        let position = i64::from_be_bytes(position);
        if position < 0 { Err(InvalidResumeToken) } else { Ok(position) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_for_its_user_only() {
        let tokens = ResumeTokens::new(b"0123456789abcdef0123456789abcdef");
        let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
        let token = tokens.encode(alice, 42);
        assert_eq!(tokens.decode(alice, &token), Ok(42));
        assert_eq!(tokens.decode(bob, &token), Err(InvalidResumeToken));
        let other = ResumeTokens::new(b"another-secret-another-secret-xx");
        assert_eq!(other.decode(alice, &token), Err(InvalidResumeToken));
    }

    #[test]
    fn altered_or_malformed_tokens_are_refused() {
        let tokens = ResumeTokens::new(b"0123456789abcdef0123456789abcdef");
        let user = Uuid::new_v4();
        let token = tokens.encode(user, 7);
        let mut altered = URL_SAFE_NO_PAD.decode(&token).unwrap();
        altered[8] ^= 1;
        for bad in [String::new(), "not-a-token".into(), URL_SAFE_NO_PAD.encode(altered), "A".repeat(100)] {
            assert_eq!(tokens.decode(user, &bad), Err(InvalidResumeToken), "{bad:?}");
        }
    }
}
