//! Registration with a projected ServiceAccount token (cluster mode): nothing to distribute, the
//! kubelet rotates the token. The core never checks such a token itself; it asks the API server
//! (a `TokenReview` for audience `tessera`), then maps the user the API server names,
//! `system:serviceaccount:<namespace>:<name>`, to the plugin and grants an admin declared for it
//! (`plugins[].serviceAccount`). The answer is the same registration claims a minted token
//! gives, so everything after step 1 of admission is unchanged.
//!
//! Reviews that succeed are kept for a minute (never past the token's `exp`): the SDK
//! re-registers every 15 s and a fleet must not turn into a TokenReview storm. Refusals are not
//! kept, so a token that becomes valid (a rotation) is accepted at once.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

use super::{AUD_REGISTER, Claims, ISSUER, now};
use crate::config::PluginEntry;
use crate::error::{ApiError, Code};

/// The audience a plugin's projected token must be minted for.
pub const AUDIENCE: &str = "tessera";
/// How long a successful review is trusted.
pub const REVIEW_TTL: Duration = Duration::from_secs(60);
/// Most reviews kept at once (the cache is emptied when full).
const CACHE_MAX: usize = 4096;
/// Prefix of the token id a ServiceAccount registers under (`serviceaccount_<ns>_<name>`):
/// revoking that id stops the ServiceAccount registering and ends its plugin tokens.
pub const ID_PREFIX: &str = "serviceaccount_";

/// What the API server said of a token it accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reviewed {
    /// `status.user.username`.
    pub username: String,
    /// `status.audiences`: the audiences of the request the token is valid for.
    pub audiences: Vec<String>,
}

/// Why a review gave no user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReviewError {
    /// The API server does not vouch for the token (`status.authenticated` false); its reason.
    Refused(String),
    /// The API server did not answer (or answered an error): nothing is known.
    Unavailable(String),
}

/// Future of a review.
pub type ReviewFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Reviewed, ReviewError>> + Send + 'a>>;

/// Asks the API server about a token (`store::kube` implements it with a `TokenReview`).
pub trait TokenReviewer: Send + Sync {
    /// Reviews `token` for `audience`.
    fn review<'a>(&'a self, token: &'a str, audience: &'a str) -> ReviewFuture<'a>;
}

/// A ServiceAccount an admin declared for a plugin.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Mapped {
    plugin: String,
    capabilities: Vec<String>,
}

/// The declared ServiceAccounts, the reviewer, and the reviews that succeeded.
pub struct ServiceAccounts {
    reviewer: Option<std::sync::Arc<dyn TokenReviewer>>,
    /// `(namespace, name)` -> the plugin and its grants.
    map: HashMap<(String, String), Mapped>,
    /// SHA-256 of a token -> what the API server said of it.
    cache: Mutex<HashMap<[u8; 32], Vouched>>,
}

/// A review that succeeded: the username, the token's `exp`, when it was asked.
type Vouched = (String, Option<u64>, Instant);

impl std::fmt::Debug for ServiceAccounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceAccounts")
            .field("reviewer", &self.reviewer.is_some())
            .field("map", &self.map)
            .finish()
    }
}

/// `system:serviceaccount:<namespace>:<name>` -> `(namespace, name)`.
pub fn parse_username(username: &str) -> Option<(&str, &str)> {
    let rest = username.strip_prefix("system:serviceaccount:")?;
    let (ns, name) = rest.split_once(':')?;
    (!ns.is_empty() && !name.is_empty() && !name.contains(':')).then_some((ns, name))
}

/// The token id a ServiceAccount's registrations and plugin tokens carry.
pub fn token_id(namespace: &str, name: &str) -> String {
    format!("{ID_PREFIX}{namespace}_{name}")
}

