//! `TokenKeys::verify`, the check every authenticated RPC relies on.
//!
//! Three kinds of input:
//! - `Raw`: any string. Nothing the fuzzer writes is signed with the key, so any success is a
//!   forgery.
//! - `Mutated`: a valid token after a few edits (bit flips, inserted/removed bytes, swapped,
//!   replaced or duplicated segments, padding). Only the unchanged token may verify.
//! - `Forged`: a token assembled from a fuzzer-chosen header and claims (built from nothing or
//!   from a valid set, then members set, removed or duplicated, with values of any type), signed
//!   with the right key, another key, or not at all.
//!   Only the right key may verify, and then only claims that meet the contract: `alg` HS256,
//!   `iss`/`aud` exactly ours, `sub` a UUID, `exp` not past (30 s leeway), `iat` not in the
//!   future and not after `exp`, `email` and `jti` present. The user returned is the token's.
//!
//! Never panics, whatever the input.
#![no_main]

use arbitrary::Arbitrary;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use libfuzzer_sys::fuzz_target;
use serde::Deserialize;
use serde_json::Value;
use sha2::Sha256;
use todo_fuzz::{AUDIENCE, EMAIL, ISSUER, KEYS, Mutation, OTHER_SECRET, SECRET, USER, mutate, now, valid_token};
use todo_shared::token::LEEWAY;
use uuid::Uuid;

#[derive(Debug, Arbitrary)]
enum Input {
    Raw(String),
    Mutated(Vec<Mutation>),
    Forged(Forged),
}

/// A header and claims, each either built from nothing or from a valid set (so that the few
/// edits that matter are a short distance away), then edited.
#[derive(Debug, Arbitrary)]
struct Forged {
    header_from_valid: bool,
    header: Vec<Edit>,
    claims_from_valid: bool,
    claims: Vec<Edit>,
    signature: Signature,
}

#[derive(Debug, Arbitrary)]
enum Edit {
    /// Replaces the member's value, or appends the member if absent.
    Set(Key, Json),
    Remove(Key),
    /// Appends the member even if present: a duplicate key.
    Duplicate(Key, Json),
}

/// A JSON object key: one the contract knows (so the fuzzer hits them often) or any other.
#[derive(Debug, Arbitrary)]
enum Key {
    Alg,
    Typ,
    Kid,
    Crit,
    B64,
    Sub,
    Email,
    Iat,
    Exp,
    Nbf,
    Iss,
    Aud,
    Jti,
    Other(String),
}

impl Key {
    fn name(&self) -> &str {
        match self {
            Key::Alg => "alg",
            Key::Typ => "typ",
            Key::Kid => "kid",
            Key::Crit => "crit",
            Key::B64 => "b64",
            Key::Sub => "sub",
            Key::Email => "email",
            Key::Iat => "iat",
            Key::Exp => "exp",
            Key::Nbf => "nbf",
            Key::Iss => "iss",
            Key::Aud => "aud",
            Key::Jti => "jti",
            Key::Other(name) => name,
        }
    }
}

/// A JSON value, biased towards the values that matter here.
#[derive(Debug, Arbitrary)]
enum Json {
    Null,
    Bool(bool),
    /// Seconds relative to now (so expiry and issue time land on both sides of the leeway).
    Now(i32),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(String),
    Uuid(u128),
    OurIssuer,
    OurAudience,
    Alg(AlgName),
    Array(Vec<Scalar>),
    /// Raw JSON text, to reach the parser with anything at all.
    RawText(String),
}

#[derive(Debug, Arbitrary)]
enum Scalar {
    Str(String),
    Int(i64),
    OurAudience,
    OurIssuer,
}

#[derive(Debug, Arbitrary, Clone, Copy)]
enum AlgName {
    HS256,
    HS384,
    HS512,
    RS256,
    ES256,
    EdDSA,
    None,
    LowerHs256,
}

