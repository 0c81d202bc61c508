//! Validation of a manifest document: the JSON Schema first, then the rules a schema cannot
//! express. Every problem is reported (not the first), each as a JSON pointer into the document
//! and a message that says what is wrong and, where it can, what to write instead.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::fmt;
use std::sync::LazyLock;

use jsonschema::error::ValidationErrorKind;
use serde::Serialize;
use serde_json::Value;

use super::suggest::closest;
use super::{Document, Manifest, SCHEMA_JSON};
use crate::capability::Capability;
use crate::range::Range;

/// One thing wrong with a document.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Problem {
    /// JSON pointer (RFC 6901) to the offending value; `""` is the whole document. For a
    /// missing property it points at where the property should be.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl Problem {
    pub(super) fn new(path: impl Into<String>, message: impl Into<String>) -> Problem {
        Problem {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl PartialOrd for Problem {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Problem {
    /// By path, segment by segment (array indexes as numbers), then by message.
    fn cmp(&self, other: &Self) -> Ordering {
        compare_paths(&self.path, &other.path).then_with(|| self.message.cmp(&other.message))
    }
}

impl fmt::Display for Problem {
    /// `<path>: <message>`, with `/` standing for the whole document.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = if self.path.is_empty() {
            "/"
        } else {
            &self.path
        };
        write!(f, "{path}: {}", self.message)
    }
}

/// The outcome of validating one document.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    /// The normalized manifest, when there are no problems.
    pub manifest: Option<Manifest>,
    /// Everything that makes the document invalid, sorted by path.
    pub problems: Vec<Problem>,
    /// Things that are valid but probably not what the author meant (for example panels
    /// declared without the `ui:panel` capability).
    pub warnings: Vec<Problem>,
}

impl Report {
    /// The manifest, or every problem.
    pub fn into_result(self) -> Result<Manifest, Vec<Problem>> {
        match self.manifest {
            Some(m) if self.problems.is_empty() => Ok(m),
            _ => Err(self.problems),
        }
    }
}

/// The manifest schema as a JSON value.
pub fn schema() -> &'static Value {
    &SCHEMA
}

static SCHEMA: LazyLock<Value> = LazyLock::new(|| {
    // The schema is a constant compiled into the crate; a unit test parses it.
    serde_json::from_str(SCHEMA_JSON).unwrap_or(Value::Bool(false))
});

static VALIDATOR: LazyLock<Result<jsonschema::Validator, String>> = LazyLock::new(|| {
    jsonschema::draft202012::options()
        .build(&SCHEMA)
        .map_err(|e| e.to_string())
});

/// Validates a manifest given as a JSON value (what the core receives at registration).
pub fn validate(value: &Value) -> Report {
    validate_document(&Document {
        value: value.clone(),
        version_text: None,
    })
}

/// Validates a parsed document.
pub fn validate_document(doc: &Document) -> Report {
    let mut problems = schema_problems(doc);
    let mut warnings = Vec::new();
    rule_problems(&doc.value, &mut problems, &mut warnings);
    sort_dedup(&mut problems);
    sort_dedup(&mut warnings);
    let manifest = if problems.is_empty() {
        match serde_json::from_value::<Manifest>(doc.value.clone()) {
            Ok(mut m) => {
                m.normalize();
                Some(m)
            }
            Err(e) => {
                // The schema and the types describe the same document; should they ever
                // disagree, say so rather than accept or panic.
                problems.push(Problem::new(
                    "",
                    format!("cannot be read as a manifest: {e}"),
                ));
                None
            }
        }
    } else {
        None
    };
    Report {
        manifest,
        problems,
        warnings,
    }
}

// === schema errors ===

