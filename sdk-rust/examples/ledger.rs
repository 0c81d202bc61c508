//! `ledger`: a plugin backend that receives `billing.invoice.*` events and publishes its own
//! `ledger.entry.recorded` for each. The example docs/events.md walks through; it builds with
//! the workspace, so the code there compiles. Run it beside a core (the SDK serves the UI from
//! `UI_REMOTE_PATH` and stays unready without a `remoteEntry.js` there):
//!
//! ```sh
//! mkdir -p /tmp/ledger-ui && echo 'var plugin_ledger = {};' > /tmp/ledger-ui/remoteEntry.js
//! CORE_BASE_URL=http://127.0.0.1:8080 PORT=7101 UI_REMOTE_PATH=/tmp/ledger-ui \
//!   REG_TOKEN=$(tessera token issue --plugin ledger --capabilities events:subscribe,events:publish) \
//!   target/debug/examples/ledger
//! ```
//!
//! ```yaml
//! # plugin.yaml (excerpt)
//! capabilities: [events:publish]
//! events:
//!   subscribe:
//!     - type: "billing.invoice.*"
//!       path: /events
//! ```

use std::process::ExitCode;
use std::sync::{Arc, OnceLock};

use axum::Router;
use serde::{Deserialize, Serialize};
use tessera_sdk::runtime::{self, CoreClient, EventError, EventType, PluginApp, on_event};

/// The payload `billing` publishes as `billing.invoice.created`.
#[derive(Deserialize)]
struct Invoice {
    invoice: String,
    total_cents: u64,
}

/// What this plugin publishes.
#[derive(Serialize)]
struct EntryRecorded {
    invoice: String,
    total_cents: u64,
}

impl EventType for EntryRecorded {
    const TYPE: &'static str = "ledger.entry.recorded";
}

#[derive(Default)]
struct Ledger {
    core: Arc<OnceLock<CoreClient>>,
}

impl PluginApp for Ledger {
    fn routes(&self) -> Router {
        let core = self.core.clone();
        // `on_event` answers only the core's deliveries, skips an id it handled in the last ten
        // minutes, and turns the handler's answer into the status the core acts on.
        Router::new().route(
            "/events",
            on_event(move |caller, event| {
                let core = core.clone();
                async move {
                    let invoice: Invoice = event
                        .data_as()
                        .map_err(|e| EventError::Reject(format!("not an invoice: {e}")))?;
                    tracing::info!(id = %event.id, tenant = %caller.tenant, invoice = %invoice.invoice, "recording");
                    let Some(core) = core.get() else {
                        return Err(EventError::Retry("starting".into()));
                    };
                    let entry = EntryRecorded {
                        invoice: invoice.invoice,
                        total_cents: invoice.total_cents,
                    };
                    // A failed publish is retried by answering 503: the core delivers again.
                    core.publish(&entry)
                        .await
                        .map_err(|e| EventError::Retry(e.to_string()))?;
                    Ok(())
                }
            }),
        )
    }

    async fn on_start(&self, core: CoreClient) {
        let _ = self.core.set(core);
    }
}

const MANIFEST: &str = r#"
name: ledger
version: "1.0.0"
compat: {core: "^2.1", backend_sdk: "^1.2"}
capabilities: [events:publish]
ui: {mode: ModuleFederation, remotePath: /mf/remoteEntry.js}
endpoints: {basePath: /api}
health: {livenessPath: /healthz, readinessPath: /readyz}
events:
  subscribe:
    - type: "billing.invoice.*"
      path: /events
"#;

#[tokio::main]
async fn main() -> ExitCode {
    runtime::init_logging("ledger", "1.0.0");
    let manifest = match runtime::manifest_from_yaml(MANIFEST) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    match runtime::serve(Ledger::default(), manifest).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}
