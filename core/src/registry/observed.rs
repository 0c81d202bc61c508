//! What the prober observes but the store does not keep: consecutive-round counters (the
//! thresholds apply to them) and the remote entry's bytes (the asset route serves them). Kept
//! apart from the index because the prober updates them on every round, most of which change
//! no record.

use std::collections::HashMap;
use std::sync::Mutex;

use tessera_lifecycle::ProbeStats;

use crate::sync::lock;

/// Probe counters and remote entry bytes, by plugin.
#[derive(Debug, Default)]
pub(super) struct Observed {
    /// Counters by plugin.
    stats: Mutex<HashMap<String, ProbeStats>>,
    /// Remote entry bytes by plugin, then version (only the versions that can be served or
    /// probed are kept).
    remote_bytes: Mutex<HashMap<String, Vec<(String, bytes::Bytes)>>>,
}

impl Observed {
    pub(super) fn stats(&self, name: &str) -> ProbeStats {
        lock(&self.stats).get(name).cloned().unwrap_or_default()
    }

    pub(super) fn set_stats(&self, name: &str, stats: ProbeStats) {
        lock(&self.stats).insert(name.to_string(), stats);
    }

    pub(super) fn reset_stats(&self, name: &str) {
        lock(&self.stats).remove(name);
    }

    pub(super) fn remote_entry(&self, name: &str, version: &str) -> Option<bytes::Bytes> {
        lock(&self.remote_bytes)
            .get(name)?
            .iter()
            .find(|(v, _)| v == version)
            .map(|(_, b)| b.clone())
    }

    pub(super) fn keep_remote_bytes(&self, name: &str, version: &str, bytes: &bytes::Bytes) {
        let mut all = lock(&self.remote_bytes);
        let versions = all.entry(name.to_string()).or_default();
        match versions.iter_mut().find(|(v, _)| v == version) {
            Some((_, b)) if b == bytes => {}
            Some((_, b)) => *b = bytes.clone(),
            None => versions.push((version.to_string(), bytes.clone())),
        }
    }

    /// Keeps bytes only for the versions a record can still serve or probe; forgets a deleted
    /// plugin entirely.
    pub(super) fn retain(&self, name: &str, versions: Option<[Option<&str>; 2]>) {
        match versions {
            None => {
                lock(&self.remote_bytes).remove(name);
                lock(&self.stats).remove(name);
            }
            Some(keep) => {
                if let Some(held) = lock(&self.remote_bytes).get_mut(name) {
                    held.retain(|(v, _)| keep.contains(&Some(v.as_str())));
                }
            }
        }
    }
}
