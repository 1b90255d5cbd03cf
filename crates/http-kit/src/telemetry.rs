use std::io::IsTerminal;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Request as AxumRequest, State};
use axum::http::{HeaderName, Request, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{middleware, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use tracing_subscriber::EnvFilter;

use crate::metrics::{render_metrics, track_requests};
use crate::{Problem, MAX_BODY_BYTES};

/// Header correlating a request across nginx, both services and Kafka.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// For each binary's `--help`: the two settings read by [`init_tracing`]
/// rather than by the binary's own flags.
pub const LOGGING_HELP: &str = "Logging: RUST_LOG=<tracing filter> (default: info), \
LOG_FORMAT=json for one JSON object per line (default: text).";

/// Sets up `tracing`: `RUST_LOG` filters (default `info`), `LOG_FORMAT=json`
/// switches to one JSON object per line for log shippers.
pub fn init_tracing() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colour codes only on a terminal: logs usually go to files.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(std::io::stdout().is_terminal());
    if std::env::var("LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json")) {
        builder.json().flatten_event(true).init();
    } else {
        builder.compact().init();
    }
}

/// Resolves on SIGTERM or Ctrl-C: the cue to stop accepting and drain.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutdown signal received, draining");
}

/// Wraps a service's routes with what every endpoint needs: latency metrics
/// and `GET /metrics`, a request id
/// (kept from nginx or generated) echoed on the response and recorded on the
/// request's span, the body limit, a request timeout, a problem+json 404 for
/// unknown routes and methods, and a panic guard that answers 500 instead of dropping the
/// connection.
pub fn with_common_layers(router: Router, request_timeout: Duration, metrics: PrometheusHandle) -> Router {
    router
        .route_layer(middleware::from_fn(track_requests))
        .route("/metrics", get(move || async move { render_metrics(&metrics) }))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(CatchPanicLayer::custom(|_| {
            Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response()
        }))
        .layer(middleware::from_fn_with_state(request_timeout, time_limit))
        .layer(TraceLayer::new_for_http().make_span_with(|request: &Request<_>| {
            let request_id = request
                .headers()
                .get(REQUEST_ID)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            tracing::info_span!("request", method = %request.method(), path = %request.uri().path(), request_id)
        }))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
}

/// Answers a request still running after `limit` with a problem+json 503
/// (tower-http's TimeoutLayer answers with an empty body). Each service's
/// default limit is below nginx's `proxy_read_timeout`, so a client through
/// the gateway gets this answer rather than the gateway's 504.
async fn time_limit(State(limit): State<Duration>, request: AxumRequest, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            tracing::warn!(limit_ms = limit.as_millis() as u64, "request timed out");
            Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the request took longer than {} ms; retry later", limit.as_millis()),
            )
            .into_response()
        }
    }
}

async fn method_not_allowed() -> Problem {
    Problem::new(StatusCode::METHOD_NOT_ALLOWED, "this route does not accept that method")
}

async fn not_found() -> Problem {
    Problem::new(StatusCode::NOT_FOUND, "no such route")
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use metrics_exporter_prometheus::PrometheusBuilder;
    use tower::ServiceExt;

    use super::*;

    #[tokio::test]
    async fn a_request_over_the_time_limit_gets_a_problem_503() {
        let slow = Router::new().route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                "late"
            }),
        );
        let metrics = PrometheusBuilder::new().build_recorder().handle();
        let app = with_common_layers(slow, Duration::from_millis(50), metrics);
        let request = Request::get("/slow").body(Body::empty()).expect("request");
        let response = app.oneshot(request).await.expect("infallible");
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()["content-type"], "application/problem+json");
        let body = axum::body::to_bytes(response.into_body(), 4096).await.expect("body");
        let problem: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(problem["status"], 503);
        assert!(
            problem["detail"].as_str().is_some_and(|d| d.contains("50 ms")),
            "{problem}"
        );
    }
}
