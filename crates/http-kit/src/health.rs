//! The health and readiness endpoints both services share: bodies, the
//! liveness answer, and how readiness maps to a status.

use std::time::Duration;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use sqlx::PgPool;

/// How long a dependency may take to answer a readiness probe.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// `GET /health`: the process is alive.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(example = json!({"status": "ok"}))]
pub struct Health {
    /// Always `ok`.
    pub status: &'static str,
}

impl Health {
    pub const OK: Self = Self { status: "ok" };
}

/// `GET /ready`: which dependencies answered (200 only when all did).
#[derive(Debug, Clone, Copy, Serialize, utoipa::ToSchema)]
#[schema(example = json!({"database": true, "kafka": true}))]
pub struct Readiness {
    pub database: bool,
    pub kafka: bool,
}

impl Readiness {
    /// Whether every dependency answered.
    pub fn ready(&self) -> bool {
        self.database && self.kafka
    }
}

/// 200 when ready, else 503 (what load balancers and orchestrators key on),
/// with which dependency failed in the body either way.
impl IntoResponse for Readiness {
    fn into_response(self) -> Response {
        let status = if self.ready() {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        (status, Json(self)).into_response()
    }
}

/// The body of `GET /health`: answering at all is the proof of life.
pub async fn alive() -> Json<Health> {
    Json(Health::OK)
}

/// Whether `pool`'s database answers a trivial query within a second.
pub async fn database_answers(pool: &PgPool) -> bool {
    tokio::time::timeout(PROBE_TIMEOUT, sqlx::query("SELECT 1").execute(pool))
        .await
        .is_ok_and(|r| r.is_ok())
}
