//! Domain types, from the lifecycle crate (records, states, conditions, audit events), the
//! clock the core stamps them with, the randomness its backoffs are jittered with, and where a
//! deployment's own API lives.

pub use tessera_lifecycle::model::*;
pub use tessera_sdk::time::now_rfc3339;

/// Milliseconds since the epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// A uniform number in [0, 1), for jitter.
pub fn unit_random() -> f64 {
    let mut b = [0u8; 4];
    let _ = getrandom::fill(&mut b);
    f64::from(u32::from_le_bytes(b)) / (f64::from(u32::MAX) + 1.0)
}

/// The part of a manifest that says where a plugin's own API lives.
#[derive(Default, serde::Deserialize)]
struct EndpointsField {
    #[serde(default)]
    endpoints: BasePathField,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct BasePathField {
    #[serde(default = "default_base_path")]
    base_path: String,
}

impl Default for BasePathField {
    fn default() -> Self {
        BasePathField {
            base_path: default_base_path(),
        }
    }
}

fn default_base_path() -> String {
    tessera_sdk::manifest::DEFAULT_BASE_PATH.to_string()
}

/// A deployment's `endpoints.basePath` (the default when its manifest has none).
pub fn base_path(d: &Deployment) -> String {
    d.manifest.fields::<EndpointsField>().endpoints.base_path
}

/// `backendUrl + basePath + path` of a deployment, with one slash between each: where the core
/// calls a plugin's own API (event deliveries, job runs).
pub fn plugin_url(d: &Deployment, path: &str) -> String {
    join_url(&d.backend_url, &base_path(d), path)
}

/// `base + prefix + path`, with one slash between each.
pub fn join_url(base: &str, prefix: &str, path: &str) -> String {
    let mut url = base.trim_end_matches('/').to_string();
    for part in [prefix.trim_matches('/'), path.trim_start_matches('/')] {
        if !part.is_empty() {
            url.push('/');
            url.push_str(part);
        }
    }
    url
}

/// A string cut to at most `max` bytes on a character boundary (for values that go into
/// bounded fields: an Event's note, a run's kept body).
pub fn clip(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}
