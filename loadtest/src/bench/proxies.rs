//! The proxies under test and how each is configured: nginx and HAProxy with the gateway's
//! header work or without it (`-min`), the gateway with one route or many, each with one or two
//! workers, optionally terminating TLS (h2 and HTTP/1.1 by ALPN) in front of the same
//! plaintext HTTP/1.1 upstream.
//!
//! "The gateway's header work" is what `gateway/src/proxy/headers.rs` and the proxy's
//! `upstream_request_filter`/`response_filter` do to every proxied request: `Host` passed on,
//! `X-Forwarded-For` (the client's address appended), `X-Forwarded-Proto` (`http`/`https`),
//! `X-Forwarded-Host` (the `Host`), and `X-Request-Id` (the client's, else a new random one) on
//! the upstream request and on the answer.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::Context;

use testbed::launcher::free_port;
use testbed::yaml::{GatewayYaml, Listener, Probe, Region, Route, Server, Sticky};

use crate::process::{fd_limit, tree, wait_port, which, Guard};
use crate::scenario::start_gateway;

/// Client connections every proxy is configured to hold at once (nginx `worker_connections`,
/// HAProxy `maxconn`, the gateway's `server.max_connections`): room for the idle group's
/// 10 000 clients and the upstream connections.
pub(super) const MAX_CONNECTIONS: u32 = 16_384;

/// The descriptor limit asked for this process (and inherited by the proxies it starts); only
/// with the privilege to raise the hard limit (`CAP_SYS_RESOURCE`), else the hard limit.
pub(super) const FD_LIMIT: u64 = 65_536;

/// How a proxy under test is set up.
#[derive(Debug, Clone, Copy)]
pub(super) struct Setup<'a> {
    /// nginx and HAProxy add the gateway's forwarding and request-id headers (the gateway
    /// always does).
    pub headers: bool,
    /// nginx `worker_processes`, HAProxy `nbthread`, the gateway's `--threads`.
    pub workers: usize,
    /// The CPUs the proxy may run on, as `taskset -c` reads them.
    pub cpus: &'static str,
    /// Also listen with TLS (h2 and HTTP/1.1 by ALPN) with this certificate.
    pub tls: Option<&'a TlsFiles>,
}

/// What the gateway routes.
#[derive(Debug, Clone, Copy)]
pub(super) enum GatewayRoutes {
    /// One route matching every request.
    One,
    /// `count` routes, route *i* matching host `r<i>.bench.test`; the benched one is
    /// `benched`, with a sticky cookie when `sticky`.
    Hosts {
        count: usize,
        benched: usize,
        sticky: bool,
    },
}

impl GatewayRoutes {
    /// The `Host` the benched requests carry.
    pub(super) fn host(self) -> String {
        match self {
            GatewayRoutes::One => "bench.test".into(),
            GatewayRoutes::Hosts { benched, .. } => format!("r{benched}.bench.test"),
        }
    }
}

/// A self-signed certificate for `bench.test` and `127.0.0.1` in PEM files.
#[derive(Debug)]
pub(super) struct TlsFiles {
    _dir: tempfile::TempDir,
    /// The certificate.
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
    /// Certificate then key (HAProxy's `crt`).
    pub combined: PathBuf,
}

impl TlsFiles {
    /// A new key and certificate in a temporary directory.
    pub(super) fn generate() -> anyhow::Result<Self> {
        let certified =
            rcgen::generate_simple_self_signed(vec!["bench.test".into(), "127.0.0.1".into()])?;
        let (cert_pem, key_pem) = (certified.cert.pem(), certified.signing_key.serialize_pem());
        let dir = tempfile::tempdir()?;
        let files = Self {
            cert: dir.path().join("cert.pem"),
            key: dir.path().join("key.pem"),
            combined: dir.path().join("combined.pem"),
            _dir: dir,
        };
        std::fs::write(&files.cert, &cert_pem)?;
        std::fs::write(&files.key, &key_pem)?;
        std::fs::write(&files.combined, format!("{cert_pem}{key_pem}"))?;
        Ok(files)
    }
}

