//! `tessera serve`: wires the store, the registry, the prober and the HTTP API together, and
//! stops cleanly on SIGTERM or SIGINT (stop accepting, close live streams, stop probes, finish
//! in-flight requests).

use std::sync::Arc;

use tokio::sync::watch;

use crate::api::{self, AppState};
use crate::assets::AssetCache;
use crate::config::Config;
use crate::ratelimit::RateLimiter;
use crate::registry::{Registry, Thresholds};
use crate::shell::list::ShellList;
use crate::store::Upkeep;

/// Why the core did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The store (or its signing key) cannot be opened.
    #[error("{0}")]
    Store(#[from] crate::store::StoreError),
    /// The state in the store cannot be loaded.
    #[error("loading state from {place}: {why}")]
    Load {
        /// Where the state lives.
        place: String,
        /// Why it cannot be loaded.
        why: String,
    },
    /// Sign-in is configured but cannot work (the client secret file).
    #[error("{0}")]
    Users(String),
    /// The listen address cannot be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: std::net::SocketAddr,
        /// The socket error.
        source: std::io::Error,
    },
}

/// Runs the server until a shutdown signal.
///
/// A new surface adds its line here (its background task, if it has one) and one in
/// `api::router` (its routes); see ARCHITECTURE.md.
pub async fn run(config: Config) -> Result<(), StartError> {
    let opened = crate::store::open(&config).await?;
    let place = opened.place.clone();
    let thresholds = Thresholds {
        success: config.probe.success_threshold,
        failure: config.probe.failure_threshold,
    };
    // The shell list is fed by the registry's commits.
    let shell = Arc::new(ShellList::default());
    let metrics = Arc::new(crate::telemetry::Metrics::new());
    let events = crate::events::Events::open(
        crate::events::Settings {
            db: opened.events_db.clone(),
            nats_url: config.events.nats.as_ref().map(|n| n.url.clone()),
            limits: crate::events::policy::Limits {
                max_attempts: config.events.max_attempts,
                max_age: std::time::Duration::from_secs_f64(config.events.max_age_hours * 3600.0),
            },
            http: crate::probe::client(config.events.delivery_timeout()),
        },
        metrics.events.clone(),
    )
    .await
    .map_err(|why| StartError::Load {
        place: format!("event outbox of {place}"),
        why,
    })?;
    if !events.is_durable() {
        tracing::warn!(
            "events: no durable engine is configured; accepted events are held in memory and lost if this replica stops (tessera_events_durable 0)"
        );
    }
    let jobs = crate::jobs::Jobs::new(opened.jobs.clone());
    let observers: Vec<Arc<dyn crate::registry::Observer>> =
        vec![shell.clone(), events.clone(), jobs.clone()];
    // Loading may call the Kubernetes API, which blocks: off the async workers.
    let store = opened.store;
    let registry =
        tokio::task::spawn_blocking(move || Registry::load(store, thresholds, observers))
            .await
            .map_err(|e| StartError::Load {
                place: place.clone(),
                why: e.to_string(),
            })?
            .map_err(|e| StartError::Load {
                place: place.clone(),
                why: e.to_string(),
            })?;
    let publisher = shell.spawn_publisher();
    let (probed_tx, probed_rx) = watch::channel(false);
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let keys = Arc::new(opened.keys);
    let users = Arc::new(match (&config.auth.oidc, opened.session_key) {
        (Some(oidc), Some(key)) => {
            crate::users::Users::with_oidc(oidc.clone(), key, crate::users::provider_client())
                .map_err(StartError::Users)?
        }
        _ => crate::users::Users::anonymous(),
    });
    let service_accounts = Arc::new(crate::auth::service_account::ServiceAccounts::new(
        &config.plugins,
        opened.token_reviewer,
    ));
    // A rotation (`tessera keys rotate`) reaches this replica within seconds.
    let reloader = keys.spawn_reloader(std::time::Duration::from_secs(2));
    let shared_config = Arc::new(config.clone());
    let replication = opened.coordination.start(Upkeep {
        keys: keys.clone(),
        plugins: config.plugins.clone(),
        shutdown: shutdown_rx.clone(),
    });
    // What other replicas write reaches this replica's index in order.
    let mut external = replication.external;
    let feeder = {
        let registry = registry.clone();
        tokio::spawn(async move {
            while let Some(change) = external.recv().await {
                registry.apply_external(change).await;
            }
        })
    };
    let leading_rx = replication.leading.clone();
    let mut tasks = replication.tasks;
    tasks.push(feeder);
    tasks.push(reloader);
    if replication.clustered {
        tasks.push(crate::declared::spawn(
            registry.clone(),
            shared_config.clone(),
            crate::probe::client(config.probe.timeout()),
            leading_rx.clone(),
        ));
        // A follower's readiness does not wait for probes it does not run.
        let _ = probed_tx.send(true);
    }
    let proxy = Arc::new(crate::proxy::Proxy::new(
        config.proxy.clone(),
        metrics.proxy.clone(),
    ));
    tasks.extend(jobs.start(
        registry.clone(),
        keys.clone(),
        crate::probe::client_keeping(
            std::time::Duration::from_secs(u64::from(tessera_sdk::jobs::MAX_TIMEOUT_SECS) + 5),
            8,
        ),
        metrics.jobs.clone(),
        leading_rx.clone(),
        shutdown_rx.clone(),
    ));
    let prober = tokio::spawn(crate::probe::run(
        registry.clone(),
        metrics.clone(),
        config.probe.clone(),
        probed_tx,
        leading_rx,
        shutdown_rx.clone(),
    ));

    tasks.extend(
        events
            .start(registry.clone(), keys.clone(), shutdown_rx.clone())
            .await
            .map_err(|why| StartError::Load {
                place: format!("event outbox of {place}"),
                why,
            })?,
    );

    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| StartError::Listen {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| StartError::Listen {
        addr: config.listen,
        source,
    })?;
    let secrets = Arc::new(crate::secrets::Secrets::new(
        opened.secrets.clone(),
        config.plugins.clone(),
    ));
    let state_shutdown = shutdown_rx.clone();
    let state = AppState {
        registry: registry.clone(),
        shell,
        users,
        keys: keys.clone(),
        proxy,
        events: events.clone(),
        jobs,
        secrets: secrets.clone(),
        webhooks: Arc::new(crate::webhooks::Webhooks::new(
            config.webhooks.clone(),
            secrets,
            events.clone(),
            metrics.webhooks.clone(),
        )),
        service_accounts,
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
    let egress_listener = bind_egress(&config).await?;
    let egress = crate::egress::Egress::new(
        config.egress.clone(),
        keys.clone(),
        registry.clone(),
        state.service_accounts.clone(),
        metrics.egress.clone(),
    );
    tracing::info!(%addr, state = %opened.place, plugins = registry.index().len(), "tessera core listening");
    // One plain line on stdout, for people and for scripts that started us on port 0.
    println!("listening on http://{addr}");
    // The API's line first: scripts that take the first "listening on" get the API.
    if let Some(bound) = egress_listener.as_ref().and_then(|l| l.local_addr().ok()) {
        println!("egress proxy listening on http://{bound}");
    }

    let limits =
        crate::listener::Limits::from_config(&config.server, config.probe.concurrency + 128);
    if let Some(l) = egress_listener {
        let mut stop = state_shutdown.clone();
        // The API listener's connection hygiene, for the egress proxy too.
        tasks.push(tokio::spawn(crate::listener::serve(
            l,
            egress.router(),
            limits.clone(),
            metrics.clone(),
            async move {
                let _ = stop.wait_for(|s| *s).await;
            },
        )));
    }
    crate::listener::serve(listener, api::router(state), limits, metrics, async move {
        shutdown_signal().await;
        tracing::info!("shutting down: closing live streams, stopping probes");
        let _ = shutdown_tx.send(true);
    })
    .await;
    let _ = prober.await;
    publisher.abort();
    for task in tasks {
        task.abort();
    }
    // The election releases the Lease on shutdown, so another replica leads at once.
    if let Some(e) = replication.election {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), e).await;
    }
    tracing::info!("stopped");
    Ok(())
}

/// The egress proxy's listener: the configured address (required), else the default one when
/// free (a warning and no proxy when it is taken, so several cores can share a machine).
async fn bind_egress(config: &Config) -> Result<Option<tokio::net::TcpListener>, StartError> {
    let (addr, required) = match config.egress.listen {
        Some(a) => (a, true),
        None => (crate::config::DEFAULT_EGRESS_LISTEN, false),
    };
    match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => {
            let bound = l.local_addr().unwrap_or(addr);
            tracing::info!(addr = %bound, "egress proxy listening");
            Ok(Some(l))
        }
        Err(source) if required => Err(StartError::Listen { addr, source }),
        Err(e) => {
            tracing::warn!(%addr, error = %e, "egress proxy not started: its default address is taken; set egress.listen (--egress-listen) to run it");
            Ok(None)
        }
    }
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    tessera_sdk::shutdown::signal().await;
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
