//! The manifest contract, rule by rule, through the SDK's public API.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::{Value, json};
use tessera_sdk::Capability;
use tessera_sdk::compat::{self, Versions};
use tessera_sdk::manifest::{self, Document, Format, Manifest};

fn valid() -> Value {
    json!({
        "name": "reports",
        "version": "2.0.0",
        "compat": {"core": "^2.0"},
        "capabilities": ["ui:panel", "ui:route"],
        "ui": {
            "mode": "ModuleFederation",
            "remotePath": "/mf/remoteEntry.js",
            "contributions": {
                "panels": [{"id": "reports.summary", "title": "Summary"}],
                "routes": [{"path": "/reports", "component": "ReportsPage"}]
            }
        },
        "endpoints": {"basePath": "/api"},
        "health": {"livenessPath": "/healthz", "readinessPath": "/readyz"}
    })
}

/// Sets `pointer` in `doc` to `value` (creating objects on the way), then validates.
fn problems_with(pointer: &str, value: Value) -> Vec<(String, String)> {
    let mut doc = valid();
    set(&mut doc, pointer, value);
    problems(&doc)
}

fn problems(doc: &Value) -> Vec<(String, String)> {
    manifest::validate(doc)
        .problems
        .into_iter()
        .map(|p| (p.path, p.message))
        .collect()
}

fn set(doc: &mut Value, pointer: &str, value: Value) {
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    let mut node = doc;
    for seg in parent.split('/').skip(1) {
        node = match node {
            Value::Array(a) => &mut a[seg.parse::<usize>().unwrap()],
            Value::Object(o) => o.entry(seg).or_insert_with(|| json!({})),
            _ => panic!("cannot descend into {seg}"),
        };
    }
    match node {
        Value::Array(a) => a[key.parse::<usize>().unwrap()] = value,
        Value::Object(o) => {
            o.insert(key.to_string(), value);
        }
        _ => panic!("cannot set {pointer}"),
    }
}

fn only(problems: Vec<(String, String)>) -> (String, String) {
    assert_eq!(problems.len(), 1, "{problems:#?}");
    problems.into_iter().next().unwrap()
}

#[test]
fn the_valid_manifest_is_valid() {
    let report = manifest::validate(&valid());
    assert!(report.problems.is_empty(), "{:#?}", report.problems);
    assert!(report.warnings.is_empty(), "{:#?}", report.warnings);
    let m = report.manifest.unwrap();
    assert_eq!(m.scope(), "plugin_reports");
}

#[test]
fn examples_in_the_repository_are_valid() {
    for file in [
        "../schemas/examples/analytics.yaml",
        "../plugin-template/plugin.yaml",
    ] {
        let bytes = std::fs::read(file).unwrap();
        let m =
            Manifest::from_bytes(&bytes, Format::Yaml).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert!(
            compat::check(&m.compat, &Versions::default()).is_empty(),
            "{file}"
        );
    }
}

#[test]
fn name_must_be_a_dns_label() {
    for bad in [
        "Reports",
        "my_plugin",
        "-reports",
        "reports-",
        "",
        &"a".repeat(64),
    ] {
        let (path, _) = problems_with("/name", json!(bad))
            .into_iter()
            .next()
            .unwrap();
        assert_eq!(path, "/name", "{bad:?}");
    }
    for good in ["a", "my-plugin-2", "0x"] {
        let mut doc = valid();
        set(&mut doc, "/name", json!(good));
        set(
            &mut doc,
            "/ui/contributions/panels/0/id",
            json!(format!("{good}.p")),
        );
        assert!(problems(&doc).is_empty(), "{good}: {:#?}", problems(&doc));
    }
}

#[test]
fn version_must_be_full_semver_and_a_string() {
    for good in [
        "1.0.0",
        "0.0.1-alpha.1",
        "1.2.3+build.7",
        "10.20.30-rc.1+sha.abc",
    ] {
        assert!(problems_with("/version", json!(good)).is_empty(), "{good}");
    }
    let (path, msg) = only(problems_with("/version", json!("1.4")));
    assert_eq!(path, "/version");
    assert!(msg.contains("write \"1.4.0\""), "{msg}");
    let (_, msg) = only(problems_with("/version", json!(1.4)));
    assert!(
        msg.contains("read as a number") && msg.contains("\"1.4.0\""),
        "{msg}"
    );
    for bad in ["01.0.0", "1.0", "v1.0.0", "1.0.0-", "banana", "1.0.0-01"] {
        assert_eq!(
            only(problems_with("/version", json!(bad))).0,
            "/version",
            "{bad}"
        );
    }
    let (_, msg) = only(problems_with("/version", json!("99999999999999999999.0.0")));
    assert!(msg.contains("not a valid version"), "{msg}");
}

