//! Where the commands get signing keys and record what they mint: the data dir's key file (a
//! local core), or the cluster's signing-key Secret (`--core-namespace`).

use std::path::Path;
use std::process::ExitCode;

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
    let pem = store.signing_key().await?;
    Keys::from_pem(&pem).map_err(|e| format!("the signing key Secret holds no Ed25519 key: {e}"))
}

/// Adds a token minted offline to the token list in the data dir's SQLite file (the running
/// core reads the list from there, so `GET /api/tokens` shows it).
pub(crate) fn record_offline(
    data_dir: &Path,
    claims: &auth::Claims,
    by: &str,
) -> Result<(), String> {
    let store =
        crate::store::sqlite::SqliteStore::open(&data_dir.join(crate::store::sqlite::DB_FILE))
            .map_err(|e| e.to_string())?;
    let now = crate::model::now_rfc3339();
    let token = claims.issued(by);
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
