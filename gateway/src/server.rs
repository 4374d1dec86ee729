//! Assembles a Pingora server from a validated config: the proxy listeners, the control
//! service (health monitoring, failover, reload; see [`crate::control::app`]) and the admin API.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use gateway_config::GatewayConfig;
use gateway_health::{HealthHub, HealthMonitor};
use pingora::apps::HttpServerOptions;
use pingora::listeners::tls::TlsSettings;
use pingora::listeners::ListenerConfig;
use pingora::protocols::l4::stream::L4BufferSettings;
use pingora::server::configuration::ServerConf;
use pingora::server::Server;
use pingora::services::background::background_service;

use crate::control::app::{App, ControlService};
use crate::control::controller::FailoverHandle;
use crate::control::reload::Reloader;
use crate::operator::admin::AdminService;
use crate::proxy::GatewayProxy;
use crate::routing::admission::{Connections, ProcessLimit};
use crate::routing::failover::FailoverBook;
use crate::routing::snapshot::RoutingSnapshot;
use crate::routing::tls::{Certificates, SniResolver, TlsError};

/// Why the server could not be assembled.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listener's certificates could not be loaded.
    #[error("listener `{listener}`: {source}")]
    Tls {
        /// Listener name.
        listener: String,
        /// The certificate problem.
        #[source]
        source: TlsError,
    },
    /// Pingora refused the TLS settings.
    #[error("listener `{listener}`: {reason}")]
    Listener {
        /// Listener name.
        listener: String,
        /// Pingora's reason.
        reason: String,
    },
}

/// Process options that are not part of the routing config.
#[derive(Debug, Clone, Default)]
pub struct ServerOptions {
    /// Worker threads; overrides `server.threads` from the config.
    pub threads: Option<usize>,
    /// Take the listening sockets over from a running gateway (binary upgrade): start this
    /// process with `upgrade`, then send SIGQUIT to the old one.
    pub upgrade: bool,
    /// Unix socket used to hand listening sockets over during an upgrade (default
    /// `/tmp/gateway-upgrade-<admin port>.sock`).
    pub upgrade_sock: Option<std::path::PathBuf>,
}

/// Response bytes one HTTP/2 stream to a client may have queued (see `build_server`).
const H2_SEND_BUFFER: usize = 64 * 1024;