#[test]
fn yaml_number_version_hint_keeps_the_digits_as_written() {
    let doc = Document::parse(
        b"name: a\nversion: 1.10\ncompat: {core: '*'}\nui: {mode: ModuleFederation, remotePath: /mf/remoteEntry.js}\nendpoints: {basePath: /api}\nhealth: {livenessPath: /healthz, readinessPath: /readyz}\n",
        Format::Yaml,
    )
    .unwrap();
    let report = manifest::validate_document(&doc);
    assert_eq!(report.problems.len(), 1);
    assert!(
        report.problems[0]
            .message
            .contains("write version: \"1.10.0\""),
        "{:?}",
        report.problems
    );
}

#[test]
fn compat_core_is_required_and_ranges_must_parse() {
    let mut doc = valid();
    doc["compat"] = json!({"backend_sdk": "^1"});
    let (path, msg) = only(problems(&doc));
    assert_eq!(path, "/compat/core");
    assert!(
        msg.starts_with("required property \"core\" is missing"),
        "{msg}"
    );

    let (path, msg) = only(problems_with("/compat/frontend_sdk", json!("~>")));
    assert_eq!(path, "/compat/frontend_sdk");
    assert!(msg.starts_with("invalid range \"~>\""), "{msg}");
    // Compatibility is judged apart from validity.
    assert!(problems_with("/compat/core", json!(">=2.6 <3.0")).is_empty());
    let misses = compat::problems(
        &json!({"compat": {"core": ">=2.6 <3.0"}}),
        &Versions::default(),
    );
    assert_eq!(
        misses[0].message,
        "compat.core \">=2.6 <3.0\" does not include core plugin API 2.5.0"
    );
}

#[test]
fn capabilities_come_from_the_catalogue() {
    let (path, msg) = only(problems_with("/capabilities/1", json!("db:write")));
    assert_eq!(path, "/capabilities/1");
    assert!(
        msg.starts_with("unknown capability \"db:write\"; known capabilities: "),
        "{msg}"
    );
    // A malformed name is one problem, not one per schema keyword.
    assert_eq!(
        only(problems_with("/capabilities/0", json!("NOT A CAP"))).0,
        "/capabilities/0"
    );
}

