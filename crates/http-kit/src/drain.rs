//! Leaving a load balancer without failing a request.
//!
//! On SIGTERM a server that just stops accepting and closes its idle
//! kept-alive connections races the gateway: nginx may send a request on a
//! cached connection at the moment it is closed, and a POST that met a
//! closed connection is not retried (it may have been processed): one 502
//! in ~4,000 requests during a rolling restart. Draining first answers
//! every request with `Connection: close` for [`DRAIN_DELAY`], so nginx
//! stops reusing (and caching) connections to this instance; only then is
//! the listener closed, and a refused connection is retried on another
//! replica, safely, since nothing was sent. A cached connection nginx does
//! not use during the drain still raced the close (1 failed POST in ~5,000,
//! CI): nginx drops idle upstream connections after 1 s itself
//! (`keepalive_timeout` in nginx.conf's upstreams), so the drain lasts
//! longer than that and no idle connection outlives it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::http::{header, HeaderValue};
use axum::response::Response;
use axum::{middleware, Router};

/// How long responses carry `Connection: close` before the listener closes:
/// longer than nginx keeps an idle upstream connection (1 s).
pub const DRAIN_DELAY: Duration = Duration::from_millis(1500);

/// Whether this instance is draining; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Draining(Arc<AtomicBool>);

impl Draining {
    pub fn is_draining(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    /// Adds `Connection: close` to every response once draining.
    pub fn apply(&self, router: Router) -> Router {
        let draining = self.clone();
        router.layer(middleware::map_response(move |mut response: Response| {
            let draining = draining.clone();
            async move {
                if draining.is_draining() {
                    response
                        .headers_mut()
                        .insert(header::CONNECTION, HeaderValue::from_static("close"));
                }
                response
            }
        }))
    }

    /// Resolves [`DRAIN_DELAY`] after a shutdown signal, having switched to
    /// draining in between: the future to give `with_graceful_shutdown`.
    pub async fn shutdown_signal(self) {
        crate::shutdown_signal().await;
        self.0.store(true, Ordering::Relaxed);
        tracing::info!(delay = ?DRAIN_DELAY, "draining: closing kept-alive connections before the listener");
        tokio::time::sleep(DRAIN_DELAY).await;
    }
}