/// Builds the Pingora server for `config`. Call `run` on the result to serve.
pub fn build_server(config: GatewayConfig, options: &ServerOptions) -> Result<Server, StartError> {
    let threads = options
        .threads
        .or(config.server.threads)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let conf = ServerConf {
        threads,
        upstream_keepalive_pool_size: config.server.upstream_keepalive_pool,
        grace_period_seconds: Some(config.server.grace_period.as_secs()),
        graceful_shutdown_timeout_seconds: Some(config.server.grace_period.as_secs().max(1)),
        upgrade_sock: options
            .upgrade_sock
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| format!("/tmp/gateway-upgrade-{}.sock", config.admin.bind.port())),
        // One worker has no one to steal from: it runs Tokio's current-thread scheduler, which
        // skips the multi-thread one's per-batch tuning (clock reads, a `powf`) and its
        // cross-thread task states: about 1 200 fewer instructions per request
        // (`scripts/callgrind.sh`). More workers steal, so that one busy connection cannot hold
        // the others back, and share one I/O driver (Pingora's no-steal mode gives each thread
        // its own, and an upstream connection pooled by one thread is then driven by another's).
        work_stealing: threads > 1,
        ..ServerConf::default()
    };
    let opt = pingora::server::configuration::Opt {
        upgrade: options.upgrade,
        ..Default::default()
    };
    let mut server = Server::new_with_opt_and_conf(opt, conf);
    server.bootstrap();
    // Nothing here asks a stream how long its reads waited: not measuring it saves two clock
    // reads per proxied request (vendor patch 56).
    pingora::protocols::l4::stream::set_read_pending_time_tracked(false);
    raise_fd_limit(config.server.max_connections);
    crate::control::settings::apply(&config.server);

    let metrics = crate::telemetry::metrics::install();
    let config = Arc::new(config);
    let hub = HealthHub::new();
    let book = Arc::new(FailoverBook::default());
    let certificates = Certificates::load(&config).map_err(|e| StartError::Tls {
        listener: e.listener,
        source: e.source,
    })?;
    let snapshot = Arc::new(ArcSwap::from_pointee(RoutingSnapshot::build(
        config.clone(),
        hub.clone(),
        book,
        certificates,
    )));
    let monitor = HealthMonitor::new(hub);
    let limit = Arc::new(ProcessLimit::default());
    monitor.set_probe_observer(Arc::new(crate::telemetry::metrics::probe_finished));

    let connections = Arc::new(Connections::default());
    let mut app = pingora::proxy::http_proxy(
        &server.configuration,
        GatewayProxy::new(snapshot.clone(), limit.clone(), connections.clone()),
    );
    // h2c on plaintext listeners; Pingora turns it off on TLS streams where ALPN decides.
    let mut http_options = HttpServerOptions::default();
    http_options.h2c = true;
    app.server_options = Some(http_options);
    // Bounded streams per client connection: a client cannot open more work than this on one
    // connection (the rest wait on its side).
    let mut h2 = pingora::protocols::http::v2::server::H2Options::new();
    h2.max_concurrent_streams(config.server.client_h2_streams);
    // The same head limit as HTTP/1 (the h2 crate's default header list is 16 MiB).
    h2.max_header_list_size(config.server.limits.head_bytes);
    // What one stream may have queued for a client that does not take it: the rest waits in
    // the upstream (h2's default is 400 KiB per stream, times 100 streams). Receive windows
    // stay at the protocol's 64 KiB per stream and per connection.
    h2.max_send_buffer_size(H2_SEND_BUFFER);
    app.h2_options = Some(h2);
    let mut proxy = pingora::services::listening::Service::new("gateway proxy".to_string(), app);
    for listener in &config.listeners {
        let addr = listener.bind.to_string();
        match &listener.tls {
            // No read buffer under plaintext connections: Pingora's default is 64 KiB per
            // connection, idle or not, while the request head and body readers have their own
            // buffers, sized by need (`server.max_request_head_bytes`, `body_buffer_bytes`).
            None => proxy.add_listener(ListenerConfig::tcp(addr.clone()).l4_buffer(
                L4BufferSettings {
                    read: Some(0),
                    write: None,
                },
            )),
            Some(_) => {
                let resolver = Arc::new(SniResolver::new(&listener.name, snapshot.clone()));
                let mut settings = TlsSettings::with_callbacks(Box::new(
                    crate::routing::tls::KeepSni,
                ))
                .map_err(|e| StartError::Listener {
                    listener: listener.name.clone(),
                    reason: e.to_string(),
                })?;
                settings.set_cert_resolver(resolver);
                settings.enable_h2();
                // One TLS record (16 KiB) of read buffer, not Pingora's 64 KiB.
                proxy.add_listener(ListenerConfig::tcp(addr).tls(settings).l4_buffer(
                    L4BufferSettings {
                        read: Some(16 * 1024),
                        write: None,
                    },
                ));
            }
        }
    }
    let (failover, wakeups) = FailoverHandle::new();
    let reloader = Arc::new(Reloader::new(
        config.source.clone(),
        snapshot.clone(),
        monitor.clone(),
        failover.clone(),
    ));
    let app = App {
        snapshot: snapshot.clone(),
        monitor,
        reloader,
        failover,
        metrics,
        readiness: Arc::default(),
        limit,
        connections: connections.clone(),
        grace_period: config.server.grace_period,
    };
    server.add_service(proxy);
    // SIGTERM (and SIGQUIT after a hand-over): exit once every client connection is done
    // (kept-alive idle ones linger at most 1 s for a request already on its way), not after the
    // whole grace period; the grace period stays the upper bound.
    server.set_grace_period_end(async move {
        // A connection accepted just before the broadcast reaches `process_new` within
        // microseconds (plaintext) but after the accept loop stopped: let it be counted.
        tokio::time::sleep(Duration::from_millis(100)).await;
        connections.all_closed().await;
    });
    server.add_service(background_service(
        "control",
        ControlService::new(app.clone(), wakeups),
    ));
    server.add_service(background_service(
        "admin",
        AdminService::new(config.admin.bind, app),
    ));
    Ok(server)
}