#[test]
fn schema_catalogue_matches_the_sdk() {
    let schema = manifest::schema();
    let items = &schema["properties"]["capabilities"]["items"];
    let mut listed: Vec<&str> = items["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    listed.sort_unstable();
    let known: Vec<&str> = Capability::ALL.iter().map(|c| c.name()).collect();
    assert_eq!(listed, known);
}

#[test]
fn every_schema_property_has_a_description() {
    fn walk(node: &Value, at: &str, missing: &mut Vec<String>) {
        if let Some(props) = node.get("properties").and_then(Value::as_object) {
            for (k, v) in props {
                if v.get("description")
                    .and_then(Value::as_str)
                    .is_none_or(str::is_empty)
                {
                    missing.push(format!("{at}/{k}"));
                }
                walk(v, &format!("{at}/{k}"), missing);
            }
        }
        if let Some(items) = node.get("items") {
            walk(items, &format!("{at}/items"), missing);
        }
    }
    let mut missing = Vec::new();
    walk(manifest::schema(), "", &mut missing);
    assert!(missing.is_empty(), "no description: {missing:?}");
}

#[test]
fn closed_objects_refuse_unknown_properties_with_a_suggestion() {
    for pointer in [
        "/extra",
        "/compat/coer",
        "/ui/remotepath",
        "/ui/contributions/panel",
        "/health/readyPath",
    ] {
        let (path, msg) = only(problems_with(pointer, json!("x")));
        assert_eq!(path, pointer);
        assert!(msg.starts_with("unknown property"), "{msg}");
    }
    let (_, msg) = only(problems_with("/ui/remotepath", json!("x")));
    assert!(msg.contains("did you mean \"remotePath\"?"), "{msg}");
}

#[test]
fn panel_ids_are_prefixed_and_unique() {
    let (path, msg) = only(problems_with(
        "/ui/contributions/panels/0/id",
        json!("other.summary"),
    ));
    assert_eq!(path, "/ui/contributions/panels/0/id");
    assert_eq!(
        msg,
        "panel id \"other.summary\" must start with the plugin name and a dot (\"reports.\")"
    );
    let mut doc = valid();
    doc["ui"]["contributions"]["panels"] = json!([
        {"id": "reports.a", "title": "A"}, {"id": "reports.b", "title": "B"}, {"id": "reports.a", "title": "C"}
    ]);
    let (path, msg) = only(problems(&doc));
    assert_eq!(path, "/ui/contributions/panels/2/id");
    assert!(
        msg.contains("already declared at /ui/contributions/panels/0/id"),
        "{msg}"
    );
}

#[test]
fn route_paths_start_with_a_slash_and_are_unique() {
    assert_eq!(
        only(problems_with(
            "/ui/contributions/routes/0/path",
            json!("reports")
        ))
        .0,
        "/ui/contributions/routes/0/path"
    );
    let mut doc = valid();
    doc["ui"]["contributions"]["routes"] = json!([
        {"path": "/r", "component": "A"}, {"path": "/r/", "component": "B"}, {"path": "/r/:id", "component": "C"}
    ]);
    let (path, msg) = only(problems(&doc));
    assert_eq!(path, "/ui/contributions/routes/1/path");
    assert!(
        msg.contains("already declared at /ui/contributions/routes/0/path"),
        "{msg}"
    );
}

#[test]
fn routes_differing_only_in_parameter_names_are_the_same_route() {
    let mut doc = valid();
    doc["ui"]["contributions"]["routes"] = json!([
        {"path": "/inventory/items/:sku", "component": "Routes#Item"},
        {"path": "/inventory/items/:id", "component": "Routes#Other"},
        {"path": "/inventory/items/:sku/history", "component": "History"},
        {"path": "/docs/*", "component": "Docs"}
    ]);
    let (path, msg) = only(problems(&doc));
    assert_eq!(path, "/ui/contributions/routes/1/path");
    assert_eq!(
        msg,
        "route path \"/inventory/items/:id\" is the same route as \"/inventory/items/:sku\" at /ui/contributions/routes/0/path (parameter names do not tell routes apart)"
    );
}

#[test]
fn route_parameters_need_names_and_the_catch_all_comes_last() {
    for (bad, says) in [
        ("/items/:", "needs a name"),
        ("/a/:x/:x", "appears twice"),
        ("/docs/*/more", "can only be the last segment"),
    ] {
        let (path, msg) = only(problems_with("/ui/contributions/routes/0/path", json!(bad)));
        assert_eq!(path, "/ui/contributions/routes/0/path");
        assert!(msg.contains(says), "{bad}: {msg}");
    }
}

#[test]
fn components_are_module_hash_export_or_a_bare_export() {
    for ok in [
        "Routes#AnalyticsPage",
        "AnalyticsPage",
        "Reports#MonthlyPage",
        "./Routes#Page",
        "pages/admin#Settings",
    ] {
        assert!(
            problems_with("/ui/contributions/routes/0/component", json!(ok)).is_empty(),
            "{ok}"
        );
    }
    for bad in [
        "Routes#",
        "#Page",
        "Routes#Page#X",
        "Routes#my-page",
        "9Page",
        "",
    ] {
        let (path, _) = only(problems_with(
            "/ui/contributions/routes/0/component",
            json!(bad),
        ));
        assert_eq!(path, "/ui/contributions/routes/0/component", "{bad}");
    }
}

#[test]
fn the_architecture_required_fields_are_required() {
    for (pointer, field) in [
        ("/ui", "mode"),
        ("/ui", "remotePath"),
        ("", "endpoints"),
        ("", "health"),
        ("/endpoints", "basePath"),
        ("/health", "livenessPath"),
        ("/health", "readinessPath"),
    ] {
        let mut doc = valid();
        let parent = if pointer.is_empty() {
            &mut doc
        } else {
            doc.pointer_mut(pointer).unwrap()
        };
        parent.as_object_mut().unwrap().remove(field);
        let (path, msg) = only(problems(&doc));
        assert_eq!(path, format!("{pointer}/{field}"));
        assert!(
            msg.starts_with(&format!("required property \"{field}\" is missing")),
            "{msg}"
        );
    }
}

#[test]
fn declared_contributions_request_their_capabilities() {
    let mut doc = valid();
    doc["capabilities"] = json!(["events:publish"]);
    let m = manifest::validate(&doc).into_result().unwrap();
    assert_eq!(
        m.requested_capabilities(),
        [
            Capability::EventsPublish,
            Capability::UiPanel,
            Capability::UiRoute
        ]
    );
    // Normalization keeps the list as written (sorted); the requested set is derived.
    assert_eq!(m.capabilities, [Capability::EventsPublish]);
    doc["ui"]["contributions"] = json!({});
    let m = manifest::validate(&doc).into_result().unwrap();
    assert_eq!(m.requested_capabilities(), [Capability::EventsPublish]);
}

#[test]
fn subscriptions_request_events_subscribe_and_follow_the_rules() {
    let mut doc = valid();
    doc["events"] = json!({"subscribe": [
        {"type": "billing.invoice.*", "path": "/events"},
        {"type": "billing.>", "shell": true},
        {"type": "shop.order.created", "path": "/orders", "ordered": false, "maxInFlight": 8},
    ]});
    let m = manifest::validate(&doc).into_result().unwrap();
    assert!(
        m.requested_capabilities()
            .contains(&Capability::EventsSubscribe)
    );
    assert_eq!(m.events.subscribe[0].window(), 1);
    assert_eq!(m.events.subscribe[2].window(), 8);
    // The normalized form keeps what was declared and nothing for a manifest without events.
    assert_eq!(
        m.to_json()["events"]["subscribe"][1],
        json!({"type": "billing.>", "shell": true})
    );
    assert!(
        manifest::validate(&valid())
            .into_result()
            .unwrap()
            .to_json()
            .get("events")
            .is_none()
    );

    let cases = [
        (
            json!({"type": "billing.>.x", "path": "/e"}),
            "/events/subscribe/0/type",
        ),
        (
            json!({"type": "billing..x", "path": "/e"}),
            "/events/subscribe/0/type",
        ),
        (json!({"type": "billing.x"}), "/events/subscribe/0"),
        (
            json!({"type": "billing.x", "shell": false}),
            "/events/subscribe/0",
        ),
        (
            json!({"type": "billing.x", "path": "/e", "shell": true}),
            "/events/subscribe/0",
        ),
        (
            json!({"type": "billing.x", "path": "/e", "maxInFlight": 4}),
            "/events/subscribe/0/maxInFlight",
        ),
        (
            json!({"type": "billing.x", "shell": true, "ordered": true}),
            "/events/subscribe/0",
        ),
        (
            json!({"type": "billing.x", "path": "e"}),
            "/events/subscribe/0/path",
        ),
        (
            json!({"type": "billing.x", "path": "/e", "maxInFlight": 0, "ordered": false}),
            "/events/subscribe/0/maxInFlight",
        ),
    ];
    for (sub, at) in cases {
        let mut doc = valid();
        doc["events"] = json!({"subscribe": [sub.clone()]});
        let found = problems(&doc);
        assert!(found.iter().any(|(p, _)| p == at), "{sub}: {found:?}");
    }
    let mut doc = valid();
    doc["events"] = json!({"subscribe": [
        {"type": "billing.x", "path": "/e"}, {"type": "billing.x", "path": "/e"}
    ]});
    let (path, msg) = only(problems(&doc));
    assert_eq!(path, "/events/subscribe/1");
    assert!(
        msg.contains("already declared at /events/subscribe/0"),
        "{msg}"
    );
}

#[test]
fn egress_is_host_port_with_a_real_port() {
    let mut doc = valid();
    doc["capabilities"] = json!(["ui:panel", "ui:route", "http:outbound"]);
    doc["permissions"] = json!({"network": {"egressAllow": ["a.example.com:443", "*.b.example.com:8443", "c:1", "d:65535"]}});
    assert!(problems(&doc).is_empty(), "{:#?}", problems(&doc));
    for (bad, expect) in [
        ("a.example.com:0", "port 0 is outside 1-65535"),
        ("a.example.com:65536", "port 65536 is outside 1-65535"),
        ("a.example.com:99999", "port 99999 is outside 1-65535"),
    ] {
        doc["permissions"]["network"]["egressAllow"] = json!([bad]);
        assert_eq!(
            only(problems(&doc)),
            (
                "/permissions/network/egressAllow/0".to_string(),
                expect.to_string()
            )
        );
    }
    for bad in [
        "a.example.com",
        "https://a.example.com:443",
        "a b:1",
        ":443",
    ] {
        doc["permissions"]["network"]["egressAllow"] = json!([bad]);
        assert_eq!(
            only(problems(&doc)).0,
            "/permissions/network/egressAllow/0",
            "{bad}"
        );
    }
}

#[test]
fn secrets_are_environment_variable_names() {
    let mut doc = valid();
    doc["capabilities"] = json!(["secrets:read", "ui:panel", "ui:route"]);
    doc["secrets"] = json!(["DATABASE_URL", "_token", "apiKey2"]);
    assert!(problems(&doc).is_empty(), "{:#?}", problems(&doc));
    for bad in ["api-key", "2FA", "WITH SPACE", ""] {
        doc["secrets"] = json!([bad]);
        assert_eq!(only(problems(&doc)).0, "/secrets/0", "{bad:?}");
    }
    doc["secrets"] = json!(["A", "A"]);
    assert_eq!(only(problems(&doc)).0, "/secrets");
}

#[test]
fn config_schema_is_checked_against_the_meta_schema() {
    assert!(
        problems_with(
            "/configSchema",
            json!({"type": "object", "properties": {"a": {"type": "integer"}}})
        )
        .is_empty()
    );
    let (path, _) = only(problems_with(
        "/configSchema",
        json!({"type": "object", "properties": {"a": {"minimum": "x"}}}),
    ));
    assert_eq!(path, "/configSchema/properties/a/minimum");
    // Draft 7 schemas are accepted when they say so.
    assert!(
        problems_with(
            "/configSchema",
            json!({"$schema": "http://json-schema.org/draft-07/schema#", "type": "object"})
        )
        .is_empty()
    );
    // Unknown meta-schemas are refused, not fetched.
    assert_eq!(
        only(problems_with(
            "/configSchema",
            json!({"$schema": "https://example.com/meta"})
        ))
        .0,
        "/configSchema/$schema"
    );
    // A pattern that is not a regular expression cannot be used.
    let (path, msg) = only(problems_with(
        "/configSchema",
        json!({"type": "string", "pattern": "(["}),
    ));
    assert_eq!(path, "/configSchema");
    assert!(msg.starts_with("cannot be used as a JSON Schema"), "{msg}");
    // Local references must resolve.
    let (path, _) = only(problems_with(
        "/configSchema",
        json!({"$ref": "#/$defs/nope"}),
    ));
    assert_eq!(path, "/configSchema");
    assert!(
        problems_with(
            "/configSchema",
            json!({"$ref": "#/$defs/a", "$defs": {"a": {"type": "string"}}})
        )
        .is_empty()
    );
}

#[test]
fn config_schema_remote_refs_are_refused_and_never_fetched() {
    // Every form of reference that would leave the document; the port is closed, so a fetch
    // would fail differently from the refusal asserted here.
    for r in [
        "http://127.0.0.1:9/schema.json",
        "https://example.com/s.json",
        "file:///etc/passwd",
        "other.json#/a",
    ] {
        let (path, msg) = only(problems_with(
            "/configSchema",
            json!({"properties": {"a": {"$ref": r}}}),
        ));
        assert_eq!(path, "/configSchema/properties/a/$ref");
        assert!(
            msg.starts_with(&format!("remote reference \"{r}\" is not allowed")),
            "{msg}"
        );
    }
    // `$ref` as data (in const, enum, default, examples) is not a reference.
    assert!(
        problems_with(
            "/configSchema",
            json!({"const": {"$ref": "https://example.com"}})
        )
        .is_empty()
    );
}

#[test]
fn values_are_checked_against_config_schema() {
    let cs = json!({"type": "object", "required": ["a"], "properties": {"a": {"type": "integer", "minimum": 1}}, "additionalProperties": false});
    assert!(manifest::validate_value_against(&cs, &json!({"a": 3}), "/config").is_empty());
    let p: Vec<String> = manifest::validate_value_against(&cs, &json!({"a": 0, "b": 1}), "/config")
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        p,
        [
            "/config/a: 0 is less than the minimum of 1",
            "/config/b: unknown property \"b\" (allowed here: a)"
        ]
    );
    let p = manifest::validate_value_against(&cs, &json!({}), "/config");
    assert_eq!(p[0].path, "/config/a");
}