#[derive(Debug, Arbitrary)]
enum Signature {
    /// HMAC-SHA256 with the services' key.
    RightKey,
    /// HMAC-SHA256 with another key.
    OtherKey,
    /// HMAC-SHA384/512-sized garbage or any bytes.
    Bytes(Vec<u8>),
    /// No signature at all (`alg: none` style).
    Empty,
    /// Only two segments.
    Missing,
}

fuzz_target!(|input: Input| {
    match input {
        Input::Raw(token) => {
            if let Ok(user) = KEYS.verify(&token) {
                assert_eq!(token, valid_token(), "forgery: an arbitrary string verified as {user:?}");
            }
        }
        Input::Mutated(mutations) => {
            let token = mutate(valid_token(), &mutations);
            let result = KEYS.verify(&token);
            if token == valid_token() {
                assert!(result.is_ok(), "the valid token was refused: {result:?}");
            } else if let Ok(user) = result {
                panic!("altered token verified as {user:?}: {token:?} (original {:?})", valid_token());
            }
        }
        Input::Forged(forged) => check_forged(&forged),
    }
});

fn check_forged(forged: &Forged) {
    let valid_header = [("typ", Json::Str("JWT".into())), ("alg", Json::Alg(AlgName::HS256))];
    let valid_claims = [
        ("sub", Json::Uuid(USER.as_u128())),
        ("email", Json::Str(EMAIL.into())),
        ("iat", Json::Now(0)),
        ("exp", Json::Now(600)),
        ("iss", Json::OurIssuer),
        ("aud", Json::OurAudience),
        ("jti", Json::Uuid(0x42)),
    ];
    let header = object(if forged.header_from_valid { &valid_header[..] } else { &[] }, &forged.header);
    let claims = object(if forged.claims_from_valid { &valid_claims[..] } else { &[] }, &forged.claims);
    let message = format!("{}.{}", URL_SAFE_NO_PAD.encode(&header), URL_SAFE_NO_PAD.encode(&claims));
    let token = match &forged.signature {
        Signature::RightKey => format!("{message}.{}", URL_SAFE_NO_PAD.encode(hmac(SECRET, &message))),
        Signature::OtherKey => format!("{message}.{}", URL_SAFE_NO_PAD.encode(hmac(OTHER_SECRET, &message))),
        Signature::Bytes(bytes) => format!("{message}.{}", URL_SAFE_NO_PAD.encode(bytes)),
        Signature::Empty => format!("{message}."),
        Signature::Missing => message.clone(),
    };
    let Ok(user) = KEYS.verify(&token) else { return };

    assert!(matches!(forged.signature, Signature::RightKey), "accepted a token not signed with the key: {token}");
    // Read back as the verifier reads them: serde, unknown members skipped, a repeated known
    // member refused. (A strict parse into `Value` would refuse what the verifier rightly skips,
    // such as an unknown member holding 1e999.)
    let header: HeaderView =
        serde_json::from_str(&header).unwrap_or_else(|e| panic!("accepted header {header} does not parse: {e}"));
    assert_eq!(header.alg.as_ref().and_then(Value::as_str), Some("HS256"), "accepted alg {:?}", header.alg);
    let parsed: ClaimsView =
        serde_json::from_str(&claims).unwrap_or_else(|e| panic!("accepted claims {claims} do not parse: {e}"));
    let str_claim = |claim: &Option<Value>| claim.as_ref().and_then(Value::as_str).map(str::to_owned);
    let num_claim = |claim: &Option<Value>| claim.as_ref().and_then(Value::as_u64);
    assert_eq!(str_claim(&parsed.iss).as_deref(), Some(ISSUER), "accepted iss in {claims}");
    assert_eq!(str_claim(&parsed.aud).as_deref(), Some(AUDIENCE), "accepted aud in {claims}");
    let sub = str_claim(&parsed.sub).unwrap_or_else(|| panic!("accepted without a string sub: {claims}"));
    assert_eq!(Uuid::try_parse(&sub).ok(), Some(user.id), "sub {sub:?} is not the returned user {}", user.id);
    assert_eq!(str_claim(&parsed.email), Some(user.email.clone()), "email differs from the returned one: {claims}");
    assert!(str_claim(&parsed.jti).is_some(), "accepted without a string jti: {claims}");
    let exp = num_claim(&parsed.exp).unwrap_or_else(|| panic!("accepted without a numeric exp: {claims}"));
    let iat = num_claim(&parsed.iat).unwrap_or_else(|| panic!("accepted without a numeric iat: {claims}"));
    // Re-read the clock: the check above may have run a moment earlier.
    let (leeway, now) = (LEEWAY.as_secs(), now());
    assert!(exp.saturating_add(leeway + 2) >= now, "accepted an expired token: exp {exp}, now {now}: {claims}");
    assert!(iat <= now + leeway, "accepted a token issued in the future: iat {iat}, now {now}");
    assert!(iat <= exp, "accepted iat {iat} after exp {exp}");
}

