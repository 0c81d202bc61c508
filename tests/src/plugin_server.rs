//! A plugin service of the tests' own: a real axum server on a loopback port whose `/readyz`
//! and `remoteEntry.js` the test switches at will.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use sha2::Digest;

#[derive(Debug)]
struct Shared {
    ready: AtomicBool,
    remote_status: AtomicU16,
    remote: Mutex<Vec<u8>>,
    chunk: Mutex<Vec<u8>>,
    manifest: Mutex<serde_json::Value>,
}

/// A running test plugin.
#[derive(Debug)]
pub struct TestPlugin {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// The remote entry a test plugin serves for `name` unless told otherwise.
pub fn remote_entry_for(name: &str) -> String {
    format!(
        "var plugin_{}={{init:function(){{}},get:function(m){{return Promise.resolve(function(){{return {{}};}});}}}};\n",
        name.replace('-', "_")
    )
}

/// `sha384-<base64>` of bytes.
pub fn sri(bytes: &[u8]) -> String {
    format!(
        "sha384-{}",
        base64::engine::general_purpose::STANDARD.encode(sha2::Sha384::digest(bytes))
    )
}

impl TestPlugin {
    /// Starts a plugin service for plugin `name`: ready, serving its remote entry.
    pub fn start(name: &str) -> TestPlugin {
        let shared = Arc::new(Shared {
            ready: AtomicBool::new(true),
            remote_status: AtomicU16::new(200),
            remote: Mutex::new(remote_entry_for(name).into_bytes()),
            chunk: Mutex::new(b"console.log('chunk');\n".to_vec()),
            // An invalid manifest unless a test sets one (`plugin check` must name it).
            manifest: Mutex::new(serde_json::json!({"name": "Bad Name", "version": "1.0"})),
        });
        let app = Router::new()
            .route("/readyz", get(readyz))
            .route("/healthz", get(|| async { "ok" }))
            .route(
                "/manifest",
                get(|State(s): State<Arc<Shared>>| async move {
                    axum::Json(s.manifest.lock().unwrap().clone())
                }),
            )
            .route("/mf/remoteEntry.js", get(remote))
            .route("/mf/chunk.js", get(chunk))
            .route(
                "/redirect/remoteEntry.js",
                get(|| async {
                    (
                        StatusCode::FOUND,
                        [(header::LOCATION, "http://169.254.169.254/latest/meta-data/")],
                    )
                }),
            )
            .with_state(shared.clone());
        let (addr_tx, addr_rx) = std::sync::mpsc::channel::<SocketAddr>();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind");
                let _ = addr_tx.send(listener.local_addr().expect("addr"));
                let _ = axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        let _ = stop_rx.await;
                    })
                    .await;
            });
        });
        let addr = addr_rx.recv().expect("test plugin address");
        TestPlugin {
            url: format!("http://{addr}"),
            shared,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    /// Serves `manifest` at `/manifest` from now on.
    pub fn set_manifest(&self, manifest: serde_json::Value) {
        *self.shared.manifest.lock().unwrap() = manifest;
    }

    /// Its remote entry URL.
    pub fn remote_url(&self) -> String {
        format!("{}/mf/remoteEntry.js", self.url)
    }

    /// Makes `/readyz` answer 200 (true) or 503 (false).
    pub fn set_ready(&self, ready: bool) {
        self.shared.ready.store(ready, Ordering::SeqCst);
    }

    /// Makes `remoteEntry.js` answer with this status.
    pub fn set_remote_status(&self, status: u16) {
        self.shared.remote_status.store(status, Ordering::SeqCst);
    }

    /// Replaces the remote entry's bytes.
    pub fn set_remote(&self, bytes: &[u8]) {
        *self.shared.remote.lock().expect("lock") = bytes.to_vec();
    }

    /// Replaces the bytes of `/mf/chunk.js`.
    pub fn set_chunk(&self, bytes: &[u8]) {
        *self.shared.chunk.lock().expect("lock") = bytes.to_vec();
    }

    /// The remote entry's bytes.
    pub fn remote(&self) -> Vec<u8> {
        self.shared.remote.lock().expect("lock").clone()
    }

    /// Stops serving (connections are refused afterwards).
    pub fn stop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for TestPlugin {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn readyz(State(s): State<Arc<Shared>>) -> Response {
    if s.ready.load(Ordering::SeqCst) {
        "ready".into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready").into_response()
    }
}

async fn remote(State(s): State<Arc<Shared>>) -> Response {
    let status =
        StatusCode::from_u16(s.remote_status.load(Ordering::SeqCst)).unwrap_or(StatusCode::OK);
    let body = s.remote.lock().map(|b| b.clone()).unwrap_or_default();
    (status, [(header::CONTENT_TYPE, "text/javascript")], body).into_response()
}

async fn chunk(State(s): State<Arc<Shared>>) -> Response {
    let body = s.chunk.lock().map(|b| b.clone()).unwrap_or_default();
    ([(header::CONTENT_TYPE, "text/javascript")], body).into_response()
}
