//! Admission: the ordered registration checks after the token (the manifest's schema and rules,
//! the grant's plugin, capabilities, compatibility, URL policy), each with its own code. Used by
//! the registration endpoint and by declared/static plugins alike.

use serde_json::{Value, json};
use tessera_sdk::capability::{self, Capability};
use tessera_sdk::compat::{self, Versions};
use tessera_sdk::manifest;

use crate::config::Config;
use crate::error::{ApiError, Code};
use crate::policy;
/// What a registration is allowed: by its token, or by the admin's config (static plugins).
pub(crate) struct Grant<'a> {
    /// The plugin it registers.
    pub plugin: &'a str,
    /// Capabilities granted.
    pub capabilities: &'a [Capability],
    /// Namespace its URLs must live in (cluster mode).
    pub namespace: Option<&'a str>,
}

/// Most problems an `invalid_manifest` answer lists (the message counts them all).
const MAX_PROBLEMS: usize = 100;

/// Registration checks 3 to 7, in order, each with its own code: the manifest's schema and
/// rules (every problem), the grant's plugin, capabilities, compatibility, URL policy.
pub(crate) fn admit(
    config: &Config,
    manifest: &Value,
    grant: &Grant<'_>,
    backend_url: &str,
    remote_url: &str,
) -> Result<tessera_sdk::Manifest, ApiError> {
    // 3. schema and rules, every problem
    let report = manifest::validate(manifest);
    let m = report.into_result().map_err(|problems| {
        // Messages quote the offending values: bounded, so a huge value is not echoed back.
        let clip = |t: &str, max: usize| -> String {
            if t.len() <= max {
                return t.to_string();
            }
            let mut end = max;
            while !t.is_char_boundary(end) {
                end -= 1;
            }
            format!("{}... ({} bytes)", &t[..end], t.len())
        };
        ApiError::new(
            Code::InvalidManifest,
            format!("the manifest is invalid: {} problem(s)", problems.len()),
        )
        .with_details(
            problems
                .iter()
                .take(MAX_PROBLEMS)
                .map(|p| json!({"path": clip(&p.path, 300), "message": clip(&p.message, 500)}))
                .collect(),
        )
    })?;
    // 4. the token is for this plugin
    if grant.plugin != m.name {
        return Err(ApiError::new(
            Code::TokenPluginMismatch,
            format!(
                "this token registers plugin \"{}\", not \"{}\"",
                grant.plugin, m.name
            ),
        )
        .with_details(vec![
            json!({"tokenPlugin": grant.plugin, "manifestName": m.name}),
        ]));
    }
    // 5. capabilities
    // Declaring panels or routes requests ui:panel / ui:route, listed or not.
    let check = capability::check_granted(&m.requested_capabilities(), grant.capabilities);
    if !check.is_satisfied() {
        let names = |v: &[Capability]| v.iter().map(|c| c.name()).collect::<Vec<_>>();
        return Err(ApiError::new(
            Code::CapabilityNotGranted,
            format!(
                "capabilities requested but not granted by the token: {}",
                names(&check.missing).join(", ")
            ),
        )
        .with_details(vec![json!({
            "requested": names(&check.requested),
            "granted": names(&check.granted),
            "missing": names(&check.missing),
        })]));
    }
    // 6. compatibility
    let misses = compat::check(&m.compat, &Versions::default());
    if !misses.is_empty() {
        return Err(ApiError::new(
            Code::IncompatibleCore,
            misses.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "),
        )
        .with_details(
            misses
                .iter()
                .map(|x| json!({"field": x.field.field(), "range": x.range, "version": x.version.to_string(), "message": x.to_string()}))
                .collect(),
        ));
    }
    // 7. URL policy
    for (field, url) in [("backendUrl", backend_url), ("remoteUrl", remote_url)] {
        let cluster =
            (config.store == crate::config::StoreKind::Kubernetes).then_some(policy::Cluster {
                namespace: grant.namespace,
            });
        if let Err(r) = policy::check(url, &config.url_policy, cluster) {
            return Err(ApiError::new(
                Code::UrlNotAllowed,
                format!("{field} \"{}\" is not allowed: {}", r.url, r.message),
            )
            .with_details(vec![
                json!({"field": field, "url": r.url, "rule": r.rule, "message": r.message}),
            ]));
        }
    }
    Ok(m)
}
