// PATCH (failover gateway, patch 60): fields a proxy adds to a request head it otherwise
// forwards as the client sent it, written after the head's own fields on the HTTP/1 wire, so
// the head is not cloned to be changed (see `ProxyHttp::upstream_request_fields`).

use bytes::{BufMut, BytesMut};
use http::header::HeaderName;
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
    /// any case); `value` is a field value as `HeaderValue` accepts it (no control byte but
    /// HTAB). A spelling of another name or an invalid value is refused and nothing is
    /// written.
    pub fn push(&mut self, name: &HeaderName, spelling: &[u8], value: &[u8]) -> Result<()> {
        if !spelling.eq_ignore_ascii_case(name.as_str().as_bytes()) {
            return Error::e_explain(InvalidHTTPHeader, "field spelling of another name");
        }
        if !value.iter().all(|&b| (b >= 0x20 && b != 0x7f) || b == b'\t') {
            return Error::e_explain(InvalidHTTPHeader, "invalid field value");
        }
        self.buf.reserve(spelling.len() + value.len() + 4);
        self.buf.put_slice(spelling);
        self.buf.put_slice(b": ");
        self.buf.put_slice(value);
        self.buf.put_slice(b"\r\n");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_field_is_written_as_spelled_and_a_bad_one_not_at_all() {
        let mut buf = BytesMut::from(&b"GET / HTTP/1.1\r\nHost: a\r\n"[..]);
        let mut fields = FieldWriter::new(&mut buf);
        let xff = HeaderName::from_static("x-forwarded-for");
        fields.push(&xff, b"X-Forwarded-For", b"10.0.0.1").unwrap();
        assert!(fields.push(&xff, b"x-forwarded-fo", b"1").is_err());
        assert!(fields.push(&xff, b"x-forwarded-for", b"1\r\nEvil: 1").is_err());
        assert!(fields.push(&xff, b"x-forwarded-for", b"\x7f").is_err());
        fields.push(&xff, b"x-forwarded-for", b"a\tb").unwrap();
        assert_eq!(
            &buf[..],
            b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 10.0.0.1\r\nx-forwarded-for: a\tb\r\n"
        );
    }
}
