//! An accepted connection's socket as hyper drives it: registered with the
//! runtime for reading only, and never `shutdown(2)`.
//!
//! - **Reading only.** tokio registers a socket for reading and writing,
//!   edge-triggered, so each time a client reads an answer (the send
//!   buffer drains) the thread waiting in `epoll_wait` wakes for nothing:
//!   for a client sending one request at a time (a shim, a sidecar, a
//!   plain client) that is a wake-up and two context switches per fetch.
//!   An answer is small and the send buffer is empty when it is written, so
//!   writes are tried directly; only when one would block (a client that
//!   does not read) is a duplicate of the descriptor registered for
//!   writing, for the rest of the connection.
//! - **No `shutdown(2)`.** hyper shuts the write side down as a connection
//!   ends; the socket is closed right after, which tells the client the
//!   same (end of file, and `ECONNRESET` if it left bytes unread), for one
//!   system call less per connection.

use std::io::{self, IoSlice, Read, Write};
use std::os::unix::net::UnixStream;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};

#[derive(Debug)]
pub(crate) struct Socket {
    stream: AsyncFd<UnixStream>,
    /// The same socket, registered for writing once a write would block.
    write_wait: Option<AsyncFd<UnixStream>>,
    /// Whether a read was tried. The first one is tried at once: a new
    /// registration knows of no readiness until the driver's next turn,
    /// and a client's first request is usually there already.
    read_tried: bool,
}

/// The most a read zeroes and takes at once: hyper hands a fresh,
/// uninitialised buffer each time (`TokioIo`), which may have grown far
/// past any request the broker accepts.
const READ_CHUNK: usize = 16 << 10;

impl Socket {
    /// Take over an accepted connection (it stays non-blocking).
    pub(crate) fn new(stream: tokio::net::UnixStream) -> io::Result<Socket> {
        let stream = stream.into_std()?;
        Ok(Socket {
            stream: register(stream, Interest::READABLE)?,
            write_wait: None,
            read_tried: false,
        })
    }

    /// Write with `write` now, else when the socket takes more.
    fn poll_write_with(
        &mut self,
        cx: &mut Context<'_>,
        write: impl Fn(&UnixStream) -> io::Result<usize>,
    ) -> Poll<io::Result<usize>> {
        match retry_interrupted(|| write(self.stream.get_ref())) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            done => return Poll::Ready(done),
        }
        let wait = match &mut self.write_wait {
            Some(w) => w,
            None => {
                let dup = self.stream.get_ref().try_clone()?;
                self.write_wait.insert(register(dup, Interest::WRITABLE)?)
            }
        };
        loop {
            let mut ready = ready!(wait.poll_write_ready(cx))?;
            // A `WouldBlock` clears the readiness: the next edge wakes us.
            if let Ok(done) = ready.try_io(|s| retry_interrupted(|| write(s.get_ref()))) {
                return Poll::Ready(done);
            }
        }
    }
}

/// `stream` registered with the runtime for `interest` alone.
///
/// tokio 1.54 deprecates this safe constructor for `unsafe
/// register_with_interest`, because an arbitrary `AsRawFd` could close or
/// swap its descriptor while registered; std's `UnixStream` owns its one
/// descriptor until it is dropped, which is the contract, so the crate
/// stays free of `unsafe`.
#[allow(deprecated)]
fn register(stream: UnixStream, interest: Interest) -> io::Result<AsyncFd<UnixStream>> {
    AsyncFd::with_interest(stream, interest)
}

/// One read into `buf`, at most [`READ_CHUNK`] of it.
fn read_into(mut stream: &UnixStream, buf: &mut ReadBuf<'_>) -> io::Result<()> {
    let chunk = buf.remaining().min(READ_CHUNK);
    let n = retry_interrupted(|| stream.read(buf.initialize_unfilled_to(chunk)))?;
    buf.advance(n);
    Ok(())
}

fn retry_interrupted<T>(mut f: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    loop {
        match f() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

impl AsyncRead for Socket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.read_tried {
            this.read_tried = true;
            match read_into(this.stream.get_ref(), buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                done => return Poll::Ready(done),
            }
        }
        loop {
            let mut ready = ready!(this.stream.poll_read_ready(cx))?;
            // A `WouldBlock` clears the readiness: the next edge wakes us.
            if let Ok(done) = ready.try_io(|s| read_into(s.get_ref(), buf)) {
                return Poll::Ready(done);
            }
        }
    }
}

impl AsyncWrite for Socket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().poll_write_with(cx, |mut s| s.write(buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut()
            .poll_write_with(cx, |mut s| s.write_vectored(bufs))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A request already in the socket when the connection is taken over
    /// is read on the first poll, before the runtime has seen any event.
    #[tokio::test]
    async fn a_request_already_there_is_read_at_once() {
        use std::future::Future;
        let (a, mut client) = tokio::net::UnixStream::pair().unwrap();
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        let mut server = Socket::new(a).unwrap();
        let mut buf = [0u8; 64];
        let read = std::pin::pin!(server.read(&mut buf));
        let waker = std::task::Waker::noop();
        let polled = read.poll(&mut Context::from_waker(waker));
        assert!(
            matches!(polled, Poll::Ready(Ok(18))),
            "the first poll did not read the waiting request: {polled:?}"
        );
        assert_eq!(&buf[..18], b"GET / HTTP/1.1\r\n\r\n");
    }

    /// A client that does not read fills the socket: the write waits for
    /// it (through the descriptor registered for writing) and completes
    /// once it reads, byte for byte.
    #[tokio::test]
    async fn a_write_past_a_full_socket_waits_for_the_reader() {
        let (a, b) = tokio::net::UnixStream::pair().unwrap();
        let mut server = Socket::new(a).unwrap();
        let mut client = b;
        let big: Vec<u8> = (0..4 << 20).map(|i| (i % 251) as u8).collect();
        let sent = big.clone();
        let writer = tokio::spawn(async move {
            server.write_all(&sent).await.unwrap();
            assert!(server.write_wait.is_some(), "the write never blocked");
            server
        });
        let mut got = vec![0; big.len()];
        tokio::time::timeout(
            std::time::Duration::from_secs(60),
            client.read_exact(&mut got),
        )
        .await
        .expect("the blocked write never resumed in 60 s")
        .unwrap();
        assert!(got == big, "the bytes read differ from those written");
        // And reading still works after the wait: an echo back.
        let mut server = tokio::time::timeout(std::time::Duration::from_secs(60), writer)
            .await
            .expect("the write did not complete in 60 s")
            .unwrap();
        client.write_all(b"ping").await.unwrap();
        let mut four = [0; 4];
        server.read_exact(&mut four).await.unwrap();
        assert_eq!(&four, b"ping");
        // The client leaving is an end of file to the server.
        drop(client);
        let mut rest = Vec::new();
        server.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
    }
}
