//! Header hygiene between client and upstream: hop-by-hop headers (RFC 9110 §7.6.1) are not
//! forwarded in either direction (the `Upgrade` of an upgrade request and `TE: trailers` are
//! kept), and the forwarding headers (`Host` if absent, `X-Forwarded-Host`, `X-Forwarded-For`)
//! are set; the proxy adds `X-Forwarded-Proto` and the request id. Nothing else of a request
//! or response is changed.

use std::net::IpAddr;

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use pingora::http::{RequestHeader, ResponseHeader};
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
