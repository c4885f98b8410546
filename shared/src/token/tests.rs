use super::*;

fn keys() -> TokenKeys {
    let secret = JwtSecret::new(vec![7u8; 32]).unwrap();
    TokenKeys::new(&secret, "iss", "aud").unwrap()
}

#[test]
fn short_secret_is_refused() {
    assert!(JwtSecret::new(vec![1u8; 31]).is_err());
    assert!(JwtSecret::new(vec![1u8; 32]).is_ok());
}

#[test]
fn secret_debug_is_redacted() {
    let secret = JwtSecret::new(b"super-secret-value-that-is-32-bytes!".to_vec()).unwrap();
    assert!(!format!("{secret:?}").contains("super"));
}

#[test]
fn minted_token_verifies_with_its_claims() {
    let keys = keys();
    let id = Uuid::new_v4();
    let minted = keys.mint(id, "a@b.co", Duration::from_secs(600)).unwrap();
    assert_eq!(minted.claims.exp - minted.claims.iat, 600);
    let user = keys.verify(&minted.token).unwrap();
    assert_eq!(user.id, id);
    assert_eq!(user.email, "a@b.co");
}

#[test]
fn non_uuid_subject_is_refused() {
    let keys = keys();
    let mut claims = keys.mint(Uuid::new_v4(), "a@b.co", Duration::from_secs(60)).unwrap().claims;
    claims.sub = "42".into();
    let token = keys.sign(&claims).unwrap();
    assert_eq!(keys.verify(&token), Err(TokenError::Claims));
}

#[test]
fn iat_in_the_future_is_refused() {
    let keys = keys();
    let mut claims = keys.mint(Uuid::new_v4(), "a@b.co", Duration::from_secs(60)).unwrap().claims;
    claims.iat += 3600;
    claims.exp += 7200;
    let token = keys.sign(&claims).unwrap();
    assert_eq!(keys.verify(&token), Err(TokenError::NotYetValid));
}

#[test]
fn an_unsigned_token_is_refused_for_its_algorithm() {
    use base64::Engine as _;
    let keys = keys();
    let claims = keys.mint(Uuid::new_v4(), "a@b.co", Duration::from_secs(60)).unwrap().claims;
    let b64 = |v: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
    let payload = b64(&serde_json::to_vec(&claims).unwrap());
    for alg in ["none", "None", "HS1024"] {
        let header = b64(format!("{{\"alg\":\"{alg}\",\"typ\":\"JWT\"}}").as_bytes());
        assert_eq!(keys.verify(&format!("{header}.{payload}.")), Err(TokenError::Algorithm), "{alg}");
    }
    let header = b64(b"{\"typ\":\"JWT\"}");
    assert_eq!(keys.verify(&format!("{header}.{payload}.")), Err(TokenError::Malformed));
    // A known algorithm with another header field of the wrong type is malformed, not "the
    // algorithm is not accepted".
    let header = b64(b"{\"alg\":\"HS256\",\"kid\":5}");
    assert_eq!(keys.verify(&format!("{header}.{payload}.")), Err(TokenError::Malformed));
    assert_eq!(keys.verify(&format!("{}.{payload}.", b64(b"not json"))), Err(TokenError::Malformed));
}

#[test]
fn a_remembered_token_is_accepted_again_and_a_tampered_one_is_not() {
    let keys = keys();
    let id = Uuid::new_v4();
    let token = keys.mint(id, "a@b.co", Duration::from_secs(600)).unwrap().token;
    assert_eq!(keys.verify(&token).unwrap().id, id);
    assert_eq!(keys.verify(&token).unwrap().id, id);
    // Same header and claims, another signature: not the remembered string, fully checked.
    let mut forged = token.clone();
    let last = forged.pop().unwrap();
    forged.push(if last == 'A' { 'B' } else { 'A' });
    assert!(keys.verify(&forged).is_err());
}

#[test]
fn a_remembered_token_expires_like_any_other() {
    let keys = keys();
    let token = keys.mint(Uuid::new_v4(), "a@b.co", Duration::from_secs(600)).unwrap().token;
    let (_, exp) = keys.verify_fully(&token).unwrap();
    let now = jsonwebtoken::get_current_timestamp();
    keys.remember(
        &token,
        &AuthenticatedUser { id: Uuid::nil(), email: String::new(), session_id: None, issued_at: 0, expires_at: 0 },
        exp,
        now,
    );
    assert!(keys.remembered(&token, exp + LEEWAY.as_secs()).is_some());
    assert!(keys.remembered(&token, exp + LEEWAY.as_secs() + 1).is_none());
    assert!(keys.verified.lock().unwrap().is_empty(), "the expired entry was kept");
}

