//! `tessera plugin check --url URL [--manifest plugin.yaml]`: the contract test a plugin author
//! runs in CI against a running plugin service. Every check is one line of a table; any failure
//! makes the exit status 1.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use serde_json::Value;
use tessera_sdk::Manifest;
use tessera_sdk::manifest::{self, Format};

use tessera_sdk::prometheus_text::REQUIRED_PLUGIN_FAMILIES as REQUIRED_FAMILIES;

#[derive(Debug, Args)]
pub(crate) struct CheckArgs {
    /// Base URL of the plugin's service, e.g. http://127.0.0.1:7001.
    #[arg(long, value_name = "URL")]
    url: String,
    /// The plugin's plugin.yaml: `/manifest` must equal its normalized form.
    #[arg(long, value_name = "FILE")]
    manifest: Option<PathBuf>,
    /// Seconds each request may take.
    #[arg(long, default_value_t = 5)]
    timeout: u64,
}

struct Report {
    rows: Vec<(bool, &'static str, String)>,
}

impl Report {
    fn add(&mut self, ok: bool, check: &'static str, detail: impl Into<String>) {
        self.rows.push((ok, check, detail.into()));
    }
}

pub(super) fn check(a: CheckArgs) -> ExitCode {
    let rt = match crate::cli::runtime(crate::cli::Runtime::Client) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let report = rt.block_on(run(&a));
    let width = report.rows.iter().map(|r| r.1.len()).max().unwrap_or(0);
    for (ok, name, detail) in &report.rows {
        println!(
            "{}  {name:<width$}  {detail}",
            if *ok { "PASS" } else { "FAIL" }
        );
    }
    let failed = report.rows.iter().filter(|r| !r.0).count();
    println!("{} passed, {failed} failed", report.rows.len() - failed);
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

async fn run(a: &CheckArgs) -> Report {
    let mut r = Report { rows: Vec::new() };
    let base = a.url.trim_end_matches('/').to_string();
    let http = match reqwest::Client::builder()
        .timeout(Duration::from_secs(a.timeout))
        .redirect(reqwest::redirect::Policy::none())
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            r.add(false, "client", e.to_string());
            return r;
        }
    };
    let get = |path: String| {
        let http = http.clone();
        let url = format!("{base}{path}");
        async move {
            let res = http
                .get(&url)
                .send()
                .await
                .map_err(|e| format!("GET {url}: {e}"))?;
            let status = res.status().as_u16();
            let ctype = res
                .headers()
                .get(reqwest::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            let body = res.text().await.map_err(|e| format!("GET {url}: {e}"))?;
            Ok::<_, String>((status, ctype, body))
        }
    };

    match get("/healthz".into()).await {
        Ok((200, _, _)) => r.add(true, "healthz", "200"),
        Ok((s, _, _)) => r.add(false, "healthz", format!("HTTP {s}, expected 200")),
        Err(e) => r.add(false, "healthz", e),
    }
    match get("/readyz".into()).await {
        Ok((s @ (200 | 503), _, body)) => {
            let why = serde_json::from_str::<Value>(&body)
                .ok()
                .and_then(|v| {
                    v["reasons"].as_array().map(|a| {
                        a.iter()
                            .filter_map(|x| x.as_str())
                            .collect::<Vec<_>>()
                            .join("; ")
                    })
                })
                .filter(|s| !s.is_empty())
                .map(|s| format!(" ({s})"))
                .unwrap_or_default();
            r.add(true, "readyz", format!("answers {s}{why}"));
        }
        Ok((s, _, _)) => r.add(false, "readyz", format!("HTTP {s}, expected 200 or 503")),
        Err(e) => r.add(false, "readyz", e),
    }
    match get("/metrics".into()).await {
        Ok((200, _, text)) => match metrics_problems(&text) {
            None => r.add(
                true,
                "metrics",
                format!(
                    "valid Prometheus text with {}",
                    REQUIRED_FAMILIES.join(", ")
                ),
            ),
            Some(p) => r.add(false, "metrics", p),
        },
        Ok((s, _, _)) => r.add(false, "metrics", format!("HTTP {s}, expected 200")),
        Err(e) => r.add(false, "metrics", e),
    }

    let served: Option<Manifest> = match get("/manifest".into()).await {
        Ok((200, _, body)) => match serde_json::from_str::<Value>(&body) {
            Ok(v) => match manifest::validate(&v).into_result() {
                Ok(m) => {
                    r.add(
                        true,
                        "manifest schema",
                        format!("{} {} is a valid manifest", m.name, m.version),
                    );
                    Some(m)
                }
                Err(problems) => {
                    let lines: Vec<String> = problems.iter().map(ToString::to_string).collect();
                    r.add(false, "manifest schema", lines.join("; "));
                    None
                }
            },
            Err(e) => {
                r.add(
                    false,
                    "manifest schema",
                    format!("/manifest is not JSON: {e}"),
                );
                None
            }
        },
        Ok((s, _, _)) => {
            r.add(false, "manifest schema", format!("GET /manifest: HTTP {s}"));
            None
        }
        Err(e) => {
            r.add(false, "manifest schema", e);
            None
        }
    };
    if let Some(path) = &a.manifest {
        let local = std::fs::read(path)
            .map_err(|e| format!("{}: {e}", path.display()))
            .and_then(|b| {
                Manifest::from_bytes(&b, Format::Yaml)
                    .map_err(|e| format!("{}: {e}", path.display()))
            });
        match (&local, &served) {
            (Ok(l), Some(s)) if l.to_json() == s.to_json() => r.add(
                true,
                "manifest matches",
                format!("equal to normalized {}", path.display()),
            ),
            (Ok(l), Some(s)) => r.add(
                false,
                "manifest matches",
                format!(
                    "differs from normalized {}: {}",
                    path.display(),
                    first_difference(&l.to_json(), &s.to_json(), "")
                ),
            ),
            (Err(e), _) => r.add(false, "manifest matches", e.clone()),
            (Ok(_), None) => r.add(false, "manifest matches", "no valid /manifest to compare"),
        }
    }

    let m = served.or_else(|| {
        a.manifest
            .as_ref()
            .and_then(|p| std::fs::read(p).ok())
            .and_then(|b| Manifest::from_bytes(&b, Format::Yaml).ok())
    });
    match m {
        Some(m) => match get(m.ui.remote_path.clone()).await {
            Ok((200, ctype, js)) => match remote_problems(&m, &ctype, &js) {
                None => r.add(
                    true,
                    "remote entry",
                    format!(
                        "{} defines {} exposing {}",
                        m.ui.remote_path,
                        m.scope(),
                        exposed(&m).join(", ")
                    ),
                ),
                Some(p) => r.add(false, "remote entry", p),
            },
            Ok((s, _, _)) => r.add(
                false,
                "remote entry",
                format!("GET {}: HTTP {s}", m.ui.remote_path),
            ),
            Err(e) => r.add(false, "remote entry", e),
        },
        None => r.add(
            false,
            "remote entry",
            "no manifest to find the remote entry with",
        ),
    }
    r
}

/// Checks the exposition line by line and the required families.
fn metrics_problems(text: &str) -> Option<String> {
    for (i, line) in text.lines().enumerate() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let value = line.rsplit(' ').next().unwrap_or("");
        let name_ok = line
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':');
        let value_ok = value.parse::<f64>().is_ok() || ["+Inf", "-Inf", "NaN"].contains(&value);
        if !name_ok || !value_ok || (line.contains('{') && !line.contains('}')) {
            return Some(format!("line {}: not a Prometheus sample: {line}", i + 1));
        }
    }
    let missing: Vec<&str> = REQUIRED_FAMILIES
        .iter()
        .copied()
        .filter(|f| !text.lines().any(|l| l.starts_with(&format!("# TYPE {f} "))))
        .collect();
    (!missing.is_empty()).then(|| format!("missing families: {}", missing.join(", ")))
}

