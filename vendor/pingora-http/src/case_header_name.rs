// Copyright 2026 Cloudflare, Inc.
//
// Licensed under the Apache License, Version 2.0 (the "License");
// you may not use this file except in compliance with the License.
// You may obtain a copy of the License at
//
// http://www.apache.org/licenses/LICENSE-2.0
//
// Unless required by applicable law or agreed to in writing, software
// distributed under the License is distributed on an "AS IS" BASIS,
// WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
// See the License for the specific language governing permissions and
// limitations under the License.

use crate::*;
use bytes::Bytes;
use http::header;

#[derive(Debug, Clone)]
pub struct CaseHeaderName(Bytes);

impl CaseHeaderName {
    pub fn new(name: String) -> Self {
        CaseHeaderName(name.into())
    }
}

impl CaseHeaderName {
    pub fn as_slice(&self) -> &[u8] {
        &self.0
    }

    pub fn from_slice(buf: &[u8]) -> Self {
        CaseHeaderName(Bytes::copy_from_slice(buf))
    }

    // PATCH (failover gateway): for `insert_parsed_header`, without a copy.
    pub(crate) fn from_bytes(name: Bytes) -> Self {
        CaseHeaderName(name)
    }

    // PATCH (failover gateway): for `name_case`, without a copy.
    pub(crate) fn into_bytes(self) -> Bytes {
        self.0
    }
}

/// A trait that converts into case-sensitive header names.
pub trait IntoCaseHeaderName {
    fn into_case_header_name(self) -> CaseHeaderName;

    /// The parsed name and its spelling.
    // PATCH (failover gateway): a `HeaderName` is not parsed again from its own spelling.
    fn into_parsed(self) -> pingora_error::Result<(HeaderName, CaseHeaderName)>
    where
        Self: Sized,
    {
        use pingora_error::{ErrorType::InvalidHTTPHeader, OrErr};
        let case = self.into_case_header_name();
        let name = parse_name(case.as_slice()).or_err(InvalidHTTPHeader, "invalid header name")?;
        Ok((name, case))
    }
}

/// PATCH (failover gateway, patch 50): a header name as read, parsed once per thread while it
/// keeps coming. Every field of every head read was parsed into a `HeaderName` (its bytes
/// lowercased through a table and matched against the standard names; a custom name copied
/// into a new allocation, promoted to a shared one at its first clone). Heads repeat their
/// names, so each thread keeps the last name parsed for each of 64 slots, chosen by the
/// spelling's length and first, middle and last bytes; a hit compares the spelling and clones
/// the name (a custom name's bytes are shared, not copied). Spellings over 64 bytes are not
/// kept; an invalid one is never kept, so it fails as before.
pub(crate) fn parse_name(spelling: &[u8]) -> Result<HeaderName, header::InvalidHeaderName> {
    use std::cell::RefCell;

    const SLOTS: usize = 64;
    const LONGEST: usize = 64;
    thread_local! {
        static NAMES: RefCell<[Option<(Bytes, HeaderName)>; SLOTS]> =
            const { RefCell::new([const { None }; SLOTS]) };
    }

    let len = spelling.len();
    if len == 0 || len > LONGEST {
        return HeaderName::from_bytes(spelling);
    }
    let slot = (len
        ^ (spelling[0] as usize).wrapping_mul(7)
        ^ (spelling[len / 2] as usize).wrapping_mul(13)
        ^ (spelling[len - 1] as usize).wrapping_mul(31))
        % SLOTS;
    NAMES.with(|names| {
        let mut names = names.borrow_mut();
        if let Some((kept, name)) = &names[slot] {
            if kept.as_ref() == spelling {
                return Ok(name.clone());
            }
        }
        let name = HeaderName::from_bytes(spelling)?;
        // A clone shares a custom name's bytes from here on (the first clone of a copied
        // slice allocates once to share them).
        names[slot] = Some((Bytes::copy_from_slice(spelling), name.clone()));
        Ok(name)
    })
}

impl IntoCaseHeaderName for CaseHeaderName {
    fn into_case_header_name(self) -> CaseHeaderName {
        self
    }
}

