//! The shell list (`GET /api/shell/remotes`) and its live stream, as bytes: the JSON of every
//! exposed plugin, its ETag, its gzip form and its server-sent event, built once per change and
//! shared by reference with every reader.
//!
//! It is fed by the registry's commits ([`Observer`]): each commit names the plugins it touched,
//! whose entries are rebuilt when what the shell sees of them (version, integrity) changed. An
//! admin decision is published at once, before the admin is answered; other changes are paced
//! by a publisher task, so a thousand plugins turning Ready cost a handful of rebuilds.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use crate::model::PluginRecord;
use crate::registry::{Index, Observer};
use crate::sync::lock;

/// Least time between two rebuilds of the list by the publisher task.
const PUBLISH_PACING: std::time::Duration = std::time::Duration::from_millis(25);

/// The shell list, serialized (and gzip-compressed) once per change.
#[derive(Clone, Debug)]
pub struct ShellSnapshot {
    /// Bumps on every change of the list.
    pub generation: u64,
    /// The JSON body of `GET /api/shell/remotes`.
    pub body: bytes::Bytes,
    /// The same body, gzip-compressed (what browsers accept): made by the first request that
    /// asks for it, once per list, so churn with nobody reading costs no compression.
    gzip: std::sync::OnceLock<bytes::Bytes>,
    /// The same body as one server-sent event (`event: remotes`), made once per list and
    /// shared by every open stream, however many there are.
    event: std::sync::OnceLock<bytes::Bytes>,
    /// Its strong ETag (of the JSON; the gzip variant carries it with a `-gzip` suffix).
    pub etag: String,
}

impl ShellSnapshot {
    /// The snapshot of a list body: its ETag is computed here, once.
    fn new(body: bytes::Bytes, generation: u64) -> ShellSnapshot {
        let digest = Sha256::digest(&body);
        let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
        ShellSnapshot {
            generation,
            gzip: std::sync::OnceLock::new(),
            event: std::sync::OnceLock::new(),
            body,
            etag: format!("\"{hex}\""),
        }
    }

    /// The gzip form of the body (compressed on first use).
    pub fn gzip(&self) -> bytes::Bytes {
        self.gzip.get_or_init(|| gzip(&self.body).into()).clone()
    }

    /// The list as a server-sent event: `event: remotes`, `id:` the generation, one `data:`
    /// line (the JSON is compact: it holds no line break).
    pub fn event(&self) -> bytes::Bytes {
        self.event
            .get_or_init(|| {
                let head = format!("event: remotes\nid: {}\ndata: ", self.generation);
                let mut out = Vec::with_capacity(head.len() + self.body.len() + 2);
                out.extend_from_slice(head.as_bytes());
                out.extend_from_slice(&self.body);
                out.extend_from_slice(b"\n\n");
                out.into()
            })
            .clone()
    }
}

/// What the shell sees of a plugin: its exposed version and integrity.
type Exposure = (String, Option<String>);

/// The list and its publisher.
#[derive(Debug)]
pub struct ShellList {
    /// The entry of every exposed plugin, with the exposure it was built from; a rebuild of
    /// the list only concatenates these bytes.
    entries: Mutex<BTreeMap<String, (Exposure, bytes::Bytes)>>,
    /// The current snapshot, and every open stream's subscription.
    snapshot: watch::Sender<Arc<ShellSnapshot>>,
    /// Wakes the publisher: the list must be rebuilt.
    dirty: tokio::sync::Notify,
}

impl Default for ShellList {
    fn default() -> ShellList {
        let (snapshot, _) = watch::channel(Arc::new(ShellSnapshot::new(
            bytes::Bytes::from_static(b"[]"),
            0,
        )));
        ShellList {
            entries: Mutex::new(BTreeMap::new()),
            snapshot,
            dirty: tokio::sync::Notify::new(),
        }
    }
}

impl ShellList {
    /// The current snapshot.
    pub fn current(&self) -> Arc<ShellSnapshot> {
        self.snapshot.borrow().clone()
    }

