//! The gateway's own answers and how a failed request ends: the JSON error page for failures
//! before the response started ([`ErrorPage`], chosen from a typed cause), and who broke a
//! response that had already started ([`TruncationCause`]), which decides its metric label and
//! whether it counts against the upstream.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use pingora::http::ResponseHeader;
use pingora::protocols::http::ServerSession as HttpSession;
use pingora::proxy::Session;
use pingora::{Error, ErrorSource, ErrorType, Result};

use crate::proxy::grpc::{percent_encode, Code, GrpcKind};
use crate::routing::admission::ShedReason;

/// The gateway's own answer to a request that failed before its response started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ErrorPage {
    /// Every allowed region of the route is down: 503 with `Retry-After` (residency).
    AllRegionsDown,
    /// Shed by admission control: 503 with `Retry-After`, `"error": "overloaded"`.
    Overloaded(ShedReason),
    /// The upstream failed (connect, reset, 5xx that could not be retried): 502.
    UpstreamFailed,
    /// The upstream timed out (or the request's deadline passed): 504.
    UpstreamTimeout,
    /// A 4xx decided by Pingora (e.g. a request it cannot proxy): that status.
    Status(u16),
    /// The client sent something broken: 400.
    BadRequest,
    /// The request body (or one gRPC message of it) is over a route limit: 413.
    BodyTooLarge(BodyLimit),
    /// The request body was still arriving when the route's total deadline passed: 408.
    BodyTimeout,
    /// The gateway failed: 500.
    Internal,
    /// The client is gone or timed out: nothing to answer.
    ClientGone,
}

impl ErrorPage {
    /// The page for an error that ends a request (classified by type and source).
    pub(crate) fn of(e: &Error) -> Self {
        match e.etype() {
            ErrorType::HTTPStatus(code) if *code >= 500 => Self::UpstreamFailed,
            ErrorType::HTTPStatus(code) => Self::Status(*code),
            ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout => {
                if *e.esource() == ErrorSource::Downstream {
                    Self::ClientGone
                } else {
                    Self::UpstreamTimeout
                }
            }
            _ => match e.esource() {
                ErrorSource::Upstream => Self::UpstreamFailed,
                ErrorSource::Downstream => match e.etype() {
                    ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed => {
                        Self::ClientGone
                    }
                    _ => Self::BadRequest,
                },
                ErrorSource::Internal | ErrorSource::Unset => Self::Internal,
            },
        }
    }

    /// The status to answer with; 0 when there is no one to answer.
    pub(crate) fn status(self) -> u16 {
        match self {
            Self::AllRegionsDown | Self::Overloaded(_) => 503,
            Self::UpstreamFailed => 502,
            Self::UpstreamTimeout => 504,
            Self::Status(code) => code,
            Self::BadRequest => 400,
            Self::BodyTooLarge(_) => 413,
            Self::BodyTimeout => 408,
            Self::Internal => 500,
            Self::ClientGone => 0,
        }
    }

    /// The `error` field of the JSON body.
    pub(crate) fn message(self) -> &'static str {
        match self {
            Self::AllRegionsDown => "no allowed region is up",
            Self::Overloaded(_) => "overloaded",
            Self::UpstreamFailed => "upstream failed",
            Self::UpstreamTimeout => "upstream timeout",
            Self::Status(_) => "error",
            Self::BadRequest => "bad request",
            Self::BodyTooLarge(_) => "body too large",
            Self::BodyTimeout => "request body too slow",
            Self::Internal => "internal error",
            Self::ClientGone => "client gone",
        }
    }
}

/// The route limit a request body went over: its field and value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BodyLimit {
    /// `max_body_bytes` or `max_grpc_message_bytes`.
    pub field: &'static str,
    /// Its value.
    pub max: u64,
}

/// Who broke a response that had already started, for metrics and passive health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TruncationCause {
    /// The upstream reset, closed short, sent a bad frame or timed out: counts against it.
    Upstream,
    /// The client went away or could not be written to: never counts against the upstream.
    Client,
    /// The gateway itself gave up (internal error, shutdown).
    Gateway,
}

impl TruncationCause {
    pub(crate) fn of(e: &Error) -> Self {
        match e.esource() {
            ErrorSource::Upstream => Self::Upstream,
            ErrorSource::Downstream => Self::Client,
            ErrorSource::Internal | ErrorSource::Unset => Self::Gateway,
        }
    }

    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::Upstream => "upstream",
            Self::Client => "client",
            Self::Gateway => "gateway",
        }
    }
}

