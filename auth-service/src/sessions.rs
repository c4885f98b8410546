//! Sessions: what Login starts, Refresh extends and rotates, and Logout, RevokeSession,
//! ChangePassword, DeleteAccount and a reused refresh token end.
//!
//! Audit lines (target `audit`, field `event`) are written here and in [`crate::accounts`],
//! one per security event, with ids only: never an email, a password or a token.

use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;
use todo_shared::auth::{AuthError, AuthenticatedUser};
use todo_shared::token::{MintedToken, TokenKeys};
use uuid::Uuid;

use crate::domain::User;
use crate::error::Error;
use crate::feed::FeedSignal;
use crate::refresh_token::RefreshToken;
use crate::store::{NewSession, RefreshRules, Revocation, Rotation, SessionInfo, Sessions as Which, Store};

/// How long sessions and their tokens live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionPolicy {
    /// `ACCESS_TOKEN_TTL`: lifetime of an access token (never beyond its session's end).
    pub access_token_ttl: Duration,
    /// `SESSION_MAX_AGE`: a session ends this long after its Login, however active.
    pub max_age: Duration,
    /// `SESSION_IDLE_TIMEOUT`: a session whose refresh token goes unused this long ends.
    pub idle_timeout: Duration,
    /// `REFRESH_REUSE_GRACE`: a rotated refresh token still answers with the session's
    /// current pair this long after its rotation.
    pub reuse_grace: Duration,
}

impl Default for SessionPolicy {
    fn default() -> Self {
        Self {
            access_token_ttl: Self::DEFAULT_ACCESS_TOKEN_TTL,
            max_age: Self::DEFAULT_MAX_AGE,
            idle_timeout: Self::DEFAULT_IDLE_TIMEOUT,
            reuse_grace: Self::DEFAULT_REUSE_GRACE,
        }
    }
}

impl SessionPolicy {
    /// How long a revocation stays in force: until the last access token it refuses expires.
    pub fn revocation_lifetime(&self) -> Duration {
        self.access_token_ttl + todo_shared::token::LEEWAY + EVENT_RETENTION_MARGIN
    }

    /// Seven days: the product's stated token lifetime.
    pub const DEFAULT_ACCESS_TOKEN_TTL: Duration = Duration::from_secs(7 * 24 * 60 * 60);
    pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(90 * 24 * 60 * 60);
    pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30 * 24 * 60 * 60);
    pub const DEFAULT_REUSE_GRACE: Duration = Duration::from_secs(10);
}

/// Kept beyond the access-token lifetime before a revocation leaves the log: room for a
/// lowered `ACCESS_TOKEN_TTL` (tokens minted before keep their longer `exp` for a while).
const EVENT_RETENTION_MARGIN: Duration = Duration::from_secs(24 * 60 * 60);

/// How often expired sessions and log entries are pruned.
pub const PRUNE_INTERVAL: Duration = Duration::from_secs(10 * 60);

/// What the client gets from Login and Refresh.
#[derive(Debug)]
pub struct IssuedTokens {
    pub session_id: Uuid,
    pub access: MintedToken,
    pub refresh: RefreshToken,
    /// Seconds until the refresh token expires if unused.
    pub refresh_expires_in: u64,
}

/// Which sessions Logout ends (the contract's `LogoutScope`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogoutScope {
    Current,
    Others,
    All,
}

pub struct Sessions {
    store: Arc<dyn Store>,
    keys: Arc<TokenKeys>,
    policy: SessionPolicy,
    signal: FeedSignal,
}

fn to_time(d: Duration) -> time::Duration {
    time::Duration::try_from(d).unwrap_or(time::Duration::MAX)
}

impl Sessions {
    pub fn new(store: Arc<dyn Store>, keys: Arc<TokenKeys>, policy: SessionPolicy, signal: FeedSignal) -> Self {
        Self { store, keys, policy, signal }
    }

    pub fn keys(&self) -> &TokenKeys {
        &self.keys
    }

    pub fn policy(&self) -> &SessionPolicy {
        &self.policy
    }

    pub fn rules(&self, now: OffsetDateTime) -> RefreshRules {
        RefreshRules {
            now,
            idle_timeout: to_time(self.policy.idle_timeout),
            reuse_grace: to_time(self.policy.reuse_grace),
        }
    }

    /// Starts a session for a user who just proved their password.
    pub async fn start(&self, user: &User, user_agent: String) -> Result<IssuedTokens, Error> {
        let now = todo_shared::timestamp::now();
        let (id, refresh) = (Uuid::new_v4(), RefreshToken::generate().map_err(Error::Randomness)?);
        let expires_at = now + to_time(self.policy.max_age);
        let session =
            NewSession { id, user_id: user.id, refresh_hash: refresh.hash(), created_at: now, expires_at, user_agent };
        self.store.create_session(session).await?;
        tracing::info!(target: "audit", event = "login_succeeded", user_id = %user.id, session_id = %id);
        self.issue(user.id, &user.email, id, expires_at, refresh, now)
    }

    fn issue(
        &self,
        user_id: Uuid,
        email: &str,
        session_id: Uuid,
        expires_at: OffsetDateTime,
        refresh: RefreshToken,
        now: OffsetDateTime,
    ) -> Result<IssuedTokens, Error> {
        let remaining = Duration::try_from(expires_at - now).unwrap_or(Duration::ZERO);
        let access =
            self.keys.mint_for_session(user_id, email, session_id, self.policy.access_token_ttl.min(remaining))?;
        let refresh_expires_in = self.policy.idle_timeout.min(remaining).as_secs();
        Ok(IssuedTokens { session_id, access, refresh, refresh_expires_in })
    }

