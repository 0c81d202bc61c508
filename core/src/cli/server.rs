//! `tessera serve` and `tessera token ...`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde_json::json;
use tessera_sdk::Capability;

use crate::auth::{self, Keys};
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
    if let Err(e) = config.check() {
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

#[derive(Debug, Subcommand)]
pub(crate) enum TokenCommand {
    /// Print a new registration token (--plugin) or admin token (--admin).
    Issue(IssueArgs),
}

#[derive(Debug, Args)]
pub(crate) struct IssueArgs {
    /// Plugin the registration token is for.
    #[arg(
        long,
        value_name = "NAME",
        conflicts_with = "admin",
        required_unless_present = "admin"
    )]
    plugin: Option<String>,
    /// Capabilities granted, comma-separated (e.g. ui:panel,ui:route).
    #[arg(
        long,
        value_name = "LIST",
        value_delimiter = ',',
        conflicts_with = "admin"
    )]
    capabilities: Vec<String>,
    /// Namespace the plugin's URLs must live in (cluster mode).
    #[arg(long, value_name = "NS", conflicts_with = "admin")]
    namespace: Option<String>,
    /// Mint an admin token instead.
    #[arg(long)]
    admin: bool,
    /// Lifetime, e.g. 90d, 12h, 30m [default: none for plugins, 12h for admins].
    #[arg(long, value_name = "DURATION", value_parser = auth::parse_ttl)]
    ttl: Option<u64>,
    /// Data dir holding the signing key (created if missing).
    #[arg(long, value_name = "DIR", default_value = ".tessera")]
    data_dir: PathBuf,
    /// Print {token, jti, claims} as JSON instead of the bare token.
    #[arg(long)]
    json: bool,
}

pub(crate) fn token(cmd: TokenCommand) -> ExitCode {
    let TokenCommand::Issue(a) = cmd;
    let keys = match Keys::load_or_create(&a.data_dir) {
        Ok(k) => k,
        Err(e) => {
            eprintln!("error: signing key in {}: {e}", a.data_dir.display());
            return ExitCode::from(2);
        }
    };
    let signed = if a.admin {
        keys.issue_admin(a.ttl.unwrap_or(12 * 3600))
    } else {
        let name = a.plugin.unwrap_or_default();
        if !tessera_sdk::manifest::is_plugin_name(&name) {
            eprintln!(
                "error: --plugin \"{name}\" is not a plugin name (lowercase letters, digits and '-')"
            );
            return ExitCode::from(2);
        }
        let mut caps = Vec::new();
        for c in a
            .capabilities
            .iter()
            .map(|c| c.trim())
            .filter(|c| !c.is_empty())
        {
            match Capability::parse(c) {
                Ok(c) => caps.push(c),
                Err(e) => {
                    eprintln!("error: --capabilities: {e}");
                    return ExitCode::from(2);
                }
            }
        }
        keys.issue_registration(&name, &caps, a.namespace, a.ttl)
    };
    match signed {
        Ok((token, claims)) => {
            if a.json {
                println!(
                    "{}",
                    json!({"token": token, "jti": claims.jti, "claims": claims})
                );
            } else {
                println!("{token}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: signing failed: {e}");
            ExitCode::FAILURE
        }
    }
}
