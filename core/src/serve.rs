//! `tessera serve`: wires the store, the registry, the prober and the HTTP API together, and
//! stops cleanly on SIGTERM or SIGINT (stop accepting, close live streams, stop probes, finish
//! in-flight requests).

use std::sync::Arc;

use tokio::sync::watch;

use crate::api::{self, AppState};
use crate::assets::AssetCache;
use crate::auth::Keys;
use crate::config::Config;
use crate::config::StoreKind;
use crate::ratelimit::RateLimiter;
use crate::registry::{Registry, Thresholds};
use crate::store::Store;
use crate::store::kube::KubeStore;
use crate::store::sqlite::SqliteStore;

/// File name of the SQLite database in the data dir.
pub const DB_FILE: &str = "tessera.db";

/// Runs the server until a shutdown signal.
pub async fn run(config: Config) -> Result<(), String> {
    let (keys, store, kube, place): (Keys, Arc<dyn Store>, Option<Arc<KubeStore>>, String) =
        match config.store {
            StoreKind::Sqlite => {
                let keys = Keys::load_or_create(&config.data_dir)
                    .map_err(|e| format!("signing key in {}: {e}", config.data_dir.display()))?;
                let db = config.data_dir.join(DB_FILE);
                let store =
                    SqliteStore::open(&db).map_err(|e| format!("store {}: {e}", db.display()))?;
                (keys, Arc::new(store), None, db.display().to_string())
            }
            StoreKind::Kubernetes => {
                let store = Arc::new(
                    KubeStore::connect(
                        config.kubernetes.namespace.clone(),
                        config.kubernetes.timing(),
                    )
                    .await?,
                );
                let pem = store
                    .signing_key()
                    .await
                    .map_err(|e| format!("signing key: {e}"))?;
                let keys = Keys::from_pem(&pem).map_err(|e| {
                    format!(
                        "Secret {}: not an Ed25519 key: {e}",
                        crate::store::kube::SIGNING_SECRET
                    )
                })?;
                let place = format!("namespace {}", store.namespace());
                (keys, store.clone(), Some(store), place)
            }
        };
    let thresholds = Thresholds {
        success: config.probe.success_threshold,
        failure: config.probe.failure_threshold,
    };
    // Loading may call the Kubernetes API, which blocks: off the async workers.
    let registry = tokio::task::spawn_blocking(move || Registry::load(store, thresholds))
        .await
        .map_err(|e| format!("loading state: {e}"))?
        .map_err(|e| format!("loading state from {place}: {e}"))?;
    let publisher = registry.spawn_publisher();
    let (probed_tx, probed_rx) = watch::channel(false);
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    // Only the leader probes (and so writes state transitions); without Kubernetes this
    // replica is the only one.
    let (leading_tx, leading_rx) = watch::channel(kube.is_none());
    let keys = Arc::new(keys);
    let shared_config = Arc::new(config.clone());
    let (mut watcher, mut election, mut secrets, mut declared) = (None, None, None, None);
    if let Some(k) = &kube {
        watcher = Some(k.spawn_watch(registry.clone()));
        election = Some(k.spawn_leader_election(leading_tx, shutdown_rx.clone()));
        declared = Some(crate::declared::spawn(
            registry.clone(),
            shared_config.clone(),
            crate::probe::client(config.probe.timeout()),
            leading_rx.clone(),
        ));
        secrets = Some(k.spawn_token_secrets(
            config.plugins.clone(),
            keys.clone(),
            leading_rx.clone(),
            std::time::Duration::from_secs(30),
        ));
        // A follower's readiness does not wait for probes it does not run.
        let _ = probed_tx.send(true);
    }
    let metrics = Arc::new(crate::telemetry::Metrics::new());
    let prober = tokio::spawn(crate::probe::run(
        registry.clone(),
        metrics.clone(),
        config.probe.clone(),
        probed_tx,
        leading_rx,
        shutdown_rx.clone(),
    ));

    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let state = AppState {
        registry: registry.clone(),
        keys: keys.clone(),
        config: shared_config,
        probed: probed_rx,
        limiter: Arc::new(RateLimiter::default()),
        assets: Arc::new(AssetCache::new(config.assets.cache_bytes)),
        http: crate::probe::client(
            config
                .probe
                .timeout()
                .max(std::time::Duration::from_secs(10)),
        ),
        shutdown: shutdown_rx,
        metrics: metrics.clone(),
    };
    tracing::info!(%addr, state = %place, plugins = registry.list().len(), "tessera core listening");
    // One plain line on stdout, for people and for scripts that started us on port 0.
    println!("listening on http://{addr}");

    let limits =
        crate::listener::Limits::from_config(&config.server, config.probe.concurrency + 128);
    crate::listener::serve(listener, api::router(state), limits, metrics, async move {
        shutdown_signal().await;
        tracing::info!("shutting down: closing live streams, stopping probes");
        let _ = shutdown_tx.send(true);
    })
    .await;
    let _ = prober.await;
    publisher.abort();
    for task in [watcher.take(), secrets.take(), declared.take()]
        .into_iter()
        .flatten()
    {
        task.abort();
    }
    // The election releases the Lease on shutdown, so another replica leads at once.
    if let Some(e) = election.take() {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), e).await;
    }
    tracing::info!("stopped");
    Ok(())
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

/// JSON log lines on standard error, filtered by `RUST_LOG` (default `info`).
pub fn init_logging() {
    init_logging_to(None);
}

/// JSON log lines appended to `file` (standard error when `None`).
pub fn init_logging_to(file: Option<std::fs::File>) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_env_filter(filter);
    let _ = match file {
        Some(f) => builder.with_writer(std::sync::Mutex::new(f)).try_init(),
        None => builder.with_writer(std::io::stderr).try_init(),
    };
}
