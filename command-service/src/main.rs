use clap::Parser;

/// glibc's allocator was ~20% of query-service's CPU under lookups
/// (perf: malloc, free and consolidation); mimalloc is built for many
/// small, short-lived, cross-thread allocations like a request's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = command_service::config::Config::parse();
    http_kit::init_tracing();
    let metrics = http_kit::install_metrics()?;
    command_service::serve(config, metrics).await
}
