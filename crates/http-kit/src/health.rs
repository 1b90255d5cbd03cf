//! Bodies of the health and readiness endpoints both services share.

use serde::Serialize;

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
