//! `tessera serve`: the core, configured from a file and flags.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use crate::config::Config;

#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// Address to listen on [default: 127.0.0.1:8080, or the config file's].
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Address of the egress proxy plugins call out through [default: 127.0.0.1:8081, or the
    /// config file's egress.listen].
    #[arg(long, value_name = "ADDR")]
    egress_listen: Option<SocketAddr>,
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
    if let Some(l) = args.egress_listen {
        config.egress.listen = Some(l);
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
    let rt = match super::runtime(super::Runtime::Server) {
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
