//! Where plugin secrets live: on SQLite, table `plugin_secrets` in `tessera.db`, each value
//! sealed with XChaCha20-Poly1305 under a key of its own (`secrets-key` in the data dir, mode
//! 0600, never the signing or session key); in a cluster, the Secret `tessera-secrets-<plugin>`
//! in the plugin's namespace (`crate::store::kube`), read only.
//!
//! A sealed value is bound to its plugin and name (the AEAD's associated data), so a row copied
//! to another name does not open. The key file is a keyring (`<kid> <base64 key>` a line, the
//! first seals); [`rotate_key`] seals every value again under a new key and then drops the old
//! ones. The running core reads the keyring on every call, so a rotation needs no restart.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rusqlite::{Connection, OptionalExtension, params};

use super::StoreError;
use crate::sync::lock;

/// File name of the secrets keyring in the data dir.
pub const SECRETS_KEY_FILE: &str = "secrets-key";

/// One secret as the admin list shows it: never its value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretInfo {
    /// The secret's name.
    pub name: String,
    /// When it was last set (RFC 3339), when the store knows.
    pub updated_at: Option<String>,
}

/// Which plugin's secrets, and where a cluster keeps them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    /// The plugin.
    pub plugin: String,
    /// Its namespace (cluster only; the namespace of its Service).
    pub namespace: Option<String>,
}

/// A place plugin secrets are kept.
pub trait SecretStore: Send + Sync + 'static {
    /// A secret's value (`None`: not set).
    fn get(&self, owner: &Owner, name: &str) -> Result<Option<String>, StoreError>;
    /// Sets a value; true when it was new.
    fn put(&self, owner: &Owner, name: &str, value: &str) -> Result<bool, StoreError>;
    /// Removes a value; false when it was not set.
    fn delete(&self, owner: &Owner, name: &str) -> Result<bool, StoreError>;
    /// The names set for a plugin, sorted.
    fn list(&self, owner: &Owner) -> Result<Vec<SecretInfo>, StoreError>;
    /// `None` when admins set values through the core; else where the values are managed
    /// instead (the core only reads them).
    fn managed_elsewhere(&self, owner: &Owner) -> Option<String>;
}

const MIGRATIONS: &[&str] = &["CREATE TABLE plugin_secrets (
        plugin TEXT NOT NULL,
        name TEXT NOT NULL,
        kid TEXT NOT NULL,
        nonce BLOB NOT NULL,
        sealed BLOB NOT NULL,
        updated_at TEXT NOT NULL,
        PRIMARY KEY (plugin, name)
    );"];

fn err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Failed(format!("secrets: {e}"))
}

/// The keyring: (kid, cipher), the first seals.
struct Keyring(Vec<(String, XChaCha20Poly1305)>);

impl Keyring {
    fn parse(text: &str, path: &Path) -> Result<Keyring, StoreError> {
        let mut keys = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |why: &str| err(format!("{} line {}: {why}", path.display(), i + 1));
            let (kid, b64) = line
                .split_once(' ')
                .ok_or_else(|| bad("expected \"<kid> <base64 key>\""))?;
            let bytes = STANDARD
                .decode(b64.trim())
                .map_err(|_| bad("the key is not base64"))?;
            let cipher = XChaCha20Poly1305::new_from_slice(&bytes)
                .map_err(|_| bad("the key is not 32 bytes"))?;
            keys.push((kid.to_string(), cipher));
        }
        if keys.is_empty() {
            return Err(err(format!("{} holds no key", path.display())));
        }
        Ok(Keyring(keys))
    }

    fn primary(&self) -> &(String, XChaCha20Poly1305) {
        &self.0[0]
    }

    fn get(&self, kid: &str) -> Option<&XChaCha20Poly1305> {
        self.0.iter().find(|(k, _)| k == kid).map(|(_, c)| c)
    }
}

fn new_key_line() -> Result<String, StoreError> {
    let mut key = [0u8; 32];
    getrandom::fill(&mut key).map_err(err)?;
    let mut id = [0u8; 6];
    getrandom::fill(&mut id).map_err(err)?;
    let kid: String = id.iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!("{kid} {}\n", STANDARD.encode(key)))
}

