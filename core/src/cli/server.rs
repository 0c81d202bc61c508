//! `tessera serve` and `tessera token ...`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde_json::json;
use tessera_sdk::Capability;

use crate::auth::{self, Keys};
use crate::config::Config;
use crate::store::kube::KubeStore;

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

#[derive(Debug, Subcommand)]
pub(crate) enum TokenCommand {
    /// Print a new registration token (--plugin) or admin token (--admin).
    Issue(IssueArgs),
    /// Re-mint a plugin's token in its Secret and revoke the old one (Kubernetes store).
    Rotate(RotateArgs),
}

#[derive(Debug, Args)]
pub(crate) struct RotateArgs {
    /// Plugin whose token is rotated.
    #[arg(long, value_name = "NAME")]
    plugin: String,
    /// Namespace of the token Secret.
    #[arg(long, value_name = "NS")]
    k8s_namespace: String,
    /// Name of the token Secret [default: plugin-reg-token-<plugin>].
    #[arg(long, value_name = "NAME")]
    k8s_secret: Option<String>,
    /// Namespace of the core (its signing key and revoked tokens) [default: the kubeconfig's].
    #[arg(long, value_name = "NS")]
    core_namespace: Option<String>,
    /// Lifetime of the new token, e.g. 90d [default: none].
    #[arg(long, value_name = "DURATION", value_parser = auth::parse_ttl)]
    ttl: Option<u64>,
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
    /// Write the bare token to this file (mode 0600) instead of printing it.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Take the signing key from the core's Secret in this namespace (Kubernetes store)
    /// instead of the data dir.
    #[arg(long, value_name = "NS")]
    core_namespace: Option<String>,
    /// Also write the token into this Secret (`data.token`), created or updated.
    #[arg(long, value_name = "NAME", requires = "k8s_namespace")]
    k8s_secret: Option<String>,
    /// Namespace of --k8s-secret.
    #[arg(long, value_name = "NS", requires = "k8s_secret")]
    k8s_namespace: Option<String>,
}

/// A runtime for the commands that call the Kubernetes API.
fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))
}

async fn kube_store(namespace: Option<String>) -> Result<std::sync::Arc<KubeStore>, String> {
    let timing = crate::config::KubernetesConfig::default().timing();
    Ok(std::sync::Arc::new(
        KubeStore::connect(namespace, timing).await?,
    ))
}

async fn cluster_keys(store: &KubeStore) -> Result<Keys, String> {
    let pem = store.signing_key().await?;
    Keys::from_pem(&pem).map_err(|e| format!("the signing key Secret holds no Ed25519 key: {e}"))
}

pub(crate) fn token(cmd: TokenCommand) -> ExitCode {
    let a = match cmd {
        TokenCommand::Issue(a) => a,
        TokenCommand::Rotate(r) => return rotate(r),
    };
    let cluster = match &a.core_namespace {
        Some(ns) => match runtime().and_then(|rt| {
            rt.block_on(async {
                let store = kube_store(Some(ns.clone())).await?;
                cluster_keys(&store).await
            })
        }) {
            Ok(keys) => Some(keys),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        },
        None => None,
    };
    let keys = match cluster {
        Some(k) => k,
        None => match Keys::load_or_create(&a.data_dir) {
            Ok(k) => k,
            Err(e) => {
                eprintln!("error: signing key in {}: {e}", a.data_dir.display());
                return ExitCode::from(2);
            }
        },
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
            if let (Some(secret), Some(ns)) = (&a.k8s_secret, &a.k8s_namespace) {
                let written = runtime().and_then(|rt| {
                    rt.block_on(async {
                        let store = kube_store(a.core_namespace.clone()).await?;
                        store
                            .write_token_secret(ns, secret, &claims.sub, &token, true)
                            .await
                    })
                });
                if let Err(e) = written {
                    eprintln!("error: {e}");
                    return ExitCode::FAILURE;
                }
                eprintln!(
                    "wrote the token to Secret {ns}/{secret} (key {})",
                    crate::store::kube::TOKEN_KEY
                );
            }
            if let Some(out) = &a.out {
                // A new token replaces the file; it is never readable by others, even briefly.
                let _ = std::fs::remove_file(out);
                if let Err(e) = auth::write_private(out, token.as_bytes()) {
                    eprintln!("error: {}: {e}", out.display());
                    return ExitCode::FAILURE;
                }
                eprintln!("wrote the token (jti {}) to {}", claims.jti, out.display());
            } else if a.json {
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

/// `tessera token rotate`: mints a token with the same grant, writes it into the Secret, then
/// revokes the old token id (every replica refuses it once its watch sees the change).
fn rotate(r: RotateArgs) -> ExitCode {
    let secret = r
        .k8s_secret
        .clone()
        .unwrap_or_else(|| crate::store::kube::token_secret_name(&r.plugin));
    let done = runtime().and_then(|rt| {
        rt.block_on(async {
            let store = kube_store(r.core_namespace.clone()).await?;
            let keys = cluster_keys(&store).await?;
            let old = store
                .read_token_secret(&r.k8s_namespace, &secret)
                .await?
                .ok_or_else(|| format!("Secret {}/{secret} holds no token", r.k8s_namespace))?;
            let claims = auth::peek_claims(&old)
                .ok_or_else(|| format!("Secret {}/{secret} does not hold a token", r.k8s_namespace))?;
            if claims.sub != r.plugin {
                return Err(format!(
                    "Secret {}/{secret} holds a token for plugin \"{}\", not \"{}\"",
                    r.k8s_namespace, claims.sub, r.plugin
                ));
            }
            let caps = claims
                .caps
                .iter()
                .map(|c| Capability::parse(c).map_err(|e| e.to_string()))
                .collect::<Result<Vec<_>, _>>()?;
            let (token, fresh) = keys
                .issue_registration(&r.plugin, &caps, claims.ns.clone(), r.ttl)
                .map_err(|e| e.to_string())?;
            store
                .write_token_secret(&r.k8s_namespace, &secret, &r.plugin, &token, true)
                .await?;
            store
                .revoke_token(&claims.jti, "cli:token-rotate")
                .await?;
            Ok(json!({"secret": format!("{}/{secret}", r.k8s_namespace), "jti": fresh.jti, "revoked": claims.jti}))
        })
    });
    match done {
        Ok(v) => {
            println!("{v}");
            ExitCode::SUCCESS
        }
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
