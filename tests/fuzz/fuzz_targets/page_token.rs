//! ListTasks page tokens: `PageTokens::decode` on arbitrary strings, and the encode/decode
//! contract on arbitrary cursors.
//!
//! Properties:
//! - `decode` never panics, and whatever it accepts is exactly what `encode` issues for that
//!   user, filter and cursor (so an accepted arbitrary string would be a forgery);
//! - round trip: `decode(encode(cursor))` is the cursor, for every timestamp and id;
//! - a token never decodes for another user, under another secret, or after any edit (other
//!   than surrounding whitespace, which the decoder trims, or one that turns it into another
//!   token the service issues); with another `completed` filter it is refused as
//!   `FilterChanged`.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use task_service::page_token::{Cursor, PageTokenError, PageTokens};
use todo_fuzz::{Mutation, SECRET, mutate};
use uuid::Uuid;

#[derive(Debug, Arbitrary)]
struct Input {
    /// Decoded as is, for `user` and `completed`.
    raw: String,
    user: u128,
    other_user: u128,
    completed: Option<bool>,
    other_completed: Option<bool>,
    created_at_micros: i64,
    id: u128,
    other_secret: Vec<u8>,
    mutations: Vec<Mutation>,
}

fuzz_target!(|input: Input| {
    let tokens = PageTokens::new(SECRET);
    let user = Uuid::from_u128(input.user);
    let other_user = Uuid::from_u128(input.other_user);
    let cursor = Cursor { created_at_micros: input.created_at_micros, id: Uuid::from_u128(input.id) };

    // Arbitrary strings.
    if let Ok(decoded) = tokens.decode(user, input.completed, &input.raw) {
        let issued = tokens.encode(user, input.completed, decoded);
        assert_eq!(input.raw, issued, "accepted a token this service never issued");
    }

    // Round trip.
    let token = tokens.encode(user, input.completed, cursor);
    assert_eq!(tokens.decode(user, input.completed, &token), Ok(cursor), "round trip failed for {cursor:?}");
    assert!(token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'), "not URL-safe: {token}");

    // Bound to the user.
    if other_user != user {
        assert_eq!(tokens.decode(other_user, input.completed, &token), Err(PageTokenError::Invalid), "other user");
    }
    // Bound to the filter.
    if input.other_completed != input.completed {
        assert_eq!(
            tokens.decode(user, input.other_completed, &token),
            Err(PageTokenError::FilterChanged),
            "other filter"
        );
    }
    // Bound to the secret.
    if input.other_secret.as_slice() != SECRET {
        let other = PageTokens::new(&input.other_secret);
        assert_eq!(other.decode(user, input.completed, &token), Err(PageTokenError::Invalid), "other secret");
    }
    // Tamper-proof: an edited token is refused, unless the edit happens to spell another token
    // this service issues for the same user and filter. libFuzzer does reach that: it learns
    // tokens issued in earlier runs from the string comparisons below and splices one in whole
    // (a replay of a genuine token, not a forgery: the MAC is never computed outside `encode`).
    let altered = mutate(&token, &input.mutations);
    let result = tokens.decode(user, input.completed, &altered);
    // Exactly as issued: whitespace around it is an alteration too.
    if altered == token {
        assert_eq!(result, Ok(cursor), "the issued token was refused");
    } else if let Ok(decoded) = result {
        assert_eq!(
            altered,
            tokens.encode(user, input.completed, decoded),
            "altered token {altered:?} (issued {token:?}) accepted as {decoded:?}, and it is no token this service issues"
        );
    }
});
