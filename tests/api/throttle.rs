//! Login and sign-up throttling: per client address and per normalised email, counted
//! atomically before any hashing, the same for unknown and known emails; on PostgreSQL, one
//! allowance however many replicas share the database.

use std::time::Duration;

use auth_service::throttle::{Rate, ThrottleConfig, TrustedProxies};
use todo_contract::auth::v1::{LoginRequest, SignUpRequest};
use todo_tests::*;
use tonic::Code;
use tonic_types::StatusExt as _;

on_both_backends!(
    the_email_limit_holds_under_parallel_attempts_and_treats_unknown_emails_alike,
    the_address_limit_counts_sign_ups_and_logins_together,
    forwarded_for_is_believed_only_from_a_trusted_proxy,
    refresh_and_wrong_current_passwords_are_throttled,
);

const PASSWORD: &str = "plum-kettle-orbit-42";

async fn start_throttled(backend: Backend, throttle: ThrottleConfig) -> Running {
    replica(TestDb::new(backend).await.into(), throttle).await
}

/// An auth-service on `db` with `throttle` and its metrics served.
async fn replica(db: std::sync::Arc<TestDb>, throttle: ThrottleConfig) -> Running {
    let mut config = auth_config(&db);
    config.throttle = throttle;
    config.metrics_addr = Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
    start_auth_with(config, db).await
}

fn per_minute(count: u32) -> Option<Rate> {
    Some(Rate::per_minute(count))
}

fn login(email: &str, password: &str) -> LoginRequest {
    LoginRequest { email: email.into(), password: password.into() }
}

/// Fires `n` logins at once; returns (code, message) of each.
async fn parallel_logins(auth: &Running, n: usize, email: &str, password: &str) -> Vec<(Code, String)> {
    spread_logins(&[auth], n, email, password).await
}

/// Fires `n` logins at once, the i-th to `replicas[i % len]`; returns (code, message) of each.
async fn spread_logins(replicas: &[&Running], n: usize, email: &str, password: &str) -> Vec<(Code, String)> {
    let mut handles = Vec::new();
    for i in 0..n {
        let mut client = auth_client(replicas[i % replicas.len()]).await;
        let request = login(email, password);
        handles.push(tokio::spawn(async move {
            match client.login(request).await {
                Ok(_) => (Code::Ok, String::new()),
                Err(status) => {
                    if status.code() == Code::ResourceExhausted {
                        assert!(status.get_details_retry_info().is_some(), "RetryInfo is attached: {status:?}");
                    }
                    (status.code(), status.message().to_owned())
                }
            }
        }));
    }
    let mut results = Vec::new();
    for handle in handles {
        results.push(handle.await.unwrap());
    }
    results
}

fn count(results: &[(Code, String)], code: Code) -> usize {
    results.iter().filter(|(c, _)| *c == code).count()
}

/// The message without its "retry in N s" figure.
fn reason(message: &str) -> &str {
    message.split(": retry in").next().unwrap_or(message)
}

