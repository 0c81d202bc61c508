//! A fake Kubernetes API server for tests, reachable by a real `kube::Client` through a
//! kubeconfig (plain HTTP, any bearer token).
//!
//! It keeps the parts of the API server's contract that a controller depends on, with the real
//! JSON shapes:
//!
//! - resources: ConfigMaps, Secrets and ServiceAccounts (`/api/v1`), Leases
//!   (`coordination.k8s.io/v1`) and Events (`events.k8s.io/v1`), namespaced;
//! - ServiceAccount tokens: `TokenRequest` and `TokenReview` (see `tokens`);
//! - verbs: create (with `generateName`), get, list (label selectors, `limit`/`continue`),
//!   replace, patch (`application/merge-patch+json` and `application/strategic-merge-patch+json`,
//!   which for these flat resources merge the same way), delete (with preconditions), watch;
//! - one global `resourceVersion` counter, bumped per write; a write that changes nothing does
//!   not bump it or emit an event; a stale `resourceVersion` on replace, patch or delete is
//!   `409 Conflict`; creating an existing name is `409 AlreadyExists`; a missing object is
//!   `404 NotFound` — all as `Status` objects;
//! - Secrets' `stringData` folded into base64 `data`; ConfigMaps and Secrets limited to 1 MiB
//!   (`422 Invalid`);
//! - watches: `ADDED`/`MODIFIED`/`DELETED` (an object that stops matching the label selector
//!   is `DELETED` for that watch), `BOOKMARK` every second when asked, resume from a
//!   `resourceVersion`, and an `ERROR` event with `410 Expired` when it is older than the kept
//!   history;
//! - faults: every request answered `503` (and open watches cut) while "unavailable", added
//!   latency, open watches dropped, history compacted.
//!
//! Not modelled: server-side apply, JSON patch, field selectors, other cluster-scoped resources,
//! finalizers, admission, RBAC (every token is allowed).

// Handlers return ready-made error responses from helpers; their size is no concern here.
#![allow(clippy::result_large_err)]

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::Path as FsPath;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use base64::Engine;
use serde_json::{Map, Value, json};
use tokio::sync::{broadcast, watch};

/// Changes kept for resuming watches; older resource versions get `410 Expired`.
const HISTORY: usize = 10_000;
/// Largest ConfigMap or Secret, as the real API server enforces.
const MAX_DATA_BYTES: usize = 1024 * 1024;

/// A resource the fake serves.
struct Resource {
    plural: &'static str,
    group: &'static str,
    version: &'static str,
    kind: &'static str,
}

const RESOURCES: &[Resource] = &[
    Resource {
        plural: "configmaps",
        group: "",
        version: "v1",
        kind: "ConfigMap",
    },
    Resource {
        plural: "secrets",
        group: "",
        version: "v1",
        kind: "Secret",
    },
    Resource {
        plural: "leases",
        group: "coordination.k8s.io",
        version: "v1",
        kind: "Lease",
    },
    Resource {
        plural: "events",
        group: "events.k8s.io",
        version: "v1",
        kind: "Event",
    },
    Resource {
        plural: "serviceaccounts",
        group: "",
        version: "v1",
        kind: "ServiceAccount",
    },
];

/// Index of ServiceAccounts in [`RESOURCES`].
const SERVICE_ACCOUNTS: usize = 4;

mod tokens;
pub use tokens::ISSUER as SERVICE_ACCOUNT_ISSUER;

impl Resource {
    fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// How the API server names the resource in messages: `configmaps`, `leases.coordination.k8s.io`.
    fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }
}

/// One change, as watches see it.
struct Change {
    rv: u64,
    resource: &'static str,
    namespace: String,
    kind: &'static str,
    object: Value,
    /// The object before the change (for label-selector transitions).
    previous: Option<Value>,
}