/// One proxy (or none) between the generator and the upstream.
pub(super) struct Target {
    /// The row's name.
    pub name: String,
    /// HTTP/1.1 listener.
    pub h1: SocketAddr,
    /// h2c (prior knowledge) listener.
    pub h2c: Option<SocketAddr>,
    /// TLS listener (h2 or HTTP/1.1 by ALPN).
    pub tls: Option<SocketAddr>,
    /// The `Host` of the benched requests.
    pub host: String,
    /// The process whose tree's CPU time is counted (nginx: the master and its workers).
    pub root: Option<u32>,
    /// The process whose memory is measured (nginx: its first worker).
    pub worker: Option<u32>,
    _guard: Guard,
}

impl Target {
    /// No proxy: the upstream itself, over h2c too when it serves it (`loadtest region` does,
    /// the nginx origin does not).
    pub(super) fn direct(upstream: SocketAddr, h2c: bool) -> Self {
        Self {
            name: "direct".into(),
            h1: upstream,
            h2c: h2c.then_some(upstream),
            tls: None,
            host: "bench.test".into(),
            root: None,
            worker: None,
            _guard: Guard::None,
        }
    }

    /// The proxy's CPU time so far (user + system over its process tree, in clock ticks).
    pub(super) fn cpu_ticks(&self) -> Option<u64> {
        tree_cpu_ticks(self.root?)
    }
}

/// User + system CPU time of `root` and its descendants, in clock ticks.
pub(super) fn tree_cpu_ticks(root: u32) -> Option<u64> {
    tree(root).into_iter().map(cpu_ticks).sum()
}

fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after the comm field.
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// Clock ticks per second of `/proc/<pid>/stat` (`USER_HZ`, 100 on Linux).
pub(super) const TICKS_PER_SECOND: f64 = 100.0;

/// Restricts `pid` (all its threads) to `cpus`, when the machine has at least two.
pub(super) fn pin(pid: u32, cpus: &str) {
    // The machine's CPUs, not this process's: `available_parallelism` reads the affinity
    // mask, which is one CPU once the bench has pinned itself, and every proxy then stayed
    // on the generator's CPU.
    if online_cpus() < 2 {
        return;
    }
    let _ = Command::new("taskset")
        .args(["-a", "-p", "-c", cpus, &pid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    // A placement that did not take would make every ratio of the run meaningless: say so.
    let allowed = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
                .map(|v| v.trim().to_string())
        });
    if allowed.as_deref().is_some_and(|a| a != cpus) {
        eprintln!("bench: warning: process {pid} runs on CPUs {allowed:?}, not {cpus}");
    }
}

/// CPUs online (`/sys/devices/system/cpu/online`, e.g. `0-1`), whatever this process's
/// affinity; 1 when it cannot be read.
fn online_cpus() -> usize {
    std::fs::read_to_string("/sys/devices/system/cpu/online")
        .ok()
        .map(|list| {
            list.trim()
                .split(',')
                .filter_map(|range| match range.split_once('-') {
                    Some((a, b)) => Some(b.parse::<usize>().ok()? + 1 - a.parse::<usize>().ok()?),
                    None => range.parse::<usize>().ok().map(|_| 1),
                })
                .sum()
        })
        .unwrap_or(1)
        .max(1)
}

/// nginx's directives for the gateway's header work (the request id taken from the client,
/// else `$request_id`, 128 random bits).
const NGINX_HEADERS: &str = " proxy_set_header Host $host; proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for; proxy_set_header X-Forwarded-Proto $scheme; proxy_set_header X-Forwarded-Host $host; proxy_set_header X-Request-Id $bench_request_id; add_header X-Request-Id $bench_request_id always;";

/// `$bench_request_id`: the client's `X-Request-Id`, else a new one.
const NGINX_REQUEST_ID_MAP: &str =
    "  map $http_x_request_id $bench_request_id { default $http_x_request_id; \"\" $request_id; }\n";

/// nginx in front of `upstream`: HTTP/1.1 and h2c listeners (and TLS with `setup.tls`),
/// keep-alive to the upstream.
pub(super) async fn start_nginx(
    name: &str,
    upstream: SocketAddr,
    setup: Setup<'_>,
) -> anyhow::Result<Target> {
    let config = |dir: &Path, listeners: Listeners| {
        nginx_config(dir, &PeerConfig::of(listeners, setup, upstream))
    };
    let args = |dir: &Path| vec!["-p".into(), dir.into(), "-c".into()];
    start_proxy("nginx", name, setup, ("nginx.conf", config), args, &[]).await
}