fn schema_problems(doc: &Document) -> Vec<Problem> {
    let validator = match &*VALIDATOR {
        Ok(v) => v,
        Err(e) => {
            return vec![Problem::new(
                "",
                format!("the manifest schema does not compile: {e}"),
            )];
        }
    };
    let mut out = Vec::new();
    // Paths that got an `enum` error: a `pattern` error on the same value adds nothing.
    let mut enum_paths = Vec::new();
    let mut pattern_problems = Vec::new();
    for err in validator.iter_errors(&doc.value) {
        let path = err.instance_path().as_str().to_string();
        let schema_path = err.schema_path().as_str().to_string();
        let instance: &Value = err.instance();
        match err.kind() {
            ValidationErrorKind::Required { .. }
            | ValidationErrorKind::AdditionalProperties { .. } => {
                out.extend(structural(&err, schema()));
            }
            ValidationErrorKind::Enum { .. } if is_capability_item(&path) => {
                enum_paths.push(path.clone());
                let msg = match instance.as_str() {
                    Some(name) => match Capability::parse(name) {
                        Err(e) => e.to_string(),
                        Ok(_) => err.to_string(),
                    },
                    None => err.to_string(),
                };
                out.push(Problem::new(path, msg));
            }
            ValidationErrorKind::Type { .. } if path == "/version" && instance.is_number() => {
                let text = doc
                    .version_text
                    .clone()
                    .unwrap_or_else(|| instance.to_string());
                out.push(Problem::new(
                    path,
                    format!(
                        "version {text} was read as a number; a version is a quoted SemVer string: write version: \"{}\"",
                        full_version(&text)
                    ),
                ));
            }
            ValidationErrorKind::Type { .. } if path.is_empty() => {
                let found = match instance {
                    Value::Null => "the document is empty".to_string(),
                    Value::Array(_) => "the document is a list".to_string(),
                    other => format!("the document is the scalar {other}"),
                };
                out.push(Problem::new(
                    path,
                    format!("{found}; a manifest is a mapping with at least name, version, compat and ui"),
                ));
            }
            ValidationErrorKind::Pattern { pattern } => {
                let msg = match (path.as_str(), instance.as_str()) {
                    ("/version", Some(v)) => format!(
                        "\"{v}\" is not a SemVer version MAJOR.MINOR.PATCH (pre-release and build allowed){}",
                        suggest_version(v)
                    ),
                    _ => {
                        let about = pattern_description(&schema_path)
                            .map(|d| format!(": {}", first_sentence(d)))
                            .unwrap_or_default();
                        format!("{instance} does not match {pattern}{about}")
                    }
                };
                pattern_problems.push(Problem::new(path, msg));
            }
            _ => out.push(Problem::new(path, err.to_string())),
        }
    }
    out.extend(
        pattern_problems
            .into_iter()
            .filter(|p| !enum_paths.contains(&p.path)),
    );
    out
}

/// Problems for a missing or an unknown property, pointing at the property itself and
/// explaining it from `root` (the schema the error came from): the property's description, or
/// the properties allowed there with the closest one as a suggestion.
fn structural(err: &jsonschema::ValidationError<'_>, root: &Value) -> Vec<Problem> {
    let path = err.instance_path().as_str();
    let schema_path = err.schema_path().as_str();
    match err.kind() {
        ValidationErrorKind::Required { property } => {
            let name = property.as_str().unwrap_or_default();
            let parent = parent_schema(schema_path);
            let about = schema_node(root, &format!("{parent}/properties/{}", escape(name)))
                .and_then(description)
                .map(|d| format!(" ({})", first_sentence(d)))
                .unwrap_or_default();
            vec![Problem::new(
                format!("{path}/{}", escape(name)),
                format!("required property \"{name}\" is missing{about}"),
            )]
        }
        ValidationErrorKind::AdditionalProperties { unexpected } => {
            let allowed: Vec<&str> = schema_node(root, &parent_schema(schema_path))
                .and_then(|s| s.get("properties"))
                .and_then(Value::as_object)
                .map(|p| p.keys().map(String::as_str).collect())
                .unwrap_or_default();
            unexpected
                .iter()
                .map(|name| {
                    let hint = closest(name, &allowed)
                        .map(|c| format!("; did you mean \"{c}\"?"))
                        .unwrap_or_default();
                    let list = if allowed.is_empty() {
                        String::new()
                    } else {
                        format!(" (allowed here: {})", allowed.join(", "))
                    };
                    Problem::new(
                        format!("{path}/{}", escape(name)),
                        format!("unknown property \"{name}\"{hint}{list}"),
                    )
                })
                .collect()
        }
        _ => vec![Problem::new(path, err.to_string())],
    }
}

