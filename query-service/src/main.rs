use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use query_service::config::{Cli, Command};

/// glibc's allocator was ~20% of query-service's CPU under lookups
/// (perf: malloc, free and consolidation); mimalloc is built for many
/// small, short-lived, cross-thread allocations like a request's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    http_kit::init_tracing();
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => query_service::serve(cli.config, http_kit::install_metrics()?).await?,
        Command::Rebuild => query_service::run_rebuild(cli.config).await?,
        Command::Verify { wait_ms } => {
            if !query_service::run_verify(cli.config, Duration::from_millis(wait_ms)).await? {
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
