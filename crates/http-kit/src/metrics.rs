//! Prometheus metrics: the recorder, `GET /metrics`, and request latency by
//! route and status for every endpoint.
//!
//! Code anywhere records through the `metrics` facade macros; this module only
//! decides the exposition (bucket layouts) and serves it.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics::Histogram;
use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};

/// Latency buckets in seconds: fine-grained where this service lives (sub-ms
/// to tens of ms), coarse beyond.
const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];
/// Buckets for batch sizes (appends per statement, events per transaction).
const SIZE_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0];

/// Installs the process-wide recorder. Call once, from `main`.
pub fn install_metrics() -> Result<PrometheusHandle, BuildError> {
    PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), LATENCY_BUCKETS)?
        .set_buckets_for_metric(Matcher::Suffix("_size".to_owned()), SIZE_BUCKETS)?
        .install_recorder()
}

/// `GET /metrics` in the Prometheus text format.
pub fn render_metrics(handle: &PrometheusHandle) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        handle.render(),
    )
        .into_response()
}

/// The latency histogram of each (status, method, route) served so far.
/// Resolving a series through the `histogram!` macro builds its key (three
/// label strings) and looks it up in the recorder on every request; a
/// handle found here costs a read lock and two hash lookups.
#[derive(Clone, Default)]
pub struct RequestHistograms {
    by_status_and_method: Arc<RwLock<HashMap<(u16, &'static str), ByRoute>>>,
}

/// The histograms of one status and method, by route pattern.
type ByRoute = HashMap<Box<str>, Histogram>;

impl RequestHistograms {
    fn get(&self, status: StatusCode, method: &Method, route: &str) -> Histogram {
        let method = method_label(method);
        let key = (status.as_u16(), method);
        if let Some(histogram) = read(&self.by_status_and_method)
            .get(&key)
            .and_then(|routes| routes.get(route))
        {
            return histogram.clone();
        }
        let histogram = metrics::histogram!(
            "http_request_duration_seconds",
            "method" => method,
            "route" => route.to_owned(),
            "status" => status.as_str().to_owned(),
        );
        write(&self.by_status_and_method)
            .entry(key)
            .or_default()
            .insert(route.into(), histogram.clone());
        histogram
    }
}

/// The method as a label: the standard ones by name, any other as `other`,
/// so a client inventing methods cannot add series without bound (hyper
/// accepts any token as a method, and a matched route's 405 is counted).
fn method_label(method: &Method) -> &'static str {
    match method.as_str() {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        "PATCH" => "PATCH",
        "OPTIONS" => "OPTIONS",
        "TRACE" => "TRACE",
        "CONNECT" => "CONNECT",
        _ => "other",
    }
}

/// A poisoned lock only means a panic elsewhere while it was held; the map
/// of handles stays valid (each insert is one call).
fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

/// Middleware: `http_request_duration_seconds{method, route, status}`. The
/// route is the matched pattern (`/warrior/{id}`), never the raw path, so
/// the number of series stays bounded whatever clients send.
pub async fn track_requests(State(histograms): State<RequestHistograms>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request.extensions().get::<MatchedPath>().cloned();
    let method = request.method().clone();
    let response = next.run(request).await;
    let route = route.as_ref().map_or("unmatched", MatchedPath::as_str);
    histograms
        .get(response.status(), &method, route)
        .record(started.elapsed().as_secs_f64());
    response
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::routing::get;
    use axum::{middleware, Router};
    use metrics_exporter_prometheus::PrometheusBuilder;
    use tower::ServiceExt;

    use super::*;

    #[tokio::test]
    async fn requests_are_counted_by_route_pattern_method_and_status_in_bounded_series() {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), LATENCY_BUCKETS)
            .expect("buckets")
            .build_recorder();
        let handle = recorder.handle();
        let app = Router::new()
            .route("/warrior/{id}", get(|| async { "ok" }))
            .route_layer(middleware::from_fn_with_state(
                RequestHistograms::default(),
                track_requests,
            ));
        let _recording = metrics::set_default_local_recorder(&recorder);
        for path in ["/warrior/1", "/warrior/2", "/warrior/3"] {
            let request = Request::get(path).body(Body::empty()).expect("request");
            let response = app.clone().oneshot(request).await.expect("infallible");
            assert_eq!(response.status(), StatusCode::OK);
        }
        for method in ["BREW", "WHEN"] {
            let request = Request::builder()
                .method(method)
                .uri("/warrior/4")
                .body(Body::empty())
                .expect("request");
            let response = app.clone().oneshot(request).await.expect("infallible");
            assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
        }
        let text = handle.render();
        assert!(
            text.contains(r#"http_request_duration_seconds_count{method="GET",route="/warrior/{id}",status="200"} 3"#),
            "{text}"
        );
        assert!(
            text.contains(
                r#"http_request_duration_seconds_count{method="other",route="/warrior/{id}",status="405"} 2"#
            ),
            "invented methods share one series: {text}"
        );
    }
}
