//! Helpers shared by the fuzz targets: the keys they verify with, and structure-aware
//! mutations of a valid token.
//!
//! The targets call the services' own code (`todo_shared`, `auth_service`, `task_service`);
//! nothing here re-implements what they check, apart from the small oracles each target uses to
//! state what an accepted input must look like.

use std::sync::LazyLock;
use std::time::Duration;

use arbitrary::Arbitrary;
use todo_shared::token::{JwtSecret, MintedToken, TokenKeys};
use uuid::Uuid;

/// The secret every target verifies with (any 32+ bytes do).
pub const SECRET: &[u8] = b"fuzzing-secret-fuzzing-secret-0123456789";
/// A different secret: nothing it signs may verify under [`SECRET`].
pub const OTHER_SECRET: &[u8] = b"another-secret-another-secret-9876543210";
pub const ISSUER: &str = "todo-grpc-auth";
pub const AUDIENCE: &str = "todo-grpc";

/// The user of [`valid_token`].
pub const USER: Uuid = Uuid::from_u128(0x0192_f0c1_7b5e_7c3a_9d4e_2f1a_3b4c_5d6e);
pub const EMAIL: &str = "ada@example.com";

/// Keys built as the services build them, once per process.
pub static KEYS: LazyLock<TokenKeys> = LazyLock::new(|| keys(SECRET));

/// A token the services would accept, minted at start-up with a day of validity (longer than
/// any fuzzing session).
pub static VALID: LazyLock<MintedToken> =
    LazyLock::new(|| KEYS.mint(USER, EMAIL, Duration::from_secs(86_400)).expect("minting works"));

pub fn keys(secret: &[u8]) -> TokenKeys {
    let secret = JwtSecret::new(secret).expect("fuzz secrets are long enough");
    TokenKeys::new(&secret, ISSUER, AUDIENCE).expect("token self-test passes")
}

pub fn valid_token() -> &'static str {
    &VALID.token
}

/// One edit of a string, positions taken modulo its length so every edit applies.
#[derive(Debug, Clone, Arbitrary)]
pub enum Mutation {
    FlipBit {
        at: u16,
        bit: u8,
    },
    SetByte {
        at: u16,
        byte: u8,
    },
    Insert {
        at: u16,
        bytes: Vec<u8>,
    },
    Remove {
        at: u16,
        len: u8,
    },
    Truncate {
        at: u16,
    },
    /// Swap two `.`-separated segments.
    SwapSegments {
        a: u8,
        b: u8,
    },
    /// Replace one `.`-separated segment.
    ReplaceSegment {
        index: u8,
        with: String,
    },
    /// Duplicate one segment in place (`a.b.c` -> `a.b.b.c`).
    DuplicateSegment {
        index: u8,
    },
    /// Change the base64 padding/alphabet of the end: a classic malleability probe.
    AppendPadding {
        count: u8,
    },
}

/// Applies `mutations` to `original`, as raw bytes, then reads the result back lossily: the
/// services receive `&str`, so every candidate is valid UTF-8.
pub fn mutate(original: &str, mutations: &[Mutation]) -> String {
    let mut bytes = original.as_bytes().to_vec();
    for m in mutations {
        let pos = |at: u16, len: usize| if len == 0 { 0 } else { usize::from(at) % len };
        match m {
            Mutation::FlipBit { at, bit } => {
                if !bytes.is_empty() {
                    let i = pos(*at, bytes.len());
                    bytes[i] ^= 1 << (bit % 8);
                }
            }
            Mutation::SetByte { at, byte } => {
                if !bytes.is_empty() {
                    let i = pos(*at, bytes.len());
                    bytes[i] = *byte;
                }
            }
            Mutation::Insert { at, bytes: new } => {
                let i = pos(*at, bytes.len() + 1);
                bytes.splice(i..i, new.iter().copied().take(64));
            }
            Mutation::Remove { at, len } => {
                if !bytes.is_empty() {
                    let i = pos(*at, bytes.len());
                    let end = (i + usize::from(*len).max(1)).min(bytes.len());
                    bytes.drain(i..end);
                }
            }
            Mutation::Truncate { at } => bytes.truncate(pos(*at, bytes.len() + 1)),
            Mutation::SwapSegments { a, b } => {
                let mut parts: Vec<Vec<u8>> = bytes.split(|c| *c == b'.').map(<[u8]>::to_vec).collect();
                let (a, b) = (usize::from(*a) % parts.len(), usize::from(*b) % parts.len());
                parts.swap(a, b);
                bytes = parts.join(&b'.');
            }
            Mutation::ReplaceSegment { index, with } => {
                let mut parts: Vec<Vec<u8>> = bytes.split(|c| *c == b'.').map(<[u8]>::to_vec).collect();
                let i = usize::from(*index) % parts.len();
                parts[i] = with.as_bytes().iter().copied().take(512).collect();
                bytes = parts.join(&b'.');
            }
            Mutation::DuplicateSegment { index } => {
                let mut parts: Vec<Vec<u8>> = bytes.split(|c| *c == b'.').map(<[u8]>::to_vec).collect();
                let i = usize::from(*index) % parts.len();
                let copy = parts[i].clone();
                parts.insert(i, copy);
                bytes = parts.join(&b'.');
            }
            Mutation::AppendPadding { count } => bytes.extend(std::iter::repeat_n(b'=', usize::from(count % 4))),
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Seconds since the Unix epoch, as the verifier sees them.
pub fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}
