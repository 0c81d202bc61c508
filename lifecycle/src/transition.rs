//! The transitions: one function an event, each `(record, event, thresholds, now) ->
//! Option<Step>`. A step is the record as the event leaves it plus the audit events that say who
//! changed what and why; `None` means the event changes nothing worth writing (an idempotent
//! repeat, a stale probe round, a probe outcome that only moves counters).

use serde_json::json;

use crate::claims::Claims;
use crate::condition;
use crate::model::{AuditEvent, Deployment, Disabled, ManifestJson, PluginRecord, Reason, State};
use crate::probe::{ProbeStats, Round, Thresholds};
use crate::{Refusal, claims::Conflict};

/// Who asked, for the audit log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Actor {
    /// `admin:<jti>`, `plugin:<name>`, `prober`, `shell`.
    pub who: String,
    /// The request id, when a request caused it.
    pub request_id: Option<String>,
}

impl Actor {
    /// The prober.
    pub fn prober() -> Actor {
        Actor {
            who: "prober".into(),
            request_id: None,
        }
    }

    /// Whether this is an admin (whose decisions the shell is told at once).
    pub fn is_admin(&self) -> bool {
        self.who.starts_with("admin:")
    }
}

/// What changes hands when a plugin registers (already admitted by the core).
#[derive(Clone, Debug, PartialEq)]
pub struct Registration {
    /// Plugin name.
    pub name: String,
    /// Version.
    pub version: String,
    /// Normalized manifest.
    pub manifest: ManifestJson,
    /// Service URL.
    pub backend_url: String,
    /// Remote entry URL.
    pub remote_url: String,
    /// Token id.
    pub token_id: String,
}

/// What an event did to a record.
#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    /// The record as the event leaves it.
    pub record: PluginRecord,
    /// Why, for the audit log (possibly none: a change of wording only).
    pub events: Vec<AuditEvent>,
    /// Probe rounds counted so far no longer count towards the thresholds.
    pub reset_probes: bool,
}

impl Step {
    fn new(record: PluginRecord, events: Vec<AuditEvent>) -> Step {
        Step {
            record,
            events,
            reset_probes: false,
        }
    }
}

// === registration ===

/// A registration is refused when another enabled plugin holds one of its panel ids or route
/// paths. `version_of` names the holder's current version, for the message.
pub fn check_claims(
    claims: &Claims,
    reg: &Registration,
    version_of: impl Fn(&str) -> Option<String>,
) -> Result<(), Refusal> {
    match claims.conflict(&reg.name, &reg.manifest) {
        None => Ok(()),
        Some(c) => Err(Refusal::ContributionConflict(Conflict {
            owner_version: version_of(&c.owner).unwrap_or_default(),
            ..c
        })),
    }
}

/// `Installed`/none/any -> `Registering` (a `Disabled` plugin stays `Disabled`). Re-registering
/// the same name, version, manifest and URLs changes nothing (`None`) unless the remote entry was
/// withdrawn for changed bytes. A Ready plugin's serving version stays exposed while a new
/// version is probed; otherwise nothing is exposed until the probes pass.
pub fn register(
    existing: Option<PluginRecord>,
    reg: &Registration,
    actor: &Actor,
    now: &str,
) -> Option<Step> {
    let deployment = Deployment {
        version: reg.version.clone(),
        manifest: reg.manifest.clone(),
        backend_url: reg.backend_url.clone(),
        remote_url: reg.remote_url.clone(),
        integrity: None,
        registered_at: now.to_string(),
        token_id: reg.token_id.clone(),
    };
    let (record, why) = match existing {
        Some(rec)
            if rec.state != State::Installed
                && rec.current.version == reg.version
                && rec.current.manifest == reg.manifest
                && rec.current.backend_url == reg.backend_url
                && rec.current.remote_url == reg.remote_url
                && !remote_changed(&rec) =>
        {
            return None;
        }
        Some(mut rec) => {
            let same_version = rec.current.version == reg.version;
            rec.current = deployment;
            if same_version || !matches!(rec.state, State::Ready | State::Registering) {
                rec.serving = None;
            }
            if rec.state != State::Disabled {
                rec.state = State::Registering;
            }
            mark_registered(&mut rec, &reg.version, now);
            rec.updated_at = now.to_string();
            let why = if same_version {
                format!("re-registered version {}", reg.version)
            } else {
                format!(
                    "new version {} (was {})",
                    reg.version,
                    rec.serving.as_ref().map_or("none", |s| s.version.as_str())
                )
            };
            (rec, why)
        }
        None => {
            let mut rec = new_record(&reg.name, State::Registering, deployment, now);
            mark_registered(&mut rec, &reg.version, now);
            start_enabled(&mut rec, now);
            (rec, format!("first registration, version {}", reg.version))
        }
    };
    let event = audit(actor, "register", &reg.name, why, now);
    Some(Step {
        record,
        events: vec![event],
        reset_probes: true,
    })
}

