//! The closed catalogue of capabilities a plugin can ask for.
//!
//! A plugin lists the capabilities it wants in `plugin.yaml`; its registration token lists the
//! ones an admin granted. Each capability unlocks one SDK surface. The catalogue is closed: the
//! manifest schema's `enum` and [`Capability::ALL`] are the same list (a test keeps them so).

use std::collections::BTreeSet;
use std::fmt;

/// One capability from the catalogue.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Capability {
    // Declared in name order: the derived `Ord` is the order normalization sorts by.
    /// `events:publish`
    EventsPublish,
    /// `events:subscribe`
    EventsSubscribe,
    /// `http:outbound`
    HttpOutbound,
    /// `jobs:schedule`
    JobsSchedule,
    /// `secrets:read`
    SecretsRead,
    /// `ui:panel`
    UiPanel,
    /// `ui:route`
    UiRoute,
    /// `webhooks:ingest`
    WebhooksIngest,
}

/// A capability name that is not in the catalogue.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown capability \"{name}\"; known capabilities: {}",
    Capability::known_list()
)]
pub struct UnknownCapability {
    /// The name as written.
    pub name: String,
}

// === impl Capability ===

impl Capability {
    /// Every capability, sorted by name (the order normalization uses).
    pub const ALL: [Capability; 8] = [
        Capability::EventsPublish,
        Capability::EventsSubscribe,
        Capability::HttpOutbound,
        Capability::JobsSchedule,
        Capability::SecretsRead,
        Capability::UiPanel,
        Capability::UiRoute,
        Capability::WebhooksIngest,
    ];

    /// The name used in manifests and tokens.
    pub fn name(self) -> &'static str {
        match self {
            Capability::HttpOutbound => "http:outbound",
            Capability::EventsPublish => "events:publish",
            Capability::EventsSubscribe => "events:subscribe",
            Capability::JobsSchedule => "jobs:schedule",
            Capability::SecretsRead => "secrets:read",
            Capability::UiPanel => "ui:panel",
            Capability::UiRoute => "ui:route",
            Capability::WebhooksIngest => "webhooks:ingest",
        }
    }

    /// What the capability allows, for docs and error messages.
    pub fn description(self) -> &'static str {
        match self {
            Capability::HttpOutbound => {
                "call hosts outside the cluster through the core, limited to permissions.network.egressAllow and rate-limited"
            }
            Capability::EventsPublish => "publish events on the core's event bus",
            Capability::EventsSubscribe => "receive events from the core's event bus",
            Capability::JobsSchedule => "register scheduled jobs that the core triggers",
            Capability::SecretsRead => "read the secrets named in the manifest's secrets list",
            Capability::UiPanel => "contribute panels to the web shell",
            Capability::UiRoute => "contribute pages (client-side routes) to the web shell",
            Capability::WebhooksIngest => "receive webhooks from outside through the core",
        }
    }

    /// The SDK surface the capability unlocks.
    pub fn sdk_surface(self) -> &'static str {
        match self {
            Capability::HttpOutbound => {
                "CoreClient::http (Rust); outbound calls via the core's egress proxy"
            }
            Capability::EventsPublish => "CoreClient::publish_event (Rust)",
            Capability::EventsSubscribe => {
                "events.subscribe; on_event (Rust); sdk.events.subscribe (web)"
            }
            Capability::JobsSchedule => "CoreClient::register_job (Rust)",
            Capability::SecretsRead => "CoreClient::fetch_secret (Rust)",
            Capability::UiPanel => "ui.contributions.panels; sdk.ui.registerPanel (web)",
            Capability::UiRoute => "ui.contributions.routes; sdk.ui.registerRoute (web)",
            Capability::WebhooksIngest => {
                "manifest webhooks; WebhookDelivery (Rust) on the route each names"
            }
        }
    }

    /// Looks a capability up by its name.
    pub fn parse(name: &str) -> Result<Capability, UnknownCapability> {
        Capability::ALL
            .into_iter()
            .find(|c| c.name() == name)
            .ok_or_else(|| UnknownCapability {
                name: name.to_string(),
            })
    }

    /// The catalogue's names, comma-separated, for messages.
    pub fn known_list() -> String {
        Capability::ALL.map(Capability::name).join(", ")
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Capability {
    type Err = UnknownCapability;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Capability::parse(s)
    }
}

impl serde::Serialize for Capability {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> serde::Deserialize<'de> for Capability {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Capability::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// The outcome of comparing what a plugin requests with what its token grants.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CapabilityCheck {
    /// What the manifest asks for, sorted, without duplicates.
    pub requested: Vec<Capability>,
    /// What the token grants, sorted, without duplicates.
    pub granted: Vec<Capability>,
    /// Requested but not granted; empty when the plugin may register.
    pub missing: Vec<Capability>,
}

impl CapabilityCheck {
    /// Whether every requested capability is granted.
    pub fn is_satisfied(&self) -> bool {
        self.missing.is_empty()
    }
}

/// Compares the capabilities a plugin requests with the ones its token grants.
pub fn check_granted(requested: &[Capability], granted: &[Capability]) -> CapabilityCheck {
    let requested: BTreeSet<Capability> = requested.iter().copied().collect();
    let granted: BTreeSet<Capability> = granted.iter().copied().collect();
    CapabilityCheck {
        missing: requested.difference(&granted).copied().collect(),
        requested: requested.into_iter().collect(),
        granted: granted.into_iter().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_is_sorted_by_name_and_round_trips() {
        let names: Vec<&str> = Capability::ALL.iter().map(|c| c.name()).collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        assert_eq!(names, sorted);
        let mut by_ord = Capability::ALL;
        by_ord.sort_unstable();
        assert_eq!(by_ord, Capability::ALL, "Ord must follow the names");
        for c in Capability::ALL {
            assert_eq!(Capability::parse(c.name()), Ok(c));
            assert!(!c.description().is_empty());
            assert!(!c.sdk_surface().is_empty());
        }
    }

    #[test]
    fn unknown_capability_lists_the_known_ones() {
        let err = Capability::parse("db:write").unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("unknown capability \"db:write\""), "{msg}");
        for c in Capability::ALL {
            assert!(msg.contains(c.name()), "{msg} lacks {c}");
        }
    }

    #[test]
    fn check_granted_lists_missing_sorted_and_deduplicated() {
        use Capability::*;
        let check = check_granted(
            &[UiRoute, HttpOutbound, UiPanel, HttpOutbound],
            &[UiPanel, EventsPublish],
        );
        assert_eq!(check.requested, vec![HttpOutbound, UiPanel, UiRoute]);
        assert_eq!(check.granted, vec![EventsPublish, UiPanel]);
        assert_eq!(check.missing, vec![HttpOutbound, UiRoute]);
        assert!(!check.is_satisfied());
        assert!(check_granted(&[UiPanel], &[UiPanel, UiRoute]).is_satisfied());
        assert!(check_granted(&[], &[]).is_satisfied());
    }
}
