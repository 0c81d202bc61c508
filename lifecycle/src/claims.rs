//! Who holds each panel id and route path. An enabled plugin claims the contributions of its
//! current and serving versions; a registration that names one held by another plugin is
//! refused. Routes claim by shape (`tessera_sdk::manifest::route::key`): `/a/:x` and `/a/:y/`
//! are one route.

use std::collections::HashMap;

use crate::model::{ManifestJson, PluginRecord};

/// A claim: what kind (`panel id`, `route path`) and its key.
pub type Key = (&'static str, String);

/// A contribution held by another plugin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conflict {
    /// `panel id` or `route path`.
    pub kind: &'static str,
    /// The value as the refused manifest writes it.
    pub value: String,
    /// The plugin that was refused.
    pub plugin: String,
    /// The plugin holding it.
    pub owner: String,
    /// The holder's current version.
    pub owner_version: String,
}

/// Who holds each panel id and route path.
#[derive(Clone, Debug, Default)]
pub struct Claims {
    /// Claim key -> the plugin holding it.
    owner: HashMap<Key, String>,
    /// Plugin -> its keys, so replacing a plugin's claims costs its own contributions only.
    by_plugin: HashMap<String, Vec<Key>>,
}

impl Claims {
    /// The claims of every record.
    pub fn build<'a>(records: impl IntoIterator<Item = &'a PluginRecord>) -> Claims {
        let mut c = Claims::default();
        for rec in records {
            c.update(rec);
        }
        c
    }

    /// Replaces a plugin's claims with those of its current and serving versions (none while
    /// it is disabled).
    pub fn update(&mut self, rec: &PluginRecord) {
        self.remove(&rec.name);
        if rec.disabled.is_some() {
            return;
        }
        let mut keys: Vec<Key> = contributions(&rec.current.manifest)
            .into_iter()
            .map(|(key, _)| key)
            .collect();
        if let Some(s) = &rec.serving {
            keys.extend(contributions(&s.manifest).into_iter().map(|(key, _)| key));
        }
        keys.sort();
        keys.dedup();
        for k in &keys {
            self.owner
                .entry(k.clone())
                .or_insert_with(|| rec.name.clone());
        }
        self.by_plugin.insert(rec.name.clone(), keys);
    }

    /// Drops a plugin's claims.
    pub fn remove(&mut self, name: &str) {
        for k in self.by_plugin.remove(name).unwrap_or_default() {
            if self.owner.get(&k).is_some_and(|o| o == name) {
                self.owner.remove(&k);
            }
        }
    }

    /// The first contribution of `manifest` (of plugin `plugin`) held by another plugin, and
    /// who holds it (its version is filled in by the caller, who knows the records).
    pub fn conflict(&self, plugin: &str, manifest: &ManifestJson) -> Option<Conflict> {
        contributions(manifest)
            .into_iter()
            .find_map(|(key, value)| {
                let owner = self.owner.get(&key)?;
                (owner != plugin).then(|| Conflict {
                    kind: key.0,
                    value,
                    plugin: plugin.to_string(),
                    owner: owner.clone(),
                    owner_version: String::new(),
                })
            })
    }
}

/// A manifest's panel ids and route paths as claim keys, each with the value as the manifest
/// writes it.
pub fn contributions(manifest: &ManifestJson) -> Vec<(Key, String)> {
    let c = manifest.fields::<ClaimFields>().ui.contributions;
    let panels = c
        .panels
        .into_iter()
        .filter_map(|p| p.id)
        .map(|p| (("panel id", p.clone()), p));
    let routes = c
        .routes
        .into_iter()
        .filter_map(|r| r.path)
        .map(|p| (("route path", tessera_sdk::manifest::route::key(&p)), p));
    panels.chain(routes).collect()
}

/// The fields of a manifest that claim names: panel ids and route paths.
#[derive(Default, serde::Deserialize)]
struct ClaimFields {
    #[serde(default)]
    ui: ClaimUi,
}

#[derive(Default, serde::Deserialize)]
struct ClaimUi {
    #[serde(default)]
    contributions: ClaimContributions,
}

#[derive(Default, serde::Deserialize)]
struct ClaimContributions {
    #[serde(default)]
    panels: Vec<Claimed>,
    #[serde(default)]
    routes: Vec<Claimed>,
}

#[derive(Default, serde::Deserialize)]
struct Claimed {
    id: Option<String>,
    path: Option<String>,
}
