//! Accepting connections. One client must not be able to stop the server, so every
//! connection is bounded: at most `max_connections` are open at once (the next is closed on
//! arrival, with a log line and a metric), a connection that has not sent a complete
//! request head within `header_read_timeout` of opening or of its previous response is
//! closed (a socket that sends nothing, a slow partial header, an idle keep-alive and an
//! unfinished WebSocket handshake alike), and one that stops reading what it is sent is
//! closed once a write has made no progress for `send_timeout`.

use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::net::TcpListener;

use prometheus_client::metrics::gauge::Gauge;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio_io_timeout::TimeoutStream;
use tower::{Service, ServiceExt};

use crate::metrics::ConnectionMetrics;

/// How connections are bounded (docs/credentials.md#connection-limits).
#[derive(Debug, Clone, Copy)]
pub struct ConnectionSettings {
    /// Open connections, WebSocket sessions included, beyond which new ones are closed.
    pub max_connections: usize,
    /// From opening, or from the end of the previous response, to a complete request head.
    pub header_read_timeout: Duration,
    /// How long a write to the client may make no progress.
    pub send_timeout: Duration,
}

impl Default for ConnectionSettings {
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            header_read_timeout: Duration::from_secs(10),
            send_timeout: Duration::from_secs(30),
        }
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, then lets every connection
/// finish its request in flight (idle ones close at once) and returns when all are closed.
pub(crate) async fn serve<S>(
    listener: TcpListener,
    app: S,
    settings: ConnectionSettings,
    metrics: &ConnectionMetrics,
    shutdown: impl Future<Output = ()> + Send + 'static,
) where
    S: Service<axum::extract::Request, Response = axum::response::Response, Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    let slots = Arc::new(Semaphore::new(settings.max_connections));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout);
    let (stop, stopping) = watch::channel(false);
    // Each connection holds a receiver; once all are dropped, every connection has closed.
    let (open, closed) = watch::channel(());
    let refusals = ThrottledLog::default();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of descriptors, most often: wait instead of spinning.
                    refusals.warn(|missed| tracing::warn!(%error, missed, "cannot accept a connection"));
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            metrics.refused.inc();
            refusals.warn(|missed| {
                tracing::warn!(
                    max_connections = settings.max_connections,
                    missed,
                    "connection limit reached: closing new connections (KEYWARD_MAX_CONNECTIONS)"
                );
            });
            drop(stream);
            continue;
        };
        // Responses are written whole; waiting to coalesce them only adds latency.
        let _ = stream.set_nodelay(true);
        let mut stream = TimeoutStream::new(stream);
        stream.set_write_timeout(Some(settings.send_timeout));
        let io = TokioIo::new(Counted::new(Box::pin(stream), slot, metrics.open.clone()));
        let app = std::cell::RefCell::new(app.clone());
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            call_in_place(&app, request.map(Body::new))
        });
        let connection = http.serve_connection(io, service).with_upgrades();
        let mut stopping = stopping.clone();
        let open_guard = closed.clone();
        let timed_out = metrics.timed_out.clone();
        tokio::spawn(async move {
            tokio::pin!(connection);
            let result = tokio::select! {
                result = connection.as_mut() => result,
                () = async { let _ = stopping.wait_for(|stop| *stop).await; } => {
                    // Finishes the request in flight, or closes an idle connection now.
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(error) = result {
                if is_timeout(&error) {
                    timed_out.inc();
                }
                tracing::debug!(%error, "connection ended");
            }
            // Shutdown waits for HTTP connections; a WebSocket the connection became lives on
            // in its own task (the event hub closes those), holding its slot until it ends.
            drop(open_guard);
        });
    }
    drop(listener);
    let _ = stop.send(true);
    drop(closed);
    open.closed().await;
}

/// Calls the connection's own copy of the app, rather than a fresh clone of it per request:
/// an HTTP/1 connection asks one request at a time, and the app (routers, and services that
/// only pass readiness on) is always ready. Should it ever not be, the request waits on a
/// clone of its own, as `oneshot` does.
fn call_in_place<S>(
    app: &std::cell::RefCell<S>,
    request: axum::extract::Request,
) -> futures_util::future::Either<S::Future, tower::util::Oneshot<S, axum::extract::Request>>
where
    S: Service<axum::extract::Request> + Clone,
{
    let mut app = app.borrow_mut();
    let mut context = Context::from_waker(std::task::Waker::noop());
    match app.poll_ready(&mut context) {
        Poll::Ready(Ok(())) => futures_util::future::Either::Left(app.call(request)),
        _ => futures_util::future::Either::Right(app.clone().oneshot(request)),
    }
}

/// A connection's socket, holding its slot under the limit and counted as open for as long
/// as it lives: through an upgrade to WebSocket too, where the socket moves to the session.
struct Counted<T> {
    inner: T,
    _slot: OwnedSemaphorePermit,
    open: Gauge,
}

impl<T> Counted<T> {
    fn new(inner: T, slot: OwnedSemaphorePermit, open: Gauge) -> Self {
        open.inc();
        Self {
            inner,
            _slot: slot,
            open,
        }
    }
}

impl<T> Drop for Counted<T> {
    fn drop(&mut self) {
        self.open.dec();
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Counted<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Counted<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// A request head that did not arrive in time, or a write that made no progress.
fn is_timeout(error: &hyper::Error) -> bool {
    if error.is_timeout() {
        return true;
    }
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            return io.kind() == std::io::ErrorKind::TimedOut;
        }
        source = cause.source();
    }
    false
}

/// At most one line every 10 s about a condition that may repeat thousands of times a
/// second, saying how many occurrences it did not log.
#[derive(Default)]
struct ThrottledLog {
    last: std::sync::Mutex<Option<Instant>>,
    missed: AtomicU64,
}

impl ThrottledLog {
    fn warn(&self, log: impl FnOnce(u64)) {
        let mut last = self
            .last
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if last.is_some_and(|at| at.elapsed() < Duration::from_secs(10)) {
            self.missed.fetch_add(1, Ordering::Relaxed);
            return;
        }
        *last = Some(Instant::now());
        log(self.missed.swap(0, Ordering::Relaxed));
    }
}
