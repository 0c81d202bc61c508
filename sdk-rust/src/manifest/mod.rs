//! The plugin manifest (`plugin.yaml`): typed form, loading, validation and normalization.
//!
//! ```text
//!  bytes ──source::parse──▶ JSON value ──validate──▶ Manifest (normalized) ──▶ JSON
//!          size, UTF-8,      (YAML or JSON)   schema + rules        capabilities sorted,
//!          duplicate keys,                    every problem with    defaults filled in,
//!          bounded work                       its JSON pointer      version as a string
//! ```
//!
//! The JSON Schema in `schemas/plugin.schema.json` is the single source of truth for the
//! document's shape; [`validate`] adds the rules a schema cannot say (uniqueness across list
//! items, prefixes that depend on `name`, ranges that must parse, `configSchema` against the
//! meta-schema). Compatibility with a given core is judged separately by [`crate::compat`],
//! because the core answers it with its own status (422) after validation (400).

mod jobs;
pub mod route;
mod source;
mod subscriptions;
mod suggest;
mod validate;
mod webhooks;

use semver::Version;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::capability::Capability;
use crate::range::Range;

pub use source::{
    Format, MAX_MANIFEST_BYTES, MAX_NODES, SourceError, SourceErrorKind, parse as parse_document,
    too_large,
};
pub use validate::{
    Problem, Report, is_plugin_name, schema, validate, validate_document, validate_value_against,
};

/// The manifest schema (`schemas/plugin.schema.json`), as shipped in this crate.
pub const SCHEMA_JSON: &str = include_str!("../../../schemas/plugin.schema.json");

/// Default `ui.remotePath`.
pub const DEFAULT_REMOTE_PATH: &str = "/mf/remoteEntry.js";
/// Default `endpoints.basePath`.
pub const DEFAULT_BASE_PATH: &str = "/api";
/// Default `health.livenessPath`.
pub const DEFAULT_LIVENESS_PATH: &str = "/healthz";
/// Default `health.readinessPath`.
pub const DEFAULT_READINESS_PATH: &str = "/readyz";

/// A parsed document, with what validation needs to know about its source text.
#[derive(Clone, Debug, PartialEq)]
pub struct Document {
    /// The document as a JSON value.
    pub value: Value,
    /// When `version` was written as a number (`version: 1.10`), the text as written, so the
    /// hint can say `"1.10.0"` rather than the float's `1.1`.
    pub version_text: Option<String>,
}

impl Document {
    /// Parses bytes (YAML or JSON) into a document.
    pub fn parse(bytes: &[u8], format: Format) -> Result<Document, SourceError> {
        let value = source::parse(bytes, format)?;
        let version_text = match (format, value.get("version")) {
            (Format::Yaml, Some(Value::Number(_))) => yaml_scalar_text(bytes, "version"),
            (_, Some(Value::Number(n))) => Some(n.to_string()),
            _ => None,
        };
        Ok(Document {
            value,
            version_text,
        })
    }
}

/// The text of a top-level scalar as written in YAML (serde's YAML reader hands plain scalars
/// to string fields verbatim).
fn yaml_scalar_text(bytes: &[u8], key: &str) -> Option<String> {
    #[derive(Deserialize)]
    struct Probe {
        version: Option<String>,
    }
    debug_assert_eq!(key, "version");
    let text = std::str::from_utf8(bytes).ok()?;
    serde_norway::from_str::<Probe>(text).ok()?.version
}

/// A valid plugin manifest, in normalized form: capabilities sorted and de-duplicated, every
/// default filled in. Serializing it gives the normalized JSON the core stores and `GET
/// /manifest` returns.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Manifest {
    /// Unique plugin name (`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`, at most 63 characters).
    pub name: String,
    /// SemVer version of the plugin.
    pub version: Version,
    /// Ranges of core and SDK versions the plugin works with.
    pub compat: Compat,
    /// Requested capabilities, sorted, without duplicates.
    #[serde(default)]
    pub capabilities: Vec<Capability>,
    /// The Module Federation UI.
    pub ui: Ui,
    /// The plugin's own API.
    #[serde(default)]
    pub endpoints: Endpoints,
    /// Probe paths.
    #[serde(default)]
    pub health: Health,
    /// JSON Schema of the plugin's configuration, checked against the meta-schema.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_schema: Option<Value>,
    /// Secret names the plugin may read.
    #[serde(default)]
    pub secrets: Vec<String>,
    /// Network permissions.
    #[serde(default)]
    pub permissions: Permissions,
    /// Events the plugin receives.
    #[serde(default, skip_serializing_if = "Events::is_empty")]
    pub events: Events,
    /// Jobs the core runs on a schedule (capability `jobs:schedule`), defaults filled in.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub jobs: Vec<crate::jobs::JobSpec>,
    /// Public endpoints senders POST to (capability `webhooks:ingest`), defaults filled in.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub webhooks: Vec<crate::webhooks::Webhook>,
}

/// `compat`: npm-style ranges.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Compat {
    /// Core plugin API range (required).
    pub core: Range,
    /// Backend SDK protocol range.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_sdk: Option<Range>,
    /// Frontend SDK range.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frontend_sdk: Option<Range>,
}

/// `ui`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Ui {
    /// How the shell loads the UI.
    #[serde(default)]
    pub mode: UiMode,
    /// Path of `remoteEntry.js` on the plugin's service.
    #[serde(default = "default_remote_path")]
    pub remote_path: String,
    /// What the UI adds to the shell.
    #[serde(default)]
    pub contributions: Contributions,
}

/// `ui.mode`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum UiMode {
    /// A webpack Module Federation remote (the only mode).
    #[default]
    ModuleFederation,
}

