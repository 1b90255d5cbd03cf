//! HTTP building blocks both services share, so they answer, log and stop the
//! same way: problem+json errors, a JSON body extractor with the contract's
//! 413/415 rules, request ids, tracing set-up and graceful shutdown; and the
//! PostgreSQL pool settings they start from.

mod body;
mod db;
mod drain;
pub mod extract;
pub mod health;
mod listen;
mod metrics;
mod openapi;
mod problem;
mod telemetry;

pub use body::{JsonBody, MAX_BODY_BYTES};
pub use db::pool_options;
pub use drain::{Draining, DRAIN_DELAY};
pub use health::{Health, Readiness};
pub use listen::{listen, LISTEN_BACKLOG};
pub use metrics::install_metrics;
pub use metrics_exporter_prometheus::PrometheusHandle;
pub use openapi::openapi_json;
pub use problem::{Problem, PROBLEM_JSON};
pub use telemetry::{init_tracing, shutdown_signal, with_common_layers, ENVIRONMENT_HELP, REQUEST_ID};
