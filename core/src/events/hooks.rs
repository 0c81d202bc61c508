//! Webhook requests as events: what is stored for one (a CloudEvents envelope whose data is the
//! sender's body, byte for byte, with the headers kept), and the request that delivers it (the
//! sender's body and `Content-Type`, the kept headers, `Tessera-Webhook`,
//! `Tessera-Delivery-Id`, and the CloudEvents attributes as `ce-*` headers: binary mode).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde::{Deserialize, Serialize};

use super::envelope::Event;

/// Most headers of a sender's request kept with it.
const MAX_KEPT: usize = 64;
/// Most bytes of kept headers.
const MAX_KEPT_BYTES: usize = 16 << 10;

/// What a webhook request is stored as.
#[derive(Serialize, Deserialize)]
struct Stored {
    specversion: String,
    id: String,
    source: String,
    #[serde(rename = "type")]
    ty: String,
    time: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    datacontenttype: Option<String>,
    data_base64: String,
    /// The sender's headers the core passes on, lowercase names.
    webhookheaders: Vec<(String, String)>,
}

/// Whether a sender's header is passed on to the plugin: `Content-Type`, `User-Agent`, every
/// `X-` header but the proxies' and Tessera's own, and the headers the webhook itself names.
pub fn kept(name: &str, named: &[&str]) -> bool {
    let n = name.to_ascii_lowercase();
    if named.iter().any(|h| h.eq_ignore_ascii_case(&n)) {
        return true;
    }
    match n.as_str() {
        "content-type" | "user-agent" => true,
        n if n.starts_with("x-forwarded-") || n == "x-real-ip" || n.starts_with("x-tessera") => {
            false
        }
        n => n.starts_with("x-"),
    }
}

/// The event stored for one request to `plugin`'s webhook `name`.
pub fn event(
    plugin: &str,
    name: &str,
    delivery_id: &str,
    headers: &axum::http::HeaderMap,
    named: &[&str],
    body: &[u8],
    now_ms: i64,
) -> Event {
    let mut keep = Vec::new();
    let mut bytes = 0;
    for (k, v) in headers {
        let Ok(v) = v.to_str() else { continue };
        if k == axum::http::header::CONTENT_TYPE || !kept(k.as_str(), named) {
            continue;
        }
        bytes += k.as_str().len() + v.len();
        if keep.len() >= MAX_KEPT || bytes > MAX_KEPT_BYTES {
            break;
        }
        keep.push((k.as_str().to_string(), v.to_string()));
    }
    let ty = format!("{plugin}.webhook.{name}");
    let stored = Stored {
        specversion: "1.0".into(),
        id: delivery_id.to_string(),
        source: format!("/hooks/{plugin}/{name}"),
        ty: ty.clone(),
        time: tessera_sdk::time::rfc3339_ms(now_ms),
        datacontenttype: headers
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(String::from),
        data_base64: STANDARD.encode(body),
        webhookheaders: keep,
    };
    Event {
        id: delivery_id.to_string(),
        // Apart from the plugin's own events: a webhook's delivery ids never meet the ids the
        // plugin publishes with.
        source: format!("hooks/{plugin}/{name}"),
        ty,
        tenant: None,
        accepted_ms: now_ms,
        envelope: serde_json::to_string(&stored).unwrap_or_default(),
    }
}

/// The delivery of a stored webhook request: headers and body.
pub fn request(webhook: &str, envelope: &str) -> Result<(HeaderMap, Vec<u8>), String> {
    let s: Stored = serde_json::from_str(envelope)
        .map_err(|e| format!("the stored webhook request is not readable: {e}"))?;
    let body = STANDARD
        .decode(&s.data_base64)
        .map_err(|e| format!("the stored webhook body is not base64: {e}"))?;
    let mut h = HeaderMap::new();
    let mut put = |k: &str, v: &str| {
        if let (Ok(k), Ok(v)) = (HeaderName::try_from(k), HeaderValue::try_from(v)) {
            h.append(k, v);
        }
    };
    for (k, v) in &s.webhookheaders {
        put(k, v);
    }
    put(
        "content-type",
        s.datacontenttype
            .as_deref()
            .unwrap_or("application/octet-stream"),
    );
    put("tessera-webhook", webhook);
    put("tessera-delivery-id", &s.id);
    put("ce-specversion", &s.specversion);
    put("ce-id", &s.id);
    put("ce-source", &s.source);
    put("ce-type", &s.ty);
    put("ce-time", &s.time);
    Ok((h, body))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_request_is_delivered_as_it_was_sent() {
        let mut h = axum::http::HeaderMap::new();
        h.insert("content-type", "application/json".parse().unwrap());
        h.insert("x-github-event", "push".parse().unwrap());
        h.insert("x-forwarded-for", "10.0.0.1".parse().unwrap());
        h.insert("authorization", "Bearer secret".parse().unwrap());
        h.insert("cookie", "a=b".parse().unwrap());
        h.insert("stripe-signature", "t=1,v1=ab".parse().unwrap());
        let body = b"{\"zen\":\"Keep it logically awesome.\"}\n\x00\xff";
        let e = event(
            "ci",
            "github",
            "d-1",
            &h,
            &["Stripe-Signature"],
            body,
            1_700_000_000_000,
        );
        assert_eq!(e.ty, "ci.webhook.github");
        let (headers, got) = request("github", &e.envelope).unwrap();
        assert_eq!(got, body);
        assert_eq!(headers["content-type"], "application/json");
        assert_eq!(headers["x-github-event"], "push");
        assert_eq!(headers["stripe-signature"], "t=1,v1=ab");
        assert_eq!(headers["tessera-delivery-id"], "d-1");
        assert_eq!(headers["ce-type"], "ci.webhook.github");
        assert_eq!(headers["ce-source"], "/hooks/ci/github");
        for gone in ["x-forwarded-for", "authorization", "cookie"] {
            assert!(!headers.contains_key(gone), "{gone} was passed on");
        }
    }
}
