//! What the admin API shows of a plugin: one typed view, the shape `schemas/openapi.yaml`
//! documents as `Plugin`, so the wire form is written once.

use serde::Serialize;

use crate::model::{Condition, Disabled, ManifestJson, PluginRecord};
use crate::registry::ProbeStats;

/// A plugin as `GET /api/plugins/{name}` (and every admin write) returns it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct PluginView<'a> {
    name: &'a str,
    state: &'static str,
    /// `null` while `Installed` (no version registered yet).
    version: Option<&'a str>,
    /// The version the shell is shown, if any.
    serving_version: Option<&'a str>,
    enabled: bool,
    disabled: Option<&'a Disabled>,
    conditions: &'a [Condition],
    probe: ProbeStats,
    backend_url: &'a str,
    remote_url: &'a str,
    integrity: Option<&'a str>,
    registered_at: &'a str,
    updated_at: &'a str,
    manifest: &'a ManifestJson,
}

impl<'a> PluginView<'a> {
    /// The view of a record, with the prober's figures.
    pub(super) fn new(rec: &'a PluginRecord, probe: ProbeStats) -> PluginView<'a> {
        PluginView {
            name: &rec.name,
            state: rec.state.as_str(),
            version: (!rec.current.version.is_empty()).then_some(rec.current.version.as_str()),
            serving_version: rec.exposed().map(|d| d.version.as_str()),
            enabled: rec.disabled.is_none(),
            disabled: rec.disabled.as_ref(),
            conditions: &rec.conditions,
            probe,
            backend_url: &rec.current.backend_url,
            remote_url: &rec.current.remote_url,
            integrity: rec.current.integrity.as_deref(),
            registered_at: &rec.current.registered_at,
            updated_at: &rec.updated_at,
            manifest: &rec.current.manifest,
        }
    }
}

/// `GET /api/plugins`.
#[derive(Debug, Serialize)]
pub(super) struct PluginList<'a> {
    pub(super) items: Vec<PluginView<'a>>,
}
