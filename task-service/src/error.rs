//! The one error type of task-service and its one mapping to `tonic::Status`.

use todo_shared::validation::FieldViolations;
use tonic::Status;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Invalid(FieldViolations),
    /// No task with this id belongs to the caller. Deliberately the same for a task that does
    /// not exist and one that belongs to someone else: existence must not leak.
    #[error("task not found")]
    NotFound,
    /// The request's etag is not the task's current one.
    #[error("the task has changed since this etag was read: get it again and retry")]
    EtagMismatch,
    #[error("database error")]
    Database(#[from] sqlx::Error),
}

impl From<FieldViolations> for Error {
    fn from(violations: FieldViolations) -> Self {
        Self::Invalid(violations)
    }
}

impl From<Error> for Status {
    fn from(err: Error) -> Self {
        match err {
            Error::Invalid(violations) => violations.into(),
            Error::NotFound => Status::not_found(err.to_string()),
            Error::EtagMismatch => Status::aborted(err.to_string()),
            Error::Database(db) => todo_shared::db::status_for(&db),
        }
    }
}