    /// Exchanges a refresh token for a new pair (see `Refresh` in the contract).
    pub async fn refresh(&self, presented: &str) -> Result<IssuedTokens, Error> {
        let presented = RefreshToken::parse(presented).map_err(|_| Error::InvalidRefreshToken)?;
        let next = RefreshToken::generate().map_err(Error::Randomness)?;
        let now = todo_shared::timestamp::now();
        match self.store.rotate_refresh_token(&presented, &next, self.rules(now)).await? {
            Rotation::Rotated(owner) => {
                tracing::info!(target: "audit", event = "session_refreshed", user_id = %owner.user_id,
                    session_id = %owner.session_id);
                self.issue(owner.user_id, &owner.email, owner.session_id, owner.expires_at, next, now)
            }
            Rotation::Current(owner, current) => {
                tracing::info!(target: "audit", event = "session_refreshed", user_id = %owner.user_id,
                    session_id = %owner.session_id, within_reuse_grace = true);
                self.issue(owner.user_id, &owner.email, owner.session_id, owner.expires_at, current, now)
            }
            Rotation::Reused(owner) => {
                self.signal.notify();
                tracing::warn!(target: "audit", event = "refresh_token_reuse_detected", user_id = %owner.user_id,
                    session_id = %owner.session_id);
                tracing::info!(target: "audit", event = "session_revoked", user_id = %owner.user_id,
                    session_id = %owner.session_id, reason = "refresh_token_reuse");
                Err(Error::InvalidRefreshToken)
            }
            Rotation::Invalid => Err(Error::InvalidRefreshToken),
        }
    }

    /// Refuses an access token whose session has ended (or, without a session, whose user
    /// revoked every token after it was issued, or is gone).
    pub async fn authorize(&self, caller: &AuthenticatedUser) -> Result<(), Error> {
        let iat = i64::try_from(caller.issued_at).unwrap_or(i64::MAX);
        if self.store.token_is_live(caller.id, caller.session_id, iat).await? {
            Ok(())
        } else {
            Err(Error::Unauthenticated(AuthError::Revoked))
        }
    }

    pub async fn logout(&self, caller: &AuthenticatedUser, scope: LogoutScope) -> Result<u64, Error> {
        let sessions = match (scope, caller.session_id) {
            (LogoutScope::All, _) => Which::AllExcept(None),
            (LogoutScope::Current, Some(current)) => Which::One(current),
            (LogoutScope::Others, Some(current)) => Which::AllExcept(Some(current)),
            (LogoutScope::Current | LogoutScope::Others, None) => return Err(Error::NoSession),
        };
        // Session-less tokens are "others" to any session, and part of "all".
        let sessionless_tokens = scope != LogoutScope::Current;
        let revocation = Revocation {
            user_id: caller.id,
            sessions,
            sessionless_tokens,
            new_password_hash: None,
            at: todo_shared::timestamp::now(),
        };
        let reason = match scope {
            LogoutScope::Current => "logout",
            LogoutScope::Others => "logout_others",
            LogoutScope::All => "logout_all",
        };
        self.end(revocation, reason).await
    }

    pub async fn list(&self, caller: &AuthenticatedUser) -> Result<Vec<SessionInfo>, Error> {
        self.store.list_sessions(caller.id, self.rules(todo_shared::timestamp::now())).await
    }

    /// Ends one of the caller's sessions; NOT_FOUND for any other id, the caller's or not.
    pub async fn revoke_one(&self, caller: &AuthenticatedUser, id: Uuid) -> Result<(), Error> {
        let revocation = Revocation {
            user_id: caller.id,
            sessions: Which::One(id),
            sessionless_tokens: false,
            new_password_hash: None,
            at: todo_shared::timestamp::now(),
        };
        match self.end(revocation, "revoke_session").await? {
            0 => Err(Error::SessionNotFound),
            _ => Ok(()),
        }
    }

    /// Applies a revocation, wakes the feed and writes one audit line per ended session.
    pub async fn end(&self, revocation: Revocation, reason: &'static str) -> Result<u64, Error> {
        let (user_id, which) = (revocation.user_id, revocation.sessions);
        let ended = self.store.revoke(revocation).await?;
        self.signal.notify();
        tracing::info!(target: "audit", event = "session_revoked", %user_id, sessions = ?which, ended, reason);
        Ok(ended)
    }

    /// Deletes expired sessions and the log entries that can no longer refuse a token: a
    /// revocation matters until the last access token it refuses has expired.
    pub async fn prune(&self) -> Result<(), Error> {
        let now = todo_shared::timestamp::now();
        let keep = self.policy.revocation_lifetime();
        let (sessions, events) = self.store.prune(self.rules(now), now - to_time(keep)).await?;
        if sessions + events > 0 {
            tracing::info!(sessions, events, "expired sessions and session events pruned");
        }
        Ok(())
    }

    /// Deletes the account and everything of it that auth-service holds; task-service purges
    /// the tasks when the event reaches it.
    pub async fn delete_account(&self, user_id: Uuid) -> Result<(), Error> {
        if !self.store.delete_account(user_id, todo_shared::timestamp::now()).await? {
            return Err(Error::Unauthenticated(AuthError::Revoked));
        }
        self.signal.notify();
        tracing::info!(target: "audit", event = "account_deleted", %user_id);
        Ok(())
    }
}