type Key = (&'static str, String, String);

#[derive(Default)]
struct Inner {
    rv: u64,
    objects: BTreeMap<Key, Value>,
    history: VecDeque<Arc<Change>>,
    /// Watches from a resource version below this one cannot be resumed.
    compacted_to: u64,
    names: u64,
    /// ServiceAccount tokens issued (`TokenRequest`), by token.
    sa_tokens: HashMap<String, tokens::Issued>,
}

struct Shared {
    inner: Mutex<Inner>,
    feed: broadcast::Sender<Arc<Change>>,
    unavailable: AtomicBool,
    latency_ms: AtomicU64,
    cut: watch::Sender<u64>,
    requests: AtomicU64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A running fake API server. Dropping it stops the server.
pub struct FakeKube {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeKube {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeKube {
    /// Starts a server on 127.0.0.1 (ephemeral port) on the current tokio runtime.
    pub async fn start() -> std::io::Result<FakeKube> {
        FakeKube::start_on(0).await
    }

    /// Starts a server on a given port (0: any), e.g. to bring it back on the same address.
    pub async fn start_on(port: u16) -> std::io::Result<FakeKube> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        let addr = listener.local_addr()?;
        let (feed, _) = broadcast::channel(4096);
        let (cut, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner::default()),
            feed,
            unavailable: AtomicBool::new(false),
            latency_ms: AtomicU64::new(0),
            cut,
            requests: AtomicU64::new(0),
        });
        let app = Router::new()
            .route("/api/v1/namespaces", axum::routing::post(create_namespace))
            .route(
                "/api/v1/namespaces/{name}",
                axum::routing::get(namespace).delete(namespace),
            )
            .route(
                "/api/v1/namespaces/{ns}/serviceaccounts/{name}/token",
                axum::routing::post(tokens::token_request),
            )
            .route(
                "/apis/authentication.k8s.io/v1/tokenreviews",
                axum::routing::post(tokens::token_review),
            )
            .route("/api/v1/namespaces/{ns}/{resource}", any(on_collection))
            .route("/api/v1/namespaces/{ns}/{resource}/{name}", any(on_item))
            .route(
                "/apis/{group}/{version}/namespaces/{ns}/{resource}",
                any(on_collection),
            )
            .route(
                "/apis/{group}/{version}/namespaces/{ns}/{resource}/{name}",
                any(on_item),
            )
            .fallback(|| async {
                status(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    "the server could not find the requested resource".into(),
                    None,
                )
            })
            .with_state(shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(FakeKube { addr, shared, task })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Writes a kubeconfig that points at this server, with `namespace` as the default.
    pub fn write_kubeconfig(&self, path: &FsPath, namespace: &str) -> std::io::Result<()> {
        std::fs::write(
            path,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {}\nusers:\n- name: fake\n  user:\n    token: fake-token\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n    namespace: {namespace}\ncurrent-context: fake\n",
                self.url()
            ),
        )
    }

    /// While on, every request is answered `503` and open watches are cut.
    pub fn set_unavailable(&self, on: bool) {
        self.shared.unavailable.store(on, Ordering::SeqCst);
        if on {
            self.drop_watches();
        }
    }

    /// Adds latency before every answer.
    pub fn set_latency(&self, latency: Duration) {
        self.shared
            .latency_ms
            .store(latency.as_millis() as u64, Ordering::SeqCst);
    }

    /// Cuts every open watch connection (clients must re-watch).
    pub fn drop_watches(&self) {
        self.shared.cut.send_modify(|n| *n += 1);
    }

    /// Forgets the change history: resuming a watch from any earlier version gets `410`.
    pub fn compact(&self) {
        let mut inner = self.shared.lock();
        inner.history.clear();
        inner.compacted_to = inner.rv;
    }

    /// An object, as stored.
    pub fn get(&self, resource: &str, namespace: &str, name: &str) -> Option<Value> {
        let res = RESOURCES.iter().find(|r| r.plural == resource)?;
        self.shared
            .lock()
            .objects
            .get(&(res.plural, namespace.to_string(), name.to_string()))
            .cloned()
    }

    /// Every object of a resource in a namespace, by name.
    pub fn list(&self, resource: &str, namespace: &str) -> Vec<Value> {
        let inner = self.shared.lock();
        inner
            .objects
            .iter()
            .filter(|((r, ns, _), _)| *r == resource && ns == namespace)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// The current global resource version.
    pub fn resource_version(&self) -> u64 {
        self.shared.lock().rv
    }

    /// Requests served so far (all verbs).
    pub fn requests(&self) -> u64 {
        self.shared.requests.load(Ordering::SeqCst)
    }

    /// Every ServiceAccount token issued so far expires now (time passing).
    pub fn expire_service_account_tokens(&self) {
        tokens::expire_all(&self.shared);
    }
}

// === handlers ===

type Params = HashMap<String, String>;

/// Namespaces are not enforced (any namespace may hold objects); creating, reading and
/// deleting one answers as the API server does, so clients that manage test namespaces work.
async fn create_namespace(State(s): State<Arc<Shared>>, body: Bytes) -> Response {
    let mut obj = match parse_body(&body) {
        Ok(o) => o,
        Err(e) => return e,
    };
    let rv = {
        let mut inner = s.lock();
        inner.rv += 1;
        inner.rv
    };
    set_meta(&mut obj, "resourceVersion", json!(rv.to_string()));
    set_meta(&mut obj, "creationTimestamp", json!(now_rfc3339()));
    if let Some(m) = obj.as_object_mut() {
        m.insert("status".into(), json!({"phase": "Active"}));
    }
    (StatusCode::CREATED, axum::Json(obj)).into_response()
}

async fn namespace(Path(name): Path<String>) -> Response {
    axum::Json(
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name},
                      "status": {"phase": "Active"}}),
    )
    .into_response()
}

