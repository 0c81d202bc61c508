//! Domain types: plugin records, states, conditions, audit events, minted tokens. The
//! transitions in [`crate::transition`] change records; the core's stores persist them.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Lifecycle state of a plugin (docs/api.md, Lifecycle).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum State {
    /// Listed by an admin or static config, not yet registered.
    Installed,
    /// Registered; waiting for its probes to pass.
    Registering,
    /// Probes pass; exposed to the shell.
    Ready,
    /// Was ready, probes failing (or its remote changed); hidden.
    Degraded,
    /// Cut off by an admin; hidden, not probed, proxy refuses.
    Disabled,
}

impl State {
    /// Every state, for metrics.
    pub const ALL: [State; 5] = [
        State::Installed,
        State::Registering,
        State::Ready,
        State::Degraded,
        State::Disabled,
    ];

    /// The name used in the API and in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Installed => "Installed",
            State::Registering => "Registering",
            State::Ready => "Ready",
            State::Degraded => "Degraded",
            State::Disabled => "Disabled",
        }
    }
}

/// Reasons a condition can carry: a fixed, documented set (docs/api.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reason {
    /// The core accepted the registration.
    RegistrationAccepted,
    /// Declared in the core's config, not registered yet (state `Installed`).
    AwaitingRegistration,
    /// Both probes passed.
    Passed,
    /// The first probes have not run yet.
    AwaitingProbe,
    /// The plugin's readiness endpoint failed.
    ReadinessProbeFailed,
    /// The remote entry could not be fetched.
    RemoteEntryUnreachable,
    /// The remote entry's bytes changed without a version change.
    RemoteEntryChanged,
    /// The shell reported that the remote failed to load or mount.
    UiLoadFailed,
    /// An admin disabled the plugin.
    DisabledByAdmin,
    /// An admin enabled the plugin.
    EnabledByAdmin,
    /// Enabled because nobody disabled it: a plugin starts enabled.
    EnabledByDefault,
    /// The plugin's compat ranges do not include this core.
    IncompatibleCore,
}

/// A Kubernetes-style condition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// `Registered`, `Ready`, `Enabled`, `UiLoaded`.
    #[serde(rename = "type")]
    pub kind: String,
    /// `True` or `False`.
    pub status: String,
    /// One of [`Reason`].
    pub reason: Reason,
    /// What happened, for people.
    pub message: String,
    /// When `status` last changed (RFC 3339).
    pub last_transition_time: String,
}

/// A normalized manifest, kept as its compact JSON text and shared by reference. A parsed
/// `serde_json::Value` costs about ten times the memory (5 KB for a small manifest, 50 MB for
/// 10,000 plugins), and the core reads only a few fields of it, rarely: it parses those on
/// demand. Stored and served as the JSON object it is.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ManifestJson(std::sync::Arc<serde_json::value::RawValue>);

impl ManifestJson {
    /// The compact text of `manifest`.
    pub fn new(manifest: &Value) -> Result<ManifestJson, serde_json::Error> {
        Ok(ManifestJson(
            serde_json::value::to_raw_value(manifest)?.into(),
        ))
    }

    /// The JSON text.
    pub fn text(&self) -> &str {
        self.0.get()
    }

    /// The fields of the manifest that `T` names (the others are skipped, not built).
    pub fn fields<'a, T: Deserialize<'a> + Default>(&'a self) -> T {
        serde_json::from_str(self.0.get()).unwrap_or_default()
    }
}

impl PartialEq for ManifestJson {
    fn eq(&self, other: &ManifestJson) -> bool {
        self.text() == other.text()
    }
}

