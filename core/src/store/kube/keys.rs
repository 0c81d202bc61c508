//! The signing keys in Secret `tessera-signing-key`: `signing-key.pem` signs, `key-<kid>.pem`
//! verify (earlier keys, kept until retired). Created once, by whichever replica comes first
//! (the others read the winner's); rotated and retired with `tessera keys ... --core-namespace`;
//! every replica reads it again every few seconds ([`KubeKeys`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};

use super::{KubeStore, SIGNING_KEY, SIGNING_SECRET, api_status, managed};
use crate::auth::{KeyInfo, KeyLoader, Keys};
use crate::store::StoreError;

/// Secret holding the key session cookies are sealed with.
pub const SESSION_SECRET: &str = "tessera-session-key";
/// Its entry.
const SESSION_KEY: &str = "session-key";

/// Prefix of a verifying key's entry in the Secret.
const KEY_PREFIX: &str = "key-";

impl KubeStore {
    fn secrets(&self) -> Api<Secret> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// The Secret, created with a fresh key when missing (race-safe: the create that lost
    /// reads the winner's).
    async fn signing_secret(&self) -> Result<Secret, StoreError> {
        let pem = || Keys::generate_pem().map_err(|e| StoreError::Failed(e.to_string()));
        self.secret_or_create(SIGNING_SECRET, SIGNING_KEY, pem)
            .await
    }

    /// Secret `name`, created with `key` = `make()` when missing; replicas racing to create it
    /// end up with the winner's.
    async fn secret_or_create(
        &self,
        name: &str,
        key: &str,
        make: impl FnOnce() -> Result<String, StoreError>,
    ) -> Result<Secret, StoreError> {
        let secrets = self.secrets();
        let read = |e: kube::Error| StoreError::Failed(format!("reading Secret {name}: {e}"));
        if let Some(s) = self
            .bounded("reading a Secret", secrets.get_opt(name))
            .await?
            .map_err(read)?
        {
            return Ok(s);
        }
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some(managed()),
                ..Default::default()
            },
            string_data: Some(BTreeMap::from([(key.to_string(), make()?)])),
            type_: Some("Opaque".into()),
            ..Default::default()
        };
        match self
            .bounded(
                "creating a Secret",
                secrets.create(&PostParams::default(), &secret),
            )
            .await?
        {
            Ok(s) => Ok(s),
            Err(e) if api_status(&e) == Some(409) => self
                .bounded("reading a Secret", secrets.get(name))
                .await?
                .map_err(read),
            Err(e) => Err(StoreError::Failed(format!("creating Secret {name}: {e}"))),
        }
    }

    /// The key session cookies are sealed with (Secret `tessera-session-key`), created when
    /// missing.
    pub async fn session_key(&self) -> Result<crate::users::cookie::SessionKey, StoreError> {
        let make = || {
            crate::users::cookie::SessionKey::generate_base64()
                .map_err(|e| StoreError::Failed(e.to_string()))
        };
        let secret = self
            .secret_or_create(SESSION_SECRET, SESSION_KEY, make)
            .await?;
        let text = secret
            .data
            .as_ref()
            .and_then(|d| d.get(SESSION_KEY))
            .and_then(|b| String::from_utf8(b.0.clone()).ok())
            .ok_or_else(|| {
                StoreError::Failed(format!("Secret {SESSION_SECRET} has no {SESSION_KEY}"))
            })?;
        crate::users::cookie::SessionKey::from_base64(&text)
            .map_err(|e| StoreError::Failed(format!("Secret {SESSION_SECRET}: {e}")))
    }

    /// The signing keys' PEMs, the signing one first.
    pub async fn signing_keys(&self) -> Result<Vec<String>, StoreError> {
        pems(&self.signing_secret().await?)
    }

    /// A new signing key; the one it replaces keeps verifying. Returns (old kid, new kid).
    pub async fn rotate_signing_key(&self) -> Result<(String, String), StoreError> {
        self.change_signing_secret("rotating the signing key", |data, current| {
            let old = kid(&current[0])?;
            let pem = Keys::generate_pem().map_err(|e| StoreError::Failed(e.to_string()))?;
            let new = kid(&pem)?;
            data.insert(
                format!("{KEY_PREFIX}{old}.pem"),
                ByteString(current[0].clone().into_bytes()),
            );
            data.insert(SIGNING_KEY.to_string(), ByteString(pem.into_bytes()));
            Ok((old, new))
        })
        .await
    }

    /// The keys, the signing one first.
    pub async fn signing_key_list(&self) -> Result<Vec<KeyInfo>, StoreError> {
        let keys =
            Keys::from_pems(&self.signing_keys().await?, None).map_err(StoreError::Failed)?;
        Ok(keys.infos())
    }

    /// Removes a key that no longer signs.
    pub async fn retire_signing_key(&self, retired: &str) -> Result<(), StoreError> {
        self.change_signing_secret("retiring a signing key", |data, current| {
            if kid(&current[0])? == retired {
                return Err(StoreError::Failed(format!(
                    "key {retired} signs: rotate first (tessera keys rotate), then retire it"
                )));
            }
            let entries: Vec<String> = data
                .iter()
                .filter(|(k, v)| {
                    k.starts_with(KEY_PREFIX)
                        && std::str::from_utf8(&v.0)
                            .ok()
                            .and_then(|pem| kid(pem).ok())
                            .is_some_and(|k| k == retired)
                })
                .map(|(k, _)| k.clone())
                .collect();
            if entries.is_empty() {
                return Err(StoreError::Failed(format!(
                    "no key {retired} (tessera keys list shows them)"
                )));
            }
            for k in entries {
                data.remove(&k);
            }
            Ok(())
        })
        .await
    }

    /// Changes the Secret's data as `change` says (given its PEMs, the signing one first) and
    /// replaces it with the `resourceVersion` read; a concurrent change is read again.
    async fn change_signing_secret<T>(
        &self,
        what: &str,
        change: impl Fn(&mut BTreeMap<String, ByteString>, &[String]) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let secrets = self.secrets();
        for _ in 0..8 {
            let mut secret = self.signing_secret().await?;
            let current = pems(&secret)?;
            let out = change(secret.data.get_or_insert_with(BTreeMap::new), &current)?;
            match self
                .bounded(
                    what,
                    secrets.replace(SIGNING_SECRET, &PostParams::default(), &secret),
                )
                .await?
            {
                Ok(_) => return Ok(out),
                Err(e) if api_status(&e) == Some(409) => continue,
                Err(e) => {
                    return Err(StoreError::Failed(format!(
                        "writing Secret {SIGNING_SECRET}: {e}"
                    )));
                }
            }
        }
        Err(StoreError::Failed(format!(
            "writing Secret {SIGNING_SECRET}: too many concurrent changes"
        )))
    }
}