/// `/api/v1/namespaces/{ns}/{resource}` and `/apis/{group}/{version}/namespaces/...`.
async fn on_collection(
    State(s): State<Arc<Shared>>,
    Path(p): Path<HashMap<String, String>>,
    Query(q): Query<Params>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (group, version) = group_version(&p);
    let (ns, resource) = (param(&p, "ns"), param(&p, "resource"));
    collection(s, &group, &version, ns, resource, q, method, headers, body).await
}

/// The same with `/{name}`.
async fn on_item(
    State(s): State<Arc<Shared>>,
    Path(p): Path<HashMap<String, String>>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (group, version) = group_version(&p);
    let (ns, resource, name) = (param(&p, "ns"), param(&p, "resource"), param(&p, "name"));
    item(
        s, &group, &version, ns, resource, name, method, headers, body,
    )
    .await
}

fn param(p: &HashMap<String, String>, k: &str) -> String {
    p.get(k).cloned().unwrap_or_default()
}

/// The core group (`/api/v1`) has no group name.
fn group_version(p: &HashMap<String, String>) -> (String, String) {
    match p.get("group") {
        Some(g) => (g.clone(), param(p, "version")),
        None => (String::new(), "v1".into()),
    }
}

/// Faults and resource lookup common to every request.
async fn admit(
    s: &Shared,
    group: &str,
    version: &str,
    plural: &str,
) -> Result<&'static Resource, Response> {
    faults(s).await?;
    RESOURCES
        .iter()
        .find(|r| r.plural == plural && r.group == group && r.version == version)
        .ok_or_else(|| {
            status(
                StatusCode::NOT_FOUND,
                "NotFound",
                "the server could not find the requested resource".into(),
                None,
            )
        })
}

