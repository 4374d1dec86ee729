//! Header hygiene between client and upstream: hop-by-hop headers (RFC 9110 §7.6.1) are not
//! forwarded in either direction (the `Upgrade` of an upgrade request and `TE: trailers` are
//! kept), and the forwarding headers (`Host` if absent, `X-Forwarded-Host`, `X-Forwarded-For`)
//! are set; the proxy adds `X-Forwarded-Proto` and the request id. Nothing else of a request
//! or response is changed.

use std::net::IpAddr;

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use pingora::http::{FieldWriter, RequestHeader, ResponseHeader};
use pingora::Result;

/// Hop-by-hop request headers (RFC 9110 §7.6.1, plus Proxy-Authorization), never forwarded.
const HOP_BY_HOP: [&str; 6] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "te",
    "upgrade",
];

/// Hop-by-hop response headers, never forwarded (except on a `101` upgrade).
const RESPONSE_HOP_BY_HOP: [&str; 4] = ["connection", "keep-alive", "proxy-connection", "upgrade"];

/// Forwarding headers a client could forge: passed on only from a trusted proxy.
const FORWARDING: [&str; 5] = [
    "x-forwarded-for",
    "forwarded",
    "x-real-ip",
    "x-forwarded-host",
    "x-forwarded-port",
];

/// Fields [`forward`] sets or removes besides the forwarding and hop-by-hop ones.
const ADDED: [&str; 4] = [
    "x-forwarded-proto",
    "grpc-timeout",
    "traceparent",
    "tracestate",
];

/// A field the gateway adds to what it forwards: its name, validated once, and its spelling on
/// the wire (lowercase, as written before: `insert_header` with a `&str` kept that spelling).
pub(crate) struct AddedField {
    name: HeaderName,
    wire: Bytes,
}

impl AddedField {
    const fn new(lowercase: &'static str) -> Self {
        Self {
            name: HeaderName::from_static(lowercase),
            wire: Bytes::from_static(lowercase.as_bytes()),
        }
    }

    /// Sets the field on `request`, replacing any value it had; no parse and no allocation
    /// for the name.
    pub(crate) fn insert_request(
        &self,
        request: &mut RequestHeader,
        value: HeaderValue,
    ) -> Result<()> {
        request.insert_parsed_header(&self.name, &self.wire, value)
    }
}