fn exposed(m: &Manifest) -> Vec<&'static str> {
    let mut v = Vec::new();
    if !m.ui.contributions.panels.is_empty() {
        v.push("./Panel");
    }
    if !m.ui.contributions.routes.is_empty() {
        v.push("./Routes");
    }
    v
}

/// Static checks of a remote entry: JavaScript, defines the container, names each exposed
/// module (the container protocol looks modules up by these names).
fn remote_problems(m: &Manifest, ctype: &str, js: &str) -> Option<String> {
    if !ctype.contains("javascript") {
        return Some(format!("Content-Type is \"{ctype}\", not JavaScript"));
    }
    let scope = m.scope();
    let defines = js.contains(&format!("var {scope}"))
        || js.contains(&format!("{scope}="))
        || js.contains(&format!("{scope} ="));
    if !defines {
        return Some(format!(
            "does not define the container \"{scope}\" (Module Federation name, library type var)"
        ));
    }
    let missing: Vec<&str> = exposed(m)
        .into_iter()
        .filter(|e| !js.contains(&format!("\"{e}\"")) && !js.contains(&format!("'{e}'")))
        .collect();
    (!missing.is_empty()).then(|| format!("does not expose {}", missing.join(", ")))
}

fn first_difference(a: &Value, b: &Value, at: &str) -> String {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for k in x.keys().chain(y.keys()) {
                if x.get(k) != y.get(k) {
                    return match (x.get(k), y.get(k)) {
                        (Some(p), Some(q)) => first_difference(p, q, &format!("{at}/{k}")),
                        _ => format!("{at}/{k} present on one side only"),
                    };
                }
            }
            format!("{at}: differs")
        }
        _ => format!(
            "{}: plugin.yaml has {a}, /manifest has {b}",
            if at.is_empty() { "/" } else { at }
        ),
    }
}