/// The unverified payload of a JWT, when it is one.
fn payload(token: &str) -> Option<serde_json::Value> {
    let mut parts = token.split('.');
    let (_, body, _) = (parts.next()?, parts.next()?, parts.next()?);
    let bytes = URL_SAFE_NO_PAD.decode(body.trim_end_matches('=')).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Whether a bearer token is a ServiceAccount token rather than one this core minted: a JWT
/// whose subject is a ServiceAccount and whose issuer is not `tessera`. Only a hint for which
/// check to run; the API server decides.
pub fn is_service_account_token(token: &str) -> bool {
    payload(token).is_some_and(|p| {
        p["iss"].as_str() != Some(ISSUER)
            && p["sub"]
                .as_str()
                .is_some_and(|s| s.starts_with("system:serviceaccount:"))
    })
}

impl ServiceAccounts {
    /// From the declared plugins (`serviceAccount` set) and, in a cluster, a reviewer.
    pub fn new(
        plugins: &[PluginEntry],
        reviewer: Option<std::sync::Arc<dyn TokenReviewer>>,
    ) -> ServiceAccounts {
        let map = plugins
            .iter()
            .filter_map(|p| {
                let sa = p.service_account.as_ref()?;
                Some((
                    (p.namespace.clone(), sa.clone()),
                    Mapped {
                        plugin: p.name.clone(),
                        capabilities: p.capabilities.clone(),
                    },
                ))
            })
            .collect();
        ServiceAccounts {
            reviewer,
            map,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Whether a token id names a ServiceAccount no longer declared (its plugin tokens end).
    pub fn is_withdrawn(&self, jti: &str) -> bool {
        jti.starts_with(ID_PREFIX) && !self.map.keys().any(|(ns, name)| token_id(ns, name) == jti)
    }

    /// Checks a ServiceAccount token and answers the registration claims of its plugin.
    /// `revoked` tells whether a token id is revoked.
    pub async fn check(
        &self,
        token: &str,
        revoked: impl Fn(&str) -> bool,
    ) -> Result<Claims, ApiError> {
        let Some(reviewer) = &self.reviewer else {
            return Err(ApiError::new(
                Code::ServiceAccountTokenInvalid,
                "this is a Kubernetes ServiceAccount token; this core runs with the SQLite store and cannot check it: register with a token from `tessera token issue`",
            ));
        };
        let exp = payload(token).and_then(|p| p["exp"].as_u64());
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let username = match self.cached(&key) {
            Some(u) => u,
            None => {
                let r = reviewer
                    .review(token, AUDIENCE)
                    .await
                    .map_err(|e| match e {
                        ReviewError::Refused(why) => ApiError::new(
                            Code::ServiceAccountTokenInvalid,
                            format!(
                                "the Kubernetes API server does not accept this ServiceAccount token for audience \"{AUDIENCE}\": {why}"
                            ),
                        ),
                        ReviewError::Unavailable(why) => {
                            tracing::warn!(error = %why, "TokenReview failed");
                            let mut e = ApiError::new(
                                Code::TokenReviewUnavailable,
                                format!("the ServiceAccount token could not be checked: {why}"),
                            );
                            e.retry_after = Some(5);
                            e
                        }
                    })?;
                // The API server answers the audiences the token is valid for among those
                // asked; an empty list means "the API server's own", which is not ours.
                if !r.audiences.iter().any(|a| a == AUDIENCE) {
                    return Err(ApiError::new(
                        Code::ServiceAccountTokenInvalid,
                        format!(
                            "the ServiceAccount token is not for audience \"{AUDIENCE}\" (project it with `audience: {AUDIENCE}`)"
                        ),
                    ));
                }
                self.remember(key, &r.username, exp);
                r.username
            }
        };
        let Some((ns, name)) = parse_username(&username) else {
            return Err(ApiError::new(
                Code::ServiceAccountTokenInvalid,
                format!("the token belongs to \"{username}\", not to a ServiceAccount"),
            ));
        };
        let Some(m) = self.map.get(&(ns.to_string(), name.to_string())) else {
            return Err(ApiError::new(
                Code::ServiceAccountNotMapped,
                format!(
                    "ServiceAccount {ns}/{name} is not declared for any plugin: add `serviceAccount: {name}` to the plugin's entry (namespace {ns}) in the core's `plugins`"
                ),
            ));
        };
        let jti = token_id(ns, name);
        if revoked(&jti) {
            return Err(ApiError::new(
                Code::TokenRevoked,
                format!("registrations by ServiceAccount {ns}/{name} were revoked ({jti})"),
            ));
        }
        let mut caps = m.capabilities.clone();
        caps.sort();
        caps.dedup();
        Ok(Claims {
            iss: ISSUER.to_string(),
            aud: AUD_REGISTER.to_string(),
            sub: m.plugin.clone(),
            caps,
            ns: Some(ns.to_string()),
            iat: now(),
            nbf: None,
            exp,
            jti,
            reg: None,
        })
    }

    fn cached(&self, key: &[u8; 32]) -> Option<String> {
        let cache = crate::sync::lock(&self.cache);
        let (user, exp, at) = cache.get(key)?;
        let live = at.elapsed() < REVIEW_TTL && exp.is_none_or(|e| e > now());
        live.then(|| user.clone())
    }

    fn remember(&self, key: [u8; 32], username: &str, exp: Option<u64>) {
        let mut cache = crate::sync::lock(&self.cache);
        if cache.len() >= CACHE_MAX {
            cache.retain(|_, (_, _, at)| at.elapsed() < REVIEW_TTL);
            if cache.len() >= CACHE_MAX {
                cache.clear();
            }
        }
        cache.insert(key, (username.to_string(), exp, Instant::now()));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// A reviewer that accepts tokens of the form `<username>` listed in `valid`.
    struct Table {
        valid: Vec<(String, Reviewed)>,
        calls: AtomicUsize,
    }

    impl TokenReviewer for Table {
        fn review<'a>(&'a self, token: &'a str, _audience: &'a str) -> ReviewFuture<'a> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let found = self
                .valid
                .iter()
                .find(|(t, _)| t == token)
                .map(|(_, r)| r.clone());
            Box::pin(
                async move { found.ok_or(ReviewError::Refused("invalid bearer token".into())) },
            )
        }
    }

    fn jwt(payload: serde_json::Value) -> String {
        let enc = |v: &serde_json::Value| URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap());
        format!(
            "{}.{}.c2ln",
            enc(&serde_json::json!({"alg": "RS256", "kid": "k"})),
            enc(&payload)
        )
    }

    fn entry(name: &str, ns: &str, sa: Option<&str>) -> PluginEntry {
        PluginEntry {
            name: name.into(),
            namespace: ns.into(),
            capabilities: vec!["ui:panel".into(), "events:publish".into()],
            service_account: sa.map(String::from),
            backend_url: None,
            remote_url: None,
            manifest: None,
        }
    }

    fn sa_token(ns: &str, name: &str, exp: u64) -> String {
        jwt(serde_json::json!({
            "iss": "https://kubernetes.default.svc.cluster.local",
            "aud": [AUDIENCE],
            "sub": format!("system:serviceaccount:{ns}:{name}"),
            "exp": exp,
        }))
    }

    fn accounts(tokens: &[(&str, &str, &[&str])]) -> (ServiceAccounts, Arc<Table>) {
        let table = Arc::new(Table {
            valid: tokens
                .iter()
                .map(|(t, user, aud)| {
                    (
                        t.to_string(),
                        Reviewed {
                            username: user.to_string(),
                            audiences: aud.iter().map(|a| a.to_string()).collect(),
                        },
                    )
                })
                .collect(),
            calls: AtomicUsize::new(0),
        });
        let sas = ServiceAccounts::new(
            &[
                entry("hello", "team-a", Some("hello")),
                entry("other", "team-b", None),
            ],
            Some(table.clone()),
        );
        (sas, table)
    }

    #[test]
    fn service_account_tokens_are_told_from_minted_ones() {
        assert!(is_service_account_token(&sa_token("a", "b", 1)));
        assert!(!is_service_account_token(&jwt(
            serde_json::json!({"iss": "tessera", "sub": "system:serviceaccount:a:b"})
        )));
        assert!(!is_service_account_token(&jwt(
            serde_json::json!({"iss": "x", "sub": "hello"})
        )));
        assert!(!is_service_account_token("not a jwt"));
    }

    #[test]
    fn usernames_parse_only_as_service_accounts() {
        assert_eq!(
            parse_username("system:serviceaccount:team-a:hello"),
            Some(("team-a", "hello"))
        );
        assert_eq!(parse_username("system:serviceaccount:team-a"), None);
        assert_eq!(parse_username("system:serviceaccount::x"), None);
        assert_eq!(parse_username("system:serviceaccount:a:b:c"), None);
        assert_eq!(parse_username("alice"), None);
    }

    #[tokio::test]
    async fn a_declared_service_account_registers_its_plugin_with_its_grants() {
        let exp = now() + 3600;
        let t = sa_token("team-a", "hello", exp);
        let (sas, table) = accounts(&[(&t, "system:serviceaccount:team-a:hello", &[AUDIENCE])]);
        let c = sas.check(&t, |_| false).await.unwrap();
        assert_eq!(c.sub, "hello");
        assert_eq!(c.aud, AUD_REGISTER);
        assert_eq!(c.ns.as_deref(), Some("team-a"));
        assert_eq!(c.caps, vec!["events:publish", "ui:panel"]);
        assert_eq!(c.exp, Some(exp));
        assert_eq!(c.jti, "serviceaccount_team-a_hello");
        // The second check within a minute is answered from the cache.
        sas.check(&t, |_| false).await.unwrap();
        assert_eq!(table.calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn refusals_say_why_and_are_not_cached() {
        let t = sa_token("team-a", "hello", now() + 3600);
        let (sas, table) = accounts(&[]);
        for _ in 0..2 {
            let e = sas.check(&t, |_| false).await.unwrap_err();
            assert_eq!(e.code, Code::ServiceAccountTokenInvalid);
            assert!(e.message.contains("invalid bearer token"), "{}", e.message);
        }
        assert_eq!(table.calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn an_undeclared_or_revoked_service_account_is_refused() {
        let t1 = sa_token("team-b", "other", now() + 3600);
        let t2 = sa_token("team-a", "hello", now() + 3600);
        let t3 = sa_token("team-a", "hello", now() + 7200);
        let t4 = sa_token("team-a", "hello", now() + 7300);
        let (sas, _) = accounts(&[
            (&t1, "system:serviceaccount:team-b:other", &[AUDIENCE]),
            (&t2, "system:serviceaccount:team-a:hello", &[AUDIENCE]),
            (&t3, "system:serviceaccount:team-a:hello", &["kubernetes"]),
            (&t4, "system:serviceaccount:team-a:hello", &[]),
        ]);
        let e = sas.check(&t1, |_| false).await.unwrap_err();
        assert_eq!(e.code, Code::ServiceAccountNotMapped);
        assert!(e.message.contains("team-b/other"), "{}", e.message);
        let e = sas
            .check(&t2, |j| j == "serviceaccount_team-a_hello")
            .await
            .unwrap_err();
        assert_eq!(e.code, Code::TokenRevoked);
        for t in [&t3, &t4] {
            let e = sas.check(t, |_| false).await.unwrap_err();
            assert_eq!(e.code, Code::ServiceAccountTokenInvalid);
            assert!(e.message.contains("audience"), "{}", e.message);
        }
    }

    #[tokio::test]
    async fn without_a_cluster_a_service_account_token_gets_a_clear_refusal() {
        let sas = ServiceAccounts::new(&[entry("hello", "team-a", Some("hello"))], None);
        let e = sas
            .check(&sa_token("team-a", "hello", now() + 60), |_| false)
            .await
            .unwrap_err();
        assert_eq!(e.code, Code::ServiceAccountTokenInvalid);
        assert!(e.message.contains("SQLite"), "{}", e.message);
    }

    #[test]
    fn token_ids_of_undeclared_service_accounts_are_withdrawn() {
        let (sas, _) = accounts(&[]);
        assert!(!sas.is_withdrawn("serviceaccount_team-a_hello"));
        assert!(sas.is_withdrawn("serviceaccount_team-b_other"));
        assert!(!sas.is_withdrawn("0123abcd"));
    }
}
