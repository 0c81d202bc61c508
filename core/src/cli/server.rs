//! `tessera serve` and `tessera health`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use super::runtime;
use crate::config::Config;

#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// Address to listen on [default: 127.0.0.1:8080, or the config file's].
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Folder holding tessera.db and the signing key [default: .tessera, or the config file's].
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// YAML config file (see docs/configuration.md); flags override it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Where state lives [default: sqlite, or the config file's]; `kubernetes` uses in-cluster
    /// config or KUBECONFIG (see docs/kubernetes.md).
    #[arg(long, value_enum, value_name = "STORE")]
    store: Option<crate::config::StoreKind>,
    /// Namespace of the Kubernetes store [default: the pod's, or the kubeconfig's].
    #[arg(long, value_name = "NS")]
    namespace: Option<String>,
}

pub(crate) fn serve(args: ServeArgs) -> ExitCode {
    crate::serve::init_logging();
    let mut config = match &args.config {
        Some(path) => match Config::from_file(path) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("error: config: {e}");
                return ExitCode::from(2);
            }
        },
        None => Config::default(),
    };
    if let Some(l) = args.listen {
        config.listen = l;
    }
    if let Some(d) = args.data_dir {
        config.data_dir = d;
    }
    if let Some(s) = args.store {
        config.store = s;
    }
    if let Some(ns) = args.namespace {
        config.kubernetes.namespace = Some(ns);
    }
    if let Err(e) = config.check_final() {
        eprintln!("error: config: {e}");
        return ExitCode::from(2);
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        // Store writes are serialized; a few blocking threads are plenty, and each idle one
        // would keep its own allocator arena.
        .max_blocking_threads(8)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(crate::serve::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

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
    let checked = runtime().and_then(|rt| {
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