/// The faults every request meets: the request count, added latency, unavailability.
async fn faults(s: &Shared) -> Result<(), Response> {
    s.requests.fetch_add(1, Ordering::SeqCst);
    let latency = s.latency_ms.load(Ordering::SeqCst);
    if latency > 0 {
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }
    if s.unavailable.load(Ordering::SeqCst) {
        return Err(status(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            "the server is currently unable to handle the request".into(),
            None,
        ));
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn collection(
    s: Arc<Shared>,
    group: &str,
    version: &str,
    ns: String,
    plural: String,
    q: Params,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let res = match admit(&s, group, version, &plural).await {
        Ok(r) => r,
        Err(e) => return e,
    };
    let selector = match q.get("labelSelector").map(|s| Selector::parse(s)) {
        Some(Err(e)) => return status(StatusCode::BAD_REQUEST, "BadRequest", e, None),
        Some(Ok(sel)) => sel,
        None => Selector::default(),
    };
    match method {
        Method::GET if q.get("watch").is_some_and(|w| w == "true" || w == "1") => {
            watch_stream(s, res, ns, selector, &q)
        }
        Method::GET => list(&s, res, &ns, &selector, &q),
        Method::POST => {
            let _ = headers;
            let obj = match parse_body(&body) {
                Ok(o) => o,
                Err(e) => return e,
            };
            let mut inner = s.lock();
            match create(&mut inner, res, &ns, obj) {
                Ok((obj, change)) => {
                    publish(&s, &mut inner, change);
                    (StatusCode::CREATED, axum::Json(obj)).into_response()
                }
                Err(e) => e,
            }
        }
        _ => status(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource".into(),
            None,
        ),
    }
}

#[allow(clippy::too_many_arguments)]
async fn item(
    s: Arc<Shared>,
    group: &str,
    version: &str,
    ns: String,
    plural: String,
    name: String,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let res = match admit(&s, group, version, &plural).await {
        Ok(r) => r,
        Err(e) => return e,
    };
    let key: Key = (res.plural, ns.clone(), name.clone());
    let mut inner = s.lock();
    let Some(existing) = inner.objects.get(&key).cloned() else {
        return not_found(res, &name);
    };
    match method {
        Method::GET => axum::Json(existing).into_response(),
        Method::PUT => {
            let obj = match parse_body(&body) {
                Ok(o) => o,
                Err(e) => return e,
            };
            if obj.pointer("/metadata/name").and_then(Value::as_str) != Some(name.as_str()) {
                return status(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    "the name of the object does not match the name on the URL".into(),
                    None,
                );
            }
            if let Err(e) = check_precondition(res, &name, &existing, rv_of(&obj)) {
                return e;
            }
            store_update(&s, &mut inner, res, key, existing, obj)
        }
        Method::PATCH => {
            let ct = headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if !ct.starts_with("application/merge-patch+json")
                && !ct.starts_with("application/strategic-merge-patch+json")
            {
                return status(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "UnsupportedMediaType",
                    format!(
                        "the body of the request was in an unknown format - accepted media types include: application/merge-patch+json, application/strategic-merge-patch+json (got {ct:?})"
                    ),
                    None,
                );
            }
            let patch = match parse_body(&body) {
                Ok(o) => o,
                Err(e) => return e,
            };
            if let Err(e) = check_precondition(res, &name, &existing, rv_of(&patch)) {
                return e;
            }
            let mut obj = existing.clone();
            merge_patch(&mut obj, &patch);
            store_update(&s, &mut inner, res, key, existing, obj)
        }
        Method::DELETE => {
            let want = serde_json::from_slice::<Value>(&body).ok().and_then(|o| {
                o.pointer("/preconditions/resourceVersion")
                    .and_then(Value::as_str)
                    .map(String::from)
            });
            if let Err(e) = check_precondition(res, &name, &existing, want) {
                return e;
            }
            inner.rv += 1;
            let rv = inner.rv;
            inner.objects.remove(&key);
            let mut gone = existing.clone();
            set_meta(&mut gone, "resourceVersion", json!(rv.to_string()));
            let uid = existing.pointer("/metadata/uid").cloned();
            publish(
                &s,
                &mut inner,
                Change {
                    rv,
                    resource: res.plural,
                    namespace: ns,
                    kind: "DELETED",
                    object: gone,
                    previous: Some(existing),
                },
            );
            axum::Json(json!({
                "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                "details": {"name": name, "group": res.group, "kind": res.plural, "uid": uid}
            }))
            .into_response()
        }
        _ => status(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource".into(),
            None,
        ),
    }
}

// === the store ===

fn create(
    inner: &mut Inner,
    res: &'static Resource,
    ns: &str,
    mut obj: Value,
) -> Result<(Value, Change), Response> {
    if let Some(other) = obj.pointer("/metadata/namespace").and_then(Value::as_str)
        && other != ns
    {
        return Err(status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "the namespace of the provided object does not match the namespace sent on the request"
                .into(),
            None,
        ));
    }
    let name = match (
        obj.pointer("/metadata/name").and_then(Value::as_str),
        obj.pointer("/metadata/generateName")
            .and_then(Value::as_str),
    ) {
        (Some(n), _) if !n.is_empty() => n.to_string(),
        (_, Some(prefix)) if !prefix.is_empty() => {
            inner.names += 1;
            format!("{prefix}{:05x}", inner.names)
        }
        _ => {
            return Err(invalid(
                res,
                "",
                "metadata.name: Required value: name or generateName is required",
            ));
        }
    };
    let key: Key = (res.plural, ns.to_string(), name.clone());
    if inner.objects.contains_key(&key) {
        return Err(status(
            StatusCode::CONFLICT,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", res.qualified()),
            Some(json!({"name": name, "group": res.group, "kind": res.plural})),
        ));
    }
    normalize(res, &mut obj);
    check_size(res, &name, &obj)?;
    inner.rv += 1;
    let rv = inner.rv;
    set_meta(&mut obj, "name", json!(name));
    set_meta(&mut obj, "namespace", json!(ns));
    set_meta(&mut obj, "resourceVersion", json!(rv.to_string()));
    set_meta(
        &mut obj,
        "uid",
        json!(format!("00000000-0000-4000-8000-{rv:012x}")),
    );
    set_meta(&mut obj, "creationTimestamp", json!(now_rfc3339()));
    if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("generateName");
    }
    inner.objects.insert(key, obj.clone());
    let change = Change {
        rv,
        resource: res.plural,
        namespace: ns.to_string(),
        kind: "ADDED",
        object: obj.clone(),
        previous: None,
    };
    Ok((obj, change))
}

