//! Raw → validated config. Collects every problem instead of stopping at the first.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::defaults::{self, duration};
use crate::error::ConfigIssue;
use crate::model::*;
use crate::raw::*;
use crate::source_map::SourceMap;
use crate::values::{parse_duration, parse_percent_permille};
use crate::BoundSockets;
use sha2::{Digest, Sha256};

/// Default admin address.
pub const DEFAULT_ADMIN_BIND: &str = defaults::ADMIN_BIND;

pub(crate) struct Validator<'a> {
    file: &'a Path,
    base_dir: PathBuf,
    map: &'a SourceMap,
    pub(crate) issues: Vec<ConfigIssue>,
    /// Valid but unsafe settings, reported without failing the config.
    pub(crate) warnings: Vec<ConfigIssue>,
    /// Every file read while validating, in reading order (part of the config hash).
    pub(crate) files: Vec<ReferencedFile>,
    /// Sockets of the running process, when validating a reload.
    bound: Option<BoundSockets>,
}

impl<'a> Validator<'a> {
    pub(crate) fn new(file: &'a Path, map: &'a SourceMap, bound: Option<BoundSockets>) -> Self {
        let base_dir = file
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        Self {
            file,
            base_dir,
            map,
            issues: Vec::new(),
            warnings: Vec::new(),
            files: Vec::new(),
            bound,
        }
    }

    /// Records a problem with the value at `path`.
    pub(crate) fn err(&mut self, path: &str, message: impl Into<String>, fix: impl Into<String>) {
        let pos = self.map.value(path);
        self.push(path, pos, message.into(), fix.into());
    }

    /// Records a problem with the key of the entry at `path` (unknown or duplicate keys).
    pub(crate) fn err_key(
        &mut self,
        path: &str,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) {
        let pos = self.map.key(path);
        self.push(path, pos, message.into(), fix.into());
    }

    /// Records a valid but unsafe value at `path` (shown by `gateway check`, logged at start).
    pub(crate) fn warn(&mut self, path: &str, message: impl Into<String>, fix: impl Into<String>) {
        let pos = self.map.value(path);
        self.warnings.push(ConfigIssue {
            file: self.file.to_path_buf(),
            line: pos.line,
            column: pos.column,
            path: path.to_string(),
            message: message.into(),
            fix: fix.into(),
        });
    }

    fn push(&mut self, path: &str, pos: crate::source_map::Position, message: String, fix: String) {
        self.issues.push(ConfigIssue {
            file: self.file.to_path_buf(),
            line: pos.line,
            column: pos.column,
            path: path.to_string(),
            message,
            fix,
        });
    }

    fn duration(&mut self, path: &str, value: Option<&String>, default: Duration) -> Duration {
        let Some(text) = value else { return default };
        match parse_duration(text) {
            Ok(d) => d,
            Err(e) => {
                self.err(
                    path,
                    format!("invalid duration: {e}"),
                    "write a duration such as `250ms`, `2s`, `1m30s` or `1h`",
                );
                default
            }
        }
    }

    fn positive_duration(
        &mut self,
        path: &str,
        value: Option<&String>,
        default: Duration,
    ) -> Duration {
        let d = self.duration(path, value, default);
        if d.is_zero() {
            self.err(
                path,
                "duration must be greater than zero",
                "use a positive duration such as `1s`",
            );
            return default;
        }
        d
    }

    fn percent(
        &mut self,
        path: &str,
        value: Option<&String>,
        default: u32,
        max_permille: u32,
    ) -> u32 {
        let Some(text) = value else { return default };
        match parse_percent_permille(text) {
            Ok(p) if p <= max_permille => p,
            Ok(_) => {
                self.err(
                    path,
                    format!("`{text}` is too large"),
                    format!("use at most {}%", max_permille / 10),
                );
                default
            }
            Err(e) => {
                self.err(path, e, "write a percentage such as `20%`");
                default
            }
        }
    }

    fn nonzero(&mut self, path: &str, value: Option<u32>, default: u32) -> NonZeroU32 {
        let fallback = NonZeroU32::new(default).unwrap_or(NonZeroU32::MIN);
        match value {
            None => fallback,
            Some(v) => NonZeroU32::new(v).unwrap_or_else(|| {
                self.err(path, "must be at least 1", "use 1 or more");
                fallback
            }),
        }
    }

    fn socket_addr(&mut self, path: &str, text: &str) -> Option<SocketAddr> {
        match text.parse::<SocketAddr>() {
            Ok(addr) => Some(addr),
            Err(_) => {
                self.err(
                    path,
                    format!("`{text}` is not an ip:port address"),
                    "write an address such as `0.0.0.0:8080`, `127.0.0.1:9901` or `[::]:8443`",
                );
                None
            }
        }
    }

    /// Reads a file named in the config (relative to the config file's directory).
    fn read_file(&mut self, path: &str, name: &str, what: &str) -> Option<(PathBuf, Vec<u8>)> {
        let full = self.base_dir.join(name);
        match std::fs::read(&full) {
            Ok(bytes) => {
                self.files.push(ReferencedFile {
                    field: path.to_string(),
                    path: full.clone(),
                    sha256: crate::hex_prefix(&Sha256::digest(&bytes), 32),
                });
                Some((full, bytes))
            }
            Err(e) => {
                self.err(
                    path,
                    format!("cannot read {what} `{}`: {e}", full.display()),
                    "check the path (relative paths start at the config file's directory) and the file's permissions",
                );
                None
            }
        }
    }

    pub(crate) fn config(
        &mut self,
        raw: RawConfig,
        source: PathBuf,
        hash: String,
    ) -> GatewayConfig {
        let listeners = self.listeners(&raw.listeners);
        let admin = self.admin(raw.admin.as_ref(), &listeners);
        let server = self.server(raw.server.as_ref());
        let regions = self.regions(&raw.regions);
        let sticky_keys = self.sticky_keys(&raw.sticky_keys);
        let routes = self.routes(&raw.routes, &regions, !sticky_keys.is_empty());
        let dns = self.dns(raw.dns.as_ref());
        GatewayConfig {
            source,
            hash,
            files: Vec::new(),
            listeners,
            admin,
            server,
            regions,
            routes,
            sticky_keys,
            dns,
            warnings: Vec::new(),
        }
    }

    fn dns(&mut self, raw: Option<&RawDns>) -> DnsSettings {
        let servers = raw
            .map(|d| {
                d.servers
                    .iter()
                    .enumerate()
                    .filter_map(|(i, s)| self.socket_addr(&format!("dns.servers[{i}]"), s))
                    .collect()
            })
            .unwrap_or_default();
        let min_ttl = self.positive_duration(
            "dns.min_ttl",
            raw.and_then(|d| d.min_ttl.as_ref()),
            duration(defaults::DNS_MIN_TTL),
        );
        let max_ttl = self.positive_duration(
            "dns.max_ttl",
            raw.and_then(|d| d.max_ttl.as_ref()),
            duration(defaults::DNS_MAX_TTL).max(min_ttl),
        );
        if max_ttl < min_ttl {
            self.err(
                "dns.max_ttl",
                "shorter than `min_ttl`",
                "make `max_ttl` at least `min_ttl`",
            );
        }
        DnsSettings {
            servers,
            min_ttl,
            max_ttl: max_ttl.max(min_ttl),
            timeout: self.positive_duration(
                "dns.timeout",
                raw.and_then(|d| d.timeout.as_ref()),
                duration(defaults::DNS_TIMEOUT),
            ),
        }
    }

