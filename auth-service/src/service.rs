//! The gRPC adapter: convert the request, call [`Accounts`] or [`Sessions`], convert the
//! answer back.

use std::net::IpAddr;
use std::sync::Arc;

use todo_contract::auth::v1 as pb;
use todo_contract::auth::v1::auth_service_server::AuthService;
use todo_shared::auth::{AuthenticatedUser, authenticate};
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::account_requests::{AccountDeletion, PasswordChange};
use crate::accounts::Accounts;
use crate::domain::{Credentials, NewAccount};
use crate::error::Error;
use crate::sessions::{IssuedTokens, LogoutScope, Sessions};
use crate::store::SessionInfo;
use crate::throttle::Throttle;

/// The `token_type` of every LoginResponse and RefreshResponse (RFC 6750).
const TOKEN_TYPE: &str = "bearer";
/// Longest `user-agent` kept for the sessions list.
const USER_AGENT_MAX_CHARS: usize = 256;

pub struct AuthApi {
    accounts: Arc<Accounts>,
    throttle: Arc<Throttle>,
}

impl AuthApi {
    pub fn new(accounts: Arc<Accounts>, throttle: Arc<Throttle>) -> Self {
        Self { accounts, throttle }
    }

    fn sessions(&self) -> &Sessions {
        self.accounts.sessions()
    }

    fn client_address<T>(&self, request: &Request<T>) -> Option<IpAddr> {
        self.throttle.client_address(request.remote_addr(), request.metadata())
    }

    /// The caller of a bearer-authenticated RPC, refused if their session has ended.
    async fn caller(&self, metadata: &MetadataMap) -> Result<AuthenticatedUser, Error> {
        let caller = authenticate(self.sessions().keys(), metadata)?;
        self.sessions().authorize(&caller).await?;
        Ok(caller)
    }

    /// Counts a password attempt on the caller's account (ChangePassword, DeleteAccount).
    async fn password_attempt(&self, address: Option<IpAddr>, caller: &AuthenticatedUser) -> Result<(), Error> {
        self.throttle.attempt(address, &caller.email).await
    }
}

fn seconds(secs: u64) -> i64 {
    i64::try_from(secs).unwrap_or(i64::MAX)
}

/// The request's `user-agent`, printable and bounded, for the sessions list.
fn user_agent(metadata: &MetadataMap) -> String {
    let raw = metadata.get("user-agent").and_then(|v| v.to_str().ok()).unwrap_or_default();
    raw.chars().filter(|c| !c.is_control()).take(USER_AGENT_MAX_CHARS).collect::<String>().trim().to_owned()
}

impl From<SessionInfo> for pb::Session {
    fn from(session: SessionInfo) -> Self {
        Self {
            id: session.id.to_string(),
            create_time: Some(todo_shared::timestamp::to_proto(session.created_at)),
            last_use_time: Some(todo_shared::timestamp::to_proto(session.last_used_at)),
            user_agent: session.user_agent,
            current: false,
        }
    }
}

impl From<IssuedTokens> for pb::RefreshResponse {
    fn from(tokens: IssuedTokens) -> Self {
        Self {
            access_token: tokens.access.token,
            token_type: TOKEN_TYPE.to_owned(),
            expires_in: seconds(tokens.access.expires_in),
            refresh_token: tokens.refresh.encode(),
            refresh_token_expires_in: seconds(tokens.refresh_expires_in),
        }
    }
}

#[tonic::async_trait]
impl AuthService for AuthApi {
    async fn sign_up(&self, request: Request<pb::SignUpRequest>) -> Result<Response<pb::SignUpResponse>, Status> {
        let address = self.client_address(&request);
        let account = NewAccount::try_from(request.into_inner()).map_err(Error::from)?;
        // Counted before any hashing: a refused attempt costs the server almost nothing.
        self.throttle.attempt(address, account.email.as_str()).await?;
        let user = self.accounts.sign_up(account).await?;
        Ok(Response::new(pb::SignUpResponse { user: Some(user.into()) }))
    }

    async fn login(&self, request: Request<pb::LoginRequest>) -> Result<Response<pb::LoginResponse>, Status> {
        let address = self.client_address(&request);
        let agent = user_agent(request.metadata());
        let credentials = Credentials::try_from(request.into_inner()).map_err(Error::from)?;
        match self.throttle.attempt(address, &credentials.email).await {
            Ok(()) => {}
            Err(err @ Error::Throttled(_)) => {
                tracing::info!(target: "audit", event = "login_throttled", address = ?address);
                return Err(err.into());
            }
            Err(err) => return Err(err.into()),
        }
        let email = credentials.email.clone();
        let login = match self.accounts.login(credentials, agent).await {
            Ok(login) => login,
            Err(Error::InvalidCredentials) => {
                tracing::info!(target: "audit", event = "login_failed", address = ?address);
                return Err(Error::InvalidCredentials.into());
            }
            Err(err) => return Err(err.into()),
        };
        self.throttle.succeeded(&email).await;
        let tokens = login.tokens;
        Ok(Response::new(pb::LoginResponse {
            access_token: tokens.access.token,
            token_type: TOKEN_TYPE.to_owned(),
            expires_in: seconds(tokens.access.expires_in),
            user: Some(login.user.into()),
            refresh_token: tokens.refresh.encode(),
            refresh_token_expires_in: seconds(tokens.refresh_expires_in),
            session_id: tokens.session_id.to_string(),
        }))
    }