/// `ui.contributions`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Contributions {
    /// Panels.
    #[serde(default)]
    pub panels: Vec<Panel>,
    /// Routes.
    #[serde(default)]
    pub routes: Vec<Route>,
}

/// One panel.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Panel {
    /// `<plugin name>.<local id>`, unique across plugins.
    pub id: String,
    /// Shown as text above the panel.
    pub title: String,
}

/// One route.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// Client-side path, starting with `/`, unique across plugins.
    pub path: String,
    /// What renders the page: `Module#Export`, or a bare export of `./Routes`
    /// ([`route::component`] splits it).
    pub component: String,
}

/// `endpoints`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Endpoints {
    /// Prefix of the plugin's API on its service.
    #[serde(default = "default_base_path")]
    pub base_path: String,
}

impl Default for Endpoints {
    fn default() -> Self {
        Endpoints {
            base_path: default_base_path(),
        }
    }
}

/// `health`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Health {
    /// Liveness path.
    #[serde(default = "default_liveness_path")]
    pub liveness_path: String,
    /// Readiness path (probed by the core).
    #[serde(default = "default_readiness_path")]
    pub readiness_path: String,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            liveness_path: default_liveness_path(),
            readiness_path: default_readiness_path(),
        }
    }
}

/// `permissions`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Permissions {
    /// Network permissions.
    #[serde(default)]
    pub network: Network,
}

/// `permissions.network`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Network {
    /// Allowed `host:port` destinations.
    #[serde(default)]
    pub egress_allow: Vec<String>,
}

/// `events`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Events {
    /// Subscriptions (capability `events:subscribe`).
    #[serde(default)]
    pub subscribe: Vec<Subscription>,
}

impl Events {
    /// Whether nothing is declared (then `events` is left out of the normalized form).
    pub fn is_empty(&self) -> bool {
        self.subscribe.is_empty()
    }
}

/// One entry of `events.subscribe`: events whose type matches `type`, delivered to the
/// backend's `path` or to the plugin's UI (`shell: true`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Subscription {
    /// Event type pattern: `*` one segment, a last `>` the rest.
    #[serde(rename = "type")]
    pub pattern: String,
    /// Backend delivery: `POST basePath + path`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Delivery to the plugin's UI (`sdk.events.subscribe`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub shell: bool,
    /// Backend delivery in the order events were accepted, per source (default); `false` lets
    /// up to `maxInFlight` deliveries run at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ordered: Option<bool>,
    /// Deliveries at once when `ordered` is `false` (1-256, default 16).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_in_flight: Option<u32>,
}

/// Default in-flight window of a subscription that opts out of ordering.
pub const DEFAULT_MAX_IN_FLIGHT: u32 = 16;

impl Subscription {
    /// Whether deliveries keep the order events were accepted in, per source.
    pub fn is_ordered(&self) -> bool {
        self.ordered.unwrap_or(true)
    }

    /// How many deliveries may run at once: 1 per source when ordered, else the window.
    pub fn window(&self) -> u32 {
        if self.is_ordered() {
            1
        } else {
            self.max_in_flight.unwrap_or(DEFAULT_MAX_IN_FLIGHT)
        }
    }
}

fn default_remote_path() -> String {
    DEFAULT_REMOTE_PATH.to_string()
}
fn default_base_path() -> String {
    DEFAULT_BASE_PATH.to_string()
}
fn default_liveness_path() -> String {
    DEFAULT_LIVENESS_PATH.to_string()
}
fn default_readiness_path() -> String {
    DEFAULT_READINESS_PATH.to_string()
}

// === impl Manifest ===

impl Manifest {
    /// Reads and validates a manifest from YAML or JSON bytes.
    pub fn from_bytes(bytes: &[u8], format: Format) -> Result<Manifest, LoadError> {
        let doc = Document::parse(bytes, format).map_err(LoadError::Source)?;
        validate_document(&doc)
            .into_result()
            .map_err(LoadError::Invalid)
    }

    /// The Module Federation container name the remote must define: `plugin_<name>` with `-`
    /// replaced by `_`.
    pub fn scope(&self) -> String {
        format!("plugin_{}", self.name.replace('-', "_"))
    }

    /// Every capability the manifest requests: the ones `capabilities` lists, plus the ones its
    /// declarations request by being there (panels `ui:panel`, routes `ui:route`, subscriptions
    /// `events:subscribe`, jobs `jobs:schedule`), sorted and without duplicates. A registration token must grant all
    /// of them.
    pub fn requested_capabilities(&self) -> Vec<Capability> {
        let mut all = self.capabilities.clone();
        if !self.ui.contributions.panels.is_empty() {
            all.push(Capability::UiPanel);
        }
        if !self.ui.contributions.routes.is_empty() {
            all.push(Capability::UiRoute);
        }
        if !self.events.subscribe.is_empty() {
            all.push(Capability::EventsSubscribe);
        }
        if !self.jobs.is_empty() {
            all.push(Capability::JobsSchedule);
        }
        if !self.webhooks.is_empty() {
            all.push(Capability::WebhooksIngest);
        }
        all.sort_unstable();
        all.dedup();
        all
    }

    /// The normalized JSON form.
    pub fn to_json(&self) -> Value {
        // Serializing these types cannot fail: every map key is a string and every number is
        // finite; fall back to null rather than panic should that ever change.
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    /// Puts the manifest in normalized form (idempotent).
    fn normalize(&mut self) {
        self.capabilities.sort_unstable();
        self.capabilities.dedup();
        for hook in &mut self.webhooks {
            hook.normalize();
        }
    }
}

/// Why [`Manifest::from_bytes`] failed.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The bytes are not a readable YAML/JSON document.
    #[error("{0}")]
    Source(SourceError),
    /// The document is not a valid manifest; every problem is listed.
    #[error("{} problem(s): {}", .0.len(), .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<Problem>),
}
