//! `tessera health`: exit 0 when a core answers its health endpoint (a container HEALTHCHECK).

use std::process::ExitCode;

use clap::Args;

use super::{Runtime, runtime};

#[derive(Debug, Args)]
pub(crate) struct HealthArgs {
    /// The endpoint to ask.
    #[arg(
        long,
        value_name = "URL",
        default_value = "http://127.0.0.1:8080/healthz"
    )]
    url: String,
}

/// `tessera health`: 0 when the URL answers 2xx within 2 s, 1 otherwise (with why).
pub(crate) fn health(a: HealthArgs) -> ExitCode {
    let checked = runtime(Runtime::Client).and_then(|rt| {
        rt.block_on(async {
            let client = reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(2))
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .map_err(|e| e.to_string())?;
            let res = client.get(&a.url).send().await.map_err(|e| e.to_string())?;
            if res.status().is_success() {
                Ok(())
            } else {
                Err(format!("HTTP {}", res.status().as_u16()))
            }
        })
    });
    match checked {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("unhealthy: {}: {e}", a.url);
            ExitCode::FAILURE
        }
    }
}
