//! The one error type of task-service and its one mapping to `tonic::Status`.

use todo_shared::validation::FieldViolations;
use tonic::Status;
use tonic_types::{ErrorDetails, StatusExt as _};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Invalid(FieldViolations),
    /// No task with this id belongs to the caller. Deliberately the same for a task that does
    /// not exist and one that belongs to someone else: existence must not leak.
    #[error("task not found")]
    NotFound,
    /// A CreateTask `request_id` already used for different content.
    #[error("request_id {REQUEST_ID_REUSED}")]
    RequestIdReused,
    /// A CreateTask retry whose task has been deleted since the first call.
    #[error("the task this request_id created has since been deleted")]
    CreatedTaskDeleted,
    /// The request's etag is not the task's current one.
    #[error("the task has changed since this etag was read: get it again and retry")]
    EtagMismatch,
    /// A WatchTasks resume token older than the change log's retention.
    #[error("resume_token is older than the change log's retention: start again with an empty resume_token")]
    ResumeTokenExpired,
    /// The WatchTasks stream limits.
    #[error("{0}")]
    TooManyStreams(&'static str),
    /// The caller's account is over `TASK_RATE_PER_USER`.
    #[error("this account is over its limit of {rate} requests: retry in {} ms", .retry_after.as_millis().max(1))]
    RateLimited { rate: todo_shared::rate_limit::Rate, retry_after: std::time::Duration },
    /// The caller already has `TASK_MAX_TASKS_PER_USER` tasks.
    #[error("this account has reached its limit of {max} tasks: delete some before creating more")]
    TaskQuota { max: i64 },
    #[error("database error")]
    Database(#[from] sqlx::Error),
    /// A write was cut off by the server shutting down; it may or may not have committed.
    #[error("the server is shutting down: retry (on another instance)")]
    ShuttingDown,
}

/// The field violation's description: the status message prefixes the field name.
const REQUEST_ID_REUSED: &str =
    "was already used for a task with a different title, description or due time: use a new request_id for a new task";

impl From<FieldViolations> for Error {
    fn from(violations: FieldViolations) -> Self {
        Self::Invalid(violations)
    }
}

impl From<Error> for Status {
    fn from(err: Error) -> Self {
        match err {
            Error::Invalid(violations) => violations.into(),
            Error::NotFound | Error::CreatedTaskDeleted => Status::not_found(err.to_string()),
            Error::RequestIdReused => {
                let mut violations = FieldViolations::new();
                violations.add("request_id", REQUEST_ID_REUSED);
                violations.into()
            }
            Error::EtagMismatch => Status::aborted(err.to_string()),
            Error::ResumeTokenExpired => Status::failed_precondition(err.to_string()),
            Error::TooManyStreams(_) => Status::resource_exhausted(err.to_string()),
            Error::TaskQuota { max } => {
                let mut details = ErrorDetails::new();
                details.add_quota_failure_violation("user", format!("at most {max} tasks per account"));
                Status::with_error_details(tonic::Code::ResourceExhausted, err.to_string(), details)
            }
            Error::RateLimited { rate, retry_after } => {
                let mut details = ErrorDetails::with_retry_info(Some(retry_after));
                details.add_quota_failure_violation("user", format!("at most {rate} requests per account"));
                Status::with_error_details(tonic::Code::ResourceExhausted, err.to_string(), details)
            }
            Error::Database(db) => todo_shared::db::status_for(&db),
            Error::ShuttingDown => Status::unavailable(err.to_string()),
        }
    }
}
