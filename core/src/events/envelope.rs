//! What a plugin publishes, checked, and the CloudEvents 1.0 envelope the core completes around
//! it (`specversion`, `id`, `source: /plugins/<name>`, `time`, `datacontenttype`). Pure.

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};

/// Largest `data`, serialized.
pub const MAX_DATA_BYTES: usize = 256 * 1024;
/// Largest request body of a publish (data plus the other fields).
pub const MAX_PUBLISH_BYTES: usize = MAX_DATA_BYTES + 8 * 1024;
/// Longest `id`, `tenant` or `subject`.
const MAX_FIELD_LEN: usize = 256;

/// The body of `POST /api/plugin/v1/events`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Publish<'a> {
    /// Event type, `<plugin>.` first.
    #[serde(rename = "type")]
    pub ty: String,
    /// What the event is about, within the source (CloudEvents `subject`).
    #[serde(default)]
    pub subject: Option<String>,
    /// The payload (any JSON value, `null` included).
    #[serde(borrow)]
    pub data: &'a RawValue,
    /// The publisher's id for the event; publishing the same id again is accepted once.
    #[serde(default)]
    pub id: Option<String>,
    /// The tenant the event belongs to; shells of other tenants do not see it.
    #[serde(default)]
    pub tenant: Option<String>,
}

/// Why a publish is refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// The body or a field is malformed (400).
    Invalid(String),
    /// `data` is larger than 256 KiB (413).
    TooLarge(usize),
    /// The type does not start with the publisher's name (403).
    NotOwned(String),
}