#[test]
fn warnings_flag_declarations_whose_capability_is_not_requested() {
    let mut doc = valid();
    doc["capabilities"] = json!([]);
    doc["secrets"] = json!(["TOKEN"]);
    let report = manifest::validate(&doc);
    assert!(report.problems.is_empty());
    let paths: Vec<&str> = report.warnings.iter().map(|w| w.path.as_str()).collect();
    // Panels and routes request their capabilities by being declared: no warning for them.
    assert_eq!(paths, ["/secrets"]);
}

#[test]
fn every_problem_is_reported_not_the_first() {
    let doc = json!({
        "name": "Bad Name", "version": 2, "compat": {"core": "<<1"},
        "capabilities": ["nope"], "ui": {"mode": "IFrame"}, "surprise": true
    });
    let paths: Vec<String> = problems(&doc).into_iter().map(|(p, _)| p).collect();
    assert_eq!(
        paths,
        [
            "/capabilities/0",
            "/compat/core",
            "/endpoints",
            "/health",
            "/name",
            "/surprise",
            "/ui/mode",
            "/ui/remotePath",
            "/version"
        ]
    );
}

#[test]
fn normalization_sorts_dedups_fills_defaults_and_is_idempotent() {
    let mut doc = valid();
    doc["capabilities"] = json!(["ui:route", "ui:panel", "ui:route"]);
    let m = manifest::validate(&doc).into_result().unwrap();
    assert_eq!(m.capabilities, [Capability::UiPanel, Capability::UiRoute]);
    let n = m.to_json();
    assert_eq!(n["version"], "2.0.0");
    assert_eq!(n["endpoints"]["basePath"], "/api");
    assert_eq!(n["health"]["readinessPath"], "/readyz");
    assert_eq!(n["ui"]["mode"], "ModuleFederation");
    let again = manifest::validate(&n).into_result().unwrap();
    assert_eq!(again, m);
    assert_eq!(again.to_json(), n);
}