/// `X-Forwarded-For`.
pub(crate) const X_FORWARDED_FOR: AddedField = AddedField::new("x-forwarded-for");
/// `X-Forwarded-Host`.
pub(crate) const X_FORWARDED_HOST: AddedField = AddedField::new("x-forwarded-host");
/// `X-Forwarded-Proto`.
pub(crate) const X_FORWARDED_PROTO: AddedField = AddedField::new("x-forwarded-proto");
/// `traceparent`, when the gateway starts a trace.
pub(crate) const TRACEPARENT: AddedField = AddedField::new("traceparent");
/// `grpc-timeout`, the time a gRPC request has left.
pub(crate) const GRPC_TIMEOUT: AddedField = AddedField::new("grpc-timeout");
const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// What the gateway adds to a request it forwards, besides what [`forward_request`] does.
pub(crate) struct Forwarding<'a> {
    /// The client's address (`X-Forwarded-For`).
    pub client_ip: Option<IpAddr>,
    /// The client is a trusted proxy: its forwarding headers are kept.
    pub trusted: bool,
    /// An upgrade request (its `Upgrade` is kept).
    pub upgrade: bool,
    /// The client came over TLS (`X-Forwarded-Proto`).
    pub tls: bool,
    /// The request id: the field's name, its spelling and the value.
    pub request_id: Option<(&'a HeaderName, &'a Bytes, &'a HeaderValue)>,
    /// What a gRPC request's deadline leaves (`grpc-timeout`).
    pub grpc_timeout: Option<HeaderValue>,
    /// The `traceparent` of the trace the gateway started, and whether it replaced the
    /// client's (then the client's `tracestate` goes too).
    pub trace: Option<(&'a HeaderValue, bool)>,
}

/// Makes `upstream`, a copy of the client's request head, the head forwarded to the upstream.
pub(crate) fn forward(
    downstream: &RequestHeader,
    upstream: &mut RequestHeader,
    how: &Forwarding<'_>,
) -> Result<()> {
    forward_request(
        downstream,
        upstream,
        how.upgrade,
        how.client_ip,
        how.trusted,
    )?;
    let proto = HeaderValue::from_static(if how.tls { "https" } else { "http" });
    X_FORWARDED_PROTO.insert_request(upstream, proto)?;
    if let Some((name, spelling, id)) = how.request_id {
        upstream.insert_parsed_header(name, spelling, id.clone())?;
    }
    if let Some(left) = &how.grpc_timeout {
        GRPC_TIMEOUT.insert_request(upstream, left.clone())?;
    }
    if let Some((value, replaced)) = how.trace {
        if replaced {
            upstream.remove_header(&TRACESTATE);
        }
        TRACEPARENT.insert_request(upstream, value.clone())?;
    }
    Ok(())
}

/// What [`forward`] does, as fields written after the client's own, when that is all it does:
/// the client's head has `Host` and none of the fields [`forward`] removes, replaces or appends
/// to (hop-by-hop fields are the caller's to rule out: Pingora forwards heads with none this
/// way). `false`, with nothing written, otherwise. The bytes on the wire are those of the head
/// [`forward`] makes.
pub(crate) fn forward_fields(
    downstream: &RequestHeader,
    fields: &mut FieldWriter<'_>,
    how: &Forwarding<'_>,
) -> Result<bool> {
    let request_id = how.request_id.map(|(name, _, _)| name);
    let touched = |k: &HeaderName| {
        let listed = if k.standard_index().is_some() {
            // The listed names the `http` crate knows, compared as such, not as text.
            *k == header::CONNECTION
                || *k == header::PROXY_AUTHORIZATION
                || *k == header::TE
                || *k == header::UPGRADE
                || *k == header::FORWARDED
        } else {
            let name = k.as_str();
            FORWARDING.contains(&name) || HOP_BY_HOP.contains(&name) || ADDED.contains(&name)
        };
        listed || request_id == Some(k)
    };
    if how.upgrade || downstream.headers.keys().any(touched) {
        return Ok(false);
    }
    let Some(host) = downstream.headers.get(header::HOST) else {
        return Ok(false);
    };
    fields.push(&X_FORWARDED_HOST.name, &X_FORWARDED_HOST.wire, host)?;
    if let Some(ip) = how.client_ip {
        let mut text = [0u8; 48];
        let ip = ip_text(ip, &mut text);
        fields.push_bytes(&X_FORWARDED_FOR.name, &X_FORWARDED_FOR.wire, ip)?;
    }
    let proto = HeaderValue::from_static(if how.tls { "https" } else { "http" });
    fields.push(&X_FORWARDED_PROTO.name, &X_FORWARDED_PROTO.wire, &proto)?;
    if let Some((name, spelling, id)) = how.request_id {
        fields.push(name, spelling, id)?;
    }
    if let Some(left) = &how.grpc_timeout {
        fields.push(&GRPC_TIMEOUT.name, &GRPC_TIMEOUT.wire, left)?;
    }
    if let Some((value, _)) = how.trace {
        fields.push(&TRACEPARENT.name, &TRACEPARENT.wire, value)?;
    }
    Ok(true)
}

/// Prepares the upstream request from the client's: drops hop-by-hop headers and those listed
/// in `Connection`, keeps `TE: trailers` and an upgrade's `Upgrade`, sets the forwarding
/// headers. The client's own forwarding headers are kept (and `X-Forwarded-For` appended to)
/// only when the client is a `trusted` proxy; otherwise they are dropped first.
pub(crate) fn forward_request(
    downstream: &RequestHeader,
    upstream: &mut RequestHeader,
    upgrade: bool,
    client_ip: Option<IpAddr>,
    trusted: bool,
) -> Result<()> {
    if !trusted
        && upstream
            .headers
            .keys()
            .any(|k| FORWARDING.contains(&k.as_str()))
    {
        for name in FORWARDING {
            upstream.remove_header(name);
        }
    }
    let listed: Vec<HeaderName> = connection_tokens(&upstream.headers);
    // From the client's header: Pingora's own hop-by-hop pass has already taken `TE` off the
    // upstream copy.
    let te_trailers = downstream
        .headers
        .get(header::TE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("trailers"))
        });
    let upgrade_value = upstream.headers.get(header::UPGRADE).cloned();
    // One pass over the names first: most requests carry no hop-by-hop header, and removing
    // a header from Pingora's request header is not free.
    if upstream
        .headers
        .keys()
        .any(|k| HOP_BY_HOP.contains(&k.as_str()))
    {
        for name in HOP_BY_HOP.iter().copied() {
            upstream.remove_header(name);
        }
    }
    for name in &listed {
        upstream.remove_header(name);
    }
    if te_trailers {
        upstream.insert_header(header::TE, "trailers")?;
    }
    if upgrade {
        if let Some(v) = upgrade_value {
            upstream.insert_header(header::UPGRADE, v)?;
            upstream.insert_header(header::CONNECTION, "upgrade")?;
        }
    }

    let authority = downstream.headers.get(header::HOST).cloned().or_else(|| {
        downstream
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    });
    if let Some(host) = authority {
        if !upstream.headers.contains_key(header::HOST) {
            upstream.insert_header(header::HOST, host.clone())?;
        }
        X_FORWARDED_HOST.insert_request(upstream, host)?;
    }
    if let Some(ip) = client_ip {
        let mut text = [0u8; 48];
        let ip = ip_text(ip, &mut text);
        let value = match upstream
            .headers
            .get(&X_FORWARDED_FOR.name)
            .and_then(|v| v.to_str().ok())
        {
            Some(prev) if !prev.trim().is_empty() => {
                HeaderValue::from_bytes(&[prev.as_bytes(), b", ", ip].concat())
            }
            _ => HeaderValue::from_bytes(ip),
        };
        let value =
            value.map_err(|_| pingora::Error::new(pingora::ErrorType::InvalidHTTPHeader))?;
        X_FORWARDED_FOR.insert_request(upstream, value)?;
    }
    Ok(())
}