/// Raises the soft file-descriptor limit to the hard one (as Go and nginx's
/// `worker_rlimit_nofile` do): each client connection may hold an upstream one too, and running
/// out of descriptors fails accepts and connects alike. Warns when even the hard limit is below
/// what `max_connections` needs.
fn raise_fd_limit(max_connections: u32) {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return;
    };
    let soft = match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
        Ok(()) => hard,
        Err(_) => soft,
    };
    // Two descriptors per client connection (client and upstream) and some for probes,
    // listeners and files.
    let needed = 2 * u64::from(max_connections) + 1024;
    if soft < needed {
        tracing::warn!(
            fd_limit = soft,
            needed,
            max_connections,
            "the file-descriptor limit (ulimit -n) is below what server.max_connections needs: raise it or lower max_connections"
        );
    }
}

#[cfg(test)]
mod tests {
    /// What every parked connection keeps of its socket (vendor patch 25): an address boxes a
    /// Unix path, so an IP address and the digest holding three of them stay small, and the
    /// L4 stream fits mimalloc's 384-byte size class (at 392 bytes it took 448).
    #[test]
    fn a_socket_address_and_a_connections_socket_digest_stay_small() {
        let addr = std::mem::size_of::<pingora::protocols::l4::socket::SocketAddr>();
        let digest = std::mem::size_of::<pingora::protocols::SocketDigest>();
        let stream = std::mem::size_of::<pingora::protocols::l4::stream::Stream>();
        assert!(addr <= 40, "SocketAddr is {addr} bytes");
        assert!(digest <= 160, "SocketDigest is {digest} bytes");
        assert!(stream <= 384, "the L4 stream is {stream} bytes");
    }

    /// The per-layer timing every HTTP/1 session keeps (vendor patch 40): a plaintext stream's
    /// holds its one entry in room for one (it had room for two), a TLS stream asks for room
    /// for its own entry below it, and the entry is the stream's own.
    #[tokio::test]
    async fn a_plaintext_streams_timing_digest_has_room_for_its_one_layer() {
        use pingora::protocols::l4::stream::Stream;
        use pingora::protocols::GetTimingDigest;
        let (_client, server) = tcp_pair().await;
        let stream = Stream::from(server);
        let digest = stream.get_timing_digest();
        assert_eq!(digest.len(), 1);
        assert_eq!(digest.capacity(), 1, "room for one layer");
        let timing = digest[0].as_ref().expect("the stream's timing");
        assert_eq!(timing.established_ts, stream.established_ts);
        let under_tls = stream.get_timing_digest_with_room(1);
        assert_eq!((under_tls.len(), under_tls.capacity()), (1, 2));
    }

    /// What every request and connection holds, in mimalloc's size classes (vendor patches
    /// 42 and 43): the peer the gateway makes for each attempt in the 448-byte class (632
    /// bytes before: 640), the HTTP/1 session in the 640 class (704 before: 768), Pingora's
    /// per-request `Session` without an inline cache or compression context (368 bytes
    /// before), the L4 stream of every connection in the 320 class (376 before: 384), its
    /// socket digest with its `Arc` in the 128 class (128 before, 160 with the `Arc`), a
    /// request head in the 320 class (368 before: 384). (The request future, 2 544 bytes in
    /// the 2.5 KiB class, has no name to measure here; `-Zprint-type-sizes` shows it, see
    /// `vendor/README.md`.)
    #[test]
    fn a_requests_peer_and_sessions_fit_their_allocator_classes() {
        use std::mem::size_of;
        assert!(size_of::<pingora::upstreams::peer::HttpPeer>() <= 448);
        assert!(size_of::<pingora::protocols::http::v1::server::HttpSession>() <= 640);
        assert!(size_of::<pingora::proxy::Session>() <= 136);
        // tokio's socket is 32 bytes in a release build and 40 in a debug one (where this
        // test runs): the stream is 320 bytes with a 32-byte socket.
        let socket = size_of::<tokio::net::TcpStream>();
        assert!(size_of::<pingora::protocols::l4::stream::Stream>() - socket <= 320 - 32);
        assert!(size_of::<pingora::protocols::SocketDigest>() + 16 <= 128);
        assert!(size_of::<pingora::http::RequestHeader>() <= 320);
    }

