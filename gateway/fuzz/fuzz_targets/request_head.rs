//! Fuzzes the HTTP/1 request head as the gateway sees it: the bytes arrive on a real socket,
//! are waited for by the gateway's head pre-read (`wait_request_head`), parsed by Pingora's
//! `read_request` with the gateway's limits, and checked by `headers::violation`. Properties:
//! nothing panics; a head that `httparse` finds complete within the limit is never lost on the
//! way (it is parsed, or rejected as malformed, never taken for a closed connection or an
//! oversize head); what is parsed has the method `httparse` read; a request `violation` lets
//! through is within every limit. Run: `cargo +nightly fuzz run request_head` in `gateway/`.
#![no_main]

use std::io::Write;
use std::sync::OnceLock;
use std::time::Duration;

use gateway_config::RequestLimits;
use libfuzzer_sys::fuzz_target;
use pingora_core::protocols::http::v1::server::{
    set_request_head_limits, wait_request_head, HeadWait, HttpSession, HEAD_TOO_LARGE,
};
use pingora_core::protocols::l4::stream::Stream as L4Stream;
use pingora_core::protocols::Stream;

const LIMITS: RequestLimits = RequestLimits {
    head_timeout: Duration::from_secs(10),
    keepalive_timeout: Duration::from_secs(60),
    send_timeout: Duration::from_secs(60),
    head_bytes: 4096,
    header_bytes: 1024,
    headers: 20,
    uri_bytes: 512,
    body_buffer_bytes: 16384,
};

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        set_request_head_limits(
            LIMITS.head_bytes as usize,
            LIMITS.uri_bytes as usize,
            Some(LIMITS.head_timeout),
        );
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    })
}

/// What `httparse` makes of `data` with Pingora's header capacity: the head's length and
/// method when complete.
fn reference(data: &[u8]) -> Option<(usize, String)> {
    let mut headers = [httparse::EMPTY_HEADER; 256];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(data) {
        Ok(httparse::Status::Complete(n)) => Some((n, req.method?.to_string())),
        _ => None,
    }
}

fuzz_target!(|data: &[u8]| {
    // Within what one socket buffer takes, so the write below never blocks.
    if data.len() > 64 * 1024 {
        return;
    }
    let rt = runtime();
    let (mut client, server) = std::os::unix::net::UnixStream::pair().expect("socketpair");
    client.write_all(data).expect("write");
    client
        .shutdown(std::net::Shutdown::Write)
        .expect("shutdown");
    rt.block_on(async move {
        server.set_nonblocking(true).expect("nonblocking");
        let server = tokio::net::UnixStream::from_std(server).expect("tokio stream");
        let mut stream: Stream = Box::new(L4Stream::from(server));
        let expected = reference(data).filter(|(n, _)| *n <= LIMITS.head_bytes as usize);
        // Never parked: the fuzzer's client has sent everything it will send.
        let never_park = std::sync::atomic::AtomicBool::new(false);
        let HeadWait::Head(head, started) = wait_request_head(&mut stream, &never_park).await
        else {
            assert!(
                expected.is_none(),
                "a complete head of {:?} was taken for a closed connection",
                expected
            );
            return;
        };
        assert!(!head.is_empty(), "an empty pre-read was handed over");
        assert!(data.starts_with(&head), "the pre-read changed the bytes");
        let mut session = HttpSession::new(stream);
        session.set_pipelined_prefix(head);
        session.set_request_head_started(started);
        match session.read_request().await {
            Ok(Some(_)) => {
                let req = session.req_header();
                if let Some((_, method)) = &expected {
                    assert_eq!(req.method.as_str(), method, "parsed another method");
                }
                if gateway::proxy::headers::violation(req, &LIMITS).is_none() {
                    let target = req.uri.path_and_query().map_or(0, |p| p.as_str().len());
                    assert!(target <= LIMITS.uri_bytes as usize);
                    assert!(req.headers.len() <= LIMITS.headers as usize);
                    assert!(req
                        .headers
                        .iter()
                        .all(|(name, value)| name.as_str().len() + value.len()
                            <= LIMITS.header_bytes as usize));
                    if req.version == http::Version::HTTP_11 {
                        assert!(req.headers.contains_key("host"));
                    }
                }
            }
            Ok(None) => assert!(
                expected.is_none(),
                "a complete head of {:?} was read as nothing",
                expected
            ),
            Err(e) => assert!(
                expected.is_none() || e.etype() != &HEAD_TOO_LARGE,
                "a head of {:?} within the limit was rejected as too large: {e}",
                expected
            ),
        }
    });
});
