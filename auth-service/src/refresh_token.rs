//! Refresh tokens: 256 random bits, sent as 43 base64url characters, stored only as a hash.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

const BYTES: usize = 32;

/// A refresh token. Its `Debug` prints nothing of the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct RefreshToken([u8; BYTES]);

impl std::fmt::Debug for RefreshToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RefreshToken(<redacted>)")
    }
}

/// The presented string is not a refresh token this service could have issued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed;

impl RefreshToken {
    /// A fresh token from the operating system's CSPRNG.
    pub fn generate() -> Result<Self, getrandom::Error> {
        let mut bytes = [0u8; BYTES];
        getrandom::fill(&mut bytes)?;
        Ok(Self(bytes))
    }

    pub fn parse(raw: &str) -> Result<Self, Malformed> {
        // Checked before decoding so an oversized input costs nothing.
        if raw.len() != 43 {
            return Err(Malformed);
        }
        let bytes = URL_SAFE_NO_PAD.decode(raw).map_err(|_| Malformed)?;
        Ok(Self(bytes.try_into().map_err(|_| Malformed)?))
    }

    /// What the client is given.
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.0)
    }

    /// What the database keeps.
    pub fn hash(&self) -> [u8; 32] {
        Sha256::digest(self.0).into()
    }

    /// `successor`, hidden so that only a holder of `self` can recover it (see [`Self::unseal`]).
    pub fn seal(&self, successor: &Self) -> Vec<u8> {
        let pad = self.pad();
        successor.0.iter().zip(pad).map(|(s, p)| s ^ p).collect()
    }

    /// The successor sealed by [`Self::seal`]; `None` if `sealed` has the wrong length.
    pub fn unseal(&self, sealed: &[u8]) -> Option<Self> {
        let sealed: [u8; BYTES] = sealed.try_into().ok()?;
        let pad = self.pad();
        Some(Self(std::array::from_fn(|i| sealed[i] ^ pad[i])))
    }

    /// A one-time pad derived from this token; distinct from [`Self::hash`] by its label,
    /// so the stored hash does not unseal anything.
    fn pad(&self) -> [u8; 32] {
        let mut hasher = Sha256::new();
        hasher.update(b"todo-grpc refresh token seal v1");
        hasher.update(self.0);
        hasher.finalize().into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_to_43_characters_and_parses_back() {
        let token = RefreshToken::generate().unwrap();
        let text = token.encode();
        assert_eq!(text.len(), 43);
        assert_eq!(RefreshToken::parse(&text), Ok(token));
    }

    #[test]
    fn anything_else_is_malformed() {
        for raw in ["", "short", &"A".repeat(44), &"!".repeat(43)] {
            assert_eq!(RefreshToken::parse(raw), Err(Malformed), "{raw:?}");
        }
    }

    #[test]
    fn only_the_predecessor_unseals_its_successor() {
        let (first, second) = (RefreshToken::generate().unwrap(), RefreshToken::generate().unwrap());
        let sealed = first.seal(&second);
        assert_eq!(first.unseal(&sealed), Some(second.clone()));
        assert_ne!(RefreshToken::generate().unwrap().unseal(&sealed), Some(second));
        assert_ne!(sealed, first.hash().to_vec());
    }

    #[test]
    fn debug_hides_the_secret() {
        let token = RefreshToken::generate().unwrap();
        assert!(!format!("{token:?}").contains(&token.encode()));
    }
}