/// The nginx config of the bench (and of `scripts/callgrind.sh --proxy nginx`): `workers`
/// worker processes, the listeners, keep-alive to `upstream`, access log off, and the
/// gateway's header work when `headers`. Its files (pid, error log, temporary files) are
/// under `dir`.
fn nginx_config(dir: &Path, c: &PeerConfig<'_>) -> String {
    let (map, headers) = if c.headers {
        (NGINX_REQUEST_ID_MAP, NGINX_HEADERS)
    } else {
        ("", "")
    };
    let (workers, upstream, nofile) = (c.workers, c.upstream, fd_limit());
    let Listeners { h1, h2c, .. } = c.listeners;
    let p = dir.display();
    let tls = c.tls.map_or(String::new(), |(addr, files)| {
        format!(
            "    listen {addr} ssl http2;\n    ssl_certificate {};\n    ssl_certificate_key {};\n",
            files.cert.display(),
            files.key.display()
        )
    });
    format!(
        "worker_processes {workers};\nworker_rlimit_nofile {nofile};\ndaemon off;\npid {p}/nginx.pid;\nerror_log {p}/error.log crit;\nevents {{ worker_connections {MAX_CONNECTIONS}; }}\nhttp {{\n  access_log off;\n  client_body_temp_path {p}/body;\n  proxy_temp_path {p}/proxy;\n  fastcgi_temp_path {p}/fcgi;\n  uwsgi_temp_path {p}/uwsgi;\n  scgi_temp_path {p}/scgi;\n  keepalive_requests 1000000;\n{map}  upstream origin {{ server {upstream}; keepalive 256; }}\n  server {{\n    listen {h1};\n    listen {h2c} http2;\n{tls}    location / {{ proxy_pass http://origin; proxy_http_version 1.1; proxy_set_header Connection \"\";{headers} }}\n  }}\n}}\n",
    )
}

/// HAProxy's rules for the gateway's header work (`uuid()`: 122 random bits).
const HAPROXY_HEADERS: &str = "  unique-id-format %[uuid()]\n  http-request set-header X-Request-Id %[unique-id] unless { req.hdr(x-request-id) -m found }\n  http-request set-var(txn.request_id) req.hdr(x-request-id)\n  http-response set-header X-Request-Id %[var(txn.request_id)]\n  option forwardfor\n  http-request set-header X-Forwarded-Proto https if { ssl_fc }\n  http-request set-header X-Forwarded-Proto http unless { ssl_fc }\n  http-request set-header X-Forwarded-Host %[req.hdr(host)]\n";

/// HAProxy in front of `upstream`, like [`start_nginx`].
pub(super) async fn start_haproxy(
    name: &str,
    upstream: SocketAddr,
    setup: Setup<'_>,
) -> anyhow::Result<Target> {
    let config = |_: &Path, listeners: Listeners| {
        haproxy_config(&PeerConfig::of(listeners, setup, upstream))
    };
    let args = |_: &Path| vec!["-db".into(), "-f".into()];
    start_proxy("haproxy", name, setup, ("haproxy.cfg", config), args, &[]).await
}

/// Caddy's routes for the gateway's header work: `reverse_proxy` itself sets
/// `X-Forwarded-For`, `-Proto` and `-Host` and passes `Host` on; the request id is the
/// client's, else a new UUID, on the upstream request and on the answer.
const CADDY_HEADERS: &str = "    @noid not header X-Request-Id *\n    request_header @noid X-Request-Id {http.request.uuid}\n    header X-Request-Id {http.request.header.X-Request-Id}\n";

