//! Sticky sessions that survive anycast: the cookie carries the whole decision.
//!
//! A [`StickyToken`] names the route, region and endpoint (a stable id from config, never an
//! address), when it was issued and when it expires (wall clock), and is authenticated with
//! HMAC-SHA256 under a key id. Any PoP with the same keys honours it; PoPs share nothing else.
//!
//! Wire format (URL-safe, no padding): `1.<key id>.<payload>.<mac>` where `payload` is base64url
//! of `route|region|endpoint|issued|expires` (Unix seconds) and `mac` is base64url of the first
//! 16 bytes of HMAC-SHA256(key, `1.<key id>.<payload>`). Verification is constant-time.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use gateway_config::StickyKey;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Token version written and accepted.
const VERSION: &str = "1";
/// MAC bytes kept (128 bits).
const MAC_LEN: usize = 16;
/// Longest token accepted (guards the decoder against huge cookies).
const MAX_TOKEN_LEN: usize = 512;
/// Clock skew tolerated between PoPs for `issued` in the future.
const MAX_SKEW: Duration = Duration::from_secs(300);

/// The decision a sticky cookie carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StickyToken {
    /// Route name.
    pub route: String,
    /// Region name.
    pub region: String,
    /// Endpoint id.
    pub endpoint: String,
    /// Issue time, Unix seconds.
    pub issued: u64,
    /// Expiry, Unix seconds.
    pub expires: u64,
}

/// Why a cookie was not honoured (a metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalid {
    /// Not in the token format at all (or truncated).
    Malformed,
    /// A version this gateway does not know.
    Version,
    /// Signed by a key not (or no longer) configured.
    UnknownKey,
    /// MAC mismatch: tampered or signed with another secret.
    BadMac,
    /// Past its expiry (or issued implausibly far in the future).
    Expired,
    /// Issued for another route.
    WrongRoute,
}

/// What happened to a sticky request, as `gateway_sticky_total` counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The cookie's endpoint served.
    Honoured,
    /// Another endpoint served; the cookie is replaced.
    Repinned,
    /// No valid cookie; one is issued.
    Issued,
    /// The cookie was ignored.
    Invalid(Invalid),
}

impl crate::telemetry::metrics::LabelSet for Outcome {
    const ALL: &'static [Self] = &[
        Outcome::Honoured,
        Outcome::Repinned,
        Outcome::Issued,
        Outcome::Invalid(Invalid::Malformed),
        Outcome::Invalid(Invalid::Version),
        Outcome::Invalid(Invalid::UnknownKey),
        Outcome::Invalid(Invalid::BadMac),
        Outcome::Invalid(Invalid::Expired),
        Outcome::Invalid(Invalid::WrongRoute),
    ];

    fn index(self) -> usize {
        match self {
            Outcome::Honoured => 0,
            Outcome::Repinned => 1,
            Outcome::Issued => 2,
            Outcome::Invalid(i) => 3 + i as usize,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Outcome::Honoured => "honoured",
            Outcome::Repinned => "repinned",
            Outcome::Issued => "issued",
            Outcome::Invalid(i) => i.label(),
        }
    }
}

impl Invalid {
    /// Metric label.
    pub fn label(self) -> &'static str {
        match self {
            Invalid::Malformed => "invalid_malformed",
            Invalid::Version => "invalid_version",
            Invalid::UnknownKey => "invalid_unknown_key",
            Invalid::BadMac => "invalid_bad_mac",
            Invalid::Expired => "invalid_expired",
            Invalid::WrongRoute => "invalid_wrong_route",
        }
    }
}

/// Unix seconds now.
pub fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn mac(key: &[u8], signed: &str) -> Option<HmacSha256> {
    let mut m = keyed(key)?;
    m.update(signed.as_bytes());
    Some(m)
}

/// How many keys a thread keeps keyed MAC states for (a config has a few; reloads may rotate).
const KEYED_STATES: usize = 8;

