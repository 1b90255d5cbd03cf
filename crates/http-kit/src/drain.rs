//! Leaving a load balancer without failing a request.
//!
//! On SIGTERM a server that just stops accepting and closes its idle
//! kept-alive connections races the gateway: nginx may send a request on a
//! cached connection at the moment it is closed, and a POST that met a
//! closed connection is not retried (it may have been processed): one 502
//! in ~4,000 requests during a rolling restart. So draining has two steps.
//!
//! 1. At the signal the listening socket closes at once: nginx's new
//!    connections are refused and retried on another replica, safely, since
//!    nothing was sent. Requests on connections already open are still
//!    served, each answer with `Connection: close`, so nginx stops reusing
//!    them.
//! 2. After [`DRAIN_DELAY`] the connections left close. None is idle in
//!    nginx's cache by then: nginx drops idle upstream connections after 1 s
//!    (`keepalive_timeout` in nginx.conf's upstreams), and the drain is
//!    longer.
//!
//! Keeping the listener open during the drain (as before) failed 1 POST in
//! ~5,000 writes of a rolling restart (CI, twice): every answer closing its
//! connection, nginx kept opening new ones to the draining replica, and one
//! opened just as the listener closed met a reset after its POST was sent.

use std::future::IntoFuture;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::http::{header, HeaderValue};
use axum::response::Response;
use axum::routing::IntoMakeService;
use axum::serve::Listener;
use axum::{middleware, Router};
use futures::FutureExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

/// How long open connections are still served (with `Connection: close`)
/// after the listener closed: longer than nginx keeps an idle upstream
/// connection (1 s).
pub const DRAIN_DELAY: Duration = Duration::from_millis(1500);

/// Whether this instance is draining; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Draining(Arc<DrainState>);

#[derive(Debug, Default)]
struct DrainState {
    started: AtomicBool,
    /// Wakes the listener when the drain starts.
    wake: Notify,
}

impl Draining {
    pub fn is_draining(&self) -> bool {
        self.0.started.load(Ordering::Relaxed)
    }

    /// `listener`, closed as soon as the drain starts: the listener to give
    /// `axum::serve`.
    pub fn listener(&self, listener: TcpListener) -> io::Result<DrainingListener> {
        Ok(DrainingListener {
            address: listener.local_addr()?,
            inner: Some(listener),
            draining: self.clone(),
        })
    }

    /// Adds `Connection: close` to every response once draining, and
    /// prepares the router once for serving. Given a bare `Router`,
    /// `axum::serve` rebuilds it for every connection (`with_state(())`
    /// clones every route and turns handlers added after the state into
    /// routes again), paid by every client that does not keep its
    /// connection: query-service answering one request per connection
    /// used 144-170 µs of CPU per request that way, 125 µs with this.
    pub fn apply(&self, router: Router) -> IntoMakeService<Router> {
        let draining = self.clone();
        let router = router.layer(middleware::map_response(move |mut response: Response| {
            let draining = draining.clone();
            async move {
                if draining.is_draining() {
                    response
                        .headers_mut()
                        .insert(header::CONNECTION, HeaderValue::from_static("close"));
                }
                response
            }
        }));
        router.with_state(()).into_make_service()
    }

    /// Resolves [`DRAIN_DELAY`] after a shutdown signal, having switched to
    /// draining in between: the future to give `with_graceful_shutdown`.
    pub async fn shutdown_signal(self) {
        crate::shutdown_signal().await;
        self.start();
        tracing::info!(delay = ?DRAIN_DELAY, "draining: listener closed, open connections served until the delay ends");
        tokio::time::sleep(DRAIN_DELAY).await;
    }
}

impl Draining {
    /// Starts the drain: the listener closes, answers say `Connection: close`.
    pub fn start(&self) {
        self.0.started.store(true, Ordering::Relaxed);
        self.0.wake.notify_waiters();
    }

    /// Runs `server` (an `axum::serve` with this drain's shutdown signal)
    /// to its end, or until [`DRAIN_DELAY`] plus `request_limit` plus a
    /// second after the drain started. Graceful shutdown waits for every
    /// open connection, and hyper has no header-read timeout here: a client
    /// that sent half a request head and stalls would keep the process from
    /// stopping forever. Requests end within `request_limit`, so the bound
    /// cuts off only such connections.
    pub async fn run<S>(&self, server: S, request_limit: Duration) -> io::Result<()>
    where
        S: IntoFuture<Output = io::Result<()>>,
    {
        let grace = request_limit + Duration::from_secs(1);
        tokio::select! {
            result = server => result,
            () = self.drained_for(DRAIN_DELAY + grace) => {
                tracing::warn!(?grace, "connections still open after the drain; stopping without them");
                Ok(())
            }
        }
    }