async fn the_email_limit_holds_under_parallel_attempts_and_treats_unknown_emails_alike(backend: Backend) {
    let throttle =
        ThrottleConfig { per_address: None, per_email: per_minute(5), trusted_proxies: TrustedProxies::default() };
    let auth = start_throttled(backend, throttle).await;
    let mut client = auth_client(&auth).await;
    client.sign_up(SignUpRequest { email: "Known@Example.com".into(), password: PASSWORD.into() }).await.unwrap();

    // 20 guesses at once: the sign-up spent one of the 5, so exactly 4 get a password check.
    let known = parallel_logins(&auth, 20, " known@example.COM ", "wrong-guess-1").await;
    assert_eq!(count(&known, Code::Unauthenticated), 4, "{known:?}");
    assert_eq!(count(&known, Code::ResourceExhausted), 16, "{known:?}");
    // An email nobody has: the same 5-then-refuse answers (no sign-up spent one here).
    let unknown = parallel_logins(&auth, 20, "nobody@example.com", "wrong-guess-1").await;
    assert_eq!(count(&unknown, Code::Unauthenticated), 5, "{unknown:?}");
    assert_eq!(count(&unknown, Code::ResourceExhausted), 15, "{unknown:?}");
    let refusal = |results: &[(Code, String)]| {
        results.iter().find(|(c, _)| *c == Code::ResourceExhausted).map(|(_, m)| reason(m).to_owned()).unwrap()
    };
    assert_eq!(refusal(&known), refusal(&unknown), "refusals must not tell known from unknown emails");
    assert!(refusal(&known).contains("this email address"), "{}", refusal(&known));

    // The right password is refused too while the email is throttled: guessing cannot get
    // around the limit, and another email is unaffected.
    let right = client.login(login("known@example.com", PASSWORD)).await.unwrap_err();
    assert_eq!(right.code(), Code::ResourceExhausted);
    client.sign_up(SignUpRequest { email: "other@example.com".into(), password: PASSWORD.into() }).await.unwrap();
    client.login(login("other@example.com", PASSWORD)).await.unwrap();
    assert_eq!(auth.db.scalar("SELECT count(*) FROM users", None).await, 2);
}

async fn the_address_limit_counts_sign_ups_and_logins_together(backend: Backend) {
    let throttle =
        ThrottleConfig { per_address: per_minute(4), per_email: None, trusted_proxies: TrustedProxies::default() };
    let auth = start_throttled(backend, throttle).await;
    let mut client = auth_client(&auth).await;
    for email in ["a@example.com", "b@example.com"] {
        client.sign_up(SignUpRequest { email: email.into(), password: PASSWORD.into() }).await.unwrap();
        client.login(login(email, PASSWORD)).await.unwrap();
    }
    let refused =
        client.sign_up(SignUpRequest { email: "c@example.com".into(), password: PASSWORD.into() }).await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted);
    assert!(refused.message().contains("from your address"), "{}", refused.message());
    let delay = refused.get_details_retry_info().and_then(|r| r.retry_delay).expect("RetryInfo");
    assert!(delay > Duration::ZERO && delay <= Duration::from_secs(15), "{delay:?}");
    assert_eq!(auth.db.scalar("SELECT count(*) FROM users", None).await, 2, "the refused sign-up wrote nothing");
    // Invalid requests are refused before throttling and cost nothing (and get their own answer).
    let invalid = client.sign_up(SignUpRequest { email: "bad".into(), password: PASSWORD.into() }).await.unwrap_err();
    assert_eq!(invalid.code(), Code::InvalidArgument);
}

async fn forwarded_for_is_believed_only_from_a_trusted_proxy(backend: Backend) {
    let with_forwarded = |email: &str, forwarded: &str| {
        let mut request = tonic::Request::new(login(email, "wrong-guess-1"));
        request.metadata_mut().insert("x-forwarded-for", forwarded.parse().unwrap());
        request
    };
    // Not a trusted proxy: a different x-forwarded-for per request buys nothing.
    let throttle =
        ThrottleConfig { per_address: per_minute(2), per_email: None, trusted_proxies: TrustedProxies::default() };
    let auth = start_throttled(backend, throttle).await;
    let mut client = auth_client(&auth).await;
    let mut codes = Vec::new();
    for i in 0..4 {
        let result = client.login(with_forwarded(&format!("u{i}@example.com"), &format!("203.0.113.{i}"))).await;
        codes.push(result.unwrap_err().code());
    }
    assert_eq!(codes, [Code::Unauthenticated, Code::Unauthenticated, Code::ResourceExhausted, Code::ResourceExhausted]);

    // Behind a trusted proxy (here: loopback), each forwarded client has its own allowance.
    let throttle = ThrottleConfig {
        per_address: per_minute(2),
        per_email: None,
        trusted_proxies: TrustedProxies::parse("127.0.0.0/8, ::1").unwrap(),
    };
    let auth = start_throttled(backend, throttle).await;
    let mut client = auth_client(&auth).await;
    for i in 0..4 {
        let status =
            client.login(with_forwarded(&format!("u{i}@example.com"), &format!("203.0.113.{i}"))).await.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "client {i}");
    }
}

