//! `gateway`: run, check, schema, demo.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use gateway::demo::{self, DemoAddrs};
use gateway::server::{build_server, ServerOptions};
use pingora::server::RunArgs;

/// Exit code for an invalid config (EX_DATAERR).
const EXIT_INVALID_CONFIG: u8 = 64;

#[derive(Parser)]
#[command(
    name = "gateway",
    version,
    about = "Global health-based failover traffic gateway (Pingora)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start the gateway with a config file.
    Run {
        /// Path of the YAML config.
        #[arg(short, long)]
        config: PathBuf,
        /// Proxy worker threads (overrides `server.threads`; default one per CPU).
        #[arg(long)]
        threads: Option<usize>,
        /// Binary upgrade: take the listening sockets over from the running gateway, which must
        /// then be sent SIGQUIT; it hands them over and drains.
        #[arg(long)]
        upgrade: bool,
        /// Unix socket for the upgrade hand-over (default /tmp/gateway-upgrade-<admin port>.sock);
        /// old and new process must use the same one.
        #[arg(long)]
        upgrade_sock: Option<PathBuf>,
    },
    /// Validate config files without starting anything; exit 0 if all are valid, 64 if not.
    Check {
        /// Config files to check.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Print the JSON Schema of the config file format.
    Schema,
    /// Start two simulated regions (fra, ber) and a gateway in front of them.
    Demo {
        /// Gateway listener.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Admin API listener.
        #[arg(long, default_value = "127.0.0.1:9901")]
        admin: SocketAddr,
        /// Fault-injection control listener (`POST /{region}/{mode}`).
        #[arg(long, default_value = "127.0.0.1:9902")]
        control: SocketAddr,
        /// Proxy worker threads.
        #[arg(long, default_value_t = 2)]
        threads: usize,
    },
}

fn main() -> ExitCode {
    init_logging();
    match run(Cli::parse().command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("GATEWAY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Check { files } => {
            let mut ok = true;
            for file in &files {
                match gateway_config::load(file) {
                    Ok(c) => println!(
                        "{}: ok ({} listeners, {} regions, {} routes, hash {})",
                        file.display(),
                        c.listeners.len(),
                        c.regions.len(),
                        c.routes.len(),
                        c.hash
                    ),
                    Err(e) => {
                        ok = false;
                        eprintln!("{e}");
                    }
                }
            }
            Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(EXIT_INVALID_CONFIG)
            })
        }
        Command::Schema => {
            println!("{:#}", gateway_config::json_schema());
            Ok(ExitCode::SUCCESS)
        }
        Command::Run {
            config,
            threads,
            upgrade,
            upgrade_sock,
        } => {
            let config = match gateway_config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    return Ok(ExitCode::from(EXIT_INVALID_CONFIG));
                }
            };
            tracing::info!(file = %config.source.display(), hash = %config.hash, "config loaded");
            let server = build_server(
                config,
                &ServerOptions {
                    threads,
                    upgrade,
                    upgrade_sock,
                },
            )?;
            server.run(RunArgs::default());
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo {
            listen,
            admin,
            control,
            threads,
        } => {
            let addrs = DemoAddrs {
                listen,
                admin,
                control,
            };
            let regions = demo::start_regions(addrs)?;
            let dir = tempfile::tempdir()?;
            let path = dir.path().join("demo.yaml");
            std::fs::write(&path, &regions.config_text)?;
            let config = gateway_config::load(&path).context("embedded demo config is invalid")?;
            let server = build_server(
                config,
                &ServerOptions {
                    threads: Some(threads),
                    ..Default::default()
                },
            )?;
            println!("{}", demo::banner(addrs, &path));
            server.run(RunArgs::default());
            drop(regions);
            Ok(ExitCode::SUCCESS)
        }
    }
}