fn is_capability_item(path: &str) -> bool {
    path.strip_prefix("/capabilities/")
        .is_some_and(|i| !i.is_empty() && i.bytes().all(|b| b.is_ascii_digit()))
}

/// `"1.4"` -> `"1.4.0"`, `"2"` -> `"2.0.0"`; anything else as is.
fn full_version(text: &str) -> String {
    let parts: Vec<&str> = text.split('.').collect();
    if parts.is_empty()
        || parts.len() > 3
        || !parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
    {
        return text.to_string();
    }
    let mut parts: Vec<String> = parts
        .iter()
        .map(|p| {
            p.parse::<u64>()
                .map_or_else(|_| (*p).to_string(), |n| n.to_string())
        })
        .collect();
    while parts.len() < 3 {
        parts.push("0".to_string());
    }
    parts.join(".")
}

fn suggest_version(v: &str) -> String {
    let full = full_version(v.trim_start_matches('v'));
    if full != v && semver::Version::parse(&full).is_ok() {
        format!("; write \"{full}\"")
    } else {
        String::new()
    }
}

/// The schema location of the object a keyword belongs to (`/properties/ui/required` ->
/// `/properties/ui`).
fn parent_schema(schema_path: &str) -> String {
    match schema_path.rfind('/') {
        Some(i) => schema_path[..i].to_string(),
        None => String::new(),
    }
}

/// The description of the value a `pattern` applies to: the description next to a `$ref`
/// wins over the referenced definition's.
fn pattern_description(schema_path: &str) -> Option<&'static str> {
    let node = parent_schema(schema_path);
    let node = node.strip_suffix("/$ref").unwrap_or(&node);
    schema_node(schema(), node).and_then(description)
}

fn description(node: &Value) -> Option<&str> {
    node.get("description").and_then(Value::as_str)
}

fn first_sentence(text: &str) -> &str {
    let end = text
        .match_indices(". ")
        .map(|(i, _)| i)
        .find(|&i| !text[..i].ends_with("e.g") && !text[..i].ends_with("i.e"));
    match end {
        Some(i) => &text[..i],
        None => text.trim_end_matches('.'),
    }
}

/// The node of a schema at a schema location, following local `$ref`s.
fn schema_node<'a>(root: &'a Value, location: &str) -> Option<&'a Value> {
    let mut node = root;
    for seg in location.split('/').skip(1) {
        let seg = unescape(seg);
        node = if seg == "$ref" {
            let target = node.get("$ref")?.as_str()?.strip_prefix('#')?;
            root.pointer(target)?
        } else {
            match node {
                Value::Object(map) => map.get(&seg)?,
                Value::Array(items) => items.get(seg.parse::<usize>().ok()?)?,
                _ => return None,
            }
        };
    }
    Some(node)
}

// === rules the schema cannot express ===

