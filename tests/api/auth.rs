//! auth-service, observed through its generated client.

use argon2::PasswordHasher as _;
use todo_tests::pb::auth::v1::{GetCurrentUserRequest, LoginRequest, SignUpRequest};
use todo_tests::*;
use tonic::Code;

on_both_backends!(
    sign_up_then_login_then_get_current_user,
    login_token_carries_every_claim_and_expires_in_seven_days,
    duplicate_email_in_another_case_is_already_exists,
    an_email_typed_composed_or_decomposed_is_one_account,
    an_account_stored_before_nfc_still_logs_in_and_has_no_twin,
    password_length_is_counted_after_normalisation,
    concurrent_duplicate_sign_ups_have_exactly_one_winner,
    each_invalid_email_and_password_class_names_its_field,
    unknown_email_is_indistinguishable_from_wrong_password,
    bad_tokens_are_unauthenticated_for_get_current_user,
    token_of_a_deleted_user_is_rejected,
    concurrent_get_current_user_answers_each_caller_with_its_own_account,
    weaker_password_hash_is_upgraded_on_login,
);

fn sign_up(email: &str, password: &str) -> SignUpRequest {
    SignUpRequest { email: email.into(), password: password.into() }
}

fn login(email: &str, password: &str) -> LoginRequest {
    LoginRequest { email: email.into(), password: password.into() }
}

async fn sign_up_then_login_then_get_current_user(backend: Backend) {
    let auth = start_auth(backend).await;
    let mut client = auth_client(&auth).await;

    let user = client
        .sign_up(sign_up("  Ada@Example.COM ", "correct horse battery"))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    assert_eq!(user.email, "ada@example.com");
    let id = uuid::Uuid::parse_str(&user.id).unwrap();
    assert!(user.create_time.is_some());

    let stored_hash = auth.db.text("SELECT password_hash FROM users WHERE id = $1", id).await;
    assert!(stored_hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{stored_hash}");
    assert!(!stored_hash.contains("correct horse"));

    let session = client.login(login("ADA@example.com", "correct horse battery")).await.unwrap().into_inner();
    assert_eq!(session.token_type, "bearer");
    assert_eq!(session.expires_in, 604_800);
    assert_eq!(session.user.as_ref(), Some(&user));

    let me = client
        .get_current_user(bearer(&session.access_token, GetCurrentUserRequest {}))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    assert_eq!(me, user);
}

async fn login_token_carries_every_claim_and_expires_in_seven_days(backend: Backend) {
    let auth = start_auth(backend).await;
    let mut client = auth_client(&auth).await;
    let user =
        client.sign_up(sign_up("claims@example.com", "tulip-anchor-93")).await.unwrap().into_inner().user.unwrap();
    let before = now_secs();
    let token = client.login(login("claims@example.com", "tulip-anchor-93")).await.unwrap().into_inner().access_token;

    let header = payload_of(&format!("x.{}", token.split('.').next().unwrap()));
    assert_eq!(header["alg"], "HS256");
    let claims = payload_of(&token);
    assert_eq!(claims["sub"], user.id.as_str());
    assert_eq!(claims["email"], "claims@example.com");
    assert_eq!(claims["iss"], ISSUER);
    assert_eq!(claims["aud"], AUDIENCE);
    assert!(uuid::Uuid::parse_str(claims["jti"].as_str().unwrap()).is_ok());
    let iat = claims["iat"].as_i64().unwrap();
    assert!((before..=before + 5).contains(&iat));
    assert_eq!(claims["exp"].as_i64().unwrap() - iat, 7 * 24 * 3600);

    let second = client.login(login("claims@example.com", "tulip-anchor-93")).await.unwrap().into_inner().access_token;
    assert_ne!(payload_of(&second)["jti"], claims["jti"], "every token has its own jti");
}

async fn duplicate_email_in_another_case_is_already_exists(backend: Backend) {
    let auth = start_auth(backend).await;
    let mut client = auth_client(&auth).await;
    client.sign_up(sign_up("dup@example.com", "tulip-anchor-93")).await.unwrap();

    let err = client.sign_up(sign_up(" DUP@Example.com", "another-password")).await.unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);
    assert_eq!(err.message(), "an account with this email already exists");
    assert_eq!(auth.db.scalar("SELECT count(*) FROM users", None).await, 1);
}