    fn listeners(&mut self, raw: &[RawListener]) -> Vec<Listener> {
        if raw.is_empty() {
            self.err(
                "listeners",
                "no listeners",
                "add a listener such as `- { name: http, bind: \"0.0.0.0:8080\" }`",
            );
        }
        let mut names = HashSet::new();
        let mut out: Vec<Listener> = Vec::new();
        for (i, l) in raw.iter().enumerate() {
            let p = format!("listeners[{i}]");
            if !names.insert(l.name.as_str()) {
                self.err(
                    &format!("{p}.name"),
                    format!("duplicate listener name `{}`", l.name),
                    "give each listener a unique name",
                );
            }
            let Some(bind) = self.socket_addr(&format!("{p}.bind"), &l.bind) else {
                continue;
            };
            if let Some(other) = out.iter().find(|o| addrs_overlap(o.bind, bind)) {
                self.err(
                    &format!("{p}.bind"),
                    format!("`{bind}` overlaps listener `{}` on `{}`", other.name, other.bind),
                    "use a different port, or distinct specific IPs (an unspecified IP such as 0.0.0.0 takes the port on every address)",
                );
            }
            let tls = l
                .tls
                .as_ref()
                .and_then(|t| self.listener_tls(&format!("{p}.tls"), t));
            out.push(Listener {
                name: l.name.clone(),
                bind,
                tls,
            });
        }
        out
    }

    fn listener_tls(&mut self, p: &str, raw: &RawListenerTls) -> Option<ListenerTls> {
        if raw.certs.is_empty() {
            self.err(
                &format!("{p}.certs"),
                "no certificates",
                "add `certs: [{ cert: server.pem, key: server.key }]`",
            );
            return None;
        }
        let mut certs = Vec::new();
        let mut ok = true;
        for (i, c) in raw.certs.iter().enumerate() {
            let cp = format!("{p}.certs[{i}]");
            let cert = self.read_file(&format!("{cp}.cert"), &c.cert, "certificate file");
            let key = self.read_file(&format!("{cp}.key"), &c.key, "private key file");
            match (cert, key) {
                (Some((cert_path, cert_pem)), Some((key_path, key_pem))) => {
                    let n_certs = rustls_pemfile::certs(&mut cert_pem.as_slice())
                        .filter(|c| c.is_ok())
                        .count();
                    if n_certs == 0 {
                        self.err(
                            &format!("{cp}.cert"),
                            format!("`{}` holds no PEM certificate", cert_path.display()),
                            "point `cert` at a PEM file with `-----BEGIN CERTIFICATE-----` blocks",
                        );
                        ok = false;
                    }
                    if !matches!(
                        rustls_pemfile::private_key(&mut key_pem.as_slice()),
                        Ok(Some(_))
                    ) {
                        self.err(
                            &format!("{cp}.key"),
                            format!("`{}` holds no PEM private key", key_path.display()),
                            "point `key` at a PEM PKCS#8, PKCS#1 or SEC1 private key",
                        );
                        ok = false;
                    }
                    certs.push(CertPair {
                        cert_path,
                        key_path,
                        cert_pem,
                        key_pem,
                    });
                }
                _ => ok = false,
            }
        }
        let default_cert = raw.default_cert.unwrap_or(0);
        if default_cert >= raw.certs.len() {
            self.err(
                &format!("{p}.default_cert"),
                format!(
                    "index {default_cert} is out of range ({} certificates)",
                    raw.certs.len()
                ),
                format!("use an index from 0 to {}", raw.certs.len() - 1),
            );
            ok = false;
        }
        ok.then_some(ListenerTls {
            certs,
            default_cert,
        })
    }

    fn admin(&mut self, raw: Option<&RawAdmin>, listeners: &[Listener]) -> AdminSettings {
        let fallback: SocketAddr = DEFAULT_ADMIN_BIND
            .parse()
            .expect("valid default admin address");
        let settings = match raw {
            None => AdminSettings {
                bind: fallback,
                token: None,
            },
            Some(raw) => self.admin_section(raw, listeners, fallback),
        };
        // The admin socket is bound once, at start: a reload that changes `admin.bind` does not
        // move it. So the token rule applies to the address actually listening, or a reload
        // could drop the token of a public admin API.
        if let Some(bound) = self.bound {
            if !bound.admin.ip().is_loopback()
                && settings.token.is_none()
                && raw.is_none_or(|r| r.token_file.is_none())
            {
                self.err(
                    "admin.token_file",
                    format!(
                        "the running admin API listens on non-loopback `{}` (a new `admin.bind` applies only after a restart); a reload cannot remove its token",
                        bound.admin
                    ),
                    "keep `admin.token_file` until the gateway has been restarted (or upgraded) on a loopback `admin.bind`",
                );
            }
        }
        settings
    }

    fn admin_section(
        &mut self,
        raw: &RawAdmin,
        listeners: &[Listener],
        fallback: SocketAddr,
    ) -> AdminSettings {
        let bind = self
            .socket_addr("admin.bind", &raw.bind)
            .unwrap_or(fallback);
        if let Some(l) = listeners.iter().find(|l| addrs_overlap(l.bind, bind)) {
            self.err(
                "admin.bind",
                format!("`{bind}` overlaps listener `{}` on `{}`", l.name, l.bind),
                "give the admin API its own port",
            );
        }
        let token = raw.token_file.as_ref().and_then(|f| {
            let (path, bytes) = self.read_file("admin.token_file", f, "token file")?;
            let token = String::from_utf8_lossy(&bytes).trim().to_string();
            if token.len() < 16 {
                self.err("admin.token_file", format!("the token in `{}` is shorter than 16 characters", path.display()), "write a long random token, e.g. `head -c 32 /dev/urandom | base64 > admin.token`");
            }
            Some(token)
        });
        if !bind.ip().is_loopback() && raw.token_file.is_none() {
            self.err(
                "admin.bind",
                format!("admin API on non-loopback `{bind}` without a token"),
                "add `token_file: admin.token`, or bind to 127.0.0.1",
            );
        }
        AdminSettings { bind, token }
    }

