//! WatchTasks: the initial state, live changes in commit order, resuming, isolation, the
//! stream's limits and the ways it ends.

mod ending;
mod order;

use std::time::Duration;

use todo_tests::pb::task::v1::task_service_client::TaskServiceClient;
use todo_tests::pb::task::v1::watch_tasks_response::EventType;
use todo_tests::pb::task::v1::{WatchTasksRequest, WatchTasksResponse};
use todo_tests::*;
use tonic::Streaming;
use tonic::transport::Channel;

/// Opens a stream for `who`, from the start or after `resume_token`.
pub async fn watch(
    client: &mut TaskServiceClient<Channel>,
    who: &Caller,
    resume_token: &str,
) -> Streaming<WatchTasksResponse> {
    let request = WatchTasksRequest { resume_token: resume_token.into() };
    client.watch_tasks(bearer(&who.token, request)).await.expect("watch opens").into_inner()
}

/// The next event, within `within`.
pub async fn next(stream: &mut Streaming<WatchTasksResponse>, within: Duration) -> WatchTasksResponse {
    tokio::time::timeout(within, stream.message())
        .await
        .expect("an event in time")
        .expect("the stream did not fail")
        .expect("the stream did not end")
}

/// The status the stream ends with, within `within` (events before it are skipped).
pub async fn ending(stream: &mut Streaming<WatchTasksResponse>, within: Duration) -> tonic::Status {
    let wait = async {
        loop {
            match stream.message().await {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("the stream ended with OK"),
                Err(status) => return status,
            }
        }
    };
    tokio::time::timeout(within, wait).await.expect("the stream ended in time")
}

pub fn kind(event: &WatchTasksResponse) -> EventType {
    EventType::try_from(event.r#type).expect("a known event type")
}

/// Reads events until CURRENT; returns the UPSERTED tasks' ids and CURRENT's token.
pub async fn initial_state(stream: &mut Streaming<WatchTasksResponse>) -> (Vec<String>, String) {
    let mut ids = Vec::new();
    loop {
        let event = next(stream, Duration::from_secs(5)).await;
        assert!(!event.resume_token.is_empty());
        match kind(&event) {
            EventType::Upserted => ids.push(event.task.expect("the full task").id),
            EventType::Current => return (ids, event.resume_token),
            other => panic!("unexpected {other:?} before CURRENT"),
        }
    }
}
