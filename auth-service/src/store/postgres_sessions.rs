//! Sessions, refresh tokens and the session-event log on PostgreSQL.

use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};
use time::OffsetDateTime;
use uuid::Uuid;

use super::postgres::PgStore;
use super::{
    Change, MAX_CHAIN, NewSession, Presented, RefreshRules, Revocation, Rotation, SessionEvent, SessionInfo,
    SessionOwner, SessionStore, Sessions, event_columns, has_expired, judge, revocation_events,
};
use crate::error::Error;
use crate::refresh_token::RefreshToken;

/// Appends one event. The head row's lock, held to commit, orders appends by position.
async fn append(conn: &mut PgConnection, user_id: Uuid, change: &Change, at: OffsetDateTime) -> Result<i64, Error> {
    let position: i64 = sqlx::query_scalar("UPDATE session_event_head SET position = position + 1 RETURNING position")
        .fetch_one(&mut *conn)
        .await?;
    let (session_id, not_before) = event_columns(change);
    sqlx::query(
        "INSERT INTO session_events (position, kind, user_id, session_id, not_before, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(position)
    .bind(change.kind())
    .bind(user_id)
    .bind(session_id)
    .bind(not_before)
    .bind(at)
    .execute(&mut *conn)
    .await?;
    Ok(position)
}

fn event_from_row(row: &PgRow) -> Result<SessionEvent, sqlx::Error> {
    let kind: String = row.try_get("kind")?;
    Ok(SessionEvent {
        position: row.try_get("position")?,
        user_id: row.try_get("user_id")?,
        created_at: row.try_get("created_at")?,
        change: Change::from_columns(&kind, row.try_get("session_id")?, row.try_get("not_before")?)?,
    })
}

#[tonic::async_trait]
impl SessionStore for PgStore {
    async fn create_session(&self, session: NewSession) -> Result<(), Error> {
        let mut conn = self.pool.acquire().await?;
        let mut tx = conn.begin().await?;
        sqlx::query(
            "INSERT INTO sessions (id, user_id, created_at, last_used_at, expires_at, user_agent) \
             VALUES ($1, $2, $3, $3, $4, $5)",
        )
        .bind(session.id)
        .bind(session.user_id)
        .bind(session.created_at)
        .bind(session.expires_at)
        .bind(&session.user_agent)
        .execute(&mut *tx)
        .await?;
        sqlx::query("INSERT INTO refresh_tokens (token_hash, session_id, created_at) VALUES ($1, $2, $3)")
            .bind(&session.refresh_hash[..])
            .bind(session.id)
            .bind(session.created_at)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn rotate_refresh_token(
        &self,
        presented: &RefreshToken,
        next: &RefreshToken,
        rules: RefreshRules,
    ) -> Result<Rotation, Error> {
        let mut conn = self.pool.acquire().await?;
        let mut tx = conn.begin().await?;
        // Lock the session first, then read the token: a concurrent Refresh of the same
        // session waits here and then sees the rotation the first one committed.
        let row = sqlx::query(
            "SELECT s.id, s.user_id, s.expires_at, s.last_used_at, u.email \
             FROM sessions s JOIN users u ON u.id = s.user_id \
             WHERE s.id = (SELECT session_id FROM refresh_tokens WHERE token_hash = $1) \
             FOR UPDATE OF s",
        )
        .bind(&presented.hash()[..])
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else { return Ok(Rotation::Invalid) };
        let owner = SessionOwner {
            session_id: row.try_get("id")?,
            user_id: row.try_get("user_id")?,
            email: row.try_get("email")?,
            expires_at: row.try_get("expires_at")?,
        };
        if has_expired(owner.expires_at, row.try_get("last_used_at")?, &rules) {
            return Ok(Rotation::Invalid);
        }
        let token_state = "SELECT replaced_at, sealed_successor FROM refresh_tokens \
                           WHERE token_hash = $1 AND session_id = $2";
        let (replaced_at, mut sealed): (Option<OffsetDateTime>, Option<Vec<u8>>) =
            sqlx::query_as(token_state).bind(&presented.hash()[..]).bind(owner.session_id).fetch_one(&mut *tx).await?;
        let rotation = match judge(replaced_at, &rules) {
            Presented::Current => {
                sqlx::query("INSERT INTO refresh_tokens (token_hash, session_id, created_at) VALUES ($1, $2, $3)")
                    .bind(&next.hash()[..])
                    .bind(owner.session_id)
                    .bind(rules.now)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("UPDATE refresh_tokens SET replaced_at = $2, sealed_successor = $3 WHERE token_hash = $1")
                    .bind(&presented.hash()[..])
                    .bind(rules.now)
                    .bind(presented.seal(next))
                    .execute(&mut *tx)
                    .await?;
                Rotation::Rotated(owner.clone())
            }
            Presented::WithinGrace => {
                let mut token = presented.clone();
                let mut current = None;
                for _ in 0..MAX_CHAIN {
                    let Some(successor) = sealed.as_deref().and_then(|s| token.unseal(s)) else { break };
                    let state: Option<(Option<OffsetDateTime>, Option<Vec<u8>>)> = sqlx::query_as(token_state)
                        .bind(&successor.hash()[..])
                        .bind(owner.session_id)
                        .fetch_optional(&mut *tx)
                        .await?;
                    let Some((replaced_at, next_sealed)) = state else { break };
                    if replaced_at.is_none() {
                        current = Some(successor);
                        break;
                    }
                    (token, sealed) = (successor, next_sealed);
                }
                match current {
                    Some(current) => Rotation::Current(owner.clone(), current),
                    None => return Ok(Rotation::Invalid),
                }
            }
            Presented::Reused => {
                sqlx::query("DELETE FROM sessions WHERE id = $1").bind(owner.session_id).execute(&mut *tx).await?;
                append(&mut tx, owner.user_id, &Change::SessionRevoked(owner.session_id), rules.now).await?;
                tx.commit().await?;
                return Ok(Rotation::Reused(owner));
            }
        };
        sqlx::query("UPDATE sessions SET last_used_at = $2 WHERE id = $1")
            .bind(owner.session_id)
            .bind(rules.now)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(rotation)
    }

    async fn token_is_live(&self, user_id: Uuid, session_id: Option<Uuid>, iat: i64) -> Result<bool, Error> {
        let mut conn = self.pool.acquire().await?;
        let live = match session_id {
            Some(session) => {
                sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM sessions WHERE id = $1 AND user_id = $2)")
                    .bind(session)
                    .bind(user_id)
                    .fetch_one(&mut *conn)
                    .await?
            }
            None => {
                let not_before: Option<Option<OffsetDateTime>> =
                    sqlx::query_scalar("SELECT tokens_not_before FROM users WHERE id = $1")
                        .bind(user_id)
                        .fetch_optional(&mut *conn)
                        .await?;
                match not_before {
                    None => false,
                    Some(None) => true,
                    Some(Some(not_before)) => iat > not_before.unix_timestamp(),
                }
            }
        };
        Ok(live)
    }

    async fn list_sessions(&self, user_id: Uuid, rules: RefreshRules) -> Result<Vec<SessionInfo>, Error> {
        let rows = sqlx::query(
            "SELECT id, created_at, last_used_at, user_agent FROM sessions \
             WHERE user_id = $1 AND expires_at > $2 AND last_used_at > $3 \
             ORDER BY created_at DESC, id DESC",
        )
        .bind(user_id)
        .bind(rules.now)
        .bind(rules.now - rules.idle_timeout)
        .fetch_all(&mut self.pool.acquire().await?)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(SessionInfo {
                    id: row.try_get("id")?,
                    created_at: row.try_get("created_at")?,
                    last_used_at: row.try_get("last_used_at")?,
                    user_agent: row.try_get("user_agent")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(Error::from)
    }

    async fn revoke(&self, revocation: Revocation) -> Result<u64, Error> {
        let mut conn = self.pool.acquire().await?;
        let mut tx = conn.begin().await?;
        let (one, keep) = match revocation.sessions {
            Sessions::One(id) => (Some(id), None),
            Sessions::AllExcept(keep) => (None, keep),
        };
        let revoked: Vec<Uuid> = sqlx::query_scalar(
            "DELETE FROM sessions WHERE user_id = $1 \
             AND ($2::uuid IS NULL OR id = $2) AND ($3::uuid IS NULL OR id <> $3) RETURNING id",
        )
        .bind(revocation.user_id)
        .bind(one)
        .bind(keep)
        .fetch_all(&mut *tx)
        .await?;
        if let Some(hash) = &revocation.new_password_hash {
            sqlx::query("UPDATE users SET password_hash = $2, updated_at = $3 WHERE id = $1")
                .bind(revocation.user_id)
                .bind(hash)
                .bind(revocation.at)
                .execute(&mut *tx)
                .await?;
        }
        if revocation.sessionless_tokens {
            sqlx::query("UPDATE users SET tokens_not_before = $2 WHERE id = $1")
                .bind(revocation.user_id)
                .bind(revocation.at)
                .execute(&mut *tx)
                .await?;
        }
        for change in revocation_events(&revoked, &revocation) {
            append(&mut tx, revocation.user_id, &change, revocation.at).await?;
        }
        tx.commit().await?;
        Ok(revoked.len() as u64)
    }

    async fn delete_account(&self, user_id: Uuid, at: OffsetDateTime) -> Result<bool, Error> {
        let mut conn = self.pool.acquire().await?;
        let mut tx = conn.begin().await?;
        let deleted = sqlx::query("DELETE FROM users WHERE id = $1").bind(user_id).execute(&mut *tx).await?;
        if deleted.rows_affected() == 0 {
            return Ok(false);
        }
        append(&mut tx, user_id, &Change::AccountDeleted, at).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn events_after(&self, position: i64, limit: i64) -> Result<Vec<SessionEvent>, Error> {
        let rows = sqlx::query(
            "SELECT position, kind, user_id, session_id, not_before, created_at FROM session_events \
             WHERE position > $1 ORDER BY position LIMIT $2",
        )
        .bind(position)
        .bind(limit)
        .fetch_all(&mut self.pool.acquire().await?)
        .await?;
        Ok(rows.iter().map(event_from_row).collect::<Result<_, _>>()?)
    }

    async fn head_position(&self) -> Result<i64, Error> {
        Ok(sqlx::query_scalar("SELECT position FROM session_event_head")
            .fetch_one(&mut self.pool.acquire().await?)
            .await?)
    }

    async fn prune(&self, rules: RefreshRules, events_before: OffsetDateTime) -> Result<(u64, u64), Error> {
        let mut conn = self.pool.acquire().await?;
        let sessions = sqlx::query("DELETE FROM sessions WHERE expires_at <= $1 OR last_used_at <= $2")
            .bind(rules.now)
            .bind(rules.now - rules.idle_timeout)
            .execute(&mut *conn)
            .await?
            .rows_affected();
        let events = sqlx::query("DELETE FROM session_events WHERE created_at < $1 AND kind <> 'account_deleted'")
            .bind(events_before)
            .execute(&mut *conn)
            .await?
            .rows_affected();
        Ok((sessions, events))
    }
}
