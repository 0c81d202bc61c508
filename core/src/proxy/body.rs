//! A body that streams through the proxy frame by frame: it fails when no frame arrives for the
//! idle timeout (a flowing stream has no total limit), and releases the request's in-flight
//! slot when it ends or is dropped (the client went away).

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

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
}

impl<B> Watched<B> {
    /// Watches `inner`.
    pub fn new(inner: B, idle: Duration, permit: Option<Permit>) -> Watched<B> {
        Watched {
            inner,
            idle,
            timer: None,
            permit,
        }
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
                this.permit = None;
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Ready(None) => {
                this.permit = None;
                Poll::Ready(None)
            }
            Poll::Pending => {
                let idle = this.idle;
                let timer = this.timer.get_or_insert_with(|| {
                    Box::pin(tokio::time::sleep_until(Instant::now() + idle))
                });
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        this.permit = None;
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
