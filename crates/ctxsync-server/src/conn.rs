//! The accept loop and the life of one connection: HTTP/1.1 by hyper, with the limits
//! that keep clients who hold sockets from starving the rest (issue 10, item 6).
//!
//! * **Connection cap** ([`ServerConfig::max_connections`], lowered to what the
//!   process's descriptor limit allows, see [`crate::limits`]): each connection holds a
//!   permit; at the cap the loop stops accepting and new connections wait in the
//!   kernel's listen backlog until one ends, instead of `accept` failing with `EMFILE`.
//! * **Header-read timeout** ([`ServerConfig::header_read_timeout`], hyper's own): the
//!   whole request head must arrive within it. Hyper restarts it when a kept-alive
//!   connection goes idle after an answer, so it is also the idle keep-alive timeout. A
//!   client that sends nothing, or one byte every few seconds, is dropped.
//! * **Body-read timeout** ([`ServerConfig::body_read_timeout`]): in
//!   [`crate::negotiate::RawBody`]; a slower body is answered 408.
//! * **Idle timeout** ([`ServerConfig::idle_timeout`]): a connection on which no byte
//!   moved either way for that long while no handler is working on it is closed: an
//!   answer or an event stream the client stopped reading. Event streams write a
//!   keep-alive comment every [`ServerConfig::keep_alive`], so they stay open as long as
//!   the client reads.
//!
//! Graceful shutdown: when the accept loop stops, the server's `closing` flag turns
//! (which ends the event streams) and every connection is told to finish its request
//! in flight and close; one with no request in flight (fresh, between requests, or
//! still sending its head) is dropped after a short grace. The loop returns once every
//! connection has ended. Each connection waits on a oneshot of its own rather than on
//! the shared `closing` channel: a pending wait on that channel takes its lock each
//! time the connection's task is polled, which is on every read and write.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{Request, Response};
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, Semaphore, TryAcquireError};
use tokio::time::Instant;
use tower::ServiceExt as _;

use crate::{limits, AppState};

/// How long a connection with no request in flight may take to close by itself after
/// shutdown began (to flush an answer already written) before it is dropped.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// Pause after an `accept` failure that is not about one connection (e.g. `EMFILE`),
/// so the loop does not spin while the condition lasts.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// At most one "cap reached" warning this often, however long the server stays there.
const CAP_WARNING_EVERY: Duration = Duration::from_secs(10);

/// Serves `router` on `listener` until `shutdown` completes, then ends the event streams
/// and waits for every connection to end.
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let config = state.config();
    // Also within what a semaphore (and `acquire_many`'s u32) can count.
    let cap = limits::connection_cap(config.max_connections, limits::fd_limit())
        .min(Semaphore::MAX_PERMITS)
        .min(u32::MAX as usize);
    if cap < config.max_connections {
        tracing::warn!(
            wanted = config.max_connections,
            cap,
            "the file-descriptor limit allows fewer connections than asked for"
        );
    }
    if config.idle_timeout <= config.keep_alive {
        tracing::warn!(
            idle_timeout = ?config.idle_timeout,
            keep_alive = ?config.keep_alive,
            "the idle timeout is not above the event-stream keep-alive interval: quiet event streams will be cut"
        );
    }
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(config.header_read_timeout);
    let permits = Arc::new(Semaphore::new(cap));
    let open = Arc::new(Open::default());
    let mut warned_at: Option<Instant> = None;
    tokio::pin!(shutdown);
    loop {
        let permit = match Arc::clone(&permits).try_acquire_owned() {
            Ok(permit) => permit,
            Err(TryAcquireError::Closed) => break,
            Err(TryAcquireError::NoPermits) => {
                if warned_at.is_none_or(|at| at.elapsed() >= CAP_WARNING_EVERY) {
                    tracing::warn!(cap, "connection cap reached; new connections wait");
                    warned_at = Some(Instant::now());
                }
                tokio::select! {
                    permit = Arc::clone(&permits).acquire_owned() => match permit {
                        Ok(permit) => permit,
                        Err(_) => break,
                    },
                    _ = &mut shutdown => break,
                }
            }
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = &mut shutdown => break,
        };
        let stream = match accepted {
            Ok((stream, _peer)) => stream,
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(ACCEPT_BACKOFF) => continue,
                    _ = &mut shutdown => break,
                }
            }
        };
        // No Nagle: small writes (event-stream events, short answers) go out at once.
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        let (registered, close) = Open::register(&open);
        let connection = connection(stream, http.clone(), router.clone(), state.clone(), close);
        tokio::spawn(async move {
            connection.await;
            drop(registered);
            drop(permit);
        });
    }
    state.shutdown();
    drop(listener);
    open.close_all();
    // Every connection holds a permit until it ends.
    let _ = permits
        .acquire_many(u32::try_from(cap).unwrap_or(u32::MAX))
        .await;
    Ok(())
}

/// Failures of one connection that was being accepted: the next one may well work.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// The open connections' shutdown signals.
#[derive(Default)]
struct Open {
    next: AtomicU64,
    signals: Mutex<HashMap<u64, oneshot::Sender<()>>>,
}

