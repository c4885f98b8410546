//! TLS on the gRPC port, with certificates the test makes itself: gRPC and gRPC-web over TLS,
//! mutual TLS on auth-service's internal RPC (and on all of task-service's when asked),
//! task-service following auth-service over mutual TLS, certificates replaced on disk served
//! without a restart, and files that cannot work refused at start-up.

use std::time::Duration;

use todo_contract::auth::internal::v1::FollowSessionEventsRequest;
use todo_contract::auth::internal::v1::session_event_service_client::SessionEventServiceClient;
use todo_contract::auth::v1::auth_service_client::AuthServiceClient;
use todo_contract::auth::v1::{LoginRequest, LogoutRequest, SignUpRequest};
use todo_contract::task::v1::ListTasksRequest;
use todo_contract::task::v1::task_service_client::TaskServiceClient;
use todo_shared::config::Env;
use todo_shared::tls::ServerTls;
use todo_shared::tls::client::PeerTls;
use todo_tests::certs::{PemDir, TestCa, client_config, presented_certificate, server_tls, tls_channel, tls_connect};
use todo_tests::*;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

on_both_backends!(
    grpc_and_grpc_web_are_served_over_tls_and_plaintext_is_not,
    the_internal_rpc_needs_a_client_certificate_from_the_ca,
    task_service_follows_auth_service_over_mutual_tls,
);

const PASSWORD: &str = "plum-kettle-orbit-42";

/// Whether `service`'s health over a TLS channel (trusting `ca`) is SERVING.
async fn serving_over_tls(addr: std::net::SocketAddr, ca: &TestCa, service: &str) -> bool {
    let Ok(channel) = tls_channel(addr, ca, None).await else { return false };
    let answer = HealthClient::new(channel).check(HealthCheckRequest { service: service.to_owned() }).await;
    answer.is_ok_and(|a| a.into_inner().status == ServingStatus::Serving as i32)
}

