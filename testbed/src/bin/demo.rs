//! `demo`: two simulated regions (fra, ber), their control listener, and the real `gateway`
//! binary in front of them, all on loopback. See `testbed::demo`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use testbed::demo::{self, DemoAddrs};
use testbed::fleet::{serve_control, Fleet};
use testbed::launcher::{self, GatewayOptions, GatewayProcess, Stderr, Workdir};
use tokio::signal::unix::{signal, SignalKind};

/// How long the gateway may take to become ready.
const READY_DEADLINE: Duration = Duration::from_secs(60);
/// How long the gateway may take to stop after the signal before it is killed: its default
/// `server.grace_period` (10 s) and some.
const STOP_GRACE: Duration = Duration::from_secs(15);

#[derive(Parser)]
#[command(
    name = "demo",
    version,
    about = "Two simulated regions (fra, ber) and the real gateway in front of them, on loopback"
)]
struct Args {
    /// Gateway listener.
    #[arg(long, default_value_t = DemoAddrs::DEFAULT.listen)]
    listen: SocketAddr,
    /// Admin API listener.
    #[arg(long, default_value_t = DemoAddrs::DEFAULT.admin)]
    admin: SocketAddr,
    /// Fault-injection control listener (`POST /{region}/{mode}`).
    #[arg(long, default_value_t = DemoAddrs::DEFAULT.control)]
    control: SocketAddr,
    /// Proxy worker threads.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Directory for the config file (`<dir>/gateway.yaml`), created if absent.
    #[arg(long, default_value = "demo")]
    dir: PathBuf,
    /// The gateway binary (default: `GATEWAY_BIN`, else next to this binary).
    #[arg(long)]
    gateway: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("demo: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let bin = match args.gateway.clone() {
        Some(bin) => bin,
        None => launcher::gateway_bin()?,
    };
    let addrs = DemoAddrs {
        listen: args.listen,
        admin: args.admin,
        control: args.control,
    };
    let fleet = Arc::new(Fleet::start(demo::REGIONS).await?);
    let control = tokio::net::TcpListener::bind(addrs.control)
        .await
        .with_context(|| format!("cannot listen on {}", addrs.control))?;
    let control = tokio::spawn(serve_control(control, fleet.clone()));

    let created_dir = !args.dir.exists();
    let config_path = args.dir.join(launcher::CONFIG_FILE);
    refuse_foreign_config(&config_path)?;
    let dir = Workdir::kept(&args.dir)?;
    let config = demo::config(&addrs, &fleet).to_yaml(demo::CONFIG_HEADER)?;
    let options = GatewayOptions {
        threads: args.threads,
        log: None,
        stderr: Stderr::Inherit,
        upgrade_sock_in_dir: false,
        ..GatewayOptions::new(bin)
    };
    let mut gateway = match GatewayProcess::spawn(&options, dir, addrs.ports(), &config) {
        Ok(gateway) => gateway,
        Err(e) => {
            remove_config(&config_path, created_dir.then_some(args.dir.as_path()));
            return Err(e.into());
        }
    };
    let outcome = serve(&mut gateway, addrs, &config_path).await;

    // Whatever happened: no gateway, no control listener and no config file outlive the demo.
    if let Some(pid) = gateway.pid() {
        eprintln!("demo: stopping the gateway (pid {pid})");
    }
    let signal = match outcome {
        Ok(Stop::Terminate) => "TERM",
        _ => "INT",
    };
    gateway.stop(signal, STOP_GRACE).await;
    control.abort();
    remove_config(&config_path, created_dir.then_some(args.dir.as_path()));
    outcome.map(|_| ())
}

/// Why the demo stops.
enum Stop {
    /// SIGINT (Ctrl-C): the gateway is stopped with SIGINT, at once.
    Interrupt,
    /// SIGTERM: the gateway is stopped with SIGTERM, so it drains.
    Terminate,
}

/// Waits for the gateway to be ready, prints the banner, and waits for SIGINT or SIGTERM.
async fn serve(
    gateway: &mut GatewayProcess,
    addrs: DemoAddrs,
    config_path: &Path,
) -> anyhow::Result<Stop> {
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    tokio::select! {
        ready = gateway.wait_ready(READY_DEADLINE) => ready?,
        _ = interrupt.recv() => return Ok(Stop::Interrupt),
        _ = terminate.recv() => return Ok(Stop::Terminate),
    }
    let shown = std::fs::canonicalize(config_path).unwrap_or_else(|_| config_path.to_path_buf());
    let pid = gateway.pid().context("the gateway is not running")?;
    println!("{}", demo::banner(addrs, &shown, pid));
    while gateway.is_running() {
        tokio::select! {
            biased;
            _ = interrupt.recv() => return Ok(Stop::Interrupt),
            _ = terminate.recv() => return Ok(Stop::Terminate),
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
    // Ctrl-C in a terminal signals the gateway too (same process group), and it may exit
    // before this process has read its own signal: that is a stop, not a crash.
    tokio::select! {
        biased;
        _ = interrupt.recv() => Ok(Stop::Interrupt),
        _ = terminate.recv() => Ok(Stop::Terminate),
        _ = tokio::time::sleep(Duration::from_millis(500)) => {
            anyhow::bail!("the gateway exited on its own")
        }
    }
}

/// Fails if `path` exists and was not written by a demo (a demo that was killed leaves its file,
/// which is fine to overwrite; anything else is the user's).
fn refuse_foreign_config(path: &Path) -> anyhow::Result<()> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(());
    };
    let ours = demo::CONFIG_HEADER
        .lines()
        .next()
        .is_some_and(|first| text.starts_with(&format!("# {first}\n")));
    anyhow::ensure!(
        ours,
        "{} exists and was not written by the demo: pass another --dir",
        path.display()
    );
    Ok(())
}

/// Removes the config file, and `dir` too if the demo created it and it is now empty.
fn remove_config(config_path: &Path, dir: Option<&Path>) {
    match std::fs::remove_file(config_path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            eprintln!("demo: cannot remove {}: {e}", config_path.display());
        }
        _ => {}
    }
    if let Some(dir) = dir {
        // Fails, as it should, if anything else was put there.
        let _ = std::fs::remove_dir(dir);
    }
}
