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

/// `inner`, watched for idleness, holding `permit` until it ends.
pub struct Watched<B> {
    inner: B,
    idle: Duration,
    timer: Pin<Box<Sleep>>,
    permit: Option<Permit>,
}

impl<B> Watched<B> {
    /// Watches `inner`.
    pub fn new(inner: B, idle: Duration, permit: Option<Permit>) -> Watched<B> {
        Watched {
            inner,
            idle,
            timer: Box::pin(tokio::time::sleep(idle)),
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
                let idle = this.idle;
                this.timer.as_mut().reset(Instant::now() + idle);
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
            Poll::Pending => match this.timer.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    this.permit = None;
                    Poll::Ready(Some(Err(Box::new(Idle(this.idle)))))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}