fn rule_problems(doc: &Value, problems: &mut Vec<Problem>, warnings: &mut Vec<Problem>) {
    let name = doc.get("name").and_then(Value::as_str);

    if let Some(v) = doc.get("version").and_then(Value::as_str)
        && let Err(e) = semver::Version::parse(v)
        && !problems.iter().any(|p| p.path == "/version")
    {
        problems.push(Problem::new(
            "/version",
            format!("\"{v}\" is not a valid version: {e}"),
        ));
    }

    for field in ["core", "backend_sdk", "frontend_sdk"] {
        if let Some(r) = doc
            .pointer(&format!("/compat/{field}"))
            .and_then(Value::as_str)
            && let Err(e) = Range::parse(r)
        {
            problems.push(Problem::new(format!("/compat/{field}"), e.to_string()));
        }
    }

    let panels = items(doc, "/ui/contributions/panels");
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (i, panel) in panels.iter().enumerate() {
        let Some(id) = panel.get("id").and_then(Value::as_str) else {
            continue;
        };
        let path = format!("/ui/contributions/panels/{i}/id");
        if let Some(name) = name.filter(|n| is_plugin_name(n))
            && !id.starts_with(&format!("{name}."))
        {
            // This says more than the id's pattern does.
            problems.retain(|p| !(p.path == path && p.message.contains(" does not match ")));
            problems.push(Problem::new(
                &path,
                format!(
                    "panel id \"{id}\" must start with the plugin name and a dot (\"{name}.\")"
                ),
            ));
        }
        if let Some(first) = seen.insert(id, i) {
            problems.push(Problem::new(
                &path,
                format!(
                    "panel id \"{id}\" is already declared at /ui/contributions/panels/{first}/id"
                ),
            ));
            seen.insert(id, first);
        }
    }

    let routes = items(doc, "/ui/contributions/routes");
    let mut seen: HashMap<String, (usize, &str)> = HashMap::new();
    for (i, route) in routes.iter().enumerate() {
        let Some(path) = route.get("path").and_then(Value::as_str) else {
            continue;
        };
        let at = format!("/ui/contributions/routes/{i}/path");
        if let Err(why) = super::route::check(path) {
            problems.push(Problem::new(&at, why));
            continue;
        }
        let key = super::route::key(path);
        match seen.get(&key) {
            Some((first, _)) if !path.contains(':') => problems.push(Problem::new(
                &at,
                format!("route path \"{path}\" is already declared at /ui/contributions/routes/{first}/path"),
            )),
            Some((first, first_path)) => problems.push(Problem::new(
                &at,
                format!("route path \"{path}\" is the same route as \"{first_path}\" at /ui/contributions/routes/{first}/path (parameter names do not tell routes apart)"),
            )),
            None => {
                seen.insert(key, (i, path));
            }
        }
    }

    let egress = items(doc, "/permissions/network/egressAllow");
    for (i, entry) in egress.iter().enumerate() {
        let Some((_, port)) = entry.as_str().and_then(|e| e.rsplit_once(':')) else {
            continue;
        };
        if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
            continue; // the schema's pattern reports it
        }
        if !matches!(port.parse::<u32>(), Ok(1..=65535)) {
            problems.push(Problem::new(
                format!("/permissions/network/egressAllow/{i}"),
                format!("port {port} is outside 1-65535"),
            ));
        }
    }

    super::subscriptions::problems(items(doc, "/events/subscribe"), problems);
    super::jobs::problems(items(doc, "/jobs"), problems);
    super::webhooks::problems(items(doc, "/webhooks"), items(doc, "/secrets"), problems);

    if let Some(config_schema) = doc.get("configSchema").filter(|v| v.is_object()) {
        problems.extend(config_schema_problems(config_schema, "/configSchema"));
    }

    let caps: Vec<&str> = items(doc, "/capabilities")
        .iter()
        .filter_map(|c| c.as_str())
        .collect();
    // Panels and routes request ui:panel and ui:route by being declared (see
    // `Manifest::requested_capabilities`); these two are used through the SDK, so a manifest
    // that declares them without the capability most likely forgot it.
    let needs = [
        (
            !egress.is_empty(),
            "/permissions/network/egressAllow",
            Capability::HttpOutbound,
            "egress destinations are declared",
        ),
        (
            // A secret that only signs webhooks is read by the core, not by the plugin.
            items(doc, "/secrets").iter().any(|s| {
                !items(doc, "/webhooks")
                    .iter()
                    .any(|h| h.pointer("/signature/secret") == Some(s))
            }),
            "/secrets",
            Capability::SecretsRead,
            "secrets are declared",
        ),
    ];
    for (declared, path, cap, what) in needs {
        if declared && !caps.contains(&cap.name()) {
            warnings.push(Problem::new(
                path,
                format!("{what} but capability \"{cap}\" is not requested; add it to capabilities (and to the plugin's registration token) or the core refuses the calls that need it"),
            ));
        }
    }
}

