//! `tessera keys rotate|list|retire`: the core's signing keys, in the data dir or in the
//! cluster's Secret (`--core-namespace`); and where the other commands get keys to mint with
//! and record what they mint.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand};

use super::{Runtime, runtime};
use crate::auth::{self, Keys};
use crate::store::Store;
use crate::store::kube::KubeStore;

/// The keys to mint with: the cluster's (in `core_namespace`), else the data dir's; a data dir
/// without a key is refused unless `init` (a new core). The error carries its exit code.
pub(super) fn for_minting(
    core_namespace: Option<&str>,
    data_dir: &Path,
    init: bool,
) -> Result<Keys, (String, ExitCode)> {
    if let Some(ns) = core_namespace {
        return runtime(Runtime::Client)
            .and_then(|rt| {
                rt.block_on(async {
                    let store = kube_store(Some(ns.to_string())).await?;
                    cluster_keys(&store).await
                })
            })
            .map_err(|e| (e, ExitCode::FAILURE));
    }
    let key_file = data_dir.join(auth::KEY_FILE);
    if !init && !key_file.is_file() {
        return Err((
            format!(
                "{} holds no signing key ({} is missing). Pass the core's --data-dir \
                 (`tessera serve` uses .tessera, `make run` .tessera-dev), or --init to \
                 create a key for a new core.",
                data_dir.display(),
                key_file.display()
            ),
            ExitCode::from(2),
        ));
    }
    Keys::load_or_create(data_dir).map_err(|e| {
        (
            format!("signing key in {}: {e}", data_dir.display()),
            ExitCode::from(2),
        )
    })
}

pub(super) async fn kube_store(
    namespace: Option<String>,
) -> Result<std::sync::Arc<KubeStore>, String> {
    let timing = crate::config::KubernetesConfig::default().timing();
    Ok(std::sync::Arc::new(
        KubeStore::connect(namespace, timing).await?,
    ))
}

pub(super) async fn cluster_keys(store: &KubeStore) -> Result<Keys, String> {
    let pems = store.signing_keys().await?;
    Keys::from_pems(&pems, None).map_err(|e| format!("the signing key Secret: {e}"))
}

/// Adds a token minted offline to the token list in the data dir's SQLite file (the running
/// core reads the list from there, so `GET /api/tokens` shows it).
pub(crate) fn record_offline(
    data_dir: &Path,
    claims: &auth::Claims,
    kid: &str,
    by: &str,
) -> Result<(), String> {
    let store =
        crate::store::sqlite::SqliteStore::open(&data_dir.join(crate::store::sqlite::DB_FILE))
            .map_err(|e| e.to_string())?;
    let now = crate::model::now_rfc3339();
    let token = claims.issued(by, Some(kid.to_string()));
    let event = crate::model::AuditEvent {
        id: 0,
        time: now,
        actor: by.to_string(),
        action: "issue-token".to_string(),
        plugin: None,
        reason: token.audit_reason(),
        request_id: None,
    };
    store
        .commit(&[
            crate::store::Change::Issue(Box::new(token)),
            crate::store::Change::Audit(event),
        ])
        .map_err(|e| e.to_string())
}

#[derive(Debug, Subcommand)]
pub(crate) enum KeysCommand {
    /// Add a new signing key: it signs from now on, the one it replaces keeps verifying (a
    /// running core, and every replica, picks it up within seconds).
    Rotate(Place),
    /// List the keys: which signs, which only verify, and the live tokens that depend on each.
    List(Place),
    /// Remove a key that no longer signs; tokens it signed are refused from then on. Refused
    /// while live registration or admin tokens depend on it, unless --force.
    Retire(RetireArgs),
}

