// PATCH (failover gateway): this file is new (vendor patch 31).

//! An HTTP/2 server connection's writes, coalesced across its streams.
//!
//! Each HTTP/2 stream is served by a task of its own, and each stream that answers wakes the
//! connection's task to write its frames. Tokio runs a task woken by the running one next (its
//! LIFO slot), and the h2 codec flushes after every DATA frame it does not copy, so the
//! connection wrote after every answer: one TLS record and one `sendto` per response, even when
//! many streams' answers were ready at the same moment. Here what the codec writes is gathered,
//! and the first flush of a round only wakes the connection's task (which then runs after the
//! tasks already woken, whose frames join the buffer); the next flush writes it all at once.
//! The wake guarantees that next flush: the codec flushes each time the connection is polled.

use std::fmt::Debug;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::protocols::raw_connect::ProxyDigest;
use crate::protocols::tls::{SslDigest, TlsRef};
use crate::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl, Stream,
    TimingDigest, UniqueID, UniqueIDType, ALPN,
};

/// What is gathered before it is written, at most (a few DATA frames of the default size).
const GATHER_LIMIT: usize = 64 * 1024;

/// A stream whose writes are gathered and written together (see the module's notes).
#[derive(Debug)]
pub struct CoalescedWrites {
    inner: Stream,
    /// Bytes accepted and not yet written to `inner`.
    pending: Vec<u8>,
    /// Of `pending`, the bytes already written.
    written: usize,
    /// A flush of this round already let the other tasks run once.
    yielded: bool,
}

impl CoalescedWrites {
    /// Wraps `inner`.
    pub fn new(inner: Stream) -> Self {
        Self {
            inner,
            pending: Vec::new(),
            written: 0,
            yielded: false,
        }
    }

    /// Writes what is gathered to `inner`, until it is all written or `inner` would wait.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.pending.len() {
            let n = std::task::ready!(
                Pin::new(&mut self.inner).poll_write(cx, &self.pending[self.written..])
            )?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        self.written = 0;
        // An idle connection holds no buffer.
        self.pending = Vec::new();
        Poll::Ready(Ok(()))
    }

    /// Takes `len` bytes into the buffer (`gather` copies them), once there is room.
    fn poll_gather(
        &mut self,
        cx: &mut Context<'_>,
        len: usize,
        gather: impl FnOnce(&mut Vec<u8>),
    ) -> Poll<io::Result<usize>> {
        if !self.pending.is_empty() && self.pending.len() + len > GATHER_LIMIT {
            std::task::ready!(self.poll_drain(cx))?;
        }
        gather(&mut self.pending);
        Poll::Ready(Ok(len))
    }
}

impl AsyncRead for CoalescedWrites {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for CoalescedWrites {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut()
            .poll_gather(cx, buf.len(), |pending| pending.extend_from_slice(buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let len = bufs.iter().map(|b| b.len()).sum();
        self.get_mut().poll_gather(cx, len, |pending| {
            for b in bufs {
                pending.extend_from_slice(b);
            }
        })
    }

    fn is_write_vectored(&self) -> bool {
        // Not vectored, the codec copies DATA frames under 1 KiB into its own buffer instead of
        // flushing after each (as it does over 256 bytes when vectored): the small answers of
        // one poll of the connection reach this stream in one write. A larger frame comes as
        // its header, then its payload: both are gathered here, not written as two records.
        false
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.pending.is_empty() {
            this.yielded = false;
            return Pin::new(&mut this.inner).poll_flush(cx);
        }
        if !this.yielded {
            // Reported flushed, and the task woken: it runs again after the tasks already
            // woken, and the codec's flush of that poll writes what they add too.
            this.yielded = true;
            cx.waker().wake_by_ref();
            return Poll::Ready(Ok(()));
        }
        std::task::ready!(this.poll_drain(cx))?;
        this.yielded = false;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        std::task::ready!(this.poll_drain(cx))?;
        std::task::ready!(Pin::new(&mut this.inner).poll_flush(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[async_trait]
impl Shutdown for CoalescedWrites {
    async fn shutdown(&mut self) {
        let _ = std::future::poll_fn(|cx| self.poll_drain(cx)).await;
        self.inner.shutdown().await
    }
}

impl UniqueID for CoalescedWrites {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for CoalescedWrites {
    fn get_ssl(&self) -> Option<&TlsRef> {
        self.inner.get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        self.inner.get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for CoalescedWrites {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }

    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for CoalescedWrites {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }

    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        self.inner.set_proxy_digest(digest)
    }
}

impl GetSocketDigest for CoalescedWrites {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }

    fn set_socket_digest(&mut self, socket_digest: SocketDigest) {
        self.inner.set_socket_digest(socket_digest)
    }
}

#[async_trait]
impl Peek for CoalescedWrites {
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        self.inner.try_peek(buf).await
    }
}
