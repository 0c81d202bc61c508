//! Stateless encrypted cookies: XChaCha20-Poly1305 with a key every replica shares (the data
//! dir's `session-key`, or Secret `tessera-session-key` in a cluster). A cookie is
//! `base64url(nonce || ciphertext)`; the purpose (`session`, `login`) is authenticated data, so a
//! login cookie can never be replayed as a session.

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// File name of the session key in the data dir.
pub const SESSION_KEY_FILE: &str = "session-key";

/// The key cookies are sealed with.
#[derive(Clone)]
pub struct SessionKey(XChaCha20Poly1305);

impl std::fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionKey(..)")
    }
}

impl SessionKey {
    /// 32 random bytes, base64.
    pub fn generate_base64() -> std::io::Result<String> {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok(STANDARD.encode(key))
    }

    /// The key from its base64 text.
    pub fn from_base64(text: &str) -> Result<SessionKey, String> {
        let bytes = STANDARD
            .decode(text.trim())
            .map_err(|e| format!("the session key is not base64: {e}"))?;
        let cipher = XChaCha20Poly1305::new_from_slice(&bytes)
            .map_err(|_| format!("the session key has {} bytes, not 32", bytes.len()))?;
        Ok(SessionKey(cipher))
    }

    /// The data dir's key, created (mode 0600) on first use; replicas racing to create it end
    /// up with one.
    pub fn load_or_create(dir: &Path) -> std::io::Result<SessionKey> {
        let path = dir.join(SESSION_KEY_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir_all(dir)?;
                let key = SessionKey::generate_base64()?;
                match crate::auth::write_private(&path, key.as_bytes()) {
                    Ok(()) => key,
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                        std::fs::read_to_string(&path)?
                    }
                    Err(e) => return Err(e),
                }
            }
            Err(e) => return Err(e),
        };
        SessionKey::from_base64(&text)
            .map_err(|e| std::io::Error::other(format!("{}: {e}", path.display())))
    }

    /// Seals `value` for `purpose`.
    pub fn seal<T: Serialize>(&self, purpose: &str, value: &T) -> Result<String, String> {
        let msg = serde_json::to_vec(value).map_err(|e| e.to_string())?;
        let mut nonce = [0u8; 24];
        getrandom::fill(&mut nonce).map_err(|e| e.to_string())?;
        let sealed = self
            .0
            .encrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: &msg,
                    aad: purpose.as_bytes(),
                },
            )
            .map_err(|_| "sealing failed".to_string())?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        Ok(URL_SAFE_NO_PAD.encode(out))
    }

    /// Opens a cookie sealed for `purpose`; `None` when it was not sealed with this key for
    /// this purpose, or was changed.
    pub fn open<T: DeserializeOwned>(&self, purpose: &str, text: &str) -> Option<T> {
        let bytes = URL_SAFE_NO_PAD.decode(text.trim()).ok()?;
        if bytes.len() < 24 + 16 {
            return None;
        }
        let (nonce, sealed) = bytes.split_at(24);
        let nonce: [u8; 24] = nonce.try_into().ok()?;
        let msg = self
            .0
            .decrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: sealed,
                    aad: purpose.as_bytes(),
                },
            )
            .ok()?;
        serde_json::from_slice(&msg).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SessionKey {
        SessionKey::from_base64(&SessionKey::generate_base64().unwrap_or_default())
            .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn sealed_cookies_open_only_with_their_key_and_purpose_and_unchanged() {
        let k = key();
        let sealed = k.seal("session", &("alice", 7)).unwrap_or_default();
        assert_eq!(
            k.open::<(String, u32)>("session", &sealed),
            Some(("alice".into(), 7))
        );
        assert_eq!(k.open::<(String, u32)>("login", &sealed), None);
        assert_eq!(key().open::<(String, u32)>("session", &sealed), None);
        let mut tampered = sealed.into_bytes();
        let last = tampered.len() - 2;
        tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(tampered).unwrap_or_default();
        assert_eq!(k.open::<(String, u32)>("session", &tampered), None);
        assert!(SessionKey::from_base64("c2hvcnQ=").is_err());
    }
}
