//! The session-event feed: task-service replicas learning revocations from auth-service, the
//! staleness policies, and the internal RPC's own authentication.

use std::time::Duration;

use todo_tests::pb::auth::internal::v1::FollowSessionEventsRequest;
use todo_tests::pb::auth::internal::v1::follow_session_events_response::Kind;
use todo_tests::pb::auth::internal::v1::session_event_service_client::SessionEventServiceClient;
use todo_tests::pb::auth::v1::{LogoutRequest, LogoutScope};
use todo_tests::proxy::FaultyProxy;
use todo_tests::*;
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use super::{eventually, login, sign_up, task_code, until_refused};

on_both_backends!(
    two_task_service_replicas_both_honour_a_revocation,
    a_task_service_cut_off_keeps_serving_then_applies_what_it_missed,
    with_a_staleness_limit_a_cut_off_task_service_refuses_until_the_feed_is_back,
    the_internal_feed_refuses_anonymous_callers_and_users_tokens,
    forged_key_ids_are_refused_by_both_services,
);

async fn health(running: &Running, service: &str) -> ServingStatus {
    let mut client = HealthClient::new(running.channel().await);
    let status = client.check(HealthCheckRequest { service: service.into() }).await.unwrap().into_inner().status;
    ServingStatus::try_from(status).unwrap()
}

const FEED: &str = task_service::follower::FEED_HEALTH_NAME;

async fn two_task_service_replicas_both_honour_a_revocation(backend: Backend) {
    let auth = start_auth(backend).await;
    let task_db = std::sync::Arc::new(TestDb::new(backend).await);
    let one = start_tasks_following(&auth, std::sync::Arc::clone(&task_db)).await;
    let two = start_tasks_following(&auth, std::sync::Arc::clone(&task_db)).await;
    let mut client = auth_client(&auth).await;
    sign_up(&mut client, "replicas@example.com").await;
    let session = login(&mut client, "replicas@example.com").await;
    assert_eq!(
        (task_code(&one, &session.access_token).await, task_code(&two, &session.access_token).await),
        (Code::Ok, Code::Ok)
    );

    client.logout(bearer(&session.access_token, LogoutRequest { scope: 0 })).await.unwrap();
    let (a, b) = tokio::join!(
        until_refused(&one, &session.access_token, Duration::from_secs(1)),
        until_refused(&two, &session.access_token, Duration::from_secs(1)),
    );
    assert!(a < Duration::from_secs(1) && b < Duration::from_secs(1), "{a:?} {b:?}");
}

async fn a_task_service_cut_off_keeps_serving_then_applies_what_it_missed(backend: Backend) {
    let auth = start_auth(backend).await;
    let proxy = FaultyProxy::start(auth.addr).await;
    let db = TestDb::new(backend).await;
    let mut config = task_config(&db);
    config.auth_service_url = Some(format!("http://{}", proxy.addr));
    let tasks = start_tasks_with(config, db).await;
    wait_until_serving(&tasks, FEED).await;
    let mut client = auth_client(&auth).await;
    sign_up(&mut client, "cut-off@example.com").await;
    let session = login(&mut client, "cut-off@example.com").await;

    proxy.cut();
    client.logout(bearer(&session.access_token, LogoutRequest { scope: LogoutScope::All as i32 })).await.unwrap();
    // The default policy: serve on the last known state, and say so in health.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(task_code(&tasks, &session.access_token).await, Code::Ok);
    eventually(Duration::from_secs(10), "feed reported stale", || async {
        health(&tasks, FEED).await == ServingStatus::NotServing
    })
    .await;
    assert_eq!(health(&tasks, "").await, ServingStatus::Serving);

    proxy.restore();
    until_refused(&tasks, &session.access_token, Duration::from_secs(5)).await;
    eventually(Duration::from_secs(5), "feed current again", || async {
        health(&tasks, FEED).await == ServingStatus::Serving
    })
    .await;
}

