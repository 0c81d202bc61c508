//! The signing keys: one signs, the others (earlier keys, kept until retired) still verify, so a
//! rotation never breaks a token another replica, or this one a moment ago, signed.
//!
//! Where they live is a [`KeyLoader`]: the data dir (`signing-key.pem` signs,
//! `signing-keys/<kid>.pem` verify) or, in a cluster, the Secret `tessera-signing-key`
//! (`signing-key.pem` signs, `key-<kid>.pem` verify). `tessera keys rotate|list|retire` change
//! them; a running core reads them again every few seconds and at once when a token names a key
//! id it does not know.

use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use futures_util::future::BoxFuture;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use sha2::{Digest, Sha256};

use super::{KEY_FILE, write_private};

/// Folder of the data dir holding the keys that verify but no longer sign.
pub const KEYS_DIR: &str = "signing-keys";

/// One Ed25519 key.
pub(super) struct Key {
    /// RFC 7638 thumbprint of the public key: the `kid` of every token it signs.
    pub(super) kid: String,
    pub(super) encoding: EncodingKey,
    pub(super) decoding: DecodingKey,
    pub(super) jwk: Jwk,
}

impl Key {
    /// A key from an Ed25519 private key in PKCS#8 PEM.
    pub(super) fn from_pem(pem: &str) -> Result<Key, jsonwebtoken::errors::Error> {
        let encoding = EncodingKey::from_ed_pem(pem.as_bytes())?;
        let mut jwk = Jwk::from_encoding_key(&encoding, Algorithm::EdDSA)?;
        let x = match &jwk.algorithm {
            AlgorithmParameters::OctetKeyPair(p) => p.x.clone(),
            _ => return Err(ErrorKind::InvalidEddsaKey.into()),
        };
        let thumb = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#);
        let kid = URL_SAFE_NO_PAD.encode(Sha256::digest(thumb.as_bytes()));
        jwk.common.key_id = Some(kid.clone());
        jwk.common.public_key_use = Some(jsonwebtoken::jwk::PublicKeyUse::Signature);
        let decoding = DecodingKey::from_ed_components(&x)?;
        Ok(Key {
            kid,
            encoding,
            decoding,
            jwk,
        })
    }
}

/// The keys in force: the first signs, every one verifies.
pub(super) struct KeySet {
    pub(super) keys: Vec<Key>,
}

impl KeySet {
    /// The keys of PEMs, the signing key first; duplicates dropped.
    pub(super) fn from_pems(pems: &[String]) -> Result<KeySet, String> {
        let mut keys: Vec<Key> = Vec::new();
        for (i, pem) in pems.iter().enumerate() {
            let key = Key::from_pem(pem)
                .map_err(|e| format!("key {}: not an Ed25519 private key: {e}", i + 1))?;
            if !keys.iter().any(|k| k.kid == key.kid) {
                keys.push(key);
            }
        }
        if keys.is_empty() {
            return Err("no signing key".into());
        }
        Ok(KeySet { keys })
    }

    pub(super) fn signer(&self) -> &Key {
        &self.keys[0]
    }

    pub(super) fn find(&self, kid: &str) -> Option<&Key> {
        self.keys.iter().find(|k| k.kid == kid)
    }

    pub(super) fn kids(&self) -> Vec<String> {
        self.keys.iter().map(|k| k.kid.clone()).collect()
    }
}

/// Where the keys live, read again after a rotation.
pub trait KeyLoader: Send + Sync {
    /// The keys' PEMs, the signing key first.
    fn load(&self) -> BoxFuture<'_, Result<Vec<String>, String>>;
}

/// One key as `tessera keys list` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyInfo {
    /// Its key id.
    pub kid: String,
    /// Whether it signs (the others only verify).
    pub signing: bool,
}

/// The data dir's keys.
#[derive(Clone, Debug)]
pub struct DirKeys {
    dir: PathBuf,
}

impl DirKeys {
    /// The keys of data dir `dir`.
    pub fn new(dir: &Path) -> DirKeys {
        DirKeys {
            dir: dir.to_path_buf(),
        }
    }