    /// Resolves `delay` after the drain started.
    async fn drained_for(&self, delay: Duration) {
        loop {
            // Registered before the flag is read (see the listener's accept).
            let woken = self.0.wake.notified();
            if self.is_draining() {
                break;
            }
            woken.await;
        }
        tokio::time::sleep(delay).await;
    }
}

/// A TCP listener that closes when the drain starts (see the module docs).
#[derive(Debug)]
pub struct DrainingListener {
    inner: Option<TcpListener>,
    address: SocketAddr,
    draining: Draining,
}

impl Listener for DrainingListener {
    type Io = TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (TcpStream, SocketAddr) {
        loop {
            // Registered before the flag is read, so a drain starting in
            // between still wakes this accept.
            let woken = self.draining.0.wake.notified();
            let Some(listener) = self.inner.as_mut() else {
                return std::future::pending().await;
            };
            if self.draining.is_draining() {
                // Take what already waits in the backlog, then close: a
                // queued connection may carry a request already.
                if let Some(Ok(accepted)) = TcpListener::accept(listener).now_or_never() {
                    return accepted;
                }
                self.inner = None;
                continue;
            }
            tokio::select! {
                accepted = TcpListener::accept(listener) => match accepted {
                    Ok(accepted) => return accepted,
                    Err(error) => accept_failed(error).await,
                },
                () = woken => {}
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.address)
    }
}

/// As axum's own listener does: a connection that failed before it was
/// accepted is the client's business; anything else (out of file
/// descriptors) is worth a log line and a pause rather than a busy loop.
async fn accept_failed(error: io::Error) {
    if !matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
    ) {
        tracing::error!(%error, "accept failed");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use axum::routing::get;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// One `GET /` on `stream`; the response head, lower-cased.
    async fn get_root(stream: &mut TcpStream) -> String {
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")
            .await
            .expect("write");
        let mut response = Vec::new();
        let mut chunk = [0u8; 1024];
        while !response.ends_with(b"ok") {
            let read = stream.read(&mut chunk).await.expect("read");
            assert!(read > 0, "connection closed before the answer");
            response.extend_from_slice(&chunk[..read]);
        }
        String::from_utf8_lossy(&response).to_lowercase()
    }

    #[tokio::test]
    async fn draining_refuses_new_connections_and_serves_open_ones_with_connection_close() {
        let draining = Draining::default();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let app = draining.apply(Router::new().route("/", get(|| async { "ok" })));
        let server = axum::serve(draining.listener(listener).expect("listener"), app);
        let server = tokio::spawn(async move { server.await });

        let mut open = TcpStream::connect(address).await.expect("connect");
        let before = get_root(&mut open).await;
        assert!(before.starts_with("http/1.1 200"), "{before}");
        assert!(!before.contains("connection: close"), "{before}");

        draining.start();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match TcpStream::connect(address).await {
                Err(error) if error.kind() == io::ErrorKind::ConnectionRefused => break,
                _ => assert!(
                    Instant::now() < deadline,
                    "new connections still accepted while draining"
                ),
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }

        let during = get_root(&mut open).await;
        assert!(during.starts_with("http/1.1 200"), "{during}");
        assert!(during.contains("connection: close"), "{during}");
        server.abort();
    }

    #[tokio::test]
    async fn a_stalled_half_sent_request_does_not_hold_the_shutdown_past_the_grace() {
        let draining = Draining::default();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let app = draining.apply(Router::new().route("/", get(|| async { "ok" })));
        let signal = {
            let draining = draining.clone();
            async move {
                draining.drained_for(Duration::ZERO).await;
            }
        };
        let server = axum::serve(draining.listener(listener).expect("listener"), app).with_graceful_shutdown(signal);

        let mut stalled = TcpStream::connect(address).await.expect("connect");
        stalled.write_all(b"GET / HTTP/1.1\r\nHo").await.expect("write");
        let run = {
            let draining = draining.clone();
            tokio::spawn(async move { draining.run(server, Duration::ZERO).await })
        };
        // Let the server take the connection and read the half head.
        let mut open = TcpStream::connect(address).await.expect("connect");
        assert!(get_root(&mut open).await.starts_with("http/1.1 200"));
        drop(open);

        let started = Instant::now();
        draining.start();
        let stopped = tokio::time::timeout(DRAIN_DELAY + Duration::from_secs(4), run).await;
        assert!(
            stopped.is_ok(),
            "the server still ran {:?} after the drain",
            started.elapsed()
        );
        assert!(started.elapsed() >= DRAIN_DELAY, "the drain delay must still be served");
        drop(stalled);
    }
}
