//! `gateway`: run, check, schema.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use gateway::server::{build_server, ServerOptions};
use pingora::server::RunArgs;

/// Exit code for an invalid config: 64 (`EX_USAGE` in sysexits.h), as documented in the README.
const EXIT_INVALID_CONFIG: u8 = 64;

#[derive(Parser)]
#[command(
    name = "gateway",
    version,
    about = "Global health-based failover traffic gateway (Pingora)",
    after_help = "Demo: `scripts/demo.sh` runs the test bed's `demo` binary: two simulated regions \
                  and this gateway (`gateway run`) in front of them, on loopback."
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
    let spec = std::env::var("GATEWAY_LOG").ok();
    let directives = log_directives(spec.as_deref());
    let filter = tracing_subscriber::EnvFilter::try_new(&directives).unwrap_or_else(|e| {
        eprintln!("GATEWAY_LOG: {e}; using the default `info`");
        tracing_subscriber::EnvFilter::new(log_directives(None))
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

/// The gateway's own log targets: a bare level in `GATEWAY_LOG` applies to these.
const OWN_LOG_TARGETS: &[&str] = &["gateway", "gateway_config", "gateway_health"];

/// Turns `GATEWAY_LOG` (default `info`) into tracing directives: a bare level (`debug`) sets
/// the gateway's own targets; `target=level` directives pass through unchanged, so
/// `debug,pingora_core=debug` also shows Pingora's debug output; every other crate (Pingora,
/// hyper, h2, rustls, ...) stays at `warn`.
fn log_directives(spec: Option<&str>) -> String {
    let mut out = vec!["warn".to_string()];
    for d in spec.unwrap_or("info").split(',').map(str::trim) {
        if d.is_empty() {
            continue;
        }
        if d.parse::<tracing_subscriber::filter::LevelFilter>().is_ok() {
            out.extend(OWN_LOG_TARGETS.iter().map(|t| format!("{t}={d}")));
        } else {
            out.push(d.to_string());
        }
    }
    out.join(",")
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
    }
}

#[cfg(test)]
mod tests {
    use super::log_directives;

    #[test]
    fn a_bare_level_applies_to_the_gateway_and_other_crates_stay_at_warn() {
        assert_eq!(
            log_directives(None),
            "warn,gateway=info,gateway_config=info,gateway_health=info"
        );
        assert_eq!(
            log_directives(Some("debug")),
            "warn,gateway=debug,gateway_config=debug,gateway_health=debug"
        );
        assert_eq!(
            log_directives(Some("info, pingora_core=debug")),
            "warn,gateway=info,gateway_config=info,gateway_health=info,pingora_core=debug"
        );
    }
}
