//! `gateway bgp-agent`: announces the anycast prefix through bird only while the local gateway
//! should receive traffic.
//!
//! Policy (the pure [`decide`], table-tested below):
//!
//! - **announce** while `/readyz` answers 200 and `/status` shows at least one region up;
//! - **withdraw** when `/readyz` answers anything else (first probe round pending, drained by
//!   `POST /drain`, shutting down), when no region is up (another PoP may still reach them),
//!   when the admin port refuses connections (no gateway process), and when the agent itself
//!   is stopped (SIGTERM/SIGINT);
//! - **never because the gateway is busy**: a poll that times out or fails in any other way
//!   keeps the current state. Readiness itself never follows load (README, Overload), and a
//!   slow answer is load, not absence. Only a gateway that has answered nothing for
//!   `--hung-after` (default 30 s, far beyond any load spike) is taken for hung and withdrawn.
//!
//! The agent drives bird through one generated include file (a static protocol
//! `anycast_vip` that holds the prefix when announced and nothing when withdrawn; the PoP's
//! bird config includes it and exports it to its eBGP peers) and `birdc configure`, whose exit
//! code it checks: bird keeps its old config when the new one fails to parse, so a failed
//! configure is logged and retried at the next poll, never taken as applied. The file is
//! written atomically (temp file and rename) and bird is reconfigured only when the wanted
//! state differs from what was last applied successfully.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

// Log lines keep the target this module had before the folders: operators filter on it.
const LOG_TARGET: &str = "gateway::bgp_agent";

/// Settings of one agent.
#[derive(Debug, Clone)]
pub struct AgentOptions {
    /// The gateway's admin API, `ip:port`.
    pub admin: std::net::SocketAddr,
    /// File with the admin bearer token (needed for `/status` when the admin API has one).
    pub token_file: Option<PathBuf>,
    /// The anycast prefix, e.g. `192.0.2.10/32`.
    pub prefix: String,
    /// The include file the PoP's bird config includes.
    pub include: PathBuf,
    /// The `birdc` binary.
    pub birdc: PathBuf,
    /// bird's control socket (`birdc -s`).
    pub bird_socket: Option<PathBuf>,
    /// Time between polls of the admin API.
    pub interval: Duration,
    /// Deadline of one poll; past it the poll counts as no answer (busy), not as down.
    pub poll_timeout: Duration,
    /// No answer at all for this long: the gateway is hung and the prefix is withdrawn.
    pub hung_after: Duration,
}

/// What one poll of the admin API saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observation {
    /// `/readyz` answered 200; `any_region_up` from `/status`.
    Ready {
        /// At least one region is up.
        any_region_up: bool,
    },
    /// `/readyz` answered, but not 200 (not ready yet, drained, shutting down).
    NotReady,
    /// The admin port refused the connection: no gateway is running.
    Refused,
    /// No answer in time, or another transport error: possibly busy, proves nothing.
    NoAnswer,
}

/// Whether the prefix should be announced, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Announce (true) or withdraw (false).
    pub announce: bool,
    /// Why, for the log and the include file's comment.
    pub reason: &'static str,
}

/// The agent's memory between polls.
#[derive(Debug, Clone, Default)]
pub struct AgentState {
    /// The last decision (none before the first poll: withdrawn).
    pub last: Option<Decision>,
    /// Since when the admin API has given no answer.
    pub silent_since: Option<Instant>,
}

/// The pure announce decision for observation `obs` at `now` (module doc).
pub fn decide(
    state: &mut AgentState,
    obs: Observation,
    now: Instant,
    hung_after: Duration,
) -> Decision {
    let decision = match obs {
        Observation::Ready {
            any_region_up: true,
        } => Decision {
            announce: true,
            reason: "gateway ready and a region up",
        },
        Observation::Ready {
            any_region_up: false,
        } => Decision {
            announce: false,
            reason: "no region up",
        },
        Observation::NotReady => Decision {
            announce: false,
            reason: "gateway not ready (starting, drained or shutting down)",
        },
        Observation::Refused => Decision {
            announce: false,
            reason: "no gateway listening on the admin port",
        },
        Observation::NoAnswer => {
            let since = *state.silent_since.get_or_insert(now);
            if now.duration_since(since) >= hung_after {
                Decision {
                    announce: false,
                    reason: "gateway hung: no admin answer for the hung-after time",
                }
            } else {
                // Busy is not down: keep what was decided last.
                return state.last.clone().unwrap_or(Decision {
                    announce: false,
                    reason: "no answer from the gateway yet",
                });
            }
        }
    };
    if obs != Observation::NoAnswer {
        state.silent_since = None;
    }
    state.last = Some(decision.clone());
    decision
}

