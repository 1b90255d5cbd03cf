//! The yardstick of the gateway ceilings benchmark (load-tests/bench_ceilings.py):
//! an axum server that answers every GET with a fixed short body, so nginx
//! proxying it shows what the machine serves when the services cost nothing.
//!
//!     cargo run --release -p test-kit --example trivial_handler -- [addr]   (default 127.0.0.1:8099)

use axum::routing::get;
use axum::Router;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:8099".to_owned());
    if addr == "--help" || addr == "-h" {
        println!("usage: trivial_handler [addr]   (default 127.0.0.1:8099): answers GET / with \"ok\"");
        return Ok(());
    }
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    axum::serve(listener, Router::new().route("/", get(|| async { "ok" }))).await
}