/// Lists a plugin the admin declared as `Installed` until it registers. Nothing when it is
/// known in another state, or `Installed` with the same `why`.
pub fn install(
    existing: Option<PluginRecord>,
    name: &str,
    backend_url: &str,
    why: &str,
    actor: &Actor,
    now: &str,
) -> Result<Option<Step>, Refusal> {
    let (mut rec, events) = match existing {
        Some(rec) if rec.state != State::Installed => return Ok(None),
        Some(rec) => {
            let same = rec
                .conditions
                .iter()
                .any(|c| c.kind == condition::REGISTERED && c.message == why);
            if same {
                return Ok(None);
            }
            (rec, Vec::new())
        }
        None => {
            let manifest = ManifestJson::new(&json!({ "name": name }))
                .map_err(|e| Refusal::Invalid(e.to_string()))?;
            let deployment = Deployment {
                version: String::new(),
                manifest,
                backend_url: backend_url.to_string(),
                remote_url: String::new(),
                integrity: None,
                registered_at: now.to_string(),
                token_id: String::new(),
            };
            let mut rec = new_record(name, State::Installed, deployment, now);
            start_enabled(&mut rec, now);
            let event = audit(actor, "install", name, why.to_string(), now);
            (rec, vec![event])
        }
    };
    rec.set_condition(
        condition::REGISTERED,
        false,
        Reason::AwaitingRegistration,
        why,
        now,
    );
    rec.updated_at = now.to_string();
    Ok(Some(Step::new(rec, events)))
}

// === admin decisions ===

/// Any state -> `Disabled` (the kill switch): hidden, not probed, its claims released.
pub fn disable(mut rec: PluginRecord, reason: &str, actor: &Actor, now: &str) -> Step {
    rec.state = State::Disabled;
    rec.disabled = Some(Disabled {
        reason: reason.to_string(),
        by: actor.who.clone(),
        at: now.to_string(),
    });
    rec.set_condition(
        condition::ENABLED,
        false,
        Reason::DisabledByAdmin,
        reason,
        now,
    );
    edited(rec, actor, "disable", reason.to_string(), now)
}

/// `Disabled` -> `Registering`: probed again (from zero) before it is shown. Nothing for a
/// plugin that is not disabled.
pub fn enable(mut rec: PluginRecord, actor: &Actor, now: &str) -> Option<Step> {
    rec.disabled.as_ref()?;
    rec.disabled = None;
    rec.state = State::Registering;
    rec.serving = None;
    rec.set_condition(
        condition::ENABLED,
        true,
        Reason::EnabledByAdmin,
        "enabled by an admin",
        now,
    );
    rec.set_condition(
        condition::READY,
        false,
        Reason::AwaitingProbe,
        "waiting for probes after being enabled",
        now,
    );
    let mut step = edited(rec, actor, "enable", "enabled".to_string(), now);
    step.reset_probes = true;
    Some(step)
}

/// Accepts a changed remote entry under the same version (after `RemoteEntryChanged`):
/// `Degraded` -> `Registering` (a `Disabled` plugin stays `Disabled`); the next passing probes
/// pin the new bytes. Nothing for a plugin whose remote entry was not withdrawn: clearing the
/// pinned integrity of a healthy plugin would drop it from the shell list, and lifting a
/// plugin degraded by failing probes would show it without a passing probe.
pub fn accept_remote(mut rec: PluginRecord, actor: &Actor, now: &str) -> Option<Step> {
    if !remote_changed(&rec) {
        return None;
    }
    rec.current.integrity = None;
    if rec.state == State::Degraded {
        rec.state = State::Registering;
    }
    rec.set_condition(
        condition::READY,
        false,
        Reason::AwaitingProbe,
        "remote entry accepted by an admin; waiting for probes",
        now,
    );
    Some(edited(
        rec,
        actor,
        "accept-remote",
        "changed remote entry accepted".to_string(),
        now,
    ))
}

/// What a shell saw when it loaded a remote (`UiLoaded`); written only when the outcome
/// changes, not for every page load.
pub fn report_ui(
    mut rec: PluginRecord,
    version: &str,
    ok: bool,
    message: &str,
    actor: &Actor,
    now: &str,
) -> Option<Step> {
    let ui_loaded = |rec: &PluginRecord| {
        rec.conditions
            .iter()
            .find(|c| c.kind == condition::UI_LOADED)
            .map(|c| (c.status.clone(), c.reason))
    };
    let was = ui_loaded(&rec);
    let reason = if ok {
        Reason::Passed
    } else {
        Reason::UiLoadFailed
    };
    let text = format!("version {version}: {message}");
    rec.set_condition(condition::UI_LOADED, ok, reason, text.clone(), now);
    (was != ui_loaded(&rec)).then(|| edited(rec, actor, "ui-report", text, now))
}