/// Whether `name` is a plugin name as the schema's pattern has it: an RFC 1123 label
/// (lowercase letters, digits and `-`, starting and ending with a letter or digit, at most 63
/// characters), so it can name Kubernetes objects.
pub fn is_plugin_name(name: &str) -> bool {
    crate::names::is_dns_label(name)
}

fn items<'a>(doc: &'a Value, pointer: &str) -> &'a [Value] {
    doc.pointer(pointer)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

/// The JSON Schema meta-schema URIs accepted in a `configSchema`'s `$schema`.
const KNOWN_DRAFTS: [&str; 5] = [
    "https://json-schema.org/draft/2020-12/schema",
    "https://json-schema.org/draft/2019-09/schema",
    "http://json-schema.org/draft-07/schema",
    "http://json-schema.org/draft-06/schema",
    "http://json-schema.org/draft-04/schema",
];

/// Checks an embedded JSON Schema: self-contained (no remote references, never fetched), valid
/// against its meta-schema, and compilable. Problems are reported under `at`.
fn config_schema_problems(cs: &Value, at: &str) -> Vec<Problem> {
    let mut out = Vec::new();
    remote_refs(cs, at, &mut out);
    let self_contained = out.is_empty();
    if let Some(s) = cs.get("$schema") {
        let known = s
            .as_str()
            .map(|s| s.trim_end_matches('#'))
            .is_some_and(|s| KNOWN_DRAFTS.contains(&s));
        if !known {
            out.push(Problem::new(
                format!("{at}/$schema"),
                format!(
                    "{s} is not a supported meta-schema; use one of {} (it is never fetched)",
                    KNOWN_DRAFTS.join(", ")
                ),
            ));
            return out;
        }
    }
    let before = out.len();
    // The meta-schemas are built in: checking against them fetches nothing, even when the
    // schema names remote references.
    match jsonschema::meta::validator_for(cs) {
        Ok(meta) => {
            for e in meta.iter_errors(cs) {
                let path = e.instance_path().as_str();
                let message = match e.instance().as_ref() {
                    Value::String(t) if path.ends_with("/type") => format!(
                        "not a valid JSON Schema: \"{t}\" is not a type (array, boolean, integer, null, number, object, string)"
                    ),
                    _ => format!("not a valid JSON Schema: {e}"),
                };
                out.push(Problem::new(format!("{at}{path}"), message));
            }
        }
        Err(e) => out.push(Problem::new(at, format!("not a valid JSON Schema: {e}"))),
    }
    if self_contained
        && out.len() == before
        && let Err(e) = compile(cs)
    {
        out.push(Problem::new(
            at,
            format!("cannot be used as a JSON Schema: {e}"),
        ));
    }
    out
}

/// Compiles a schema with no way to fetch anything.
fn compile(cs: &Value) -> Result<jsonschema::Validator, String> {
    jsonschema::options()
        .should_validate_formats(true)
        .build(cs)
        .map_err(|e| e.to_string())
}

/// Keywords whose values are data, not schemas: a `$ref` inside them is not a reference.
const DATA_KEYWORDS: [&str; 4] = ["const", "enum", "default", "examples"];

