//! gRPC at the gateway (the README's *gRPC* section): which requests speak it (by
//! `content-type`), the status codes of the gateway's own answers to them (sent Trailers-Only:
//! HTTP 200 with `grpc-status` and a percent-encoded `grpc-message`), the per-message limit
//! read from each message's length prefix as the body passes, and `grpc-timeout` read as a
//! deadline and written as what is left of it.

use std::time::Duration;

use http::header::{HeaderMap, HeaderValue, CONTENT_TYPE};

/// The header that carries a gRPC client's deadline.
pub(crate) const GRPC_TIMEOUT: &str = "grpc-timeout";

/// How a request speaks gRPC, by its `content-type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GrpcKind {
    /// `application/grpc` (or `application/grpc+proto`, `+json`, ...): length-prefixed
    /// messages over HTTP/2.
    Grpc,
    /// `application/grpc-web` (`+proto`, ...): length-prefixed messages over any HTTP version.
    Web,
    /// `application/grpc-web-text` (`+proto`, ...): base64 of grpc-web; its messages are not
    /// read, so its body is limited as a plain one.
    WebText,
}

impl GrpcKind {
    /// The kind of a request with these headers; `None` for anything but gRPC.
    pub(crate) fn of(headers: &HeaderMap) -> Option<Self> {
        let value = headers.get(CONTENT_TYPE)?.as_bytes();
        let rest = strip_prefix_ignore_case(value, b"application/grpc")?;
        let (kind, rest) = if let Some(rest) = strip_prefix_ignore_case(rest, b"-web-text") {
            (Self::WebText, rest)
        } else if let Some(rest) = strip_prefix_ignore_case(rest, b"-web") {
            (Self::Web, rest)
        } else {
            (Self::Grpc, rest)
        };
        match rest.first() {
            None | Some(b'+' | b';' | b' ') => Some(kind),
            _ => None,
        }
    }

    /// Whether its body is length-prefixed messages the gateway reads as they pass.
    pub(crate) fn framed(self) -> bool {
        !matches!(self, Self::WebText)
    }
}

fn strip_prefix_ignore_case<'a>(value: &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
    let head = value.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &value[prefix.len()..])
}

/// The gRPC status codes the gateway answers with (gRPC's `doc/statuscodes.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Code {
    /// An HTTP status gRPC has no word for.
    Unknown = 2,
    /// The total deadline (the route's, or the client's `grpc-timeout`) passed.
    DeadlineExceeded = 4,
    /// HTTP 403.
    PermissionDenied = 7,
    /// A limit: body, message, request target or headers.
    ResourceExhausted = 8,
    /// No route.
    Unimplemented = 12,
    /// A request the gateway could not take, or its own failure.
    Internal = 13,
    /// No region up, overloaded, shed, or the upstream failed before answering.
    Unavailable = 14,
    /// HTTP 401.
    Unauthenticated = 16,
}

impl Code {
    /// The number `grpc-status` carries.
    pub(crate) fn value(self) -> u8 {
        self as u8
    }

    /// Its name, as gRPC's documentation and clients write it (the metric's label).
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Unknown => "UNKNOWN",
            Self::DeadlineExceeded => "DEADLINE_EXCEEDED",
            Self::PermissionDenied => "PERMISSION_DENIED",
            Self::ResourceExhausted => "RESOURCE_EXHAUSTED",
            Self::Unimplemented => "UNIMPLEMENTED",
            Self::Internal => "INTERNAL",
            Self::Unavailable => "UNAVAILABLE",
            Self::Unauthenticated => "UNAUTHENTICATED",
        }
    }

    /// The code for the gateway's own HTTP status `status`: gRPC's HTTP-to-gRPC mapping
    /// (`doc/http-grpc-status-mapping.md`), with the gateway's limits (408, 413, 414, 431)
    /// named for what they are.
    pub(crate) fn of_http(status: u16) -> Self {
        match status {
            400 => Self::Internal,
            401 => Self::Unauthenticated,
            403 => Self::PermissionDenied,
            404 => Self::Unimplemented,
            408 => Self::DeadlineExceeded,
            413 | 414 | 431 => Self::ResourceExhausted,
            429 | 502 | 503 | 504 => Self::Unavailable,
            500 => Self::Internal,
            _ => Self::Unknown,
        }
    }
}