    async fn get_current_user(
        &self,
        request: Request<pb::GetCurrentUserRequest>,
    ) -> Result<Response<pb::GetCurrentUserResponse>, Status> {
        let caller = self.caller(request.metadata()).await?;
        let user = self.accounts.current_user(&caller).await?;
        Ok(Response::new(pb::GetCurrentUserResponse { user: Some(user.into()) }))
    }

    async fn refresh(&self, request: Request<pb::RefreshRequest>) -> Result<Response<pb::RefreshResponse>, Status> {
        self.throttle.refresh_attempt(self.client_address(&request)).await?;
        let tokens = self.sessions().refresh(&request.into_inner().refresh_token).await?;
        Ok(Response::new(tokens.into()))
    }

    async fn logout(&self, request: Request<pb::LogoutRequest>) -> Result<Response<pb::LogoutResponse>, Status> {
        let caller = self.caller(request.metadata()).await?;
        // Unknown numbers (from a newer contract) are refused rather than guessed at.
        let scope = match pb::LogoutScope::try_from(request.into_inner().scope) {
            Ok(pb::LogoutScope::Unspecified | pb::LogoutScope::Current) => LogoutScope::Current,
            Ok(pb::LogoutScope::Others) => LogoutScope::Others,
            Ok(pb::LogoutScope::All) => LogoutScope::All,
            Err(_) => {
                let mut violations = todo_shared::validation::FieldViolations::new();
                violations.add("scope", "is not a LogoutScope this server knows");
                return Err(Error::Invalid(violations).into());
            }
        };
        let ended = self.sessions().logout(&caller, scope).await?;
        Ok(Response::new(pb::LogoutResponse { revoked_sessions: i32::try_from(ended).unwrap_or(i32::MAX) }))
    }

    async fn list_sessions(
        &self,
        request: Request<pb::ListSessionsRequest>,
    ) -> Result<Response<pb::ListSessionsResponse>, Status> {
        let caller = self.caller(request.metadata()).await?;
        let sessions = self.sessions().list(&caller).await?;
        let sessions = sessions
            .into_iter()
            .map(|session| {
                let current = Some(session.id) == caller.session_id;
                pb::Session { current, ..session.into() }
            })
            .collect();
        Ok(Response::new(pb::ListSessionsResponse { sessions }))
    }

    async fn revoke_session(
        &self,
        request: Request<pb::RevokeSessionRequest>,
    ) -> Result<Response<pb::RevokeSessionResponse>, Status> {
        let caller = self.caller(request.metadata()).await?;
        let id = Uuid::try_parse(&request.into_inner().id).map_err(|_| {
            let mut violations = todo_shared::validation::FieldViolations::new();
            violations.add("id", "must be a session id (a UUID) from ListSessions");
            Error::Invalid(violations)
        })?;
        self.sessions().revoke_one(&caller, id).await?;
        Ok(Response::new(pb::RevokeSessionResponse {}))
    }

    async fn change_password(
        &self,
        request: Request<pb::ChangePasswordRequest>,
    ) -> Result<Response<pb::ChangePasswordResponse>, Status> {
        let caller = self.caller(request.metadata()).await?;
        let address = self.client_address(&request);
        let change = PasswordChange::try_from(request.into_inner()).map_err(Error::from)?;
        self.password_attempt(address, &caller).await?;
        let ended = self.accounts.change_password(&caller, change).await?;
        self.throttle.succeeded(&caller.email).await;
        Ok(Response::new(pb::ChangePasswordResponse { revoked_sessions: i32::try_from(ended).unwrap_or(i32::MAX) }))
    }

    async fn delete_account(
        &self,
        request: Request<pb::DeleteAccountRequest>,
    ) -> Result<Response<pb::DeleteAccountResponse>, Status> {
        let caller = self.caller(request.metadata()).await?;
        let address = self.client_address(&request);
        let deletion = AccountDeletion::try_from(request.into_inner()).map_err(Error::from)?;
        self.password_attempt(address, &caller).await?;
        self.accounts.delete_account(&caller, deletion).await?;
        Ok(Response::new(pb::DeleteAccountResponse {}))
    }
}
