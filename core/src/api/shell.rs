//! The shell's endpoints: the remotes list (ETag, gzip), its live event stream, and the page.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::Stream;

use super::AppState;
use crate::shell;

pub(super) async fn shell_remotes(State(state): State<AppState>, headers: HeaderMap) -> Response {
    // With sign-in, the list is for signed-in users only.
    if let Err(e) = super::auth::user(&state, &headers) {
        return e.into_response();
    }
    let snap = state.shell.current();
    // Browsers send Accept-Encoding: gzip; the compressed bytes were built with the list.
    let gzip = accepts_gzip(&headers);
    let etag_text = if gzip {
        format!("{}-gzip\"", snap.etag.trim_end_matches('"'))
    } else {
        snap.etag.clone()
    };
    let etag = HeaderValue::from_str(&etag_text).unwrap_or(HeaderValue::from_static("\"0\""));
    let matches = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',').map(str::trim).any(|t| {
                let t = t.strip_prefix("W/").unwrap_or(t);
                t == snap.etag || t == etag_text || t == "*"
            })
        });
    let mut res = if matches {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let body = if gzip { snap.gzip() } else { snap.body.clone() };
        let mut r = Response::new(Body::from(body));
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if gzip {
            r.headers_mut()
                .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        }
        r
    };
    let h = res.headers_mut();
    h.insert(header::ETAG, etag);
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    res
}

/// Whether the client accepts gzip (and has not refused it with `q=0`).
pub(super) fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|enc| {
            let mut parts = enc.split(';').map(str::trim);
            let name = parts.next().unwrap_or("");
            let q_zero =
                parts.any(|p| p.replace(' ', "") == "q=0" || p.replace(' ', "") == "q=0.0");
            (name.eq_ignore_ascii_case("gzip") || name == "*") && !q_zero
        })
}

pub(super) async fn shell_events(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let (user, until) = match state.users.user_until(&super::auth::cookies(&headers)) {
        Ok(u) => u,
        Err(e) => {
            return crate::error::ApiError::new(crate::error::Code::NotSignedIn, e.to_string())
                .into_response();
        }
    };
    // The stream ends with the session (it carries the tenant's events); the shell's reconnect
    // then finds the session over and sends the user to sign in.
    let ends = until.map(|exp| {
        let left = exp.saturating_sub(crate::auth::now());
        tokio::time::Instant::now() + Duration::from_secs(left)
    });
    let mut rx = state.shell.subscribe();
    // Events for the plugins' UIs (`shell: true` subscriptions): this user's tenant, or none.
    let mut feed = state.events.shell_feed();
    let mut shutdown = state.shutdown.clone();
    let metrics = state.metrics.clone();
    // Every stream sends the snapshot's prebuilt event bytes by reference: a change costs one
    // copy of the list, not one per open shell.
    let stream = async_stream(move |tx| async move {
        metrics.sse_clients.inc();
        let _open = OnDrop(move || {
            metrics.sse_clients.dec();
        });
        let first = rx.borrow_and_update().clone();
        if tx.send(Ok(first.event())).await.is_err() {
            return;
        }
        let every = Duration::from_secs(15);
        let mut heartbeat = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        loop {
            let next = tokio::select! {
                changed = rx.changed() => {
                    if changed.is_err() { return; }
                    let snap = rx.borrow_and_update().clone();
                    snap.event()
                }
                got = feed.recv() => match got {
                    Ok(ev) if ev.tenant.as_ref().is_none_or(|t| *t == user.tenant) => ev.frame.clone(),
                    Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                },
                _ = heartbeat.tick() => bytes::Bytes::from_static(b":heartbeat\n\n"),
                () = async {
                    match ends {
                        Some(at) => tokio::time::sleep_until(at).await,
                        None => std::future::pending().await,
                    }
                } => return,
                _ = shutdown.changed() => return,
            };
            if tx.send(Ok(next)).await.is_err() {
                return;
            }
        }
    });
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        axum::body::Body::from_stream(stream),
    )
        .into_response()
}

/// Runs a closure when dropped (however the stream ends).
struct OnDrop<F: FnMut()>(F);

impl<F: FnMut()> Drop for OnDrop<F> {
    fn drop(&mut self) {
        (self.0)();
    }
}

/// A stream fed by a task through a small channel.
pub(super) fn async_stream<F, Fut>(f: F) -> impl Stream<Item = Result<bytes::Bytes, Infallible>>
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<bytes::Bytes, Infallible>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    tokio::spawn(f(tx));
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

pub(super) async fn shell_page(State(state): State<AppState>, headers: HeaderMap) -> Response {
    // With sign-in, a browser without a session is sent to the provider first.
    if super::auth::user(&state, &headers).is_err() {
        let mut res = StatusCode::FOUND.into_response();
        res.headers_mut().insert(
            header::LOCATION,
            HeaderValue::from_static("/auth/login?return=/"),
        );
        return res;
    }
    shell::page(&state.config.shell.remote_origins)
}

/// The shell's page, script, styles, list and event stream.
pub(super) fn routes() -> axum::Router<AppState> {
    use axum::routing::get;
    axum::Router::new()
        .route("/", get(shell_page))
        .route(
            "/shell/shell.js",
            get(|| async { shell::asset(shell::SHELL_JS, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/shell/shell.css",
            get(|| async { shell::asset(shell::SHELL_CSS, "text/css; charset=utf-8") }),
        )
        .route("/api/shell/remotes", get(shell_remotes))
        .route("/api/shell/events", get(shell_events))
}