fn aad(plugin: &str, name: &str) -> Vec<u8> {
    format!("tessera-secret\0{plugin}\0{name}").into_bytes()
}

fn seal(
    ring: &Keyring,
    plugin: &str,
    name: &str,
    value: &str,
) -> Result<(String, Vec<u8>, Vec<u8>), StoreError> {
    let (kid, cipher) = ring.primary();
    let mut nonce = [0u8; 24];
    getrandom::fill(&mut nonce).map_err(err)?;
    let aad = aad(plugin, name);
    let sealed = cipher
        .encrypt(
            &XNonce::from(nonce),
            Payload {
                msg: value.as_bytes(),
                aad: &aad,
            },
        )
        .map_err(|_| err("sealing failed"))?;
    Ok((kid.clone(), nonce.to_vec(), sealed))
}

fn open_value(
    ring: &Keyring,
    plugin: &str,
    name: &str,
    kid: &str,
    nonce: &[u8],
    sealed: &[u8],
) -> Result<Option<String>, StoreError> {
    let Some(cipher) = ring.get(kid) else {
        return Ok(None);
    };
    let nonce: [u8; 24] = nonce
        .try_into()
        .map_err(|_| err(format!("secret {name} of plugin {plugin}: bad nonce")))?;
    let aad = aad(plugin, name);
    let plain = cipher
        .decrypt(
            &XNonce::from(nonce),
            Payload {
                msg: sealed,
                aad: &aad,
            },
        )
        .map_err(|_| {
            err(format!(
                "secret {name} of plugin {plugin} does not open with key {kid} (the key file was replaced, or the row was altered)"
            ))
        })?;
    String::from_utf8(plain)
        .map(Some)
        .map_err(|_| err(format!("secret {name} of plugin {plugin} is not UTF-8")))
}

/// A stored row: plugin, name, key id, nonce, sealed value.
type SealedRow = (String, String, String, Vec<u8>, Vec<u8>);

/// Secrets in `tessera.db`, sealed with the data dir's secrets key.
pub struct SqliteSecrets {
    conn: Mutex<Connection>,
    key_file: PathBuf,
}

impl SqliteSecrets {
    /// Opens the table in `db` (created on first use) and the keyring in `data_dir` (created,
    /// mode 0600, on first use).
    pub fn open(db: &Path, data_dir: &Path) -> Result<SqliteSecrets, String> {
        let mut conn = Connection::open(db).map_err(|e| format!("{}: {e}", db.display()))?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(|e| e.to_string())?;
        conn.execute_batch("PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;")
            .map_err(|e| e.to_string())?;
        crate::store::sqlite::migrate(&mut conn, "secrets_schema_migrations", MIGRATIONS)?;
        let key_file = data_dir.join(SECRETS_KEY_FILE);
        if !key_file.exists() {
            let line = new_key_line().map_err(|e| e.to_string())?;
            match crate::auth::write_private(&key_file, line.as_bytes()) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(format!("{}: {e}", key_file.display())),
            }
        }
        let s = SqliteSecrets {
            conn: Mutex::new(conn),
            key_file,
        };
        s.keyring().map_err(|e| e.to_string())?;
        Ok(s)
    }

    fn keyring(&self) -> Result<Keyring, StoreError> {
        let text = std::fs::read_to_string(&self.key_file)
            .map_err(|e| err(format!("{}: {e}", self.key_file.display())))?;
        Keyring::parse(&text, &self.key_file)
    }
}