/// The include file's text for `decision`.
pub fn include_text(prefix: &str, decision: &Decision) -> String {
    let header = format!(
        "# Generated by `gateway bgp-agent`; do not edit.\n# {}: {}\n",
        if decision.announce {
            "announced"
        } else {
            "withdrawn"
        },
        decision.reason
    );
    let proto = if prefix.contains(':') { "ipv6" } else { "ipv4" };
    if decision.announce {
        format!("{header}protocol static anycast_vip {{ {proto}; route {prefix} blackhole; }}\n")
    } else {
        format!("{header}protocol static anycast_vip {{ {proto}; }}\n")
    }
}

type AdminClient = Client<hyper_util::client::legacy::connect::HttpConnector, Empty<Bytes>>;

/// Runs the agent until SIGTERM or SIGINT, then withdraws and returns.
pub async fn run(options: AgentOptions) -> anyhow::Result<()> {
    let client: AdminClient = Client::builder(TokioExecutor::new()).build_http();
    let mut state = AgentState::default();
    let mut applied: Option<bool> = None;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("SIGTERM handler")?;
    tracing::info!(target: LOG_TARGET, prefix = %options.prefix, include = %options.include.display(), admin = %options.admin, "bgp agent started");
    loop {
        let obs = observe(&client, &options).await;
        let decision = decide(&mut state, obs, Instant::now(), options.hung_after);
        if applied != Some(decision.announce) {
            match apply(&options, &decision).await {
                Ok(()) => {
                    tracing::info!(target: LOG_TARGET, announce = decision.announce, reason = decision.reason, prefix = %options.prefix, "bird reconfigured");
                    applied = Some(decision.announce);
                }
                Err(e) => {
                    tracing::error!(target: LOG_TARGET, error = %format!("{e:#}"), "bird not reconfigured; retrying at the next poll");
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(options.interval) => {}
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    let stop = Decision {
        announce: false,
        reason: "bgp agent stopped",
    };
    apply(&options, &stop)
        .await
        .context("withdrawing on shutdown")?;
    tracing::info!(target: LOG_TARGET, prefix = %options.prefix, "withdrawn: bgp agent stopped");
    Ok(())
}

/// One poll: `/readyz`, then `/status` for the regions.
async fn observe(client: &AdminClient, options: &AgentOptions) -> Observation {
    let token = options
        .token_file
        .as_ref()
        .and_then(|f| std::fs::read_to_string(f).ok())
        .map(|t| t.trim().to_string());
    let ready = get(client, options, "/readyz", None).await;
    match ready {
        Err(kind) => kind,
        Ok((200, _)) => match get(client, options, "/status", token.as_deref()).await {
            Ok((200, body)) => Observation::Ready {
                any_region_up: any_region_up(&body),
            },
            // Ready, but the status is unreadable (a wrong token, a timeout): readiness
            // says ready, and busy is not down.
            Ok(_) | Err(_) => Observation::NoAnswer,
        },
        Ok(_) => Observation::NotReady,
    }
}

/// Whether `/status` JSON shows at least one region up.
fn any_region_up(body: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            v["regions"]
                .as_array()
                .map(|r| r.iter().any(|r| r["up"] == true))
        })
        .unwrap_or(false)
}

async fn get(
    client: &AdminClient,
    options: &AgentOptions,
    path: &str,
    token: Option<&str>,
) -> Result<(u16, Bytes), Observation> {
    let mut req = http::Request::get(format!("http://{}{path}", options.admin));
    if let Some(t) = token {
        req = req.header(http::header::AUTHORIZATION, format!("Bearer {t}"));
    }
    let req = req.body(Empty::new()).map_err(|_| Observation::NoAnswer)?;
    let call = async {
        let resp = client.request(req).await.map_err(|e| {
            if e.is_connect() && refused(&e) {
                Observation::Refused
            } else {
                Observation::NoAnswer
            }
        })?;
        let status = resp.status().as_u16();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|_| Observation::NoAnswer)?
            .to_bytes();
        Ok((status, body))
    };
    tokio::time::timeout(options.poll_timeout, call)
        .await
        .unwrap_or(Err(Observation::NoAnswer))
}

/// Whether a connect error is a refusal (nothing listens), by the I/O error kind in its chain.
fn refused(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(e);
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return io.kind() == std::io::ErrorKind::ConnectionRefused;
        }
        source = err.source();
    }
    false
}