/// `message` as `grpc-message` carries it: percent-encoded UTF-8, every byte outside printable
/// ASCII and `%` itself written `%XX` (gRPC's `PROTOCOL-HTTP2.md`).
pub(crate) fn percent_encode(message: &str) -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = Vec::with_capacity(message.len());
    for &b in message.as_bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(b);
        } else {
            out.extend_from_slice(&[b'%', HEX[usize::from(b >> 4)], HEX[usize::from(b & 0xf)]]);
        }
    }
    HeaderValue::from_bytes(&out).expect("printable ASCII is a valid header value")
}

/// A `grpc-timeout` value (1 to 8 digits and a unit: `H`, `M`, `S`, `m`, `u`, `n`); `None`
/// when it is not one.
pub(crate) fn parse_timeout(value: &HeaderValue) -> Option<Duration> {
    let bytes = value.as_bytes();
    let (&unit, digits) = bytes.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n = digits
        .iter()
        .fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
    Some(match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

/// `left` as a `grpc-timeout` value in the finest unit that fits 8 digits, rounded down (the
/// upstream never gets more time than is left).
pub(crate) fn format_timeout(left: Duration) -> HeaderValue {
    const MAX: u128 = 99_999_999;
    let units: [(u128, u8); 6] = [
        (1, b'n'),
        (1_000, b'u'),
        (1_000_000, b'm'),
        (1_000_000_000, b'S'),
        (60_000_000_000, b'M'),
        (3_600_000_000_000, b'H'),
    ];
    let nanos = left.as_nanos();
    let (n, unit) = units
        .iter()
        .map(|&(per, unit)| (nanos / per, unit))
        .find(|&(n, _)| n <= MAX)
        .unwrap_or((MAX, b'H'));
    let mut text = n.to_string().into_bytes();
    text.push(unit);
    HeaderValue::from_bytes(&text).expect("digits and a unit are a valid header value")
}

/// Reads a gRPC request body's messages as the body passes: each starts with a 5-byte prefix
/// (a compressed flag and a 4-byte big-endian length), which the per-message limit is checked
/// against.
#[derive(Debug, Default, Clone)]
pub(crate) struct Messages {
    prefix: [u8; 5],
    /// Bytes of the current prefix read so far.
    have: usize,
    /// Bytes of the current message still to pass.
    left: u64,
}

impl Messages {
    /// Reads `chunk`; the length of the first message longer than `max`, if one starts in it.
    pub(crate) fn feed(&mut self, mut chunk: &[u8], max: u64) -> Result<(), u64> {
        while !chunk.is_empty() {
            if self.left > 0 {
                let n = chunk
                    .len()
                    .min(usize::try_from(self.left).unwrap_or(usize::MAX));
                self.left -= n as u64;
                chunk = &chunk[n..];
                continue;
            }
            let n = chunk.len().min(5 - self.have);
            self.prefix[self.have..self.have + n].copy_from_slice(&chunk[..n]);
            self.have += n;
            chunk = &chunk[n..];
            if self.have == 5 {
                self.have = 0;
                let [_, a, b, c, d] = self.prefix;
                let len = u64::from(u32::from_be_bytes([a, b, c, d]));
                if len > max {
                    return Err(len);
                }
                self.left = len;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(content_type: &str) -> Option<GrpcKind> {
        let mut headers = HeaderMap::new();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_str(content_type).expect("value"),
        );
        GrpcKind::of(&headers)
    }

    #[test]
    fn grpc_is_told_by_its_content_type_with_or_without_a_suffix() {
        assert_eq!(kind("application/grpc"), Some(GrpcKind::Grpc));
        assert_eq!(kind("application/grpc+proto"), Some(GrpcKind::Grpc));
        assert_eq!(kind("Application/GRPC+json"), Some(GrpcKind::Grpc));
        assert_eq!(kind("application/grpc-web"), Some(GrpcKind::Web));
        assert_eq!(kind("application/grpc-web+proto"), Some(GrpcKind::Web));
        assert_eq!(kind("application/grpc-web-text"), Some(GrpcKind::WebText));
        assert_eq!(
            kind("application/grpc-web-text+proto"),
            Some(GrpcKind::WebText)
        );
        assert_eq!(kind("application/grpcx"), None);
        assert_eq!(kind("application/json"), None);
        assert_eq!(kind("application/grp"), None);
        assert_eq!(GrpcKind::of(&HeaderMap::new()), None);
    }

    #[test]
    fn messages_are_percent_encoded_outside_printable_ascii() {
        assert_eq!(percent_encode("no route"), "no route");
        assert_eq!(percent_encode("100% down\n"), "100%25 down%0A");
        assert_eq!(percent_encode("région"), "r%C3%A9gion");
    }

    #[test]
    fn timeouts_parse_in_every_unit_and_refuse_the_malformed() {
        let t = |s: &str| parse_timeout(&HeaderValue::from_str(s).expect("value"));
        assert_eq!(t("200m"), Some(Duration::from_millis(200)));
        assert_eq!(t("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(t("2M"), Some(Duration::from_secs(120)));
        assert_eq!(t("3S"), Some(Duration::from_secs(3)));
        assert_eq!(t("30000000u"), Some(Duration::from_secs(30)));
        assert_eq!(t("300000000u"), None, "9 digits");
        assert_eq!(t("9999999u"), Some(Duration::from_micros(9_999_999)));
        assert_eq!(t("5n"), Some(Duration::from_nanos(5)));
        for bad in ["", "m", "10", "10s", "-1m", "1.5S", "1 m"] {
            assert_eq!(t(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn timeouts_are_written_in_the_finest_unit_that_fits_rounded_down() {
        let f = |d: Duration| format_timeout(d).to_str().expect("ascii").to_string();
        assert_eq!(f(Duration::from_nanos(99_999_999)), "99999999n");
        assert_eq!(f(Duration::from_millis(187)), "187000u");
        assert_eq!(f(Duration::from_nanos(187_654_321_987)), "187654m");
        assert_eq!(f(Duration::from_nanos(87_654_321_987)), "87654321u");
        assert_eq!(f(Duration::from_secs(30)), "30000000u");
        assert_eq!(f(Duration::from_secs(200)), "200000m");
        assert_eq!(f(Duration::from_secs(86_400 * 365)), "31536000S");
        for d in [Duration::from_millis(1234), Duration::from_secs(7_200)] {
            let back = parse_timeout(&format_timeout(d)).expect("parses");
            assert!(back <= d && d - back < Duration::from_millis(1), "{d:?}");
        }
    }

    #[test]
    fn a_message_over_the_limit_is_found_wherever_the_chunks_split() {
        // Three messages: 3 bytes, 10 bytes, 4 bytes.
        let mut body = Vec::new();
        for len in [3u32, 10, 4] {
            body.push(0);
            body.extend_from_slice(&len.to_be_bytes());
            body.extend(std::iter::repeat_n(7u8, len as usize));
        }
        for split in 0..=body.len() {
            for (max, want) in [(10, Ok(())), (9, Err(10)), (2, Err(3))] {
                let mut m = Messages::default();
                let (a, b) = body.split_at(split);
                let got = m.feed(a, max).and_then(|()| m.feed(b, max));
                assert_eq!(got, want, "split at {split}, max {max}");
            }
        }
        // Byte by byte.
        let mut m = Messages::default();
        assert_eq!(body.iter().try_for_each(|b| m.feed(&[*b], 9)), Err(10));
    }
}
