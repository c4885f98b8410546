//! The shared throttle counts on PostgreSQL: GCRA in one statement per attempt.

use std::time::Duration;

use sqlx::Row;
use todo_shared::db::PostgresPool;

use super::{Charge, Refused, ThrottleKey, ThrottleStore};
use crate::error::Error;

pub struct PgThrottle {
    pool: PostgresPool,
}

impl PgThrottle {
    pub fn new(pool: PostgresPool) -> Self {
        Self { pool }
    }
}

/// GCRA, for up to two keys, in one statement. A key's row holds its theoretical arrival
/// time (tat); an attempt is allowed while tat - now() is within the tolerance, and then moves
/// tat one interval on from max(tat, now()). A new key is allowed and inserted; an existing
/// one is updated only when allowed (`ON CONFLICT ... DO UPDATE ... WHERE`), under its row
/// lock, so racing attempts on one key, from any replica, are counted one after the other.
/// The second key is charged only if the first was allowed, as `second` reads `first`'s rows.
///
/// The last two columns are how far each key's tat runs ahead of now(), in microseconds, as
/// of the statement's snapshot: they say how long a refused attempt must wait.
const SPEND: &str = "
WITH first AS (
    INSERT INTO auth_throttle AS t (key, tat)
    VALUES ($1, now() + $2 * interval '1 microsecond')
    ON CONFLICT (key) DO UPDATE SET tat = greatest(t.tat, now()) + $2 * interval '1 microsecond'
        WHERE t.tat <= now() + $3 * interval '1 microsecond'
    RETURNING 1
), second AS (
    INSERT INTO auth_throttle AS t (key, tat)
    SELECT $4, now() + $5 * interval '1 microsecond'
    WHERE $4::bytea IS NOT NULL AND EXISTS (SELECT 1 FROM first)
    ON CONFLICT (key) DO UPDATE SET tat = greatest(t.tat, now()) + $5 * interval '1 microsecond'
        WHERE t.tat <= now() + $6 * interval '1 microsecond'
    RETURNING 1
)
SELECT
    EXISTS (SELECT 1 FROM first) AS first_allowed,
    EXISTS (SELECT 1 FROM second) AS then_allowed,
    (SELECT (extract(epoch FROM tat - now()) * 1000000)::int8 FROM auth_throttle WHERE key = $1) AS first_ahead,
    (SELECT (extract(epoch FROM tat - now()) * 1000000)::int8 FROM auth_throttle WHERE key = $4) AS then_ahead";

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

/// How long a refused charge waits: until its tat is back within the tolerance. A racing
/// attempt may have moved tat after this statement's snapshot; then the figure read is
/// stale, and one interval is the honest lower bound.
fn wait(ahead_micros: Option<i64>, charge: &Charge) -> Duration {
    let over = ahead_micros.unwrap_or(0).saturating_sub(micros(charge.tolerance));
    match u64::try_from(over) {
        Ok(over) if over > 0 => Duration::from_micros(over),
        _ => charge.interval,
    }
}

#[tonic::async_trait]
impl ThrottleStore for PgThrottle {
    async fn spend(&self, first: Charge, then: Option<Charge>) -> Result<Option<Refused>, Error> {
        let row = sqlx::query(SPEND)
            .bind(first.key.as_slice())
            .bind(micros(first.interval))
            .bind(micros(first.tolerance))
            .bind(then.as_ref().map(|c| c.key.to_vec()))
            .bind(then.as_ref().map(|c| micros(c.interval)))
            .bind(then.as_ref().map(|c| micros(c.tolerance)))
            .fetch_one(&mut self.pool.acquire().await?)
            .await?;
        if !row.try_get::<bool, _>("first_allowed")? {
            return Ok(Some(Refused::First(wait(row.try_get("first_ahead")?, &first))));
        }
        match then {
            Some(then) if !row.try_get::<bool, _>("then_allowed")? => {
                Ok(Some(Refused::Then(wait(row.try_get("then_ahead")?, &then))))
            }
            _ => Ok(None),
        }
    }

    async fn forgive(&self, key: ThrottleKey) -> Result<(), Error> {
        sqlx::query("DELETE FROM auth_throttle WHERE key = $1")
            .bind(key.as_slice())
            .execute(&mut self.pool.acquire().await?)
            .await?;
        Ok(())
    }

    async fn prune_throttle(&self) -> Result<u64, Error> {
        let done =
            sqlx::query("DELETE FROM auth_throttle WHERE tat < now()").execute(&mut self.pool.acquire().await?).await?;
        Ok(done.rows_affected())
    }
}
