//! The account operations behind the RPCs: sign-up, login, and who a token belongs to.

use std::sync::Arc;
use std::time::Duration;

use todo_shared::auth::AuthenticatedUser;
use todo_shared::token::{MintedToken, TokenKeys};
use uuid::Uuid;

use crate::domain::{Credentials, NewAccount, User};
use crate::error::Error;
use crate::password::{PasswordHasher, Verification};
use crate::store::{NewUser, UserStore};

pub struct Accounts {
    store: Arc<dyn UserStore>,
    hasher: Arc<PasswordHasher>,
    keys: Arc<TokenKeys>,
    token_ttl: Duration,
}

/// A successful login.
#[derive(Debug)]
pub struct Session {
    pub token: MintedToken,
    pub user: User,
}

impl Accounts {
    pub fn new(
        store: Arc<dyn UserStore>,
        hasher: Arc<PasswordHasher>,
        keys: Arc<TokenKeys>,
        token_ttl: Duration,
    ) -> Self {
        Self { store, hasher, keys, token_ttl }
    }

    pub fn keys(&self) -> &TokenKeys {
        &self.keys
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
        tracing::info!(user_id = %user.id, "user signed up");
        Ok(user)
    }

    /// Unknown email and wrong password take the same path through the hasher and end in the
    /// same error, so neither the answer nor its timing tells them apart.
    pub async fn login(&self, credentials: Credentials) -> Result<Session, Error> {
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
            self.upgrade_hash(&user, credentials).await;
        }
        let token = self.keys.mint(user.id, &user.email, self.token_ttl)?;
        tracing::info!(user_id = %user.id, "user logged in");
        Ok(Session { token, user })
    }

    /// Re-hashes with today's parameters. Best effort: a failure leaves the old (still valid)
    /// hash in place and must not fail the login.
    async fn upgrade_hash(&self, user: &User, credentials: Credentials) {
        let result = async {
            let hash = self.hasher.hash(credentials.password).await?;
            self.store.update_password_hash(user.id, &hash, todo_shared::timestamp::now()).await
        }
        .await;
        match result {
            Ok(()) => tracing::info!(user_id = %user.id, "password hash upgraded"),
            Err(err) => tracing::warn!(user_id = %user.id, error = %err, "password hash upgrade failed"),
        }
    }

    /// The user a verified token was issued to, if the account still exists.
    pub async fn current_user(&self, caller: &AuthenticatedUser) -> Result<User, Error> {
        self.store.find_user(caller.id).await?.ok_or(Error::UserGone)
    }
}