    /// The PEMs, the signing key first (`signing-key.pem`, created when missing), then the
    /// verifying ones in name order.
    pub fn read(&self) -> std::io::Result<Vec<String>> {
        let path = self.dir.join(KEY_FILE);
        let signing = match std::fs::read_to_string(&path) {
            Ok(pem) => pem,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir_all(&self.dir)?;
                let pem = super::Keys::generate_pem()?;
                match write_private(&path, pem.as_bytes()) {
                    Ok(()) => pem,
                    // Another process created it first: use theirs.
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                        std::fs::read_to_string(&path)?
                    }
                    Err(e) => return Err(e),
                }
            }
            Err(e) => return Err(e),
        };
        let mut others: Vec<(String, String)> = Vec::new();
        match std::fs::read_dir(self.dir.join(KEYS_DIR)) {
            Ok(entries) => {
                for e in entries.flatten() {
                    let name = e.file_name().to_string_lossy().to_string();
                    if name.ends_with(".pem") {
                        others.push((name, std::fs::read_to_string(e.path())?));
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        others.sort();
        Ok(std::iter::once(signing)
            .chain(others.into_iter().map(|(_, pem)| pem))
            .collect())
    }

    /// The keys, the signing one first.
    pub fn list(&self) -> Result<Vec<KeyInfo>, String> {
        let pems = self.read().map_err(|e| e.to_string())?;
        let set = KeySet::from_pems(&pems)?;
        Ok(set
            .kids()
            .into_iter()
            .enumerate()
            .map(|(i, kid)| KeyInfo {
                kid,
                signing: i == 0,
            })
            .collect())
    }

    /// A new signing key; the one it replaces keeps verifying. Returns (old kid, new kid).
    /// The old key is kept before the new one is put in place (a crash in between leaves both).
    pub fn rotate(&self) -> Result<(String, String), String> {
        let path = self.dir.join(KEY_FILE);
        let pems = self.read().map_err(|e| e.to_string())?;
        let old = Key::from_pem(&pems[0]).map_err(|e| format!("{}: {e}", path.display()))?;
        let keep = self.dir.join(KEYS_DIR);
        std::fs::create_dir_all(&keep).map_err(|e| format!("{}: {e}", keep.display()))?;
        let kept = keep.join(format!("{}.pem", old.kid));
        match write_private(&kept, pems[0].as_bytes()) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(format!("{}: {e}", kept.display())),
        }
        let pem = super::Keys::generate_pem().map_err(|e| e.to_string())?;
        let new = Key::from_pem(&pem).map_err(|e| e.to_string())?;
        let tmp = self.dir.join(format!("{KEY_FILE}.new"));
        let _ = std::fs::remove_file(&tmp);
        write_private(&tmp, pem.as_bytes()).map_err(|e| format!("{}: {e}", tmp.display()))?;
        std::fs::rename(&tmp, &path).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok((old.kid, new.kid))
    }

    /// Removes a key that no longer signs; tokens it signed are refused from then on.
    pub fn retire(&self, kid: &str) -> Result<(), String> {
        let list = self.list()?;
        match list.iter().find(|k| k.kid == kid) {
            None => Err(format!("no key {kid} (tessera keys list shows them)")),
            Some(k) if k.signing => Err(format!(
                "key {kid} signs: rotate first (tessera keys rotate), then retire it"
            )),
            Some(_) => {
                // Found by content: the file is named by its kid when rotated here, but may
                // have been copied in under another name.
                let dir = self.dir.join(KEYS_DIR);
                for e in std::fs::read_dir(&dir)
                    .map_err(|e| e.to_string())?
                    .flatten()
                {
                    let pem = std::fs::read_to_string(e.path()).unwrap_or_default();
                    if Key::from_pem(&pem).is_ok_and(|k| k.kid == kid) {
                        std::fs::remove_file(e.path()).map_err(|e| e.to_string())?;
                    }
                }
                Ok(())
            }
        }
    }
}

impl KeyLoader for DirKeys {
    fn load(&self) -> BoxFuture<'_, Result<Vec<String>, String>> {
        Box::pin(async move {
            let me = self.clone();
            tokio::task::spawn_blocking(move || me.read())
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())
        })
    }
}