/// Refresh has a per-address limit of its own; ChangePassword and DeleteAccount count as
/// password attempts on the email, like Login.
async fn refresh_and_wrong_current_passwords_are_throttled(backend: Backend) {
    let throttle = ThrottleConfig {
        per_address: per_minute(5),
        per_email: per_minute(2),
        trusted_proxies: TrustedProxies::default(),
    };
    let auth = start_throttled(backend, throttle).await;
    let mut client = auth_client(&auth).await;
    client.sign_up(SignUpRequest { email: "guarded@example.com".into(), password: PASSWORD.into() }).await.unwrap();
    let session = client.login(login("guarded@example.com", PASSWORD)).await.unwrap().into_inner();

    let mut token = session.refresh_token.clone();
    for _ in 0..5 {
        let refresh = todo_contract::auth::v1::RefreshRequest { refresh_token: token.clone() };
        token =
            client.refresh(refresh).await.expect("within the address's refresh allowance").into_inner().refresh_token;
    }
    let refused = client.refresh(todo_contract::auth::v1::RefreshRequest { refresh_token: token }).await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted);
    assert!(refused.get_details_retry_info().is_some());

    // The login above spent one of the email's two attempts, then forgave it on success;
    // wrong current passwords spend them again (the address has room: 5, apart from Refresh).
    let wrong = || todo_contract::auth::v1::ChangePasswordRequest {
        current_password: "not-the-password".into(),
        new_password: "another-sturdy-one-9".into(),
    };
    let mut codes = Vec::new();
    for _ in 0..3 {
        codes.push(client.change_password(bearer(&session.access_token, wrong())).await.unwrap_err().code());
    }
    assert_eq!(codes, [Code::Unauthenticated, Code::Unauthenticated, Code::ResourceExhausted]);
    let delete = todo_contract::auth::v1::DeleteAccountRequest { password: PASSWORD.into() };
    let err = client.delete_account(bearer(&session.access_token, delete)).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "even the right password waits its turn");

    // Operators see each refusal, by the limit that refused it.
    let scrape = scrape(auth.metrics.expect("metrics served")).await;
    let refusals = |kind| scrape.value("todo_throttle_refusals_total", &[("kind", kind)]);
    assert_eq!(refusals("refresh_per_address"), Some(1.0), "{}", scrape.text);
    // The third wrong password hit the email's limit; DeleteAccount, the address's sixth
    // attempt (sign-up, login, three changes), hit the address's.
    assert_eq!(refusals("password_per_email"), Some(1.0), "{}", scrape.text);
    assert_eq!(refusals("password_per_address"), Some(1.0), "{}", scrape.text);
}

