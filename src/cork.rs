//! Write coalescing for HTTP/2 connections: a socket wrapper that holds a flush back for one turn
//! of the scheduler, so that frames other tasks queue in that turn leave in the same write.
//!
//! Why: h2 flushes as soon as its connection task runs, and on a multi-threaded runtime that is
//! at once, on the other worker. When a Raft entry commits, the answers to all the requests in
//! it become ready together; without this, each one leaves in its own writev (its own loopback
//! segment, its own wake-up and read on the client). grpc-java (Netty) and gRPC C-core coalesce
//! the same way: they flush once per event-loop turn, not once per message.
//!
//! The yield is tokio's `yield_now`, which defers the wake-up until this worker has nothing else
//! to run (and has polled for I/O), without waking an idle worker to steal it: an earlier version
//! that woke itself (`wake_by_ref`) woke the sibling worker on every flush and cost a window-1
//! producer 5-7%. The cost left is one extra poll of the connection task per flush; nothing waits
//! on a timer. Buffered bytes are bounded by `CORK_BYTES_MAX`: past it, writes go out before more
//! are taken.
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Most bytes held back before a write is forced.
pub const CORK_BYTES_MAX: usize = 256 * 1024;

/// Where the current flush is in its one turn of waiting.
enum Turn {
    Idle,
    Yielding(Pin<Box<dyn Future<Output = ()> + Send + Sync>>),
    /// Yielded already: write (a full socket may take several polls).
    Taken,
}

pub struct Corked<T> {
    inner: T,
    pending: BytesMut,
    turn: Turn,
}

impl<T> Corked<T> {
    pub fn new(inner: T) -> Corked<T> {
        Corked { inner, pending: BytesMut::new(), turn: Turn::Idle }
    }

    #[cfg(test)]
    fn get_ref(&self) -> &T {
        &self.inner
    }
}

impl<T: AsyncWrite + Unpin> Corked<T> {
    /// Writes out everything held back.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.pending.is_empty() {
            let written = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.pending))?;
            if written == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.pending.advance(written);
        }
        Poll::Ready(Ok(()))
    }

    /// Makes room: past the bound, what is held back goes out first.
    fn poll_room(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.pending.len() >= CORK_BYTES_MAX {
            ready!(self.poll_drain(cx))?;
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Corked<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Corked<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        ready!(self.poll_room(cx))?;
        self.pending.extend_from_slice(data);
        Poll::Ready(Ok(data.len()))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        ready!(self.poll_room(cx))?;
        let mut taken = 0;
        for buf in bufs {
            self.pending.extend_from_slice(buf);
            taken += buf.len();
        }
        Poll::Ready(Ok(taken))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.pending.is_empty() {
            if let Turn::Idle = self.turn {
                // Let every task that is ready now run (and queue its frames) before writing.
                self.turn = Turn::Yielding(Box::pin(tokio::task::yield_now()));
            }
            if let Turn::Yielding(turn) = &mut self.turn {
                ready!(turn.as_mut().poll(cx));
                self.turn = Turn::Taken;
            }
        }
        ready!(self.poll_drain(cx))?;
        self.turn = Turn::Idle;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_drain(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl<T: tonic::transport::server::Connected> tonic::transport::server::Connected for Corked<T> {
    type ConnectInfo = T::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// A socket that records each write it is given.
    #[derive(Default)]
    struct Recorder {
        writes: Vec<Vec<u8>>,
    }

    impl AsyncWrite for Recorder {
        fn poll_write(mut self: Pin<&mut Self>, _: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
            self.writes.push(data.to_vec());
            Poll::Ready(Ok(data.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    // Goal: frames written before a flush leave in one write, after one yield, in order.
    #[tokio::test]
    async fn writes_before_a_flush_leave_together() {
        let mut corked = Corked::new(Recorder::default());
        corked.write_all(b"headers").await.unwrap();
        corked.write_all(b"data").await.unwrap();
        assert!(corked.get_ref().writes.is_empty(), "nothing goes out before a flush");
        corked.flush().await.unwrap();
        assert_eq!(corked.get_ref().writes, vec![b"headersdata".to_vec()]);
        corked.flush().await.unwrap();
        assert_eq!(corked.get_ref().writes.len(), 1, "an empty flush writes nothing");
    }

    // Goal: no more than CORK_BYTES_MAX is held back, and shutdown sends what is left.
    #[tokio::test]
    async fn held_back_bytes_are_bounded_and_shutdown_drains() {
        let mut corked = Corked::new(Recorder::default());
        let chunk = vec![7u8; 64 * 1024];
        for _ in 0..5 {
            corked.write_all(&chunk).await.unwrap();
        }
        let written: usize = corked.get_ref().writes.iter().map(Vec::len).sum();
        assert_eq!(written, CORK_BYTES_MAX, "the bound forced a write");
        corked.shutdown().await.unwrap();
        let written: usize = corked.get_ref().writes.iter().map(Vec::len).sum();
        assert_eq!(written, 5 * chunk.len());
    }
}