/// One registered version of a plugin, as accepted.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Deployment {
    /// SemVer of this version.
    pub version: String,
    /// The normalized manifest; shared (not copied) between the current and serving versions
    /// and every reader.
    pub manifest: ManifestJson,
    /// Where the core reaches the plugin's service.
    pub backend_url: String,
    /// The plugin's `remoteEntry.js`.
    pub remote_url: String,
    /// `sha384-...` of the remote entry as first fetched under this version; a change of bytes
    /// under the same version withdraws the plugin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub integrity: Option<String>,
    /// When it was registered (RFC 3339).
    pub registered_at: String,
    /// The `jti` of the token it registered with.
    pub token_id: String,
}

/// An admin's kill switch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Disabled {
    /// Why, as the admin wrote it.
    pub reason: String,
    /// Who (the admin token's `jti`).
    pub by: String,
    /// When (RFC 3339).
    pub at: String,
}

/// What the core knows of one plugin; persisted as one record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PluginRecord {
    /// The plugin's name.
    pub name: String,
    /// Lifecycle state.
    pub state: State,
    /// The latest registered version (the one being probed).
    pub current: Deployment,
    /// The version the shell is shown: the last one that became Ready. It stays while a newer
    /// `current` is Registering.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serving: Option<Deployment>,
    /// Set while an admin has the plugin disabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled: Option<Disabled>,
    /// Conditions, one per type.
    pub conditions: Vec<Condition>,
    /// Last change (RFC 3339).
    pub updated_at: String,
}

impl PluginRecord {
    /// Sets the condition of `kind`, keeping `lastTransitionTime` when the status is unchanged.
    pub fn set_condition(
        &mut self,
        kind: &str,
        status: bool,
        reason: Reason,
        message: impl Into<String>,
        now: &str,
    ) {
        let status = if status { "True" } else { "False" }.to_string();
        let message = message.into();
        match self.conditions.iter_mut().find(|c| c.kind == kind) {
            Some(c) => {
                if c.status != status {
                    c.last_transition_time = now.to_string();
                }
                c.status = status;
                c.reason = reason;
                c.message = message;
            }
            None => self.conditions.push(Condition {
                kind: kind.to_string(),
                status,
                reason,
                message,
                last_transition_time: now.to_string(),
            }),
        }
    }

    /// The deployment the shell sees, if any: the serving version of an enabled plugin that is
    /// Ready, or Registering a newer version.
    pub fn exposed(&self) -> Option<&Deployment> {
        match self.state {
            State::Ready | State::Registering if self.disabled.is_none() => self.serving.as_ref(),
            _ => None,
        }
    }
}

/// A token the core minted, as the token list shows it: who it is for and what it grants,
/// never the token itself (the core does not keep it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IssuedToken {
    /// Token id (`jti`), what revocation names.
    pub jti: String,
    /// `registration` or `admin`.
    pub kind: String,
    /// The plugin a registration token registers (`admin` for admin tokens).
    pub subject: String,
    /// Capabilities granted (registration tokens).
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// Namespace the plugin's URLs must live in (cluster mode), when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// When it was minted (RFC 3339).
    pub issued: String,
    /// When it expires (RFC 3339); `None`: never.
    #[serde(default)]
    pub expires: Option<String>,
    /// Who minted it (`admin:<jti>`, `cli`, `core`).
    pub issued_by: String,
    /// The key id it was signed with (`None`: minted before keys were recorded), so retiring
    /// a key can name the live tokens that depend on it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
}

impl IssuedToken {
    /// The audit event's reason for minting it (never the token).
    pub fn audit_reason(&self) -> String {
        format!(
            "{} token {} issued for {}",
            self.kind, self.jti, self.subject
        )
    }
}

/// One audited decision.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditEvent {
    /// Sequence number, assigned by the store.
    #[serde(default)]
    pub id: i64,
    /// When (RFC 3339).
    pub time: String,
    /// Who: `admin:<jti>`, `plugin:<name>`, `prober`, `shell`.
    pub actor: String,
    /// What: `register`, `disable`, `enable`, `delete`, `transition`, `revoke-token`, ...
    pub action: String,
    /// Which plugin, when about one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin: Option<String>,
    /// Why.
    pub reason: String,
    /// The request that caused it, when one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}
