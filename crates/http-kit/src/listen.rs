//! The services' listening socket.

use std::io;
use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpSocket};

/// Connections the kernel may queue before the service accepts them (capped
/// by `net.core.somaxconn`). The runtime's own `bind` asks for 128. At the
/// Gatling peak, with both cores busy, nginx opened new upstream connections
/// in bursts faster than a starved service accepted them; the kernel drops a
/// SYN beyond the queue, the client retries it only after 1 s (then 3 s),
/// and past nginx's 2 s connect timeout the request failed with a 504.
pub const LISTEN_BACKLOG: u32 = 4096;

/// Binds `addr` with a [`LISTEN_BACKLOG`]-long accept queue.
pub fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    // Like the runtime's bind: a restarted service can listen again at once
    // while the previous one's connections sit in TIME_WAIT.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::net::TcpStream;

    use super::*;

    /// With the runtime's 128, connections past the 129th wait for a SYN
    /// retry (1 s) and this test times out.
    #[tokio::test]
    async fn hundreds_of_connections_complete_before_any_is_accepted() {
        let listener = listen("127.0.0.1:0".parse().expect("address")).expect("listen");
        let addr = listener.local_addr().expect("address");
        let connects = (0..600).map(|_| tokio::time::timeout(Duration::from_millis(500), TcpStream::connect(addr)));
        let connected = futures::future::join_all(connects).await;
        let completed = connected.iter().filter(|c| matches!(c, Ok(Ok(_)))).count();
        assert_eq!(completed, 600, "connections completed without an accept");
        drop(listener);
    }
}