async fn an_email_typed_composed_or_decomposed_is_one_account(backend: Backend) {
    let auth = start_auth(backend).await;
    let mut client = auth_client(&auth).await;
    // "josé" with a combining accent (as some keyboards and macOS file names produce it).
    let user = client.sign_up(sign_up("jose\u{301}@example.com", "tulip-anchor-93")).await.unwrap().into_inner();
    assert_eq!(user.user.unwrap().email, "jos\u{e9}@example.com", "stored composed (NFC)");

    // The precomposed spelling logs in to that account and cannot sign up a look-alike.
    let session = client.login(login("Jos\u{e9}@example.com", "tulip-anchor-93")).await.unwrap().into_inner();
    assert_eq!(session.user.unwrap().email, "jos\u{e9}@example.com");
    let err = client.sign_up(sign_up("jos\u{e9}@example.com", "another-password")).await.unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);
    assert_eq!(auth.db.scalar("SELECT count(*) FROM users", None).await, 1);
}

async fn an_account_stored_before_nfc_still_logs_in_and_has_no_twin(backend: Backend) {
    let auth = start_auth(backend).await;
    let mut client = auth_client(&auth).await;
    let user = client.sign_up(sign_up("jos\u{e9}@example.com", "tulip-anchor-93")).await.unwrap().into_inner();
    let id = uuid::Uuid::parse_str(&user.user.unwrap().id).unwrap();
    // As an account created before emails were stored in NFC holds it: decomposed, as typed.
    let decomposed = "jose\u{301}@example.com";
    assert_eq!(auth.db.execute("UPDATE users SET email = $2 WHERE id = $1", id, Some(decomposed)).await, 1);

    // Typed either way, it still logs in, and to that account.
    for typed in [decomposed, "Jos\u{e9}@example.com"] {
        let session = client.login(login(typed, "tulip-anchor-93")).await.unwrap().into_inner();
        assert_eq!(session.user.unwrap().id, id.to_string(), "{typed:?}");
        let err = client.login(login(typed, "wrong-password-1")).await.unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated, "{typed:?}");
    }
    // And neither spelling can sign up a look-alike twin.
    for typed in [decomposed, "jos\u{e9}@example.com"] {
        let err = client.sign_up(sign_up(typed, "another-password")).await.unwrap_err();
        assert_eq!(err.code(), Code::AlreadyExists, "{typed:?}");
    }
    assert_eq!(auth.db.scalar("SELECT count(*) FROM users", None).await, 1);
}

async fn password_length_is_counted_after_normalisation(backend: Backend) {
    let auth = start_auth(backend).await;
    let mut client = auth_client(&auth).await;
    // Four "ffi" ligatures: 4 code points, 12 characters once NFKC-normalised.
    let ligatures = "\u{fb03}".repeat(4);
    client.sign_up(sign_up("lig@example.com", &ligatures)).await.unwrap();
    // The same password typed without ligatures is the same secret.
    client.login(login("lig@example.com", "ffiffiffiffi")).await.unwrap();

    // 129 accented letters typed decomposed: 258 code points, 129 characters: one too many.
    let err = client.sign_up(sign_up("long@example.com", &"e\u{301}".repeat(129))).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&err), ["password"]);
    assert!(err.message().contains("must be at most 128 characters"), "{}", err.message());
    assert_eq!(auth.db.scalar("SELECT count(*) FROM users", None).await, 1);
}

async fn concurrent_duplicate_sign_ups_have_exactly_one_winner(backend: Backend) {
    let auth = start_auth(backend).await;
    let attempts: Vec<_> = [
        "race@example.com",
        "RACE@example.com",
        "Race@Example.com",
        " race@EXAMPLE.com",
        "race@example.COM",
        "rAce@example.com",
    ]
    .into_iter()
    .map(|email| {
        let url = auth.url();
        tokio::spawn(async move {
            let mut client =
                todo_tests::pb::auth::v1::auth_service_client::AuthServiceClient::connect(url).await.unwrap();
            client.sign_up(sign_up(email, "tulip-anchor-93")).await.map(|_| ()).map_err(|s| s.code())
        })
    })
    .collect();
    let mut results = Vec::new();
    for attempt in attempts {
        results.push(attempt.await.unwrap());
    }
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1, "{results:?}");
    assert!(results.iter().filter_map(|r| r.err()).all(|code| code == Code::AlreadyExists), "{results:?}");
    assert_eq!(auth.db.scalar("SELECT count(*) FROM users", None).await, 1);
}