async fn wait_serving_over_tls(addr: std::net::SocketAddr, ca: &TestCa, service: &str) {
    for _ in 0..300 {
        if serving_over_tls(addr, ca, service).await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{addr} did not report {service:?} SERVING over TLS within 30 s");
}

async fn start_auth_tls(backend: Backend, tls: ServerTls, ca: &TestCa) -> Running {
    let db = TestDb::new(backend).await;
    let mut config = auth_config(&db);
    config.tls = Some(tls);
    let app = auth_service::Application::build(config).await.expect("auth-service starts");
    let running = spawn_unready(app.local_addr(), db, |stop| app.run_until(async move { drop(stop.await) }));
    wait_serving_over_tls(running.addr, ca, "").await;
    running
}

async fn grpc_and_grpc_web_are_served_over_tls_and_plaintext_is_not(backend: Backend) {
    let (ca, dir) = (TestCa::new("servers"), PemDir::new());
    let auth = start_auth_tls(backend, server_tls(&dir, &ca.server(), None), &ca).await;

    // gRPC over TLS (HTTP/2 by ALPN).
    let mut client = AuthServiceClient::new(tls_channel(auth.addr, &ca, None).await.unwrap());
    let request = SignUpRequest { email: "tls@example.com".into(), password: PASSWORD.into() };
    let user = client.sign_up(request).await.unwrap().into_inner().user.unwrap();
    assert_eq!(user.email, "tls@example.com");

    // gRPC-web over TLS with HTTP/1.1, as a browser sends it.
    let mut tls = tls_connect(auth.addr, client_config(&ca, None, &[b"http/1.1"])).await.unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let message = prost::Message::encode_to_vec(&SignUpRequest { email: "bad".into(), password: PASSWORD.into() });
    let mut body = vec![0u8];
    body.extend_from_slice(&u32::try_from(message.len()).unwrap().to_be_bytes());
    body.extend_from_slice(&message);
    let head = format!(
        "POST /todo.auth.v1.AuthService/SignUp HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\
         content-type: application/grpc-web+proto\r\nx-grpc-web: 1\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    tls.write_all(head.as_bytes()).await.unwrap();
    tls.write_all(&body).await.unwrap();
    let mut answer = Vec::new();
    // A TLS peer may close without close_notify after `connection: close`; what was read counts.
    let _ = tls.read_to_end(&mut answer).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // An error before any message: a trailers-only answer, its status in the headers.
    assert!(answer.contains("grpc-status: 3\r\n"), "INVALID_ARGUMENT reaches the browser: {answer}");

    // A plaintext client gets no gRPC answer from a TLS port (how its transport reports the
    // TLS alert it reads varies: broken pipe, protocol error, cancelled) and writes nothing.
    let plain = tonic::transport::Channel::from_shared(auth.url()).unwrap().connect().await;
    if let Ok(channel) = plain {
        let request = SignUpRequest { email: "plain@example.com".into(), password: PASSWORD.into() };
        AuthServiceClient::new(channel).sign_up(request).await.unwrap_err();
    }
    // The container health check speaks TLS to it.
    let addr = auth.addr;
    tokio::task::spawn_blocking(move || todo_shared::health::probe(addr, true)).await.unwrap().unwrap();
    assert_eq!(auth.db.scalar("SELECT count(*) FROM users", None).await, 1);
}

async fn the_internal_rpc_needs_a_client_certificate_from_the_ca(backend: Backend) {
    let (servers, clients, strangers) = (TestCa::new("servers"), TestCa::new("clients"), TestCa::new("strangers"));
    let dir = PemDir::new();
    let auth = start_auth_tls(backend, server_tls(&dir, &servers.server(), Some(&clients)), &servers).await;
    let follow = || {
        let token = keys().mint_service_token("task-service").unwrap();
        bearer(&token, FollowSessionEventsRequest { after_position: 0 })
    };

    // No client certificate: the public API answers, the internal RPC refuses with a reason,
    // even with a valid service token.
    let anonymous = tls_channel(auth.addr, &servers, None).await.unwrap();
    let mut public = AuthServiceClient::new(anonymous.clone());
    public.sign_up(SignUpRequest { email: "browser@example.com".into(), password: PASSWORD.into() }).await.unwrap();
    let refused = SessionEventServiceClient::new(anonymous).follow_session_events(follow()).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);
    assert!(refused.message().contains("client certificate"), "{}", refused.message());

    // A certificate from another CA: the handshake itself fails (no call is made at all).
    let stranger = strangers.client("task-service");
    let result = match tls_channel(auth.addr, &servers, Some(&stranger)).await {
        Err(err) => Err(err.to_string()),
        Ok(channel) => SessionEventServiceClient::new(channel)
            .follow_session_events(follow())
            .await
            .map(|_| ())
            .map_err(|s| format!("{:?}", s.code())),
    };
    assert!(result.is_err(), "a certificate from an unknown CA is refused");
    let raw = tls_connect(auth.addr, client_config(&servers, Some(&stranger), &[b"h2"])).await;
    let refused_at_handshake = match raw {
        Err(_) => true,
        // TLS 1.3: the client finishes first; the server's alert arrives on the first read.
        Ok(mut tls) => tls.read(&mut [0u8; 1]).await.is_err(),
    };
    assert!(refused_at_handshake, "the server rejects the stranger's certificate in the handshake");

    // A certificate from the CA: the feed answers.
    let member = clients.client("task-service");
    let channel = tls_channel(auth.addr, &servers, Some(&member)).await.unwrap();
    let mut feed = SessionEventServiceClient::new(channel).follow_session_events(follow()).await.unwrap().into_inner();
    let first = tokio::time::timeout(Duration::from_secs(5), feed.message()).await.expect("a heartbeat").unwrap();
    assert!(first.is_some());
}

async fn task_service_follows_auth_service_over_mutual_tls(backend: Backend) {
    let (servers, clients) = (TestCa::new("servers"), TestCa::new("clients"));
    let dir = PemDir::new();
    let auth = start_auth_tls(backend, server_tls(&dir, &servers.server(), Some(&clients)), &servers).await;
    let ca_file = dir.write("servers-ca.pem", &servers.pem);
    let start_tasks = |identity: Option<(std::path::PathBuf, std::path::PathBuf)>, tls: Option<ServerTls>| {
        let ca_file = ca_file.clone();
        let url = format!("https://localhost:{}", auth.addr.port());
        async move {
            let db = TestDb::new(backend).await;
            let mut config = task_config(&db);
            config.auth_service_url = Some(url);
            config.auth_tls = Some(PeerTls { ca_file: Some(ca_file), identity });
            config.tls = tls;
            let app = task_service::Application::build(config).await.expect("task-service starts");
            spawn_unready(app.local_addr(), db, |stop| app.run_until(async move { drop(stop.await) }))
        }
    };
    let follower = task_service::follower::FEED_HEALTH_NAME;

    // Presenting a certificate from the clients' CA: the feed is followed.
    let member = clients.client("task-service");
    let identity = (dir.write("member.pem", &member.cert_pem), dir.write("member.key", &member.key_pem));
    // task-service itself serves TLS too, and demands client certificates on TaskService.
    let tasks_dir = PemDir::new();
    let tasks_tls = server_tls(&tasks_dir, &servers.server(), Some(&clients));
    let tasks = start_tasks(Some(identity), Some(tasks_tls)).await;
    wait_serving_over_tls(tasks.addr, &servers, follower).await;

    // TaskService needs a client certificate here; health does not (probes have none).
    let me = caller();
    let anonymous = tls_channel(tasks.addr, &servers, None).await.unwrap();
    let refused = TaskServiceClient::new(anonymous).list_tasks(bearer(&me.token, ListTasksRequest::default())).await;
    assert_eq!(refused.unwrap_err().code(), Code::Unauthenticated);
    let with_cert = tls_channel(tasks.addr, &servers, Some(&clients.client("web-gateway"))).await.unwrap();
    let mut tasks_client = TaskServiceClient::new(with_cert);
    tasks_client.list_tasks(bearer(&me.token, ListTasksRequest::default())).await.unwrap();

    // The feed carries revocations over mutual TLS: a logout at auth-service is refused at
    // task-service moments later.
    let mut auth_client = AuthServiceClient::new(tls_channel(auth.addr, &servers, None).await.unwrap());
    auth_client.sign_up(SignUpRequest { email: "mtls@example.com".into(), password: PASSWORD.into() }).await.unwrap();
    let login = LoginRequest { email: "mtls@example.com".into(), password: PASSWORD.into() };
    let session = auth_client.login(login).await.unwrap().into_inner();
    tasks_client.list_tasks(bearer(&session.access_token, ListTasksRequest::default())).await.unwrap();
    auth_client.logout(bearer(&session.access_token, LogoutRequest::default())).await.unwrap();
    let mut refused = None;
    for _ in 0..50 {
        match tasks_client.list_tasks(bearer(&session.access_token, ListTasksRequest::default())).await {
            Ok(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            Err(status) => {
                refused = Some(status.code());
                break;
            }
        }
    }
    assert_eq!(refused, Some(Code::Unauthenticated), "the logout reached task-service within 2.5 s");

    // Without a client certificate, task-service cannot follow: its feed stays NOT_SERVING
    // while its public side, with the feed optional, keeps serving.
    let lone = start_tasks(None, None).await;
    let mut health = HealthClient::new(lone.channel().await);
    let mut seen = ServingStatus::Unknown as i32;
    for _ in 0..20 {
        let answer = health.check(HealthCheckRequest { service: follower.to_owned() }).await;
        seen = answer.map_or(seen, |a| a.into_inner().status);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(seen, ServingStatus::NotServing as i32, "the feed is refused without a client certificate");
}

/// Connects until the server presents `expected`, for up to two reload intervals.
async fn presented_within(addr: std::net::SocketAddr, ca: &TestCa, expected: &[u8]) {
    let deadline = std::time::Instant::now() + 2 * todo_shared::tls::RELOAD_CHECK_INTERVAL;
    while presented_certificate(addr, ca).await != expected {
        assert!(std::time::Instant::now() < deadline, "the new certificate was not served within two reload intervals");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A certificate replaced on disk is what new connections get, within a second and without a
/// restart; connections made before keep working; a half-written pair is not picked up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_certificate_is_served_without_a_restart() {
    let (ca, dir) = (TestCa::new("servers"), PemDir::new());
    let first = ca.server();
    let tls = server_tls(&dir, &first, None);
    let auth = start_auth_tls(Backend::Sqlite, tls.clone(), &ca).await;
    assert_eq!(presented_certificate(auth.addr, &ca).await, first.der());
    let mut before = AuthServiceClient::new(tls_channel(auth.addr, &ca, None).await.unwrap());

    // Rotated: certificate and key replaced (as cert-manager's secret volume does).
    let second = ca.server();
    std::fs::write(&tls.cert_file, &second.cert_pem).unwrap();
    std::fs::write(&tls.key_file, &second.key_pem).unwrap();
    // The files are checked on the first handshake after the reload interval.
    presented_within(auth.addr, &ca, &second.der()).await;
    before.sign_up(SignUpRequest { email: "kept@example.com".into(), password: PASSWORD.into() }).await.unwrap();

    // Half-written: a new certificate whose key has not arrived yet. The previous pair keeps
    // being served until the key matches.
    let third = ca.server();
    std::fs::write(&tls.cert_file, &third.cert_pem).unwrap();
    // Waiting on time is the point here: what is checked is that nothing changes once a
    // reload check has certainly run.
    tokio::time::sleep(todo_shared::tls::RELOAD_CHECK_INTERVAL + Duration::from_millis(200)).await;
    assert_eq!(presented_certificate(auth.addr, &ca).await, second.der());
    std::fs::write(&tls.key_file, &third.key_pem).unwrap();
    presented_within(auth.addr, &ca, &third.der()).await;
}

/// Files that could never work are bad configuration: one line naming the variable.
#[test]
fn tls_files_that_cannot_work_are_refused_at_start() {
    let ca = TestCa::new("servers");
    let dir = PemDir::new();
    let (a, b) = (ca.server(), ca.server());
    let cert = dir.write("a.pem", &a.cert_pem).display().to_string();
    let key = dir.write("a.key", &a.key_pem).display().to_string();
    let other_key = dir.write("b.key", &b.key_pem).display().to_string();
    let garbage = dir.write("garbage.pem", "not a certificate").display().to_string();
    let missing = dir.path("missing.pem").display().to_string();
    let server = |pairs: &[(&str, &str)]| {
        todo_shared::tls::server_from_env(&Env::from_pairs(pairs.iter().copied())).map_err(|e| e.to_string())
    };
    assert_eq!(server(&[]), Ok(None));
    assert!(server(&[("TLS_CERT_FILE", &cert), ("TLS_KEY_FILE", &key)]).unwrap().is_some());
    for (pairs, expected) in [
        (vec![("TLS_CERT_FILE", cert.as_str())], "TLS_KEY_FILE: "),
        (vec![("TLS_KEY_FILE", key.as_str())], "TLS_CERT_FILE: "),
        (vec![("TLS_CLIENT_CA_FILE", cert.as_str())], "TLS_CLIENT_CA_FILE: client certificates need TLS"),
        (vec![("TLS_CERT_FILE", missing.as_str()), ("TLS_KEY_FILE", key.as_str())], "TLS_CERT_FILE: cannot read"),
        (vec![("TLS_CERT_FILE", garbage.as_str()), ("TLS_KEY_FILE", key.as_str())], "TLS_CERT_FILE: "),
        (vec![("TLS_CERT_FILE", cert.as_str()), ("TLS_KEY_FILE", other_key.as_str())], "TLS_KEY_FILE: "),
        (
            vec![
                ("TLS_CERT_FILE", cert.as_str()),
                ("TLS_KEY_FILE", key.as_str()),
                ("TLS_CLIENT_CA_FILE", garbage.as_str()),
            ],
            "TLS_CLIENT_CA_FILE: ",
        ),
    ] {
        let err = server(&pairs).unwrap_err();
        assert!(err.starts_with(expected), "{pairs:?}: {err}");
    }
    let peer = |pairs: &[(&str, &str)], https| {
        todo_shared::tls::client::peer_from_env(&Env::from_pairs(pairs.iter().copied()), https)
            .map_err(|e| e.to_string())
    };
    assert_eq!(peer(&[], false), Ok(None));
    assert!(peer(&[], true).unwrap().is_some(), "https with the public roots");
    let err = peer(&[("AUTH_CA_FILE", &cert)], false).unwrap_err();
    assert_eq!(err, "AUTH_CA_FILE: needs an https:// AUTH_SERVICE_URL");
    let err = peer(&[("AUTH_CLIENT_CERT_FILE", &cert), ("AUTH_CLIENT_KEY_FILE", &other_key)], true).unwrap_err();
    assert!(err.starts_with("AUTH_CLIENT_KEY_FILE: "), "{err}");
    let err = peer(&[("AUTH_CLIENT_CERT_FILE", &cert)], true).unwrap_err();
    assert!(err.starts_with("AUTH_CLIENT_KEY_FILE: "), "{err}");
}
