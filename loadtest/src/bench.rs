//! `loadtest bench`: the gateway against direct, nginx and HAProxy on the same upstream.

/// Arguments of `loadtest bench`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {}

/// Runs the benchmark.
pub async fn run(_args: BenchArgs) -> anyhow::Result<()> {
    anyhow::bail!("not implemented yet")
}