/// `ip` as text in `buf` (48 bytes hold any IPv6 address): IPv4 digit by digit, the common
/// case on the request path, where `Display` and its formatting machinery cost more than the
/// rest of the header work.
fn ip_text(ip: IpAddr, buf: &mut [u8; 48]) -> &[u8] {
    let mut len = 0;
    match ip {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    buf[len] = b'.';
                    len += 1;
                }
                if octet >= 100 {
                    buf[len] = b'0' + octet / 100;
                    len += 1;
                }
                if octet >= 10 {
                    buf[len] = b'0' + octet / 10 % 10;
                    len += 1;
                }
                buf[len] = b'0' + octet % 10;
                len += 1;
            }
        }
        IpAddr::V6(v6) => {
            use std::io::Write;
            let mut rest = &mut buf[..];
            let _ = write!(rest, "{v6}");
            len = 48 - rest.len();
        }
    }
    &buf[..len]
}

/// What is wrong with a request head, by the client's fault: answered with its status and
/// the connection closed, never forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Violation {
    /// HTTP/1.1 without `Host` (RFC 9112 §3.2): 400.
    MissingHost,
    /// The request target is longer than `server.max_uri_bytes`: 414.
    UriTooLong,
    /// More headers than `server.max_headers`: 431.
    TooManyHeaders,
    /// A header longer than `server.max_header_bytes`: 431.
    HeaderTooLarge,
}

impl Violation {
    /// The answer's status.
    pub fn status(self) -> u16 {
        match self {
            Self::MissingHost => 400,
            Self::UriTooLong => 414,
            Self::TooManyHeaders | Self::HeaderTooLarge => 431,
        }
    }

