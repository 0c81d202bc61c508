//! ServiceAccount tokens, as the API server serves them:
//!
//! - `POST /api/v1/namespaces/{ns}/serviceaccounts/{name}/token` (a `TokenRequest`, what the
//!   kubelet asks for a projected token volume): `spec.audiences` (default: the API server's
//!   own), `spec.expirationSeconds` (default 3600, at least 600), `404` for a ServiceAccount
//!   that does not exist; the answer's `status.token` is a JWT with the real claims (`iss`,
//!   `sub` = `system:serviceaccount:<ns>:<name>`, `aud`, `exp`, `iat`, `nbf`, `jti`,
//!   `kubernetes.io`), `status.expirationTimestamp`.
//! - `POST /apis/authentication.k8s.io/v1/tokenreviews` (a `TokenReview`): `status.authenticated`,
//!   `status.user` (`username`, `uid`, `groups`, `extra`) and `status.audiences` (the requested
//!   audiences the token is valid for), or `status.error` for a token that is unknown, expired,
//!   for other audiences, or whose ServiceAccount was deleted.
//!
//! Tokens are checked against what this server issued (their signature is not a real RSA one);
//! a token with any byte changed is unknown.

use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

use super::{
    RESOURCES, SERVICE_ACCOUNTS, Shared, faults, invalid, not_found, parse_body, rfc3339, status,
};

/// The issuer and default audience of the fake cluster's tokens.
pub const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

/// A token this server issued.
pub(crate) struct Issued {
    namespace: String,
    name: String,
    uid: String,
    audiences: Vec<String>,
    exp: u64,
    jti: String,
}

/// `spec.audiences`, or the API server's own when none are named.
fn audiences(req: &Value) -> Vec<String> {
    req.pointer("/spec/audiences")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(String::from)
                .collect()
        })
        .filter(|a: &Vec<String>| !a.is_empty())
        .unwrap_or_else(|| vec![ISSUER.to_string()])
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

pub(crate) async fn token_request(
    State(s): State<std::sync::Arc<Shared>>,
    Path((ns, name)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    if let Err(r) = faults(&s).await {
        return r;
    }
    let req = match parse_body(&body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let sa_res = &RESOURCES[SERVICE_ACCOUNTS];
    let audiences = audiences(&req);
    let seconds = req
        .pointer("/spec/expirationSeconds")
        .and_then(Value::as_u64)
        .unwrap_or(3600);
    if seconds < 600 {
        return invalid(
            sa_res,
            &name,
            &format!(
                "spec.expirationSeconds: Invalid value: {seconds}: may not specify a duration less than 10 minutes"
            ),
        );
    }
    let mut inner = s.lock();
    let Some(sa) = inner
        .objects
        .get(&("serviceaccounts", ns.clone(), name.clone()))
    else {
        return not_found(sa_res, &name);
    };
    let uid = sa
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    inner.names += 1;
    let (iat, serial) = (now(), inner.names);
    let exp = iat + seconds;
    let jti = format!("00000000-0000-4000-9000-{serial:012x}");
    let enc = |v: &Value| URL_SAFE_NO_PAD.encode(v.to_string());
    let claims = json!({
        "aud": audiences,
        "exp": exp,
        "iat": iat,
        "iss": ISSUER,
        "jti": jti,
        "kubernetes.io": {
            "namespace": ns,
            "serviceaccount": {"name": name, "uid": uid},
        },
        "nbf": iat,
        "sub": format!("system:serviceaccount:{ns}:{name}"),
    });
    // A signature-sized tail, unique per token (not a real RS256 signature).
    let tail: Vec<u8> = (0..256u32)
        .map(|i| {
            let x =
                (serial as u32).wrapping_mul(2_654_435_761) ^ i.wrapping_mul(40_503) ^ (iat as u32);
            (x >> (i % 24)) as u8
        })
        .collect();
    let token = format!(
        "{}.{}.{}",
        enc(&json!({"alg": "RS256", "kid": "fake-kube-sa-key"})),
        enc(&claims),
        URL_SAFE_NO_PAD.encode(tail)
    );
    inner.sa_tokens.insert(
        token.clone(),
        Issued {
            namespace: ns.clone(),
            name: name.clone(),
            uid,
            audiences: audiences.clone(),
            exp,
            jti,
        },
    );
    (
        StatusCode::CREATED,
        axum::Json(json!({
            "kind": "TokenRequest",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"name": name, "namespace": ns, "creationTimestamp": null},
            "spec": {"audiences": audiences, "expirationSeconds": seconds, "boundObjectRef": null},
            "status": {"token": token, "expirationTimestamp": rfc3339(exp)},
        })),
    )
        .into_response()
}

pub(crate) async fn token_review(State(s): State<std::sync::Arc<Shared>>, body: Bytes) -> Response {
    if let Err(r) = faults(&s).await {
        return r;
    }
    let req = match parse_body(&body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    if req["kind"] != "TokenReview" {
        return status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "the body is not a TokenReview".into(),
            None,
        );
    }
    let token = req
        .pointer("/spec/token")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let asked = audiences(&req);
    let inner = s.lock();
    let verdict = match inner.sa_tokens.get(token) {
        None => Err(
            "[invalid bearer token, square/go-jose: error in cryptographic primitive]".to_string(),
        ),
        Some(t) if t.exp <= now() => {
            Err("[invalid bearer token, service account token has expired]".to_string())
        }
        Some(t) => {
            let both: Vec<String> = asked
                .iter()
                .filter(|a| t.audiences.contains(a))
                .cloned()
                .collect();
            let sa = inner
                .objects
                .get(&("serviceaccounts", t.namespace.clone(), t.name.clone()));
            let sa_uid = sa
                .and_then(|o| o.pointer("/metadata/uid"))
                .and_then(Value::as_str);
            if both.is_empty() {
                Err(format!(
                    "[invalid bearer token, token audiences {:?} is invalid for the target audiences {:?}]",
                    t.audiences, asked
                ))
            } else if sa_uid != Some(t.uid.as_str()) {
                Err(format!(
                    "[invalid bearer token, service account {}/{} has been deleted]",
                    t.namespace, t.name
                ))
            } else {
                Ok((t, both))
            }
        }
    };
    let status_obj = match verdict {
        Ok((t, both)) => json!({
            "authenticated": true,
            "user": {
                "username": format!("system:serviceaccount:{}:{}", t.namespace, t.name),
                "uid": t.uid,
                "groups": [
                    "system:serviceaccounts",
                    format!("system:serviceaccounts:{}", t.namespace),
                    "system:authenticated",
                ],
                "extra": {"authentication.kubernetes.io/credential-id": [format!("JTI={}", t.jti)]},
            },
            "audiences": both,
        }),
        Err(why) => json!({"user": {}, "error": why}),
    };
    (
        StatusCode::CREATED,
        axum::Json(json!({
            "kind": "TokenReview",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"creationTimestamp": null},
            "spec": req["spec"].clone(),
            "status": status_obj,
        })),
    )
        .into_response()
}

/// Moves every issued token's expiry to now (time passing, for tests).
pub(crate) fn expire_all(s: &Shared) {
    let now = now();
    for t in s.lock().sa_tokens.values_mut() {
        t.exp = t.exp.min(now);
    }
}
