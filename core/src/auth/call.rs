//! Call tokens: what the core presents when it calls into a plugin (a proxied request, an event
//! delivery, a job run, a webhook delivery). EdDSA JWT, `aud` = `plugin:<name>`, `sub` = the
//! user (or `anonymous`, or `core` for the core's own calls), `tenant`, `groups`, `kind`, at
//! most two minutes. A plugin's SDK verifies them against the core's JWKS.
//!
//! Minting is cached per (plugin, subject, tenant, groups, kind) for three quarters of a token's
//! life, so a busy proxy signs once every 90 s per caller, not once per request.

use std::collections::HashMap;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::{ISSUER, Keys, new_jti, now};
use crate::sync::lock;

/// Life of a call token.
pub const CALL_TOKEN_TTL_SECS: u64 = 120;

/// How long a minted call token is handed out again (three quarters of its life), so every
/// token a plugin receives has at least 30 s left.
pub const CALL_TOKEN_REUSE_SECS: u64 = 90;

/// Most cached tokens; past it the cache is emptied (it refills from use).
const CACHE_LIMIT: usize = 10_000;

/// Why the core calls a plugin.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CallKind {
    /// A request proxied from the shell.
    Request,
    /// An event delivery.
    Event,
    /// A job run.
    Job,
    /// A webhook delivery.
    Webhook,
}

/// On whose behalf the core calls.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct OnBehalfOf {
    /// `user:<sub>`'s `sub`, `anonymous`, or `core`.
    pub sub: String,
    /// The tenant.
    pub tenant: String,
    /// The user's groups.
    pub groups: Vec<String>,
}

impl OnBehalfOf {
    /// The core itself (event deliveries, job runs), in the `default` tenant unless told.
    pub fn core(tenant: Option<&str>) -> OnBehalfOf {
        OnBehalfOf {
            sub: "core".into(),
            tenant: tenant.unwrap_or("default").into(),
            groups: Vec::new(),
        }
    }
}

/// The claims of a call token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallClaims {
    /// `tessera`.
    pub iss: String,
    /// `plugin:<name>`.
    pub aud: String,
    /// The user, `anonymous`, or `core`.
    pub sub: String,
    /// The tenant.
    pub tenant: String,
    /// The user's groups.
    pub groups: Vec<String>,
    /// Why the core calls.
    pub kind: CallKind,
    /// Issued at.
    pub iat: u64,
    /// Expiry (`iat` + 120 s).
    pub exp: u64,
    /// Token id.
    pub jti: String,
}

/// A cached token's key: the plugin called, on whose behalf, why.
type CacheKey = (String, OnBehalfOf, CallKind);

/// Mints call tokens, reusing each for most of its life.
#[derive(Debug, Default)]
pub struct CallTokens {
    /// Token and when it was minted (seconds since the epoch), by key.
    cache: Mutex<HashMap<CacheKey, (String, u64)>>,
}

impl CallTokens {
    /// A call token for `plugin`, on behalf of `who`, for `kind`: a cached one while it has at
    /// least 30 s left, else a fresh one.
    pub fn token(
        &self,
        keys: &Keys,
        plugin: &str,
        who: &OnBehalfOf,
        kind: CallKind,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        let now = now();
        let key = (plugin.to_string(), who.clone(), kind);
        if let Some((token, minted)) = lock(&self.cache).get(&key)
            && now.saturating_sub(*minted) < CALL_TOKEN_REUSE_SECS
        {
            return Ok(token.clone());
        }
        let claims = CallClaims {
            iss: ISSUER.to_string(),
            aud: format!("plugin:{plugin}"),
            sub: who.sub.clone(),
            tenant: who.tenant.clone(),
            groups: who.groups.clone(),
            kind,
            iat: now,
            exp: now + CALL_TOKEN_TTL_SECS,
            jti: new_jti(),
        };
        let token = keys.sign(&claims)?;
        let mut cache = lock(&self.cache);
        if cache.len() >= CACHE_LIMIT {
            cache.retain(|_, (_, minted)| now.saturating_sub(*minted) < CALL_TOKEN_REUSE_SECS);
            if cache.len() >= CACHE_LIMIT {
                cache.clear();
            }
        }
        cache.insert(key, (token.clone(), now));
        Ok(token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(token: &str) -> CallClaims {
        use base64::Engine;
        let payload = token.split('.').nth(1).unwrap_or_default();
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap_or_default();
        serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn call_tokens_are_short_audience_bound_and_reused_per_caller() {
        let keys = Keys::from_pem(&Keys::generate_pem().unwrap()).unwrap();
        let calls = CallTokens::default();
        let alice = OnBehalfOf {
            sub: "alice".into(),
            tenant: "acme".into(),
            groups: vec!["ops".into()],
        };
        let t1 = calls
            .token(&keys, "analytics", &alice, CallKind::Request)
            .unwrap();
        let c = claims(&t1);
        assert_eq!(c.aud, "plugin:analytics");
        assert_eq!((c.sub.as_str(), c.tenant.as_str()), ("alice", "acme"));
        assert_eq!(c.groups, ["ops"]);
        assert_eq!(c.kind, CallKind::Request);
        assert_eq!(c.exp - c.iat, CALL_TOKEN_TTL_SECS);
        // Reused for the same caller, not across plugins, callers or kinds.
        assert_eq!(
            calls
                .token(&keys, "analytics", &alice, CallKind::Request)
                .unwrap(),
            t1
        );
        assert_ne!(
            calls
                .token(&keys, "billing", &alice, CallKind::Request)
                .unwrap(),
            t1
        );
        assert_ne!(
            calls
                .token(&keys, "analytics", &alice, CallKind::Job)
                .unwrap(),
            t1
        );
        let core = OnBehalfOf::core(None);
        let t2 = calls
            .token(&keys, "analytics", &core, CallKind::Event)
            .unwrap();
        assert_eq!(
            (claims(&t2).sub.as_str(), claims(&t2).tenant.as_str()),
            ("core", "default")
        );
    }
}