    /// The `error` of the JSON body, and the metric's `reason`.
    pub fn label(self) -> &'static str {
        match self {
            Self::MissingHost => "missing_host",
            Self::UriTooLong => "uri_too_long",
            Self::TooManyHeaders => "too_many_headers",
            Self::HeaderTooLarge => "header_too_large",
        }
    }
}

/// Checks a parsed request head against `limits` (the head's total size and deadline are
/// checked while it is read, in Pingora).
pub fn violation(req: &RequestHeader, limits: &gateway_config::RequestLimits) -> Option<Violation> {
    if req.version == http::Version::HTTP_11 && !req.headers.contains_key(header::HOST) {
        return Some(Violation::MissingHost);
    }
    let target = req.uri.path_and_query().map_or(0, |p| p.as_str().len());
    if target > limits.uri_bytes as usize {
        return Some(Violation::UriTooLong);
    }
    if req.headers.len() > limits.headers as usize {
        return Some(Violation::TooManyHeaders);
    }
    let max = limits.header_bytes as usize;
    if req
        .headers
        .iter()
        .any(|(name, value)| name.as_str().len() + value.len() > max)
    {
        return Some(Violation::HeaderTooLarge);
    }
    None
}

/// Drops hop-by-hop headers (and those listed in `Connection`) from a response, except on a
/// `101 Switching Protocols`, whose `Upgrade`/`Connection` the client needs.
pub(crate) fn strip_response_hop_by_hop(response: &mut ResponseHeader) {
    if response.status != http::StatusCode::SWITCHING_PROTOCOLS {
        let listed = connection_tokens(&response.headers);
        if response
            .headers
            .keys()
            .any(|k| RESPONSE_HOP_BY_HOP.contains(&k.as_str()))
        {
            for name in RESPONSE_HOP_BY_HOP {
                response.remove_header(name);
            }
        }
        for name in &listed {
            response.remove_header(name);
        }
    }
}

