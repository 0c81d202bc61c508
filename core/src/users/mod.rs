//! Users: who is at the shell and, for admins, at the admin API. With `auth.oidc` a user signs
//! in with OpenID Connect (authorization code + PKCE) and holds a stateless encrypted session
//! cookie; without it the shell is anonymous (user `anonymous`, tenant `default`).
//!
//! ```text
//!  GET /auth/login ──▶ provider (PKCE S256, state, nonce; kept in a sealed login cookie)
//!  GET /auth/callback ◀── code ──▶ token endpoint ──▶ ID token checked ──▶ session cookie
//!  every request: session cookie ──▶ User {sub, name, tenant, groups, admin}
//! ```
//!
//! The session lives at most 12 hours and never past the ID token's expiry; it is sealed with a
//! key every replica shares (`cookie`), so any replica can read it.

pub mod cookie;
mod oidc;

use serde::{Deserialize, Serialize};

use crate::config::OidcConfig;
use cookie::SessionKey;

/// The session cookie.
pub const SESSION_COOKIE: &str = "tessera_session";
/// The cookie that carries a login from `/auth/login` to `/auth/callback`.
pub const LOGIN_COOKIE: &str = "tessera_login";
/// Longest session.
pub const MAX_SESSION_SECS: u64 = 12 * 3600;
/// Longest time between `/auth/login` and `/auth/callback`.
pub const LOGIN_SECS: u64 = 600;

/// Who is calling, as a session (or the anonymous default) says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct User {
    /// The provider's subject, or `anonymous`.
    pub sub: String,
    /// A name to show.
    pub name: String,
    /// The tenant.
    pub tenant: String,
    /// The user's groups.
    pub groups: Vec<String>,
    /// Whether the user is in one of `adminGroups`.
    pub admin: bool,
}

impl User {
    /// The user of a shell without sign-in.
    pub fn anonymous() -> User {
        User {
            sub: "anonymous".into(),
            name: "anonymous".into(),
            tenant: "default".into(),
            groups: Vec::new(),
            admin: false,
        }
    }
}

/// A session, as sealed in its cookie.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// Subject.
    pub sub: String,
    /// Name.
    pub name: String,
    /// Tenant.
    pub tenant: String,
    /// Groups.
    pub groups: Vec<String>,
    /// Issued at (seconds since the epoch).
    pub iat: u64,
    /// Expiry.
    pub exp: u64,
}

/// A login in progress.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Login {
    pending: oidc::Pending,
    /// Where to go once signed in (a path of this origin).
    back: String,
    exp: u64,
}

/// Why a session or a login is refused.
#[derive(Debug, thiserror::Error)]
pub enum SignInError {
    /// No session, or one that is expired, changed or sealed with another key.
    #[error("{0}")]
    NotSignedIn(String),
    /// The login could not be completed (state, provider, ID token).
    #[error("{0}")]
    Failed(String),
}

/// Users, with or without a provider.
pub struct Users {
    oidc: Option<Oidc>,
}

struct Oidc {
    config: OidcConfig,
    secret: String,
    key: SessionKey,
    http: oidc::Http,
    provider: tokio::sync::Mutex<Option<std::sync::Arc<oidc::Provider>>>,
}

impl std::fmt::Debug for Users {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Users")
            .field("oidc", &self.oidc.as_ref().map(|o| &o.config.issuer))
            .finish()
    }
}

impl Users {
    /// No sign-in: everyone is `anonymous`.
    pub fn anonymous() -> Users {
        Users { oidc: None }
    }

    /// Sign-in with the provider `config` names; the client secret is read from its file now.
    pub fn with_oidc(
        config: OidcConfig,
        key: SessionKey,
        http: reqwest::Client,
    ) -> Result<Users, String> {
        let secret = std::fs::read_to_string(&config.client_secret_file)
            .map_err(|e| {
                format!(
                    "auth.oidc.clientSecretFile {}: {e}",
                    config.client_secret_file.display()
                )
            })?
            .trim()
            .to_string();
        if secret.is_empty() {
            return Err(format!(
                "auth.oidc.clientSecretFile {} is empty",
                config.client_secret_file.display()
            ));
        }
        Ok(Users {
            oidc: Some(Oidc {
                config,
                secret,
                key,
                http: oidc::Http(http),
                provider: tokio::sync::Mutex::new(None),
            }),
        })
    }

    /// Whether users sign in.
    pub fn signs_in(&self) -> bool {
        self.oidc.is_some()
    }

    /// The user a session cookie names (`cookies` is the request's `Cookie` header values);
    /// without sign-in, `anonymous`.
    pub fn user(&self, cookies: &[&str]) -> Result<User, SignInError> {
        self.user_until(cookies).map(|(u, _)| u)
    }

    /// [`Users::user`], and when the session ends (seconds since the epoch; `None` without
    /// sign-in): a live stream opened with it must not outlive it.
    pub fn user_until(&self, cookies: &[&str]) -> Result<(User, Option<u64>), SignInError> {
        let Some(o) = &self.oidc else {
            return Ok((User::anonymous(), None));
        };
        let Some(value) = cookie_value(cookies, SESSION_COOKIE) else {
            return Err(SignInError::NotSignedIn("not signed in".into()));
        };
        let s: Session = o.key.open("session", value).ok_or_else(|| {
            SignInError::NotSignedIn("the session cookie is not one this core sealed".into())
        })?;
        if s.exp <= crate::auth::now() {
            return Err(SignInError::NotSignedIn("the session has expired".into()));
        }
        let admin = s.groups.iter().any(|g| o.config.admin_groups.contains(g));
        Ok((
            User {
                sub: s.sub,
                name: s.name,
                tenant: s.tenant,
                groups: s.groups,
                admin,
            },
            Some(s.exp),
        ))
    }