impl SecretStore for SqliteSecrets {
    fn get(&self, owner: &Owner, name: &str) -> Result<Option<String>, StoreError> {
        // A rotation may seal the row under a key this read's keyring does not hold yet: read
        // both again, once.
        for _ in 0..2 {
            let row: Option<(String, Vec<u8>, Vec<u8>)> = lock(&self.conn)
                .query_row(
                    "SELECT kid, nonce, sealed FROM plugin_secrets WHERE plugin = ?1 AND name = ?2",
                    params![owner.plugin, name],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional()
                .map_err(err)?;
            let Some((kid, nonce, sealed)) = row else {
                return Ok(None);
            };
            let ring = self.keyring()?;
            if let Some(v) = open_value(&ring, &owner.plugin, name, &kid, &nonce, &sealed)? {
                return Ok(Some(v));
            }
        }
        Err(err(format!(
            "secret {name} of plugin {} is sealed with a key {} does not hold",
            owner.plugin,
            self.key_file.display()
        )))
    }

    fn put(&self, owner: &Owner, name: &str, value: &str) -> Result<bool, StoreError> {
        let now = tessera_sdk::time::now_rfc3339();
        let mut conn = lock(&self.conn);
        // The write lock first, then the key: a rotation (which holds the same lock while it
        // changes keys) never sees a value sealed under a key it is about to drop.
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(err)?;
        let ring = self.keyring()?;
        let (kid, nonce, sealed) = seal(&ring, &owner.plugin, name, value)?;
        let existed: bool = tx
            .query_row(
                "SELECT 1 FROM plugin_secrets WHERE plugin = ?1 AND name = ?2",
                params![owner.plugin, name],
                |_| Ok(()),
            )
            .optional()
            .map_err(err)?
            .is_some();
        tx.execute(
            "INSERT INTO plugin_secrets (plugin, name, kid, nonce, sealed, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (plugin, name) DO UPDATE SET kid = ?3, nonce = ?4, sealed = ?5, updated_at = ?6",
            params![owner.plugin, name, kid, nonce, sealed, now],
        )
        .map_err(err)?;
        tx.commit().map_err(err)?;
        Ok(!existed)
    }

    fn delete(&self, owner: &Owner, name: &str) -> Result<bool, StoreError> {
        let n = lock(&self.conn)
            .execute(
                "DELETE FROM plugin_secrets WHERE plugin = ?1 AND name = ?2",
                params![owner.plugin, name],
            )
            .map_err(err)?;
        Ok(n > 0)
    }

    fn list(&self, owner: &Owner) -> Result<Vec<SecretInfo>, StoreError> {
        let conn = lock(&self.conn);
        let mut q = conn
            .prepare("SELECT name, updated_at FROM plugin_secrets WHERE plugin = ?1 ORDER BY name")
            .map_err(err)?;
        let rows = q
            .query_map(params![owner.plugin], |r| {
                Ok(SecretInfo {
                    name: r.get(0)?,
                    updated_at: Some(r.get(1)?),
                })
            })
            .map_err(err)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(err)
    }

    fn managed_elsewhere(&self, _: &Owner) -> Option<String> {
        None
    }
}

/// Seals every value in `db` again under a new key, then drops the old keys from the keyring
/// in `data_dir`; answers the new key id and how many values were sealed again. A core running
/// on the same files keeps answering throughout (it reads the keyring on each call).
pub fn rotate_key(db: &Path, data_dir: &Path) -> Result<(String, usize), String> {
    let store = SqliteSecrets::open(db, data_dir)?;
    let fresh = new_key_line().map_err(|e| e.to_string())?;
    let kid = fresh.split(' ').next().unwrap_or_default().to_string();
    let count = {
        // Every write waits while the keys change (see `put`).
        let mut conn = lock(&store.conn);
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(|e| e.to_string())?;
        let old = std::fs::read_to_string(&store.key_file)
            .map_err(|e| format!("{}: {e}", store.key_file.display()))?;
        // 1. The new key first, the old ones kept: reads of rows not yet sealed again open.
        replace_file(&store.key_file, &format!("{fresh}{old}"))?;
        let ring = store.keyring().map_err(|e| e.to_string())?;
        // 2. Every value sealed again, in this transaction.
        let rows: Vec<SealedRow> = {
            let mut q = tx
                .prepare("SELECT plugin, name, kid, nonce, sealed FROM plugin_secrets")
                .map_err(|e| e.to_string())?;
            let it = q
                .query_map([], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
                })
                .map_err(|e| e.to_string())?;
            it.collect::<Result<_, _>>().map_err(|e| e.to_string())?
        };
        for (plugin, name, k, nonce, sealed) in &rows {
            let value = open_value(&ring, plugin, name, k, nonce, sealed)
                .map_err(|e| e.to_string())?
                .ok_or_else(|| {
                    format!("secret {name} of plugin {plugin}: key {k} is not in the keyring")
                })?;
            let (kid, nonce, sealed) =
                seal(&ring, plugin, name, &value).map_err(|e| e.to_string())?;
            tx.execute(
                "UPDATE plugin_secrets SET kid = ?3, nonce = ?4, sealed = ?5 WHERE plugin = ?1 AND name = ?2",
                params![plugin, name, kid, nonce, sealed],
            )
            .map_err(|e| e.to_string())?;
        }
        tx.commit().map_err(|e| e.to_string())?;
        rows.len()
    };
    // 3. Only the new key left.
    replace_file(&store.key_file, &fresh)?;
    Ok((kid, count))
}

