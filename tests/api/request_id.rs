//! Request ids: a sane `x-request-id` comes back in the response metadata and in every error's
//! `google.rpc.RequestInfo`; a missing or unusable one is replaced by a fresh UUID. Streams
//! too, including an error sent in their trailers.

use std::time::Duration;

use todo_tests::pb::task::v1::{GetTaskRequest, ListTasksRequest, WatchTasksRequest};
use todo_tests::*;
use tonic::Code;
use tonic::metadata::MetadataMap;
use tonic_types::StatusExt;

use crate::watch::{ending, initial_state};

on_both_backends!(
    a_sane_request_id_comes_back_in_the_metadata_and_the_error_details,
    a_missing_or_unusable_request_id_is_replaced_by_a_fresh_one,
    a_streamed_error_carries_the_request_id,
);

fn id_of(metadata: &MetadataMap) -> &str {
    metadata.get("x-request-id").expect("x-request-id in the response metadata").to_str().unwrap()
}

async fn a_sane_request_id_comes_back_in_the_metadata_and_the_error_details(backend: Backend) {
    let tasks = start_tasks(backend).await;
    let mut client = task_client(&tasks).await;
    let me = caller();

    let ok = client
        .list_tasks(with_request_id(bearer(&me.token, ListTasksRequest::default()), "report-1234"))
        .await
        .unwrap();
    assert_eq!(id_of(ok.metadata()), "report-1234");

    let bad = GetTaskRequest { id: "not-a-uuid".into() };
    let err = client.get_task(with_request_id(bearer(&me.token, bad), "report-5678")).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(id_of(err.metadata()), "report-5678");
    let details = err.get_error_details();
    assert_eq!(details.request_info().map(|i| i.request_id.as_str()), Some("report-5678"));
    assert_eq!(violated_fields(&err), ["id"], "the field violations are still there");

    // Refused before any handler runs (no token): the id is there too.
    let err = client
        .list_tasks(with_request_id(tonic::Request::new(ListTasksRequest::default()), "anon-1"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert_eq!(err.get_error_details().request_info().map(|i| i.request_id.as_str()), Some("anon-1"));
}

async fn a_missing_or_unusable_request_id_is_replaced_by_a_fresh_one(backend: Backend) {
    let tasks = start_tasks(backend).await;
    let mut client = task_client(&tasks).await;
    let me = caller();
    let too_long = "x".repeat(129);
    let mut seen = Vec::new();
    for sent in [None, Some(too_long.as_str()), Some("two words"), Some("")] {
        let request = bearer(&me.token, ListTasksRequest::default());
        let request = match sent {
            Some(id) => with_request_id(request, id),
            None => request,
        };
        let response = client.list_tasks(request).await.unwrap();
        let id = id_of(response.metadata()).to_owned();
        assert!(uuid::Uuid::try_parse(&id).is_ok(), "{sent:?} was replaced by a UUID, got {id:?}");
        seen.push(id);
    }
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 4, "a fresh id each time");

    let kept = "x".repeat(128);
    let response =
        client.list_tasks(with_request_id(bearer(&me.token, ListTasksRequest::default()), &kept)).await.unwrap();
    assert_eq!(id_of(response.metadata()), kept, "128 characters are kept");
}

async fn a_streamed_error_carries_the_request_id(backend: Backend) {
    let tasks = start_tasks(backend).await;
    let mut client = task_client(&tasks).await;
    let short = expiring_caller();
    let request = with_request_id(bearer(&short.token, WatchTasksRequest::default()), "stream-77");
    let response = client.watch_tasks(request).await.unwrap();
    assert_eq!(id_of(response.metadata()), "stream-77");
    let mut stream = response.into_inner();
    initial_state(&mut stream).await;
    let status = ending(&mut stream, Duration::from_secs(5)).await;
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert_eq!(status.get_error_details().request_info().map(|i| i.request_id.as_str()), Some("stream-77"));
}