/// Stores `obj` in place of `existing`; a no-op write keeps the version and emits nothing.
fn update(
    inner: &mut Inner,
    res: &'static Resource,
    key: Key,
    existing: Value,
    mut obj: Value,
) -> Result<(Value, Option<Change>), Response> {
    normalize(res, &mut obj);
    check_size(res, &key.2, &obj)?;
    // Fields the server owns come from the stored object.
    for field in ["uid", "creationTimestamp", "namespace", "name"] {
        if let Some(v) = existing.pointer(&format!("/metadata/{field}")) {
            set_meta(&mut obj, field, v.clone());
        }
    }
    let current_rv = existing
        .pointer("/metadata/resourceVersion")
        .cloned()
        .unwrap_or(Value::Null);
    set_meta(&mut obj, "resourceVersion", current_rv);
    if obj == existing {
        return Ok((existing, None));
    }
    inner.rv += 1;
    let rv = inner.rv;
    set_meta(&mut obj, "resourceVersion", json!(rv.to_string()));
    inner.objects.insert(key.clone(), obj.clone());
    let change = Change {
        rv,
        resource: res.plural,
        namespace: key.1,
        kind: "MODIFIED",
        object: obj.clone(),
        previous: Some(existing),
    };
    Ok((obj, Some(change)))
}

/// Replaces an object and answers with it (publishing the change, if any).
fn store_update(
    s: &Shared,
    inner: &mut Inner,
    res: &'static Resource,
    key: Key,
    existing: Value,
    obj: Value,
) -> Response {
    match update(inner, res, key, existing, obj) {
        Ok((obj, change)) => {
            if let Some(c) = change {
                publish(s, inner, c);
            }
            axum::Json(obj).into_response()
        }
        Err(e) => e,
    }
}

fn publish(s: &Shared, inner: &mut Inner, change: Change) {
    let change = Arc::new(change);
    inner.history.push_back(change.clone());
    while inner.history.len() > HISTORY {
        if let Some(old) = inner.history.pop_front() {
            inner.compacted_to = old.rv;
        }
    }
    let _ = s.feed.send(change);
}

fn list(s: &Shared, res: &'static Resource, ns: &str, sel: &Selector, q: &Params) -> Response {
    let inner = s.lock();
    let limit = q
        .get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .filter(|l| *l > 0);
    let after = q.get("continue").filter(|c| !c.is_empty());
    let mut items: Vec<Value> = inner
        .objects
        .iter()
        .filter(|((r, n, name), obj)| {
            *r == res.plural
                && n == ns
                && after.is_none_or(|a| name.as_str() > a.as_str())
                && sel.matches(obj)
        })
        .map(|(_, v)| v.clone())
        .collect();
    let mut meta = Map::new();
    meta.insert("resourceVersion".into(), json!(inner.rv.to_string()));
    if let Some(limit) = limit
        && items.len() > limit
    {
        items.truncate(limit);
        if let Some(last) = items
            .last()
            .and_then(|o| o.pointer("/metadata/name"))
            .cloned()
        {
            meta.insert("continue".into(), last);
        }
    }
    axum::Json(json!({
        "kind": format!("{}List", res.kind),
        "apiVersion": res.api_version(),
        "metadata": meta,
        "items": items,
    }))
    .into_response()
}