    fn server(&mut self, raw: Option<&RawServer>) -> ServerSettings {
        let threads = raw.and_then(|s| s.threads);
        if threads == Some(0) {
            self.err(
                "server.threads",
                "must be at least 1",
                "use 1 or more, or remove it to use one thread per CPU",
            );
        }
        let request_id_header = raw
            .and_then(|s| s.request_id_header.clone())
            .unwrap_or_else(|| defaults::REQUEST_ID_HEADER.into())
            .to_ascii_lowercase();
        let request_id_header = match http::HeaderName::from_bytes(request_id_header.as_bytes()) {
            Ok(name) => name,
            Err(_) => {
                self.err(
                    "server.request_id_header",
                    format!("`{request_id_header}` is not a valid header name"),
                    "use a token such as `x-request-id`",
                );
                http::HeaderName::from_static(defaults::REQUEST_ID_HEADER)
            }
        };
        ServerSettings {
            threads: threads.filter(|t| *t > 0),
            upstream_keepalive_pool: raw
                .and_then(|s| s.upstream_keepalive_pool)
                .unwrap_or(defaults::UPSTREAM_KEEPALIVE_POOL),
            request_id_header,
            grace_period: self.duration(
                "server.grace_period",
                raw.and_then(|s| s.grace_period.as_ref()),
                duration(defaults::GRACE_PERIOD),
            ),
            max_in_flight: match raw.and_then(|s| s.max_in_flight) {
                None => defaults::MAX_IN_FLIGHT,
                Some(0) => {
                    self.err(
                        "server.max_in_flight",
                        "0 would refuse every request",
                        "use a positive number, such as 10000",
                    );
                    defaults::MAX_IN_FLIGHT
                }
                Some(n) => n,
            },
            start_traces: raw
                .and_then(|s| s.start_traces)
                .unwrap_or(defaults::START_TRACES),
            adaptive_limit: raw
                .and_then(|s| s.adaptive_limit)
                .unwrap_or(defaults::ADAPTIVE_LIMIT),
            client_h2_streams: match raw.and_then(|s| s.client_h2_streams) {
                None => defaults::CLIENT_H2_STREAMS,
                Some(n @ 1..=10_000) => n,
                Some(n) => {
                    self.err(
                        "server.client_h2_streams",
                        format!("{n} streams per client HTTP/2 connection is out of range"),
                        "use a number from 1 to 10000 (default 100)",
                    );
                    defaults::CLIENT_H2_STREAMS
                }
            },
            max_connections: match raw.and_then(|s| s.max_connections) {
                None => defaults::MAX_CONNECTIONS,
                Some(0) => {
                    self.err(
                        "server.max_connections",
                        "0 would refuse every connection",
                        "use a positive number, such as 8192",
                    );
                    defaults::MAX_CONNECTIONS
                }
                Some(n) => n,
            },
            trusted_proxies: raw
                .and_then(|s| s.trusted_proxies.as_ref())
                .into_iter()
                .flatten()
                .enumerate()
                .filter_map(|(i, text)| {
                    let net = text
                        .parse::<ipnet::IpNet>()
                        .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from));
                    match net {
                        Ok(net) => Some(net),
                        Err(_) => {
                            self.err(
                                &format!("server.trusted_proxies[{i}]"),
                                format!("`{text}` is not an address or CIDR"),
                                "write an address (10.0.0.7) or a CIDR (10.0.0.0/8, fd00::/8)",
                            );
                            None
                        }
                    }
                })
                .collect(),
            access_log: AccessLog {
                output: match raw
                    .and_then(|s| s.access_log.as_ref())
                    .and_then(|a| a.output.as_deref())
                {
                    None | Some("off") => AccessLogOutput::Off,
                    Some("stdout") => AccessLogOutput::Stdout,
                    Some("") => {
                        self.err(
                            "server.access_log.output",
                            "empty output",
                            "use `off`, `stdout` or a file path such as /var/log/gateway/access.log",
                        );
                        AccessLogOutput::Off
                    }
                    Some(path) => AccessLogOutput::File(self.base_dir.join(path)),
                },
                sample_permille: self.percent(
                    "server.access_log.sample",
                    raw.and_then(|s| s.access_log.as_ref())
                        .and_then(|a| a.sample.as_ref()),
                    1000,
                    1000,
                ),
            },
            otlp: raw.and_then(|s| s.otlp.as_ref()).map(|o| self.otlp(o)),
            limits: RequestLimits {
                head_timeout: self.duration(
                    "server.request_head_timeout",
                    raw.and_then(|s| s.request_head_timeout.as_ref()),
                    duration(defaults::REQUEST_HEAD_TIMEOUT),
                ),
                keepalive_timeout: self.positive_duration(
                    "server.keepalive_timeout",
                    raw.and_then(|s| s.keepalive_timeout.as_ref()),
                    duration(defaults::KEEPALIVE_TIMEOUT),
                ),
                send_timeout: self.positive_duration(
                    "server.send_timeout",
                    raw.and_then(|s| s.send_timeout.as_ref()),
                    duration(defaults::SEND_TIMEOUT),
                ),
                head_bytes: self.limit(
                    "server.max_request_head_bytes",
                    raw.and_then(|s| s.max_request_head_bytes),
                    defaults::MAX_REQUEST_HEAD_BYTES,
                    1_048_575,
                ),
                header_bytes: self.limit(
                    "server.max_header_bytes",
                    raw.and_then(|s| s.max_header_bytes),
                    defaults::MAX_HEADER_BYTES,
                    1_048_575,
                ),
                headers: self.limit(
                    "server.max_headers",
                    raw.and_then(|s| s.max_headers),
                    defaults::MAX_HEADERS,
                    256,
                ),
                uri_bytes: self.limit(
                    "server.max_uri_bytes",
                    raw.and_then(|s| s.max_uri_bytes),
                    defaults::MAX_URI_BYTES,
                    1_048_575,
                ),
                body_buffer_bytes: match raw.and_then(|s| s.body_buffer_bytes) {
                    None => defaults::BODY_BUFFER_BYTES,
                    Some(n @ 1024..=1_048_576) => n,
                    Some(n) => {
                        self.err(
                            "server.body_buffer_bytes",
                            format!("{n} is out of range"),
                            "use a number from 1024 to 1048576 (default 16384)",
                        );
                        defaults::BODY_BUFFER_BYTES
                    }
                },
            },
        }
    }

    /// A request limit from 1 to `max` (`default` when absent).
    fn limit(&mut self, path: &str, value: Option<u32>, default: u32, max: u32) -> u32 {
        match value {
            None => default,
            Some(n) if (1..=max).contains(&n) => n,
            Some(n) => {
                self.err(
                    path,
                    format!("{n} is out of range"),
                    format!("use a number from 1 to {max} (default {default})"),
                );
                default
            }
        }
    }

    fn regions(&mut self, raw: &indexmap::IndexMap<String, RawRegion>) -> Vec<Region> {
        if raw.is_empty() {
            self.err(
                "regions",
                "no regions",
                "add at least one region with endpoints",
            );
        }
        let mut endpoint_ids: HashMap<String, String> = HashMap::new();
        let mut out = Vec::new();
        for (name, r) in raw {
            let p = format!("regions.{name}");
            let region_name = match RegionName::try_new(name) {
                Ok(n) => n,
                Err(e) => {
                    self.err_key(&p, e, "rename the region, e.g. `fra` or `eu-west-1`");
                    continue;
                }
            };
            if r.endpoints.is_empty() {
                self.err(
                    &format!("{p}.endpoints"),
                    "no endpoints",
                    "add `endpoints: [{ id: x-1, address: \"10.0.0.1:8080\" }]`",
                );
            }
            let mut endpoints = Vec::new();
            for (i, e) in r.endpoints.iter().enumerate() {
                let ep = format!("{p}.endpoints[{i}]");
                let id = match EndpointId::try_new(&e.id) {
                    Ok(id) => id,
                    Err(msg) => {
                        self.err(&format!("{ep}.id"), msg, "use a stable id such as `fra-1`");
                        continue;
                    }
                };
                if let Some(first) = endpoint_ids.insert(e.id.clone(), p.clone()) {
                    self.err(
                        &format!("{ep}.id"),
                        format!("duplicate endpoint id `{}` (also in {first})", e.id),
                        "endpoint ids must be unique across all regions; rename one",
                    );
                }
                let Some(address) = self.endpoint_address(&format!("{ep}.address"), &e.address)
                else {
                    continue;
                };
                if endpoints.iter().any(|x: &Endpoint| x.address == address) {
                    self.err(
                        &format!("{ep}.address"),
                        format!("duplicate address `{address}` in region `{name}`"),
                        "list each address once",
                    );
                }
                endpoints.push(Endpoint { id, address });
            }
            let tls = r.tls.as_ref().map(|t| {
                if t.sni.is_empty() {
                    self.err(
                        &format!("{p}.tls.sni"),
                        "empty SNI",
                        "set the upstream's server name, e.g. `app.fra.example`",
                    );
                }
                let verify = t.verify.unwrap_or(defaults::UPSTREAM_TLS_VERIFY);
                if !verify {
                    self.warn(
                        &format!("{p}.tls.verify"),
                        "INSECURE: upstream certificates are not verified (proxied traffic and HTTPS probes)",
                        "trust the upstream's CA and remove `verify: false`",
                    );
                }
                UpstreamTls {
                    sni: t.sni.clone(),
                    verify,
                }
            });
            let protocol = match r.protocol.as_deref() {
                None | Some("http1") => UpstreamProtocol::Http1,
                Some("http2") => UpstreamProtocol::Http2,
                Some("auto") => UpstreamProtocol::Auto,
                Some(other) => {
                    self.err(
                        &format!("{p}.protocol"),
                        format!("unknown protocol `{other}`"),
                        "use `http1`, `http2` or `auto`",
                    );
                    UpstreamProtocol::Http1
                }
            };
            let h2_streams = match r.h2_streams {
                None => defaults::H2_STREAMS,
                Some(n @ 1..=1000) => n as usize,
                Some(n) => {
                    self.err(
                        &format!("{p}.h2_streams"),
                        format!("{n} streams per HTTP/2 connection is out of range"),
                        "use a number from 1 to 1000 (default 100)",
                    );
                    defaults::H2_STREAMS
                }
            };
            let probe = self.probe(&format!("{p}.probe"), r.probe.as_ref(), tls.as_ref());
            let h1 = protocol == UpstreamProtocol::Http1
                || (protocol == UpstreamProtocol::Auto && tls.is_none());
            if matches!(probe.kind, ProbeKind::Grpc(_)) && h1 {
                self.warn(
                    &format!("{p}.probe.grpc"),
                    "the gRPC probe speaks HTTP/2, but requests go to these endpoints over HTTP/1.1 (gRPC needs HTTP/2)",
                    "set `protocol: http2` on the region (h2c, or h2 with `tls`)",
                );
            }
            let mut check_names = HashSet::new();
            let checks = r
                .checks
                .iter()
                .enumerate()
                .filter_map(|(i, c)| {
                    let cp = format!("{p}.checks[{i}]");
                    if !check_names.insert(c.name.clone()) {
                        self.err(
                            &format!("{cp}.name"),
                            format!("duplicate check name `{}`", c.name),
                            "give each check a unique name",
                        );
                    }
                    self.check(&cp, c)
                })
                .collect();
            let min_healthy = match &r.min_healthy {
                None => MinHealthy::Count(1),
                Some(RawCountOrPercent::Count(n)) => {
                    if *n == 0 || *n as usize > r.endpoints.len().max(1) {
                        self.err(&format!("{p}.min_healthy"), format!("{n} is not between 1 and the region's {} endpoints", r.endpoints.len()), "use a count from 1 to the number of endpoints, or a percentage such as `50%`");
                    }
                    MinHealthy::Count((*n).max(1))
                }
                Some(RawCountOrPercent::Text(t)) => {
                    let pm = self.percent(&format!("{p}.min_healthy"), Some(t), 1000, 1000);
                    if pm == 0 {
                        self.err(
                            &format!("{p}.min_healthy"),
                            "0% would keep a region with no healthy endpoint up",
                            "use a percentage above 0%",
                        );
                    }
                    MinHealthy::Percent(pm.div_ceil(10).max(1))
                }
            };
            let passive = self.passive(&format!("{p}.passive"), r.passive.as_ref());
            out.push(Region {
                name: region_name,
                endpoints,
                tls,
                protocol,
                h2_streams,
                probe,
                checks,
                min_healthy,
                passive,
                capacity: self.positive_limit(&format!("{p}.capacity"), r.capacity),
            });
        }
        out
    }

    fn endpoint_address(&mut self, path: &str, text: &str) -> Option<EndpointAddress> {
        if let Ok(addr) = text.parse::<SocketAddr>() {
            return Some(EndpointAddress::Socket(addr));
        }
        let fix = "write `ip:port` or `host:port`, e.g. `10.0.0.1:8080` or `app.fra.internal:8080`";
        let Some((host, port)) = text.rsplit_once(':') else {
            self.err(path, format!("`{text}` has no port"), fix);
            return None;
        };
        let Ok(port) = port.parse::<u16>() else {
            self.err(path, format!("`{port}` is not a port"), fix);
            return None;
        };
        let valid_host = !host.is_empty()
            && host.len() <= 253
            && host.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    && !label.starts_with('-')
            });
        if !valid_host {
            self.err(path, format!("`{host}` is not a valid host name"), fix);
            return None;
        }
        Some(EndpointAddress::Host {
            host: host.to_ascii_lowercase(),
            port,
        })
    }

    fn probe(
        &mut self,
        p: &str,
        raw: Option<&RawProbe>,
        upstream_tls: Option<&UpstreamTls>,
    ) -> ProbeSettings {
        let interval = self.positive_duration(
            &format!("{p}.interval"),
            raw.and_then(|r| r.interval.as_ref()),
            duration(defaults::PROBE_INTERVAL),
        );
        let timeout = self.positive_duration(
            &format!("{p}.timeout"),
            raw.and_then(|r| r.timeout.as_ref()),
            duration(defaults::PROBE_TIMEOUT).min(interval),
        );
        if timeout > interval {
            self.err(
                &format!("{p}.timeout"),
                format!("timeout {timeout:?} is longer than the interval {interval:?}"),
                "make the timeout at most the interval",
            );
        }
        let http = raw.and_then(|r| r.http.as_ref()).map(|h| {
            let path = h
                .path
                .clone()
                .unwrap_or_else(|| defaults::PROBE_PATH.into());
            if !path.starts_with('/') {
                self.err(
                    &format!("{p}.http.path"),
                    format!("`{path}` does not start with `/`"),
                    "write an absolute path such as `/healthz`",
                );
            }
            let method = match h
                .method
                .as_deref()
                .unwrap_or(defaults::PROBE_METHOD)
                .parse::<http::Method>()
            {
                Ok(m) => m,
                Err(_) => {
                    self.err(
                        &format!("{p}.http.method"),
                        "invalid method",
                        "use `GET` or `HEAD`",
                    );
                    http::Method::GET
                }
            };
            HttpProbe {
                method,
                path,
                host: h.host.clone(),
                expect_status: self.statuses(
                    &format!("{p}.http.expect_status"),
                    h.expect_status.as_deref(),
                ),
                body_contains: h.body_contains.clone(),
                tls: self.endpoint_probe_tls(
                    &format!("{p}.http"),
                    &TlsFields::of_probe(h),
                    upstream_tls,
                ),
                bearer_token_file: self.bearer_token_file(
                    &format!("{p}.http.bearer_token_file"),
                    h.bearer_token_file.as_ref(),
                    upstream_tls.is_some(),
                ),
            }
        });
        let grpc = raw.and_then(|r| r.grpc.as_ref()).map(|g| GrpcProbe {
            service: g.service.clone().unwrap_or_default(),
            tls: self.endpoint_probe_tls(
                &format!("{p}.grpc"),
                &TlsFields::of_grpc(g),
                upstream_tls,
            ),
            bearer_token_file: self.bearer_token_file(
                &format!("{p}.grpc.bearer_token_file"),
                g.bearer_token_file.as_ref(),
                upstream_tls.is_some(),
            ),
        });
        let kind = match (http, grpc) {
            (Some(_), Some(grpc)) => {
                self.err(
                    &format!("{p}.grpc"),
                    "a probe is either `http` or `grpc`, not both",
                    "keep the one the endpoints answer (`grpc` for a gRPC server with the standard health service)",
                );
                ProbeKind::Grpc(grpc)
            }
            (Some(http), None) => ProbeKind::Http(http),
            (None, Some(grpc)) => ProbeKind::Grpc(grpc),
            (None, None) => ProbeKind::Tcp,
        };
        ProbeSettings {
            kind,
            interval,
            timeout,
            rise: self.nonzero(
                &format!("{p}.rise"),
                raw.and_then(|r| r.rise),
                defaults::RISE_FALL,
            ),
            fall: self.nonzero(
                &format!("{p}.fall"),
                raw.and_then(|r| r.fall),
                defaults::RISE_FALL,
            ),
            jitter_permille: self.percent(
                &format!("{p}.jitter"),
                raw.and_then(|r| r.jitter.as_ref()),
                defaults::PROBE_JITTER_PERMILLE,
                500,
            ),
        }
    }

    fn statuses(&mut self, path: &str, raw: Option<&[u16]>) -> BTreeSet<u16> {
        let Some(list) = raw else {
            return BTreeSet::from([200]);
        };
        if list.is_empty() {
            self.err(
                path,
                "empty status list",
                "list at least one status, e.g. `[200]`",
            );
        }
        for (i, s) in list.iter().enumerate() {
            if !(100..=599).contains(s) {
                self.err(
                    &format!("{path}[{i}]"),
                    format!("{s} is not an HTTP status"),
                    "use a status from 100 to 599",
                );
            }
        }
        list.iter().copied().collect()
    }

    fn check(&mut self, p: &str, c: &RawCheck) -> Option<RegionCheck> {
        let url = match c.url.parse::<http::Uri>() {
            Ok(u) if matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some() => u,
            _ => {
                self.err(
                    &format!("{p}.url"),
                    format!("`{}` is not an http(s) URL", c.url),
                    "write a URL such as `https://api.fra.example:6443/readyz`",
                );
                return None;
            }
        };
        let interval = self.positive_duration(
            &format!("{p}.interval"),
            c.interval.as_ref(),
            duration(defaults::CHECK_INTERVAL),
        );
        let timeout = self.positive_duration(
            &format!("{p}.timeout"),
            c.timeout.as_ref(),
            duration(defaults::CHECK_TIMEOUT).min(interval),
        );
        if timeout > interval {
            self.err(
                &format!("{p}.timeout"),
                format!("timeout {timeout:?} is longer than the interval {interval:?}"),
                "make the timeout at most the interval",
            );
        }
        Some(RegionCheck {
            name: c.name.clone(),
            interval,
            timeout,
            rise: self.nonzero(&format!("{p}.rise"), c.rise, defaults::RISE_FALL),
            fall: self.nonzero(&format!("{p}.fall"), c.fall, defaults::RISE_FALL),
            expect_status: self.statuses(&format!("{p}.expect_status"), c.expect_status.as_deref()),
            required: c.required.unwrap_or(defaults::CHECK_REQUIRED),
            tls: self.probe_tls(
                p,
                &TlsFields::of_check(c),
                url.scheme_str() == Some("https"),
                "the URL is plaintext `http://`",
            ),
            bearer_token_file: self.bearer_token_file(
                &format!("{p}.bearer_token_file"),
                c.bearer_token_file.as_ref(),
                url.scheme_str() == Some("https"),
            ),
            url,
        })
    }

    fn otlp(&mut self, o: &RawOtlp) -> OtlpExport {
        let endpoint = match o.endpoint.parse::<http::Uri>() {
            Ok(u) if u.scheme_str() == Some("http") && u.host().is_some() && u.path() == "/" => {
                self.err(
                    "server.otlp.endpoint",
                    format!("`{}` has no path: spans would be posted to `/`", o.endpoint),
                    format!(
                        "write the traces URL, `{}/v1/traces` for a collector's OTLP/HTTP receiver",
                        o.endpoint.trim_end_matches('/')
                    ),
                );
                u
            }
            Ok(u) if u.scheme_str() == Some("http") && u.host().is_some() => u,
            Ok(u) if u.scheme_str() == Some("https") => {
                self.err(
                    "server.otlp.endpoint",
                    "OTLP export over HTTPS is not supported",
                    "export to a collector on the same host or network over `http://` (an OpenTelemetry Collector forwards over TLS), e.g. `http://127.0.0.1:4318/v1/traces`",
                );
                u
            }
            _ => {
                self.err(
                    "server.otlp.endpoint",
                    format!("`{}` is not an http URL", o.endpoint),
                    "write the collector's OTLP/HTTP traces URL, e.g. `http://127.0.0.1:4318/v1/traces`",
                );
                http::Uri::from_static("http://127.0.0.1:4318/v1/traces")
            }
        };
        let positive = |v: &mut Self, field: &str, n: Option<u32>, default: u32, max: u32| match n {
            None => default,
            Some(n) if (1..=max).contains(&n) => n,
            Some(n) => {
                v.err(
                    &format!("server.otlp.{field}"),
                    format!("{n} is out of range"),
                    format!("use a number from 1 to {max} (default {default})"),
                );
                default
            }
        };
        OtlpExport {
            endpoint,
            service_name: match o.service_name.as_deref() {
                None => defaults::OTLP_SERVICE_NAME.into(),
                Some("") => {
                    self.err(
                        "server.otlp.service_name",
                        "empty service name",
                        "name the service, e.g. `edge-gateway`",
                    );
                    defaults::OTLP_SERVICE_NAME.into()
                }
                Some(name) => name.into(),
            },
            max_batch: positive(
                self,
                "max_batch",
                o.max_batch,
                defaults::OTLP_MAX_BATCH,
                100_000,
            ),
            queue: positive(self, "queue", o.queue, defaults::OTLP_QUEUE, 10_000_000),
            interval: self.positive_duration(
                "server.otlp.interval",
                o.interval.as_ref(),
                duration(defaults::OTLP_INTERVAL),
            ),
            timeout: self.positive_duration(
                "server.otlp.timeout",
                o.timeout.as_ref(),
                duration(defaults::OTLP_TIMEOUT),
            ),
        }
    }

    /// The TLS settings of an endpoint probe at `p`: its own, with the region's server name and
    /// `verify: false` where it sets none.
    fn endpoint_probe_tls(
        &mut self,
        p: &str,
        fields: &TlsFields<'_>,
        upstream_tls: Option<&UpstreamTls>,
    ) -> ProbeTls {
        let mut tls = self.probe_tls(
            p,
            fields,
            upstream_tls.is_some(),
            "the region's endpoints speak plaintext",
        );
        if let Some(up) = upstream_tls {
            tls.sni = tls.sni.or_else(|| Some(up.sni.clone()));
            tls.insecure_skip_verify |= !up.verify;
        }
        tls
    }

    /// Validates the HTTPS settings of a probe or check at `p`; `https` says whether the
    /// target speaks TLS at all (`plain` says why not, for the error).
    fn probe_tls(&mut self, p: &str, f: &TlsFields<'_>, https: bool, plain: &str) -> ProbeTls {
        if !https {
            for (name, set) in [
                ("ca_file", f.ca_file.is_some()),
                ("client_cert", f.client_cert.is_some()),
                ("client_key", f.client_key.is_some()),
                ("sni", f.sni.is_some()),
                ("insecure_skip_verify", f.insecure_skip_verify.is_some()),
            ] {
                if set {
                    self.err(
                        &format!("{p}.{name}"),
                        format!("`{name}` is a TLS setting, but {plain}"),
                        "use an `https://` URL (for endpoint probes: set `regions.<name>.tls`), or remove it",
                    );
                }
            }
            return ProbeTls::default();
        }
        let ca = f.ca_file.and_then(|name| {
            let field = format!("{p}.ca_file");
            let (path, pem) = self.read_file(&field, name, "CA file")?;
            if rustls_pemfile::certs(&mut pem.as_slice()).filter(|c| c.is_ok()).count() == 0 {
                self.err(
                    &field,
                    format!("`{}` holds no PEM certificate", path.display()),
                    "point `ca_file` at a PEM bundle with `-----BEGIN CERTIFICATE-----` blocks (the cluster CA, e.g. from a kubeconfig's `certificate-authority-data`, base64-decoded)",
                );
                return None;
            }
            Some(PemFile { path, pem })
        });
        let client_auth = match (f.client_cert, f.client_key) {
            (None, None) => None,
            (Some(_), None) | (None, Some(_)) => {
                let (have, missing) = if f.client_cert.is_some() {
                    ("client_cert", "client_key")
                } else {
                    ("client_key", "client_cert")
                };
                self.err(
                    &format!("{p}.{have}"),
                    format!("`{have}` without `{missing}`"),
                    "set both `client_cert` and `client_key`, or neither",
                );
                None
            }
            (Some(cert), Some(key)) => {
                let cert_field = format!("{p}.client_cert");
                let key_field = format!("{p}.client_key");
                let cert = self.read_file(&cert_field, cert, "client certificate file");
                let key = self.read_file(&key_field, key, "client key file");
                match (cert, key) {
                    (Some((cert_path, cert_pem)), Some((key_path, key_pem))) => {
                        let mut ok = true;
                        if rustls_pemfile::certs(&mut cert_pem.as_slice())
                            .filter(|c| c.is_ok())
                            .count()
                            == 0
                        {
                            self.err(
                                &cert_field,
                                format!("`{}` holds no PEM certificate", cert_path.display()),
                                "point `client_cert` at a PEM file with `-----BEGIN CERTIFICATE-----` blocks",
                            );
                            ok = false;
                        }
                        if !matches!(
                            rustls_pemfile::private_key(&mut key_pem.as_slice()),
                            Ok(Some(_))
                        ) {
                            self.err(
                                &key_field,
                                format!("`{}` holds no PEM private key", key_path.display()),
                                "point `client_key` at a PEM PKCS#8, PKCS#1 or SEC1 private key",
                            );
                            ok = false;
                        }
                        ok.then_some(ClientAuth {
                            cert: PemFile {
                                path: cert_path,
                                pem: cert_pem,
                            },
                            key: PemFile {
                                path: key_path,
                                pem: key_pem,
                            },
                        })
                    }
                    _ => None,
                }
            }
        };
        let sni = f.sni.and_then(|name| {
            if name.is_empty() || name.contains(|c: char| c.is_whitespace() || c == '/') {
                self.err(
                    &format!("{p}.sni"),
                    format!("`{name}` is not a server name"),
                    "write a DNS name such as `api.fra.example` (or an IP address)",
                );
                return None;
            }
            Some(name.clone())
        });
        let insecure_skip_verify = f
            .insecure_skip_verify
            .unwrap_or(defaults::INSECURE_SKIP_VERIFY);
        if insecure_skip_verify {
            self.warn(
                &format!("{p}.insecure_skip_verify"),
                "INSECURE: the server certificate is not verified; anyone on the path can impersonate this target and its health decides where traffic goes",
                "set `ca_file` to the server's CA bundle (and `sni` if its certificate names another host), then remove `insecure_skip_verify`",
            );
        }
        ProbeTls {
            ca,
            client_auth,
            sni,
            insecure_skip_verify,
        }
    }

    /// Validates a bearer token file: readable and not empty now. It is not part of the config
    /// hash: probes re-read it, so a rotation is not a config change.
    fn bearer_token_file(
        &mut self,
        field: &str,
        name: Option<&String>,
        https: bool,
    ) -> Option<PathBuf> {
        let full = self.base_dir.join(name?);
        match std::fs::read(&full) {
            Ok(bytes) if String::from_utf8_lossy(&bytes).trim().is_empty() => {
                self.err(
                    field,
                    format!("the bearer token file `{}` is empty", full.display()),
                    "write the token into it (a service-account token, for a Kubernetes API server)",
                );
            }
            Ok(_) => {}
            Err(e) => {
                self.err(
                    field,
                    format!("cannot read bearer token file `{}`: {e}", full.display()),
                    "check the path (relative paths start at the config file's directory) and the file's permissions",
                );
            }
        }
        if !https {
            self.warn(
                field,
                "the bearer token is sent over plaintext HTTP",
                "use an `https://` URL (or TLS to the region's endpoints)",
            );
        }
        Some(full)
    }

    fn passive(&mut self, p: &str, raw: Option<&RawPassive>) -> PassiveSettings {
        let ejection = self.positive_duration(
            &format!("{p}.ejection"),
            raw.and_then(|r| r.ejection.as_ref()),
            duration(defaults::EJECTION),
        );
        let max_ejection = self.positive_duration(
            &format!("{p}.max_ejection"),
            raw.and_then(|r| r.max_ejection.as_ref()),
            duration(defaults::MAX_EJECTION).max(ejection),
        );
        if max_ejection < ejection {
            self.err(
                &format!("{p}.max_ejection"),
                "shorter than `ejection`",
                "make `max_ejection` at least `ejection`",
            );
        }
        PassiveSettings {
            consecutive_failures: self.nonzero(
                &format!("{p}.consecutive_failures"),
                raw.and_then(|r| r.consecutive_failures),
                defaults::PASSIVE_CONSECUTIVE_FAILURES,
            ),
            ejection,
            max_ejection,
            max_ejected_permille: self.percent(
                &format!("{p}.max_ejected"),
                raw.and_then(|r| r.max_ejected.as_ref()),
                crate::values::parse_percent_permille(defaults::MAX_EJECTED).unwrap_or(500),
                1000,
            ),
            latency: self.latency_ejection(
                &format!("{p}.latency"),
                raw.and_then(|r| r.latency.as_ref()),
            ),
        }
    }

    fn latency_ejection(
        &mut self,
        p: &str,
        raw: Option<&RawLatencyEjection>,
    ) -> Option<LatencyEjection> {
        let factor = raw
            .and_then(|r| r.factor)
            .unwrap_or(defaults::LATENCY_FACTOR);
        let factor_permille = if factor.is_finite() && (1.5..=1000.0).contains(&factor) {
            (factor * 1000.0).round() as u32
        } else {
            self.err(
                &format!("{p}.factor"),
                format!("`{factor}` is out of range"),
                "use a factor from 1.5 to 1000, such as 3",
            );
            (defaults::LATENCY_FACTOR * 1000.0) as u32
        };
        let min_samples = self.nonzero(
            &format!("{p}.min_samples"),
            raw.and_then(|r| r.min_samples),
            defaults::LATENCY_MIN_SAMPLES,
        );
        let min_latency = self.positive_duration(
            &format!("{p}.min_latency"),
            raw.and_then(|r| r.min_latency.as_ref()),
            duration(defaults::LATENCY_MIN),
        );
        raw.and_then(|r| r.enabled)
            .unwrap_or(defaults::LATENCY_EJECTION)
            .then_some(LatencyEjection {
                factor_permille,
                min_samples,
                min_latency,
            })
    }

    /// An optional limit that must be positive when given.
    fn positive_limit(&mut self, path: &str, value: Option<u32>) -> Option<u32> {
        if value == Some(0) {
            self.err(
                path,
                "0 would refuse every request",
                "use a positive number, or leave it out for no limit",
            );
            return None;
        }
        value
    }

    fn sticky_keys(&mut self, raw: &[RawStickyKey]) -> Vec<StickyKey> {
        let mut ids = HashSet::new();
        let mut out = Vec::new();
        for (i, k) in raw.iter().enumerate() {
            let p = format!("sticky_keys[{i}]");
            let id_ok = !k.id.is_empty()
                && k.id.len() <= 16
                && k.id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !id_ok {
                self.err(
                    &format!("{p}.id"),
                    format!("`{}` is not a valid key id", k.id),
                    "use 1-16 letters, digits, `-` or `_`, e.g. `k1`",
                );
            }
            if !ids.insert(k.id.clone()) {
                self.err(
                    &format!("{p}.id"),
                    format!("duplicate key id `{}`", k.id),
                    "give each key a unique id",
                );
            }
            if let Some((path, secret)) =
                self.read_file(&format!("{p}.secret_file"), &k.secret_file, "secret file")
            {
                let secret = trim_ascii_whitespace(secret);
                if secret.len() < 32 {
                    self.err(&format!("{p}.secret_file"), format!("the secret in `{}` is {} bytes; at least 32 are needed", path.display(), secret.len()), "write a longer secret, e.g. `head -c 48 /dev/urandom | base64 > sticky-k1.key`");
                }
                out.push(StickyKey {
                    id: k.id.clone(),
                    secret,
                });
            }
        }
        out
    }

    fn routes(&mut self, raw: &[RawRoute], regions: &[Region], have_keys: bool) -> Vec<Route> {
        if raw.is_empty() {
            self.err(
                "routes",
                "no routes",
                "add a route, e.g. `- { name: all, regions: [fra] }`",
            );
        }
        let known: HashSet<&str> = regions.iter().map(|r| r.name.as_str()).collect();
        let mut names = HashSet::new();
        let mut matches: HashMap<(HostPattern, String), usize> = HashMap::new();
        let mut out = Vec::new();
        for (i, r) in raw.iter().enumerate() {
            let p = format!("routes[{i}]");
            if !is_simple_name(&r.name) {
                self.err(
                    &format!("{p}.name"),
                    format!("`{}` is not a valid route name", r.name),
                    "use lowercase letters, digits and `-`, starting with a letter",
                );
            }
            if !names.insert(r.name.clone()) {
                self.err(
                    &format!("{p}.name"),
                    format!("duplicate route name `{}`", r.name),
                    "give each route a unique name",
                );
            }
            let host = self.host_pattern(
                &format!("{p}.match.host"),
                r.match_.as_ref().and_then(|m| m.host.as_deref()),
            );
            let path_prefix = r
                .match_
                .as_ref()
                .and_then(|m| m.path_prefix.clone())
                .unwrap_or_else(|| defaults::PATH.into());
            if !path_prefix.starts_with('/') {
                self.err(
                    &format!("{p}.match.path_prefix"),
                    format!("`{path_prefix}` does not start with `/`"),
                    "write a prefix such as `/` or `/api/`",
                );
            }
            if let Some(other) = matches.insert((host.clone(), path_prefix.clone()), i) {
                self.err(
                    &format!("{p}.match"),
                    format!(
                        "same host `{host}` and path prefix `{path_prefix}` as routes[{other}]"
                    ),
                    "change the host or path prefix, or merge the two routes",
                );
            }

            let mut tiers = Vec::new();
            let mut in_tiers: Vec<(RegionName, String)> = Vec::new();
            if r.regions.is_empty() {
                self.err(
                    &format!("{p}.regions"),
                    "no regions",
                    "list regions in priority order, e.g. `[fra, ber]`",
                );
            }
            for (t, tier) in r.regions.iter().enumerate() {
                let tp = format!("{p}.regions[{t}]");
                let entries: Vec<(String, String, u32)> = match tier {
                    RawTier::Single(name) => vec![(name.clone(), tp.clone(), 1)],
                    RawTier::Weighted(map) => {
                        if map.is_empty() {
                            self.err(
                                &tp,
                                "empty tier",
                                "write `{fra: 70, ber: 30}` or a single region name",
                            );
                        }
                        map.iter()
                            .map(|(n, w)| (n.clone(), format!("{tp}.{n}"), *w))
                            .collect()
                    }
                };
                let mut tier_regions = Vec::new();
                for (name, rp, weight) in entries {
                    if !known.contains(name.as_str()) {
                        self.err(
                            &rp,
                            format!("unknown region `{name}`"),
                            format!(
                                "use one of the regions defined under `regions`: {}",
                                join_sorted(&known)
                            ),
                        );
                        continue;
                    }
                    let Ok(region) = RegionName::try_new(&name) else {
                        continue;
                    };
                    if in_tiers.iter().any(|(n, _)| n == &region) {
                        self.err(
                            &rp,
                            format!("region `{name}` appears more than once"),
                            "list each region in one tier only",
                        );
                        continue;
                    }
                    let Some(weight) = NonZeroU32::new(weight) else {
                        self.err(
                            &rp,
                            "weight 0",
                            "use a weight of 1 or more, or remove the region from the tier",
                        );
                        continue;
                    };
                    in_tiers.push((region.clone(), rp));
                    tier_regions.push((region, weight));
                }
                if !tier_regions.is_empty() {
                    tiers.push(Tier {
                        regions: tier_regions,
                    });
                }
            }
            let allowed_regions = match &r.allowed_regions {
                None => in_tiers.iter().map(|(n, _)| n.clone()).collect(),
                Some(list) => {
                    let mut allowed = Vec::new();
                    for (a, name) in list.iter().enumerate() {
                        let ap = format!("{p}.allowed_regions[{a}]");
                        if !known.contains(name.as_str()) {
                            self.err(
                                &ap,
                                format!("unknown region `{name}`"),
                                format!("use one of: {}", join_sorted(&known)),
                            );
                        } else if let Ok(n) = RegionName::try_new(name) {
                            allowed.push(n);
                        }
                    }
                    for (name, rp) in &in_tiers {
                        if !allowed.contains(name) {
                            self.err(rp, format!("region `{name}` is not in this route's `allowed_regions`"), format!("add `{name}` to `allowed_regions` if the data may be served there, or remove it from `regions`"));
                        }
                    }
                    allowed
                }
            };
            let retry = self.retry(&format!("{p}.retry"), r.retry.as_ref());
            let timeouts = self.timeouts(&format!("{p}.timeouts"), r.timeouts.as_ref());
            let failback_hold_down = self.duration(
                &format!("{p}.failback.hold_down"),
                r.failback.as_ref().and_then(|f| f.hold_down.as_ref()),
                duration(defaults::HOLD_DOWN),
            );
            let sticky = r.sticky.as_ref().map(|s| {
                if !have_keys {
                    self.err(
                        &format!("{p}.sticky"),
                        "sticky sessions need signing keys but `sticky_keys` is empty",
                        "add `sticky_keys: [{ id: k1, secret_file: sticky-k1.key }]`",
                    );
                }
                self.sticky(&format!("{p}.sticky"), s)
            });
            out.push(Route {
                name: Arc::from(r.name.as_str()),
                host,
                path_prefix,
                tiers,
                allowed_regions,
                failback_hold_down,
                retry,
                timeouts,
                sticky,
                on_all_down: match r.on_all_down.as_deref() {
                    None | Some("fail_open") => OnAllDown::FailOpen,
                    Some("reject") => OnAllDown::Reject,
                    Some(other) => {
                        self.err(
                            &format!("{p}.on_all_down"),
                            format!("unknown value `{other}`"),
                            "use `fail_open` or `reject`",
                        );
                        OnAllDown::FailOpen
                    }
                },
                max_in_flight: self.positive_limit(&format!("{p}.max_in_flight"), r.max_in_flight),
                max_body_bytes: match r.max_body_bytes {
                    None => Some(defaults::MAX_BODY_BYTES),
                    Some(0) => None,
                    Some(n) => Some(n),
                },
                max_grpc_stream_bytes: r.max_body_bytes.filter(|n| *n > 0),
                max_grpc_message_bytes: match r.max_grpc_message_bytes {
                    None => Some(defaults::MAX_GRPC_MESSAGE_BYTES),
                    Some(0) => None,
                    Some(n) => Some(n),
                },
                degraded: r.degraded.as_ref().map(|d| Degraded {
                    ttfb: self.positive_duration(
                        &format!("{p}.degraded.ttfb"),
                        Some(&d.ttfb),
                        Duration::from_millis(300),
                    ),
                    for_: self.positive_duration(
                        &format!("{p}.degraded.for"),
                        d.for_.as_ref(),
                        duration(defaults::DEGRADED_FOR),
                    ),
                    recover_after: self.positive_duration(
                        &format!("{p}.degraded.recover_after"),
                        d.recover_after.as_ref(),
                        duration(defaults::DEGRADED_RECOVER),
                    ),
                }),
            });
        }
        out
    }

    fn host_pattern(&mut self, path: &str, raw: Option<&str>) -> HostPattern {
        let Some(host) = raw else {
            return HostPattern::Any;
        };
        let host = host.to_ascii_lowercase();
        if host == "*" {
            return HostPattern::Any;
        }
        let (wild, name) = match host.strip_prefix("*.") {
            Some(rest) => (true, rest.to_string()),
            None => (false, host.clone()),
        };
        let valid = !name.is_empty()
            && name.split('.').all(|l| {
                !l.is_empty()
                    && l.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            });
        if !valid {
            self.err(
                path,
                format!("`{host}` is not a host name or `*.` wildcard"),
                "write `api.example.com` or `*.example.com` (no port, no scheme)",
            );
            return HostPattern::Any;
        }
        if wild {
            HostPattern::Wildcard(name)
        } else {
            HostPattern::Exact(name)
        }
    }

    fn retry(&mut self, p: &str, raw: Option<&RawRetry>) -> RetryPolicy {
        let attempts = raw
            .and_then(|r| r.attempts)
            .unwrap_or(defaults::RETRY_ATTEMPTS);
        if attempts > 10 {
            self.err(
                &format!("{p}.attempts"),
                format!("{attempts} retries would storm a sick fleet"),
                "use at most 10",
            );
        }
        let mut policy = RetryPolicy {
            attempts: attempts.min(10),
            on_connect: true,
            on_reset: true,
            on_timeout: false,
            on_status: BTreeSet::from([502, 503, 504]),
            budget_permille: self.percent(
                &format!("{p}.budget"),
                raw.and_then(|r| r.budget.as_ref()),
                defaults::RETRY_BUDGET_PERMILLE,
                1000,
            ),
            early: self.early_retry(&format!("{p}.early"), raw.and_then(|r| r.early.as_ref())),
        };
        if let Some(on) = raw.and_then(|r| r.on.as_ref()) {
            policy.on_connect = false;
            policy.on_reset = false;
            policy.on_status.clear();
            for (i, item) in on.iter().enumerate() {
                match item {
                    RawRetryOn::Status(s) if (500..=599).contains(s) => {
                        policy.on_status.insert(*s);
                    }
                    RawRetryOn::Status(s) => self.err(
                        &format!("{p}.on[{i}]"),
                        format!("{s} is not a 5xx status"),
                        "retry only on 5xx statuses such as 502, 503, 504",
                    ),
                    RawRetryOn::Keyword(k) => match k.as_str() {
                        "connect" => policy.on_connect = true,
                        "reset" => policy.on_reset = true,
                        "timeout" => policy.on_timeout = true,
                        other => self.err(
                            &format!("{p}.on[{i}]"),
                            format!("unknown retry condition `{other}`"),
                            "use `connect`, `reset`, `timeout` or a 5xx status",
                        ),
                    },
                }
            }
        }
        policy
    }

    fn early_retry(&mut self, p: &str, raw: Option<&RawEarlyRetry>) -> Option<EarlyRetry> {
        let factor = raw.and_then(|r| r.factor).unwrap_or(defaults::EARLY_FACTOR);
        let factor_permille = if factor.is_finite() && (1.0..=100.0).contains(&factor) {
            (factor * 1000.0).round() as u32
        } else {
            self.err(
                &format!("{p}.factor"),
                format!("`{factor}` is out of range"),
                "use a factor from 1 to 100, such as 3",
            );
            (defaults::EARLY_FACTOR * 1000.0) as u32
        };
        let min_delay = self.positive_duration(
            &format!("{p}.min_delay"),
            raw.and_then(|r| r.min_delay.as_ref()),
            duration(defaults::EARLY_MIN),
        );
        let max_delay = self.positive_duration(
            &format!("{p}.max_delay"),
            raw.and_then(|r| r.max_delay.as_ref()),
            duration(defaults::EARLY_MAX),
        );
        if max_delay < min_delay {
            self.err(
                &format!("{p}.max_delay"),
                format!("{max_delay:?} is shorter than min_delay ({min_delay:?})"),
                "make max_delay at least min_delay (equal values give a fixed deadline)",
            );
        }
        let budget_permille = self.percent(
            &format!("{p}.budget"),
            raw.and_then(|r| r.budget.as_ref()),
            defaults::EARLY_BUDGET_PERMILLE,
            1000,
        );
        raw.and_then(|r| r.enabled)
            .unwrap_or(defaults::EARLY_RETRY)
            .then_some(EarlyRetry {
                factor_permille,
                min_delay,
                max_delay,
                budget_permille,
                hedge: raw.and_then(|r| r.hedge).unwrap_or(defaults::EARLY_HEDGE),
            })
    }

    fn timeouts(&mut self, p: &str, raw: Option<&RawTimeouts>) -> RouteTimeouts {
        let request = match raw.and_then(|r| r.request.as_ref()) {
            Some(text) if text.trim() == "off" => None,
            value => Some(self.positive_duration(
                &format!("{p}.request"),
                value,
                duration(defaults::REQUEST_TIMEOUT),
            )),
        };
        RouteTimeouts {
            connect: self.positive_duration(
                &format!("{p}.connect"),
                raw.and_then(|r| r.connect.as_ref()),
                duration(defaults::CONNECT_TIMEOUT),
            ),
            request,
            read: self.positive_duration(
                &format!("{p}.read"),
                raw.and_then(|r| r.read.as_ref()),
                request.unwrap_or(duration(defaults::REQUEST_TIMEOUT)),
            ),
            idle: self.positive_duration(
                &format!("{p}.idle"),
                raw.and_then(|r| r.idle.as_ref()),
                duration(defaults::IDLE_TIMEOUT),
            ),
        }
    }

    fn sticky(&mut self, p: &str, raw: &RawSticky) -> StickySettings {
        let cookie = raw
            .cookie
            .clone()
            .unwrap_or_else(|| defaults::STICKY_COOKIE.into());
        if cookie.is_empty()
            || !cookie
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        {
            self.err(
                &format!("{p}.cookie"),
                format!("`{cookie}` is not a valid cookie name"),
                "use letters, digits, `_`, `-` or `.`",
            );
        }
        let on_failback = match raw.on_failback.as_deref() {
            None | Some("stay") => OnFailback::Stay,
            Some("return") => OnFailback::Return,
            Some(other) => {
                self.err(
                    &format!("{p}.on_failback"),
                    format!("unknown value `{other}`"),
                    "use `stay` or `return`",
                );
                OnFailback::Stay
            }
        };
        let same_site = match raw
            .same_site
            .as_deref()
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            None | Some("lax") => SameSite::Lax,
            Some("strict") => SameSite::Strict,
            Some("none") => SameSite::None,
            Some(other) => {
                self.err(
                    &format!("{p}.same_site"),
                    format!("unknown value `{other}`"),
                    "use `lax`, `strict` or `none`",
                );
                SameSite::Lax
            }
        };
        let header = raw.header.as_ref().map(|h| h.to_ascii_lowercase());
        if let Some(h) = &header {
            if http::HeaderName::from_bytes(h.as_bytes()).is_err() {
                self.err(
                    &format!("{p}.header"),
                    format!("`{h}` is not a valid header name"),
                    "use a header name such as `x-session-id`",
                );
            }
        }
        StickySettings {
            cookie,
            ttl: self.positive_duration(
                &format!("{p}.ttl"),
                raw.ttl.as_ref(),
                duration(defaults::STICKY_TTL),
            ),
            on_failback,
            header,
            path: raw.path.clone().unwrap_or_else(|| defaults::PATH.into()),
            domain: raw.domain.clone(),
            secure: raw.secure.unwrap_or(defaults::STICKY_SECURE),
            http_only: raw.http_only.unwrap_or(defaults::STICKY_SECURE),
            same_site,
        }
    }
}

