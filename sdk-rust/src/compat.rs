//! Compatibility: the versions this core speaks, and whether a manifest's `compat` ranges
//! include them.
//!
//! `compat.core` is required and checked against the core plugin API version;
//! `compat.backend_sdk` and `compat.frontend_sdk` are checked when present. Each miss is one
//! [`CompatMiss`] naming the field, the range and the version, so the core can reject a plugin
//! with every reason at once.

use std::fmt;

use semver::Version;

use serde_json::Value;

use crate::manifest::{Compat, Problem};
use crate::range::Range;

/// The version of the plugin API this core offers (what `compat.core` must include). 2.0.0
/// made `ui.mode`, `ui.remotePath`, `endpoints.basePath` and the `health` paths required and
/// route components `Module#Export`; each plugin-facing surface added later bumps the minor:
/// 2.1.0 events (`POST /api/plugin/v1/events`, `events.subscribe`); 2.2.0 jobs (`jobs`,
/// `PUT`/`DELETE /api/plugin/v1/jobs/{name}`); 2.3.0 secrets (`GET /api/plugin/v1/secrets/{name}`);
/// 2.4.0 webhooks (`webhooks`, `POST /hooks/{plugin}/{name}`); 2.5.0 egress (the forward proxy
/// on `egress.listen`, `permissions.network.egressAllow` enforced).
pub const CORE_PLUGIN_API: Version = Version::new(2, 5, 0);
/// The backend SDK protocol this core speaks (what `compat.backend_sdk` must include). 1.1.0
/// added plugin tokens in the registration answer and call tokens on every call into a plugin
/// (the SDK's `Caller`); 1.2.0 events (`CoreClient::publish_event`, `on_event`); 1.3.0 jobs
/// (`CoreClient::register_job`, `delete_job`, `JobRun`); 1.4.0 secrets
/// (`CoreClient::fetch_secret`); 1.5.0 webhooks (`WebhookDelivery`, call tokens of kind
/// `webhook`); 1.6.0 egress (`CoreClient::http()` through the core's egress proxy).
pub const BACKEND_SDK_PROTOCOL: Version = Version::new(1, 6, 0);
/// The frontend SDK version the shell provides (what `compat.frontend_sdk` must include).
/// 1.1.0 added `ctx.params` (parameterised routes) and `Module#Export` components; 1.2.0
/// `ctx.sdk.http` (the plugin's backend through the core's proxy) and `HttpError`; 1.3.0
/// `ctx.sdk.events.subscribe` receiving the plugin's `shell: true` event subscriptions.
pub const FRONTEND_SDK: Version = Version::new(1, 3, 0);

/// The versions a manifest is judged against.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Versions {
    /// Core plugin API version.
    pub core: Version,
    /// Backend SDK protocol version.
    pub backend_sdk: Version,
    /// Frontend SDK version.
    pub frontend_sdk: Version,
}

impl Default for Versions {
    /// The versions this build of Tessera speaks.
    fn default() -> Self {
        Versions {
            core: CORE_PLUGIN_API,
            backend_sdk: BACKEND_SDK_PROTOCOL,
            frontend_sdk: FRONTEND_SDK,
        }
    }
}

/// Which `compat` field a miss is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompatField {
    /// `compat.core`
    Core,
    /// `compat.backend_sdk`
    BackendSdk,
    /// `compat.frontend_sdk`
    FrontendSdk,
}

impl CompatField {
    /// The field as written in `plugin.yaml` (`compat.core`).
    pub fn field(self) -> &'static str {
        match self {
            CompatField::Core => "compat.core",
            CompatField::BackendSdk => "compat.backend_sdk",
            CompatField::FrontendSdk => "compat.frontend_sdk",
        }
    }

    /// JSON pointer of the field in the manifest (`/compat/core`).
    pub fn pointer(self) -> &'static str {
        match self {
            CompatField::Core => "/compat/core",
            CompatField::BackendSdk => "/compat/backend_sdk",
            CompatField::FrontendSdk => "/compat/frontend_sdk",
        }
    }

    /// What the version on the other side is called in messages.
    pub fn subject(self) -> &'static str {
        match self {
            CompatField::Core => "core plugin API",
            CompatField::BackendSdk => "backend SDK protocol",
            CompatField::FrontendSdk => "frontend SDK",
        }
    }
}

