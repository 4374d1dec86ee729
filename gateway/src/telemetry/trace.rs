//! W3C trace context (`traceparent`): a valid one passes unchanged (with its `tracestate`); a
//! request without one, or with an invalid one, gets a new trace when `server.start_traces`
//! is on (an invalid one's `tracestate` is dropped with it, as the recommendation says).

use http::HeaderValue;

/// What the proxy does with a request's trace context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TraceContext {
    /// A valid `traceparent` arrived: forwarded unchanged.
    Passed,
    /// None arrived and none is started.
    None,
    /// A new `traceparent` to send upstream; `replaced` when an invalid one (and its
    /// `tracestate`) is dropped for it.
    Started {
        /// The new header value.
        value: HeaderValue,
        /// An invalid one arrived.
        replaced: bool,
    },
}

impl TraceContext {
    /// The context of a request that sent `header` (its `traceparent`), starting a trace when
    /// `start` says so.
    pub fn of(header: Option<&HeaderValue>, start: bool) -> Self {
        match header {
            Some(v) if is_valid(v.as_bytes()) => Self::Passed,
            other if start => Self::Started {
                value: new_traceparent(),
                replaced: other.is_some(),
            },
            _ => Self::None,
        }
    }
}

impl TraceContext {
    /// Whether the request's trace is sampled: a started one always, a passed one when its
    /// `traceparent` (`header`) has the sampled flag.
    pub fn sampled(&self, header: Option<&HeaderValue>) -> bool {
        match self {
            Self::Started { .. } => true,
            Self::Passed => header
                .and_then(|v| ids(v.as_bytes()))
                .is_some_and(|i| i.sampled),
            Self::None => false,
        }
    }
}

/// The ids and sampled flag of a valid `traceparent`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceIds<'a> {
    /// 32 hex digits.
    pub trace_id: &'a str,
    /// The caller's span id.
    pub parent_id: u64,
    /// The sampled flag (bit 0 of the flags).
    pub sampled: bool,
}

/// The ids of a valid `traceparent`.
pub fn ids(traceparent: &[u8]) -> Option<TraceIds<'_>> {
    let trace_id = trace_id(traceparent)?;
    let text = std::str::from_utf8(traceparent).ok()?;
    Some(TraceIds {
        trace_id,
        parent_id: u64::from_str_radix(&text[36..52], 16).ok()?,
        sampled: u8::from_str_radix(&text[53..55], 16).ok()? & 1 == 1,
    })
}

/// The trace id (32 hex digits) of a valid `traceparent`.
pub fn trace_id(traceparent: &[u8]) -> Option<&str> {
    is_valid(traceparent)
        .then(|| std::str::from_utf8(&traceparent[3..35]).ok())
        .flatten()
}

/// Whether `v` is a `traceparent` the W3C Trace Context spec accepts: `vv-<32 hex>-<16 hex>-ff`
/// in lowercase hex, version not `ff`, neither id all zeros; a version above `00` may carry
/// more fields after a `-`.
pub fn is_valid(v: &[u8]) -> bool {
    let hex = |s: &[u8]| s.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    let zeros = |s: &[u8]| s.iter().all(|b| *b == b'0');
    if v.len() < 55 || v[2] != b'-' || v[35] != b'-' || v[52] != b'-' {
        return false;
    }
    let (version, trace, parent, flags) = (&v[0..2], &v[3..35], &v[36..52], &v[53..55]);
    if !(hex(version) && hex(trace) && hex(parent) && hex(flags)) || version == b"ff" {
        return false;
    }
    if zeros(trace) || zeros(parent) {
        return false;
    }
    match version {
        b"00" => v.len() == 55,
        _ => v.len() == 55 || v[55] == b'-',
    }
}