/// Writes the gateway's own JSON answer (`Retry-After: 1` on 503), echoing the request id.
pub(crate) async fn respond_json(
    session: &mut Session,
    request_id: Option<(&Bytes, &HeaderValue)>,
    code: u16,
    body: String,
) -> Result<()> {
    let mut resp = ResponseHeader::build(code, Some(4))?;
    resp.insert_header(header::CONTENT_TYPE, "application/json")?;
    resp.insert_header(header::CONTENT_LENGTH, body.len().to_string())?;
    resp.insert_header(header::CACHE_CONTROL, "no-store")?;
    if code == 503 {
        resp.insert_header(header::RETRY_AFTER, "1")?;
    }
    if let Some((name, id)) = request_id {
        resp.insert_header(name.clone(), id.clone())?;
    }
    session.write_response_header(Box::new(resp), false).await?;
    session
        .write_response_body(Some(Bytes::from(body)), true)
        .await?;
    Ok(())
}

/// Writes the gateway's own answer to a gRPC request (`kind`): Trailers-Only, i.e. one header
/// block that ends the stream, with HTTP 200, the request's gRPC `content-type`, `grpc-status`
/// `code`, `grpc-message` `reason` (percent-encoded) and `grpc-retry-pushback-ms` where the
/// JSON answer would carry `Retry-After` (`pushback`); the request id echoed.
pub(crate) async fn respond_grpc(
    session: &mut Session,
    request_id: Option<(&Bytes, &HeaderValue)>,
    kind: GrpcKind,
    (code, reason): (Code, &str),
    pushback: bool,
) -> Result<()> {
    let mut resp = ResponseHeader::build(200, Some(6))?;
    let content_type = match kind {
        // A grpc-web client reads the status from these headers, as it does a Trailers-Only
        // answer's; its body is empty.
        GrpcKind::Web | GrpcKind::WebText => session
            .req_header()
            .headers
            .get(header::CONTENT_TYPE)
            .cloned()
            .unwrap_or(HeaderValue::from_static("application/grpc-web")),
        GrpcKind::Grpc => HeaderValue::from_static("application/grpc"),
    };
    resp.insert_header(header::CONTENT_TYPE, content_type)?;
    resp.insert_header("grpc-status", code.value().to_string())?;
    resp.insert_header("grpc-message", percent_encode(reason))?;
    if pushback {
        resp.insert_header("grpc-retry-pushback-ms", "1000")?;
    }
    if let Some((name, id)) = request_id {
        resp.insert_header(name.clone(), id.clone())?;
    }
    // Over HTTP/2 the header block itself ends the stream: a gRPC client reads the status
    // from headers only when no DATA frame follows (grpc-go would see a stream "closed without
    // trailers"). The proxy's session ignores `end_of_stream` for HTTP/2, so the downstream
    // session is told directly.
    if let HttpSession::H2(h2) = session.as_mut() {
        return h2.write_response_header(Box::new(resp), true);
    }
    // HTTP/1.x (grpc-web) has no stream to end: the empty body is declared.
    resp.insert_header(header::CONTENT_LENGTH, "0")?;
    session.write_response_header(Box::new(resp), false).await?;
    session.write_response_body(None, true).await
}

/// A JSON string literal.
pub(crate) fn json_string(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

/// Client input echoed in an error body is cut to this many bytes (a client must not make the
/// gateway's answers as large as its own headers).
const ECHO_MAX: usize = 256;

/// `s` as a JSON string, cut to [`ECHO_MAX`] bytes (at a character boundary) with `…` when cut.
pub(crate) fn json_echo(s: &str) -> String {
    if s.len() <= ECHO_MAX {
        return json_string(s);
    }
    let mut end = ECHO_MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    json_string(&format!("{}…", &s[..end]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_pages_by_type_and_source() {
        let up = |t: ErrorType| {
            let mut e = Error::new(t);
            e.as_up();
            e
        };
        let down = |t: ErrorType| {
            let mut e = Error::new(t);
            e.as_down();
            e
        };
        let rows = [
            (up(ErrorType::ConnectRefused), 502),
            (up(ErrorType::ConnectionClosed), 502),
            (up(ErrorType::HTTPStatus(503)), 502),
            (up(ErrorType::ReadTimedout), 504),
            (up(ErrorType::ConnectTimedout), 504),
            (down(ErrorType::ReadTimedout), 0),
            (down(ErrorType::ConnectionClosed), 0),
            (down(ErrorType::InvalidHTTPHeader), 400),
            (Error::new(ErrorType::HTTPStatus(405)), 405),
            (Error::new(ErrorType::InternalError), 500),
        ];
        for (e, want) in rows {
            assert_eq!(ErrorPage::of(&e).status(), want, "{e}");
        }
        assert_eq!(ErrorPage::AllRegionsDown.status(), 503);
    }
}
