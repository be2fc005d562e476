//! The HTTP server under the router: accepts connections up to a cap, serves each with hyper's
//! HTTP/1.1 with a deadline on the request head, and stops gracefully within a grace period.
//!
//! Invariants:
//! - At most `max_connections` connections are served at once; one past the cap is answered
//!   `503` with `Retry-After` and closed, so a flood of idle or slow connections never grows
//!   the node's memory or tasks without bound, and the client learns why.
//! - A request head (and the idle time before the next one on a kept-alive connection) must
//!   arrive within `header_read_timeout`, else the connection is closed: a half-sent header
//!   holds nothing for long. Bodies are paced by [`super::body::MinRateBody`].
//! - A response the client stops taking (a live tail or a stream it no longer reads) closes the
//!   connection after `send_timeout` without progress ([`SendDeadline`]), so an unread stream
//!   cannot hold a connection slot forever.
//! - Shutdown stops accepting at once, tells long-lived streams (live tail, follow) to end
//!   through [`Shutdown`], lets requests in flight finish for `shutdown_grace`, then cuts what
//!   is left, so SIGTERM always ends the process.

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

/// How the server treats connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerLimits {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    /// How long a response may wait for the client to take more of it.
    pub send_timeout: Duration,
    pub shutdown_grace: Duration,
}

pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
pub const DEFAULT_SEND_TIMEOUT: Duration = Duration::from_secs(60);

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            send_timeout: DEFAULT_SEND_TIMEOUT,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
        }
    }
}

/// Tells long-lived responses that the node is stopping: they end on their own (a live tail
/// or a follow stream would otherwise hold the connection, and the shutdown, forever).
#[derive(Debug, Clone)]
pub struct Shutdown {
    receiver: watch::Receiver<bool>,
}

impl Shutdown {
    pub fn new(receiver: watch::Receiver<bool>) -> Shutdown {
        Shutdown { receiver }
    }

    /// Resolves once the node is stopping.
    pub async fn wait(&self) {
        let mut receiver = self.receiver.clone();
        let _ = receiver.wait_for(|stopping| *stopping).await;
    }

    pub fn is_stopping(&self) -> bool {
        *self.receiver.borrow()
    }
}

/// The largest request head (request line and headers); a larger one is answered 414 or 431 by
/// hyper, without a body.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// The most a connection buffers of what the client sent at once, head or body: read memory is
/// bounded at this many bytes per connection, whatever clients send.
pub const MAX_READ_BUFFER_BYTES: usize = 128 * 1024;

/// How long a refused connection's request is waited for, and how long it may take to read
/// its 503.
const REFUSAL_READ_TIMEOUT: Duration = Duration::from_millis(500);
const REFUSAL_WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// Serves `app` on `listener` until `stop` resolves, then shuts down gracefully.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ServerLimits,
    stop: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let (closing, closing_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut refusals = JoinSet::new();
    tokio::pin!(stop);
    loop {
        let stream = tokio::select! {
            () = &mut stop => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            Some(_) = refusals.join_next(), if !refusals.is_empty() => continue,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    // Out of file descriptors and the like: wait a little rather than spin,
                    // and never stop serving the connections already open.
                    tracing::warn!(%error, "Accepting a connection failed.");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            // Bounded too: refusals past the cap are dropped without an answer.
            if refusals.len() < limits.max_connections {
                refusals.spawn(refuse(stream, limits.max_connections));
            }
            continue;
        };
        let app = app.clone();
        let mut closing = closing_rx.clone();
        connections.spawn(async move {
            let _permit = permit;
            let service = TowerToHyperService::new(app);
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout)
                .max_header_size(MAX_HEAD_BYTES)
                .max_buf_size(MAX_READ_BUFFER_BYTES);
            let stream = SendDeadline::new(stream, limits.send_timeout);
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(connection);
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(error) = result {
                        tracing::debug!(%error, "A connection ended with an error.");
                    }
                }
                () = async { let _ = closing.wait_for(|closing| *closing).await; } => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
        });
    }
    drop(listener);
    let _ = closing.send(true);
    refusals.abort_all();
    let drained = tokio::time::timeout(limits.shutdown_grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            connections = connections.len(),
            grace = %humantime::format_duration(limits.shutdown_grace),
            "Cutting the connections still open after the shutdown grace period."
        );
        connections.abort_all();
        while connections.join_next().await.is_some() {}
    }
    Ok(())
}

/// Answers a connection past the cap with a 503 in the API's error shape, then closes it. The
/// request is read first (as far as it comes quickly): closing a socket with unread input
/// resets it, and the client would lose the answer.
async fn refuse(mut stream: TcpStream, max_connections: usize) {
    let mut request = [0u8; 8192];
    let _ = tokio::time::timeout(REFUSAL_READ_TIMEOUT, stream.read(&mut request)).await;
    let body = format!(
        r#"{{"error":{{"code":"too_many_connections","message":"this node serves at most {max_connections} connections at once (--max-connections); retry later"}}}}"#
    );
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         retry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(REFUSAL_WRITE_TIMEOUT, async {
        stream.write_all(response.as_bytes()).await?;
        stream.shutdown().await?;
        // Read what else comes until the client closes, so the close resets nothing.
        while stream.read(&mut request).await? > 0 {}
        Ok::<(), std::io::Error>(())
    })
    .await;
}

/// A socket whose writes fail when the client takes nothing for `timeout`: the write that
/// waits for room in the socket starts a timer, and any progress stops it.
struct SendDeadline {
    inner: TcpStream,
    timeout: Duration,
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl SendDeadline {
    fn new(inner: TcpStream, timeout: Duration) -> SendDeadline {
        SendDeadline {
            inner,
            timeout,
            stalled: None,
        }
    }

    /// `polled` from a write-side call: progress clears the timer; waiting runs it.
    fn watch<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        match polled {
            Poll::Ready(result) => {
                self.stalled = None;
                Poll::Ready(result)
            }
            Poll::Pending => {
                let timeout = self.timeout;
                let timer = self
                    .stalled
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                if timer.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the client took nothing of the response for --send-timeout",
                    )));
                }
                Poll::Pending
            }
        }
    }
}

impl AsyncRead for SendDeadline {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for SendDeadline {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.watch(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.watch(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_flush(cx);
        self.watch(cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.watch(cx, polled)
    }
}
