//! The account operations behind the RPCs: sign-up, login, password change, deletion, and
//! who a token belongs to.

use std::sync::Arc;

use todo_shared::auth::AuthenticatedUser;
use uuid::Uuid;

use crate::account_requests::{AccountDeletion, PasswordChange, same_as_email};
use crate::domain::{Credentials, NewAccount, Password, User};
use crate::error::Error;
use crate::password::{PasswordHasher, Verification};
use crate::sessions::{IssuedTokens, Sessions};
use crate::store::{NewUser, Revocation, Sessions as Which, Store};

pub struct Accounts {
    store: Arc<dyn Store>,
    hasher: Arc<PasswordHasher>,
    sessions: Arc<Sessions>,
}

/// A successful login: the session it started and its user.
#[derive(Debug)]
pub struct Login {
    pub tokens: IssuedTokens,
    pub user: User,
}

impl Accounts {
    pub fn new(store: Arc<dyn Store>, hasher: Arc<PasswordHasher>, sessions: Arc<Sessions>) -> Self {
        Self { store, hasher, sessions }
    }

    pub fn sessions(&self) -> &Sessions {
        &self.sessions
    }

    pub async fn sign_up(&self, account: NewAccount) -> Result<User, Error> {
        for spelling in &account.earlier_spellings {
            if self.store.find_credentials(spelling).await?.is_some() {
                return Err(Error::EmailTaken);
            }
        }
        let password_hash = self.hasher.hash(account.password).await?;
        let user = self
            .store
            .create_user(NewUser {
                id: Uuid::new_v4(),
                email: account.email,
                password_hash,
                created_at: todo_shared::timestamp::now(),
            })
            .await?;
        tracing::info!(target: "audit", event = "user_signed_up", user_id = %user.id);
        Ok(user)
    }

    /// Unknown email and wrong password take the same path through the hasher and end in the
    /// same error, so neither the answer nor its timing tells them apart.
    pub async fn login(&self, credentials: Credentials, user_agent: String) -> Result<Login, Error> {
        let mut stored = self.store.find_credentials(&credentials.email).await?;
        for spelling in &credentials.earlier_spellings {
            if stored.is_some() {
                break;
            }
            stored = self.store.find_credentials(spelling).await?;
        }
        let (user, hash) = match stored {
            Some(stored) => (Some(stored.user), Some(stored.password_hash)),
            None => (None, None),
        };
        let verification = self.hasher.verify(credentials.password.clone(), hash).await?;
        let (user, needs_rehash) = match (user, verification) {
            (Some(user), Verification::Match { needs_rehash }) => (user, needs_rehash),
            _ => return Err(Error::InvalidCredentials),
        };
        if needs_rehash {
            self.upgrade_hash(&user, credentials.password).await;
        }
        let tokens = self.sessions.start(&user, user_agent).await?;
        Ok(Login { tokens, user })
    }

    /// Re-hashes with today's parameters. Best effort: a failure leaves the old (still valid)
    /// hash in place and must not fail the login.
    async fn upgrade_hash(&self, user: &User, password: Password) {
        let result = async {
            let hash = self.hasher.hash(password).await?;
            self.store.update_password_hash(user.id, &hash, todo_shared::timestamp::now()).await
        }
        .await;
        match result {
            Ok(()) => tracing::info!(user_id = %user.id, "password hash upgraded"),
            Err(err) => tracing::warn!(user_id = %user.id, error = %err, "password hash upgrade failed"),
        }
    }

    /// The user a live token was issued to.
    pub async fn current_user(&self, caller: &AuthenticatedUser) -> Result<User, Error> {
        self.store.find_user(caller.id).await?.ok_or(Error::UserGone)
    }

    /// Checks `password` against the caller's account, through the hasher like a login.
    async fn confirm_password(&self, caller: &AuthenticatedUser, password: Password) -> Result<(), Error> {
        let stored = self.store.find_credentials(&caller.email).await?.filter(|s| s.user.id == caller.id);
        let Some(stored) = stored else { return Err(Error::UserGone) };
        match self.hasher.verify(password, Some(stored.password_hash)).await? {
            Verification::Match { .. } => Ok(()),
            _ => Err(Error::WrongPassword),
        }
    }

    /// Replaces the password and ends every other session; returns how many ended. A caller
    /// whose token has no session keeps none: every session and session-less token ends.
    pub async fn change_password(&self, caller: &AuthenticatedUser, change: PasswordChange) -> Result<u64, Error> {
        if change.new.is_email_or_local_part(&caller.email) {
            return Err(Error::Invalid(same_as_email()));
        }
        self.confirm_password(caller, change.current).await?;
        let hash = self.hasher.hash(change.new).await?;
        let revocation = Revocation {
            user_id: caller.id,
            sessions: Which::AllExcept(caller.session_id),
            sessionless_tokens: true,
            new_password_hash: Some(hash),
            at: todo_shared::timestamp::now(),
        };
        let ended = self.sessions.end(revocation, "password_changed").await?;
        tracing::info!(target: "audit", event = "password_changed", user_id = %caller.id);
        Ok(ended)
    }

    pub async fn delete_account(&self, caller: &AuthenticatedUser, deletion: AccountDeletion) -> Result<(), Error> {
        self.confirm_password(caller, deletion.password).await?;
        self.sessions.delete_account(caller.id).await
    }
}
