//! A body that streams through the proxy frame by frame: it fails when no frame arrives for the
//! idle timeout (a flowing stream has no total limit), and releases the request's in-flight
//! slot when it ends or is dropped (the client went away).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::oneshot;

use axum::body::{Bytes, HttpBody};
use hyper::body::Frame;
use tokio::time::{Instant, Sleep};

use super::guard::Permit;

/// Errors a proxied body can end with.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The idle timeout fired.
#[derive(Debug, thiserror::Error)]
#[error("no data for {0:?} (the proxy's idle timeout)")]
pub struct Idle(pub Duration);

/// `inner`, watched for idleness, holding `permit` until it ends. The timer is armed only
/// when the body first has to wait: a body that is ready at once (most small answers) costs
/// no timer.
pub struct Watched<B> {
    inner: B,
    idle: Duration,
    timer: Option<Pin<Box<Sleep>>>,
    permit: Option<Permit>,
    /// An upload's watchers: told when it was sent whole, marked when it broke off.
    sent: Option<oneshot::Sender<()>>,
    broke: Option<Arc<AtomicBool>>,
}

impl<B> Watched<B> {
    /// Watches `inner`.
    pub fn new(inner: B, idle: Duration, permit: Option<Permit>) -> Watched<B> {
        Watched {
            inner,
            idle,
            timer: None,
            permit,
            sent: None,
            broke: None,
        }
    }

    /// Watches a request body on its way to the plugin: `sent` fires when it has been read
    /// whole, `broke` is set when it ends in an error (the caller's side, not the plugin's).
    pub fn upload(
        inner: B,
        idle: Duration,
        sent: oneshot::Sender<()>,
        broke: Arc<AtomicBool>,
    ) -> Watched<B> {
        Watched {
            sent: Some(sent),
            broke: Some(broke),
            ..Watched::new(inner, idle, None)
        }
    }

    fn failed(&mut self) {
        self.permit = None;
        if let Some(b) = &self.broke {
            b.store(true, Ordering::Release);
        }
        self.sent = None;
    }
}

impl<B> HttpBody for Watched<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                // The next wait starts a fresh idle period.
                this.timer = None;
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.failed();
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Ready(None) => {
                this.permit = None;
                if let Some(tx) = this.sent.take() {
                    let _ = tx.send(());
                }
                Poll::Ready(None)
            }
            Poll::Pending => {
                let idle = this.idle;
                let timer = this.timer.get_or_insert_with(|| {
                    Box::pin(tokio::time::sleep_until(Instant::now() + idle))
                });
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        this.failed();
                        Poll::Ready(Some(Err(Box::new(Idle(idle)))))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// One side of a spliced WebSocket, noting when it last read a byte.
struct Tracked<T> {
    inner: T,
    last: Arc<AtomicU64>,
    start: std::time::Instant,
}

impl<T: AsyncRead + Unpin> AsyncRead for Tracked<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
            self.last.store(ms, Ordering::Release);
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Tracked<T> {
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
}

/// Copies bytes both ways between two upgraded connections until either closes, or until no
/// byte has moved either way for `idle` (then both are closed).
pub async fn splice<A, B>(a: A, b: B, idle: Duration)
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let last = Arc::new(AtomicU64::new(0));
    let start = std::time::Instant::now();
    let mut a = Tracked {
        inner: a,
        last: last.clone(),
        start,
    };
    let mut b = Tracked {
        inner: b,
        last: last.clone(),
        start,
    };
    let copy = tokio::io::copy_bidirectional(&mut a, &mut b);
    tokio::pin!(copy);
    let tick = (idle / 4).max(Duration::from_millis(50));
    loop {
        tokio::select! {
            _ = &mut copy => return,
            _ = tokio::time::sleep(tick) => {
                let moved = Duration::from_millis(last.load(Ordering::Acquire));
                if start.elapsed().saturating_sub(moved) >= idle {
                    return;
                }
            }
        }
    }
}