/// `bytes` as lowercase hex digits into `out` (twice as long): each byte's two digits copied
/// from a table (shifting a `u128` per digit cost twice as many instructions as a byte at a
/// time, and a byte at a time twice as many as the table).
pub(crate) fn hex_lower(bytes: &[u8], out: &mut [u8]) {
    const PAIRS: [[u8; 2]; 256] = {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut pairs = [[0u8; 2]; 256];
        let mut b = 0;
        while b < 256 {
            pairs[b] = [HEX[b >> 4], HEX[b & 0xf]];
            b += 1;
        }
        pairs
    };
    for (pair, &b) in out.chunks_exact_mut(2).zip(bytes) {
        pair.copy_from_slice(&PAIRS[b as usize]);
    }
}

/// A new sampled `traceparent`: random trace and parent ids (thread-local PRNG), neither all
/// zeros (drawn over the whole range, then a zero made one: a range draw costs a 128-bit
/// reduction, and a zero comes once in 2^64 draws).
fn new_traceparent() -> HeaderValue {
    let mut out = *b"00-00000000000000000000000000000000-0000000000000000-01";
    let (trace, parent) = (fastrand::u128(..).max(1), fastrand::u64(..).max(1));
    hex_lower(&trace.to_be_bytes(), &mut out[3..35]);
    hex_lower(&parent.to_be_bytes(), &mut out[36..52]);
    let mut value = HeaderValue::from_bytes(&out).expect("hex digits are a valid header value");
    // New on every request: an HTTP/2 upstream gets it as an HPACK literal never indexed, so
    // it does not churn the connection's dynamic table (see `proxy::request::never_indexed`).
    value.set_sensitive(true);
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn hex_lower_writes_each_byte_as_two_lowercase_digits() {
        let mut out = [0u8; 8];
        hex_lower(&[0x00, 0x9f, 0xa0, 0xff], &mut out);
        assert_eq!(&out, b"009fa0ff");
        let every: Vec<u8> = (0..=255).collect();
        let mut out = [0u8; 512];
        hex_lower(&every, &mut out);
        let expected: String = every.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(out.as_slice(), expected.as_bytes());
    }

    #[test]
    fn the_specs_rules_for_a_valid_traceparent() {
        assert!(is_valid(VALID.as_bytes()));
        assert_eq!(
            trace_id(VALID.as_bytes()),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        for bad in [
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", // uppercase
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01", // zero trace id
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", // zero parent id
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", // version ff
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x", // 00 with more
            "00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01", // misplaced dash
            "garbage",
        ] {
            assert!(!is_valid(bad.as_bytes()), "{bad}");
        }
        assert!(is_valid(
            b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-future"
        ));
    }

    #[test]
    fn ids_and_the_sampled_flag_are_read_from_a_valid_traceparent() {
        assert_eq!(
            ids(VALID.as_bytes()),
            Some(TraceIds {
                trace_id: "4bf92f3577b34da6a3ce929d0e0e4736",
                parent_id: 0x00f0_67aa_0ba9_02b7,
                sampled: true,
            })
        );
        let unsampled =
            HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00");
        assert!(!TraceContext::Passed.sampled(Some(&unsampled)));
        assert!(TraceContext::Passed.sampled(Some(&HeaderValue::from_static(VALID))));
        assert!(!TraceContext::None.sampled(None));
        assert!(ids(b"garbage").is_none());
    }

    #[test]
    fn a_missing_or_invalid_traceparent_starts_a_valid_new_trace() {
        let valid = HeaderValue::from_static(VALID);
        assert_eq!(TraceContext::of(Some(&valid), true), TraceContext::Passed);
        assert_eq!(TraceContext::of(None, false), TraceContext::None);
        for (header, replaced) in [
            (None, false),
            (Some(HeaderValue::from_static("junk")), true),
        ] {
            match TraceContext::of(header.as_ref(), true) {
                TraceContext::Started { value, replaced: r } => {
                    assert!(is_valid(value.as_bytes()), "{:?}", value.as_bytes());
                    assert!(
                        value.is_sensitive(),
                        "a started traceparent is never indexed"
                    );
                    assert_eq!(r, replaced);
                }
                other => panic!("{other:?}"),
            }
        }
    }
}
