//! `gateway`: run, check, schema, the BGP agent and the admin commands.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
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
    /// Announce the anycast prefix through bird while the local gateway is ready and a region
    /// is up; withdraw on drain, shutdown, no region up or no gateway (never because it is
    /// busy). Drives bird through a generated include file and `birdc configure`.
    BgpAgent {
        /// The gateway's admin API.
        #[arg(long, default_value = "127.0.0.1:9901")]
        admin: std::net::SocketAddr,
        /// File with the admin bearer token (when the admin API has one).
        #[arg(long)]
        token_file: Option<PathBuf>,
        /// The anycast prefix, e.g. 192.0.2.10/32.
        #[arg(long)]
        prefix: String,
        /// The include file that the PoP's bird config includes.
        #[arg(long, default_value = "/etc/bird/gateway-anycast.conf")]
        include: PathBuf,
        /// The birdc binary.
        #[arg(long, default_value = "birdc")]
        birdc: PathBuf,
        /// bird's control socket (birdc -s).
        #[arg(long)]
        bird_socket: Option<PathBuf>,
        /// Time between polls of the admin API.
        #[arg(long, default_value = "500ms")]
        interval: String,
        /// Deadline of one poll (past it: busy, not down).
        #[arg(long, default_value = "2s")]
        poll_timeout: String,
        /// No admin answer at all for this long: hung, withdraw.
        #[arg(long, default_value = "30s")]
        hung_after: String,
        /// Print the include file for this state (`announced` or `withdrawn`) and exit, e.g.
        /// to check a bird config with `bird -p` before deploying it.
        #[arg(long, value_parser = ["announced", "withdrawn"])]
        print_include: Option<String>,
    },
    /// Drain a region for a while (traffic fails over, recorded with a reason and who did
    /// it), or, without REGION, the whole gateway (readiness false, still serving), then wait
    /// for BGP to converge: for a Kubernetes preStop hook or systemd ExecStop, before SIGTERM.
    Drain {
        /// The region to drain; absent: the whole gateway.
        region: Option<String>,
        /// How long the region stays drained (at most 7d).
        #[arg(long = "for", default_value = "30m")]
        for_: String,
        /// Why, shown in `/status` and the gateway's log.
        #[arg(long)]
        reason: Option<String>,
        /// Who (default: $USER@host).
        #[arg(long)]
        by: Option<String>,
        /// Whole gateway only: time to wait after draining (withdrawal plus router
        /// convergence).
        #[arg(long, default_value = "10s")]
        wait: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Lift a region's drain, or, without REGION, the whole gateway's.
    Undrain {
        /// The region; absent: the whole gateway.
        region: Option<String>,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Show the running gateway's state on one screen: routes and what serves them, regions,
    /// drains, endpoints, recent failover events.
    Status {
        /// Print `/status` as JSON instead.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Reload the running gateway's config now (as SIGHUP does) and print the result.
    Reload {
        #[command(flatten)]
        admin: AdminArgs,
    },
}

/// How the admin commands reach the gateway.
#[derive(clap::Args)]
struct AdminArgs {
    /// The gateway's config file: its admin address and token are used (no token to type).
    #[arg(short, long)]
    config: Option<PathBuf>,
    /// The admin API's address (default: the config's `admin.bind`, else 127.0.0.1:9901).
    #[arg(long)]
    admin: Option<std::net::SocketAddr>,
    /// File with the admin bearer token (default: the config's `admin.token_file`).
    #[arg(long)]
    token_file: Option<PathBuf>,
}

impl AdminArgs {
    fn target(&self) -> anyhow::Result<gateway::operator::cli::Target> {
        gateway::operator::cli::Target::resolve(
            self.config.as_deref(),
            self.admin,
            self.token_file.as_deref(),
        )
    }
}

// mimalloc instead of glibc's malloc: the proxy allocates and frees dozens of small objects per
// request (see the performance notes of issue 12 for the instruction counts).
#[global_allocator]
static ALLOCATOR: gateway_alloc::Mimalloc = gateway_alloc::Mimalloc;

fn main() -> ExitCode {
    gateway_alloc::configure();
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
                    Ok(c) => {
                        for w in &c.warnings {
                            eprintln!("warning: {w}");
                        }
                        println!(
                            "{}: ok ({} listeners, {} regions, {} routes, hash {}{})",
                            file.display(),
                            c.listeners.len(),
                            c.regions.len(),
                            c.routes.len(),
                            c.hash,
                            match c.warnings.len() {
                                0 => String::new(),
                                1 => ", 1 warning".to_string(),
                                n => format!(", {n} warnings"),
                            }
                        )
                    }
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
        Command::BgpAgent {
            admin,
            token_file,
            prefix,
            include,
            birdc,
            bird_socket,
            interval,
            poll_timeout,
            hung_after,
            print_include,
        } => {
            if let Some(state) = print_include {
                let decision = gateway::operator::bgp_agent::Decision {
                    announce: state == "announced",
                    reason: "printed by --print-include",
                };
                print!(
                    "{}",
                    gateway::operator::bgp_agent::include_text(&prefix, &decision)
                );
                return Ok(ExitCode::SUCCESS);
            }
            let options = gateway::operator::bgp_agent::AgentOptions {
                admin,
                token_file,
                prefix,
                include,
                birdc,
                bird_socket,
                interval: flag_duration("--interval", &interval)?,
                poll_timeout: flag_duration("--poll-timeout", &poll_timeout)?,
                hung_after: flag_duration("--hung-after", &hung_after)?,
            };
            runtime()?.block_on(gateway::operator::bgp_agent::run(options))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Drain {
            region,
            for_,
            reason,
            by,
            wait,
            admin,
        } => {
            let target = admin.target()?;
            runtime()?.block_on(async {
                match region {
                    Some(region) => {
                        let by = by.unwrap_or_else(gateway::operator::cli::who);
                        let path = format!(
                            "/regions/{}/drain?for={}&reason={}&by={}",
                            gateway::operator::cli::query_escape(&region),
                            gateway::operator::cli::query_escape(&for_),
                            gateway::operator::cli::query_escape(reason.as_deref().unwrap_or("")),
                            gateway::operator::cli::query_escape(&by),
                        );
                        target.call("POST", &path).await?;
                        println!("region {region} drained for {for_} by {by}");
                    }
                    None => {
                        let wait = flag_duration("--wait", &wait)?;
                        target.call("POST", "/drain").await?;
                        tracing::info!(
                            wait_ms = wait.as_millis() as u64,
                            "gateway drained; waiting for BGP to converge"
                        );
                        tokio::time::sleep(wait).await;
                    }
                }
                anyhow::Ok(())
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Undrain { region, admin } => {
            let target = admin.target()?;
            let path = match &region {
                Some(r) => format!(
                    "/regions/{}/undrain",
                    gateway::operator::cli::query_escape(r)
                ),
                None => "/undrain".to_string(),
            };
            runtime()?.block_on(target.call("POST", &path))?;
            match region {
                Some(r) => println!("region {r} undrained"),
                None => println!("gateway undrained"),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Status { json, admin } => {
            let target = admin.target()?;
            let (_, body) = runtime()?.block_on(target.call("GET", "/status"))?;
            let status: serde_json::Value =
                serde_json::from_str(&body).context("the admin API's /status is not JSON")?;
            if json {
                println!("{status:#}");
            } else {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_millis() as u64)
                    .unwrap_or(0);
                print!("{}", gateway::operator::cli::render_status(&status, now));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Reload { admin } => {
            let target = admin.target()?;
            let (_, body) = runtime()?.block_on(target.call("POST", "/reload"))?;
            println!("{}", body.trim());
            Ok(ExitCode::SUCCESS)
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
            for w in &config.warnings {
                tracing::warn!(path = %w.path, line = w.line, fix = %w.fix, "config: {}", w.message);
            }
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

/// A duration flag written like the config's durations (`500ms`, `2s`).
fn flag_duration(flag: &str, text: &str) -> anyhow::Result<std::time::Duration> {
    gateway_config::parse_duration(text).map_err(|e| anyhow::anyhow!("{flag} {text}: {e}"))
}

/// The small runtime of the helper subcommands (`bgp-agent` and the admin commands).
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
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