/// Two replicas on one database: attempts spread over both are counted as if one process
/// took them all, on the database's clock, and the database holds no email or address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_one_allowance_on_postgres() {
    require(Backend::Postgres);
    let db = std::sync::Arc::new(TestDb::new(Backend::Postgres).await);
    let throttle = ThrottleConfig {
        per_address: per_minute(12),
        per_email: per_minute(4),
        trusted_proxies: TrustedProxies::default(),
    };
    let first = replica(db.clone(), throttle.clone()).await;
    let second = replica(db.clone(), throttle).await;
    let email = "shared@example.com";
    let mut client = auth_client(&first).await;
    client.sign_up(SignUpRequest { email: email.into(), password: PASSWORD.into() }).await.unwrap();

    // 10 guesses at once, alternating replicas: the sign-up spent one of the email's 4, so
    // exactly 3 get a password check, as with one replica; each replica alone would allow 4.
    let guesses = spread_logins(&[&first, &second], 10, email, "wrong-guess-1").await;
    assert_eq!(count(&guesses, Code::Unauthenticated), 3, "{guesses:?}");
    assert_eq!(count(&guesses, Code::ResourceExhausted), 7, "{guesses:?}");
    assert!(guesses.iter().all(|(c, m)| *c != Code::ResourceExhausted || m.contains("this email address")));

    // The address has spent 11 of its 12 (sign-up and 10 logins, all counted before the
    // email's check): one more attempt on either replica, then the other refuses.
    let mut on_second = auth_client(&second).await;
    let last = on_second.login(login("fresh@example.com", "wrong-guess-1")).await.unwrap_err();
    assert_eq!(last.code(), Code::Unauthenticated);
    let refused = client.login(login("fresh-2@example.com", "wrong-guess-1")).await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted);
    assert!(refused.message().contains("from your address"), "{}", refused.message());
    // The wait comes from the shared count: 12/min refills one attempt every 5 s.
    let delay = refused.get_details_retry_info().and_then(|r| r.retry_delay).expect("RetryInfo");
    assert!(delay > Duration::ZERO && delay <= Duration::from_secs(5), "{delay:?}");

    // Keys: the address, `shared@` and `fresh@` (`fresh-2@` was refused at the address and
    // never charged), each a 16-byte HMAC with nothing of the email or address in it.
    assert_eq!(db.scalar("SELECT count(*) FROM auth_throttle", None).await, 3);
    assert_eq!(db.scalar("SELECT count(*) FROM auth_throttle WHERE octet_length(key) <> 16", None).await, 0);
    let plain = "SELECT count(*) FROM auth_throttle WHERE position(convert_to('shared', 'UTF8') IN key) > 0 \
                 OR position('\\x7f000001'::bytea IN key) > 0";
    assert_eq!(db.scalar(plain, None).await, 0);

    // Each replica counts the refusals it answered; together they are one process's.
    let mut refusals = (0.0, 0.0);
    for running in [&first, &second] {
        let scrape = scrape(running.metrics.expect("metrics served")).await;
        let value = |kind| scrape.value("todo_throttle_refusals_total", &[("kind", kind)]).unwrap_or(0.0);
        refusals.0 += value("password_per_email");
        refusals.1 += value("password_per_address");
    }
    assert_eq!(refusals, (7.0, 1.0));
}

/// A successful login on one replica forgives the email's failed attempts on every replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_forgives_the_email_on_every_replica_on_postgres() {
    require(Backend::Postgres);
    let db = std::sync::Arc::new(TestDb::new(Backend::Postgres).await);
    let throttle =
        ThrottleConfig { per_address: None, per_email: per_minute(3), trusted_proxies: TrustedProxies::default() };
    let first = replica(db.clone(), throttle.clone()).await;
    let second = replica(db.clone(), throttle).await;
    let (mut a, mut b) = (auth_client(&first).await, auth_client(&second).await);
    a.sign_up(SignUpRequest { email: "forgiven@example.com".into(), password: PASSWORD.into() }).await.unwrap();
    assert_eq!(
        b.login(login("forgiven@example.com", "wrong-guess-1")).await.unwrap_err().code(),
        Code::Unauthenticated
    );
    a.login(login("forgiven@example.com", PASSWORD)).await.unwrap();
    assert_eq!(db.scalar("SELECT count(*) FROM auth_throttle", None).await, 0, "the email's count is gone");
    // A full burst again, on the other replica: 3 wrong guesses checked, the 4th refused.
    let mut codes = Vec::new();
    for _ in 0..4 {
        codes.push(b.login(login("forgiven@example.com", "wrong-guess-1")).await.unwrap_err().code());
    }
    assert_eq!(codes, [Code::Unauthenticated, Code::Unauthenticated, Code::Unauthenticated, Code::ResourceExhausted]);
}
