//! Bearer-token authentication for RPCs: `authorization: Bearer <jwt>`.

use std::sync::Arc;

use tonic::metadata::MetadataMap;
use tonic::service::Interceptor;
use tonic::{Request, Status};

pub use crate::token::AuthenticatedUser;
use crate::token::{TokenError, TokenKeys};

impl AuthenticatedUser {
    /// The user the interceptor put into `request`'s extensions.
    ///
    /// Missing only if a service was wired without the interceptor: a server bug, reported as
    /// INTERNAL rather than trusting anything else.
    pub fn from_request<T>(request: &Request<T>) -> Result<&Self, Status> {
        request.extensions().get::<Self>().ok_or_else(|| {
            tracing::error!("RPC reached a handler without an authenticated user");
            Status::internal("internal error")
        })
    }
}

/// Why a request carried no usable token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing `authorization` metadata: send `authorization: Bearer <access_token>`")]
    Missing,
    #[error("`authorization` metadata must use the Bearer scheme: `Bearer <access_token>`")]
    WrongScheme,
    #[error("bearer token is empty")]
    Empty,
    #[error("more than one `authorization` entry: send exactly one `authorization: Bearer <access_token>`")]
    Duplicate,
    #[error(transparent)]
    Token(#[from] TokenError),
    /// A valid signature on a token whose session has ended.
    #[error("token has been revoked (signed out, password changed or account deleted): log in again")]
    Revoked,
    /// A user's token, or none, on an internal RPC.
    #[error("this RPC is internal: it needs a service token, not a user's")]
    NotAService,
}

impl From<AuthError> for Status {
    fn from(err: AuthError) -> Self {
        Status::unauthenticated(err.to_string())
    }
}

/// Verifies the bearer token in `metadata`.
pub fn authenticate(keys: &TokenKeys, metadata: &MetadataMap) -> Result<AuthenticatedUser, AuthError> {
    let token = bearer_token(metadata)?;
    let user = keys.verify(token)?;
    tracing::Span::current().record("user_id", tracing::field::display(user.id));
    Ok(user)
}

/// Verifies the service token in `metadata` (auth-service's internal RPCs); returns the
/// service it names.
pub fn authenticate_service(keys: &TokenKeys, metadata: &MetadataMap) -> Result<String, AuthError> {
    let token = bearer_token(metadata).map_err(|_| AuthError::NotAService)?;
    keys.verify_service_token(token).map_err(|_| AuthError::NotAService)
}

/// Extracts the token of an `authorization: Bearer <token>` entry.
pub fn bearer_token(metadata: &MetadataMap) -> Result<&str, AuthError> {
    let mut values = metadata.get_all("authorization").iter();
    let value = values.next().ok_or(AuthError::Missing)?;
    // Two credentials are ambiguous: a proxy that reads the other one would disagree about
    // who is calling.
    if values.next().is_some() {
        return Err(AuthError::Duplicate);
    }
    // Non-ASCII bytes cannot form a JWT; report them as a malformed token, not a missing one.
    let value = value.to_str().map_err(|_| TokenError::Malformed)?;
    let (scheme, token) = value.trim().split_once(' ').unwrap_or((value.trim(), ""));
    // The scheme is case-insensitive (RFC 7235 §2.1).
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::WrongScheme);
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(AuthError::Empty);
    }
    Ok(token)
}

/// Interceptor that admits only requests with a valid bearer token and puts the
/// [`AuthenticatedUser`] into their extensions.
#[derive(Clone, Debug)]
pub struct RequireBearer {
    keys: Arc<TokenKeys>,
}

impl RequireBearer {
    pub fn new(keys: Arc<TokenKeys>) -> Self {
        Self { keys }
    }
}

impl Interceptor for RequireBearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let user = authenticate(&self.keys, request.metadata())?;
        request.extensions_mut().insert(user);
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metadata(value: &str) -> MetadataMap {
        let mut map = MetadataMap::new();
        map.insert("authorization", value.parse().unwrap());
        map
    }

    #[test]
    fn scheme_is_case_insensitive() {
        assert_eq!(bearer_token(&metadata("bearer abc")), Ok("abc"));
        assert_eq!(bearer_token(&metadata("BEARER  abc ")), Ok("abc"));
    }

    #[test]
    fn each_failure_has_its_own_reason() {
        assert_eq!(bearer_token(&MetadataMap::new()), Err(AuthError::Missing));
        assert_eq!(bearer_token(&metadata("Basic abc")), Err(AuthError::WrongScheme));
        assert_eq!(bearer_token(&metadata("Bearer")), Err(AuthError::Empty));
        assert_eq!(bearer_token(&metadata("Bearer   ")), Err(AuthError::Empty));
        assert_eq!(bearer_token(&metadata("abc.def.ghi")), Err(AuthError::WrongScheme));
        let mut twice = metadata("Bearer abc");
        twice.append("authorization", "Bearer def".parse().unwrap());
        assert_eq!(bearer_token(&twice), Err(AuthError::Duplicate));
    }
}