/// An accepted event, ready to store.
#[derive(Clone, Debug)]
pub struct Event {
    /// CloudEvents `id`.
    pub id: String,
    /// The publishing plugin.
    pub source: String,
    /// Event type.
    pub ty: String,
    /// Tenant, if any.
    pub tenant: Option<String>,
    /// Acceptance time, milliseconds since the epoch.
    pub accepted_ms: i64,
    /// The CloudEvents envelope, structured JSON.
    pub envelope: String,
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_FIELD_LEN
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// Parses and checks a publish body from `plugin`, and completes its envelope.
pub fn accept(
    body: &[u8],
    plugin: &str,
    now_ms: i64,
    new_id: impl FnOnce() -> String,
) -> Result<Event, Refused> {
    let p: Publish<'_> = serde_json::from_slice(body)
        .map_err(|e| Refused::Invalid(format!("the body is not a publish request: {e}")))?;
    if let Some(why) = tessera_sdk::events::type_problem(&p.ty, plugin) {
        return Err(
            if p.ty.split('.').next() != Some(plugin) && p.ty.contains('.') {
                Refused::NotOwned(why)
            } else {
                Refused::Invalid(why)
            },
        );
    }
    let data = p.data;
    if data.get().len() > MAX_DATA_BYTES {
        return Err(Refused::TooLarge(data.get().len()));
    }
    for (name, v) in [("id", &p.id), ("tenant", &p.tenant)] {
        if let Some(v) = v
            && !is_token(v)
        {
            return Err(Refused::Invalid(format!(
                "\"{name}\" must be 1-{MAX_FIELD_LEN} letters, digits, '-', '_', '.' or ':'"
            )));
        }
    }
    if let Some(s) = &p.subject
        && (s.is_empty() || s.len() > MAX_FIELD_LEN || s.chars().any(char::is_control))
    {
        return Err(Refused::Invalid(format!(
            "\"subject\" must be 1-{MAX_FIELD_LEN} characters without control characters"
        )));
    }
    let id = p.id.unwrap_or_else(new_id);
    let mut env = Map::new();
    env.insert("specversion".into(), json!("1.0"));
    env.insert("id".into(), json!(id));
    env.insert("source".into(), json!(format!("/plugins/{plugin}")));
    env.insert("type".into(), json!(p.ty));
    if let Some(s) = &p.subject {
        env.insert("subject".into(), json!(s));
    }
    env.insert("time".into(), json!(tessera_sdk::time::rfc3339_ms(now_ms)));
    env.insert("datacontenttype".into(), json!("application/json"));
    if let Some(t) = &p.tenant {
        env.insert("tenant".into(), json!(t));
    }
    // `data` goes in as written (it was parsed once to check it is JSON), without the
    // whitespace between its tokens: the envelope is one line, as an SSE `data:` field needs.
    env.insert("data".into(), Value::Null);
    let mut envelope = serde_json::to_string(&env).map_err(|e| Refused::Invalid(e.to_string()))?;
    let tail = "\"data\":null}";
    if envelope.ends_with(tail) {
        envelope.truncate(envelope.len() - tail.len());
        envelope.push_str("\"data\":");
        compact_into(data.get(), &mut envelope);
        envelope.push('}');
    }
    Ok(Event {
        id,
        source: plugin.to_string(),
        ty: p.ty,
        tenant: p.tenant,
        accepted_ms: now_ms,
        envelope,
    })
}

/// Appends JSON text `json` to `out` without the whitespace outside its strings (inside a
/// string a newline is always escaped, so the result is one line).
fn compact_into(json: &str, out: &mut String) {
    let (mut in_string, mut escaped) = (false, false);
    for c in json.chars() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if !matches!(c, ' ' | '\n' | '\r' | '\t') {
            if c == '"' {
                in_string = true;
            }
            out.push(c);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(body: &str) -> Event {
        accept(body.as_bytes(), "billing", 1_767_225_600_123, || {
            "gen-1".into()
        })
        .unwrap_or_else(|e| panic!("{e:?}"))
    }

    fn refused(body: &str) -> Refused {
        match accept(body.as_bytes(), "billing", 0, || "x".into()) {
            Err(e) => e,
            Ok(e) => panic!("accepted {e:?}"),
        }
    }

    #[test]
    fn the_envelope_is_cloudevents_1_0() {
        let e = ok(
            r#"{"type":"billing.invoice.created","data":{"total": 12.5,"lines":[1,2]},"subject":"inv-7","tenant":"acme"}"#,
        );
        let v: Value = serde_json::from_str(&e.envelope).unwrap_or_default();
        assert_eq!(v["specversion"], "1.0");
        assert_eq!(v["id"], "gen-1");
        assert_eq!(v["source"], "/plugins/billing");
        assert_eq!(v["type"], "billing.invoice.created");
        assert_eq!(v["subject"], "inv-7");
        assert_eq!(v["tenant"], "acme");
        assert_eq!(v["time"], "2026-01-01T00:00:00.123Z");
        assert_eq!(v["datacontenttype"], "application/json");
        assert_eq!(v["data"], json!({"total": 12.5, "lines": [1, 2]}));
        assert_eq!(e.tenant.as_deref(), Some("acme"));
        let own = ok(r#"{"type":"billing.x","data":null,"id":"inv-7:created"}"#);
        assert_eq!(own.id, "inv-7:created");
    }

    #[test]
    fn the_envelope_is_one_line_whatever_the_data_looks_like() {
        let e = ok(
            "{\"type\":\"billing.x\",\"data\":{\n  \"a b\": \"x\\n\\\"y\\\\\",\r\n\t\"n\": [1, 2.50]\n}}",
        );
        assert!(!e.envelope.contains(['\n', '\r']), "{}", e.envelope);
        assert!(
            e.envelope
                .ends_with(r#""data":{"a b":"x\n\"y\\","n":[1,2.50]}}"#),
            "{}",
            e.envelope
        );
        let v: Value = serde_json::from_str(&e.envelope).unwrap_or_default();
        assert_eq!(v["data"]["a b"], "x\n\"y\\");
    }

    #[test]
    fn bad_publishes_are_refused_with_the_reason() {
        assert!(matches!(
            refused(r#"{"type":"shop.invoice.created","data":1}"#),
            Refused::NotOwned(_)
        ));
        assert!(matches!(
            refused(r#"{"type":"billing","data":1}"#),
            Refused::Invalid(_)
        ));
        assert!(
            matches!(refused(r#"{"type":"billing.x"}"#), Refused::Invalid(m) if m.contains("missing field `data`"))
        );
        assert!(matches!(
            refused(r#"{"type":"billing.x","data":1,"extra":2}"#),
            Refused::Invalid(_)
        ));
        assert!(matches!(
            refused(r#"{"type":"billing.x","data":1,"id":"a b"}"#),
            Refused::Invalid(_)
        ));
        assert!(matches!(
            refused(r#"{"type":"billing.x","data":1,"tenant":""}"#),
            Refused::Invalid(_)
        ));
        assert!(matches!(refused("not json"), Refused::Invalid(_)));
        let big = format!(
            r#"{{"type":"billing.x","data":"{}"}}"#,
            "a".repeat(MAX_DATA_BYTES)
        );
        assert!(matches!(refused(&big), Refused::TooLarge(_)));
    }
}
