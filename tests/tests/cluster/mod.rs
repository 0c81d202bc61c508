//! The cluster the Kubernetes-store scenarios run on: the fake API server (`tests/fake-kube`), or
//! a real cluster from `KUBECONFIG` for the `#[ignore]`d `*_on_a_real_cluster` variants. Shared
//! by the test files that need one (`mod cluster;`).

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use base64::Engine;
use fake_kube::FakeKube;
use serde_json::{Value, json};
use tessera_core::auth::Keys;
use tessera_sdk::Capability;
use tessera_tests::core::{Core, fast_config, temp_dir};

pub const NS: &str = "tessera-system";

/// Fast probes, a short Lease and a short API timeout, so scenarios run in seconds.
pub fn config() -> String {
    fast_config(
        "kubernetes:\n  leaseSeconds: 3\n  renewSeconds: 1\n  retrySeconds: 0.5\n  apiTimeoutSeconds: 2\nurlPolicy:\n  allowHosts: [127.0.0.1]\n",
    )
}

/// Where the scenarios run: the fake API server, or a real cluster from `KUBECONFIG` (the
/// `#[ignore]`d `*_on_a_real_cluster` tests, each in a fresh namespace).
pub enum Backend {
    Fake(FakeKube),
    Real(kube::Client),
}

pub struct Cluster {
    pub backend: Backend,
    pub kubeconfig: PathBuf,
    /// The cores' namespace.
    pub ns: String,
}

impl Cluster {
    pub async fn fake() -> Cluster {
        let fake = FakeKube::start().await.unwrap();
        let kubeconfig = temp_dir("kubeconfig").join("config");
        fake.write_kubeconfig(&kubeconfig, NS).unwrap();
        Cluster {
            backend: Backend::Fake(fake),
            kubeconfig,
            ns: NS.to_string(),
        }
    }

    /// A real cluster from `KUBECONFIG`, in a new namespace `tessera-test-<random>` (deleted by
    /// `cleanup`; left behind when a scenario fails, for inspection).
    pub async fn real() -> Cluster {
        let kubeconfig = PathBuf::from(
            std::env::var_os("KUBECONFIG")
                .expect("the real-cluster tests need KUBECONFIG (e.g. from `kind create cluster`)"),
        );
        let client = kube::Client::try_default().await.unwrap();
        let ns = format!("tessera-test-{}", &tessera_core::auth::new_jti()[..8]);
        let req = axum::http::Request::post("/api/v1/namespaces")
            .header("content-type", "application/json")
            .body(
                serde_json::to_vec(
                    &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
                )
                .unwrap(),
            )
            .unwrap();
        client.request::<Value>(req).await.unwrap();
        Cluster {
            backend: Backend::Real(client),
            kubeconfig,
            ns,
        }
    }

    /// Deletes a real cluster's test namespace.
    pub async fn cleanup(self) {
        if let Backend::Real(client) = &self.backend {
            let req = axum::http::Request::delete(format!("/api/v1/namespaces/{}", self.ns))
                .body(Vec::new())
                .unwrap();
            let _ = client.request::<Value>(req).await;
        }
    }

    /// The fake API server (for the scenarios that inject faults).
    pub fn fake_api(&self) -> &FakeKube {
        match &self.backend {
            Backend::Fake(f) => f,
            Backend::Real(_) => panic!("this scenario needs the fake API server"),
        }
    }

    pub fn path(resource: &str, ns: &str) -> String {
        let group = match resource {
            "leases" => "/apis/coordination.k8s.io/v1",
            "events" => "/apis/events.k8s.io/v1",
            _ => "/api/v1",
        };
        format!("{group}/namespaces/{ns}/{resource}")
    }

    pub fn real_get(client: &kube::Client, path: String) -> Option<Value> {
        let req = axum::http::Request::get(path).body(Vec::new()).unwrap();
        tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current().block_on(client.request::<Value>(req))
        })
        .ok()
    }

    /// An object as the API server has it.
    pub fn get(&self, resource: &str, ns: &str, name: &str) -> Option<Value> {
        match &self.backend {
            Backend::Fake(f) => f.get(resource, ns, name),
            Backend::Real(c) => {
                Cluster::real_get(c, format!("{}/{name}", Cluster::path(resource, ns)))
            }
        }
    }

    /// Every object of a resource in a namespace.
    pub fn list(&self, resource: &str, ns: &str) -> Vec<Value> {
        match &self.backend {
            Backend::Fake(f) => f.list(resource, ns),
            Backend::Real(c) => Cluster::real_get(c, Cluster::path(resource, ns))
                .and_then(|l| l["items"].as_array().cloned())
                .unwrap_or_default(),
        }
    }

    /// Starts a replica named `pod` (its Lease identity).
    pub fn replica(&self, pod: &str, config: &str) -> Core {
        let (kc, cfg, pod, ns) = (
            self.kubeconfig.clone(),
            config.to_string(),
            pod.to_string(),
            self.ns.clone(),
        );
        tokio::task::block_in_place(move || Core::start_kube_as(&kc, &ns, &cfg, &pod))
    }

    pub fn keys(&self) -> Keys {
        let secret = self
            .get("secrets", &self.ns, "tessera-signing-key")
            .expect("signing key Secret");
        let pem = base64::engine::general_purpose::STANDARD
            .decode(secret["data"]["signing-key.pem"].as_str().unwrap())
            .unwrap();
        Keys::from_pem(std::str::from_utf8(&pem).unwrap()).unwrap()
    }

    pub fn admin(&self) -> String {
        self.keys().issue_admin(3600).unwrap().0
    }

    pub fn plugin_token(&self, name: &str) -> String {
        self.scoped_token(name, None)
    }

    /// A registration token limited to plugin services in namespace `ns`.
    pub fn scoped_token(&self, name: &str, ns: Option<&str>) -> String {
        self.keys()
            .issue_registration(
                name,
                &[Capability::UiPanel, Capability::UiRoute],
                ns.map(String::from),
                None,
            )
            .unwrap()
            .0
    }

    pub fn leader(&self) -> Option<String> {
        self.get("leases", &self.ns, "tessera-core-leader")?
            .pointer("/spec/holderIdentity")?
            .as_str()
            .map(String::from)
    }
}

/// Runs `tessera ARGS` against the fake cluster; stdout on success.
pub fn tessera_kube(k: &Cluster, args: &[&str]) -> String {
    let out = std::process::Command::new(tessera_tests::tessera_bin())
        .args(args)
        .env("KUBECONFIG", &k.kubeconfig)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "tessera {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

pub fn secret_token(k: &Cluster, ns: &str, name: &str) -> Option<String> {
    let s = k.get("secrets", ns, name)?;
    let b = base64::engine::general_purpose::STANDARD
        .decode(s["data"]["token"].as_str()?)
        .ok()?;
    String::from_utf8(b).ok()
}
