//! Upstream connections that can be aborted when their endpoint is marked down.
//!
//! Pingora waits for an upstream response until its read timeout. When a region is blackholed
//! (it accepts connections and never answers) that would make users wait the full timeout. Every
//! upstream connection therefore holds its endpoint's abort token: when health marks the
//! endpoint down, every later read and write on its connections fails, those waiting at once,
//! and the proxy retries idempotent requests elsewhere (see `error_while_proxy` in
//! [`crate::proxy`]). Each read and write first checks the endpoint's down count (one atomic
//! load); the token itself, whose state sits behind two locks, is polled only when the socket
//! would wait with a task it has not yet registered, to be woken by the mark-down.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use async_trait::async_trait;
use gateway_health::EndpointHealth;
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
    /// The endpoint connected to.
    pub endpoint: Arc<EndpointHealth>,
    /// Cancelled when the endpoint is marked down.
    pub token: CancellationToken,
    /// The endpoint's down count when `token` was handed out.
    pub generation: u64,
    /// TCP connect timeout.
    pub connect_timeout: Duration,
}

#[async_trait]
impl L4Connect for AbortableConnect {
    async fn connect(&self, addr: &SocketAddr) -> Result<Stream> {
        let inet = *addr
            .as_inet()
            .ok_or_else(|| Error::explain(ErrorType::ConnectError, "not an inet address"))?;
        if self.endpoint.marked_down_since(self.generation) {
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
            endpoint: self.endpoint.clone(),
            generation: self.generation,
            cancelled: Box::pin(self.token.clone().cancelled_owned()),
            registered: None,
            aborted: false,
        };
        Ok(Stream::from(VirtualSocketStream::new(Box::new(socket))))
    }
}

/// A TCP stream whose I/O fails once its token is cancelled.
struct AbortableSocket {
    inner: TcpStream,
    endpoint: Arc<EndpointHealth>,
    generation: u64,
    cancelled: Pin<Box<WaitForCancellationFutureOwned>>,
    /// The task whose waker `cancelled` was last polled with: it stays registered with the
    /// token until polled with another.
    registered: Option<Waker>,
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
    /// `io` as it is, unless the endpoint was marked down: then the abort error, for this and
    /// every later call. When `io` would wait, polling the token registers the task's waker
    /// with it, so the wait ends when the endpoint goes down.
    fn unless_aborted<T>(
        &mut self,
        cx: &mut Context<'_>,
        io: impl FnOnce(Pin<&mut TcpStream>, &mut Context<'_>) -> Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if self.aborted || self.endpoint.marked_down_since(self.generation) {
            self.aborted = true;
            return Poll::Ready(Err(aborted()));
        }
        match io(Pin::new(&mut self.inner), cx) {
            // Already registered with this task: a mark-down wakes it (the down count is raised
            // before the token is cancelled, so the check above sees it). Polling the token again
            // took both its locks, two or three times per request.
            Poll::Pending
                if self
                    .registered
                    .as_ref()
                    .is_some_and(|w| w.will_wake(cx.waker())) =>
            {
                Poll::Pending
            }
            Poll::Pending => {
                if self.cancelled.as_mut().poll(cx).is_ready() {
                    self.aborted = true;
                    return Poll::Ready(Err(aborted()));
                }
                self.registered = Some(cx.waker().clone());
                Poll::Pending
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

    fn poll_read_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Readiness, not a zero-length read: one system call less per response.
        self.unless_aborted(cx, |inner, cx| inner.poll_read_ready(cx))
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

#[cfg(test)]
mod tests {
    use super::*;
    use gateway_config::{EndpointId, RegionName};
    use gateway_health::{Failure, HealthHub, HealthPolicy, Passive, TargetKey};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// An endpoint ejected at its first failure, and an abortable connection to a listener
    /// standing for it: the endpoint, the client's end and the server's.
    async fn abortable_pair() -> (Arc<EndpointHealth>, Stream, tokio::net::TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let hub = HealthHub::new();
        let region = hub.region(&RegionName::try_new("fra").expect("name"));
        let policy = HealthPolicy {
            rise: 1,
            fall: 1,
            consecutive_failures: Some(1),
            ejection: Duration::from_secs(60),
            max_ejection: Duration::from_secs(60),
        };
        let key = TargetKey {
            id: EndpointId::try_new("fra-1").expect("id"),
            addr,
        };
        let endpoint = hub.endpoint(&region, key, policy);
        let (token, generation) = endpoint.abort_token();
        let connect = AbortableConnect {
            endpoint: endpoint.clone(),
            token,
            generation,
            connect_timeout: Duration::from_secs(10),
        };
        let client = connect
            .connect(&SocketAddr::Inet(addr))
            .await
            .expect("connect");
        let (server, _) = listener.accept().await.expect("accept");
        (endpoint, client, server)
    }

    /// Issue 12's "no optimisation changes behaviour": once the endpoint is marked down, a read
    /// fails even when the socket already holds the upstream's bytes.
    #[tokio::test]
    async fn a_marked_down_endpoint_fails_reads_even_with_bytes_waiting() {
        let (endpoint, mut client, mut server) = abortable_pair().await;

        server.write_all(b"first").await.expect("write");
        let mut buf = [0u8; 5];
        client.read_exact(&mut buf).await.expect("read while up");
        assert_eq!(&buf, b"first");

        // Bytes in the client's receive buffer, then the mark-down.
        server.write_all(b"second").await.expect("write");
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(endpoint.report_failure(Failure::Definite), Passive::Ejected);
        let err = client.read(&mut buf).await.expect_err("aborted");
        assert_eq!(err.kind(), io::ErrorKind::ConnectionAborted, "{err}");
        let err = client.write_all(b"x").await.expect_err("aborted");
        assert_eq!(err.kind(), io::ErrorKind::ConnectionAborted, "{err}");

        // A connection for the new generation is not aborted.
        let (token, generation) = endpoint.abort_token();
        assert!(!endpoint.marked_down_since(generation));
        assert!(!token.is_cancelled());
    }

    /// The token is polled once per waiting task, not on every wait: a read that waited twice
    /// with the same task is still woken by the mark-down, and then fails.
    #[tokio::test]
    async fn a_read_waiting_again_with_the_same_task_is_woken_by_the_mark_down() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::task::Wake;

        struct Count(AtomicUsize);
        impl Wake for Count {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }

        let (endpoint, mut client, _server) = abortable_pair().await;

        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        let mut bytes = [0u8; 8];
        for _ in 0..2 {
            let mut buf = ReadBuf::new(&mut bytes);
            assert!(Pin::new(&mut client)
                .poll_read(&mut cx, &mut buf)
                .is_pending());
        }
        assert_eq!(count.0.load(Ordering::SeqCst), 0, "nothing to wake for yet");

        assert_eq!(endpoint.report_failure(Failure::Definite), Passive::Ejected);
        assert!(
            count.0.load(Ordering::SeqCst) >= 1,
            "the mark-down woke the waiting read"
        );
        let mut buf = ReadBuf::new(&mut bytes);
        match Pin::new(&mut client).poll_read(&mut cx, &mut buf) {
            Poll::Ready(Err(e)) => assert_eq!(e.kind(), io::ErrorKind::ConnectionAborted),
            other => panic!("the woken read should fail: {other:?}"),
        }
    }
}