/// The audit event of forgetting a plugin.
pub fn delete(name: &str, actor: &Actor, now: &str) -> AuditEvent {
    audit(actor, "delete", name, "deleted".to_string(), now)
}

/// The audit event of revoking a token id.
pub fn revoke(jti: &str, actor: &Actor, now: &str) -> AuditEvent {
    event(
        actor,
        "revoke-token",
        None,
        format!("token {jti} revoked"),
        now,
    )
}

/// The audit event of an action outside the plugin lifecycle (an event redriven, a dead
/// letter deleted).
pub fn note(
    actor: &Actor,
    action: &str,
    plugin: Option<&str>,
    reason: String,
    now: &str,
) -> AuditEvent {
    event(actor, action, plugin, reason, now)
}

/// The audit event of minting a token (never the token itself).
pub fn issue(token: &crate::model::IssuedToken, actor: &Actor, now: &str) -> AuditEvent {
    event(actor, "issue-token", None, token.audit_reason(), now)
}

// === probes ===

/// Whether a round concerns the record: its current version, in a state the prober probes.
pub fn probe_applies(rec: &PluginRecord, round: &Round) -> bool {
    rec.current.version == round.version && !matches!(rec.state, State::Disabled | State::Installed)
}

/// Applies one counted probe round (`stats` include it):
/// - bytes that differ from the pinned integrity -> `Degraded` (`RemoteEntryChanged`), withdrawn
///   until the plugin re-registers or an admin accepts them; later rounds do not lift it;
/// - `Registering`/`Degraded` with `stats.consecutive_successes >= success` -> `Ready` (pins
///   the integrity, serves the current version);
/// - `Ready` with `stats.consecutive_failures >= failure` -> `Degraded`;
/// - a failing round of a plugin not Ready updates its `Ready` condition's reason.
///
/// `None` when neither the state nor a condition's (type, status, reason) changed: a probe's
/// message text alone is not written.
pub fn probe(
    mut rec: PluginRecord,
    round: &Round,
    stats: &ProbeStats,
    thresholds: Thresholds,
    now: &str,
) -> Option<Step> {
    if !probe_applies(&rec, round) {
        return None;
    }
    let before = (rec.state, reasons(&rec));
    let prober = Actor::prober();
    let mut events = Vec::new();
    let changed_bytes = matches!(
        (&rec.current.integrity, &round.integrity),
        (Some(a), Some(b)) if a != b
    );
    if remote_changed(&rec) {
        // Withdrawn until re-registered or accepted; probes do not lift it.
    } else if changed_bytes {
        rec.state = State::Degraded;
        if rec
            .serving
            .as_ref()
            .is_some_and(|s| s.version == rec.current.version)
        {
            rec.serving = None;
        }
        let msg = format!(
            "remote entry bytes changed under version {} (was {}, now {}); withdrawn until the plugin re-registers or an admin accepts the new bytes",
            rec.current.version,
            rec.current.integrity.clone().unwrap_or_default(),
            round.integrity.clone().unwrap_or_default()
        );
        rec.set_condition(
            condition::READY,
            false,
            Reason::RemoteEntryChanged,
            msg.clone(),
            now,
        );
        events.push(audit(
            &prober,
            "transition",
            &rec.name,
            format!("Degraded: {msg}"),
            now,
        ));
    } else {
        match (&round.failure, rec.state) {
            (None, State::Registering | State::Degraded)
                if stats.consecutive_successes >= thresholds.success =>
            {
                let from = rec.state;
                rec.state = State::Ready;
                if rec.current.integrity.is_none() {
                    rec.current.integrity = round.integrity.clone();
                }
                rec.serving = Some(rec.current.clone());
                rec.set_condition(
                    condition::READY,
                    true,
                    Reason::Passed,
                    format!(
                        "readiness and remote entry probes pass for version {}",
                        rec.current.version
                    ),
                    now,
                );
                events.push(audit(
                    &prober,
                    "transition",
                    &rec.name,
                    format!("{} -> Ready: probes pass", from.as_str()),
                    now,
                ));
            }
            (Some(f), State::Ready) if stats.consecutive_failures >= thresholds.failure => {
                rec.state = State::Degraded;
                rec.set_condition(
                    condition::READY,
                    false,
                    f.reason,
                    format!(
                        "{} ({} consecutive failures)",
                        f.message, stats.consecutive_failures
                    ),
                    now,
                );
                events.push(audit(
                    &prober,
                    "transition",
                    &rec.name,
                    format!("Ready -> Degraded: {}", f.message),
                    now,
                ));
            }
            (Some(f), State::Registering | State::Degraded) => {
                rec.set_condition(condition::READY, false, f.reason, f.message.clone(), now);
            }
            _ => {}
        }
    }
    if before == (rec.state, reasons(&rec)) {
        return None;
    }
    rec.updated_at = now.to_string();
    Some(Step::new(rec, events))
}