/// Caddy (Debian's 2.6) in front of `upstream`, like [`start_nginx`]: HTTP/1.1 and h2c
/// listeners, `GOMAXPROCS` set to `setup.workers`, its admin endpoint and automatic HTTPS
/// off, no access log (Caddy logs requests only when a site asks). No TLS row.
pub(super) async fn start_caddy(
    name: &str,
    upstream: SocketAddr,
    setup: Setup<'_>,
) -> anyhow::Result<Target> {
    let headers = if setup.headers { CADDY_HEADERS } else { "" };
    let config = |_: &Path, listeners: Listeners| {
        let Listeners { h1, h2c, .. } = listeners;
        format!(
            "{{\n  admin off\n  auto_https off\n  servers {{\n    protocols h1 h2c\n  }}\n}}\nhttp://:{} , http://:{} {{\n  bind {}\n  route {{\n{headers}    reverse_proxy {upstream}\n  }}\n}}\n",
            h1.port(),
            h2c.port(),
            h1.ip(),
        )
    };
    let args = |_: &Path| {
        vec![
            "run".into(),
            "--adapter".into(),
            "caddyfile".into(),
            "--config".into(),
        ]
    };
    let env = [("GOMAXPROCS", setup.workers.to_string())];
    start_proxy("caddy", name, setup, ("Caddyfile", config), args, &env).await
}

/// The HAProxy config of the bench (and of `scripts/callgrind.sh --proxy haproxy`), like
/// [`nginx_config`].
fn haproxy_config(c: &PeerConfig<'_>) -> String {
    let headers = if c.headers { HAPROXY_HEADERS } else { "" };
    let (workers, upstream, nofile) = (c.workers, c.upstream, fd_limit());
    let Listeners { h1, h2c, .. } = c.listeners;
    let tls = c.tls.map_or(String::new(), |(addr, files)| {
        format!(
            "  bind {addr} ssl crt {} alpn h2,http/1.1\n",
            files.combined.display()
        )
    });
    format!(
        "global\n  nbthread {workers}\n  maxconn {MAX_CONNECTIONS}\n  ulimit-n {nofile}\n  no strict-limits\ndefaults\n  mode http\n  maxconn {MAX_CONNECTIONS}\n  timeout connect 2s\n  timeout client 60s\n  timeout server 60s\n  option http-keep-alive\n  http-reuse always\nfrontend f\n  bind {h1}\n  bind {h2c} proto h2\n{tls}{headers}  default_backend b\nbackend b\n  server origin {upstream} maxconn 4000\n",
    )
}

/// A peer proxy whose bench config [`write_peer_config`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Peer {
    /// nginx (`nginx.conf`).
    Nginx,
    /// HAProxy (`haproxy.cfg`).
    Haproxy,
}

/// Writes the bench's config of `peer` (one worker, the gateway's header work, no TLS) into
/// `dir`, listening for HTTP/1.1 on `listen` (h2c on a free port) in front of `upstream`:
/// the same config `loadtest bench` measures, for other harnesses (`scripts/callgrind.sh`).
/// Returns the file written.
pub fn write_peer_config(
    peer: Peer,
    dir: &Path,
    listen: SocketAddr,
    upstream: SocketAddr,
) -> anyhow::Result<PathBuf> {
    let config = PeerConfig {
        listeners: Listeners {
            h1: listen,
            h2c: free_port()?,
            tls: None,
        },
        tls: None,
        upstream,
        workers: 1,
        headers: true,
    };
    let (file, text) = match peer {
        Peer::Nginx => ("nginx.conf", nginx_config(dir, &config)),
        Peer::Haproxy => ("haproxy.cfg", haproxy_config(&config)),
    };
    let path = dir.join(file);
    std::fs::write(&path, text)?;
    Ok(path)
}

/// What an nginx or HAProxy config is written from.
struct PeerConfig<'a> {
    listeners: Listeners,
    tls: Option<(SocketAddr, &'a TlsFiles)>,
    upstream: SocketAddr,
    workers: usize,
    headers: bool,
}

impl<'a> PeerConfig<'a> {
    fn of(listeners: Listeners, setup: Setup<'a>, upstream: SocketAddr) -> Self {
        PeerConfig {
            listeners,
            tls: listeners.tls_with(setup),
            upstream,
            workers: setup.workers,
            headers: setup.headers,
        }
    }
}

/// The listen addresses of one peer proxy (nginx, HAProxy, Caddy, pingora-min).
#[derive(Debug, Clone, Copy)]
struct Listeners {
    h1: SocketAddr,
    h2c: SocketAddr,
    tls: Option<SocketAddr>,
}

impl Listeners {
    fn free(setup: Setup<'_>) -> anyhow::Result<Self> {
        Ok(Self {
            h1: free_port()?,
            h2c: free_port()?,
            tls: setup.tls.map(|_| free_port()).transpose()?,
        })
    }

