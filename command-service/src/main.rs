use clap::Parser;

/// glibc's allocator was ~20% of command-service's CPU under creates (perf:
/// malloc, free, consolidation); with mimalloc a create costs ~15% less.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = command_service::config::Config::parse();
    http_kit::init_tracing();
    let metrics = http_kit::install_metrics()?;
    command_service::serve(config, metrics).await
}