fn watch_stream(
    s: Arc<Shared>,
    res: &'static Resource,
    ns: String,
    sel: Selector,
    q: &Params,
) -> Response {
    let bookmarks = q.get("allowWatchBookmarks").is_some_and(|b| b == "true");
    let timeout = q
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map(Duration::from_secs);
    let from = q
        .get("resourceVersion")
        .filter(|v| !v.is_empty() && v.as_str() != "0");
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(256);
    // Take the backlog and subscribe under one lock, so nothing falls between them.
    let (backlog, mut live, mut last) = {
        let inner = s.lock();
        let live = s.feed.subscribe();
        let mut backlog = Vec::new();
        match from.map(|v| v.parse::<u64>()) {
            None => {
                for ((r, n, _), obj) in &inner.objects {
                    if *r == res.plural && *n == ns && sel.matches(obj) {
                        backlog.push(event("ADDED", obj));
                    }
                }
            }
            Some(Ok(v)) if v >= inner.compacted_to => {
                for c in &inner.history {
                    if c.rv > v
                        && let Some(e) = view(c, res, &ns, &sel)
                    {
                        backlog.push(e);
                    }
                }
            }
            Some(Ok(v)) => {
                let status = json!({
                    "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "message": format!("too old resource version: {v} ({})", inner.compacted_to + 1),
                    "reason": "Expired", "code": 410,
                });
                backlog.push(line(&json!({"type": "ERROR", "object": status})));
                let _ = tx.try_send(Ok(backlog.concat().into()));
                drop(tx);
                return stream_response(rx);
            }
            Some(Err(_)) => {
                return status(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    "resourceVersion: invalid value".into(),
                    None,
                );
            }
        }
        (backlog, live, inner.rv)
    };
    let mut cut = s.cut.subscribe();
    tokio::spawn(async move {
        for e in backlog {
            if tx.send(Ok(e.into())).await.is_err() {
                return;
            }
        }
        let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.tick().await;
        loop {
            let until_deadline = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            let out = tokio::select! {
                c = live.recv() => match c {
                    Ok(c) if c.rv > last => {
                        last = c.rv;
                        view(&c, res, &ns, &sel)
                    }
                    Ok(_) => None,
                    // Fell behind: end the watch; the client resumes from its last version.
                    Err(_) => return,
                },
                _ = tick.tick(), if bookmarks => Some(line(&json!({
                    "type": "BOOKMARK",
                    "object": {"kind": res.kind, "apiVersion": res.api_version(),
                               "metadata": {"resourceVersion": last.to_string()}},
                }))),
                _ = cut.changed() => {
                    // An abrupt cut, as a dropped connection looks to the client.
                    let _ = tx.send(Err(std::io::Error::other("watch connection dropped"))).await;
                    return;
                }
                _ = until_deadline => return,
            };
            if let Some(e) = out
                && tx.send(Ok(e.into())).await.is_err()
            {
                return;
            }
        }
    });
    stream_response(rx)
}

fn stream_response(rx: tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx)),
    )
        .into_response()
}

/// A change as one watch sees it (label-selector transitions become ADDED/DELETED).
fn view(c: &Change, res: &Resource, ns: &str, sel: &Selector) -> Option<Vec<u8>> {
    if c.resource != res.plural || c.namespace != ns {
        return None;
    }
    let now = sel.matches(&c.object);
    let before = c.previous.as_ref().is_some_and(|p| sel.matches(p));
    let kind = match (c.kind, before, now) {
        ("DELETED", true, _) => "DELETED",
        ("DELETED", false, _) => return None,
        ("ADDED", _, true) => "ADDED",
        ("MODIFIED", true, true) => "MODIFIED",
        ("MODIFIED", false, true) => "ADDED",
        ("MODIFIED", true, false) => "DELETED",
        _ => return None,
    };
    Some(event(kind, &c.object))
}

fn event(kind: &str, obj: &Value) -> Vec<u8> {
    line(&json!({"type": kind, "object": obj}))
}

