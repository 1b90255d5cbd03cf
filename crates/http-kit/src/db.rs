//! Pool settings both services' PostgreSQL pools start from.

use std::time::Duration;

use sqlx::postgres::PgPoolOptions;
use sqlx::Connection;

/// A pooled connection idle for longer than this is pinged before use.
const CHECK_IDLE_AFTER: Duration = Duration::from_secs(1);

/// Pool options that check a connection before handing it out only when it
/// sat idle for over a second.
///
/// sqlx's default pings every connection at every acquire: one more round
/// trip, and one more wake-up of a PostgreSQL backend, per query. On the
/// group-commit writer's serial path it delayed every waiting append; paced
/// lookups (Gatling's, one per batch) cost ~10% more machine CPU with it.
/// A connection in steady use has just proven itself; one that waited
/// through a database restart has been idle and is still checked.
pub fn pool_options() -> PgPoolOptions {
    PgPoolOptions::new()
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for > CHECK_IDLE_AFTER {
                    conn.ping().await?;
                }
                Ok(true)
            })
        })
}
