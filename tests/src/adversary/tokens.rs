//! Tokens: the wider catalogue of forged and malformed `authorization` values, each of which
//! must give UNAUTHENTICATED.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use uuid::Uuid;

use crate::{SECRET, bad_authorizations, claims_for, forge, now_secs};

fn sign_hs256(signing_input: &str, secret: &[u8]) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(secret).expect("hmac key");
    mac.update(signing_input.as_bytes());
    URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
}

fn jwt(algorithm: jsonwebtoken::Algorithm, claims: &serde_json::Value, secret: &[u8]) -> String {
    jsonwebtoken::encode(&jsonwebtoken::Header::new(algorithm), claims, &jsonwebtoken::EncodingKey::from_secret(secret))
        .expect("sign")
}

/// Every way of presenting a bad token this suite knows, for a token that would otherwise
/// name `user`: [`bad_authorizations`] plus transport-level, structural, algorithm and claim
/// attacks. Values are raw `authorization` bytes (some are not even ASCII); `None` sends none.
/// Each of them must give UNAUTHENTICATED.
pub fn token_attacks(user: Uuid) -> Vec<(String, Option<Vec<u8>>)> {
    let secret = SECRET.as_bytes();
    let good = forge("HS256", &claims_for(user), Some(secret));
    let parts: Vec<&str> = good.split('.').collect();
    let (header, payload, signature) = (parts[0], parts[1], parts[2]);
    let signed = |claims: &serde_json::Value| forge("HS256", claims, Some(secret));

    let mut attacks: Vec<(String, Option<String>)> =
        bad_authorizations(user).into_iter().map(|(label, value)| (label.to_owned(), value)).collect();
    let mut add = |label: &str, value: String| attacks.push((label.to_owned(), Some(value)));

    // The header value itself.
    add("`Bearer` alone", "Bearer".to_owned());
    add("`Bearer` and spaces", "Bearer    ".to_owned());
    add("token without a scheme", good.clone());
    add("Token scheme", format!("Token {good}"));
    add("Digest scheme", format!("Digest {good}"));
    add("Bearer glued to the token", format!("Bearer{good}"));
    add("valid token followed by junk", format!("Bearer {good} junk"));
    add("two tokens", format!("Bearer {good} {good}"));

    // Structure.
    add("one part", format!("Bearer {header}"));
    add("two parts", format!("Bearer {header}.{payload}"));
    add("two parts and a dot", format!("Bearer {header}.{payload}."));
    add("four parts", format!("Bearer {good}.{signature}"));
    add("four parts, last empty", format!("Bearer {good}."));
    add("five parts", format!("Bearer {good}.{header}.{payload}"));
    add("empty parts", "Bearer ..".to_owned());
    add("non-base64 characters", format!("Bearer {header}.{payload}.{}!*$", &signature[..signature.len() - 3]));
    add("standard base64 alphabet", format!("Bearer {}+/.{payload}.{signature}", &header[..header.len() - 2]));
    add("padded base64", format!("Bearer {header}==.{payload}.{signature}"));
    add("header not JSON", format!("Bearer {}.{payload}.{signature}", URL_SAFE_NO_PAD.encode("not json")));
    add("payload not JSON", {
        let input = format!("{header}.{}", URL_SAFE_NO_PAD.encode("not json"));
        format!("Bearer {input}.{}", sign_hs256(&input, secret))
    });
    add("payload a JSON array", {
        let input = format!("{header}.{}", URL_SAFE_NO_PAD.encode("[1,2,3]"));
        format!("Bearer {input}.{}", sign_hs256(&input, secret))
    });
    add("oversized token (11 KiB, under the transport's header limit)", {
        let mut claims = claims_for(user);
        claims["padding"] = serde_json::json!("A".repeat(8 * 1024));
        format!("Bearer {}", forge("HS256", &claims, Some(b"another-secret-another-secret-another")))
    });
    add("oversized garbage (12 KiB)", format!("Bearer {}", "x".repeat(12 * 1024)));

    // Algorithms.
    for alg in ["none", "None", "NONE", "nOnE"] {
        add(&format!("alg {alg:?}, empty signature"), format!("Bearer {}", forge(alg, &claims_for(user), None)));
    }
    add("alg none with the real signature", {
        let unsigned = forge("none", &claims_for(user), None);
        format!("Bearer {unsigned}{signature}")
    });
    add("HS384 header over an HS256 signature", format!("Bearer {}", forge("HS384", &claims_for(user), Some(secret))));
    add("HS384 token", format!("Bearer {}", jwt(jsonwebtoken::Algorithm::HS384, &claims_for(user), secret)));
    add("HS512 header over an HS256 signature", format!("Bearer {}", forge("HS512", &claims_for(user), Some(secret))));
    add("RS256 header, HMAC signature (algorithm confusion)", {
        format!("Bearer {}", forge("RS256", &claims_for(user), Some(secret)))
    });
    add("ES256 header", format!("Bearer {}", forge("ES256", &claims_for(user), Some(secret))));
    add("EdDSA header", format!("Bearer {}", forge("EdDSA", &claims_for(user), Some(secret))));
    add("unknown alg", format!("Bearer {}", forge("HS257", &claims_for(user), Some(secret))));
    add("header without alg", {
        let header = URL_SAFE_NO_PAD.encode(r#"{"typ":"JWT"}"#);
        let input = format!("{header}.{payload}");
        format!("Bearer {input}.{}", sign_hs256(&input, secret))
    });

    // Signatures.
    add("one flipped signature bit", {
        let mut bytes = URL_SAFE_NO_PAD.decode(signature).expect("signature");
        bytes[0] ^= 0x01;
        format!("Bearer {header}.{payload}.{}", URL_SAFE_NO_PAD.encode(bytes))
    });
    add("last signature bit flipped", {
        let mut bytes = URL_SAFE_NO_PAD.decode(signature).expect("signature");
        *bytes.last_mut().expect("signature byte") ^= 0x01;
        format!("Bearer {header}.{payload}.{}", URL_SAFE_NO_PAD.encode(bytes))
    });
    add("truncated signature", format!("Bearer {header}.{payload}.{}", &signature[..22]));
    add("empty signature", format!("Bearer {header}.{payload}."));
    add("payload changed (longer expiry) without re-signing", {
        let mut claims = claims_for(user);
        claims["exp"] = serde_json::json!(now_secs() + 10 * 365 * 24 * 3600);
        format!("Bearer {header}.{}.{signature}", URL_SAFE_NO_PAD.encode(claims.to_string()))
    });
    add("signed with an empty key", format!("Bearer {}", forge("HS256", &claims_for(user), Some(b""))));
    add("signed with the secret plus one byte", {
        let mut longer = secret.to_vec();
        longer.push(b'!');
        format!("Bearer {}", forge("HS256", &claims_for(user), Some(&longer)))
    });

    // Claims, well signed.
    let mut expired = claims_for(user);
    expired["iat"] = serde_json::json!(now_secs() - 3600);
    expired["exp"] = serde_json::json!(now_secs() - 45);
    add("expired 45 s ago (beyond the 30 s leeway)", format!("Bearer {}", signed(&expired)));
    for claim in ["exp", "sub", "iss", "aud", "iat", "email", "jti"] {
        let mut claims = claims_for(user);
        claims.as_object_mut().expect("object").remove(claim);
        add(&format!("missing {claim}"), format!("Bearer {}", signed(&claims)));
    }
    for (label, claim, value) in [
        ("exp as a string", "exp", serde_json::json!((now_secs() + 3600).to_string())),
        ("exp as a float", "exp", serde_json::json!((now_secs() + 3600) as f64 + 0.5)),
        ("exp negative", "exp", serde_json::json!(-1)),
        ("exp null", "exp", serde_json::Value::Null),
        ("sub not a UUID", "sub", serde_json::json!("42")),
        ("sub empty", "sub", serde_json::json!("")),
        ("sub a path", "sub", serde_json::json!("../../admin")),
        ("sub a number", "sub", serde_json::json!(42)),
        ("sub a UUID with junk", "sub", serde_json::json!(format!("{user}x"))),
        ("iss empty", "iss", serde_json::json!("")),
        ("iss differs in case", "iss", serde_json::json!(crate::ISSUER.to_uppercase())),
        ("aud empty", "aud", serde_json::json!("")),
        ("aud differs in case", "aud", serde_json::json!(crate::AUDIENCE.to_uppercase())),
        ("aud a list without ours", "aud", serde_json::json!(["someone-else"])),
        ("iat far in the future", "iat", serde_json::json!(now_secs() + 3600)),
    ] {
        let mut claims = claims_for(user);
        claims[claim] = value;
        add(label, format!("Bearer {}", signed(&claims)));
    }

    let mut attacks: Vec<(String, Option<Vec<u8>>)> =
        attacks.into_iter().map(|(label, value)| (label, value.map(String::into_bytes))).collect();
    // Bytes no JWT can contain (obs-text, legal in a header value).
    let mut non_ascii = format!("Bearer {header}.{payload}.").into_bytes();
    non_ascii.extend_from_slice(&[0xC3, 0xA9, 0xFF, 0x80]);
    attacks.push(("non-ASCII bytes".to_owned(), Some(non_ascii)));
    attacks
}