    /// The body bytes kept for a retry (vendor patch 43) are held in at most a quarter more
    /// room than their size while a body trickles in (doubling held up to twice it), come
    /// back whole, and the room never passes the buffer's limit.
    #[test]
    fn a_trickled_bodys_retry_copy_is_held_in_little_more_than_its_size() {
        use bytes::Bytes;
        use pingora::protocols::http::body_buffer::FixedBuffer;
        let mut buffer = FixedBuffer::new(64 * 1024);
        let mut sent = Vec::new();
        for i in 0..60usize {
            let chunk = vec![b'a' + (i % 26) as u8; 2 + (i * 7) % 33];
            sent.extend_from_slice(&chunk);
            buffer.write_to_buffer(&Bytes::from(chunk));
            let held = buffer.held_capacity();
            assert!(
                held <= sent.len() + sent.len() / 4,
                "{held} for {}",
                sent.len()
            );
        }
        assert_eq!(buffer.get_buffer().as_deref(), Some(&sent[..]));
        let mut fast = FixedBuffer::new(64 * 1024);
        fast.write_to_buffer(&Bytes::from(vec![1u8; 16 * 1024]));
        fast.write_to_buffer(&Bytes::from(vec![2u8; 48 * 1024]));
        assert_eq!(fast.held_capacity(), 64 * 1024);
        fast.write_to_buffer(&Bytes::from_static(b"x"));
        assert!(fast.is_truncated() && fast.get_buffer().is_none());
    }

    /// The request's cache (vendor patch 42) reads as a never-enabled one before and after it
    /// is made for a change, and what one request makes is not what another reads.
    #[test]
    fn a_requests_cache_is_made_at_its_first_change() {
        use pingora::proxy::LazyCache;
        let mut cache = LazyCache::default();
        assert!(!cache.enabled() && !cache.bypassing());
        assert!(format!("{:?}", cache.phase()).contains("NeverEnabled"));
        assert!(format!("{:?}", cache.phase()).starts_with("Disabled"));
        let made = std::ops::DerefMut::deref_mut(&mut cache);
        assert!(!made.enabled() && format!("{:?}", made.phase()).contains("NeverEnabled"));
        let other = LazyCache::default();
        assert!(format!("{:?}", other.phase()).contains("NeverEnabled"));
    }

    /// The upstream (de)compression context (vendor patch 42) is not there until asked for;
    /// its filters do nothing meanwhile, and the one made is disabled until a level is set.
    #[test]
    fn upstream_compression_is_made_when_asked_for_and_disabled_until_set() {
        use pingora::proxy::UpstreamCompression;
        let mut compression = UpstreamCompression::default();
        assert!(compression.get().is_none());
        let req = pingora::http::RequestHeader::build("GET", b"/", None).expect("a head");
        compression.request_filter(&req);
        assert!(compression.get().is_none(), "a filter does not make it");
        assert!(!compression.get_mut().is_enabled());
        compression.get_mut().adjust_level(5);
        assert!(compression.get().is_some_and(|c| c.is_enabled()));
    }

    /// A header map's presence filter (vendor patch 33, in `http`) answers "absent" only for
    /// names the map does not hold: whatever key form a lookup uses (a `HeaderName`, a
    /// lowercase or mixed-case `&str`, which is hashed a byte at a time), with more names
    /// than the filter has bits, after removals, `clear` and `drain`.
    #[test]
    fn a_header_maps_presence_filter_never_hides_a_name_it_holds() {
        use http::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_LENGTH, TRANSFER_ENCODING};

        let mut map = HeaderMap::new();
        let names: Vec<String> = (0..200).map(|i| format!("x-Field-{i}")).collect();
        for (i, spelled) in names.iter().enumerate() {
            let lower = spelled.to_ascii_lowercase();
            assert!(
                !map.contains_key(spelled.as_str()),
                "{spelled} before it was added"
            );
            let name = HeaderName::from_bytes(spelled.as_bytes()).expect("a valid name");
            map.append(name.clone(), HeaderValue::from(i));
            for (j, earlier) in names[..=i].iter().enumerate() {
                let want = Some(&HeaderValue::from(j));
                assert_eq!(map.get(earlier.as_str()), want, "{earlier} as spelled");
                assert_eq!(
                    map.get(earlier.to_ascii_uppercase()),
                    want,
                    "{earlier} upper"
                );
            }
            assert_eq!(
                map.get(&name),
                Some(&HeaderValue::from(i)),
                "{lower} by name"
            );
        }
        assert!(!map.contains_key(TRANSFER_ENCODING));

        map.insert(CONTENT_LENGTH, HeaderValue::from(7));
        assert_eq!(map.get("Content-Length"), Some(&HeaderValue::from(7)));
        assert!(map.remove("x-field-3").is_some());
        assert!(!map.contains_key("x-field-3"), "a removed name");
        assert!(map.contains_key("X-FIELD-4"), "its neighbour");
        map.append("x-field-3", HeaderValue::from(3));
        assert_eq!(map.get_all("X-Field-3").iter().count(), 1);