/// Writes the include file for `decision` and runs `birdc configure`, checking its exit code.
async fn apply(options: &AgentOptions, decision: &Decision) -> anyhow::Result<()> {
    write_atomically(&options.include, &include_text(&options.prefix, decision))?;
    let mut cmd = tokio::process::Command::new(&options.birdc);
    if let Some(sock) = &options.bird_socket {
        cmd.arg("-s").arg(sock);
    }
    cmd.arg("configure");
    let out = tokio::time::timeout(Duration::from_secs(10), cmd.output())
        .await
        .context("birdc configure timed out after 10 s")?
        .with_context(|| format!("running {}", options.birdc.display()))?;
    let text = String::from_utf8_lossy(&out.stdout)
        .trim()
        .replace('\n', " | ");
    if !out.status.success() {
        anyhow::bail!(
            "birdc configure failed ({}): {text} {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn write_atomically(path: &Path, text: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HUNG: Duration = Duration::from_secs(30);

    /// A case: its name, observations with their time in seconds, the expected announcement.
    type Case<'a> = (&'a str, &'a [(Observation, u64)], bool);

    #[test]
    fn the_decision_table() {
        let t0 = Instant::now();
        let ready = Observation::Ready {
            any_region_up: true,
        };
        let cases: &[Case<'_>] = &[
            ("ready with a region up", &[(ready, 0)], true),
            (
                "ready, no region up",
                &[
                    (ready, 0),
                    (
                        Observation::Ready {
                            any_region_up: false,
                        },
                        1,
                    ),
                ],
                false,
            ),
            ("drained", &[(ready, 0), (Observation::NotReady, 1)], false),
            (
                "no process",
                &[(ready, 0), (Observation::Refused, 1)],
                false,
            ),
            (
                "busy keeps it announced",
                &[(ready, 0), (Observation::NoAnswer, 1)],
                true,
            ),
            (
                "busy for 29 s still announced",
                &[
                    (ready, 0),
                    (Observation::NoAnswer, 1),
                    (Observation::NoAnswer, 30),
                ],
                true,
            ),
            (
                "silent for 30 s: hung",
                &[
                    (ready, 0),
                    (Observation::NoAnswer, 1),
                    (Observation::NoAnswer, 31),
                ],
                false,
            ),
            (
                "an answer resets the silence",
                &[
                    (ready, 0),
                    (Observation::NoAnswer, 1),
                    (ready, 20),
                    (Observation::NoAnswer, 25),
                    (Observation::NoAnswer, 50),
                ],
                true,
            ),
            (
                "busy before any answer: withdrawn",
                &[(Observation::NoAnswer, 0)],
                false,
            ),
            (
                "busy keeps it withdrawn",
                &[(Observation::NotReady, 0), (Observation::NoAnswer, 1)],
                false,
            ),
        ];
        for (name, steps, want) in cases {
            let mut state = AgentState::default();
            let mut last = None;
            for (obs, at) in *steps {
                last = Some(decide(
                    &mut state,
                    *obs,
                    t0 + Duration::from_secs(*at),
                    HUNG,
                ));
            }
            assert_eq!(last.map(|d| d.announce), Some(*want), "{name}");
        }
    }

    #[test]
    fn the_include_holds_the_prefix_only_when_announced() {
        let on = Decision {
            announce: true,
            reason: "r",
        };
        let off = Decision {
            announce: false,
            reason: "r",
        };
        assert!(include_text("192.0.2.10/32", &on)
            .contains("protocol static anycast_vip { ipv4; route 192.0.2.10/32 blackhole; }"));
        assert!(
            include_text("192.0.2.10/32", &off).contains("protocol static anycast_vip { ipv4; }")
        );
        assert!(include_text("2001:db8::10/128", &on).contains("ipv6; route 2001:db8::10/128"));
    }

    #[test]
    fn a_status_with_one_region_up_counts() {
        assert!(any_region_up(br#"{"regions":[{"up":false},{"up":true}]}"#));
        assert!(!any_region_up(br#"{"regions":[{"up":false}]}"#));
        assert!(!any_region_up(b"not json"));
    }
}