async fn each_invalid_email_and_password_class_names_its_field(backend: Backend) {
    let auth = start_auth(backend).await;
    let mut client = auth_client(&auth).await;
    let long_email = format!("{}@example.com", "a".repeat(243));
    let cases: Vec<(&str, SignUpRequest, Vec<&str>)> = vec![
        ("empty email", sign_up("", "tulip-anchor-93"), vec!["email"]),
        ("whitespace email", sign_up("   ", "tulip-anchor-93"), vec!["email"]),
        ("no at sign", sign_up("ada.example.com", "tulip-anchor-93"), vec!["email"]),
        ("no domain dot", sign_up("ada@example", "tulip-anchor-93"), vec!["email"]),
        ("space inside", sign_up("a da@example.com", "tulip-anchor-93"), vec!["email"]),
        ("255 characters", sign_up(&long_email, "tulip-anchor-93"), vec!["email"]),
        ("empty password", sign_up("ok@example.com", ""), vec!["password"]),
        ("7-character password", sign_up("ok@example.com", "1234567"), vec!["password"]),
        ("129-character password", sign_up("ok@example.com", &"p".repeat(129)), vec!["password"]),
        ("both bad", sign_up("nope", "short"), vec!["email", "password"]),
        ("common password", sign_up("ok@example.com", "iloveyou1"), vec!["password"]),
        ("common password, other case", sign_up("ok@example.com", "PassWord123"), vec!["password"]),
        ("the email itself", sign_up("Grace.Hopper@example.com", "grace.hopper@example.com"), vec!["password"]),
        ("the email's local part", sign_up("grace.hopper@example.com", "Grace.Hopper"), vec!["password"]),
    ];
    for (label, request, fields) in cases {
        let err = client.sign_up(request).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{label}");
        assert_eq!(violated_fields(&err), fields, "{label}");
    }
    let common = client.sign_up(sign_up("ok@example.com", "sunshine1")).await.unwrap_err();
    assert!(common.message().contains("most common passwords"), "the reason is given: {}", common.message());
    assert_eq!(auth.db.scalar("SELECT count(*) FROM users", None).await, 0);

    // The boundaries themselves are accepted, Unicode included.
    client.sign_up(sign_up("eight@example.com", "9x4!kq2z")).await.unwrap();
    client.sign_up(sign_up("long@example.com", &"é".repeat(128))).await.unwrap();
    client.login(login("long@example.com", &"é".repeat(128))).await.unwrap();
}

async fn unknown_email_is_indistinguishable_from_wrong_password(backend: Backend) {
    let auth = start_auth(backend).await;
    let mut client = auth_client(&auth).await;
    client.sign_up(sign_up("known@example.com", "tulip-anchor-93")).await.unwrap();

    // One request id for both: it is in every error's details, and those are compared below.
    let same = |message| with_request_id(tonic::Request::new(message), "compare-2");
    let wrong_password = client.login(same(login("known@example.com", "password124"))).await.unwrap_err();
    let unknown_email = client.login(same(login("unknown@example.com", "tulip-anchor-93"))).await.unwrap_err();
    assert_eq!(wrong_password.code(), Code::Unauthenticated);
    assert_eq!(unknown_email.code(), Code::Unauthenticated);
    assert_eq!(wrong_password.message(), unknown_email.message());
    assert_eq!(wrong_password.details(), unknown_email.details());

    let empty = client.login(login("", "")).await.unwrap_err();
    assert_eq!(empty.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&empty), ["email", "password"]);
}