/// A connection's entry in [`Open`], removed when dropped.
struct Registered {
    id: u64,
    open: Arc<Open>,
}

impl Open {
    fn register(open: &Arc<Open>) -> (Registered, oneshot::Receiver<()>) {
        let id = open.next.fetch_add(1, Ordering::Relaxed);
        let (signal, close) = oneshot::channel();
        open.signals
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, signal);
        let registered = Registered {
            id,
            open: Arc::clone(open),
        };
        (registered, close)
    }

    /// Tells every open connection to shut down.
    fn close_all(&self) {
        let signals =
            std::mem::take(&mut *self.signals.lock().unwrap_or_else(PoisonError::into_inner));
        for signal in signals.into_values() {
            let _ = signal.send(());
        }
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.open
            .signals
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.id);
    }
}

/// What the connection's watchdog knows about it.
struct Activity {
    start: Instant,
    /// When a byte last moved either way, in milliseconds since `start`.
    last_io_ms: AtomicU64,
    /// Requests whose handler is running (from the head until the answer's head).
    handling: AtomicUsize,
    /// Requests in flight (from the head until the answer's body is done or dropped).
    busy: AtomicUsize,
}

impl Activity {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            last_io_ms: AtomicU64::new(0),
            handling: AtomicUsize::new(0),
            busy: AtomicUsize::new(0),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_io_ms.store(ms, Ordering::Relaxed);
    }

    fn last_io(&self) -> Instant {
        self.start + Duration::from_millis(self.last_io_ms.load(Ordering::Relaxed))
    }
}

/// Serves one connection until it ends, is idle too long, or the server shuts down.
async fn connection(
    stream: TcpStream,
    http: hyper::server::conn::http1::Builder,
    router: Router,
    state: AppState,
    close: oneshot::Receiver<()>,
) {
    let config = state.config();
    let idle_timeout = config.idle_timeout;
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Counted {
        io: stream,
        activity: Arc::clone(&activity),
    });
    let service = ConnService {
        router,
        activity: Arc::clone(&activity),
    };
    let conn = http.serve_connection(io, service);
    tokio::pin!(conn);

    // Resolves on the signal, or when the loop dropped it (shutting down either way).
    let closed = close;
    tokio::pin!(closed);
    let mut shutting_down = false;
    // One timer: the idle check while serving, the grace check once shutting down.
    let timer = tokio::time::sleep(idle_timeout);
    tokio::pin!(timer);
    loop {
        tokio::select! {
            served = conn.as_mut() => {
                if let Err(e) = served {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            _ = &mut closed, if !shutting_down => {
                shutting_down = true;
                conn.as_mut().graceful_shutdown();
                timer.as_mut().reset(Instant::now() + SHUTDOWN_GRACE);
            }
            _ = timer.as_mut() => {
                let now = Instant::now();
                if shutting_down && activity.busy.load(Ordering::Relaxed) == 0 {
                    return;
                }
                // Also while shutting down: a client that stopped reading its answer
                // must not hold the shutdown.
                let deadline = activity.last_io() + idle_timeout;
                let handling = activity.handling.load(Ordering::Relaxed) > 0;
                if !handling && now >= deadline {
                    tracing::debug!(?idle_timeout, "closing a connection on which nothing moved");
                    return;
                }
                let next = if handling { now + idle_timeout } else { deadline };
                let next = if shutting_down { next.min(now + SHUTDOWN_GRACE) } else { next };
                timer.as_mut().reset(next);
            }
        }
    }
}

/// Counts a request as handled (or in flight) while alive.
struct Guard(Arc<Activity>, fn(&Activity) -> &AtomicUsize);

impl Guard {
    fn new(activity: &Arc<Activity>, counter: fn(&Activity) -> &AtomicUsize) -> Self {
        counter(activity).fetch_add(1, Ordering::Relaxed);
        Self(Arc::clone(activity), counter)
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        (self.1)(&self.0).fetch_sub(1, Ordering::Relaxed);
    }
}

/// The router as hyper's service, keeping the connection's request counters.
#[derive(Clone)]
struct ConnService {
    router: Router,
    activity: Arc<Activity>,
}

impl hyper::service::Service<Request<Incoming>> for ConnService {
    type Response = Response<Tracked>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        let busy = Guard::new(&self.activity, |a| &a.busy);
        let handling = Guard::new(&self.activity, |a| &a.handling);
        let router = self.router.clone();
        Box::pin(async move {
            let response = router.oneshot(request.map(Body::new)).await?;
            drop(handling);
            Ok(response.map(|body| Tracked { body, _busy: busy }))
        })
    }
}

/// An answer's body that keeps its request counted as in flight until it is done.
struct Tracked {
    body: Body,
    _busy: Guard,
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// The socket, noting when bytes move for the idle check.
struct Counted {
    io: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Counted {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.io).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.activity.touch();
        }
        polled
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.touch();
        }
        polled
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}
