//! The registry with an in-memory store: group commit, ordering within a batch, failed
//! transactions, conflicts with another writer, and the writer's lifetime.
#![allow(clippy::unwrap_used)]
use super::*;
use crate::error::Code;
use crate::model::{ManifestJson, State};
use crate::store::{Change, Loaded, StoreError};
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// An in-memory store that counts transactions, takes a little time per commit (as an
/// fsync does) and can be told to refuse writes.
#[derive(Default)]
struct Counting {
    records: std::sync::Mutex<BTreeMap<String, PluginRecord>>,
    audit: std::sync::Mutex<Vec<AuditEvent>>,
    commits: AtomicUsize,
    fail: AtomicBool,
}

impl Store for Counting {
    fn load(&self) -> Result<Loaded, StoreError> {
        Ok(Loaded::default())
    }
    fn commit(&self, changes: &[Change]) -> Result<(), StoreError> {
        std::thread::sleep(std::time::Duration::from_millis(2));
        if self.fail.load(Ordering::SeqCst) {
            return Err(StoreError::Failed("disk full".into()));
        }
        self.commits.fetch_add(1, Ordering::SeqCst);
        let mut records = self.records.lock().unwrap();
        for c in changes {
            match c {
                Change::Put(r) => {
                    records.insert(r.name.clone(), (**r).clone());
                }
                Change::Delete(n) => {
                    records.remove(n);
                }
                Change::Audit(e) => self.audit.lock().unwrap().push(e.clone()),
                Change::Revoke { .. } | Change::Issue(_) => {}
            }
        }
        Ok(())
    }
    fn audit(&self, _: &AuditQuery) -> Result<Vec<AuditEvent>, StoreError> {
        Ok(self.audit.lock().unwrap().clone())
    }
    fn tokens(&self) -> Result<Vec<crate::model::IssuedToken>, StoreError> {
        Ok(Vec::new())
    }
    fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

fn registration(name: &str, panel: &str) -> Registration {
    Registration {
        name: name.into(),
        version: "1.0.0".into(),
        manifest: ManifestJson::new(
            &json!({"name": name, "ui": {"contributions": {"panels": [{"id": panel}]}}}),
        )
        .unwrap(),
        backend_url: "http://127.0.0.1:1".into(),
        remote_url: "http://127.0.0.1:1/mf/remoteEntry.js".into(),
        token_id: "t".into(),
    }
}

fn open(store: &Arc<Counting>) -> Arc<Registry> {
    let thresholds = Thresholds {
        success: 1,
        failure: 1,
    };
    Registry::load(store.clone(), thresholds, vec![]).unwrap()
}

fn admin() -> Actor {
    Actor {
        who: "admin:test".into(),
        request_id: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_share_transactions_and_none_is_lost() {
    let store = Arc::new(Counting::default());
    let reg = open(&store);
    let mut tasks = Vec::new();
    for i in 0..200 {
        let reg = reg.clone();
        tasks.push(tokio::spawn(async move {
            let who = admin();
            let name = format!("p{i:03}");
            reg.register(registration(&name, &format!("{name}.panel")), &who)
                .await
        }));
    }
    for t in tasks {
        assert!(t.await.unwrap().unwrap().changed);
    }
    let commits = store.commits.load(Ordering::SeqCst);
    assert!(
        commits < 100,
        "200 concurrent registrations took {commits} transactions"
    );
    // Every acknowledged write is in the store and the index, with its audit event.
    let stored = store.records.lock().unwrap().clone();
    assert_eq!(stored.len(), 200);
    assert_eq!(reg.list(), stored.values().cloned().collect::<Vec<_>>());
    assert_eq!(store.audit.lock().unwrap().len(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_in_one_batch_see_each_other() {
    let store = Arc::new(Counting::default());
    let reg = open(&store);
    let who = admin();
    // Queued together: the second claims the first's panel id and must be refused even
    // though the first is not committed when the second is planned.
    let (a, b) = tokio::join!(
        reg.register(registration("a", "shared.panel"), &who),
        reg.register(registration("b", "shared.panel"), &who),
    );
    // join! polls in order, so "a" is queued first.
    assert!(a.is_ok());
    assert_eq!(b.unwrap_err().code, Code::ContributionConflict);
    // A disable and an enable queued together apply in order, each on the other's result.
    let (d, e) = tokio::join!(reg.disable("a", "incident", &who), reg.enable("a", &who),);
    assert_eq!(d.unwrap().state, State::Disabled);
    let e = e.unwrap();
    assert!(e.disabled.is_none());
    assert_eq!(e.state, State::Registering);
    assert_eq!(reg.get("a").unwrap(), e);
    assert_eq!(store.records.lock().unwrap().get("a"), Some(&e));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_transaction_changes_nothing_and_frees_its_claims() {
    let store = Arc::new(Counting::default());
    let reg = open(&store);
    let who = admin();
    store.fail.store(true, Ordering::SeqCst);
    let err = reg
        .register(registration("a", "x.panel"), &who)
        .await
        .unwrap_err();
    assert_eq!(err.code, Code::StoreUnavailable);
    assert!(err.message.contains("disk full"), "{}", err.message);
    assert!(reg.get("a").is_none());
    assert!(store.records.lock().unwrap().is_empty());
    // The failed write's panel id is free again once the store recovers.
    store.fail.store(false, Ordering::SeqCst);
    let ok = reg
        .register(registration("b", "x.panel"), &who)
        .await
        .unwrap();
    assert!(ok.changed);
    assert_eq!(reg.get("b").unwrap().state, State::Registering);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_writer_stops_with_the_registry() {
    let store = Arc::new(Counting::default());
    let reg = open(&store);
    let who = admin();
    reg.register(registration("a", "a.panel"), &who)
        .await
        .unwrap();
    let weak = Arc::downgrade(&reg);
    drop(reg);
    for _ in 0..100 {
        if weak.upgrade().is_none() && Arc::strong_count(&store) == 1 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("the registry (and its store) outlived its last handle");
}

/// A store that reports, once, that another writer changed the record first.
#[derive(Default)]
struct ConflictOnce {
    inner: Counting,
    conflicted: AtomicBool,
}

impl Store for ConflictOnce {
    fn load(&self) -> Result<Loaded, StoreError> {
        self.inner.load()
    }
    fn commit(&self, changes: &[Change]) -> Result<(), StoreError> {
        if !self.conflicted.swap(true, Ordering::SeqCst) {
            // Another replica disabled "a" meanwhile.
            let mut theirs = self
                .inner
                .records
                .lock()
                .unwrap()
                .get("a")
                .cloned()
                .unwrap();
            theirs.state = State::Disabled;
            theirs.disabled = Some(crate::model::Disabled {
                reason: "elsewhere".into(),
                by: "admin:other".into(),
                at: "2026-12-01T00:00:00Z".into(),
            });
            self.inner
                .records
                .lock()
                .unwrap()
                .insert("a".into(), theirs.clone());
            return Err(StoreError::Conflict {
                name: "a".into(),
                current: Some(Box::new(theirs)),
            });
        }
        self.inner.commit(changes)
    }
    fn audit(&self, q: &AuditQuery) -> Result<Vec<AuditEvent>, StoreError> {
        self.inner.audit(q)
    }
    fn tokens(&self) -> Result<Vec<crate::model::IssuedToken>, StoreError> {
        self.inner.tokens()
    }
    fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conflicting_write_is_planned_again_on_the_current_record() {
    let store = Arc::new(ConflictOnce::default());
    store.conflicted.store(true, Ordering::SeqCst);
    let thresholds = Thresholds {
        success: 1,
        failure: 1,
    };
    let reg = Registry::load(store.clone(), thresholds, vec![]).unwrap();
    reg.register(registration("a", "a.panel"), &admin())
        .await
        .unwrap();
    // The next commit conflicts: the record is now disabled by another writer.
    store.conflicted.store(false, Ordering::SeqCst);
    reg.report_ui("a", "1.0.0", false, "boom", &admin())
        .await
        .unwrap();
    // Planned again on their record: still disabled, with their reason, and the report.
    let rec = reg.get("a").unwrap();
    assert_eq!(rec.state, State::Disabled);
    assert_eq!(
        rec.disabled.as_ref().map(|d| d.reason.as_str()),
        Some("elsewhere")
    );
    assert!(
        rec.conditions
            .iter()
            .any(|c| c.kind == condition::UI_LOADED)
    );
    assert_eq!(store.inner.records.lock().unwrap().get("a"), Some(&rec));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_records_apply_in_order_only_when_newer() {
    let store = Arc::new(Counting::default());
    let reg = open(&store);
    let who = admin();
    let mine = reg
        .register(registration("a", "a.panel"), &who)
        .await
        .unwrap()
        .record;
    let mut theirs = mine.clone();
    theirs.updated_at = "2099-01-01T00:00:00Z".into();
    let stale = crate::store::External::Record {
        name: "a".into(),
        record: Some(Box::new(theirs.clone())),
        newer: Box::new(|| false),
    };
    reg.apply_external(stale).await;
    assert_eq!(reg.get("a").unwrap(), mine);
    let newer = crate::store::External::Record {
        name: "a".into(),
        record: Some(Box::new(theirs.clone())),
        newer: Box::new(|| true),
    };
    reg.apply_external(newer).await;
    assert_eq!(reg.get("a").unwrap(), theirs);
    // Written by the other replica, not again by this one.
    assert_eq!(store.records.lock().unwrap().get("a"), Some(&mine));
    // A re-list that no longer names it: gone here too, and its panel id is free.
    let present = crate::store::External::Present {
        names: Default::default(),
        forget: Box::new(|_| {}),
    };
    reg.apply_external(present).await;
    assert!(reg.get("a").is_none());
    assert!(
        reg.register(registration("b", "a.panel"), &who)
            .await
            .is_ok()
    );
    reg.apply_external(crate::store::External::Revoked(vec!["j9".into()]))
        .await;
    assert!(reg.is_revoked("j9"));
}