async fn bad_tokens_are_unauthenticated_for_get_current_user(backend: Backend) {
    let auth = start_auth(backend).await;
    let mut client = auth_client(&auth).await;
    let user =
        client.sign_up(sign_up("victim@example.com", "tulip-anchor-93")).await.unwrap().into_inner().user.unwrap();
    let id = uuid::Uuid::parse_str(&user.id).unwrap();

    for (label, authorization) in bad_authorizations(id) {
        let err = client.get_current_user(authorized(&authorization, GetCurrentUserRequest {})).await.unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated, "{label}: {err:?}");
        if let Some(value) = &authorization {
            let token = value.rsplit(' ').next().unwrap_or_default();
            assert!(token.len() < 8 || !err.message().contains(token), "{label}: the token is echoed");
        }
    }
    // Control: the same claims, correctly signed, are accepted.
    let good = forge("HS256", &claims_for(id), Some(SECRET.as_bytes()));
    client.get_current_user(bearer(&good, GetCurrentUserRequest {})).await.unwrap();
}

async fn token_of_a_deleted_user_is_rejected(backend: Backend) {
    let auth = start_auth(backend).await;
    let mut client = auth_client(&auth).await;
    let user = client.sign_up(sign_up("gone@example.com", "tulip-anchor-93")).await.unwrap().into_inner().user.unwrap();
    let token = client.login(login("gone@example.com", "tulip-anchor-93")).await.unwrap().into_inner().access_token;
    let id = uuid::Uuid::parse_str(&user.id).unwrap();
    assert_eq!(auth.db.execute("DELETE FROM users WHERE id = $1", id, None).await, 1);

    let err = client.get_current_user(bearer(&token, GetCurrentUserRequest {})).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert_eq!(err.message(), REVOKED);
}

/// Many GetCurrentUsers at once (on PostgreSQL they share queries under load): each caller
/// gets its own account, and a token whose user does not exist gets UNAUTHENTICATED.
async fn concurrent_get_current_user_answers_each_caller_with_its_own_account(backend: Backend) {
    let auth = start_auth(backend).await;
    let mut client = auth_client(&auth).await;
    let mut accounts = Vec::new();
    for i in 0..4 {
        let email = format!("user{i}@example.com");
        let user = client.sign_up(sign_up(&email, "tulip-anchor-93")).await.unwrap().into_inner().user.unwrap();
        let id = uuid::Uuid::parse_str(&user.id).unwrap();
        let token = keys().mint(id, &email, std::time::Duration::from_secs(600)).unwrap().token;
        accounts.push((Some(user), token));
    }
    let ghost = caller();
    accounts.push((None, ghost.token));

    let mut clients = Vec::new();
    for _ in 0..8 {
        clients.push(auth_client(&auth).await);
    }
    let mut handles = Vec::new();
    for worker in 0..64 {
        let mut client = clients[worker % clients.len()].clone();
        let (expected, token) = accounts[worker % accounts.len()].clone();
        handles.push(tokio::spawn(async move {
            (expected, client.get_current_user(bearer(&token, GetCurrentUserRequest {})).await)
        }));
    }
    for handle in handles {
        match handle.await.unwrap() {
            (Some(expected), got) => assert_eq!(got.unwrap().into_inner().user, Some(expected)),
            (None, got) => {
                let err = got.unwrap_err();
                assert_eq!((err.code(), err.message()), (Code::Unauthenticated, REVOKED));
            }
        }
    }
}

async fn weaker_password_hash_is_upgraded_on_login(backend: Backend) {
    let auth = start_auth(backend).await;
    let mut client = auth_client(&auth).await;
    let user =
        client.sign_up(sign_up("legacy@example.com", "tulip-anchor-93")).await.unwrap().into_inner().user.unwrap();
    let id = uuid::Uuid::parse_str(&user.id).unwrap();
    let weak = argon2::Argon2::new(
        argon2::Algorithm::Argon2id,
        argon2::Version::V0x13,
        argon2::Params::new(4096, 1, 1, None).unwrap(),
    )
    .hash_password(b"tulip-anchor-93")
    .unwrap()
    .to_string();
    auth.db.execute("UPDATE users SET password_hash = $2 WHERE id = $1", id, Some(&weak)).await;

    client.login(login("legacy@example.com", "tulip-anchor-93")).await.unwrap();
    let upgraded = auth.db.text("SELECT password_hash FROM users WHERE id = $1", id).await;
    assert!(upgraded.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{upgraded}");
    client.login(login("legacy@example.com", "tulip-anchor-93")).await.unwrap();
}
