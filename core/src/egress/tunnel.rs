//! The egress proxy's I/O once a destination is admitted and dialed: a CONNECT tunnel pumped
//! both ways (bytes counted, closed after the idle timeout), or one plain `http://` request
//! forwarded over the dialed connection in origin form, without the proxy's own headers.

use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderName, Uri, header};
use axum::response::Response;
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use prometheus_client::metrics::counter::Counter;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::Slot;
use super::metrics::{BytesLabels, EgressMetrics};

/// The byte counters of one plugin and destination.
#[derive(Clone)]
pub(super) struct Counters {
    sent: Counter,
    received: Counter,
}

impl Counters {
    pub(super) fn new(m: &EgressMetrics, plugin: &str, destination: &str) -> Counters {
        let c = |direction: &str| {
            m.bytes
                .get_or_create(&BytesLabels {
                    plugin: plugin.to_string(),
                    destination: destination.to_string(),
                    direction: direction.to_string(),
                })
                .clone()
        };
        Counters {
            sent: c("sent"),
            received: c("received"),
        }
    }
}

/// Copies `from` to `to` until either ends or nothing moves for `idle`.
async fn copy(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
    idle: Duration,
    counter: Counter,
) {
    let mut buf = vec![0u8; 16 << 10];
    loop {
        let n = match tokio::time::timeout(idle, from.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => n,
        };
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
        counter.inc_by(n as u64);
    }
    let _ = to.shutdown().await;
}

/// Pumps a CONNECT tunnel both ways.
pub(super) async fn pump(
    upgraded: hyper::upgrade::Upgraded,
    stream: TcpStream,
    idle: Duration,
    counters: Counters,
) {
    let (client_r, client_w) = tokio::io::split(TokioIo::new(upgraded));
    let (server_r, server_w) = stream.into_split();
    tokio::join!(
        copy(client_r, server_w, idle, counters.sent),
        copy(server_r, client_w, idle, counters.received),
    );
}

/// Headers that belong to one hop (RFC 9110 7.6.1) or to the proxy.
const HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-authorization",
    "proxy-authenticate",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Forwards one absolute-form request over `stream`; the answer streams back, counted.
pub(super) async fn forward(
    req: Request,
    stream: TcpStream,
    slot: Slot,
    counters: Counters,
    idle: Duration,
) -> Result<Response, String> {
    let (mut parts, body) = req.into_parts();
    let host = parts.uri.authority().map(|a| a.as_str().to_string());
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    parts.uri = path.parse::<Uri>().map_err(|e| e.to_string())?;
    let named: Vec<HeaderName> = parts
        .headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::try_from(n.trim()).ok())
        .collect();
    for h in HOP {
        parts.headers.remove(h);
    }
    for h in named {
        parts.headers.remove(h);
    }
    if let Some(host) = host
        && let Ok(v) = host.parse()
    {
        parts.headers.insert(header::HOST, v);
    }
    let sent = counters.sent.clone();
    let body = Body::new(body.map_frame(move |f| {
        if let Some(d) = f.data_ref() {
            sent.inc_by(d.len() as u64);
        }
        f
    }));
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _slot = slot;
        let _ = conn.await;
    });
    // The destination has the idle timeout to answer with its headers.
    let res = tokio::time::timeout(idle, sender.send_request(Request::from_parts(parts, body)))
        .await
        .map_err(|_| format!("no answer within {} s", idle.as_secs()))?
        .map_err(|e| e.to_string())?;
    let received = counters.received;
    Ok(res.map(|b| {
        Body::new(b.map_frame(move |f| {
            if let Some(d) = f.data_ref() {
                received.inc_by(d.len() as u64);
            }
            f
        }))
    }))
}
