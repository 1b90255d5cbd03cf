use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = command_service::config::Config::parse();
    http_kit::init_tracing();
    command_service::serve(config).await
}
