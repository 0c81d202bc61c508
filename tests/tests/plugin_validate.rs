//! `tessera plugin validate`, run as a user runs it: the real binary on real files.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::path::PathBuf;

use serde_json::Value;
use tessera_tests::{repo_root, tessera, tessera_with_stdin};

fn invalid_examples() -> Vec<PathBuf> {
    let dir = repo_root().join("schemas/examples/invalid");
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

#[test]
fn valid_examples_pass() {
    for file in [
        "schemas/examples/analytics.yaml",
        "plugin-template/plugin.yaml",
    ] {
        let run = tessera(&["plugin", "validate", file]);
        assert_eq!(run.code, Some(0), "{file}: {run:?}");
        assert!(run.stdout.contains("valid plugin manifest"), "{run:?}");
        assert!(
            run.stdout.contains("compatible with core plugin API 2.5.0"),
            "{run:?}"
        );
        assert!(
            run.stderr.is_empty(),
            "no warnings expected for {file}: {}",
            run.stderr
        );
    }
}

/// Each `schemas/examples/invalid/*.yaml` is paired with `*.expected`: `# exit N`, then the
/// exact lines the user sees (standard output for exit 1, standard error for exit 2).
/// `TESSERA_BLESS=1` rewrites the `.expected` files from the current output, for review.
#[test]
fn invalid_examples_produce_their_expected_errors() {
    let examples = invalid_examples();
    assert!(
        examples.len() >= 12,
        "at least 12 invalid examples, found {}",
        examples.len()
    );
    let bless = std::env::var_os("TESSERA_BLESS").is_some();
    let mut mismatches = Vec::new();
    for file in examples {
        let rel = file
            .strip_prefix(repo_root())
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let run = tessera(&["plugin", "validate", &rel]);
        let code = run.code.expect("exited normally");
        assert!(code == 1 || code == 2, "{rel}: exit {code}: {run:?}");
        let shown = if code == 2 { &run.stderr } else { &run.stdout };
        let actual = format!("# exit {code}\n{}", shown.trim_end());
        let expected_file = file.with_extension("expected");
        if bless {
            fs::write(&expected_file, format!("{actual}\n")).unwrap();
            continue;
        }
        let expected = fs::read_to_string(&expected_file)
            .unwrap_or_else(|_| panic!("{} is missing", expected_file.display()));
        if expected.trim_end() != actual {
            mismatches.push(format!(
                "{rel}\n--- expected\n{}\n--- actual\n{actual}",
                expected.trim_end()
            ));
        }
        if code == 1 {
            let summary = run.stderr.lines().last().unwrap_or_default();
            assert!(
                summary.starts_with(&format!("{rel}: invalid, ")),
                "{rel}: {}",
                run.stderr
            );
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n\n"));
}

#[test]
fn every_problem_line_is_a_pointer_and_a_message() {
    for file in invalid_examples() {
        let rel = file
            .strip_prefix(repo_root())
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let run = tessera(&["plugin", "validate", &rel]);
        if run.code != Some(1) {
            continue;
        }
        for line in run.stdout.lines() {
            let (path, message) = line.split_once(": ").expect(line);
            assert!(path.starts_with('/'), "{rel}: {line}");
            assert!(!message.is_empty(), "{rel}: {line}");
        }
    }
}

#[test]
fn json_output_when_valid_is_the_normalized_manifest() {
    let run = tessera(&[
        "plugin",
        "validate",
        "--json",
        "schemas/examples/analytics.yaml",
    ]);
    assert_eq!(run.code, Some(0), "{run:?}");
    let m: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(m["name"], "analytics");
    assert_eq!(m["version"], "1.4.0");
    let caps: Vec<&str> = m["capabilities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    let mut sorted = caps.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(caps, sorted, "capabilities sorted and de-duplicated");
    assert_eq!(m["compat"]["core"], ">=2.5 <3.0");
    // Defaults filled in where the file leaves them out: the webhook's tolerance is only for a
    // timestamp it does not name, the job's concurrency and deadline are.
    assert!(m["webhooks"][0].get("toleranceSeconds").is_none(), "{m}");
    assert_eq!(m["jobs"][0]["concurrency"], "Forbid", "{m}");
    assert_eq!(m["jobs"][0]["startingDeadlineSeconds"], 60, "{m}");

    // Defaults are filled in.
    let run = tessera_with_stdin(
        &["plugin", "validate", "--json", "-"],
        Some(b"name: tiny\nversion: \"0.0.1\"\ncompat: {core: \"*\"}\nui: {mode: ModuleFederation, remotePath: /ui/entry.js}\nendpoints: {basePath: /api}\nhealth: {livenessPath: /healthz, readinessPath: /readyz}\ncapabilities: [ui:route, ui:panel, ui:route]\n"),
    );
    assert_eq!(run.code, Some(0), "{run:?}");
    let m: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(
        m["capabilities"],
        serde_json::json!(["ui:panel", "ui:route"])
    );
    assert_eq!(m["ui"]["mode"], "ModuleFederation");
    assert_eq!(m["ui"]["remotePath"], "/ui/entry.js");
    assert_eq!(
        m["ui"]["contributions"],
        serde_json::json!({"panels": [], "routes": []})
    );
    assert_eq!(m["endpoints"]["basePath"], "/api");
    assert_eq!(
        m["health"],
        serde_json::json!({"livenessPath": "/healthz", "readinessPath": "/readyz"})
    );
    assert_eq!(m["secrets"], serde_json::json!([]));
    assert_eq!(
        m["permissions"]["network"]["egressAllow"],
        serde_json::json!([])
    );

    // The normalized form is itself a valid manifest, and normalizing it changes nothing.
    let again = tessera_with_stdin(
        &["plugin", "validate", "--json", "-"],
        Some(run.stdout.as_bytes()),
    );
    assert_eq!(again.code, Some(0), "{again:?}");
    assert_eq!(serde_json::from_str::<Value>(&again.stdout).unwrap(), m);
}

#[test]
fn json_output_when_invalid_lists_every_problem() {
    let run = tessera(&[
        "plugin",
        "validate",
        "--json",
        "schemas/examples/invalid/19-many-problems.yaml",
    ]);
    assert_eq!(run.code, Some(1), "{run:?}");
    let problems: Vec<Value> = serde_json::from_str(&run.stdout).unwrap();
    let paths: Vec<&str> = problems
        .iter()
        .map(|p| p["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        paths,
        ["/compat/core", "/ui/mode", "/ui/remotePath", "/version"]
    );
    for p in &problems {
        assert!(p["message"].as_str().is_some_and(|m| !m.is_empty()));
        assert_eq!(p["file"], "schemas/examples/invalid/19-many-problems.yaml");
    }
}

#[test]
fn unreadable_input_exits_2_with_position() {
    let run = tessera(&[
        "plugin",
        "validate",
        "schemas/examples/invalid/14-not-yaml.yaml",
        "--json",
    ]);
    assert_eq!(run.code, Some(2), "{run:?}");
    let e: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(e["error"]["code"], "manifest_syntax");
    assert_eq!(e["error"]["details"][0]["line"], 5);
    assert_eq!(e["error"]["details"][0]["column"], 7);

    let run = tessera(&["plugin", "validate", "no/such/plugin.yaml"]);
    assert_eq!(run.code, Some(2), "{run:?}");
    assert!(
        run.stderr
            .starts_with("error: no/such/plugin.yaml: cannot read the file"),
        "{run:?}"
    );

    let run = tessera(&["plugin", "validate", "schemas"]);
    assert_eq!(run.code, Some(2), "{run:?}");
    assert!(
        run.stderr
            .contains("is a directory, and holds no plugin.yaml"),
        "{run:?}"
    );

    // A plugin's folder stands for its plugin.yaml.
    let run = tessera(&["plugin", "validate", "plugin-template"]);
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(
        run.stdout.starts_with("plugin-template/plugin.yaml: valid"),
        "{run:?}"
    );
}

#[test]
fn hostile_input_is_refused_with_bounded_work() {
    let dir = std::env::temp_dir().join(format!("tessera-validate-{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    let write = |name: &str, bytes: &[u8]| {
        let p = dir.join(name);
        fs::write(&p, bytes).unwrap();
        p.to_string_lossy().into_owned()
    };

    // Over 1 MiB: refused from its size, before parsing.
    let big = write("big.yaml", &vec![b'#'; (1 << 20) + 1]);
    let run = tessera(&["plugin", "validate", &big, "--json"]);
    assert_eq!(run.code, Some(2), "{run:?}");
    let e: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(e["error"]["code"], "manifest_too_large");
    // The same through a pipe, where the size is not known up front.
    let run = tessera_with_stdin(&["plugin", "validate", "-"], Some(&vec![b'#'; 3 << 20]));
    assert_eq!(run.code, Some(2), "{run:?}");
    assert!(run.stderr.contains("limit is 1048576 bytes"), "{run:?}");

    // Not UTF-8.
    let latin1 = write("latin1.yaml", b"name: caf\xe9\nversion: \"1.0.0\"\n");
    let run = tessera(&["plugin", "validate", &latin1]);
    assert_eq!(run.code, Some(2), "{run:?}");
    assert!(run.stderr.contains(":1:10: byte 0xe9"), "{run:?}");

    // 1,000 levels of nesting, in both syntaxes.
    let deep = write(
        "deep.yaml",
        format!("name: {}{}", "[".repeat(1000), "]".repeat(1000)).as_bytes(),
    );
    let run = tessera(&["plugin", "validate", &deep]);
    assert_eq!(run.code, Some(2), "{run:?}");
    assert!(
        run.stderr.contains("nested more than 128 levels"),
        "{run:?}"
    );
    let deep_json = write(
        "deep.json",
        format!("{}1{}", "[".repeat(1000), "]".repeat(1000)).as_bytes(),
    );
    let run = tessera(&["plugin", "validate", &deep_json]);
    assert_eq!(run.code, Some(2), "{run:?}");

    // Billion laughs.
    let run = tessera(&[
        "plugin",
        "validate",
        "schemas/examples/invalid/20-alias-bomb.yaml",
        "--json",
    ]);
    assert_eq!(run.code, Some(2), "{run:?}");
    let e: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(e["error"]["code"], "manifest_too_complex");

    // Duplicate keys, in JSON too.
    let dup = write("dup.json", br#"{"name": "a", "name": "b"}"#);
    let run = tessera(&["plugin", "validate", &dup]);
    assert_eq!(run.code, Some(2), "{run:?}");
    assert!(run.stderr.contains("duplicate key \"name\""), "{run:?}");

    // Empty file: readable, and not a manifest.
    let empty = write("empty.yaml", b"");
    let run = tessera(&["plugin", "validate", &empty]);
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(
        run.stdout.starts_with("/: the document is empty"),
        "{run:?}"
    );

    fs::remove_dir_all(&dir).ok();
}

#[test]
fn json_manifests_are_read_as_json() {
    let run = tessera(&[
        "plugin",
        "validate",
        "--json",
        "schemas/examples/analytics.yaml",
    ]);
    let dir = std::env::temp_dir().join(format!("tessera-json-{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    let path = dir.join("plugin.json");
    fs::write(&path, &run.stdout).unwrap();
    let again = tessera(&["plugin", "validate", path.to_str().unwrap()]);
    assert_eq!(again.code, Some(0), "{again:?}");
    fs::write(&path, "{\"name\": \"x\",\n  \"version\": }").unwrap();
    let bad = tessera(&["plugin", "validate", path.to_str().unwrap()]);
    assert_eq!(bad.code, Some(2), "{bad:?}");
    assert!(bad.stderr.contains("plugin.json:2:14:"), "{bad:?}");
    fs::remove_dir_all(&dir).ok();
}

/// The architecture's own example manifest (`Routes#AnalyticsPage`, every required field, its
/// compat ranges `core: ">=2.1 <3.0"`, `backend_sdk: ">=1.4 <2.0"`, `frontend_sdk: ">=1.2 <2.0"`)
/// is valid and compatible as written now that every surface exists (plugin API 2.5.0, backend
/// SDK protocol 1.6.0); what is left is a warning: it declares a secret without requesting
/// `secrets:read`.
#[test]
fn the_architecture_example_is_compatible_as_written() {
    let run = tessera(&["plugin", "validate", "schemas/examples/architecture.yaml"]);
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(
        run.stdout.trim(),
        "schemas/examples/architecture.yaml: valid plugin manifest for analytics 1.4.0 (compatible with core plugin API 2.5.0)\n\
         a registration token for analytics must grant: events:subscribe, http:outbound, ui:panel, ui:route"
    );
    assert!(
        run.stderr.contains(
            "warning: /secrets: secrets are declared but capability \"secrets:read\" is not requested"
        ),
        "{run:?}"
    );
}

#[test]
fn core_version_flag_changes_the_verdict() {
    let file = "schemas/examples/invalid/05-incompatible-core.yaml";
    let run = tessera(&["plugin", "validate", file, "--core-version", "2.6.0"]);
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(
        run.stdout.contains("compatible with core plugin API 2.6.0"),
        "{run:?}"
    );
    let run = tessera(&[
        "plugin",
        "validate",
        "plugin-template/plugin.yaml",
        "--core-version",
        "3.0.0",
    ]);
    assert_eq!(run.code, Some(1), "{run:?}");
    assert_eq!(
        run.stdout.trim(),
        "/compat/core: compat.core \"^2.0\" does not include core plugin API 3.0.0"
    );
    let run = tessera(&["plugin", "validate", file, "--core-version", "two"]);
    assert_eq!(run.code, Some(2), "{run:?}");
    assert!(
        run.stderr.contains("\"two\" is not a SemVer version"),
        "{run:?}"
    );
}

#[test]
fn values_config_is_checked_against_config_schema() {
    let m = "schemas/examples/analytics.yaml";
    let run = tessera(&[
        "plugin",
        "validate",
        m,
        "--values",
        "schemas/examples/analytics.values.yaml",
    ]);
    assert_eq!(run.code, Some(0), "{run:?}");

    let bad = "schemas/examples/analytics.bad-values.yaml";
    let run = tessera(&["plugin", "validate", m, "--values", bad]);
    assert_eq!(run.code, Some(1), "{run:?}");
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(
        lines,
        [
            format!(
                "{bad}#/config/colector: unknown property \"colector\"; did you mean \"collector\"? (allowed here: retentionDays, sampleRate, collector)"
            ),
            format!("{bad}#/config/retentionDays: 0 is less than the minimum of 1"),
            format!("{bad}#/config/sampleRate: \"half\" is not of type \"number\""),
        ]
    );

    // A values file without config: the schema's required properties are missing.
    let run = tessera(&[
        "plugin",
        "validate",
        m,
        "--values",
        "plugin-template/plugin.yaml",
    ]);
    assert_eq!(run.code, Some(1), "{run:?}");
    assert_eq!(
        run.stdout.trim(),
        "plugin-template/plugin.yaml#/config/retentionDays: required property \"retentionDays\" is missing (How many days of events to keep)"
    );

    // An unreadable values file is exit 2, naming that file.
    let run = tessera(&[
        "plugin",
        "validate",
        m,
        "--values",
        "schemas/examples/invalid/14-not-yaml.yaml",
    ]);
    assert_eq!(run.code, Some(2), "{run:?}");
    assert!(
        run.stderr
            .starts_with("error: schemas/examples/invalid/14-not-yaml.yaml:5:7:"),
        "{run:?}"
    );
}

#[test]
fn usage_errors_exit_2() {
    let run = tessera(&["plugin", "validate"]);
    assert_eq!(run.code, Some(2), "{run:?}");
    let run = tessera(&["plugin", "validate", "a.yaml", "--no-such-flag"]);
    assert_eq!(run.code, Some(2), "{run:?}");
}

/// The codes Tessera can emit (the API's and `validate`'s) and `docs/errors.md` list the same
/// set, and the documented statuses are the ones the API answers with.
#[test]
fn error_codes_and_docs_agree() {
    use tessera_core::error::Code;
    use tessera_sdk::manifest::SourceErrorKind;
    let docs = fs::read_to_string(repo_root().join("docs/errors.md")).unwrap();
    let rows: Vec<Vec<String>> = docs
        .lines()
        .filter(|l| l.starts_with("| `"))
        .map(|l| {
            l.split('|')
                .map(|c| c.trim().trim_matches('`').to_string())
                .collect()
        })
        .collect();
    let documented: std::collections::BTreeSet<String> =
        rows.iter().map(|r| r[1].clone()).collect();
    let mut emitted: std::collections::BTreeSet<String> = SourceErrorKind::ALL
        .iter()
        .map(|k| k.code().to_string())
        .collect();
    emitted.insert("file_unreadable".to_string());
    for c in Code::ALL {
        emitted.insert(c.as_str().to_string());
        let row = rows
            .iter()
            .find(|r| r[1] == c.as_str())
            .unwrap_or_else(|| panic!("{} undocumented", c.as_str()));
        assert_eq!(
            row[2],
            c.status().as_u16().to_string(),
            "documented status of {}",
            c.as_str()
        );
    }
    assert_eq!(
        documented, emitted,
        "docs/errors.md and the codes in use differ"
    );
    // And the CLI really prints the one it names outside the SDK.
    let run = tessera(&["plugin", "validate", "--json", "does-not-exist.yaml"]);
    let e: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(e["error"]["code"], "file_unreadable");
}