fn line(v: &Value) -> Vec<u8> {
    let mut out = serde_json::to_vec(v).unwrap_or_default();
    out.push(b'\n');
    out
}

// === helpers ===

fn parse_body(body: &[u8]) -> Result<Value, Response> {
    match serde_json::from_slice::<Value>(body) {
        Ok(v @ Value::Object(_)) => Ok(v),
        Ok(_) => Err(status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "the body must be a JSON object".into(),
            None,
        )),
        Err(e) => Err(status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            format!("the body cannot be decoded: {e}"),
            None,
        )),
    }
}

fn rv_of(obj: &Value) -> Option<String> {
    obj.pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .filter(|v| !v.is_empty())
        .map(String::from)
}

fn check_precondition(
    res: &Resource,
    name: &str,
    existing: &Value,
    want: Option<String>,
) -> Result<(), Response> {
    match want {
        Some(want)
            if Some(want.as_str())
                != existing
                    .pointer("/metadata/resourceVersion")
                    .and_then(Value::as_str) =>
        {
            Err(status(
                StatusCode::CONFLICT,
                "Conflict",
                format!(
                    "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
                    res.qualified()
                ),
                Some(json!({"name": name, "group": res.group, "kind": res.plural})),
            ))
        }
        _ => Ok(()),
    }
}

/// Folds a Secret's `stringData` into `data` (base64), as the API server does.
fn normalize(res: &Resource, obj: &mut Value) {
    if res.plural != "secrets" {
        return;
    }
    let Some(map) = obj.as_object_mut() else {
        return;
    };
    if let Some(Value::Object(strings)) = map.remove("stringData") {
        let data = map
            .entry("data")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Some(data) = data.as_object_mut() {
            for (k, v) in strings {
                let text = v.as_str().unwrap_or_default();
                data.insert(
                    k,
                    json!(base64::engine::general_purpose::STANDARD.encode(text)),
                );
            }
        }
    }
}

fn check_size(res: &Resource, name: &str, obj: &Value) -> Result<(), Response> {
    if res.plural != "configmaps" && res.plural != "secrets" {
        return Ok(());
    }
    let size: usize = ["data", "binaryData"]
        .iter()
        .filter_map(|f| obj.get(*f).and_then(Value::as_object))
        .flat_map(|m| m.iter())
        .map(|(k, v)| {
            let len = v.as_str().map_or(0, str::len);
            // Secret data is base64; the limit is on the decoded bytes.
            k.len()
                + if res.plural == "secrets" {
                    len / 4 * 3
                } else {
                    len
                }
        })
        .sum();
    if size > MAX_DATA_BYTES {
        return Err(invalid(
            res,
            name,
            &format!("[]: Too long: must have at most {MAX_DATA_BYTES} bytes"),
        ));
    }
    Ok(())
}

fn invalid(res: &Resource, name: &str, what: &str) -> Response {
    status(
        StatusCode::UNPROCESSABLE_ENTITY,
        "Invalid",
        format!("{} \"{name}\" is invalid: {what}", res.kind),
        Some(json!({"name": name, "group": res.group, "kind": res.kind})),
    )
}

fn not_found(res: &Resource, name: &str) -> Response {
    status(
        StatusCode::NOT_FOUND,
        "NotFound",
        format!("{} \"{name}\" not found", res.qualified()),
        Some(json!({"name": name, "group": res.group, "kind": res.plural})),
    )
}

fn status(code: StatusCode, reason: &str, message: String, details: Option<Value>) -> Response {
    let mut body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code.as_u16(),
    });
    if let (Some(d), Some(m)) = (details, body.as_object_mut()) {
        m.insert("details".into(), d);
    }
    (code, axum::Json(body)).into_response()
}

fn set_meta(obj: &mut Value, field: &str, v: Value) {
    if let Some(map) = obj.as_object_mut() {
        let meta = map
            .entry("metadata")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Some(meta) = meta.as_object_mut() {
            meta.insert(field.to_string(), v);
        }
    }
}

