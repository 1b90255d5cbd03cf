//! Pool settings both services' PostgreSQL pools start from.

use std::time::Duration;

use sqlx::postgres::PgPoolOptions;
use sqlx::Connection;

/// A pooled connection idle for longer than this is pinged before use.
pub const CHECK_IDLE_AFTER: Duration = Duration::from_secs(1);

/// Pool options that check a connection before handing it out only when it
/// sat idle for [`CHECK_IDLE_AFTER`].
///
/// sqlx's default pings every connection at every acquire: one more round
/// trip, and one more wake-up of a PostgreSQL backend, per query. Under a
/// paced load (Gatling's, one lookup per batch) that was a large part of
/// each query's cost on the database side. A connection in steady use has
/// just proven itself; one that waited through a database restart has been
/// idle and is still checked.
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