/// Two bind addresses conflict when they share a port and one IP, or one is unspecified.
fn addrs_overlap(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port() && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

fn join_sorted(names: &HashSet<&str>) -> String {
    let mut v: Vec<&str> = names.iter().copied().collect();
    v.sort_unstable();
    v.iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn trim_ascii_whitespace(mut bytes: Vec<u8>) -> Vec<u8> {
    while bytes.last().is_some_and(|b| b.is_ascii_whitespace()) {
        bytes.pop();
    }
    bytes
}

/// The HTTPS settings that region checks and HTTP probes share, borrowed from either raw type.
struct TlsFields<'a> {
    ca_file: Option<&'a String>,
    client_cert: Option<&'a String>,
    client_key: Option<&'a String>,
    sni: Option<&'a String>,
    insecure_skip_verify: Option<bool>,
}

impl<'a> TlsFields<'a> {
    fn of_check(c: &'a RawCheck) -> Self {
        Self {
            ca_file: c.ca_file.as_ref(),
            client_cert: c.client_cert.as_ref(),
            client_key: c.client_key.as_ref(),
            sni: c.sni.as_ref(),
            insecure_skip_verify: c.insecure_skip_verify,
        }
    }

    fn of_probe(h: &'a RawHttpProbe) -> Self {
        Self {
            ca_file: h.ca_file.as_ref(),
            client_cert: h.client_cert.as_ref(),
            client_key: h.client_key.as_ref(),
            sni: h.sni.as_ref(),
            insecure_skip_verify: h.insecure_skip_verify,
        }
    }

    fn of_grpc(g: &'a RawGrpcProbe) -> Self {
        Self {
            ca_file: g.ca_file.as_ref(),
            client_cert: g.client_cert.as_ref(),
            client_key: g.client_key.as_ref(),
            sni: g.sni.as_ref(),
            insecure_skip_verify: g.insecure_skip_verify,
        }
    }
}
