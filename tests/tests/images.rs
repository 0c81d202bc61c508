//! The container images and the compose harness, checked with real linters (no Docker engine
//! runs here): hadolint on both Dockerfiles, the compose file against the Compose
//! Specification's schema, and the rules the images promise.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use tessera_tests::repo_root;

fn venv_tool(name: &str, env: &str) -> std::path::PathBuf {
    tessera_tests::tool(name, env, &format!("venv/bin/{name}"))
}

const DOCKERFILES: [&str; 2] = ["Dockerfile", "plugin-template/Dockerfile"];

#[test]
fn dockerfiles_pass_hadolint_with_no_finding() {
    for f in DOCKERFILES {
        let out = Command::new(venv_tool("hadolint", "HADOLINT"))
            .args(["--failure-threshold", "info"])
            .arg(repo_root().join(f))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{f}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn images_are_multi_stage_non_root_and_have_a_healthcheck() {
    for f in DOCKERFILES {
        let text = std::fs::read_to_string(repo_root().join(f)).unwrap();
        let lines: Vec<&str> = text.lines().map(str::trim).collect();
        let froms: Vec<usize> = (0..lines.len())
            .filter(|&i| lines[i].starts_with("FROM "))
            .collect();
        assert!(froms.len() >= 2, "{f}: not multi-stage");
        let last = &lines[*froms.last().unwrap()..];
        assert!(
            last[0].contains("distroless"),
            "{f}: the runtime image is not minimal: {}",
            last[0]
        );
        let user = last
            .iter()
            .rev()
            .find_map(|l| l.strip_prefix("USER "))
            .expect("a USER in the runtime stage");
        assert!(
            !["root", "0", "0:0"].contains(&user) && !user.starts_with("0:"),
            "{f}: runs as {user}"
        );
        assert!(
            last.iter().any(|l| l.starts_with("HEALTHCHECK ")),
            "{f}: no HEALTHCHECK"
        );
        assert!(last.iter().any(|l| l.starts_with("ENTRYPOINT [")), "{f}");
    }
}

#[test]
fn the_compose_harness_follows_the_compose_specification() {
    let out = Command::new(venv_tool("check-jsonschema", "CHECK_JSONSCHEMA"))
        .args(["--builtin-schema", "vendor.compose-spec"])
        .arg(repo_root().join("docker-compose.plugin.yml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The files it mounts exist, and the core's config there is one the core accepts.
    let compose: serde_json::Value = serde_norway::from_str(
        &std::fs::read_to_string(repo_root().join("docker-compose.plugin.yml")).unwrap(),
    )
    .unwrap();
    for (name, svc) in compose["services"].as_object().unwrap() {
        for v in svc["volumes"].as_array().into_iter().flatten() {
            let src = v.as_str().unwrap().split(':').next().unwrap();
            if src.starts_with("./") {
                assert!(repo_root().join(src).exists(), "{name}: {src} is missing");
            }
        }
    }
    let cfg = tessera_core::config::Config::from_file(&repo_root().join("docker/core-config.yaml"))
        .unwrap();
    cfg.check_final().unwrap();
    assert!(cfg.url_policy.allow_hosts.contains(&"plugin".to_string()));
}

#[test]
fn the_shell_scripts_are_shellcheck_clean() {
    let shellcheck = tessera_tests::tool("shellcheck", "SHELLCHECK", "shellcheck");
    for f in [
        "kind/e2e.sh",
        "scripts/test",
        ".ci/run",
        "bench/run",
        "tests/attack/schemathesis.sh",
    ] {
        let out = Command::new(&shellcheck)
            .arg(repo_root().join(f))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{f}:\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    let kind: serde_json::Value = serde_norway::from_str(
        &std::fs::read_to_string(repo_root().join("kind/cluster.yaml")).unwrap(),
    )
    .unwrap();
    assert_eq!(kind["kind"], "Cluster");
    assert_eq!(kind["apiVersion"], "kind.x-k8s.io/v1alpha4");
}
