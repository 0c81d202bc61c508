//! Random mutations of a JSON document, for property tests: replace a value somewhere, remove
//! one, add a key, or duplicate a list item, with values drawn from shapes that manifests
//! actually contain (so the mutations reach deep rules, not only the first type check).

use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::{Map, Value, json};

/// One edit of a document.
#[derive(Clone, Debug)]
pub enum Edit {
    /// Put `value` where the chosen pointer is.
    Replace(Index, Value),
    /// Remove the chosen value from its parent.
    Remove(Index),
    /// Add `key: value` to the chosen object (or push `value` to the chosen array).
    Add(Index, String, Value),
    /// Repeat the chosen array item at the end of its array.
    Duplicate(Index),
}

/// Strings that mean something somewhere in a manifest, and some that are hostile.
const WORDS: &[&str] = &[
    "",
    "hello",
    "Hello",
    "hello.panel",
    "1.4",
    "1.4.0",
    "1.0.0-rc.1",
    "v1.2.3",
    "^1.0",
    ">=2.1 <3.0",
    "1.2 - 1.8",
    "1.x || 2.x",
    "<<2",
    "*",
    "ui:panel",
    "ui:route",
    "db:write",
    "/",
    "/x",
    "x",
    "/mf/remoteEntry.js",
    "ModuleFederation",
    "host:443",
    "host:0",
    "host:99999",
    "A_B",
    "a-b",
    "#/$defs/x",
    "https://127.0.0.1:9/x.json",
    "object",
    "string",
    "([",
    "~",
    "é",
    "\u{0}",
    "💥",
];

/// A JSON value of manifest-like shape.
pub fn value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        (-1.0e6..1.0e6f64).prop_map(Value::from),
        prop::sample::select(WORDS).prop_map(Value::from),
        "[a-zA-Z0-9:./$#^~<>= -]{0,24}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((key(), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<String, Value>>())),
        ]
    })
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(
            &[
                "name",
                "version",
                "compat",
                "core",
                "backend_sdk",
                "capabilities",
                "ui",
                "mode",
                "remotePath",
                "contributions",
                "panels",
                "routes",
                "id",
                "title",
                "path",
                "component",
                "configSchema",
                "type",
                "properties",
                "$ref",
                "$schema",
                "pattern",
                "secrets",
                "permissions",
                "network",
                "egressAllow",
                "extra",
            ][..]
        )
        .prop_map(String::from),
        "[a-z$]{1,8}",
    ]
}

/// Up to `max` edits.
pub fn edits(max: usize) -> impl Strategy<Value = Vec<Edit>> {
    prop::collection::vec(
        prop_oneof![
            3 => (any::<Index>(), value()).prop_map(|(i, v)| Edit::Replace(i, v)),
            2 => any::<Index>().prop_map(Edit::Remove),
            2 => (any::<Index>(), key(), value()).prop_map(|(i, k, v)| Edit::Add(i, k, v)),
            1 => any::<Index>().prop_map(Edit::Duplicate),
        ],
        1..=max,
    )
}

/// Applies edits in order.
pub fn apply(doc: &mut Value, edits: &[Edit]) {
    for edit in edits {
        let pointers = pointers(doc);
        match edit {
            Edit::Replace(i, v) => {
                if let Some(slot) = doc.pointer_mut(i.get(pointers.as_slice()).as_str()) {
                    *slot = v.clone();
                }
            }
            Edit::Remove(i) => {
                let p = i.get(pointers.as_slice()).clone();
                if let Some((parent, last)) = p.rsplit_once('/') {
                    match doc.pointer_mut(parent) {
                        Some(Value::Object(o)) => {
                            o.remove(&unescape(last));
                        }
                        Some(Value::Array(a)) => {
                            if let Ok(n) = last.parse::<usize>()
                                && n < a.len()
                            {
                                a.remove(n);
                            }
                        }
                        _ => {}
                    }
                }
            }
            Edit::Add(i, k, v) => match doc.pointer_mut(i.get(pointers.as_slice()).as_str()) {
                Some(Value::Object(o)) => {
                    o.insert(k.clone(), v.clone());
                }
                Some(Value::Array(a)) => a.push(v.clone()),
                _ => {}
            },
            Edit::Duplicate(i) => {
                let p = i.get(pointers.as_slice()).clone();
                if let Some((parent, _)) = p.rsplit_once('/') {
                    let item = doc.pointer(&p).cloned();
                    if let (Some(Value::Array(a)), Some(item)) = (doc.pointer_mut(parent), item) {
                        a.push(item);
                    }
                }
            }
        }
    }
}

/// Every JSON pointer in `doc`, the root (`""`) first.
pub fn pointers(doc: &Value) -> Vec<String> {
    fn walk(v: &Value, at: String, out: &mut Vec<String>) {
        out.push(at.clone());
        match v {
            Value::Object(o) => {
                for (k, child) in o {
                    walk(
                        child,
                        format!("{at}/{}", k.replace('~', "~0").replace('/', "~1")),
                        out,
                    );
                }
            }
            Value::Array(a) => {
                for (i, child) in a.iter().enumerate() {
                    walk(child, format!("{at}/{i}"), out);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(doc, String::new(), &mut out);
    out
}

fn unescape(s: &str) -> String {
    s.replace("~1", "/").replace("~0", "~")
}

/// A valid manifest touching every part of the contract, as the starting point.
pub fn valid_manifest() -> Value {
    json!({
        "name": "analytics",
        "version": "1.4.0",
        "compat": {"core": ">=2.0 <3.0", "backend_sdk": "^1.0", "frontend_sdk": "~1.1"},
        "capabilities": ["ui:panel", "ui:route", "http:outbound", "secrets:read"],
        "ui": {
            "mode": "ModuleFederation",
            "remotePath": "/mf/remoteEntry.js",
            "contributions": {
                "panels": [{"id": "analytics.overview", "title": "Overview"}],
                "routes": [{"path": "/analytics", "component": "Home"}]
            }
        },
        "endpoints": {"basePath": "/api"},
        "health": {"livenessPath": "/healthz", "readinessPath": "/readyz"},
        "configSchema": {
            "type": "object",
            "properties": {"days": {"type": "integer", "minimum": 1}, "c": {"$ref": "#/$defs/c"}},
            "$defs": {"c": {"type": "string", "pattern": "^https://"}}
        },
        "secrets": ["DB_URL"],
        "permissions": {"network": {"egressAllow": ["api.segment.io:443"]}}
    })
}
