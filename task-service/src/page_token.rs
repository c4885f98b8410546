//! ListTasks page tokens: opaque, tamper-proof keyset cursors.
//!
//! A token names the last task of the previous page by its sort key (`created_at`, `id`), so
//! the next page starts right after it however many tasks were inserted or deleted meanwhile
//! (an offset would skip or repeat tasks). It is bound, by an HMAC, to the user it was issued
//! to and to the listing's `completed` filter: a forged, truncated, altered or other user's
//! token is refused.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use uuid::Uuid;

type HmacSha256 = Hmac<Sha256>;

/// Format version, first byte of every token, so the format can change without old tokens
/// being misread.
const VERSION: u8 = 1;
/// version (1) + filter (1) + created_at micros (8) + id (16).
const PAYLOAD_LEN: usize = 26;
/// 128 bits of HMAC-SHA256: forging one is out of reach, and tokens stay short.
const TAG_LEN: usize = 16;

/// Where the next page starts: strictly after this task in (created_at DESC, id DESC) order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub created_at_micros: i64,
    pub id: Uuid,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PageTokenError {
    #[error("is not a page token this service issued to you: start again with an empty page_token")]
    Invalid,
    #[error("was issued for a different `completed` filter: keep the filter the same on every page")]
    FilterChanged,
}

/// Issues and checks page tokens with a key derived from the service secret.
pub struct PageTokens {
    key: HmacSha256,
}

impl PageTokens {
    /// Derives the token key from `secret`, separated from its use as the JWT key.
    pub fn new(secret: &[u8]) -> Self {
        // A key for HMAC-SHA256 may be any length, so neither call can fail.
        let mut derive = <HmacSha256 as Mac>::new_from_slice(secret).unwrap_or_else(|_| unreachable!());
        derive.update(b"todo-grpc/task-service/page-token/v1");
        let key = derive.finalize().into_bytes();
        Self { key: <HmacSha256 as Mac>::new_from_slice(&key).unwrap_or_else(|_| unreachable!()) }
    }

    pub fn encode(&self, user: Uuid, completed: Option<bool>, cursor: Cursor) -> String {
        let mut token = [0u8; PAYLOAD_LEN + TAG_LEN];
        token[0] = VERSION;
        token[1] = filter_byte(completed);
        token[2..10].copy_from_slice(&cursor.created_at_micros.to_be_bytes());
        token[10..26].copy_from_slice(cursor.id.as_bytes());
        let tag = self.tag(user, &token[..PAYLOAD_LEN]);
        token[PAYLOAD_LEN..].copy_from_slice(&tag[..TAG_LEN]);
        URL_SAFE_NO_PAD.encode(token)
    }

    pub fn decode(&self, user: Uuid, completed: Option<bool>, token: &str) -> Result<Cursor, PageTokenError> {
        let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| PageTokenError::Invalid)?;
        if bytes.len() != PAYLOAD_LEN + TAG_LEN || bytes[0] != VERSION {
            return Err(PageTokenError::Invalid);
        }
        let (payload, tag) = bytes.split_at(PAYLOAD_LEN);
        let mut mac = self.key.clone();
        mac.update(user.as_bytes());
        mac.update(payload);
        // Constant-time comparison of the truncated tag.
        mac.verify_truncated_left(tag).map_err(|_| PageTokenError::Invalid)?;
        if payload[1] != filter_byte(completed) {
            return Err(PageTokenError::FilterChanged);
        }
        let mut micros = [0u8; 8];
        micros.copy_from_slice(&payload[2..10]);
        let id = Uuid::from_slice(&payload[10..26]).map_err(|_| PageTokenError::Invalid)?;
        Ok(Cursor { created_at_micros: i64::from_be_bytes(micros), id })
    }

    fn tag(&self, user: Uuid, payload: &[u8]) -> [u8; 32] {
        let mut mac = self.key.clone();
        mac.update(user.as_bytes());
        mac.update(payload);
        mac.finalize().into_bytes().into()
    }
}

fn filter_byte(completed: Option<bool>) -> u8 {
    match completed {
        None => 0,
        Some(false) => 1,
        Some(true) => 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens() -> PageTokens {
        PageTokens::new(b"0123456789abcdef0123456789abcdef")
    }

    fn cursor() -> Cursor {
        Cursor { created_at_micros: 1_700_000_000_123_456, id: Uuid::now_v7() }
    }

    #[test]
    fn round_trips_for_the_same_user_and_filter() {
        let user = Uuid::new_v4();
        let token = tokens().encode(user, Some(true), cursor());
        assert_eq!(tokens().decode(user, Some(true), &token).unwrap().created_at_micros, 1_700_000_000_123_456);
    }

    #[test]
    fn other_users_and_filters_are_refused() {
        let user = Uuid::new_v4();
        let token = tokens().encode(user, None, cursor());
        assert_eq!(tokens().decode(Uuid::new_v4(), None, &token), Err(PageTokenError::Invalid));
        assert_eq!(tokens().decode(user, Some(false), &token), Err(PageTokenError::FilterChanged));
    }

    #[test]
    fn tampered_truncated_and_garbage_tokens_are_refused() {
        let user = Uuid::new_v4();
        let token = tokens().encode(user, None, cursor());
        let mut bytes = URL_SAFE_NO_PAD.decode(&token).unwrap();
        bytes[5] ^= 1;
        let tampered = URL_SAFE_NO_PAD.encode(&bytes);
        for bad in [tampered.as_str(), &token[..token.len() - 2], "", "!!!", "AAAA", "eyJvZmZzZXQiOjEwfQ"] {
            assert_eq!(tokens().decode(user, None, bad), Err(PageTokenError::Invalid), "{bad}");
        }
        // A token is exactly as issued: whitespace around it is an alteration too.
        for padded in [format!("{token} "), format!(" {token}"), format!("{token}\n")] {
            assert_eq!(tokens().decode(user, None, &padded), Err(PageTokenError::Invalid), "{padded:?}");
        }
    }

    #[test]
    fn a_token_from_another_secret_is_refused() {
        let user = Uuid::new_v4();
        let token = PageTokens::new(b"another secret, also 32 bytes long").encode(user, None, cursor());
        assert_eq!(tokens().decode(user, None, &token), Err(PageTokenError::Invalid));
    }
}
