//! The one error type of auth-service and its one mapping to `tonic::Status`.

use std::time::Duration;

use todo_shared::auth::AuthError;
use todo_shared::validation::FieldViolations;
use tonic::Status;
use tonic_types::{ErrorDetails, StatusExt};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Invalid(FieldViolations),
    #[error("an account with this email already exists")]
    EmailTaken,
    /// Unknown email and wrong password alike: one variant, so they cannot be told apart.
    #[error("invalid email or password")]
    InvalidCredentials,
    #[error(transparent)]
    Unauthenticated(#[from] AuthError),
    /// Unknown, malformed, expired, revoked and reused refresh tokens alike.
    #[error("refresh token is invalid, expired or revoked: log in again")]
    InvalidRefreshToken,
    /// ChangePassword or DeleteAccount with the wrong password.
    #[error("the password is incorrect")]
    WrongPassword,
    /// Logout of the current session (or the others) with a token that has none.
    #[error(
        "this access token predates sessions and has none to end: use LOGOUT_SCOPE_ALL, or log in again for a session"
    )]
    NoSession,
    /// Not one of the caller's live sessions (whether or not it is someone else's).
    #[error("no such session")]
    SessionNotFound,
    #[error("randomness unavailable: {0}")]
    Randomness(getrandom::Error),
    /// A valid token whose user has since been deleted.
    #[error("the user of this token no longer exists")]
    UserGone,
    /// Too many password attempts from this address or on this email.
    #[error("{}", throttled_message(.0))]
    Throttled(Throttled),
    /// The password-hashing queue is full.
    #[error("too many password checks in progress; retry shortly")]
    Overloaded { retry_after: Duration },
    #[error("database error")]
    Database(#[from] sqlx::Error),
    #[error("password hashing failed: {0}")]
    Hashing(String),
    #[error("token minting failed: {0}")]
    Minting(#[from] todo_shared::token::MintError),
}

/// Which throttle refused an attempt, and how long until it would allow one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Throttled {
    Address(Duration),
    Email(Duration),
}

fn throttled_message(throttled: &Throttled) -> String {
    // Whole seconds, rounded up: "retry in 0 s" would invite an immediate retry.
    let secs = |d: &Duration| d.as_secs() + u64::from(d.subsec_nanos() > 0);
    match throttled {
        Throttled::Address(wait) => {
            format!("too many sign-up and login attempts from your address: retry in {} s", secs(wait))
        }
        Throttled::Email(wait) => format!("too many attempts for this email address: retry in {} s", secs(wait)),
    }
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
            Error::EmailTaken => Status::already_exists(err.to_string()),
            Error::InvalidCredentials | Error::UserGone | Error::InvalidRefreshToken | Error::WrongPassword => {
                Status::unauthenticated(err.to_string())
            }
            Error::NoSession => Status::failed_precondition(err.to_string()),
            Error::SessionNotFound => Status::not_found(err.to_string()),
            Error::Unauthenticated(auth) => auth.into(),
            Error::Throttled(Throttled::Address(retry_after) | Throttled::Email(retry_after)) => {
                Status::with_error_details(
                    tonic::Code::ResourceExhausted,
                    err.to_string(),
                    ErrorDetails::with_retry_info(Some(retry_after)),
                )
            }
            Error::Overloaded { retry_after } => Status::with_error_details(
                tonic::Code::ResourceExhausted,
                err.to_string(),
                ErrorDetails::with_retry_info(Some(retry_after)),
            ),
            Error::Database(db) => todo_shared::db::status_for(&db),
            Error::Hashing(_) | Error::Minting(_) | Error::Randomness(_) => {
                tracing::error!(error = %err, "internal error");
                Status::internal("internal error")
            }
        }
    }
}
