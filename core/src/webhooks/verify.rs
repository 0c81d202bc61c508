//! Whether a request to a webhook is the sender's: pure rules, no I/O. HMAC-SHA256 over the body
//! (or over `<timestamp>.<body>` when the webhook names a timestamp header), compared in
//! constant time against every signature the header carries (hex or base64, after the prefix);
//! a timestamp outside the tolerance is stale; the delivery id comes from the sender's header,
//! else from the signature (a replayed request has the same one).

use axum::http::HeaderMap;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use tessera_sdk::webhooks::Webhook;

/// Longest delivery id kept as the sender wrote it (longer ones are hashed).
const MAX_ID_LEN: usize = 200;

/// What became of a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The sender's: store and deliver it (once per delivery id).
    Accept {
        /// The delivery id.
        delivery_id: String,
    },
    /// Signed, but its timestamp is outside the tolerance: answered 202, never delivered.
    Stale {
        /// How far off, in seconds.
        skew: i64,
    },
    /// Not the sender's (401).
    Refuse(String),
}

/// Checks a request to `hook` signed with `key` (`None`: the hook is unsigned and the admin
/// allows it), at `now` (Unix seconds).
pub fn check(
    hook: &Webhook,
    key: Option<&[u8]>,
    headers: &HeaderMap,
    body: &[u8],
    now: i64,
) -> Verdict {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let (sig, key) = match (&hook.signature, key) {
        (Some(sig), Some(key)) => (sig, key),
        (Some(_), None) => {
            return Verdict::Refuse("the webhook's signing secret is not set".into());
        }
        (None, _) => {
            let id = sender_id(hook, headers).unwrap_or_else(|| {
                // Unsigned and unnamed: nothing tells a replay apart; each request is new.
                let mut rnd = [0u8; 16];
                let _ = getrandom::fill(&mut rnd);
                hex(&rnd)
            });
            return Verdict::Accept { delivery_id: id };
        }
    };
    let Some(value) = header(&sig.header) else {
        return Verdict::Refuse(format!("the request has no {} header", sig.header));
    };
    let mut mac = match Hmac::<Sha256>::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => return Verdict::Refuse("the signing secret cannot key HMAC-SHA256".into()),
    };
    let mut stamp = None;
    if let Some(ts_header) = &hook.timestamp_header {
        let Some(raw) = header(ts_header) else {
            return Verdict::Refuse(format!("the request has no {ts_header} header"));
        };
        let text = parts(raw)
            .find_map(|p| p.strip_prefix("t="))
            .unwrap_or(raw.trim());
        let Ok(ts) = text.parse::<i64>() else {
            return Verdict::Refuse(format!("{ts_header} is not a Unix time in seconds"));
        };
        mac.update(text.as_bytes());
        mac.update(b".");
        stamp = Some(ts);
    }
    mac.update(body);
    let prefix = sig.prefix.as_deref().unwrap_or("");
    // `verify_slice` compares in constant time.
    let matched = parts(value)
        .filter_map(|p| p.strip_prefix(prefix))
        .filter_map(decode)
        .any(|given| mac.clone().verify_slice(&given).is_ok());
    // The MAC itself names the request: a replay with its header reordered, re-cased or padded
    // with other parts is the same request.
    let derived = hex(&mac.finalize().into_bytes()[..16]);
    if !matched {
        return Verdict::Refuse(format!(
            "the {} signature does not match the body signed with the webhook's secret",
            sig.header
        ));
    }
    if let (Some(ts), Some(tolerance)) = (stamp, hook.tolerance_seconds) {
        let skew = now - ts;
        if skew.abs() > i64::from(tolerance) {
            return Verdict::Stale { skew };
        }
    }
    let delivery_id = sender_id(hook, headers).unwrap_or(derived);
    Verdict::Accept { delivery_id }
}

/// The comma- (or space-) separated parts of a header value, trimmed.
fn parts(value: &str) -> impl Iterator<Item = &str> {
    value
        .split([',', ' '])
        .map(str::trim)
        .filter(|p| !p.is_empty())
}

/// A signature as bytes: hex (either case) or base64 (standard or URL-safe).
fn decode(text: &str) -> Option<Vec<u8>> {
    if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return (0..64)
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
            .collect();
    }
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .or_else(|_| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(text.trim_end_matches('='))
        })
        .ok()
        .filter(|b| b.len() == 32)
}

