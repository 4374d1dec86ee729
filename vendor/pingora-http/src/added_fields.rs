// PATCH (failover gateway, patch 60): fields a proxy adds to a request head it otherwise
// forwards as the client sent it, written after the head's own fields on the HTTP/1 wire, so
// the head is not cloned to be changed (see `ProxyHttp::upstream_request_fields`).

use bytes::BytesMut;
use http::header::{HeaderName, HeaderValue};
use pingora_error::{Error, ErrorType::InvalidHTTPHeader, Result};

/// Appends fields to a request head being written on the HTTP/1 wire, after the head's own.
pub struct FieldWriter<'a> {
    buf: &'a mut BytesMut,
}

impl<'a> FieldWriter<'a> {
    /// Writes into `buf`, which holds a head's request line and fields without the blank line
    /// that ends it.
    pub fn new(buf: &'a mut BytesMut) -> Self {
        FieldWriter { buf }
    }

    /// Writes `spelling: value` as a field. `spelling` is `name` as it goes on the wire (in
    /// any case): the spelling of another name is refused and nothing is written.
    pub fn push(&mut self, name: &HeaderName, spelling: &[u8], value: &HeaderValue) -> Result<()> {
        self.put(name, spelling, value.as_bytes())
    }

    /// [`Self::push`] for a value made as bytes: a value `HeaderValue` would refuse (a control
    /// byte other than HTAB) is refused and nothing is written.
    pub fn push_bytes(&mut self, name: &HeaderName, spelling: &[u8], value: &[u8]) -> Result<()> {
        if !value.iter().all(|&b| (b >= 0x20 && b != 0x7f) || b == b'\t') {
            return Error::e_explain(InvalidHTTPHeader, "invalid field value");
        }
        self.put(name, spelling, value)
    }

    fn put(&mut self, name: &HeaderName, spelling: &[u8], value: &[u8]) -> Result<()> {
        // Most spellings are the name itself: one comparison of the bytes, not a byte at a time.
        let lower = name.as_str().as_bytes();
        if spelling != lower && !spelling.eq_ignore_ascii_case(lower) {
            return Error::e_explain(InvalidHTTPHeader, "field spelling of another name");
        }
        let len = spelling.len() + value.len() + 4;
        self.buf.reserve(len);
        // One capacity check for the four parts.
        let room = &mut self.buf.spare_capacity_mut()[..len];
        let (name_room, rest) = room.split_at_mut(spelling.len());
        let (colon, rest) = rest.split_at_mut(2);
        let (value_room, end) = rest.split_at_mut(value.len());
        copy(name_room, spelling);
        copy(colon, b": ");
        copy(value_room, value);
        copy(end, b"\r\n");
        // SAFETY: the `len` bytes after the buffer's end were written just above.
        unsafe { self.buf.set_len(self.buf.len() + len) };
        Ok(())
    }
}

fn copy(to: &mut [std::mem::MaybeUninit<u8>], from: &[u8]) {
    // SAFETY: `u8` and `MaybeUninit<u8>` have the same layout; the lengths are equal.
    to.copy_from_slice(unsafe { &*(from as *const [u8] as *const [std::mem::MaybeUninit<u8>]) });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_field_is_written_as_spelled_and_a_bad_one_not_at_all() {
        let mut buf = BytesMut::from(&b"GET / HTTP/1.1\r\nHost: a\r\n"[..]);
        let mut fields = FieldWriter::new(&mut buf);
        let xff = HeaderName::from_static("x-forwarded-for");
        fields.push_bytes(&xff, b"X-Forwarded-For", b"10.0.0.1").unwrap();
        assert!(fields.push_bytes(&xff, b"x-forwarded-fo", b"1").is_err());
        let one = HeaderValue::from_static("1");
        assert!(fields.push(&xff, b"x-forwarded-fo", &one).is_err());
        assert!(fields.push_bytes(&xff, b"x-forwarded-for", b"1\r\nEvil: 1").is_err());
        assert!(fields.push_bytes(&xff, b"x-forwarded-for", b"\x7f").is_err());
        fields.push_bytes(&xff, b"x-forwarded-for", b"a\tb").unwrap();
        fields.push(&xff, b"X-FORWARDED-FOR", &one).unwrap();
        assert_eq!(
            &buf[..],
            b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 10.0.0.1\r\nx-forwarded-for: a\tb\r\nX-FORWARDED-FOR: 1\r\n"
        );
    }
}
