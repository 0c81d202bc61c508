//! Who subscribes to what: the `events.subscribe` entries of every registered plugin, kept
//! current from the registry's commits. A subscription exists while its plugin is registered
//! (whatever its state: events for a plugin that is not Ready wait for it).

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Deserialize;

use crate::model::PluginRecord;

/// A backend subscription's identity: the subscribing plugin, its pattern and its path.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SubKey {
    /// The subscribing plugin.
    pub plugin: String,
    /// Event type pattern.
    pub pattern: String,
    /// Path under the plugin's `basePath`.
    pub path: String,
}

/// How the pattern of a webhook's own subscription begins: `webhook:<name>` matches no event
/// type (types have no `:`), so only what the webhook ingests is delivered to it.
pub const WEBHOOK_PATTERN: &str = "webhook:";

impl SubKey {
    /// A webhook's own subscription: `<plugin>`'s webhook `name`, delivered to `path`.
    pub fn webhook(plugin: &str, name: &str, path: &str) -> SubKey {
        SubKey {
            plugin: plugin.to_string(),
            pattern: format!("{WEBHOOK_PATTERN}{name}"),
            path: path.to_string(),
        }
    }

    /// The webhook this subscription delivers, if it is a webhook's own.
    pub fn webhook_name(&self) -> Option<&str> {
        self.pattern.strip_prefix(WEBHOOK_PATTERN)
    }
}

/// A backend subscription.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sub {
    /// Identity.
    pub key: SubKey,
    /// One delivery of a source at a time, in acceptance order.
    pub ordered: bool,
    /// Deliveries at once when not ordered.
    pub window: u32,
}

/// One plugin's subscriptions.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PluginSubs {
    /// Backend subscriptions.
    pub backend: Vec<Sub>,
    /// Patterns delivered to the plugin's UI.
    pub shell: Vec<String>,
}

/// Deliveries of one webhook in flight at once.
pub const WEBHOOK_WINDOW: u32 = 8;

/// Every plugin's subscriptions.
#[derive(Clone, Debug, Default)]
pub struct Table {
    by_plugin: BTreeMap<String, Arc<PluginSubs>>,
}

#[derive(Default, Deserialize)]
struct Fields {
    #[serde(default)]
    events: EventsField,
    #[serde(default)]
    webhooks: Vec<tessera_sdk::webhooks::Webhook>,
}

#[derive(Default, Deserialize)]
struct EventsField {
    #[serde(default)]
    subscribe: Vec<tessera_sdk::manifest::Subscription>,
}

/// The subscriptions a record declares: those of the version the shell is shown, else of the
/// latest registered one.
pub fn of(record: &PluginRecord) -> PluginSubs {
    let d = record.serving.as_ref().unwrap_or(&record.current);
    let mut out = PluginSubs::default();
    let fields = d.manifest.fields::<Fields>();
    for hook in &fields.webhooks {
        out.backend.push(Sub {
            key: SubKey::webhook(&record.name, &hook.name, &hook.path),
            ordered: false,
            window: WEBHOOK_WINDOW,
        });
    }
    for s in fields.events.subscribe {
        match &s.path {
            Some(path) if !s.shell => out.backend.push(Sub {
                key: SubKey {
                    plugin: record.name.clone(),
                    pattern: s.pattern.clone(),
                    path: path.clone(),
                },
                ordered: s.is_ordered(),
                window: s.window(),
            }),
            _ => out.shell.push(s.pattern.clone()),
        }
    }
    out
}

impl Table {
    /// Sets (or, with `None`, removes) one plugin's subscriptions.
    pub fn set(&mut self, plugin: &str, subs: Option<PluginSubs>) {
        match subs {
            Some(s) if s.backend.is_empty() && s.shell.is_empty() => {
                self.by_plugin.remove(plugin);
            }
            Some(s) => {
                self.by_plugin.insert(plugin.to_string(), Arc::new(s));
            }
            None => {
                self.by_plugin.remove(plugin);
            }
        }
    }

    /// Backend subscriptions matching `ty`.
    pub fn backend_for(&self, ty: &str) -> Vec<SubKey> {
        self.matching(ty).map(|s| s.key.clone()).collect()
    }

    /// Backend subscriptions whose pattern matches `ty`.
    pub fn matching<'a>(&'a self, ty: &'a str) -> impl Iterator<Item = &'a Sub> {
        self.backend().filter(move |s| {
            s.key.webhook_name().is_none() && tessera_sdk::events::matches(&s.key.pattern, ty)
        })
    }

    /// Plugins whose UI subscribes to `ty`.
    pub fn shells_for(&self, ty: &str) -> Vec<String> {
        self.by_plugin
            .iter()
            .filter(|(_, p)| {
                p.shell
                    .iter()
                    .any(|pat| tessera_sdk::events::matches(pat, ty))
            })
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// Every backend subscription.
    pub fn backend(&self) -> impl Iterator<Item = &Sub> {
        self.by_plugin.values().flat_map(|p| p.backend.iter())
    }

    /// Every UI subscription, as (plugin, pattern).
    pub fn shell(&self) -> impl Iterator<Item = (&str, &str)> {
        self.by_plugin
            .iter()
            .flat_map(|(name, p)| p.shell.iter().map(move |pat| (name.as_str(), pat.as_str())))
    }

    /// One backend subscription.
    pub fn get(&self, key: &SubKey) -> Option<&Sub> {
        self.by_plugin
            .get(&key.plugin)?
            .backend
            .iter()
            .find(|s| s.key == *key)
    }
}
