//! The fake API server against a real `kube::Client`: the semantics controllers rely on.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use fake_kube::FakeKube;
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};

async fn client(fake: &FakeKube) -> kube::Client {
    let dir =
        std::env::temp_dir().join(format!("fake-kube-{}-{}", std::process::id(), fake.port()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("config");
    fake.write_kubeconfig(&path, "ns1").unwrap();
    let kc = kube::config::Kubeconfig::read_from(&path).unwrap();
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    kube::Client::try_from(cfg).unwrap()
}

fn cm(name: &str, labels: &[(&str, &str)], data: &str) -> ConfigMap {
    ConfigMap {
        metadata: kube::api::ObjectMeta {
            name: Some(name.into()),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..Default::default()
        },
        data: Some(BTreeMap::from([("k".to_string(), data.to_string())])),
        ..Default::default()
    }
}

fn status_of(e: kube::Error) -> (u16, String) {
    match e {
        kube::Error::Api(s) => (s.code, s.reason),
        other => panic!("not an API error: {other}"),
    }
}

#[tokio::test]
async fn writes_follow_the_api_server_rules() {
    let fake = FakeKube::start().await.unwrap();
    let api: Api<ConfigMap> = Api::namespaced(client(&fake).await, "ns1");
    let pp = PostParams::default();
    let a = api
        .create(&pp, &cm("a", &[("app", "x")], "1"))
        .await
        .unwrap();
    let rv1 = a.metadata.resource_version.clone().unwrap();
    // Creating it again: 409 AlreadyExists.
    let e = api.create(&pp, &cm("a", &[], "1")).await.unwrap_err();
    assert_eq!(status_of(e), (409, "AlreadyExists".into()));
    // A missing object: 404 NotFound; get_opt reads it as None.
    assert_eq!(
        status_of(api.get("nope").await.unwrap_err()),
        (404, "NotFound".into())
    );
    assert!(api.get_opt("nope").await.unwrap().is_none());
    // Replace with the current version: bumps it; with a stale one: 409 Conflict.
    let mut b = a.clone();
    b.data = Some(BTreeMap::from([("k".to_string(), "2".to_string())]));
    let b = api.replace("a", &pp, &b).await.unwrap();
    let rv2 = b.metadata.resource_version.clone().unwrap();
    assert!(rv2.parse::<u64>().unwrap() > rv1.parse::<u64>().unwrap());
    let e = api.replace("a", &pp, &a).await.unwrap_err();
    assert_eq!(status_of(e), (409, "Conflict".into()));
    // A write that changes nothing keeps the version.
    let same = api.replace("a", &pp, &b).await.unwrap();
    assert_eq!(
        same.metadata.resource_version.as_deref(),
        Some(rv2.as_str())
    );
    // Merge patch.
    let patched = api
        .patch(
            "a",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"data": {"extra": "y"}})),
        )
        .await
        .unwrap();
    assert_eq!(patched.data.unwrap().len(), 2);
    // Delete with a stale precondition: 409; then for real; then 404.
    let stale = DeleteParams {
        preconditions: Some(kube::api::Preconditions {
            resource_version: Some(rv1),
            uid: None,
        }),
        ..Default::default()
    };
    assert_eq!(status_of(api.delete("a", &stale).await.unwrap_err()).0, 409);
    api.delete("a", &DeleteParams::default()).await.unwrap();
    assert_eq!(
        status_of(api.delete("a", &DeleteParams::default()).await.unwrap_err()).0,
        404
    );
    // ConfigMaps are limited to 1 MiB: 422 Invalid.
    let big = cm("big", &[], &"x".repeat(1024 * 1024 + 1));
    assert_eq!(
        status_of(api.create(&pp, &big).await.unwrap_err()),
        (422, "Invalid".into())
    );
    // Secrets' stringData becomes base64 data.
    let secrets: Api<Secret> = Api::namespaced(client(&fake).await, "ns1");
    let s = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some("s".into()),
            ..Default::default()
        },
        string_data: Some(BTreeMap::from([("token".to_string(), "abc".to_string())])),
        ..Default::default()
    };
    let s = secrets.create(&pp, &s).await.unwrap();
    assert_eq!(s.data.unwrap()["token"].0, b"abc");
    assert!(s.string_data.is_none());
}