/// RFC 7386 JSON merge patch.
fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(t) = target {
        for (k, v) in p {
            if v.is_null() {
                t.remove(k);
            } else {
                merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    }
}

/// A label selector: `k=v`, `k==v`, `k!=v`, `k`, `!k`, `k in (a,b)`, `k notin (a,b)`.
#[derive(Clone, Debug, Default)]
struct Selector(Vec<Requirement>);

#[derive(Clone, Debug)]
enum Requirement {
    Eq(String, String),
    Ne(String, String),
    Exists(String),
    Absent(String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
}

impl Selector {
    fn parse(text: &str) -> Result<Selector, String> {
        let mut out = Vec::new();
        // Split on commas outside parentheses.
        let mut depth = 0;
        let mut start = 0;
        let mut parts = Vec::new();
        for (i, c) in text.char_indices() {
            match c {
                '(' => depth += 1,
                ')' => depth -= 1,
                ',' if depth == 0 => {
                    parts.push(&text[start..i]);
                    start = i + 1;
                }
                _ => {}
            }
        }
        parts.push(&text[start..]);
        for part in parts.into_iter().map(str::trim).filter(|p| !p.is_empty()) {
            let bad = || format!("unable to parse requirement: {part:?}");
            let set = |rest: &str| -> Result<Vec<String>, String> {
                let inner = rest
                    .trim()
                    .strip_prefix('(')
                    .and_then(|r| r.strip_suffix(')'))
                    .ok_or_else(bad)?;
                Ok(inner.split(',').map(|v| v.trim().to_string()).collect())
            };
            let r = if let Some((k, v)) = part.split_once("!=") {
                Requirement::Ne(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = part.split_once("==") {
                Requirement::Eq(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = part.split_once('=') {
                Requirement::Eq(k.trim().into(), v.trim().into())
            } else if let Some((k, rest)) = part.split_once(" notin ") {
                Requirement::NotIn(k.trim().into(), set(rest)?)
            } else if let Some((k, rest)) = part.split_once(" in ") {
                Requirement::In(k.trim().into(), set(rest)?)
            } else if let Some(k) = part.strip_prefix('!') {
                Requirement::Absent(k.trim().into())
            } else if part
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
            {
                Requirement::Exists(part.into())
            } else {
                return Err(bad());
            };
            out.push(r);
        }
        Ok(Selector(out))
    }

    fn matches(&self, obj: &Value) -> bool {
        let labels = obj.pointer("/metadata/labels").and_then(Value::as_object);
        let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        self.0.iter().all(|r| match r {
            Requirement::Eq(k, v) => get(k) == Some(v.as_str()),
            Requirement::Ne(k, v) => get(k) != Some(v.as_str()),
            Requirement::Exists(k) => get(k).is_some(),
            Requirement::Absent(k) => get(k).is_none(),
            Requirement::In(k, vs) => get(k).is_some_and(|v| vs.iter().any(|x| x == v)),
            Requirement::NotIn(k, vs) => get(k).is_none_or(|v| !vs.iter().any(|x| x == v)),
        })
    }
}

/// Now as RFC 3339 with seconds, UTC (as `creationTimestamp`).
fn now_rfc3339() -> String {
    rfc3339(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    )
}

/// Seconds since the epoch as RFC 3339 (UTC, whole seconds).
fn rfc3339(secs: u64) -> String {
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_parse_and_match() {
        let obj = json!({"metadata": {"labels": {"app": "tessera", "tier": "core"}}});
        for (sel, want) in [
            ("app=tessera", true),
            ("app==tessera,tier=core", true),
            ("app!=tessera", false),
            ("tier", true),
            ("!tier", false),
            ("tier in (core, web)", true),
            ("tier notin (core)", false),
            ("missing notin (x)", true),
            ("", true),
        ] {
            assert_eq!(Selector::parse(sel).unwrap().matches(&obj), want, "{sel}");
        }
        assert!(Selector::parse("a in b").is_err());
    }

    #[test]
    fn merge_patch_follows_rfc_7386() {
        let mut t = json!({"a": "b", "c": {"d": "e", "f": "g"}});
        merge_patch(&mut t, &json!({"a": "z", "c": {"f": null}}));
        assert_eq!(t, json!({"a": "z", "c": {"d": "e"}}));
    }

    #[test]
    fn rfc3339_is_well_formed() {
        let t = now_rfc3339();
        assert_eq!(t.len(), 20, "{t}");
        assert!(t.starts_with("20") && t.ends_with('Z'));
    }
}