        map.clear();
        assert!(!map.contains_key("x-field-4") && !map.contains_key(CONTENT_LENGTH));
        map.insert("x-field-4", HeaderValue::from(4));
        assert!(map.contains_key("X-Field-4"));

        let drained = map.drain().count();
        assert_eq!(drained, 1);
        assert!(!map.contains_key("x-field-4"));
        map.append(TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        assert!(map.contains_key("transfer-encoding"));
        assert_eq!(
            map.clone().get(TRANSFER_ENCODING),
            map.get("Transfer-Encoding")
        );
    }

    /// Vendor patch 45: a header map of up to 24 entries is flat (no index; names compared one
    /// by one) and builds its index at the 25th. Against a plain model, through thousands of
    /// inserts, appends, removals and entry operations on 12, 24 and 40 names (flat maps, maps
    /// at the limit, maps that grow past it and then shrink), from every starting capacity:
    /// each name's values in order, the counts, clones and draining agree.
    #[test]
    fn a_flat_header_map_agrees_with_a_model_on_both_sides_of_its_limit() {
        use http::header::{Entry, HeaderMap, HeaderName, HeaderValue};

        let standard = [
            "host",
            "content-length",
            "accept",
            "accept-encoding",
            "user-agent",
            "cookie",
            "set-cookie",
            "connection",
            "te",
            "transfer-encoding",
            "upgrade",
            "via",
            "date",
            "etag",
            "server",
            "vary",
            "age",
            "location",
            "referer",
            "origin",
        ];
        let names: Vec<String> = standard
            .iter()
            .map(|n| n.to_string())
            .chain((0..20).map(|i| format!("x-field-{i}")))
            .collect();
        let mut seed: u64 = 0x2545_F491_4F6C_DD1D;
        let mut next = move |bound: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % bound as u64) as usize
        };
        type Model = Vec<(String, Vec<HeaderValue>)>;
        fn values(model: &Model, name: &str) -> Vec<HeaderValue> {
            model
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        }
        fn check(map: &HeaderMap, model: &Model, names: &[String], step: usize) {
            for name in names {
                let got: Vec<HeaderValue> = map.get_all(name.as_str()).iter().cloned().collect();
                assert_eq!(got, values(model, name), "{name} at step {step}");
            }
            assert_eq!(map.keys_len(), model.len(), "names at step {step}");
            let len: usize = model.iter().map(|(_, v)| v.len()).sum();
            assert_eq!(map.len(), len, "values at step {step}");
            assert_eq!(map.iter().count(), len, "iterated at step {step}");
        }

        // 12 and 24 names keep a map flat (removals included); 40 take it past the limit.
        for (pool, capacity) in [12, 24, 40]
            .into_iter()
            .flat_map(|pool| [0, 1, 10, 24, 25, 40].map(|capacity| (pool, capacity)))
        {
            let names = &names[..pool];
            let mut map = HeaderMap::with_capacity(capacity);
            let mut model: Model = Vec::new();
            for step in 0..3000 {
                let name = &names[next(names.len())];
                // Keys spelled lowercase, upper case and capitalized.
                let spelled = match next(3) {
                    0 => name.clone(),
                    1 => name.to_ascii_uppercase(),
                    _ => name[..1].to_ascii_uppercase() + &name[1..],
                };
                let value = HeaderValue::from(step);
                // Inserted and entered under a parsed name, looked up and removed as text.
                let key = HeaderName::from_bytes(spelled.as_bytes()).expect("valid");
                let held = model.iter().position(|(n, _)| n == name);
                // With 40 names: only grow at first (past the limit), then grow and shrink.
                let growing = pool == 40 && step < 1000;
                match next(if growing { 6 } else { 9 }) {
                    0 => {
                        let old = map.insert(key, value.clone());
                        assert_eq!(old, held.map(|i| model[i].1[0].clone()), "insert {step}");
                        match held {
                            Some(i) => model[i].1 = vec![value],
                            None => model.push((name.clone(), vec![value])),
                        }
                    }
                    1 | 2 => {
                        assert_eq!(
                            map.append(key, value.clone()),
                            held.is_some(),
                            "append {step}"
                        );
                        match held {
                            Some(i) => model[i].1.push(value),
                            None => model.push((name.clone(), vec![value])),
                        }
                    }
                    3 => match map.entry(key) {
                        Entry::Occupied(mut entry) => {
                            entry.append(value.clone());
                            model[held.expect("occupied means held")].1.push(value);
                        }
                        Entry::Vacant(entry) => {
                            assert!(held.is_none(), "vacant means not held, step {step}");
                            entry.insert_entry(value.clone()).append(value.clone());
                            model.push((name.clone(), vec![value.clone(), value]));
                        }
                    },
                    4 if step % 97 == 0 => {
                        let copy = map.clone();
                        check(&copy, &model, names, step);
                        assert!(copy == map, "a clone equals its original, step {step}");
                    }
                    4 | 5 => {
                        let got: Vec<HeaderValue> =
                            map.get_all(spelled.as_str()).iter().cloned().collect();
                        assert_eq!(got, values(&model, name), "get_all {step}");
                    }
                    6 | 7 => {
                        let removed = map.remove(spelled.as_str());
                        assert_eq!(
                            removed,
                            held.map(|i| model[i].1[0].clone()),
                            "remove {step}"
                        );
                        if let Some(i) = held {
                            model.remove(i);
                        }
                    }
                    _ => match map.entry(key) {
                        Entry::Occupied(entry) => {
                            let (_, gone) = entry.remove_entry_mult();
                            let gone: Vec<HeaderValue> = gone.collect();
                            let i = held.expect("occupied means held");
                            assert_eq!(gone, model.remove(i).1, "remove_entry_mult {step}");
                        }
                        Entry::Vacant(_) => assert!(held.is_none(), "vacant, step {step}"),
                    },
                }
                check(&map, &model, names, step);
            }
            let drained = map.drain().count();
            assert_eq!(drained, model.iter().map(|(_, v)| v.len()).sum::<usize>());
            assert!(map.is_empty() && !map.contains_key("host"));
        }
    }

    /// A connected loopback TCP pair: the client's end and the server's.
    async fn tcp_pair() -> (tokio::net::TcpStream, tokio::net::TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let client = tokio::net::TcpStream::connect(listener.local_addr().expect("addr"))
            .await
            .expect("connect");
        let (server, _) = listener.accept().await.expect("accept");
        (client, server)
    }

    /// Writes the rest of a response whose status line was written already, flushes, and
    /// checks that `client` reads the whole response.
    async fn finish_response(
        stream: &mut pingora::protocols::l4::stream::Stream,
        client: &mut tokio::net::TcpStream,
    ) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        stream
            .write_all(b"content-length: 2\r\n\r\nok")
            .await
            .expect("write");
        stream.flush().await.expect("flush");
        let mut got = vec![0u8; 40];
        client.read_exact(&mut got).await.expect("read");
        assert_eq!(&got[..], b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
    }

    /// An idle connection gives back its L4 buffers (vendor patches 17 and 27): the write
    /// buffer, and a read buffer as TLS listeners have; not while either holds bytes. Given
    /// back, they are what they were and the bytes pass as before.
    #[tokio::test]
    async fn an_idle_connection_gives_back_its_buffers_and_gets_them_again() {
        use pingora::protocols::l4::stream::{L4BufferSettings, Stream};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut client, server) = tcp_pair().await;
        let mut stream = Stream::from(server);
        assert_eq!(stream.park_buffers(), None, "no buffers to give back");

        let tls_like = L4BufferSettings::new(16 * 1024, 1460);
        stream.unpark_buffers(tls_like);
        stream
            .write_all(b"HTTP/1.1 200 OK\r\n")
            .await
            .expect("write");
        assert_eq!(
            stream.park_buffers(),
            None,
            "bytes wait in the write buffer"
        );
        stream.flush().await.expect("flush");
        assert_eq!(stream.park_buffers(), Some(tls_like));
        assert_eq!(stream.park_buffers(), None, "given back already");

        stream.unpark_buffers(tls_like);
        finish_response(&mut stream, &mut client).await;
        client
            .write_all(b"GET / HTTP/1.1\r\n")
            .await
            .expect("write");
        let mut line = vec![0u8; 16];
        stream.read_exact(&mut line).await.expect("read");
        assert_eq!(&line[..], b"GET / HTTP/1.1\r\n");
        let plaintext = L4BufferSettings::new(0, 1460);
        stream.unpark_buffers(plaintext);
        assert_eq!(stream.park_buffers(), Some(plaintext));
    }

    /// A plaintext connection's write buffer is made at its first write (vendor patch 37): a
    /// request that only reads (a trickling upload, a wait for the answer) holds none; the first
    /// write makes it, and small writes wait in it for the flush as before.
    #[tokio::test]
    async fn a_plaintext_connections_write_buffer_is_made_at_its_first_write() {
        use pingora::protocols::l4::stream::{L4BufferSettings, Stream};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut client, server) = tcp_pair().await;
        let mut stream = Stream::from(server);
        let plaintext = L4BufferSettings::new(0, 1460);
        stream.unpark_buffers(plaintext);
        assert!(!stream.write_buffer_made(), "no write yet, no buffer");

        client
            .write_all(b"POST / HTTP/1.1\r\n")
            .await
            .expect("write");
        let mut line = vec![0u8; 17];
        stream.read_exact(&mut line).await.expect("read");
        assert!(!stream.write_buffer_made(), "reads make no write buffer");

        stream
            .write_all(b"HTTP/1.1 200 OK\r\n")
            .await
            .expect("write");
        assert!(stream.write_buffer_made());
        assert_eq!(
            stream.park_buffers(),
            None,
            "the small write waits in the buffer for the flush"
        );
        finish_response(&mut stream, &mut client).await;

        // Parked and back: deferred again, and the same bytes pass.
        assert_eq!(stream.park_buffers(), Some(plaintext));
        stream.unpark_buffers(plaintext);
        assert!(!stream.write_buffer_made());
        stream.write_all(b"again").await.expect("write");
        stream.flush().await.expect("flush");
        let mut got = vec![0u8; 5];
        client.read_exact(&mut got).await.expect("read");
        assert_eq!(&got[..], b"again");
    }

    /// An HTTP/2 connection's writes are gathered (vendor patch 31): the first flush of a round
    /// writes nothing and wakes the task, the next writes all that was gathered in one go, and
    /// shutdown writes what is left before it closes.
    #[tokio::test]
    async fn an_http2_connections_writes_wait_one_turn_and_go_out_together() {
        use pingora::protocols::http::v2::coalesce::CoalescedWrites;
        use pingora::protocols::l4::stream::Stream as L4Stream;
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::Arc;
        use std::task::{Context, Poll, Wake, Waker};
        use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

        struct Count(AtomicUsize);
        impl Wake for Count {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
            fn wake_by_ref(self: &Arc<Self>) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        /// Whether the peer has bytes to read now (a non-blocking read of what has arrived).
        fn pending_at(client: &mut tokio::net::TcpStream) -> usize {
            let mut buf = [0u8; 64];
            let mut read = ReadBuf::new(&mut buf);
            let waker = Waker::noop();
            match std::pin::Pin::new(client).poll_read(&mut Context::from_waker(waker), &mut read) {
                Poll::Ready(Ok(())) => read.filled().len(),
                _ => 0,
            }
        }

        let (mut client, server) = tcp_pair().await;
        let mut stream = CoalescedWrites::new(Box::new(L4Stream::from(server)));

        let wakes = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(wakes.clone());
        let mut cx = Context::from_waker(&waker);
        let mut pinned = std::pin::Pin::new(&mut stream);
        for part in [&b"first answer;"[..], b"second answer;"] {
            assert!(matches!(
                pinned.as_mut().poll_write(&mut cx, part),
                Poll::Ready(Ok(n)) if n == part.len()
            ));
        }
        assert!(matches!(
            pinned.as_mut().poll_flush(&mut cx),
            Poll::Ready(Ok(()))
        ));
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1, "the task is woken");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert_eq!(
            pending_at(&mut client),
            0,
            "nothing written on the first flush"
        );
        assert!(matches!(
            pinned.as_mut().poll_write(&mut cx, b"third"),
            Poll::Ready(Ok(5))
        ));
        assert!(matches!(
            pinned.as_mut().poll_flush(&mut cx),
            Poll::Ready(Ok(()))
        ));
        let mut got = vec![0u8; 32];
        client.read_exact(&mut got).await.expect("read");
        assert_eq!(&got[..], b"first answer;second answer;third");

        // The next round waits its turn again; shutdown writes it.
        stream.write_all(b"last").await.expect("write");
        stream.shutdown().await.expect("shutdown");
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).await.expect("read");
        assert_eq!(rest, b"last");
    }
}
