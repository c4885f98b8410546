//! The gRPC adapter: convert the request, call [`Accounts`], convert the answer back.

use std::net::IpAddr;
use std::sync::Arc;

use todo_contract::auth::v1 as pb;
use todo_contract::auth::v1::auth_service_server::AuthService;
use todo_shared::auth::authenticate;
use tonic::{Request, Response, Status};

use crate::accounts::Accounts;
use crate::domain::{Credentials, NewAccount};
use crate::error::Error;
use crate::throttle::Throttle;

/// The `token_type` of every LoginResponse (RFC 6750).
const TOKEN_TYPE: &str = "bearer";

pub struct AuthApi {
    accounts: Arc<Accounts>,
    throttle: Arc<Throttle>,
}

impl AuthApi {
    pub fn new(accounts: Arc<Accounts>, throttle: Arc<Throttle>) -> Self {
        Self { accounts, throttle }
    }

    fn client_address<T>(&self, request: &Request<T>) -> Option<IpAddr> {
        self.throttle.client_address(request.remote_addr(), request.metadata())
    }
}

#[tonic::async_trait]
impl AuthService for AuthApi {
    async fn sign_up(&self, request: Request<pb::SignUpRequest>) -> Result<Response<pb::SignUpResponse>, Status> {
        let address = self.client_address(&request);
        let account = NewAccount::try_from(request.into_inner()).map_err(Error::from)?;
        // Counted before any hashing: a refused attempt costs the server almost nothing.
        self.throttle.attempt(address, account.email.as_str()).map_err(Error::Throttled)?;
        let user = self.accounts.sign_up(account).await?;
        Ok(Response::new(pb::SignUpResponse { user: Some(user.into()) }))
    }

    async fn login(&self, request: Request<pb::LoginRequest>) -> Result<Response<pb::LoginResponse>, Status> {
        let address = self.client_address(&request);
        let credentials = Credentials::try_from(request.into_inner()).map_err(Error::from)?;
        self.throttle.attempt(address, &credentials.email).map_err(Error::Throttled)?;
        let email = credentials.email.clone();
        let session = self.accounts.login(credentials).await?;
        self.throttle.succeeded(&email);
        Ok(Response::new(pb::LoginResponse {
            access_token: session.token.token,
            token_type: TOKEN_TYPE.to_owned(),
            expires_in: i64::try_from(session.token.expires_in).unwrap_or(i64::MAX),
            user: Some(session.user.into()),
        }))
    }

    async fn get_current_user(
        &self,
        request: Request<pb::GetCurrentUserRequest>,
    ) -> Result<Response<pb::GetCurrentUserResponse>, Status> {
        let caller = authenticate(self.accounts.keys(), request.metadata()).map_err(Error::from)?;
        let user = self.accounts.current_user(&caller).await?;
        Ok(Response::new(pb::GetCurrentUserResponse { user: Some(user.into()) }))
    }
}