/// Writes `text` to `path` atomically (a 0600 temporary file renamed over it).
fn replace_file(path: &Path, text: &str) -> Result<(), String> {
    let tmp = path.with_extension(format!("tmp-{}", crate::auth::new_jti()));
    crate::auth::write_private(&tmp, text.as_bytes())
        .map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn owner(p: &str) -> Owner {
        Owner {
            plugin: p.into(),
            namespace: None,
        }
    }

    fn fresh() -> (PathBuf, SqliteSecrets) {
        let dir = std::env::temp_dir().join(format!("tessera-secrets-{}", crate::auth::new_jti()));
        std::fs::create_dir_all(&dir).unwrap();
        let s = SqliteSecrets::open(&dir.join("tessera.db"), &dir).unwrap();
        (dir, s)
    }

    #[test]
    fn a_value_is_sealed_on_disk_and_opens_after_reopening() {
        let (dir, s) = fresh();
        let value = "sk_live_51HqT0pSecretValueNeverOnDisk";
        assert!(s.put(&owner("billing"), "STRIPE_KEY", value).unwrap());
        assert!(!s.put(&owner("billing"), "STRIPE_KEY", value).unwrap());
        drop(s);
        for f in ["tessera.db", "tessera.db-wal"] {
            if let Ok(bytes) = std::fs::read(dir.join(f)) {
                assert!(
                    !bytes.windows(value.len()).any(|w| w == value.as_bytes()),
                    "{f} holds the value in clear"
                );
            }
        }
        let s = SqliteSecrets::open(&dir.join("tessera.db"), &dir).unwrap();
        assert_eq!(
            s.get(&owner("billing"), "STRIPE_KEY").unwrap().as_deref(),
            Some(value)
        );
        assert_eq!(s.get(&owner("other"), "STRIPE_KEY").unwrap(), None);
        let names: Vec<String> = s
            .list(&owner("billing"))
            .unwrap()
            .into_iter()
            .map(|i| i.name)
            .collect();
        assert_eq!(names, ["STRIPE_KEY"]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.join(SECRETS_KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn a_row_moved_to_another_name_does_not_open() {
        let (_dir, s) = fresh();
        s.put(&owner("a"), "ONE", "first").unwrap();
        lock(&s.conn)
            .execute(
                "UPDATE plugin_secrets SET name = 'TWO' WHERE name = 'ONE'",
                [],
            )
            .unwrap();
        assert!(s.get(&owner("a"), "TWO").is_err());
    }

    #[test]
    fn rotation_seals_every_value_under_one_new_key() {
        let (dir, s) = fresh();
        s.put(&owner("a"), "ONE", "first").unwrap();
        s.put(&owner("b"), "TWO", "second").unwrap();
        let before = std::fs::read_to_string(dir.join(SECRETS_KEY_FILE)).unwrap();
        let (kid, n) = rotate_key(&dir.join("tessera.db"), &dir).unwrap();
        assert_eq!(n, 2);
        let after = std::fs::read_to_string(dir.join(SECRETS_KEY_FILE)).unwrap();
        assert_ne!(before, after);
        assert_eq!(after.lines().count(), 1);
        assert!(after.starts_with(&kid));
        // The store opened before the rotation still reads both (it reads the keyring anew).
        assert_eq!(s.get(&owner("a"), "ONE").unwrap().as_deref(), Some("first"));
        assert_eq!(
            s.get(&owner("b"), "TWO").unwrap().as_deref(),
            Some("second")
        );
        assert!(s.delete(&owner("a"), "ONE").unwrap());
        assert!(!s.delete(&owner("a"), "ONE").unwrap());
    }
}