/// One range that does not include the version this core speaks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompatMiss {
    /// The field.
    pub field: CompatField,
    /// The range as the author wrote it.
    pub range: String,
    /// The version it was checked against.
    pub version: Version,
}

impl fmt::Display for CompatMiss {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} \"{}\" does not include {} {}",
            self.field.field(),
            self.range,
            self.field.subject(),
            self.version
        )
    }
}

/// Compatibility problems of a manifest document that may be invalid otherwise (what `tessera
/// plugin validate` prints with the rest): every `compat` range that parses is checked against
/// `versions`, each miss a problem at its field's pointer.
pub fn problems(doc: &Value, versions: &Versions) -> Vec<Problem> {
    let fields = [
        (CompatField::Core, &versions.core),
        (CompatField::BackendSdk, &versions.backend_sdk),
        (CompatField::FrontendSdk, &versions.frontend_sdk),
    ];
    fields
        .into_iter()
        .filter_map(|(field, version)| {
            let range = Range::parse(doc.pointer(field.pointer())?.as_str()?).ok()?;
            (!range.matches(version)).then(|| {
                let miss = CompatMiss {
                    field,
                    range: range.as_str().to_string(),
                    version: version.clone(),
                };
                Problem {
                    path: field.pointer().to_string(),
                    message: miss.to_string(),
                }
            })
        })
        .collect()
}

/// Checks every `compat` range against `versions`; an empty result means compatible.
pub fn check(compat: &Compat, versions: &Versions) -> Vec<CompatMiss> {
    let fields: [(CompatField, Option<&Range>, &Version); 3] = [
        (CompatField::Core, Some(&compat.core), &versions.core),
        (
            CompatField::BackendSdk,
            compat.backend_sdk.as_ref(),
            &versions.backend_sdk,
        ),
        (
            CompatField::FrontendSdk,
            compat.frontend_sdk.as_ref(),
            &versions.frontend_sdk,
        ),
    ];
    fields
        .into_iter()
        .filter_map(|(field, range, version)| {
            let range = range?;
            (!range.matches(version)).then(|| CompatMiss {
                field,
                range: range.as_str().to_string(),
                version: version.clone(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compat(core: &str, backend: Option<&str>, frontend: Option<&str>) -> Compat {
        Compat {
            core: Range::parse(core).unwrap(),
            backend_sdk: backend.map(|r| Range::parse(r).unwrap()),
            frontend_sdk: frontend.map(|r| Range::parse(r).unwrap()),
        }
    }

    #[test]
    fn compatible_manifest_has_no_misses() {
        assert!(
            check(
                &compat("^2.0", Some("1.x"), Some(">=1.1.0")),
                &Versions::default()
            )
            .is_empty()
        );
    }

    #[test]
    fn core_miss_names_field_range_and_version() {
        let misses = check(&compat(">=2.6 <3.0", None, None), &Versions::default());
        assert_eq!(misses.len(), 1);
        assert_eq!(
            misses[0].to_string(),
            "compat.core \">=2.6 <3.0\" does not include core plugin API 2.5.0"
        );
        assert_eq!(misses[0].field.pointer(), "/compat/core");
        // A plugin written for the first plugin API (before the required fields) is refused.
        let old = check(&compat("^1.0", None, None), &Versions::default());
        assert_eq!(
            old[0].to_string(),
            "compat.core \"^1.0\" does not include core plugin API 2.5.0"
        );
    }

    #[test]
    fn every_miss_is_reported() {
        let misses = check(
            &compat("^3", Some("^3"), Some("~0.9")),
            &Versions::default(),
        );
        let fields: Vec<_> = misses.iter().map(|m| m.field).collect();
        assert_eq!(
            fields,
            [
                CompatField::Core,
                CompatField::BackendSdk,
                CompatField::FrontendSdk
            ]
        );
        assert_eq!(
            misses[1].to_string(),
            "compat.backend_sdk \"^3\" does not include backend SDK protocol 1.6.0"
        );
    }

    #[test]
    fn other_core_versions_can_be_checked() {
        let versions = Versions {
            core: Version::new(2, 1, 0),
            ..Versions::default()
        };
        assert!(check(&compat(">=2.1 <3.0", None, None), &versions).is_empty());
        assert_eq!(check(&compat("^1.0", None, None), &versions).len(), 1);
    }
}