    /// The TLS listener and its certificate, when there is one.
    fn tls_with<'a>(&self, setup: Setup<'a>) -> Option<(SocketAddr, &'a TlsFiles)> {
        self.tls.zip(setup.tls)
    }
}

/// Starts the installed proxy `bin` (nginx, HAProxy) as row `name` on new listeners: writes
/// `config(dir, listeners)` into the file `file` of a new directory and runs
/// `bin <args(dir)> <config path>`, stderr into that directory (shown if it does not start).
/// Once the HTTP/1.1 listener accepts, the process and its children are restricted to
/// `setup.cpus`; the one whose memory is measured is its first child (nginx's worker), else the
/// process itself.
async fn start_proxy(
    bin: &'static str,
    name: &str,
    setup: Setup<'_>,
    (file, config): (&str, impl FnOnce(&Path, Listeners) -> String),
    args: impl FnOnce(&Path) -> Vec<OsString>,
    env: &[(&str, String)],
) -> anyhow::Result<Target> {
    let dir = tempfile::tempdir()?;
    let listeners = Listeners::free(setup)?;
    let path = dir.path().join(file);
    std::fs::write(&path, config(dir.path(), listeners))?;
    let stderr = dir.path().join("stderr");
    let child = Command::new(which(bin).with_context(|| format!("{bin} not installed"))?)
        .args(args(dir.path()))
        .arg(&path)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr)?)
        .spawn()?;
    started(name, child, dir, listeners, setup).await
}

/// A started proxy as row `name`, once its HTTP/1.1 listener accepts (else its stderr, which
/// `dir` holds, says why), with its processes pinned to `setup.cpus`; its worker is its first
/// child process if it has one.
async fn started(
    name: &str,
    child: std::process::Child,
    dir: tempfile::TempDir,
    listeners: Listeners,
    setup: Setup<'_>,
) -> anyhow::Result<Target> {
    let pid = child.id();
    let stderr = dir.path().join("stderr");
    // Stops the proxy if it does not come up.
    let guard = Guard::Child {
        child,
        _dir: Some(dir),
    };
    wait_port(listeners.h1).await.with_context(|| {
        let said = std::fs::read_to_string(&stderr).unwrap_or_default();
        format!("{name} did not start: {said}")
    })?;
    for p in tree(pid) {
        pin(p, setup.cpus);
    }
    let worker = tree(pid).get(1).copied().unwrap_or(pid);
    Ok(Target {
        name: name.into(),
        h1: listeners.h1,
        h2c: Some(listeners.h2c),
        tls: listeners.tls,
        host: "bench.test".into(),
        root: Some(pid),
        worker: Some(worker),
        _guard: guard,
    })
}

/// `pingora-min` (built beside the gateway `gateway` names) as row `name` in front of
/// `upstream`: the vendored Pingora with the bench's header work and nothing else, the floor
/// of the gateway's request path. Plaintext only (HTTP/1.1 and h2c).
pub(super) async fn start_pingora_min(
    gateway: &Path,
    name: &str,
    upstream: SocketAddr,
    setup: Setup<'_>,
) -> anyhow::Result<Target> {
    let bin = pingora_min_beside(gateway)
        .with_context(|| format!("no pingora-min beside {}", gateway.display()))?;
    let setup = Setup { tls: None, ..setup };
    let listeners = Listeners::free(setup)?;
    let dir = tempfile::tempdir()?;
    let stderr = dir.path().join("stderr");
    let child = Command::new(&bin)
        .arg("--listen")
        .arg(listeners.h1.to_string())
        .arg("--h2c")
        .arg(listeners.h2c.to_string())
        .arg("--upstream")
        .arg(upstream.to_string())
        .arg("--threads")
        .arg(setup.workers.to_string())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr)?)
        .spawn()?;
    started(name, child, dir, listeners, setup).await
}

/// The `pingora-min` binary in the gateway binary's directory (cargo builds both), if built.
pub(super) fn pingora_min_beside(gateway: &Path) -> Option<PathBuf> {
    let bin = gateway.with_file_name("pingora-min");
    bin.is_file().then_some(bin)
}