/// The key id of a PEM.
fn kid(pem: &str) -> Result<String, StoreError> {
    Keys::from_pem(pem)
        .map(|k| k.kid())
        .map_err(|e| StoreError::Failed(format!("{SIGNING_SECRET}: {e}")))
}

/// The PEMs of the Secret, `signing-key.pem` first, then the `key-*` entries in name order.
fn pems(secret: &Secret) -> Result<Vec<String>, StoreError> {
    let data = secret.data.clone().unwrap_or_default();
    let text = |b: &ByteString| String::from_utf8(b.0.clone()).ok();
    let signing = data.get(SIGNING_KEY).and_then(text).ok_or_else(|| {
        StoreError::Failed(format!("Secret {SIGNING_SECRET} has no {SIGNING_KEY}"))
    })?;
    Ok(std::iter::once(signing)
        .chain(
            data.iter()
                .filter(|(k, _)| k.starts_with(KEY_PREFIX))
                .filter_map(|(_, v)| text(v)),
        )
        .collect())
}

/// The Secret as where a replica's keys are read again from.
pub(super) struct KubeKeys(pub(super) Arc<KubeStore>);

impl KeyLoader for KubeKeys {
    fn load(&self) -> BoxFuture<'_, Result<Vec<String>, String>> {
        Box::pin(async move { self.0.signing_keys().await.map_err(|e| e.to_string()) })
    }
}
