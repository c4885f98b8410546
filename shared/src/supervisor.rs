//! The database supervisor: migrations at start-up, then a ping a second that keeps
//! [`Readiness`] in step with the database.

use std::time::Duration;

use crate::db::{Migrations, Pool};
use crate::readiness::Readiness;

/// Runs the migrations (retrying with back-off until the database answers), then watches the
/// database and keeps [`Readiness`] in step with it. Runs until the process ends.
pub async fn supervise_database(pool: Pool, migrations: &'static Migrations, readiness: Readiness) {
    const FIRST_RETRY: Duration = Duration::from_millis(100);
    const MAX_RETRY: Duration = Duration::from_secs(5);
    // How quickly an outage (and a recovery) shows in health and in the RPC gate.
    const PING_EVERY: Duration = Duration::from_secs(1);
    const PING_TIMEOUT: Duration = Duration::from_secs(2);

    let mut delay = FIRST_RETRY;
    loop {
        match pool.migrate(migrations).await {
            Ok(()) => break,
            Err(err) => {
                tracing::warn!(error = %err, retry_in_ms = delay.as_millis() as u64, "database not ready");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(MAX_RETRY);
            }
        }
    }
    readiness.set_database_up(true);

    let mut ticker = tokio::time::interval(PING_EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        readiness.set_database_up(pool.is_reachable(PING_TIMEOUT).await);
    }
}