/// The sender's delivery id, when the webhook names its header and the request carries it.
fn sender_id(hook: &Webhook, headers: &HeaderMap) -> Option<String> {
    let value = headers
        .get(hook.delivery_id_header.as_deref()?)?
        .to_str()
        .ok()?
        .trim();
    if value.is_empty() {
        return None;
    }
    if value.len() <= MAX_ID_LEN && value.bytes().all(|b| b.is_ascii_graphic()) {
        return Some(value.to_string());
    }
    Some(hex(&Sha256::digest(value.as_bytes())[..16]))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use tessera_sdk::webhooks::{Scheme, Signature};

    fn sign(key: &[u8], msg: &[u8]) -> String {
        let mut m = Hmac::<Sha256>::new_from_slice(key).unwrap();
        m.update(msg);
        hex(&m.finalize().into_bytes())
    }

    fn github() -> Webhook {
        Webhook {
            name: "github".into(),
            path: "/hooks/github".into(),
            signature: Some(Signature {
                scheme: Scheme::HmacSha256,
                header: "X-Hub-Signature-256".into(),
                secret: "GITHUB_SECRET".into(),
                prefix: Some("sha256=".into()),
            }),
            delivery_id_header: Some("X-GitHub-Delivery".into()),
            timestamp_header: None,
            tolerance_seconds: None,
        }
    }

    fn stripe() -> Webhook {
        let mut w = Webhook {
            name: "stripe".into(),
            path: "/hooks/stripe".into(),
            signature: Some(Signature {
                scheme: Scheme::HmacSha256,
                header: "Stripe-Signature".into(),
                secret: "STRIPE_SECRET".into(),
                prefix: Some("v1=".into()),
            }),
            delivery_id_header: None,
            timestamp_header: Some("Stripe-Signature".into()),
            tolerance_seconds: None,
        };
        w.normalize();
        w
    }

    fn headers(pairs: &[(&'static str, String)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn github_style_signatures_are_checked_over_the_body() {
        // GitHub's documented example: secret "It's a Secret to Everybody", payload
        // "Hello, World!".
        let key = b"It's a Secret to Everybody";
        let body = b"Hello, World!";
        let sig = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        let h = headers(&[
            ("x-hub-signature-256", sig.into()),
            ("x-github-delivery", "d-1".into()),
        ]);
        assert_eq!(
            check(&github(), Some(key), &h, body, 0),
            Verdict::Accept {
                delivery_id: "d-1".into()
            }
        );
        assert!(matches!(
            check(&github(), Some(key), &h, b"Hello, World?", 0),
            Verdict::Refuse(_)
        ));
        assert!(matches!(
            check(&github(), Some(b"other"), &h, body, 0),
            Verdict::Refuse(_)
        ));
        let none = headers(&[("x-github-delivery", "d-1".into())]);
        assert!(matches!(
            check(&github(), Some(key), &none, body, 0),
            Verdict::Refuse(_)
        ));
        let upper = headers(&[(
            "x-hub-signature-256",
            sig.to_uppercase().replace("SHA256=", "sha256="),
        )]);
        assert!(matches!(
            check(&github(), Some(key), &upper, body, 0),
            Verdict::Accept { .. }
        ));
    }

    #[test]
    fn stripe_style_signatures_sign_the_timestamp_and_go_stale() {
        let key = b"whsec_test";
        let body = br#"{"id":"evt_1"}"#;
        let now = 1_700_000_000;
        let t = now - 10;
        let good = sign(
            key,
            format!("{t}.{}", std::str::from_utf8(body).unwrap()).as_bytes(),
        );
        let v = format!("t={t},v1={},v1=deadbeef", good);
        let h = headers(&[("stripe-signature", v.clone())]);
        let Verdict::Accept { delivery_id } = check(&stripe(), Some(key), &h, body, now) else {
            panic!("refused");
        };
        // The same signed request again has the same id (so it is delivered once), however
        // its header is padded or re-cased.
        assert_eq!(
            check(&stripe(), Some(key), &h, body, now),
            Verdict::Accept {
                delivery_id: delivery_id.clone()
            }
        );
        let padded = headers(&[(
            "stripe-signature",
            format!(
                "{},v0=junk",
                v.to_uppercase().replace("T=", "t=").replace("V1=", "v1=")
            ),
        )]);
        assert_eq!(
            check(&stripe(), Some(key), &padded, body, now),
            Verdict::Accept { delivery_id }
        );
        assert_eq!(
            check(&stripe(), Some(key), &h, body, now + 400),
            Verdict::Stale { skew: 410 }
        );
        // A timestamp changed after signing does not match.
        let forged = headers(&[(
            "stripe-signature",
            v.replace(&format!("t={t}"), &format!("t={now}")),
        )]);
        assert!(matches!(
            check(&stripe(), Some(key), &forged, body, now),
            Verdict::Refuse(_)
        ));
        // A signature over the body alone does not either.
        let body_only = headers(&[("stripe-signature", format!("t={t},v1={}", sign(key, body)))]);
        assert!(matches!(
            check(&stripe(), Some(key), &body_only, body, now),
            Verdict::Refuse(_)
        ));
    }

    #[test]
    fn base64_signatures_and_unsigned_hooks() {
        let key = b"k";
        let body = b"x";
        let mut m = Hmac::<Sha256>::new_from_slice(key).unwrap();
        m.update(body);
        let b64 = base64::engine::general_purpose::STANDARD.encode(m.finalize().into_bytes());
        let mut hook = github();
        hook.signature.as_mut().unwrap().prefix = None;
        let h = headers(&[("x-hub-signature-256", b64)]);
        assert!(matches!(
            check(&hook, Some(key), &h, body, 0),
            Verdict::Accept { .. }
        ));
        hook.signature = None;
        let Verdict::Accept { delivery_id } = check(&hook, None, &HeaderMap::new(), body, 0) else {
            panic!("an unsigned hook the admin allows is accepted");
        };
        assert_eq!(delivery_id.len(), 32);
    }
}