    /// Subscribes to snapshots (the live stream).
    pub fn subscribe(&self) -> watch::Receiver<Arc<ShellSnapshot>> {
        self.snapshot.subscribe()
    }

    /// Runs the task that rebuilds the list after paced changes, coalescing bursts.
    pub fn spawn_publisher(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                me.dirty.notified().await;
                me.publish();
                // Under churn, let changes gather for a moment before the next rebuild; a lone
                // change is still published at once.
                tokio::time::sleep(PUBLISH_PACING).await;
            }
        })
    }

    /// Rebuilds the list from the entries; a new snapshot only when the bytes changed.
    fn publish(&self) {
        let body = join(&lock(&self.entries));
        let current = self.current();
        if body != current.body {
            self.snapshot
                .send_replace(Arc::new(ShellSnapshot::new(body, current.generation + 1)));
        }
    }
}

impl Observer for ShellList {
    fn loaded(&self, index: &Index) {
        *lock(&self.entries) = index
            .records()
            .filter_map(|r| Some((r.name.clone(), (exposure(r)?, entry_json(r)?))))
            .collect();
        let body = join(&lock(&self.entries));
        self.snapshot
            .send_replace(Arc::new(ShellSnapshot::new(body, 0)));
    }

    fn committed(&self, index: &Index, touched: &[String], urgent: bool) {
        let mut changed = false;
        {
            let mut entries = lock(&self.entries);
            for name in touched {
                let now = index.get(name).and_then(|r| Some((exposure(r)?, r)));
                let held = entries.get(name).map(|(e, _)| e);
                if held == now.as_ref().map(|(e, _)| e) {
                    continue;
                }
                changed = true;
                match now.and_then(|(e, r)| Some((e, entry_json(r)?))) {
                    Some(entry) => entries.insert(name.clone(), entry),
                    None => entries.remove(name),
                };
            }
        }
        if changed {
            if urgent {
                self.publish();
            } else {
                self.dirty.notify_one();
            }
        }
    }
}

fn exposure(rec: &PluginRecord) -> Option<Exposure> {
    rec.exposed()
        .map(|d| (d.version.clone(), d.integrity.clone()))
}

/// One entry of the shell list.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ShellRemote<'a> {
    name: &'a str,
    version: &'a str,
    scope: String,
    remote_entry: String,
    integrity: &'a str,
    contributions: Contributions<'a>,
}

/// A plugin's `ui.contributions`, copied as the manifest has it, or empty lists.
#[derive(Serialize)]
#[serde(untagged)]
enum Contributions<'a> {
    Declared(&'a serde_json::value::RawValue),
    Nothing { panels: [(); 0], routes: [(); 0] },
}

/// The fields of a manifest the shell list copies (as raw JSON text).
#[derive(Default, serde::Deserialize)]
struct ShellFields<'a> {
    #[serde(default, borrow)]
    ui: ShellUi<'a>,
}

#[derive(Default, serde::Deserialize)]
struct ShellUi<'a> {
    #[serde(default, borrow)]
    contributions: Option<&'a serde_json::value::RawValue>,
}

/// The shell-list entry of a plugin, when it is exposed (with a pinned integrity).
fn entry_json(rec: &PluginRecord) -> Option<bytes::Bytes> {
    let dep = rec.exposed()?;
    let integrity = dep.integrity.as_deref()?;
    let file = dep
        .remote_url
        .rsplit('/')
        .next()
        .filter(|f| !f.is_empty())
        .unwrap_or("remoteEntry.js");
    let entry = ShellRemote {
        name: &rec.name,
        version: &dep.version,
        scope: format!("plugin_{}", rec.name.replace('-', "_")),
        remote_entry: format!("/plugins/{}/{}/{}", rec.name, dep.version, file),
        integrity,
        contributions: dep
            .manifest
            .fields::<ShellFields<'_>>()
            .ui
            .contributions
            .map_or(
                Contributions::Nothing {
                    panels: [],
                    routes: [],
                },
                Contributions::Declared,
            ),
    };
    serde_json::to_vec(&entry).ok().map(Into::into)
}

