use clap::Parser;
use query_service::config::{Cli, Command};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    http_kit::init_tracing();
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => query_service::serve(cli.config, http_kit::install_metrics()?).await,
    }
}
