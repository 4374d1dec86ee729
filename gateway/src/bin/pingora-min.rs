//! `pingora-min`: the floor the gateway's request path is measured against.
//!
//! A minimal Pingora proxy built from this repository's vendored Pingora, with the gateway's
//! allocator and release profile, doing the header work the bench gives every proxy: the
//! client's `X-Request-Id` or a new one, sent up and returned down, `X-Forwarded-For`,
//! `X-Forwarded-Proto` and `X-Forwarded-Host`. Nothing else: no routing, health, retries,
//! limits, logs or metrics. `loadtest bench` runs it as its `pingora-min` row and
//! `scripts/callgrind.sh --proxy pingora` counts its instructions, so the part of the gateway's
//! cost that is Pingora's own can be told from the part that is the gateway's.
//!
//! ```text
//! pingora-min --listen 127.0.0.1:8080 --upstream 127.0.0.1:9000 [--h2c 127.0.0.1:8081] [--threads 1]
//! ```

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use clap::Parser;
use http::header::{HeaderName, HeaderValue, HOST};
use pingora::apps::HttpServerOptions;
use pingora::http::{FieldWriter, RequestHeader, ResponseHeader};
use pingora::listeners::ListenerConfig;
use pingora::protocols::l4::stream::L4BufferSettings;
use pingora::proxy::{ProxyHttp, Session};
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::Server;
use pingora::upstreams::peer::HttpPeer;
use pingora::Result;

#[global_allocator]
static ALLOCATOR: gateway_alloc::Mimalloc = gateway_alloc::Mimalloc;

/// A minimal Pingora proxy with the bench's header work (see the module docs).
#[derive(Debug, Parser)]
#[command(name = "pingora-min", version, about)]
struct Args {
    /// Address for HTTP/1.1 (and h2c by preface) clients.
    #[arg(long)]
    listen: SocketAddr,
    /// A second listener, as the bench gives every proxy one for h2c.
    #[arg(long)]
    h2c: Option<SocketAddr>,
    /// The one upstream every request goes to (HTTP/1.1, kept alive).
    #[arg(long)]
    upstream: SocketAddr,
    /// Worker threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

struct MinProxy {
    upstream: SocketAddr,
    ids: AtomicU64,
}

impl ProxyHttp for MinProxy {
    /// The request id, returned on the answer.
    type CTX = Option<HeaderValue>;

    fn new_ctx(&self) -> Self::CTX {
        None
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        _ctx: &mut Self::CTX,
    ) -> Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(self.upstream, false, String::new())))
    }

    // The same fields written after the client's head when it has none of them (vendor patch
    // 60), as the gateway does: the head is not cloned.
    fn upstream_request_fields(
        &self,
        session: &Session,
        fields: &mut FieldWriter<'_>,
        ctx: &mut Self::CTX,
    ) -> Result<bool> {
        let headers = &session.req_header().headers;
        let ours = [
            &X_REQUEST_ID,
            &X_FORWARDED_FOR,
            &X_FORWARDED_PROTO,
            &X_FORWARDED_HOST,
        ];
        if ours.iter().any(|name| headers.contains_key(*name)) {
            return Ok(false);
        }
        let n = self.ids.fetch_add(1, Ordering::Relaxed);
        let id = HeaderValue::from_maybe_shared(Bytes::from(format!("{n:016x}")))
            .expect("hex digits are a valid header value");
        fields.push(&X_REQUEST_ID, X_REQUEST_ID.as_str().as_bytes(), &id)?;
        *ctx = Some(id);
        if let Some(ip) = session.client_addr().and_then(|a| a.as_inet()) {
            let ip = ip.ip().to_string();
            fields.push_bytes(
                &X_FORWARDED_FOR,
                X_FORWARDED_FOR.as_str().as_bytes(),
                ip.as_bytes(),
            )?;
        }
        let proto = HeaderValue::from_static("http");
        fields.push(
            &X_FORWARDED_PROTO,
            X_FORWARDED_PROTO.as_str().as_bytes(),
            &proto,
        )?;
        if let Some(host) = headers.get(HOST) {
            fields.push(
                &X_FORWARDED_HOST,
                X_FORWARDED_HOST.as_str().as_bytes(),
                host,
            )?;
        }
        Ok(true)
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        let id = match upstream.headers.get(&X_REQUEST_ID) {
            Some(id) => id.clone(),
            None => {
                let n = self.ids.fetch_add(1, Ordering::Relaxed);
                let id = HeaderValue::from_maybe_shared(Bytes::from(format!("{n:016x}")))
                    .expect("hex digits are a valid header value");
                upstream.insert_header(X_REQUEST_ID, id.clone())?;
                id
            }
        };
        *ctx = Some(id);
        if let Some(ip) = session.client_addr().and_then(|a| a.as_inet()) {
            let forwarded = match upstream.headers.get(&X_FORWARDED_FOR) {
                Some(earlier) => format!("{}, {}", earlier.to_str().unwrap_or(""), ip.ip()),
                None => ip.ip().to_string(),
            };
            upstream.insert_header(X_FORWARDED_FOR, forwarded)?;
        }
        upstream.insert_header(X_FORWARDED_PROTO, HeaderValue::from_static("http"))?;
        if let Some(host) = session.req_header().headers.get(HOST).cloned() {
            upstream.insert_header(X_FORWARDED_HOST, host)?;
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        response: &mut ResponseHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        if let Some(id) = ctx.take() {
            response.insert_header(X_REQUEST_ID, id)?;
        }
        Ok(())
    }
}

fn main() {
    gateway_alloc::configure();
    let args = Args::parse();
    let conf = ServerConf {
        threads: args.threads,
        // As the gateway: one worker runs Tokio's current-thread scheduler.
        work_stealing: args.threads > 1,
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(Opt::default(), conf);
    server.bootstrap();
    let mut app = pingora::proxy::http_proxy(
        &server.configuration,
        MinProxy {
            upstream: args.upstream,
            ids: AtomicU64::new(1),
        },
    );
    let mut options = HttpServerOptions::default();
    options.h2c = true;
    app.server_options = Some(options);
    let mut service = pingora::services::listening::Service::new("pingora-min".into(), app);
    for addr in std::iter::once(args.listen).chain(args.h2c) {
        // No L4 read buffer, as the gateway's plaintext listeners.
        service.add_listener(
            ListenerConfig::tcp(addr.to_string()).l4_buffer(L4BufferSettings {
                read: Some(0),
                write: None,
            }),
        );
    }
    server.add_service(service);
    server.run_forever();
}