/// Header names listed in `Connection` (which are hop-by-hop too).
fn connection_tokens(headers: &http::HeaderMap) -> Vec<HeaderName> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `traceparent` the gateway started.
    const TRACE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    /// The head [`forward`] makes, and what [`forward_fields`] writes (`None` when it declines),
    /// on the wire.
    fn both_ways(down: &RequestHeader, how: &Forwarding<'_>) -> (Vec<u8>, Option<Vec<u8>>) {
        use pingora::protocols::http::v1::client::{
            close_request_wire, http_req_header_to_wire, http_req_header_to_wire_open,
        };
        let mut up = down.clone();
        forward(down, &mut up, how).expect("forward");
        let slow = http_req_header_to_wire(&up).expect("wire").to_vec();
        let mut wire = http_req_header_to_wire_open(down).expect("wire");
        let before = wire.len();
        let taken = forward_fields(down, &mut FieldWriter::new(&mut wire), how).expect("fields");
        if !taken {
            assert_eq!(wire.len(), before, "nothing written when declined");
            return (slow, None);
        }
        close_request_wire(&mut wire);
        (slow, Some(wire.to_vec()))
    }

    fn head(fields: &[(&str, &str)]) -> RequestHeader {
        let mut req = RequestHeader::build("GET", b"/a?b=c", None).expect("request");
        for (k, v) in fields {
            req.append_header(k.to_string(), *v).expect("field");
        }
        req
    }

    #[test]
    fn fields_written_after_the_client_s_head_are_the_head_forward_makes() {
        let id_name = HeaderName::from_static("x-request-id");
        let id_spelling = Bytes::from_static(b"X-Request-Id");
        let id = HeaderValue::from_static("0af7651916cd43dd8448eb211c80319c");
        let trace = HeaderValue::from_static(TRACE);
        let heads = [
            head(&[("host", "app.example")]),
            head(&[
                ("Host", "app.example:8443"),
                ("Accept", "*/*"),
                ("User-Agent", "curl/8"),
            ]),
            head(&[
                ("host", "a"),
                ("X-Custom", "1"),
                ("x-custom", "2"),
                ("Cookie", "a=b"),
            ]),
            head(&[
                ("Host", "a"),
                ("content-length", "3"),
                ("Accept-Encoding", "gzip"),
            ]),
        ];
        let mut ways = Vec::new();
        for ip in [
            None,
            Some("10.1.2.3".parse().expect("address")),
            Some("2001:db8::7".parse().expect("address")),
        ] {
            for tls in [false, true] {
                for with_id in [false, true] {
                    for grpc in [None, Some(HeaderValue::from_static("4999m"))] {
                        for traced in [None, Some((&trace, false)), Some((&trace, true))] {
                            ways.push(Forwarding {
                                client_ip: ip,
                                trusted: false,
                                upgrade: false,
                                tls,
                                request_id: with_id.then_some((&id_name, &id_spelling, &id)),
                                grpc_timeout: grpc.clone(),
                                trace: traced,
                            });
                        }
                    }
                }
            }
        }
        for down in &heads {
            for how in &ways {
                let (slow, fast) = both_ways(down, how);
                let fast = fast.expect("a head without fields to change takes the fast way");
                assert_eq!(
                    String::from_utf8_lossy(&fast),
                    String::from_utf8_lossy(&slow)
                );
            }
        }
        let (slow, _) = both_ways(&heads[1], &ways[ways.len() - 1]);
        assert!(slow.ends_with(b"x-forwarded-host: app.example:8443\r\nx-forwarded-for: 2001:db8::7\r\nx-forwarded-proto: https\r\nX-Request-Id: 0af7651916cd43dd8448eb211c80319c\r\ngrpc-timeout: 4999m\r\ntraceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n\r\n"), "{}", String::from_utf8_lossy(&slow));
    }

    #[test]
    fn a_head_with_a_field_forward_changes_is_left_to_forward() {
        let id_name = HeaderName::from_static("x-request-id");
        let id_spelling = Bytes::from_static(b"x-request-id");
        let id = HeaderValue::from_static("abc");
        let trace = HeaderValue::from_static(TRACE);
        let how = Forwarding {
            client_ip: Some("10.1.2.3".parse().expect("address")),
            trusted: true,
            upgrade: false,
            tls: false,
            request_id: Some((&id_name, &id_spelling, &id)),
            grpc_timeout: None,
            trace: Some((&trace, true)),
        };
        let listed = FORWARDING.iter().chain(&HOP_BY_HOP).chain(&ADDED);
        let spelled = [
            "X-Forwarded-For",
            "X-Real-IP",
            "Connection",
            "TE",
            "X-Request-Id",
        ];
        for field in listed.chain(&spelled) {
            let down = head(&[("Host", "a"), (field, "x")]);
            assert_eq!(both_ways(&down, &how).1, None, "{field}");
        }
        assert_eq!(
            both_ways(&head(&[("Accept", "*/*")]), &how).1,
            None,
            "no Host"
        );
        let upgrade = Forwarding {
            upgrade: true,
            ..how
        };
        assert_eq!(
            both_ways(&head(&[("Host", "a")]), &upgrade).1,
            None,
            "upgrade"
        );
    }

    #[test]
    fn hop_by_hop_headers_are_dropped_and_forwarding_headers_set() {
        let mut req = RequestHeader::build("GET", b"/x", None).expect("request");
        for (k, v) in [
            ("host", "app.example"),
            ("connection", "keep-alive, x-hop"),
            ("x-hop", "secret"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers, deflate"),
            ("x-forwarded-for", "203.0.113.7"),
            ("x-app", "kept"),
        ] {
            req.append_header(k, v).expect("header");
        }
        let mut upstream = req.clone();
        forward_request(
            &req,
            &mut upstream,
            false,
            Some([127, 0, 0, 1].into()),
            true,
        )
        .expect("ok");
        let h = &upstream.headers;
        for gone in ["connection", "x-hop", "keep-alive"] {
            assert!(h.get(gone).is_none(), "{gone} forwarded");
        }
        assert_eq!(h["te"], "trailers");
        assert_eq!(h["x-app"], "kept");
        assert_eq!(h["host"], "app.example");
        assert_eq!(h["x-forwarded-host"], "app.example");
        assert_eq!(h["x-forwarded-for"], "203.0.113.7, 127.0.0.1");
    }

    #[test]
    fn an_upgrade_keeps_its_upgrade_header_and_101_keeps_its_connection_header() {
        let mut req = RequestHeader::build("GET", b"/ws", None).expect("request");
        req.append_header("upgrade", "websocket").expect("header");
        req.append_header("connection", "Upgrade").expect("header");
        let mut upstream = req.clone();
        forward_request(&req, &mut upstream, true, None, false).expect("ok");
        assert_eq!(upstream.headers["upgrade"], "websocket");
        assert_eq!(upstream.headers["connection"], "upgrade");

        let mut resp = ResponseHeader::build(101, None).expect("response");
        resp.append_header("upgrade", "websocket").expect("header");
        resp.append_header("connection", "Upgrade").expect("header");
        strip_response_hop_by_hop(&mut resp);
        assert!(resp.headers.get("connection").is_some());
        let mut ok = ResponseHeader::build(200, None).expect("response");
        ok.append_header("connection", "close, x-secret")
            .expect("header");
        ok.append_header("x-secret", "1").expect("header");
        ok.append_header("content-type", "text/plain")
            .expect("header");
        strip_response_hop_by_hop(&mut ok);
        assert!(ok.headers.get("connection").is_none() && ok.headers.get("x-secret").is_none());
        assert_eq!(ok.headers["content-type"], "text/plain");
    }

    #[test]
    fn client_addresses_are_written_as_display_writes_them() {
        let cases: [IpAddr; 6] = [
            [0, 0, 0, 0].into(),
            [127, 0, 0, 1].into(),
            [10, 99, 100, 255].into(),
            [192, 0, 2, 9].into(),
            "2001:db8::1".parse().expect("ip"),
            "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255"
                .parse()
                .expect("ip"),
        ];
        for ip in cases {
            let mut buf = [0u8; 48];
            assert_eq!(ip_text(ip, &mut buf), ip.to_string().as_bytes(), "{ip}");
        }
    }

    #[test]
    fn te_trailers_is_forwarded_after_pingora_took_it_off_the_upstream_copy() {
        let mut req = RequestHeader::build("POST", b"/grpc", None).expect("request");
        req.append_header("host", "grpc.test").expect("header");
        req.append_header("te", "trailers").expect("header");
        let mut upstream = req.clone();
        upstream.remove_header("te");
        forward_request(&req, &mut upstream, false, None, false).expect("ok");
        assert_eq!(upstream.headers["te"], "trailers");
    }

    #[test]
    fn forwarding_headers_of_an_untrusted_client_are_replaced() {
        let mut req = RequestHeader::build("GET", b"/", None).expect("request");
        for (k, v) in [
            ("host", "app.example"),
            ("x-forwarded-for", "6.6.6.6"),
            ("forwarded", "for=6.6.6.6"),
            ("x-real-ip", "6.6.6.6"),
            ("x-forwarded-host", "evil.example"),
            ("x-forwarded-port", "1"),
        ] {
            req.append_header(k, v).expect("header");
        }
        let client = Some([192, 0, 2, 9].into());
        let mut untrusted = req.clone();
        forward_request(&req, &mut untrusted, false, client, false).expect("ok");
        let h = &untrusted.headers;
        assert_eq!(h["x-forwarded-for"], "192.0.2.9");
        assert_eq!(h["x-forwarded-host"], "app.example");
        for gone in ["forwarded", "x-real-ip", "x-forwarded-port"] {
            assert!(
                h.get(gone).is_none(),
                "{gone} forwarded from an untrusted client"
            );
        }
        let mut trusted = req.clone();
        forward_request(&req, &mut trusted, false, client, true).expect("ok");
        let h = &trusted.headers;
        assert_eq!(h["x-forwarded-for"], "6.6.6.6, 192.0.2.9");
        assert_eq!(h["x-real-ip"], "6.6.6.6");
        assert_eq!(h["forwarded"], "for=6.6.6.6");
    }
}