/// `[e1,e2,...]` from the entries, in name order.
fn join(entries: &BTreeMap<String, (Exposure, bytes::Bytes)>) -> bytes::Bytes {
    let len: usize = entries.values().map(|(_, e)| e.len() + 1).sum::<usize>() + 2;
    let mut out = Vec::with_capacity(len);
    out.push(b'[');
    for (i, (_, e)) in entries.values().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(e);
    }
    out.push(b']');
    out.into()
}

/// Gzip at the best ratio: done once per change of the list, not per request.
fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(bytes.len() / 4 + 64),
        flate2::Compression::best(),
    );
    // Writing to a Vec cannot fail.
    let _ = enc.write_all(bytes);
    enc.finish().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Deployment, ManifestJson, State};
    use serde_json::json;

    fn exposed(manifest: serde_json::Value) -> PluginRecord {
        let dep = Deployment {
            version: "1.2.3".into(),
            manifest: ManifestJson::new(&manifest).unwrap_or_else(|e| panic!("{e}")),
            backend_url: "http://127.0.0.1:1".into(),
            remote_url: "http://127.0.0.1:1/mf/remoteEntry.js".into(),
            integrity: Some("sha384-x".into()),
            registered_at: "2026-12-01T00:00:00Z".into(),
            token_id: "t".into(),
        };
        PluginRecord {
            name: "a-b".into(),
            state: State::Ready,
            current: dep.clone(),
            serving: Some(dep),
            disabled: None,
            conditions: vec![],
            updated_at: "2026-12-01T00:00:00Z".into(),
        }
    }

    fn parsed(rec: &PluginRecord) -> serde_json::Value {
        let bytes = entry_json(rec).unwrap_or_else(|| panic!("not exposed"));
        serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn shell_entries_copy_contributions_and_default_to_empty_lists() {
        let with = exposed(json!({"name": "a-b", "ui": {"contributions": {
            "panels": [{"id": "a-b.main", "title": "T"}], "routes": [{"path": "/a-b/", "component": "Page"}]}}}));
        assert_eq!(
            parsed(&with),
            json!({"name": "a-b", "version": "1.2.3", "scope": "plugin_a_b",
                "remoteEntry": "/plugins/a-b/1.2.3/remoteEntry.js", "integrity": "sha384-x",
                "contributions": {"panels": [{"id": "a-b.main", "title": "T"}],
                                  "routes": [{"path": "/a-b/", "component": "Page"}]}})
        );
        let without = exposed(json!({"name": "a-b"}));
        assert_eq!(
            parsed(&without)["contributions"],
            json!({"panels": [], "routes": []})
        );
    }

    #[test]
    fn shell_list_follows_commits_and_publishes_admin_decisions_at_once() {
        let list = ShellList::default();
        let rec = exposed(json!({"name": "a-b"}));
        let index = Index::new(vec![rec.clone()], vec![]);
        list.loaded(&index);
        let first = list.current();
        let body: serde_json::Value =
            serde_json::from_slice(&first.body).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(body.as_array().map(Vec::len), Some(1));
        assert_eq!(
            first.event().split(|b| *b == b'\n').next(),
            Some(&b"event: remotes"[..])
        );
        // An admin disables it: the next snapshot is published before the commit returns.
        let mut off = rec;
        off.state = State::Disabled;
        let index = Index::new(vec![off], vec![]);
        list.committed(&index, &["a-b".to_string()], true);
        let second = list.current();
        assert_eq!(&second.body[..], b"[]");
        assert_eq!(second.generation, first.generation + 1);
        assert_ne!(second.etag, first.etag);
        // A commit that does not change what is exposed publishes nothing.
        list.committed(&index, &["a-b".to_string()], true);
        assert_eq!(list.current().generation, second.generation);
    }
}
