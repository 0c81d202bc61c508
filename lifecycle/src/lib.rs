//! # tessera-lifecycle
//!
//! The plugin lifecycle as pure functions. Every change of a plugin's state is one call
//! `(record, event, thresholds, now) -> Option<Step>`: the record as the event leaves it and the
//! audit events that explain it (`None`: the event changes nothing worth writing). The core's
//! registry runs these on its writer, persists the step, then indexes it; this crate does no
//! I/O and depends on no async runtime, so every (state, event) pair of the lifecycle is tested
//! here in microseconds.
//!
//! ```text
//!            register                 probes pass (success threshold)
//! Installed ─────────▶ Registering ──────────────────────────────▶ Ready
//!                          ▲   ▲                                  │  ▲
//!         enable / accept  │   │ register                failures │  │ probes pass
//!                          │   │                    (threshold) / │  │
//!                          │   └──── Degraded ◀── remote changed ─┘  │
//!                          │            └────────────────────────────┘
//!        Disabled ─────────┘   (disable: from any state; register keeps it Disabled)
//! ```
//!
//! - [`model`]: the records, conditions and audit events the transitions change.
//! - [`transition`]: the transitions, one function an event.
//! - [`probe`]: probe rounds and the counters the thresholds are applied to.
//! - [`claims`]: who holds each panel id and route path (collision checks).
//! - [`Refusal`]: the domain's refusals, mapped to API error codes in one place by the core.

#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

pub mod claims;
pub mod model;
pub mod probe;
pub mod transition;

pub use probe::{Failure, ProbeStats, Round, Thresholds};
pub use transition::{Actor, Registration, Step};

/// Condition types.
pub mod condition {
    /// The core accepted the registration.
    pub const REGISTERED: &str = "Registered";
    /// Both probes pass.
    pub const READY: &str = "Ready";
    /// Not disabled by an admin.
    pub const ENABLED: &str = "Enabled";
    /// The shell loaded the UI.
    pub const UI_LOADED: &str = "UiLoaded";
}

/// Why the domain refuses a change. The core maps each to its API error code in one place
/// (`impl From<Refusal> for ApiError`); the variants' names read as metric labels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No plugin of that name.
    NotFound {
        /// The name asked for.
        name: String,
    },
    /// A panel id or route path is held by another enabled plugin.
    ContributionConflict(claims::Conflict),
    /// A record could not be built (a manifest that does not serialize).
    Invalid(String),
}

impl Refusal {
    /// A short label for metrics and logs.
    pub fn label(&self) -> &'static str {
        match self {
            Refusal::NotFound { .. } => "not_found",
            Refusal::ContributionConflict(_) => "contribution_conflict",
            Refusal::Invalid(_) => "invalid",
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::NotFound { name } => write!(f, "no plugin named \"{name}\""),
            Refusal::ContributionConflict(c) => write!(
                f,
                "{} \"{}\" of plugin \"{}\" is already used by plugin \"{}\" (version {})",
                c.kind, c.value, c.plugin, c.owner, c.owner_version
            ),
            Refusal::Invalid(why) => f.write_str(why),
        }
    }
}