#[derive(Deserialize)]
struct HeaderView {
    alg: Option<Value>,
}

#[derive(Deserialize)]
struct ClaimsView {
    sub: Option<Value>,
    email: Option<Value>,
    iat: Option<Value>,
    exp: Option<Value>,
    iss: Option<Value>,
    aud: Option<Value>,
    jti: Option<Value>,
}

/// The JSON text of `base` after `edits`, members in order (duplicates kept, as on the wire).
fn object(base: &[(&str, Json)], edits: &[Edit]) -> String {
    let mut members: Vec<(String, String)> =
        base.iter().map(|(name, value)| ((*name).to_owned(), json(value))).collect();
    for edit in edits.iter().take(16) {
        match edit {
            Edit::Set(key, value) => match members.iter_mut().find(|(name, _)| name == key.name()) {
                Some(member) => member.1 = json(value),
                None => members.push((key.name().to_owned(), json(value))),
            },
            Edit::Remove(key) => members.retain(|(name, _)| name != key.name()),
            Edit::Duplicate(key, value) => members.push((key.name().to_owned(), json(value))),
        }
    }
    let members: Vec<String> =
        members.iter().map(|(name, value)| format!("{}:{value}", Value::from(name.as_str()))).collect();
    format!("{{{}}}", members.join(","))
}

fn json(value: &Json) -> String {
    let scalar = |s: &Scalar| match s {
        Scalar::Str(s) => Value::from(s.as_str()),
        Scalar::Int(i) => Value::from(*i),
        Scalar::OurAudience => Value::from(AUDIENCE),
        Scalar::OurIssuer => Value::from(ISSUER),
    };
    let value = match value {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::from(*b),
        Json::Now(delta) => Value::from(now().saturating_add_signed(i64::from(*delta))),
        Json::Int(i) => Value::from(*i),
        Json::UInt(u) => Value::from(*u),
        Json::Float(f) => Value::from(*f),
        Json::Str(s) => Value::from(s.as_str()),
        Json::Uuid(u) => Value::from(Uuid::from_u128(*u).to_string()),
        Json::OurIssuer => Value::from(ISSUER),
        Json::OurAudience => Value::from(AUDIENCE),
        Json::Alg(alg) => Value::from(match alg {
            AlgName::HS256 => "HS256",
            AlgName::HS384 => "HS384",
            AlgName::HS512 => "HS512",
            AlgName::RS256 => "RS256",
            AlgName::ES256 => "ES256",
            AlgName::EdDSA => "EdDSA",
            AlgName::None => "none",
            AlgName::LowerHs256 => "hs256",
        }),
        Json::Array(items) => Value::from(items.iter().take(4).map(scalar).collect::<Vec<_>>()),
        Json::RawText(text) => return text.clone(),
    };
    value.to_string()
}

fn hmac(key: &[u8], message: &str) -> Vec<u8> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(message.as_bytes());
    mac.finalize().into_bytes().to_vec()
}
