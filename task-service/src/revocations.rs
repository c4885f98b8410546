//! What auth-service has revoked, as task-service knows it: an in-memory copy of the
//! session-event log's effect, checked on every RPC after the token's signature.

use std::collections::HashMap;
use std::sync::RwLock;
use std::sync::atomic::{AtomicBool, Ordering};

use todo_shared::auth::{AuthError, AuthenticatedUser};
use uuid::Uuid;

/// A user-wide rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct UserRule {
    /// Session-less tokens issued at or before this second are refused.
    not_before: i64,
    /// Every token of the user is refused.
    deleted: bool,
    /// Unix seconds after which no token the rule refuses can still be valid.
    expires: i64,
}

#[derive(Debug, Default)]
struct State {
    /// Revoked session -> when the last of its tokens expires.
    sessions: HashMap<Uuid, i64>,
    users: HashMap<Uuid, UserRule>,
}

/// One event of the log, as it applies here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revocation {
    Session(Uuid),
    SessionlessTokens { not_before: i64 },
    Account,
}

#[derive(Debug)]
pub struct Revocations {
    state: RwLock<State>,
    /// Whether anything is revoked at all: the common case skips the lock.
    any: AtomicBool,
    /// Bumped on every applied revocation: open WatchTasks streams check their caller again.
    applied: tokio::sync::watch::Sender<u64>,
}

impl Default for Revocations {
    fn default() -> Self {
        Self { state: RwLock::default(), any: AtomicBool::new(false), applied: tokio::sync::watch::channel(0).0 }
    }
}

impl Revocations {
    /// Refuses a token whose session, user-wide rule or account deletion says so.
    pub fn check(&self, caller: &AuthenticatedUser) -> Result<(), AuthError> {
        if !self.any.load(Ordering::Acquire) {
            return Ok(());
        }
        let state = self.state.read().unwrap_or_else(|p| p.into_inner());
        let revoked_session = caller.session_id.is_some_and(|sid| state.sessions.contains_key(&sid));
        let revoked_by_user = state.users.get(&caller.id).is_some_and(|rule| {
            let iat = i64::try_from(caller.issued_at).unwrap_or(i64::MAX);
            rule.deleted || (caller.session_id.is_none() && iat <= rule.not_before)
        });
        if revoked_session || revoked_by_user { Err(AuthError::Revoked) } else { Ok(()) }
    }

    /// Applies one event; `expires` is when it stops mattering (Unix seconds).
    pub fn apply(&self, user_id: Uuid, revocation: Revocation, expires: i64) {
        let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
        match revocation {
            Revocation::Session(session) => {
                state.sessions.insert(session, expires);
            }
            Revocation::SessionlessTokens { not_before } => {
                let rule = state.users.entry(user_id).or_insert(UserRule { not_before, deleted: false, expires });
                rule.not_before = rule.not_before.max(not_before);
                rule.expires = rule.expires.max(expires);
            }
            Revocation::Account => {
                state.users.insert(user_id, UserRule { not_before: i64::MAX, deleted: true, expires });
            }
        }
        self.any.store(true, Ordering::Release);
        drop(state);
        self.applied.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Changes whenever a revocation is applied.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.applied.subscribe()
    }

    /// Forgets what can no longer refuse any unexpired token.
    pub fn forget_expired(&self, now: i64) -> usize {
        let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
        let before = state.sessions.len() + state.users.len();
        state.sessions.retain(|_, expires| *expires > now);
        state.users.retain(|_, rule| rule.expires > now);
        let after = state.sessions.len() + state.users.len();
        self.any.store(after > 0, Ordering::Release);
        before - after
    }

    /// Forgets everything (the log was replaced and is being replayed).
    pub fn clear(&self) {
        let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
        *state = State::default();
        self.any.store(false, Ordering::Release);
    }

    /// How many revocations are held (sessions, users).
    pub fn len(&self) -> (usize, usize) {
        let state = self.state.read().unwrap_or_else(|p| p.into_inner());
        (state.sessions.len(), state.users.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(id: Uuid, session: Option<Uuid>, iat: u64) -> AuthenticatedUser {
        AuthenticatedUser { id, email: "a@b.co".into(), session_id: session, issued_at: iat, expires_at: u64::MAX }
    }

    #[test]
    fn a_revoked_session_refuses_only_its_own_tokens() {
        let revocations = Revocations::default();
        let (user, revoked, kept) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        revocations.apply(user, Revocation::Session(revoked), 100);
        assert_eq!(revocations.check(&caller(user, Some(revoked), 10)), Err(AuthError::Revoked));
        assert_eq!(revocations.check(&caller(user, Some(kept), 10)), Ok(()));
        assert_eq!(revocations.check(&caller(user, None, 10)), Ok(()));
    }

    #[test]
    fn not_before_refuses_older_sessionless_tokens_only() {
        let revocations = Revocations::default();
        let user = Uuid::new_v4();
        revocations.apply(user, Revocation::SessionlessTokens { not_before: 50 }, 100);
        assert_eq!(revocations.check(&caller(user, None, 50)), Err(AuthError::Revoked));
        assert_eq!(revocations.check(&caller(user, None, 51)), Ok(()));
        assert_eq!(revocations.check(&caller(user, Some(Uuid::new_v4()), 10)), Ok(()));
    }

    #[test]
    fn a_deleted_account_refuses_everything_until_it_expires() {
        let revocations = Revocations::default();
        let user = Uuid::new_v4();
        revocations.apply(user, Revocation::Account, 100);
        assert_eq!(revocations.check(&caller(user, Some(Uuid::new_v4()), 99)), Err(AuthError::Revoked));
        assert_eq!(revocations.forget_expired(99), 0);
        assert_eq!(revocations.forget_expired(100), 1);
        assert_eq!(revocations.check(&caller(user, None, 99)), Ok(()));
    }
}
