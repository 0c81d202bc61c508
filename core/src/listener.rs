//! The API listener and its connection hygiene: no client can hold the core's file descriptors.
//!
//! ```text
//!  accept ──▶ caps: global (config, and the open-file limit less a reserve for the prober and
//!    │              the store) and per client address ── over ──▶ 503 too_many_connections,
//!    │                                                            closed (metric + log)
//!    ▼
//!  HTTP/1.1 connection: the request headers must arrive within `headerReadTimeoutSeconds`,
//!  which also bounds how long a keep-alive connection may sit idle between requests. A
//!  response that streams (the shell's event stream) is not idle: it is counted and capped, not
//!  timed out.
//! ```
//!
//! An accept that fails (the descriptor table is full) is logged, counted and retried after a
//! short pause instead of spinning.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::ServerConfig;
use crate::error::{ApiError, Code};
use crate::telemetry::{Metrics, ReasonLabels};

/// Descriptors kept free of inbound connections: the prober's pool, the store, the asset
/// fetches and the process's own files.
const RESERVE_FDS: usize = 256;

/// The limits the listener enforces.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Time to receive a request's headers (and the keep-alive idle limit).
    pub header_read_timeout: Duration,
    /// Most open connections.
    pub max_connections: usize,
    /// Most open connections from one address.
    pub max_per_client: usize,
}

impl Limits {
    /// The configured limits, with the global cap lowered to what the open-file limit leaves
    /// after `reserve` descriptors.
    pub fn from_config(c: &ServerConfig, reserve: usize) -> Limits {
        let by_fds = open_file_limit().map(|n| n.saturating_sub(reserve.max(RESERVE_FDS)).max(1));
        Limits {
            header_read_timeout: c.header_read_timeout(),
            max_connections: by_fds.map_or(c.max_connections, |n| n.min(c.max_connections)),
            max_per_client: c.max_connections_per_client,
        }
    }
}

/// The soft open-file limit of this process (`/proc/self/limits`), where the system says.
fn open_file_limit() -> Option<usize> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// Open connections per client address.
#[derive(Default)]
struct PerClient(Mutex<HashMap<IpAddr, usize>>);

/// One connection's place in the per-client count, given back when the connection ends.
struct ClientSlot {
    table: Arc<PerClient>,
    ip: IpAddr,
}

impl PerClient {
    fn take(table: &Arc<PerClient>, ip: IpAddr, max: usize) -> Option<ClientSlot> {
        let mut map = crate::sync::lock(&table.0);
        let n = map.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(ClientSlot {
            table: table.clone(),
            ip,
        })
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut map = crate::sync::lock(&self.table.0);
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

/// Serves `router` on `listener` until `shutdown` resolves, then waits for the open
/// connections to finish.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    metrics: Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let global = Arc::new(Semaphore::new(limits.max_connections));
    let clients = Arc::new(PerClient::default());
    // Tells every connection to finish its request in flight and close.
    let (closing_tx, closing) = tokio::sync::watch::channel(false);
    let mut last_warning: Option<Instant> = None;
    tracing::info!(
        max_connections = limits.max_connections,
        max_per_client = limits.max_per_client,
        header_read_timeout_ms = limits.header_read_timeout.as_millis() as u64,
        "connection limits"
    );
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE/ENFILE and friends: the table is full. Pause rather than spin; the
                    // prober's reserve is untouched.
                    shed_metric(&metrics, "accept_error");
                    warn_sometimes(&mut last_warning, || {
                        tracing::warn!(error = %e, "cannot accept a connection; pausing accepts for 100 ms");
                    });
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(permit) = global.clone().try_acquire_owned() else {
            shed(stream, peer, "global", &metrics, &mut last_warning, &limits);
            continue;
        };
        let Some(slot) = PerClient::take(&clients, peer.ip(), limits.max_per_client) else {
            shed(
                stream,
                peer,
                "per_client",
                &metrics,
                &mut last_warning,
                &limits,
            );
            continue;
        };
        let _ = stream.set_nodelay(true);
        let svc = service(router.clone(), peer);
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            // Room above the API's own limits, so that a request over them gets the error
            // envelope (`headers_too_large`) rather than the parser's bare 431.
            .max_headers(crate::api::MAX_HEADERS * 4)
            .max_buf_size((crate::api::MAX_HEADER_BYTES * 4).max(8192 + 4096 * 100))
            .keep_alive(true)
            .serve_connection(TokioIo::new(stream), svc)
            .with_upgrades();
        metrics.connections_open.inc();
        let open = metrics.connections_open.clone();
        let mut closing = closing.clone();
        tokio::spawn(async move {
            let _held: (OwnedSemaphorePermit, ClientSlot) = (permit, slot);
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = async { closing.wait_for(|c| *c).await.map(|_| ()) } => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
            open.dec();
        });
    }
    drop(listener);
    let _ = closing_tx.send(true);
    // Every connection gives its permit back when it ends; wait for all of them (bounded).
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    if tokio::time::timeout(Duration::from_secs(30), global.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!("connections still open 30 s after shutdown began; stopping anyway");
    }
}

/// The router as a hyper service that tells handlers who connected (`ConnectInfo`).
fn service(
    router: Router,
    peer: SocketAddr,
) -> impl hyper::service::Service<
    hyper::Request<hyper::body::Incoming>,
    Response = axum::response::Response,
    Error = std::convert::Infallible,
    Future = impl Send,
> + Clone {
    hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(ConnectInfo(peer));
        let mut r = router.clone();
        async move { tower_service::Service::call(&mut r, req.map(axum::body::Body::new)).await }
    })
}

/// Refuses a connection over a cap: one short 503 in the error envelope, then closed.
fn shed(
    mut stream: TcpStream,
    peer: SocketAddr,
    which: &'static str,
    metrics: &Metrics,
    last_warning: &mut Option<Instant>,
    limits: &Limits,
) {
    shed_metric(metrics, which);
    warn_sometimes(last_warning, || {
        tracing::warn!(
            client = %peer.ip(),
            cap = which,
            max_connections = limits.max_connections,
            max_per_client = limits.max_per_client,
            "connection refused: too many connections"
        );
    });
    let message = match which {
        "global" => "the core has as many connections open as it allows; retry shortly",
        _ => "this address has as many connections open as the core allows one client",
    };
    let body = ApiError::new(Code::TooManyConnections, message)
        .body(Some(&crate::auth::new_jti()))
        .to_string();
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    tokio::spawn(async move {
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            let _ = stream.write_all(response.as_bytes()).await;
            let _ = stream.shutdown().await;
        })
        .await;
    });
}

fn shed_metric(metrics: &Metrics, reason: &str) {
    metrics
        .connections_shed
        .get_or_create(&ReasonLabels {
            reason: reason.to_string(),
        })
        .inc();
}

/// Logs at most once every 10 s, so a flood does not become a flood of log lines.
fn warn_sometimes(last: &mut Option<Instant>, log: impl FnOnce()) {
    if last.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
        *last = Some(Instant::now());
        log();
    }
}
