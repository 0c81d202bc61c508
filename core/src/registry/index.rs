//! The index: every plugin record and every revoked token id, as committed. Readers hold it as
//! an immutable `Arc<Index>` snapshot; only the writer changes it, after a commit.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use crate::model::{PluginRecord, State};

/// The committed state readers see.
#[derive(Clone, Debug, Default)]
pub struct Index {
    /// Records by name; shared with older snapshots, so a commit copies pointers, not records.
    plugins: BTreeMap<String, Arc<PluginRecord>>,
    /// Revoked token ids.
    revoked: HashSet<String>,
    /// Bumps on every commit (the prober refreshes its targets when it moves).
    generation: u64,
}

/// What the prober needs to probe one plugin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeTarget {
    /// Plugin name.
    pub name: String,
    /// The version being probed.
    pub version: String,
    /// Service URL.
    pub backend_url: String,
    /// Remote entry URL.
    pub remote_url: String,
    /// `health.readinessPath`.
    pub readiness_path: String,
}

// === impl Index ===

impl Index {
    /// The index of loaded records.
    pub fn new(plugins: Vec<PluginRecord>, revoked: Vec<String>) -> Index {
        Index {
            plugins: plugins
                .into_iter()
                .map(|p| (p.name.clone(), Arc::new(p)))
                .collect(),
            revoked: revoked.into_iter().collect(),
            generation: 1,
        }
    }

    /// One record.
    pub fn get(&self, name: &str) -> Option<&PluginRecord> {
        self.plugins.get(name).map(|r| &**r)
    }

    /// Every record, in name order.
    pub fn records(&self) -> impl Iterator<Item = &PluginRecord> {
        self.plugins.values().map(|r| &**r)
    }

    /// How many plugins are known.
    pub fn len(&self) -> usize {
        self.plugins.len()
    }

    /// Whether no plugin is known.
    pub fn is_empty(&self) -> bool {
        self.plugins.is_empty()
    }

    /// Whether a token id is revoked.
    pub fn is_revoked(&self, jti: &str) -> bool {
        self.revoked.contains(jti)
    }

    /// Bumps on every commit.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The remote URL and integrity of `name` at `version` while that version is served, or the
    /// plugin's state when it is not.
    pub fn serving(
        &self,
        name: &str,
        version: &str,
    ) -> Option<Result<(String, Option<String>), State>> {
        let rec = self.get(name)?;
        Some(match rec.exposed().filter(|d| d.version == version) {
            Some(d) => Ok((d.remote_url.clone(), d.integrity.clone())),
            None => Err(rec.state),
        })
    }

    /// What the prober needs of every plugin it should probe (registered, not disabled).
    pub fn probe_targets(&self) -> Vec<ProbeTarget> {
        self.records()
            .filter(|p| {
                matches!(p.state, State::Registering | State::Ready | State::Degraded)
                    && p.disabled.is_none()
            })
            .map(|p| ProbeTarget {
                name: p.name.clone(),
                version: p.current.version.clone(),
                backend_url: p.current.backend_url.clone(),
                remote_url: p.current.remote_url.clone(),
                readiness_path: p
                    .current
                    .manifest
                    .fields::<HealthFields>()
                    .health
                    .readiness_path
                    .unwrap_or_else(|| "/readyz".to_string()),
            })
            .collect()
    }

    /// Applies committed records (`None`: deleted) and revocations; bumps the generation.
    pub(super) fn apply(
        &mut self,
        touched: impl IntoIterator<Item = (String, Option<PluginRecord>)>,
        revoked: impl IntoIterator<Item = String>,
    ) {
        for (name, record) in touched {
            match record {
                Some(r) => self.plugins.insert(name, Arc::new(r)),
                None => self.plugins.remove(&name),
            };
        }
        self.revoked.extend(revoked);
        self.generation += 1;
    }
}

/// The field of a manifest the prober reads.
#[derive(Default, serde::Deserialize)]
struct HealthFields {
    #[serde(default)]
    health: Health,
}

#[derive(Default, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Health {
    readiness_path: Option<String>,
}