fn remote_refs(node: &Value, at: &str, out: &mut Vec<Problem>) {
    match node {
        Value::Object(map) => {
            for (key, value) in map {
                let here = format!("{at}/{}", escape(key));
                match (key.as_str(), value) {
                    ("$ref" | "$dynamicRef" | "$recursiveRef", Value::String(r))
                        if !r.starts_with('#') =>
                    {
                        out.push(Problem::new(
                            here,
                            format!(
                                "remote reference \"{r}\" is not allowed: configSchema must be self-contained (use \"#/$defs/...\"); it was not fetched"
                            ),
                        ));
                    }
                    (k, _) if DATA_KEYWORDS.contains(&k) => {}
                    _ => remote_refs(value, &here, out),
                }
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                remote_refs(item, &format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}

/// Validates `instance` against a manifest's `configSchema` (after [`validate`] accepted it).
/// Problems point into `instance`, prefixed with `at` (for example `/config`).
pub fn validate_value_against(config_schema: &Value, instance: &Value, at: &str) -> Vec<Problem> {
    let validator = match compile(config_schema) {
        Ok(v) => v,
        Err(e) => {
            return vec![Problem::new(
                at,
                format!("configSchema cannot be used: {e}"),
            )];
        }
    };
    let mut out: Vec<Problem> = validator
        .iter_errors(instance)
        .flat_map(|e| structural(&e, config_schema))
        .map(|p| Problem::new(format!("{at}{}", p.path), p.message))
        .collect();
    sort_dedup(&mut out);
    out
}

// === JSON pointers ===

fn escape(segment: &str) -> String {
    segment.replace('~', "~0").replace('/', "~1")
}

fn unescape(segment: &str) -> String {
    segment.replace("~1", "/").replace("~0", "~")
}

/// Orders by path, segment by segment (numbers as numbers), then by message.
fn compare_paths(a: &str, b: &str) -> Ordering {
    let mut sa = a.split('/');
    let mut sb = b.split('/');
    loop {
        match (sa.next(), sb.next()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) => {
                let ord = match (x.parse::<u64>(), y.parse::<u64>()) {
                    (Ok(m), Ok(n)) => m.cmp(&n),
                    _ => x.cmp(y),
                };
                if ord != Ordering::Equal {
                    return ord;
                }
            }
        }
    }
}

fn sort_dedup(problems: &mut Vec<Problem>) {
    problems.sort();
    problems.dedup();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_schema_compiles() {
        assert!(schema().is_object());
        assert!(VALIDATOR.is_ok(), "{:?}", VALIDATOR.as_ref().err());
    }

    #[test]
    fn paths_sort_numerically() {
        let mut v = vec![
            Problem::new("/capabilities/10", "b"),
            Problem::new("/capabilities/2", "a"),
            Problem::new("/capabilities/2", "a"),
            Problem::new("", "root"),
        ];
        sort_dedup(&mut v);
        let paths: Vec<&str> = v.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(paths, ["", "/capabilities/2", "/capabilities/10"]);
    }

    #[test]
    fn typo_suggestions() {
        assert_eq!(
            closest("remotepath", &["mode", "remotePath", "contributions"]),
            Some("remotePath")
        );
        assert_eq!(
            closest("capabilites", &["name", "capabilities"]),
            Some("capabilities")
        );
        assert_eq!(closest("zzz", &["name", "version"]), None);
        assert_eq!(closest("coer", &["core", "backend_sdk"]), Some("core"));
        assert_eq!(
            closest("readinesPath", &["livenessPath", "readinessPath"]),
            Some("readinessPath")
        );
        assert_eq!(closest("b", &["a"]), None);
    }

    #[test]
    fn version_hints() {
        assert_eq!(full_version("1.4"), "1.4.0");
        assert_eq!(full_version("1.10"), "1.10.0");
        assert_eq!(full_version("2"), "2.0.0");
        assert_eq!(full_version("1.2.3.4"), "1.2.3.4");
        assert_eq!(suggest_version("v1.2"), "; write \"1.2.0\"");
        assert_eq!(suggest_version("banana"), "");
    }
}
