//! Tokens: the core's Ed25519 signing key, minting registration, admin and plugin tokens (EdDSA
//! JWTs with a `kid`), the JWKS, and validation that pins the algorithm. `call` mints the call
//! tokens the core presents to plugins; `grant` checks what a token request may ask for.
//!
//! | token | `aud` | who holds it | lifetime |
//! |---|---|---|---|
//! | registration | `tessera-register` | a plugin service (Secret, `REG_TOKEN`) | as minted |
//! | ServiceAccount | `tessera` (minted by Kubernetes) | a plugin pod (projected volume) | kubelet's |
//! | admin | `tessera-admin` | automation | <= 100 y, default 12 h |
//! | plugin | `tessera-plugin` | a registered plugin (from its registration answer) | <= 1 h |
//! | call | `plugin:<name>` | the core, calling into a plugin | <= 2 min |
//!
//! The key lives in the data dir as `signing-key.pem` (PKCS#8, mode 0600), created on first
//! start. Validation order: header (algorithm EdDSA only, our `kid`) -> signature -> `iss`,
//! `aud`, `exp`, `nbf` (leeway 60 s) -> revoked `jti`. Each failure has its own error code.

use std::io::Write;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, Header, Validation};
use serde::{Deserialize, Serialize};
use tessera_sdk::Capability;

use crate::error::{ApiError, Code};

pub mod call;
mod grant;
pub mod keyring;
pub mod service_account;

use keyring::{DirKeys, Key, KeySet};
pub use keyring::{KeyInfo, KeyLoader};

pub use grant::{ADMIN_TOKEN_TTL_SECS, Grant, InvalidRequest, parse_ttl};

/// Audience of registration tokens.
pub const AUD_REGISTER: &str = "tessera-register";
/// Audience of admin tokens.
pub const AUD_ADMIN: &str = "tessera-admin";
/// Audience of plugin tokens (plugin -> core, the plugin-facing API).
pub const AUD_PLUGIN: &str = "tessera-plugin";
/// Longest life of a plugin token; the SDK renews it by re-registering well before.
pub const PLUGIN_TOKEN_TTL_SECS: u64 = 3600;
/// Issuer of every token this core mints.
pub const ISSUER: &str = "tessera";
/// Clock leeway for `exp` and `nbf`, in seconds.
pub const LEEWAY_SECS: u64 = 60;
/// File name of the signing key in the data dir.
pub const KEY_FILE: &str = "signing-key.pem";

/// PKCS#8 v1 prefix of an Ed25519 private key; the 32-byte seed follows.
const ED25519_PKCS8_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// Claims of a token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Issuer (`tessera`).
    pub iss: String,
    /// `tessera-register` or `tessera-admin`.
    pub aud: String,
    /// Plugin name (registration) or `admin`.
    pub sub: String,
    /// Granted capabilities (registration tokens).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub caps: Vec<String>,
    /// Namespace the plugin's URLs must live in (cluster mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ns: Option<String>,
    /// Issued at (seconds since the epoch).
    pub iat: u64,
    /// Not before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Expiry; registration tokens may have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp: Option<u64>,
    /// Token id, for revocation.
    pub jti: String,
    /// Plugin tokens: the `jti` of the registration token they were issued for, so revoking
    /// it ends them at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reg: Option<String>,
}

impl Claims {
    /// The token list's entry for a token with these claims, minted by `by`.
    pub fn issued(&self, by: &str, kid: Option<String>) -> crate::model::IssuedToken {
        let at = |secs: u64| tessera_sdk::time::rfc3339(i64::try_from(secs).unwrap_or(i64::MAX), 0);
        crate::model::IssuedToken {
            jti: self.jti.clone(),
            kind: if self.aud == AUD_ADMIN {
                "admin".to_string()
            } else {
                "registration".to_string()
            },
            subject: self.sub.clone(),
            capabilities: self.caps.clone(),
            namespace: self.ns.clone(),
            issued: at(self.iat),
            expires: self.exp.map(at),
            issued_by: by.to_string(),
            kid,
        }
    }

    /// Granted capabilities that are in the catalogue (unknown names grant nothing).
    pub fn capabilities(&self) -> Vec<Capability> {
        self.caps
            .iter()
            .filter_map(|c| Capability::parse(c).ok())
            .collect()
    }
}

/// The signing keys (see [`keyring`]): one signs, every one verifies; read again from where
/// they live when rotated.
pub struct Keys {
    set: std::sync::RwLock<std::sync::Arc<KeySet>>,
    loader: Option<std::sync::Arc<dyn KeyLoader>>,
    /// When the keys were last read again because a token named a key id not held.
    last_reload: std::sync::Mutex<Option<std::time::Instant>>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys")
            .field("kids", &self.set().kids())
            .finish_non_exhaustive()
    }
}