#[tokio::test]
async fn lists_select_labels_and_page() {
    let fake = FakeKube::start().await.unwrap();
    let api: Api<ConfigMap> = Api::namespaced(client(&fake).await, "ns1");
    let pp = PostParams::default();
    for i in 0..5 {
        let tier = if i % 2 == 0 { "core" } else { "web" };
        api.create(&pp, &cm(&format!("c{i}"), &[("tier", tier)], "v"))
            .await
            .unwrap();
    }
    let core = api
        .list(&ListParams::default().labels("tier=core"))
        .await
        .unwrap();
    assert_eq!(core.items.len(), 3);
    let not_core = api
        .list(&ListParams::default().labels("tier!=core"))
        .await
        .unwrap();
    assert_eq!(not_core.items.len(), 2);
    let page = api.list(&ListParams::default().limit(2)).await.unwrap();
    assert_eq!(page.items.len(), 2);
    let token = page.metadata.continue_.clone().unwrap();
    let rest = api
        .list(&ListParams::default().limit(10).continue_token(&token))
        .await
        .unwrap();
    assert_eq!(rest.items.len(), 3);
    // Another namespace is another world.
    let other: Api<ConfigMap> = Api::namespaced(client(&fake).await, "ns2");
    assert!(
        other
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
}

#[tokio::test]
async fn watches_resume_bookmark_and_expire() {
    let fake = FakeKube::start().await.unwrap();
    let api: Api<ConfigMap> = Api::namespaced(client(&fake).await, "ns1");
    let pp = PostParams::default();
    let a = api
        .create(&pp, &cm("a", &[("app", "x")], "1"))
        .await
        .unwrap();
    let from = a.metadata.resource_version.clone().unwrap();
    let mut b = a.clone();
    b.data = Some(BTreeMap::from([("k".to_string(), "2".to_string())]));
    api.replace("a", &pp, &b).await.unwrap();
    // A label change that stops matching is a DELETED for a selecting watch.
    let mut c = api.get("a").await.unwrap();
    c.metadata.labels = Some(BTreeMap::from([("app".to_string(), "y".to_string())]));
    api.replace("a", &pp, &c).await.unwrap();

    // Resume from the first version: the later changes, in order, as this selector sees them.
    let wp = WatchParams::default().labels("app=x").timeout(5);
    let mut stream = api.watch(&wp, &from).await.unwrap().boxed();
    let mut kinds = Vec::new();
    let started = Instant::now();
    while let Some(ev) = stream.next().await {
        match ev.unwrap() {
            WatchEvent::Added(_) => kinds.push("ADDED"),
            WatchEvent::Modified(_) => kinds.push("MODIFIED"),
            WatchEvent::Deleted(_) => kinds.push("DELETED"),
            WatchEvent::Bookmark(_) => {
                kinds.push("BOOKMARK");
                break;
            }
            WatchEvent::Error(e) => panic!("{e:?}"),
        }
        assert!(started.elapsed() < Duration::from_secs(4));
    }
    assert_eq!(kinds, ["MODIFIED", "DELETED", "BOOKMARK"]);

    // After compaction, resuming from an old version is 410 Expired.
    fake.compact();
    let mut stream = api
        .watch(&WatchParams::default().timeout(5), &from)
        .await
        .unwrap()
        .boxed();
    match stream.next().await.unwrap().unwrap() {
        WatchEvent::Error(e) => assert_eq!((e.code, e.reason.as_str()), (410, "Expired")),
        other => panic!("expected 410, got {other:?}"),
    }
}

#[tokio::test]
async fn faults_answer_503_and_cut_watches() {
    let fake = FakeKube::start().await.unwrap();
    let api: Api<ConfigMap> = Api::namespaced(client(&fake).await, "ns1");
    let list = api.list(&ListParams::default()).await.unwrap();
    let rv = list.metadata.resource_version.unwrap();
    let mut stream = api
        .watch(&WatchParams::default().timeout(30), &rv)
        .await
        .unwrap()
        .boxed();
    fake.drop_watches();
    // The cut ends the stream (with an error or the end), it does not hang.
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match stream.next().await {
                None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the watch was not cut");
    fake.set_latency(Duration::from_millis(300));
    let t = Instant::now();
    api.list(&ListParams::default()).await.unwrap();
    assert!(t.elapsed() >= Duration::from_millis(300));
    fake.set_latency(Duration::ZERO);
    // While unavailable every request is a 503 (the client's own retries give up in the end;
    // a bounded call sees no answer).
    fake.set_unavailable(true);
    let r =
        tokio::time::timeout(Duration::from_millis(500), api.list(&ListParams::default())).await;
    assert!(
        !matches!(r, Ok(Ok(_))),
        "a request succeeded while unavailable"
    );
    fake.set_unavailable(false);
    api.list(&ListParams::default()).await.unwrap();
}