#[test]
fn the_cache_stays_bounded() {
    let keys = keys();
    for _ in 0..VERIFIED_CACHE_ENTRIES + 10 {
        let token = keys.mint(Uuid::new_v4(), "a@b.co", Duration::from_secs(600)).unwrap().token;
        keys.verify(&token).unwrap();
    }
    assert!(keys.verified.lock().unwrap().len() <= VERIFIED_CACHE_ENTRIES);
}

#[test]
fn garbage_is_malformed() {
    assert_eq!(keys().verify("not.a.jwt"), Err(TokenError::Malformed));
    assert_eq!(keys().verify(""), Err(TokenError::Malformed));
}

fn secret(byte: u8) -> JwtSecret {
    JwtSecret::new(vec![byte; 32]).unwrap()
}

#[test]
fn session_tokens_carry_sid_and_kid() {
    let keys = keys();
    let (id, session) = (Uuid::new_v4(), Uuid::new_v4());
    let minted = keys.mint_for_session(id, "a@b.co", session, Duration::from_secs(600)).unwrap();
    assert_eq!(minted.claims.sid, Some(session.to_string()));
    let header = jsonwebtoken::decode_header(&minted.token).unwrap();
    assert_eq!(header.kid.as_deref(), Some(keys.signing_key_id()));
    assert_eq!(keys.signing_key_id().len(), 16);
    let user = keys.verify(&minted.token).unwrap();
    assert_eq!((user.session_id, user.issued_at), (Some(session), minted.claims.iat));
}

#[test]
fn rotation_accepts_both_secrets_and_refuses_an_unknown_kid() {
    let old = TokenKeys::new(&secret(1), "iss", "aud").unwrap();
    let new = TokenKeys::new(&secret(2), "iss", "aud").unwrap();
    let both = TokenKeys::with_verification_secrets(&secret(2), &[secret(1)], "iss", "aud").unwrap();
    let by_old = old.mint_for_session(Uuid::new_v4(), "a@b.co", Uuid::new_v4(), Duration::from_secs(60)).unwrap();
    let by_new = new.mint_for_session(Uuid::new_v4(), "a@b.co", Uuid::new_v4(), Duration::from_secs(60)).unwrap();
    assert!(both.verify(&by_old.token).is_ok());
    assert!(both.verify(&by_new.token).is_ok());
    assert_eq!(new.verify(&by_old.token), Err(TokenError::UnknownKey));
    assert_ne!(old.signing_key_id(), new.signing_key_id());
}

#[test]
fn a_token_without_kid_is_tried_with_every_key() {
    let both = TokenKeys::with_verification_secrets(&secret(2), &[secret(1)], "iss", "aud").unwrap();
    let old = TokenKeys::new(&secret(1), "iss", "aud").unwrap();
    let claims = old.mint(Uuid::new_v4(), "a@b.co", Duration::from_secs(60)).unwrap().claims;
    let legacy = jsonwebtoken::encode(&Header::new(ALGORITHM), &claims, &EncodingKey::from_secret(&[1u8; 32])).unwrap();
    assert!(both.verify(&legacy).is_ok());
    let stranger =
        jsonwebtoken::encode(&Header::new(ALGORITHM), &claims, &EncodingKey::from_secret(&[9u8; 32])).unwrap();
    assert_eq!(both.verify(&stranger), Err(TokenError::BadSignature));
}

#[test]
fn service_and_user_tokens_never_stand_in_for_each_other() {
    let keys = keys();
    let service = keys.mint_service_token("task-service").unwrap();
    assert_eq!(keys.verify_service_token(&service).unwrap(), "task-service");
    assert!(keys.verify(&service).is_err());
    let user = keys.mint_for_session(Uuid::new_v4(), "a@b.co", Uuid::new_v4(), Duration::from_secs(60)).unwrap();
    assert!(keys.verify_service_token(&user.token).is_err());
}

#[test]
fn a_sid_that_is_not_a_uuid_is_refused() {
    let keys = keys();
    let mut claims = keys.mint(Uuid::new_v4(), "a@b.co", Duration::from_secs(60)).unwrap().claims;
    claims.sid = Some("nope".into());
    assert_eq!(keys.verify(&keys.sign(&claims).unwrap()), Err(TokenError::Claims));
}
