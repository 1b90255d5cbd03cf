use std::io::IsTerminal;
use std::time::{Duration, Instant};

use axum::extract::{DefaultBodyLimit, Request as AxumRequest, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{middleware, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use tower_http::catch_panic::CatchPanicLayer;
use tracing::Instrument;
use tracing_subscriber::EnvFilter;
use uuid::Uuid;

use crate::metrics::{render_metrics, track_requests, RequestHistograms};
use crate::{Problem, MAX_BODY_BYTES};

/// Header correlating a request across nginx, both services and Kafka.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// For each binary's `--help`: the settings read by [`init_tracing`] and by
/// tokio rather than by the binary's own flags.
pub const ENVIRONMENT_HELP: &str = "Logging: RUST_LOG=<tracing filter> (default: info), \
LOG_FORMAT=json for one JSON object per line (default: text).\n\
Threads: TOKIO_WORKER_THREADS=<n> async worker threads (default: one per core).";

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
/// and `GET /metrics`, the request's frame (see [`frame`]), the body limit,
/// a problem+json 404 for unknown routes and methods, and a panic guard that
/// answers 500 instead of dropping the connection.
pub fn with_common_layers(router: Router, request_timeout: Duration, metrics: PrometheusHandle) -> Router {
    router
        .route("/metrics", get(move || async move { render_metrics(&metrics) }))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        // After the fallbacks, so that their 404s and 405s are counted too
        // (a route layer saw neither).
        .layer(middleware::from_fn_with_state(
            RequestHistograms::default(),
            track_requests,
        ))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(CatchPanicLayer::custom(|_| {
            Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response()
        }))
        .layer(middleware::from_fn_with_state(request_timeout, frame))
}

/// Every request's frame, in one middleware:
/// - its id: nginx's `X-Request-Id`, or a new one, set on the request (for
///   handlers and Kafka headers) and echoed on the response;
/// - a `request` span carrying that id, so every log line of the request
///   names it;
/// - the time limit: a request still running after `limit` gets a
///   problem+json 503 (tower-http's TimeoutLayer answers with an empty body).
///   Each service's default limit is below nginx's `proxy_read_timeout`, so a
///   client through the gateway gets this answer rather than the gateway's 504;
/// - a log line for each 5xx (a debug one for every response).
///
/// tower-http's request-id, propagate-id, trace and timeout layers did the
/// same for 4-5 µs more of the service's CPU a request (`GET /health`: 17-20
/// µs with them, 13-15 µs with this), a quarter of a trivial request's cost.
async fn frame(State(limit): State<Duration>, mut request: AxumRequest, next: Next) -> Response {
    let started = Instant::now();
    let request_id = match request.headers().get(REQUEST_ID) {
        Some(id) => id.clone(),
        None => {
            let id = new_request_id();
            request.headers_mut().insert(REQUEST_ID, id.clone());
            id
        }
    };
    let span = tracing::info_span!("request", request_id = request_id.to_str().unwrap_or_default());
    let method = request.method().clone();
    let uri = request.uri().clone();
    let mut response = async {
        let response = match tokio::time::timeout(limit, next.run(request)).await {
            Ok(response) => response,
            Err(_) => {
                tracing::warn!(limit_ms = limit.as_millis() as u64, "request timed out");
                Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("the request took longer than {} ms; retry later", limit.as_millis()),
                )
                .into_response()
            }
        };
        let status = response.status().as_u16();
        let latency_ms = started.elapsed().as_secs_f64() * 1e3;
        if response.status().is_server_error() {
            tracing::error!(%method, %uri, status, latency_ms, "request failed");
        } else {
            tracing::debug!(%method, %uri, status, latency_ms, "response");
        }
        response
    }
    .instrument(span)
    .await;
    response.headers_mut().insert(REQUEST_ID, request_id);
    response
}

/// A fresh request id: a random UUID, as nginx's `$request_id` is random hex.
fn new_request_id() -> HeaderValue {
    let mut buffer = Uuid::encode_buffer();
    let id = Uuid::new_v4().hyphenated().encode_lower(&mut buffer);
    HeaderValue::from_str(id).unwrap_or_else(|_| unreachable!("a hyphenated UUID is a valid header value"))
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
    use axum::http::Request;
    use metrics_exporter_prometheus::PrometheusBuilder;
    use tower::ServiceExt;

    use super::*;

    fn metrics() -> PrometheusHandle {
        PrometheusBuilder::new().build_recorder().handle()
    }

    /// A route answering with the request id its handler saw.
    fn echo_id() -> Router {
        let echo = get(|headers: axum::http::HeaderMap| async move {
            headers
                .get(REQUEST_ID)
                .and_then(|id| id.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        });
        with_common_layers(Router::new().route("/id", echo), Duration::from_secs(5), metrics())
    }

    /// A GET carrying the request id a gateway would have set.
    fn get_with_id(path: &str, id: &str) -> Request<Body> {
        Request::get(path)
            .header(REQUEST_ID, id)
            .body(Body::empty())
            .expect("request")
    }

    async fn body_text(response: Response) -> String {
        let body = axum::body::to_bytes(response.into_body(), 4096).await.expect("body");
        String::from_utf8(body.to_vec()).expect("utf-8")
    }

    #[tokio::test]
    async fn the_gateways_request_id_reaches_the_handler_and_the_response() {
        let request = get_with_id("/id", "4f1c0a9e2b7d4e5f8a6b3c2d1e0f9a8b");
        let response = echo_id().oneshot(request).await.expect("infallible");
        assert_eq!(response.headers()[REQUEST_ID], "4f1c0a9e2b7d4e5f8a6b3c2d1e0f9a8b");
        assert_eq!(body_text(response).await, "4f1c0a9e2b7d4e5f8a6b3c2d1e0f9a8b");
    }

    #[tokio::test]
    async fn unknown_routes_and_methods_are_counted_in_the_latency_metric() {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let _recording = metrics::set_default_local_recorder(&recorder);
        let unknown = echo_id()
            .oneshot(Request::get("/nowhere").body(Body::empty()).expect("request"))
            .await
            .expect("infallible");
        assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
        let wrong_method = echo_id()
            .oneshot(Request::delete("/id").body(Body::empty()).expect("request"))
            .await
            .expect("infallible");
        assert_eq!(wrong_method.status(), StatusCode::METHOD_NOT_ALLOWED);
        let text = handle.render();
        for series in [
            r#"http_request_duration_seconds_count{method="GET",route="unmatched",status="404"} 1"#,
            r#"http_request_duration_seconds_count{method="DELETE",route="/id",status="405"} 1"#,
        ] {
            assert!(text.contains(series), "{series} missing from:\n{text}");
        }
    }

    #[tokio::test]
    async fn a_request_without_an_id_gets_a_fresh_one_on_both_sides() {
        let ask = || Request::get("/id").body(Body::empty()).expect("request");
        let first = echo_id().oneshot(ask()).await.expect("infallible");
        let echoed = first.headers()[REQUEST_ID].to_str().expect("ascii").to_owned();
        let seen = body_text(first).await;
        assert_eq!(echoed, seen, "the handler and the client see the same id");
        assert!(Uuid::parse_str(&seen).is_ok(), "{seen}");
        let second = echo_id().oneshot(ask()).await.expect("infallible");
        assert_ne!(
            second.headers()[REQUEST_ID].to_str().expect("ascii"),
            seen,
            "ids are fresh"
        );
    }

    #[tokio::test]
    async fn unknown_routes_carry_the_request_id_too() {
        let response = echo_id()
            .oneshot(get_with_id("/nowhere", "abc"))
            .await
            .expect("infallible");
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert_eq!(response.headers().get_all(REQUEST_ID).iter().count(), 1);
        assert_eq!(response.headers()[REQUEST_ID], "abc");
    }

    #[tokio::test]
    async fn a_request_over_the_time_limit_gets_a_problem_503() {
        let slow = Router::new().route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                "late"
            }),
        );
        let app = with_common_layers(slow, Duration::from_millis(50), metrics());
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
