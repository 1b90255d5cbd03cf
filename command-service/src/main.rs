use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = command_service::config::Config::parse();
    http_kit::init_tracing();
    let metrics = http_kit::install_metrics()?;
    command_service::serve(config, metrics).await
}