async fn with_a_staleness_limit_a_cut_off_task_service_refuses_until_the_feed_is_back(backend: Backend) {
    let auth = start_auth(backend).await;
    let proxy = FaultyProxy::start(auth.addr).await;
    let db = TestDb::new(backend).await;
    let mut config = task_config(&db);
    config.auth_service_url = Some(format!("http://{}", proxy.addr));
    config.revocation_max_staleness = Some(Duration::from_secs(1));
    let tasks = start_tasks_with(config, db).await;
    wait_until_serving(&tasks, FEED).await;
    let mut client = auth_client(&auth).await;
    sign_up(&mut client, "strict@example.com").await;
    let session = login(&mut client, "strict@example.com").await;
    assert_eq!(task_code(&tasks, &session.access_token).await, Code::Ok);

    proxy.cut();
    eventually(Duration::from_secs(5), "RPCs refused", || async {
        task_code(&tasks, &session.access_token).await == Code::Unavailable
    })
    .await;
    assert_eq!(health(&tasks, "").await, ServingStatus::NotServing);
    assert_eq!(health(&tasks, FEED).await, ServingStatus::NotServing);

    proxy.restore();
    eventually(Duration::from_secs(5), "serving again", || async {
        task_code(&tasks, &session.access_token).await == Code::Ok
    })
    .await;
    assert_eq!(health(&tasks, "").await, ServingStatus::Serving);
}

async fn the_internal_feed_refuses_anonymous_callers_and_users_tokens(backend: Backend) {
    let auth = start_auth(backend).await;
    let mut client = auth_client(&auth).await;
    sign_up(&mut client, "intruder@example.com").await;
    let session = login(&mut client, "intruder@example.com").await;
    let mut feed = SessionEventServiceClient::new(auth.channel().await);
    let request = || FollowSessionEventsRequest { after_position: 0 };

    let anonymous = feed.follow_session_events(request()).await.unwrap_err();
    assert_eq!(anonymous.code(), Code::Unauthenticated);
    let as_user = feed.follow_session_events(bearer(&session.access_token, request())).await.unwrap_err();
    assert_eq!(as_user.code(), Code::Unauthenticated);
    let forged = forge("HS256", &claims_for(uuid::Uuid::new_v4()), Some(SECRET.as_bytes()));
    assert_eq!(feed.follow_session_events(bearer(&forged, request())).await.unwrap_err().code(), Code::Unauthenticated);

    // A service token is let in: the log so far, then a heartbeat.
    client.logout(bearer(&session.access_token, LogoutRequest { scope: 0 })).await.unwrap();
    let service = keys().mint_service_token("test").unwrap();
    let mut stream = feed.follow_session_events(bearer(&service, request())).await.unwrap().into_inner();
    let Some(Kind::Event(event)) = stream.message().await.unwrap().unwrap().kind else { panic!("an event first") };
    assert_eq!(event.position, 1);
    assert!(event.expire_time.is_some());
    let Some(Kind::Heartbeat(heartbeat)) = stream.message().await.unwrap().unwrap().kind else {
        panic!("then a heartbeat")
    };
    assert_eq!(heartbeat.position, 1);
    let negative = feed.follow_session_events(bearer(&service, FollowSessionEventsRequest { after_position: -1 }));
    assert_eq!(negative.await.unwrap_err().code(), Code::InvalidArgument);
}

async fn forged_key_ids_are_refused_by_both_services(backend: Backend) {
    let pair = start_pair(backend).await;
    let mut client = auth_client(&pair.auth).await;
    let account = sign_up(&mut client, "kid@example.com").await;
    let session = login(&mut client, "kid@example.com").await;
    let mut claims = super::claims_of(&session.access_token);
    claims["sub"] = serde_json::json!(account.id.to_string());
    let header = jsonwebtoken::Header {
        kid: Some("deadbeefdeadbeef".into()),
        ..jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256)
    };
    let forged =
        jsonwebtoken::encode(&header, &claims, &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes())).unwrap();
    let message = "token was signed with a key this service does not know (unknown `kid`)";
    let at_auth = client.get_current_user(bearer(&forged, Default::default())).await.unwrap_err();
    assert_eq!((at_auth.code(), at_auth.message()), (Code::Unauthenticated, message));
    let mut tasks = task_client(&pair.tasks).await;
    let at_tasks = tasks.list_tasks(bearer(&forged, Default::default())).await.unwrap_err();
    assert_eq!((at_tasks.code(), at_tasks.message()), (Code::Unauthenticated, message));
}