/// Whether a round (not counted yet: `stats` are the figures before it) certainly changes
/// nothing but the counters: a Ready plugin passing with the bytes it was admitted with, a
/// failing round below the threshold, or a plugin already withdrawn for the same reason. The
/// prober's common case, decided without the writer. `false` means: run [`probe`].
pub fn probe_is_quiet(
    rec: &PluginRecord,
    round: &Round,
    stats: &ProbeStats,
    thresholds: Thresholds,
) -> bool {
    if rec.current.version != round.version || remote_changed(rec) {
        return false;
    }
    let ready_reason = rec
        .conditions
        .iter()
        .find(|c| c.kind == condition::READY)
        .map(|c| c.reason);
    match &round.failure {
        None => {
            rec.state == State::Ready
                && rec.current.integrity == round.integrity
                && ready_reason == Some(Reason::Passed)
        }
        Some(f) => {
            let integrity_ok = match (&round.integrity, &rec.current.integrity) {
                (Some(h), Some(i)) => h == i,
                _ => true,
            };
            integrity_ok
                && match rec.state {
                    State::Ready => stats.consecutive_failures + 1 < thresholds.failure,
                    State::Registering | State::Degraded => ready_reason == Some(f.reason),
                    _ => false,
                }
        }
    }
}

// === records written elsewhere ===

/// A record another replica wrote (seen through the store's watch), or its deletion. It
/// replaces what this replica holds only when `newer` (the store's revision says so): an echo
/// of a local write, or an event older than it, changes nothing. No audit: the writer audited.
pub fn external(incoming: Option<PluginRecord>, newer: bool) -> Option<Option<PluginRecord>> {
    newer.then_some(incoming)
}

/// Whether the record is withdrawn for a changed remote entry.
pub fn remote_changed(rec: &PluginRecord) -> bool {
    rec.conditions
        .iter()
        .any(|c| c.kind == condition::READY && c.reason == Reason::RemoteEntryChanged)
}

// === helpers ===

/// A plugin seen for the first time.
fn new_record(name: &str, state: State, current: Deployment, now: &str) -> PluginRecord {
    PluginRecord {
        name: name.to_string(),
        state,
        current,
        serving: None,
        disabled: None,
        conditions: Vec::new(),
        updated_at: now.to_string(),
    }
}

/// A new plugin is enabled, because nobody disabled it.
fn start_enabled(rec: &mut PluginRecord, now: &str) {
    rec.set_condition(
        condition::ENABLED,
        true,
        Reason::EnabledByDefault,
        "enabled (a plugin starts enabled)",
        now,
    );
}

/// Sets the conditions of a freshly accepted registration of `version`. What a shell saw of
/// an earlier registration (`UiLoaded`) no longer applies: it is cleared until a shell loads
/// this one.
fn mark_registered(rec: &mut PluginRecord, version: &str, now: &str) {
    rec.conditions.retain(|c| c.kind != condition::UI_LOADED);
    rec.set_condition(
        condition::REGISTERED,
        true,
        Reason::RegistrationAccepted,
        format!("version {version} registered"),
        now,
    );
    rec.set_condition(
        condition::READY,
        false,
        Reason::AwaitingProbe,
        format!("waiting for the first probes of version {version}"),
        now,
    );
}

fn reasons(rec: &PluginRecord) -> Vec<(String, String, Reason)> {
    rec.conditions
        .iter()
        .map(|c| (c.kind.clone(), c.status.clone(), c.reason))
        .collect()
}

fn edited(mut rec: PluginRecord, actor: &Actor, action: &str, reason: String, now: &str) -> Step {
    rec.updated_at = now.to_string();
    let event = audit(actor, action, &rec.name.clone(), reason, now);
    Step::new(rec, vec![event])
}

fn audit(actor: &Actor, action: &str, plugin: &str, reason: String, now: &str) -> AuditEvent {
    event(actor, action, Some(plugin), reason, now)
}

fn event(
    actor: &Actor,
    action: &str,
    plugin: Option<&str>,
    reason: String,
    now: &str,
) -> AuditEvent {
    AuditEvent {
        id: 0,
        time: now.to_string(),
        actor: actor.who.clone(),
        action: action.to_string(),
        plugin: plugin.map(String::from),
        reason,
        request_id: actor.request_id.clone(),
    }
}

#[cfg(test)]
mod tests;
