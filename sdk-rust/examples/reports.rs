//! `reports`: a plugin backend with a job the core runs every minute, and one it registers at
//! run time. The example docs/jobs.md walks through; it builds with the workspace, so the code
//! there compiles. Run it beside a core (the SDK serves the UI from `UI_REMOTE_PATH` and stays
//! unready without a `remoteEntry.js` there):
//!
//! ```sh
//! mkdir -p /tmp/reports-ui && echo 'var plugin_reports = {};' > /tmp/reports-ui/remoteEntry.js
//! CORE_BASE_URL=http://127.0.0.1:8080 PORT=7102 UI_REMOTE_PATH=/tmp/reports-ui \
//!   REG_TOKEN=$(tessera token issue --plugin reports --capabilities jobs:schedule) \
//!   target/debug/examples/reports
//! ```
//!
//! ```yaml
//! # plugin.yaml (excerpt)
//! jobs:
//!   - name: minutely-report
//!     schedule: "* * * * *"
//!     path: /jobs/report
//! ```

use std::process::ExitCode;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::post;
use tessera_sdk::jobs::{Concurrency, JobSpec};
use tessera_sdk::runtime::{self, CoreClient, JobRun, PluginApp};

struct Reports;

/// One run: the core calls this at each scheduled time. A 2xx answer is a success and its body
/// is kept with the run; anything else is a failure (retried when the job has `retries`).
async fn report(run: JobRun) -> (StatusCode, String) {
    tracing::info!(job = %run.job, run = %run.run_id, scheduled = %run.scheduled_time, "report");
    (
        StatusCode::OK,
        format!("report for {} written", run.scheduled_time),
    )
}

impl PluginApp for Reports {
    fn routes(&self) -> Router {
        // `JobRun` refuses (403) any call that is not a job run from the core.
        Router::new()
            .route("/jobs/report", post(report))
            .route("/jobs/cleanup", post(report))
    }

    async fn on_start(&self, core: CoreClient) {
        // A job registered at run time: the same fields as in plugin.yaml.
        let mut cleanup = JobSpec::new("cleanup", "@every 30s", "/jobs/cleanup");
        cleanup.concurrency = Concurrency::Replace;
        cleanup.retries = 2;
        tokio::spawn(async move {
            // The plugin token arrives with the first registration.
            for _ in 0..60 {
                match core.register_job(&cleanup).await {
                    Ok(job) => {
                        tracing::info!(next = %job["nextRun"], "cleanup registered");
                        return;
                    }
                    Err(e) => tracing::info!(error = %e, "cleanup not registered yet"),
                }
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        });
    }
}

const MANIFEST: &str = r#"
name: reports
version: "1.0.0"
compat: {core: "^2.2", backend_sdk: "^1.3"}
capabilities: [jobs:schedule]
ui: {mode: ModuleFederation, remotePath: /mf/remoteEntry.js}
endpoints: {basePath: /api}
health: {livenessPath: /healthz, readinessPath: /readyz}
jobs:
  - name: minutely-report
    schedule: "* * * * *"
    path: /jobs/report
"#;

#[tokio::main]
async fn main() -> ExitCode {
    runtime::init_logging("reports", "1.0.0");
    let manifest = match runtime::manifest_from_yaml(MANIFEST) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    match runtime::serve(Reports, manifest).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}
