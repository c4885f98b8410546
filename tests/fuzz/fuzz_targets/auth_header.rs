//! The `authorization` metadata parser (`bearer_token`) and `authenticate`, on arbitrary bytes.
//!
//! The input is the header as it arrives: `\n` separates repeated `authorization` entries (a
//! newline can never be inside a header value), and every `$T` is replaced by a valid token so
//! the fuzzer explores schemes, case and spacing around a token that does verify.
//!
//! Properties:
//! - never panics;
//! - an accepted header is exactly one entry, and yields a non-empty, trimmed token taken from
//!   it after a case-insensitive `Bearer ` scheme; two or more entries are `Duplicate`;
//! - `authenticate` succeeds only for the one valid token, and then names its user; and it does
//!   succeed whenever the parser extracts exactly that token;
//! - `authenticate` fails exactly as the parser does when the parser fails.
#![no_main]

use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use todo_fuzz::{EMAIL, KEYS, USER, valid_token};
use todo_shared::auth::{AuthError, authenticate, bearer_token};
use todo_shared::token::TokenError;
use tonic::metadata::MetadataMap;

/// Placeholder for the valid token in the input.
const MARKER: &[u8] = b"$T";

fuzz_target!(|data: &[u8]| {
    let token = valid_token().as_bytes();
    let mut headers = HeaderMap::new();
    let mut values = Vec::new();
    for piece in data.split(|b| *b == b'\n').take(4) {
        let expanded = replace(piece, MARKER, token);
        // Bytes an HTTP/2 peer cannot send in a header value are rejected by the transport
        // before tonic sees them: not an input the parser can receive.
        let Ok(value) = HeaderValue::from_bytes(&expanded) else { return };
        headers.append("authorization", value.clone());
        values.push(value);
    }
    let metadata = MetadataMap::from_headers(headers);

    let parsed = bearer_token(&metadata);
    let authenticated = authenticate(&KEYS, &metadata);

    match (&parsed, values.first()) {
        (Err(AuthError::Missing), None) => {}
        (_, None) => panic!("no authorization entry, but the parser said {parsed:?}"),
        (Err(AuthError::Missing), Some(_)) => panic!("authorization present but reported missing"),
        (Err(AuthError::Duplicate), Some(_)) => assert!(values.len() > 1, "one entry reported as duplicate"),
        (_, Some(_)) if values.len() > 1 => panic!("{} entries, but the parser said {parsed:?}", values.len()),
        (Ok(extracted), Some(first)) => {
            let text = first.to_str().expect("an accepted header is visible ASCII");
            assert!(!extracted.is_empty(), "empty token accepted");
            assert_eq!(*extracted, extracted.trim(), "token not trimmed");
            let trimmed = text.trim();
            let (scheme, rest) = trimmed.split_at(6.min(trimmed.len()));
            assert!(scheme.eq_ignore_ascii_case("bearer"), "accepted scheme {scheme:?} in {text:?}");
            assert!(rest.starts_with(' '), "no space after the scheme in {text:?}");
            assert!(text.contains(*extracted), "token {extracted:?} is not from the first entry {text:?}");
        }
        (Err(AuthError::Token(TokenError::Malformed)), Some(first)) => {
            assert!(first.to_str().is_err(), "visible-ASCII header {first:?} reported malformed by the parser");
        }
        (Err(_), Some(_)) => {}
    }

    match (&parsed, &authenticated) {
        (Ok(extracted), Ok(user)) => {
            assert_eq!(extracted.as_bytes(), token, "a token other than the one minted verified: {extracted:?}");
            assert_eq!((user.id, user.email.as_str()), (USER, EMAIL), "verified token names another user");
        }
        (Ok(extracted), Err(e)) => {
            assert_ne!(extracted.as_bytes(), token, "the valid token was refused: {e:?}");
        }
        (Err(parse_error), Ok(user)) => panic!("parser refused ({parse_error:?}) but authenticate let {user:?} in"),
        (Err(parse_error), Err(auth_error)) => {
            assert_eq!(parse_error, auth_error, "authenticate and the parser disagree");
        }
    }
});

fn replace(haystack: &[u8], needle: &[u8], with: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(haystack.len());
    let mut i = 0;
    while i < haystack.len() {
        if haystack[i..].starts_with(needle) {
            out.extend_from_slice(with);
            i += needle.len();
        } else {
            out.push(haystack[i]);
            i += 1;
        }
    }
    out
}
