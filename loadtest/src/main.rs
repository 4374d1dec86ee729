//! `loadtest`: simulated regions (more subcommands arrive with the loadtest issue).

use std::net::SocketAddr;

use anyhow::Context;
use clap::{Parser, Subcommand};
use loadtest::region::{Identity, Mode, RegionServer};

#[derive(Parser)]
#[command(
    name = "loadtest",
    version,
    about = "Load tests and simulated regions for the failover gateway"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a simulated regional app endpoint (HTTP/1.1 and h2c).
    Region {
        /// Region name reported in responses.
        #[arg(long)]
        name: String,
        /// Endpoint id reported in responses (default: `<name>-1`).
        #[arg(long)]
        endpoint: Option<String>,
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:9001")]
        listen: SocketAddr,
        /// Initial mode: ok, refuse, blackhole, status=503, slow=500ms, reset.
        #[arg(long, default_value = "ok")]
        mode: String,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Region {
            name,
            endpoint,
            listen,
            mode,
        } => {
            let mode: Mode = mode.parse().map_err(anyhow::Error::msg)?;
            let endpoint = endpoint.unwrap_or_else(|| format!("{name}-1"));
            let server = RegionServer::bind(
                listen,
                Identity {
                    region: name.clone(),
                    endpoint: endpoint.clone(),
                },
            )
            .await
            .with_context(|| format!("cannot listen on {listen}"))?;
            server.set_mode(mode);
            println!(
                "region {name} endpoint {endpoint} listening on http://{}",
                server.addr()
            );
            tokio::signal::ctrl_c().await?;
            server.shutdown().await;
            Ok(())
        }
    }
}