/// The gateway as row `name` in front of `upstream` (probed every second), routing `routes`,
/// with `setup.workers` threads on `setup.cpus`.
pub(super) async fn start_gateway_target(
    bin: &Path,
    name: &str,
    upstream: SocketAddr,
    routes: GatewayRoutes,
    setup: Setup<'_>,
) -> anyhow::Result<Target> {
    let files = tempfile::tempdir()?;
    let secret = files.path().join("sticky-k1.key");
    std::fs::write(&secret, "bench-sticky-secret-0123456789abcdef0123456789")?;
    let tls = setup.tls.map(|_| free_port()).transpose()?;
    let gw = start_gateway(bin, setup.workers, |ports| {
        let probe = Probe::http(
            "/healthz",
            Duration::from_secs(1),
            Duration::from_millis(500),
        );
        let mut yaml = GatewayYaml::new(ports)
            .server(Server {
                upstream_keepalive_pool: Some(512),
                max_connections: Some(MAX_CONNECTIONS),
                ..Server::default()
            })
            .region("origin", Region::one("origin-1", upstream).probe(probe));
        if let (Some(addr), Some(files)) = (tls, setup.tls) {
            let (cert, key) = (
                files.cert.display().to_string(),
                files.key.display().to_string(),
            );
            yaml = yaml.listener(Listener::tls("tls", &addr.to_string(), &[(&cert, &key)]));
        }
        match routes {
            GatewayRoutes::One => yaml.route(Route::new("all", &["origin"])),
            GatewayRoutes::Hosts {
                count,
                benched,
                sticky,
            } => {
                for i in 0..count {
                    let mut route =
                        Route::new(&format!("r{i}"), &["origin"]).host(&format!("r{i}.bench.test"));
                    if sticky && i == benched {
                        route = route.sticky(Sticky::default().insecure());
                    }
                    yaml = yaml.route(route);
                }
                if sticky {
                    yaml = yaml.sticky_keys(&[("k1", &secret.display().to_string())]);
                }
                yaml
            }
        }
    })
    .await
    .with_context(|| format!("start {name}"))?;
    let pid = gw.pid().context("the gateway is not running")?;
    pin(pid, setup.cpus);
    Ok(Target {
        name: name.into(),
        h1: gw.addr,
        h2c: Some(gw.addr),
        tls,
        host: routes.host(),
        root: Some(pid),
        worker: Some(pid),
        _guard: Guard::Gateway {
            _process: gw,
            _files: Some(files),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_benched_host_is_the_benched_route() {
        assert_eq!(GatewayRoutes::One.host(), "bench.test");
        let routes = GatewayRoutes::Hosts {
            count: 1000,
            benched: 500,
            sticky: true,
        };
        assert_eq!(routes.host(), "r500.bench.test");
    }

    #[test]
    fn a_certificate_is_written_for_haproxy_too() {
        let files = TlsFiles::generate().expect("certificate");
        let combined = std::fs::read_to_string(&files.combined).expect("combined");
        assert!(combined.contains("BEGIN CERTIFICATE") && combined.contains("PRIVATE KEY"));
    }

    #[test]
    fn a_peer_config_for_other_harnesses_is_the_benchs_with_the_header_work() {
        let dir = tempfile::tempdir().expect("dir");
        let listen: SocketAddr = "127.0.0.1:18080".parse().expect("addr");
        let upstream: SocketAddr = "127.0.0.1:19001".parse().expect("addr");
        let nginx = write_peer_config(Peer::Nginx, dir.path(), listen, upstream).expect("nginx");
        let text = std::fs::read_to_string(&nginx).expect("read");
        assert!(text.starts_with("worker_processes 1;"), "{text}");
        assert!(
            text.contains("listen 127.0.0.1:18080;") && text.contains("server 127.0.0.1:19001;")
        );
        assert!(text.contains(NGINX_HEADERS) && text.contains("access_log off;"));
        let haproxy =
            write_peer_config(Peer::Haproxy, dir.path(), listen, upstream).expect("haproxy");
        let text = std::fs::read_to_string(&haproxy).expect("read");
        assert!(text.contains("nbthread 1\n") && text.contains("bind 127.0.0.1:18080\n"));
        assert!(text.contains(HAPROXY_HEADERS) && text.contains("server origin 127.0.0.1:19001"));
    }
}