    /// Seals a session (for tests and tools that hold the key).
    pub fn seal_session(key: &SessionKey, session: &Session) -> Result<String, String> {
        key.seal("session", session)
    }

    async fn provider(o: &Oidc) -> Result<std::sync::Arc<oidc::Provider>, SignInError> {
        let mut held = o.provider.lock().await;
        if let Some(p) = held.as_ref() {
            return Ok(p.clone());
        }
        let p = std::sync::Arc::new(
            oidc::Provider::discover(&o.config, &o.http)
                .await
                .map_err(SignInError::Failed)?,
        );
        *held = Some(p.clone());
        Ok(p)
    }

    /// Starts a login: the provider's URL to send the browser to, and the sealed login cookie.
    /// `origin` is `<scheme>://<host>` of the request (for the default redirect URL); `back` a
    /// path of this origin to return to.
    pub async fn login(&self, origin: &str, back: &str) -> Result<(String, String), SignInError> {
        let Some(o) = &self.oidc else {
            return Err(SignInError::Failed(
                "sign-in is not configured (auth.oidc)".into(),
            ));
        };
        let provider = Users::provider(o).await?;
        let redirect = o
            .config
            .redirect_url
            .clone()
            .unwrap_or_else(|| format!("{origin}/auth/callback"));
        let (url, pending) = provider
            .authorize(&o.config, &o.secret, &redirect)
            .map_err(SignInError::Failed)?;
        let login = Login {
            pending,
            back: safe_path(back),
            exp: crate::auth::now() + LOGIN_SECS,
        };
        let sealed = o.key.seal("login", &login).map_err(SignInError::Failed)?;
        Ok((url, sealed))
    }

    /// Completes a login: checks the state against the login cookie, exchanges the code,
    /// checks the ID token; the sealed session, its lifetime in seconds, and where to go.
    pub async fn callback(
        &self,
        cookies: &[&str],
        state: &str,
        code: &str,
    ) -> Result<(String, u64, String), SignInError> {
        let Some(o) = &self.oidc else {
            return Err(SignInError::Failed(
                "sign-in is not configured (auth.oidc)".into(),
            ));
        };
        let login: Login = cookie_value(cookies, LOGIN_COOKIE)
            .and_then(|v| o.key.open("login", v))
            .ok_or_else(|| {
                SignInError::Failed(
                    "no login in progress in this browser (start again at /auth/login)".into(),
                )
            })?;
        if login.exp <= crate::auth::now() {
            return Err(SignInError::Failed(
                "the login took longer than 10 minutes (start again at /auth/login)".into(),
            ));
        }
        if !constant_time_eq(login.pending.state.as_bytes(), state.as_bytes()) {
            return Err(SignInError::Failed(
                "the state does not match the login in progress".into(),
            ));
        }
        let provider = Users::provider(o).await?;
        let verified = provider
            .exchange(&o.config, &o.secret, &o.http, &login.pending, code)
            .await
            .map_err(SignInError::Failed);
        let verified = match verified {
            Ok(v) => v,
            Err(e) => {
                // The provider may have rotated its keys: discover again next time.
                *o.provider.lock().await = None;
                return Err(e);
            }
        };
        let now = crate::auth::now();
        let exp = verified.exp.min(now + MAX_SESSION_SECS);
        if exp <= now {
            return Err(SignInError::Failed(
                "the ID token has already expired".into(),
            ));
        }
        let text = |v: Option<&serde_json::Value>| v.and_then(|v| v.as_str()).map(String::from);
        let tenant = text(verified.claims.get(&o.config.tenant_claim))
            .unwrap_or_else(|| "default".to_string());
        let groups = match verified.claims.get(&o.config.groups_claim) {
            Some(serde_json::Value::Array(a)) => a
                .iter()
                .filter_map(|g| g.as_str().map(String::from))
                .collect(),
            Some(serde_json::Value::String(g)) => vec![g.clone()],
            _ => Vec::new(),
        };
        let session = Session {
            name: verified.name.unwrap_or_else(|| verified.sub.clone()),
            sub: verified.sub,
            tenant,
            groups,
            iat: now,
            exp,
        };
        let sealed = o
            .key
            .seal("session", &session)
            .map_err(SignInError::Failed)?;
        tracing::info!(sub = %session.sub, tenant = %session.tenant, "signed in");
        Ok((sealed, exp - now, login.back))
    }
}

/// The HTTP client the core reaches the provider with: no redirects followed, 10 s at most.
pub fn provider_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .unwrap_or_default()
}

/// A path of this origin to return to after sign-in (anything else: `/`).
fn safe_path(back: &str) -> String {
    let ok = back.starts_with('/')
        && !back.starts_with("//")
        && !back.contains('\\')
        && !back.chars().any(|c| c.is_control());
    if ok {
        back.to_string()
    } else {
        "/".to_string()
    }
}

/// The value of cookie `name` in `Cookie` header values.
pub fn cookie_value<'a>(headers: &[&'a str], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .flat_map(|h| h.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_paths_of_this_origin_are_returned_to() {
        assert_eq!(safe_path("/hello/world?x=1"), "/hello/world?x=1");
        for bad in [
            "https://evil.example/",
            "//evil.example",
            "/\\evil",
            "",
            "javascript:x",
        ] {
            assert_eq!(safe_path(bad), "/", "{bad}");
        }
    }

    #[test]
    fn cookies_are_found_by_name_among_others() {
        let h = ["a=1; tessera_session=xyz", "b=2"];
        assert_eq!(cookie_value(&h, SESSION_COOKIE), Some("xyz"));
        assert_eq!(cookie_value(&h, "b"), Some("2"));
        assert_eq!(cookie_value(&h, LOGIN_COOKIE), None);
    }
}