#[test]
fn jobs_request_jobs_schedule_fill_defaults_and_follow_the_rules() {
    let mut doc = valid();
    doc["jobs"] = json!([
        {"name": "nightly-report", "schedule": "0 2 * * *", "path": "/jobs/nightly-report"},
        {"name": "heartbeat", "schedule": "@every 30s", "path": "/jobs/heartbeat",
         "concurrency": "Replace", "timeoutSeconds": 10, "retries": 2, "startingDeadlineSeconds": 5},
        {"name": "tick", "schedule": "*/10 * * * * *", "path": "/tick"},
    ]);
    let m = manifest::validate(&doc).into_result().unwrap();
    assert!(
        m.requested_capabilities()
            .contains(&Capability::JobsSchedule)
    );
    // Normalized: every default filled in.
    assert_eq!(
        m.to_json()["jobs"][0],
        json!({"name": "nightly-report", "schedule": "0 2 * * *", "path": "/jobs/nightly-report",
               "timeoutSeconds": 60, "concurrency": "Forbid", "startingDeadlineSeconds": 60, "retries": 0})
    );
    assert!(
        manifest::validate(&valid())
            .into_result()
            .unwrap()
            .to_json()
            .get("jobs")
            .is_none()
    );

    let cases = [
        (
            json!([{"name": "a", "schedule": "* * * *", "path": "/a"}]),
            "/jobs/0/schedule",
            "has 4 field(s)",
        ),
        (
            json!([{"name": "a", "schedule": "@every 0s", "path": "/a"}]),
            "/jobs/0/schedule",
            "outside 1s-24h",
        ),
        (
            json!([{"name": "a", "schedule": "@often", "path": "/a"}]),
            "/jobs/0/schedule",
            "not a known macro",
        ),
        (
            json!([{"name": "a", "schedule": "@hourly", "path": "/a"}, {"name": "a", "schedule": "@daily", "path": "/b"}]),
            "/jobs/1/name",
            "already declared at /jobs/0",
        ),
        (
            json!([{"name": "a", "schedule": "@hourly", "path": "/a", "timeoutSeconds": 3601}]),
            "/jobs/0/timeoutSeconds",
            "",
        ),
        (
            json!([{"name": "a", "schedule": "@hourly", "path": "/a", "retries": 11}]),
            "/jobs/0/retries",
            "",
        ),
        (
            json!([{"name": "a", "schedule": "@hourly", "path": "/a", "concurrency": "Sometimes"}]),
            "/jobs/0/concurrency",
            "",
        ),
        (
            json!([{"name": "A", "schedule": "@hourly", "path": "/a"}]),
            "/jobs/0/name",
            "",
        ),
        (
            json!([{"name": "a", "schedule": "@hourly"}]),
            "/jobs/0/path",
            "required",
        ),
    ];
    for (jobs, pointer, says) in cases {
        let mut doc = valid();
        doc["jobs"] = jobs.clone();
        let problems = manifest::validate(&doc).into_result().unwrap_err();
        assert!(
            problems
                .iter()
                .any(|p| p.path == pointer && p.message.contains(says)),
            "{jobs}: {problems:?}"
        );
    }
}