/// The MAC keyed with `key`, from a per-thread cache: keying HMAC-SHA256 hashes the padded key
/// twice, which was half of the work of signing or checking a cookie on every request.
fn keyed(key: &[u8]) -> Option<HmacSha256> {
    thread_local! {
        static STATES: std::cell::RefCell<Vec<(Vec<u8>, HmacSha256)>> =
            const { std::cell::RefCell::new(Vec::new()) };
    }
    STATES.with(|states| {
        let mut states = states.borrow_mut();
        if let Some((_, m)) = states.iter().find(|(k, _)| k.as_slice() == key) {
            return Some(m.clone());
        }
        let m = HmacSha256::new_from_slice(key).ok()?;
        if states.len() >= KEYED_STATES {
            states.remove(0);
        }
        states.push((key.to_vec(), m.clone()));
        Some(m)
    })
}

impl StickyToken {
    /// Encodes and signs with `key`. Fields must not contain `|` (names and ids from validated
    /// config never do).
    pub fn encode(&self, key: &StickyKey) -> String {
        let payload = format!(
            "{}|{}|{}|{}|{}",
            self.route, self.region, self.endpoint, self.issued, self.expires
        );
        let signed = format!("{VERSION}.{}.{}", key.id, URL_SAFE_NO_PAD.encode(payload));
        let tag = mac(&key.secret, &signed)
            .map(|m| m.finalize().into_bytes())
            .unwrap_or_default();
        format!("{signed}.{}", URL_SAFE_NO_PAD.encode(&tag[..MAC_LEN]))
    }

    /// Decodes and verifies `text` against `keys` for `route` at `now` (Unix seconds).
    pub fn decode(text: &str, keys: &[StickyKey], route: &str, now: u64) -> Result<Self, Invalid> {
        if text.len() > MAX_TOKEN_LEN {
            return Err(Invalid::Malformed);
        }
        let mut parts = text.split('.');
        let (Some(version), Some(kid), Some(payload), Some(tag), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(Invalid::Malformed);
        };
        if version != VERSION {
            return Err(Invalid::Version);
        }
        let key = keys
            .iter()
            .find(|k| k.id == kid)
            .ok_or(Invalid::UnknownKey)?;
        let tag = URL_SAFE_NO_PAD
            .decode(tag)
            .map_err(|_| Invalid::Malformed)?;
        if tag.len() != MAC_LEN {
            return Err(Invalid::Malformed);
        }
        let signed_len = version.len() + 1 + kid.len() + 1 + payload.len();
        let m = mac(&key.secret, &text[..signed_len]).ok_or(Invalid::BadMac)?;
        // `verify_truncated_left` compares in constant time.
        m.verify_truncated_left(&tag).map_err(|_| Invalid::BadMac)?;
        let payload = URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| Invalid::Malformed)?;
        let payload = String::from_utf8(payload).map_err(|_| Invalid::Malformed)?;
        let f: Vec<&str> = payload.split('|').collect();
        let [r, region, endpoint, issued, expires] = f.as_slice() else {
            return Err(Invalid::Malformed);
        };
        let issued: u64 = issued.parse().map_err(|_| Invalid::Malformed)?;
        let expires: u64 = expires.parse().map_err(|_| Invalid::Malformed)?;
        if *r != route {
            return Err(Invalid::WrongRoute);
        }
        if expires <= now || issued > now + MAX_SKEW.as_secs() {
            return Err(Invalid::Expired);
        }
        Ok(Self {
            route: r.to_string(),
            region: region.to_string(),
            endpoint: endpoint.to_string(),
            issued,
            expires,
        })
    }
}

/// The value of cookie `name` in `Cookie` header values, if present.
pub fn find_cookie<'a>(headers: impl Iterator<Item = &'a [u8]>, name: &str) -> Option<&'a str> {
    headers
        .filter_map(|v| std::str::from_utf8(v).ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim_matches('"'))
}