/// Where the keys live.
#[derive(Debug, Args)]
pub(crate) struct Place {
    /// The core's data dir (SQLite store).
    #[arg(long, value_name = "DIR", default_value = ".tessera")]
    data_dir: PathBuf,
    /// The core's namespace (Kubernetes store): the keys are in Secret tessera-signing-key.
    #[arg(long, value_name = "NS")]
    core_namespace: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct RetireArgs {
    /// The key id (`tessera keys list`); key ids may start with `-`.
    #[arg(allow_hyphen_values = true)]
    kid: String,
    /// Retire it even though live tokens depend on it (they are refused from then on).
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    place: Place,
}

pub(crate) fn keys(cmd: KeysCommand) -> ExitCode {
    let done = match cmd {
        KeysCommand::Rotate(p) => rotate(&p),
        KeysCommand::List(p) => list(&p),
        KeysCommand::Retire(r) => retire(&r),
    };
    match done {
        Ok(out) => {
            println!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn in_cluster<T>(
    ns: &str,
    f: impl AsyncFnOnce(std::sync::Arc<KubeStore>) -> Result<T, String>,
) -> Result<T, String> {
    runtime(Runtime::Client)?.block_on(async {
        let store = kube_store(Some(ns.to_string())).await?;
        f(store).await
    })
}

fn rotate(p: &Place) -> Result<String, String> {
    let (old, new) = match &p.core_namespace {
        Some(ns) => in_cluster(ns, async |s| {
            s.rotate_signing_key().await.map_err(String::from)
        })?,
        None => {
            require_key(&p.data_dir)?;
            auth::keyring::DirKeys::new(&p.data_dir).rotate()?
        }
    };
    Ok(format!(
        "{new} signs from now on; {old} still verifies the tokens it signed.\n\
         Retire it once no live token needs it: tessera keys retire {old}"
    ))
}

fn list(p: &Place) -> Result<String, String> {
    let keys = key_list(p)?;
    let tokens = live_tokens(p)?;
    let mut out = format!("{:<44}  {:<9}  LIVE TOKENS\n", "KID", "USE");
    for k in &keys {
        let n = tokens
            .iter()
            .filter(|t| t.kid.as_deref() == Some(k.kid.as_str()))
            .count();
        let usage = if k.signing { "signing" } else { "verifying" };
        out.push_str(&format!("{:<44}  {usage:<9}  {n}\n", k.kid));
    }
    let unknown = tokens.iter().filter(|t| t.kid.is_none()).count();
    if unknown > 0 {
        out.push_str(&format!(
            "{unknown} live token(s) minted before keys were recorded: signed by one of these\n"
        ));
    }
    Ok(out.trim_end().to_string())
}

fn retire(r: &RetireArgs) -> Result<String, String> {
    let keys = key_list(&r.place)?;
    match keys.iter().find(|k| k.kid == r.kid) {
        None => return Err(format!("no key {} (tessera keys list shows them)", r.kid)),
        Some(k) if k.signing => {
            return Err(format!(
                "key {} signs: rotate first (tessera keys rotate), then retire it",
                r.kid
            ));
        }
        Some(_) => {}
    }
    let depending: Vec<crate::model::IssuedToken> = live_tokens(&r.place)?
        .into_iter()
        .filter(|t| t.kid.is_none() || t.kid.as_deref() == Some(r.kid.as_str()))
        .collect();
    if !depending.is_empty() && !r.force {
        let lines: Vec<String> = depending
            .iter()
            .map(|t| {
                format!(
                    "  {}  {} {}  expires {}{}",
                    t.jti,
                    t.kind,
                    t.subject,
                    t.expires.as_deref().unwrap_or("never"),
                    if t.kid.is_none() {
                        "  (key not recorded)"
                    } else {
                        ""
                    }
                )
            })
            .collect();
        return Err(format!(
            "{} live token(s) may depend on key {}; they would be refused once it is retired:\n{}\n\
             Rotate them first (tessera token rotate), or retire anyway with --force.",
            depending.len(),
            r.kid,
            lines.join("\n")
        ));
    }
    match &r.place.core_namespace {
        Some(ns) => {
            let kid = r.kid.clone();
            in_cluster(ns, async move |s| {
                s.retire_signing_key(&kid).await.map_err(String::from)
            })?
        }
        None => auth::keyring::DirKeys::new(&r.place.data_dir).retire(&r.kid)?,
    }
    Ok(format!(
        "retired {}: tokens it signed are refused from now on",
        r.kid
    ))
}

fn require_key(dir: &Path) -> Result<(), String> {
    if dir.join(auth::KEY_FILE).is_file() {
        Ok(())
    } else {
        Err(format!(
            "{} holds no signing key: pass the core's --data-dir",
            dir.display()
        ))
    }
}

fn key_list(p: &Place) -> Result<Vec<auth::KeyInfo>, String> {
    match &p.core_namespace {
        Some(ns) => in_cluster(ns, async |s| {
            s.signing_key_list().await.map_err(String::from)
        }),
        None => {
            require_key(&p.data_dir)?;
            auth::keyring::DirKeys::new(&p.data_dir).list()
        }
    }
}

/// Registration and admin tokens that are neither revoked nor expired.
fn live_tokens(p: &Place) -> Result<Vec<crate::model::IssuedToken>, String> {
    let (tokens, revoked) = match &p.core_namespace {
        Some(ns) => in_cluster(ns, async |s| {
            tokio::task::spawn_blocking(move || {
                let tokens = s.tokens().map_err(String::from)?;
                let revoked = s.load().map_err(String::from)?.revoked;
                Ok::<_, String>((tokens, revoked))
            })
            .await
            .map_err(|e| e.to_string())?
        })?,
        None => {
            let db = p.data_dir.join(crate::store::sqlite::DB_FILE);
            if !db.is_file() {
                return Ok(Vec::new());
            }
            let store = crate::store::sqlite::SqliteStore::open(&db).map_err(|e| e.to_string())?;
            let tokens = store.tokens().map_err(String::from)?;
            (tokens, store.load().map_err(String::from)?.revoked)
        }
    };
    let now = crate::model::now_rfc3339();
    Ok(tokens
        .into_iter()
        .filter(|t| !revoked.contains(&t.jti))
        .filter(|t| t.expires.as_ref().is_none_or(|e| e.as_str() > now.as_str()))
        .collect())
}