impl IntoCaseHeaderName for String {
    fn into_case_header_name(self) -> CaseHeaderName {
        CaseHeaderName(self.into())
    }
}

impl IntoCaseHeaderName for &'static str {
    fn into_case_header_name(self) -> CaseHeaderName {
        CaseHeaderName(self.into())
    }
}

impl IntoCaseHeaderName for HeaderName {
    fn into_case_header_name(self) -> CaseHeaderName {
        CaseHeaderName(titled_header_name(&self))
    }

    fn into_parsed(self) -> pingora_error::Result<(HeaderName, CaseHeaderName)> {
        let case = CaseHeaderName(titled_header_name(&self));
        Ok((self, case))
    }
}

impl IntoCaseHeaderName for &HeaderName {
    fn into_case_header_name(self) -> CaseHeaderName {
        CaseHeaderName(titled_header_name(self))
    }

    fn into_parsed(self) -> pingora_error::Result<(HeaderName, CaseHeaderName)> {
        Ok((self.clone(), CaseHeaderName(titled_header_name(self))))
    }
}

impl IntoCaseHeaderName for Bytes {
    fn into_case_header_name(self) -> CaseHeaderName {
        CaseHeaderName(self)
    }
}

fn titled_header_name(header_name: &HeaderName) -> Bytes {
    titled_header_name_str(header_name).map_or_else(
        || Bytes::copy_from_slice(header_name.as_str().as_bytes()),
        |s| Bytes::from_static(s.as_bytes()),
    )
}

pub(crate) fn titled_header_name_str(header_name: &HeaderName) -> Option<&'static str> {
    Some(match *header_name {
        header::ACCEPT_RANGES => "Accept-Ranges",
        header::AGE => "Age",
        header::CACHE_CONTROL => "Cache-Control",
        header::CONNECTION => "Connection",
        header::CONTENT_TYPE => "Content-Type",
        header::CONTENT_ENCODING => "Content-Encoding",
        header::CONTENT_LENGTH => "Content-Length",
        header::DATE => "Date",
        header::TRANSFER_ENCODING => "Transfer-Encoding",
        header::HOST => "Host",
        header::SERVER => "Server",
        header::SET_COOKIE => "Set-Cookie",
        // TODO: add more const header here to map to their titled case
        // TODO: automatically upper case the first letter?
        _ => {
            return None;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_case_header_name() {
        assert_eq!("FoO".into_case_header_name().as_slice(), b"FoO");
        assert_eq!("FoO".to_string().into_case_header_name().as_slice(), b"FoO");
        assert_eq!(header::SERVER.into_case_header_name().as_slice(), b"Server");
    }

    // PATCH (failover gateway, patch 50).
    /// The per-thread name cache answers what `HeaderName::from_bytes` answers: for standard
    /// and custom names in any case, names sharing a slot, names over the kept length, empty
    /// and invalid ones, asked again and again in varying order.
    #[test]
    fn a_kept_name_is_the_name_parsed() {
        let mut spellings: Vec<Vec<u8>> = [
            "Host", "host", "HOST", "Content-Length", "content-length", "X-Request-Id",
            "x-request-id", "x-forwarded-for", "Set-Cookie", "", "bad name", "bad:name",
            "\u{e9}t\u{e9}", "X-A", "x-a", "X-B",
        ]
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect();
        spellings.push(vec![b'x'; 64]);
        spellings.push(vec![b'x'; 65]);
        spellings.push(b"x-".iter().chain(&[b'y'; 200]).copied().collect());
        // Many more names than slots: most share a slot with another.
        for i in 0..500 {
            spellings.push(format!("X-Field-{i}").into_bytes());
        }
        let mut seed = 7u64;
        for round in 0..4 {
            for _ in 0..spellings.len() {
                seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let spelling = &spellings[(seed >> 33) as usize % spellings.len()];
                let kept = parse_name(spelling);
                let parsed = HeaderName::from_bytes(spelling);
                match (kept, parsed) {
                    (Ok(a), Ok(b)) => assert_eq!(a, b, "{spelling:?}, round {round}"),
                    (Err(_), Err(_)) => {}
                    (a, b) => panic!("{spelling:?}: kept {a:?}, parsed {b:?}"),
                }
            }
        }
    }
}