/// A `Set-Cookie` value for `token` under the route's settings.
pub fn set_cookie(settings: &gateway_config::StickySettings, token: &str) -> String {
    let mut c = format!(
        "{}={token}; Path={}; Max-Age={}",
        settings.cookie,
        settings.path,
        settings.ttl.as_secs()
    );
    if let Some(d) = &settings.domain {
        c.push_str(&format!("; Domain={d}"));
    }
    if settings.secure {
        c.push_str("; Secure");
    }
    if settings.http_only {
        c.push_str("; HttpOnly");
    }
    c.push_str(match settings.same_site {
        gateway_config::SameSite::Lax => "; SameSite=Lax",
        gateway_config::SameSite::Strict => "; SameSite=Strict",
        gateway_config::SameSite::None => "; SameSite=None",
    });
    c
}

/// Rendezvous (highest random weight) score of `key` on endpoint `id`: every PoP computes the
/// same winner, and removing an endpoint moves only the keys it had.
pub fn rendezvous_score(key: &str, id: &str) -> u64 {
    // FNV-1a over key, a separator and the id, then a 64-bit finalizer (splitmix).
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes().chain([0xff]).chain(id.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_keyed_macs_equal_fresh_ones_for_every_key() {
        let keys: Vec<Vec<u8>> = (0..KEYED_STATES as u8 + 3)
            .map(|i| vec![i; 32 + i as usize])
            .collect();
        // Twice over more keys than the cache holds: hits, misses and evictions.
        for _ in 0..2 {
            for key in &keys {
                let cached = mac(key, "v1.k.payload")
                    .expect("mac")
                    .finalize()
                    .into_bytes();
                let mut fresh = HmacSha256::new_from_slice(key).expect("key");
                fresh.update(b"v1.k.payload");
                assert_eq!(cached, fresh.finalize().into_bytes());
            }
        }
    }

    #[test]
    fn every_sticky_outcome_has_its_own_counter() {
        crate::telemetry::metrics::assert_label_set::<Outcome>();
    }
    use proptest::prelude::*;

    fn key(id: &str, secret: &str) -> StickyKey {
        StickyKey {
            id: id.into(),
            secret: secret.as_bytes().to_vec(),
        }
    }

    fn token() -> StickyToken {
        StickyToken {
            route: "api".into(),
            region: "fra".into(),
            endpoint: "fra-2".into(),
            issued: 1000,
            expires: 5000,
        }
    }

    #[test]
    fn roundtrip_and_rejections() {
        let k1 = key("k1", "0123456789abcdef0123456789abcdef");
        let k2 = key("k2", "fedcba9876543210fedcba9876543210");
        let text = token().encode(&k1);
        assert!(
            text.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.'),
            "{text}"
        );
        assert_eq!(
            StickyToken::decode(&text, &[k2.clone(), k1.clone()], "api", 2000),
            Ok(token())
        );
        assert_eq!(
            StickyToken::decode(&text, std::slice::from_ref(&k2), "api", 2000),
            Err(Invalid::UnknownKey)
        );
        assert_eq!(
            StickyToken::decode(&text, std::slice::from_ref(&k1), "web", 2000),
            Err(Invalid::WrongRoute)
        );
        assert_eq!(
            StickyToken::decode(&text, std::slice::from_ref(&k1), "api", 5000),
            Err(Invalid::Expired)
        );
        assert_eq!(
            StickyToken::decode(
                &text[..text.len() - 3],
                std::slice::from_ref(&k1),
                "api",
                2000
            ),
            Err(Invalid::Malformed)
        );
        assert_eq!(
            StickyToken::decode("garbage", std::slice::from_ref(&k1), "api", 2000),
            Err(Invalid::Malformed)
        );
        assert_eq!(
            StickyToken::decode(
                &text.replacen('1', "2", 1),
                std::slice::from_ref(&k1),
                "api",
                2000
            ),
            Err(Invalid::Version)
        );
        // Same key id, other secret: the MAC does not verify.
        let impostor = key("k1", "ffffffffffffffffffffffffffffffff");
        assert_eq!(
            StickyToken::decode(
                &token().encode(&impostor),
                std::slice::from_ref(&k1),
                "api",
                2000
            ),
            Err(Invalid::BadMac)
        );
        // A changed payload with the old MAC.
        let parts: Vec<&str> = text.split('.').collect();
        let other = StickyToken {
            endpoint: "fra-1".into(),
            ..token()
        }
        .encode(&k1);
        let other_payload = other.split('.').nth(2).expect("payload");
        let forged = format!("{}.{}.{}.{}", parts[0], parts[1], other_payload, parts[3]);
        assert_eq!(
            StickyToken::decode(&forged, &[k1], "api", 2000),
            Err(Invalid::BadMac)
        );
    }

    #[test]
    fn cookies_are_found_among_others() {
        let headers = [&b"a=1; gw_affinity=abc.def; b=2"[..], b"c=3"];
        assert_eq!(
            find_cookie(headers.iter().copied(), "gw_affinity"),
            Some("abc.def")
        );
        assert_eq!(find_cookie(headers.iter().copied(), "nope"), None);
    }

    #[test]
    fn rendezvous_moves_only_the_removed_endpoints_keys() {
        let ids = ["a", "b", "c", "d"];
        fn pick(key: &str, ids: &[&'static str]) -> &'static str {
            ids.iter()
                .copied()
                .max_by_key(|id| rendezvous_score(key, id))
                .expect("some")
        }
        let mut moved = 0;
        let mut on_c = 0;
        for i in 0..1000 {
            let key = format!("session-{i}");
            let before = pick(&key, &ids);
            let after = pick(&key, &["a", "b", "d"]);
            if before == "c" {
                on_c += 1;
            }
            if before != after {
                moved += 1;
                assert_eq!(before, "c");
            }
        }
        assert_eq!(moved, on_c);
        assert!(
            (150..350).contains(&on_c),
            "spread: {on_c} of 1000 on one of 4 endpoints"
        );
    }

    proptest! {
        #[test]
        fn encode_decode_roundtrip(route in "[a-z][a-z0-9-]{0,20}", region in "[a-z][a-z0-9-]{0,10}", endpoint in "[A-Za-z0-9._-]{1,30}", issued in 0u64..1u64 << 40, ttl in 1u64..1u64 << 20, secret in proptest::collection::vec(any::<u8>(), 32..64)) {
            let k = StickyKey { id: "k1".into(), secret };
            let t = StickyToken { route: route.clone(), region, endpoint, issued, expires: issued + ttl };
            let text = t.encode(&k);
            prop_assert_eq!(StickyToken::decode(&text, std::slice::from_ref(&k), &route, issued), Ok(t));
        }

        #[test]
        fn decoder_never_panics(text in ".{0,600}") {
            let k = StickyKey { id: "k1".into(), secret: vec![7; 32] };
            let _ = StickyToken::decode(&text, &[k], "api", 1000);
        }

        #[test]
        fn any_single_byte_change_is_rejected(pos in 0usize..200, byte in any::<u8>()) {
            let k = StickyKey { id: "k1".into(), secret: vec![9; 32] };
            let t = StickyToken { route: "api".into(), region: "fra".into(), endpoint: "fra-1".into(), issued: 10, expires: 99_999 };
            let text = t.encode(&k);
            let mut bytes = text.clone().into_bytes();
            let pos = pos % bytes.len();
            prop_assume!(bytes[pos] != byte);
            bytes[pos] = byte;
            if let Ok(changed) = String::from_utf8(bytes) {
                // A few base64 characters decode to the same bits (trailing bits); those must
                // decode to the very same token, anything else must be rejected.
                if let Ok(decoded) = StickyToken::decode(&changed, std::slice::from_ref(&k), "api", 100) {
                    prop_assert_eq!(decoded, t);
                }
            }
        }
    }
}