/// Least time between two reads of the keys caused by unknown key ids.
const RELOAD_ON_UNKNOWN_KID: std::time::Duration = std::time::Duration::from_secs(1);

// === impl Keys ===

impl Keys {
    /// The data dir's keys (`signing-key.pem` created, mode 0600, on first start; earlier keys
    /// from `signing-keys/`), read again from there after a rotation.
    pub fn load_or_create(dir: &Path) -> std::io::Result<Keys> {
        let loader = DirKeys::new(dir);
        let pems = loader.read()?;
        Keys::from_pems(&pems, Some(std::sync::Arc::new(loader)))
            .map_err(|e| std::io::Error::other(format!("{}: {e}", dir.join(KEY_FILE).display())))
    }

    /// A new Ed25519 private key, PKCS#8 PEM.
    pub fn generate_pem() -> std::io::Result<String> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| std::io::Error::other(e.to_string()))?;
        let mut der = ED25519_PKCS8_PREFIX.to_vec();
        der.extend_from_slice(&seed);
        Ok(format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
            STANDARD.encode(&der)
        ))
    }

    /// One key from an Ed25519 private key in PKCS#8 PEM (nothing to read again).
    pub fn from_pem(pem: &str) -> Result<Keys, jsonwebtoken::errors::Error> {
        let key = Key::from_pem(pem)?;
        Ok(Keys::with(KeySet { keys: vec![key] }, None))
    }

    /// Keys from PEMs, the signing key first, read again from `loader` after a rotation.
    pub fn from_pems(
        pems: &[String],
        loader: Option<std::sync::Arc<dyn KeyLoader>>,
    ) -> Result<Keys, String> {
        Ok(Keys::with(KeySet::from_pems(pems)?, loader))
    }

    fn with(set: KeySet, loader: Option<std::sync::Arc<dyn KeyLoader>>) -> Keys {
        Keys {
            set: std::sync::RwLock::new(std::sync::Arc::new(set)),
            loader,
            last_reload: std::sync::Mutex::new(None),
        }
    }

    fn set(&self) -> std::sync::Arc<KeySet> {
        crate::sync::read(&self.set).clone()
    }

    /// The key id new tokens are signed with.
    pub fn kid(&self) -> String {
        self.set().signer().kid.clone()
    }

    /// Every key id in force, the signing one first.
    pub fn kids(&self) -> Vec<String> {
        self.set().kids()
    }

    /// The keys in force as `tessera keys list` shows them.
    pub fn infos(&self) -> Vec<KeyInfo> {
        self.kids()
            .into_iter()
            .enumerate()
            .map(|(i, kid)| KeyInfo {
                kid,
                signing: i == 0,
            })
            .collect()
    }

    /// Reads the keys again from where they live; true when they changed.
    pub async fn reload(&self) -> Result<bool, String> {
        let Some(loader) = &self.loader else {
            return Ok(false);
        };
        let pems = loader.load().await?;
        let fresh = KeySet::from_pems(&pems)?;
        if fresh.kids() == self.set().kids() {
            return Ok(false);
        }
        tracing::info!(signing = %fresh.signer().kid, keys = ?fresh.kids(), "signing keys changed");
        *crate::sync::write(&self.set) = std::sync::Arc::new(fresh);
        Ok(true)
    }

    /// Reads the keys again every `period` (a rotation by `tessera keys rotate` reaches this
    /// replica within it).
    pub fn spawn_reloader(
        self: &std::sync::Arc<Self>,
        period: std::time::Duration,
    ) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(period).await;
                if let Err(e) = me.reload().await {
                    tracing::warn!(error = %e, "signing keys not read again");
                }
            }
        })
    }

    /// [`Keys::validate`], reading the keys again first (at most once a second) when the token
    /// names a key id not held: a token another replica signed right after a rotation is not
    /// refused.
    pub async fn check(
        &self,
        token: &str,
        audience: &str,
        revoked: impl Fn(&str) -> bool,
    ) -> Result<Claims, ApiError> {
        self.reloading(|| self.validate(token, audience, &revoked))
            .await
    }

    /// [`Keys::validate_plugin`], with the same reading again as [`Keys::check`].
    pub async fn check_plugin(
        &self,
        token: &str,
        revoked: impl Fn(&str) -> bool,
    ) -> Result<Claims, ApiError> {
        self.reloading(|| self.validate_plugin(token, &revoked))
            .await
    }

    /// Runs `validate`; when it names a key id not held, reads the keys again (at most once a
    /// second) and runs it once more.
    async fn reloading(
        &self,
        validate: impl Fn() -> Result<Claims, ApiError>,
    ) -> Result<Claims, ApiError> {
        match validate() {
            Err(e) if e.code == Code::TokenUnknownKey && self.may_reload() => {
                let _ = self.reload().await;
                validate()
            }
            other => other,
        }
    }

    fn may_reload(&self) -> bool {
        if self.loader.is_none() {
            return false;
        }
        let mut last = crate::sync::lock(&self.last_reload);
        if last.is_some_and(|t| t.elapsed() < RELOAD_ON_UNKNOWN_KID) {
            return false;
        }
        *last = Some(std::time::Instant::now());
        true
    }

    /// The public keys, as served at `/.well-known/jwks.json`: every key a live token may be
    /// signed with.
    pub fn jwks(&self) -> JwkSet {
        JwkSet {
            keys: self.set().keys.iter().map(|k| k.jwk.clone()).collect(),
        }
    }

    /// Signs claims.
    pub fn sign<C: Serialize>(&self, claims: &C) -> Result<String, jsonwebtoken::errors::Error> {
        let set = self.set();
        let signer = set.signer();
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(signer.kid.clone());
        jsonwebtoken::encode(&header, claims, &signer.encoding)
    }

    /// Mints a registration token for plugin `name`.
    pub fn issue_registration(
        &self,
        name: &str,
        caps: &[Capability],
        ns: Option<String>,
        ttl_secs: Option<u64>,
    ) -> Result<(String, Claims), jsonwebtoken::errors::Error> {
        let now = now();
        let mut caps: Vec<String> = caps.iter().map(|c| c.name().to_string()).collect();
        caps.sort();
        caps.dedup();
        let claims = Claims {
            iss: ISSUER.to_string(),
            aud: AUD_REGISTER.to_string(),
            sub: name.to_string(),
            caps,
            ns,
            iat: now,
            nbf: None,
            exp: ttl_secs.map(|t| now.saturating_add(t)),
            jti: new_jti(),
            reg: None,
        };
        Ok((self.sign(&claims)?, claims))
    }

    /// Mints an admin token.
    pub fn issue_admin(
        &self,
        ttl_secs: u64,
    ) -> Result<(String, Claims), jsonwebtoken::errors::Error> {
        let now = now();
        let claims = Claims {
            iss: ISSUER.to_string(),
            aud: AUD_ADMIN.to_string(),
            sub: "admin".to_string(),
            caps: Vec::new(),
            ns: None,
            iat: now,
            nbf: None,
            exp: Some(now.saturating_add(ttl_secs)),
            jti: new_jti(),
            reg: None,
        };
        Ok((self.sign(&claims)?, claims))
    }

    /// Mints the plugin token a registration answers with: the registration token's plugin
    /// and capabilities, for at most an hour and never past the registration token's expiry.
    pub fn issue_plugin(
        &self,
        registration: &Claims,
    ) -> Result<(String, Claims), jsonwebtoken::errors::Error> {
        let now = now();
        let mut exp = now.saturating_add(PLUGIN_TOKEN_TTL_SECS);
        if let Some(limit) = registration.exp {
            exp = exp.min(limit);
        }
        let claims = Claims {
            iss: ISSUER.to_string(),
            aud: AUD_PLUGIN.to_string(),
            sub: registration.sub.clone(),
            caps: registration.caps.clone(),
            ns: registration.ns.clone(),
            iat: now,
            nbf: None,
            exp: Some(exp),
            jti: new_jti(),
            reg: Some(registration.jti.clone()),
        };
        Ok((self.sign(&claims)?, claims))
    }

    /// Validates a plugin token: as any token for `tessera-plugin`, and refused once the
    /// registration token it was issued for is revoked.
    pub fn validate_plugin(
        &self,
        token: &str,
        revoked: impl Fn(&str) -> bool,
    ) -> Result<Claims, ApiError> {
        let claims = self.validate(token, AUD_PLUGIN, &revoked)?;
        match (&claims.exp, &claims.reg) {
            (None, _) | (_, None) => Err(ApiError::new(
                Code::TokenMalformed,
                "a plugin token must expire and name its registration token",
            )),
            (Some(_), Some(reg)) if revoked(reg) => Err(ApiError::new(
                Code::TokenRevoked,
                format!(
                    "the registration token {reg} this plugin token was issued for has been revoked"
                ),
            )),
            _ => Ok(claims),
        }
    }

    /// Validates a bearer token for `audience`; `revoked` tells whether a token id is revoked.
    pub fn validate(
        &self,
        token: &str,
        audience: &str,
        revoked: impl Fn(&str) -> bool,
    ) -> Result<Claims, ApiError> {
        let header = token.split('.').next().unwrap_or_default();
        let header: serde_json::Value = URL_SAFE_NO_PAD
            .decode(header.trim_end_matches('='))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or_else(|| ApiError::new(Code::TokenMalformed, "the bearer token is not a JWT"))?;
        let alg = header.get("alg").and_then(|a| a.as_str()).unwrap_or("");
        if alg != "EdDSA" {
            return Err(ApiError::new(
                Code::TokenAlgorithmNotAllowed,
                format!("token algorithm \"{alg}\" is not allowed; tokens are EdDSA"),
            ));
        }
        // RFC 7515 4.1.11: a recipient must refuse a token whose `crit` names extensions it
        // does not understand; this core understands none.
        if header.get("crit").is_some() {
            return Err(ApiError::new(
                Code::TokenMalformed,
                "the token's header has \"crit\" parameters this core does not understand",
            ));
        }
        let set = self.set();
        let kid = header.get("kid").and_then(|k| k.as_str());
        let Some(key) = kid.and_then(|kid| set.find(kid)) else {
            return Err(ApiError::new(
                Code::TokenUnknownKey,
                format!(
                    "token key id {:?} is not one of this core's signing keys (see /.well-known/jwks.json)",
                    kid.unwrap_or("<none>")
                ),
            ));
        };
        let mut v = Validation::new(Algorithm::EdDSA);
        v.leeway = LEEWAY_SECS;
        v.validate_nbf = true;
        v.validate_exp = true;
        v.set_required_spec_claims(&["iss", "aud", "sub"]);
        v.set_issuer(&[ISSUER]);
        v.set_audience(&[audience]);
        let data = jsonwebtoken::decode::<Claims>(token, &key.decoding, &v).map_err(|e| {
            let (code, msg) = match e.kind() {
                ErrorKind::InvalidSignature => (
                    Code::TokenSignatureInvalid,
                    "the token's signature does not verify".to_string(),
                ),
                ErrorKind::ExpiredSignature => {
                    (Code::TokenExpired, "the token has expired".to_string())
                }
                ErrorKind::ImmatureSignature => (
                    Code::TokenNotYetValid,
                    "the token is not valid yet (nbf)".to_string(),
                ),
                ErrorKind::InvalidAudience => (
                    Code::TokenWrongAudience,
                    format!("the token is not for this endpoint: audience must be \"{audience}\""),
                ),
                ErrorKind::InvalidIssuer => (
                    Code::TokenWrongIssuer,
                    format!("the token was not issued by \"{ISSUER}\""),
                ),
                ErrorKind::InvalidAlgorithm => (
                    Code::TokenAlgorithmNotAllowed,
                    "token algorithm is not allowed".to_string(),
                ),
                other => (
                    Code::TokenMalformed,
                    format!("the token cannot be read: {other:?}"),
                ),
            };
            ApiError::new(code, msg)
        })?;
        if audience == AUD_ADMIN && data.claims.exp.is_none() {
            return Err(ApiError::new(
                Code::TokenMalformed,
                "an admin token must expire (exp); mint one with tessera token issue --admin",
            ));
        }
        if revoked(&data.claims.jti) {
            return Err(ApiError::new(
                Code::TokenRevoked,
                format!("token {} has been revoked", data.claims.jti),
            ));
        }
        Ok(data.claims)
    }
}

pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// The key id in a token's header, unverified.
pub fn kid_of(token: &str) -> Option<String> {
    let header = token.split('.').next()?;
    let bytes = URL_SAFE_NO_PAD.decode(header.trim_end_matches('=')).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    v.get("kid")?.as_str().map(String::from)
}

/// Seconds since the epoch.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// A fresh random token id.
/// The claims of a token, read without checking its signature (for tools that re-mint a token
/// they hold; never for authentication).
pub fn peek_claims(token: &str) -> Option<Claims> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

pub fn new_jti() -> String {
    let mut b = [0u8; 16];
    // getrandom only fails when the OS has no entropy source at all.
    let _ = getrandom::fill(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Longest token lifetime: 100 years (expiry dates stay four-digit years).
pub const MAX_TTL_SECS: u64 = 100 * 365 * 86_400;

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn keys() -> (tempdir::Dir, Keys) {
        let dir = tempdir::Dir::new();
        let keys = Keys::load_or_create(dir.path()).unwrap();
        (dir, keys)
    }

    mod tempdir {
        pub struct Dir(std::path::PathBuf);
        impl Dir {
            pub fn new() -> Dir {
                let p = std::env::temp_dir().join(format!("tessera-auth-{}", super::new_jti()));
                std::fs::create_dir_all(&p).unwrap();
                Dir(p)
            }
            pub fn path(&self) -> &std::path::Path {
                &self.0
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    #[test]
    fn key_is_created_once_with_mode_0600_and_reloaded() {
        let (dir, k1) = keys();
        let k2 = Keys::load_or_create(dir.path()).unwrap();
        assert_eq!(k1.kid(), k2.kid());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn issued_tokens_validate_for_their_audience_only() {
        let (_d, k) = keys();
        let (t, c) = k
            .issue_registration("hello", &[Capability::UiPanel], None, None)
            .unwrap();
        let got = k.validate(&t, AUD_REGISTER, |_: &str| false).unwrap();
        assert_eq!(got, c);
        assert_eq!(
            k.validate(&t, AUD_ADMIN, |_: &str| false).unwrap_err().code,
            Code::TokenWrongAudience
        );
        let revoked: HashSet<String> = [c.jti.clone()].into();
        assert_eq!(
            k.validate(&t, AUD_REGISTER, |j: &str| revoked.contains(j))
                .unwrap_err()
                .code,
            Code::TokenRevoked
        );
    }

    #[test]
    fn attacks_get_their_own_codes() {
        let (_d, k) = keys();
        let (t, mut c) = k.issue_registration("hello", &[], None, None).unwrap();
        let parts: Vec<&str> = t.split('.').collect();
        // alg none
        let h = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#);
        let forged = format!("{h}.{}.", parts[1]);
        assert_eq!(
            k.validate(&forged, AUD_REGISTER, |_: &str| false)
                .unwrap_err()
                .code,
            Code::TokenAlgorithmNotAllowed
        );
        // HS256 signed with the public key
        let hs = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &c,
            &jsonwebtoken::EncodingKey::from_secret(k.kid().as_bytes()),
        )
        .unwrap();
        assert_eq!(
            k.validate(&hs, AUD_REGISTER, |_: &str| false)
                .unwrap_err()
                .code,
            Code::TokenAlgorithmNotAllowed
        );
        // tampered payload
        c.sub = "other".into();
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&c).unwrap());
        let tampered = format!("{}.{payload}.{}", parts[0], parts[2]);
        assert_eq!(
            k.validate(&tampered, AUD_REGISTER, |_: &str| false)
                .unwrap_err()
                .code,
            Code::TokenSignatureInvalid
        );
        // expired / not yet valid / wrong issuer
        let mut e = c.clone();
        e.exp = Some(now() - 3600);
        assert_eq!(
            k.validate(&k.sign(&e).unwrap(), AUD_REGISTER, |_: &str| false)
                .unwrap_err()
                .code,
            Code::TokenExpired
        );
        let mut f = c.clone();
        f.nbf = Some(now() + 3600);
        assert_eq!(
            k.validate(&k.sign(&f).unwrap(), AUD_REGISTER, |_: &str| false)
                .unwrap_err()
                .code,
            Code::TokenNotYetValid
        );
        let mut i = c.clone();
        i.iss = "someone-else".into();
        assert_eq!(
            k.validate(&k.sign(&i).unwrap(), AUD_REGISTER, |_: &str| false)
                .unwrap_err()
                .code,
            Code::TokenWrongIssuer
        );
        // another core's key
        let (_d2, other) = keys();
        let (t2, _) = other.issue_registration("hello", &[], None, None).unwrap();
        assert_eq!(
            k.validate(&t2, AUD_REGISTER, |_: &str| false)
                .unwrap_err()
                .code,
            Code::TokenUnknownKey
        );
        // garbage
        assert_eq!(
            k.validate("garbage", AUD_REGISTER, |_: &str| false)
                .unwrap_err()
                .code,
            Code::TokenMalformed
        );
        // leeway: expired 30 s ago still passes
        let mut l = c.clone();
        l.sub = "hello".into();
        l.exp = Some(now() - 30);
        assert!(
            k.validate(&k.sign(&l).unwrap(), AUD_REGISTER, |_: &str| false)
                .is_ok()
        );
    }

    #[test]
    fn ttl_parsing() {
        assert_eq!(parse_ttl("90d").ok(), Some(90 * 86_400));
        assert_eq!(parse_ttl("12h").ok(), Some(43_200));
        assert_eq!(parse_ttl("45").ok(), Some(45));
        assert!(parse_ttl("0s").is_err());
        assert!(parse_ttl("3w").is_err());
        assert!(parse_ttl("d").is_err());
        assert!(parse_ttl("99999999999999999999d").is_err());
    }
}
