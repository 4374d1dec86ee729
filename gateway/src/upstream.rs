//! Upstream connections that can be aborted when their endpoint is marked down.
//!
//! Pingora waits for an upstream response until its read timeout. When a region is blackholed
//! (it accepts connections and never answers) that would make users wait the full timeout. Every
//! upstream connection therefore holds its endpoint's abort token: when health marks the
//! endpoint down, reads and writes on its connections that wait fail at once, and the proxy
//! retries idempotent requests elsewhere (see `error_while_proxy` in [`crate::proxy`]). Bytes
//! the socket already has are still passed on: the token is polled only when the socket would
//! wait, which also keeps its locks off the path of every read and write that completes at once.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use pingora::connectors::L4Connect;
use pingora::protocols::l4::socket::SocketAddr;
use pingora::protocols::l4::stream::Stream;
use pingora::protocols::l4::virt::{VirtualSockOpt, VirtualSocket, VirtualSocketStream};
use pingora::{Error, ErrorType, OrErr, Result};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

/// Connects with a timeout and ties the connection to an abort token.
#[derive(Debug)]
pub struct AbortableConnect {
    /// Cancelled when the endpoint is marked down.
    pub token: CancellationToken,
    /// TCP connect timeout.
    pub connect_timeout: Duration,
}

#[async_trait]
impl L4Connect for AbortableConnect {
    async fn connect(&self, addr: &SocketAddr) -> Result<Stream> {
        let inet = *addr
            .as_inet()
            .ok_or_else(|| Error::explain(ErrorType::ConnectError, "not an inet address"))?;
        if self.token.is_cancelled() {
            return Error::e_explain(
                ErrorType::ConnectError,
                format!("{inet}: endpoint marked down"),
            );
        }
        let stream =
            match tokio::time::timeout(self.connect_timeout, TcpStream::connect(inet)).await {
                Err(_) => {
                    return Error::e_explain(
                        ErrorType::ConnectTimedout,
                        format!("timeout {:?} connecting to {inet}", self.connect_timeout),
                    )
                }
                Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    return Err(e).or_err(ErrorType::ConnectRefused, "connection refused");
                }
                Ok(Err(e)) => return Err(e).or_err(ErrorType::ConnectError, "connect failed"),
                Ok(Ok(s)) => s,
            };
        let _ = stream.set_nodelay(true);
        let socket = AbortableSocket {
            inner: stream,
            cancelled: Box::pin(self.token.clone().cancelled_owned()),
            aborted: false,
        };
        Ok(Stream::from(VirtualSocketStream::new(Box::new(socket))))
    }
}

/// A TCP stream whose I/O fails once its token is cancelled.
struct AbortableSocket {
    inner: TcpStream,
    cancelled: Pin<Box<WaitForCancellationFutureOwned>>,
    aborted: bool,
}

impl std::fmt::Debug for AbortableSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AbortableSocket")
            .field("inner", &self.inner)
            .field("aborted", &self.aborted)
            .finish()
    }
}

fn aborted() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionAborted, "endpoint marked down")
}

impl AbortableSocket {
    /// `io` as it is, unless it would wait and the endpoint is marked down: then the abort
    /// error (and every later call fails too). Polling the token registers the task's waker
    /// with it, so a wait in progress ends when the endpoint goes down.
    fn unless_aborted<T>(
        &mut self,
        cx: &mut Context<'_>,
        io: impl FnOnce(Pin<&mut TcpStream>, &mut Context<'_>) -> Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if self.aborted {
            return Poll::Ready(Err(aborted()));
        }
        match io(Pin::new(&mut self.inner), cx) {
            Poll::Pending if self.cancelled.as_mut().poll(cx).is_ready() => {
                self.aborted = true;
                Poll::Ready(Err(aborted()))
            }
            done => done,
        }
    }
}

impl AsyncRead for AbortableSocket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.get_mut()
            .unless_aborted(cx, |inner, cx| inner.poll_read(cx, buf))
    }
}

impl AsyncWrite for AbortableSocket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut()
            .unless_aborted(cx, |inner, cx| inner.poll_write(cx, buf))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

impl VirtualSocket for AbortableSocket {
    fn raw_fd(&self) -> std::os::unix::io::RawFd {
        // Unique per open connection: Pingora's connection pool keys idle connections by it.
        std::os::unix::io::AsRawFd::as_raw_fd(&self.inner)
    }

    fn set_socket_option(&self, opt: VirtualSockOpt) -> io::Result<()> {
        match opt {
            VirtualSockOpt::NoDelay => self.inner.set_nodelay(true),
            // TCP keepalive is not used towards upstreams; idle connections are bounded by the
            // pool's idle timeout.
            _ => Ok(()),
        }
    }
}
