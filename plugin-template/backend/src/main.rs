//! `hello`, the template plugin's backend: one example API, `GET <basePath>/v1/greeting`,
//! on top of everything `tessera_sdk::runtime::serve` provides (health, readiness, metrics,
//! manifest, the UI files, registration with the core).
//!
//! Run it beside a core (`tessera dev` does all of this):
//!
//! ```sh
//! CORE_BASE_URL=http://127.0.0.1:8080 REG_TOKEN=$(tessera token issue --plugin hello \
//!   --capabilities ui:panel,ui:route) UI_REMOTE_PATH=plugin-template/ui/dist PORT=7001 hello-plugin
//! ```

use std::process::ExitCode;
use std::sync::{Arc, RwLock};

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use serde_json::{Value, json};
use tessera_sdk::runtime::{self, CoreClient, PluginApp};

/// The plugin's state: the configured greeting.
#[derive(Default)]
struct Hello {
    greeting: Arc<RwLock<String>>,
}

impl PluginApp for Hello {
    fn routes(&self) -> Router {
        Router::new()
            .route("/v1/greeting", get(greeting))
            .with_state(self.greeting.clone())
    }

    async fn on_start(&self, core: CoreClient) {
        let configured = core
            .config
            .get("greeting")
            .and_then(Value::as_str)
            .unwrap_or("Hello")
            .to_string();
        if let Ok(mut g) = self.greeting.write() {
            *g = configured;
        }
    }
}

async fn greeting(State(word): State<Arc<RwLock<String>>>) -> axum::Json<Value> {
    let word = word
        .read()
        .map(|g| g.clone())
        .unwrap_or_else(|_| "Hello".to_string());
    axum::Json(json!({ "greeting": format!("{word}, world") }))
}

#[tokio::main]
async fn main() -> ExitCode {
    // `hello-plugin healthcheck`: the container image's HEALTHCHECK.
    if std::env::args().nth(1).as_deref() == Some("healthcheck") {
        return runtime::healthcheck().await;
    }
    let manifest = match runtime::manifest_from_yaml(include_str!("../../plugin.yaml")) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    runtime::init_logging(&manifest.name, &manifest.version.to_string());
    match runtime::serve(Hello::default(), manifest).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(runtime::ServeError::Config(e)) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
