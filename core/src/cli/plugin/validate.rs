//! `tessera plugin validate PATH` runs, offline, the checks the core runs when a plugin
//! registers: the JSON Schema, the rules the schema cannot express, and compatibility with a
//! core version. Exit codes: 0 valid, 1 invalid (every problem on its own line as
//! `<path>: <message>`), 2 the file cannot be read or is not YAML/JSON (with line and column).

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;
use semver::Version;
use serde_json::{Value, json};
use tessera_sdk::compat::{self, Versions};
use tessera_sdk::manifest::{
    self, Document, Format, MAX_MANIFEST_BYTES, SourceError, SourceErrorKind,
};
use tessera_sdk::{Manifest, Problem};

#[derive(Debug, Args)]
pub(crate) struct ValidateArgs {
    /// The manifest to check: a file, a plugin folder holding plugin.yaml, or `-` for
    /// standard input. Files ending in .json are read as JSON, everything else as YAML.
    path: PathBuf,
    /// Judge compatibility against this core plugin API version instead of this build's.
    #[arg(long, value_name = "VERSION", value_parser = parse_version)]
    core_version: Option<Version>,
    /// Print JSON: the normalized manifest when valid, an array of {file, path, message}
    /// problems when invalid, an error envelope when the file cannot be read.
    #[arg(long)]
    json: bool,
    /// Also check the `config:` section of a Helm values file against the manifest's
    /// configSchema.
    #[arg(long, value_name = "FILE")]
    values: Option<PathBuf>,
}

fn parse_version(s: &str) -> Result<Version, String> {
    Version::parse(s.trim())
        .map_err(|e| format!("\"{s}\" is not a SemVer version MAJOR.MINOR.PATCH: {e}"))
}

/// A problem with the file it belongs to, as printed.
struct Finding {
    file: String,
    /// Whether `path` points into the manifest (printed bare) or another file (printed as
    /// `file#path`).
    in_manifest: bool,
    problem: Problem,
}

impl Finding {
    fn line(&self) -> String {
        if self.in_manifest {
            self.problem.to_string()
        } else {
            format!(
                "{}#{}: {}",
                self.file, self.problem.path, self.problem.message
            )
        }
    }

    fn json(&self) -> Value {
        json!({"file": self.file, "path": self.problem.path, "message": self.problem.message})
    }
}

pub(super) fn validate(args: &ValidateArgs) -> ExitCode {
    // A plugin's folder stands for its plugin.yaml.
    let path = if args.path.is_dir() && args.path.join("plugin.yaml").is_file() {
        args.path.join("plugin.yaml")
    } else {
        args.path.clone()
    };
    let shown = path.display().to_string();
    let doc = match read(&path).and_then(|bytes| {
        Document::parse(&bytes, Format::from_path(&path)).map_err(Unreadable::Source)
    }) {
        Ok(doc) => doc,
        Err(e) => return unreadable(&shown, &e, args.json),
    };

    let report = manifest::validate_document(&doc);
    let in_manifest = |problem: Problem| Finding {
        file: shown.clone(),
        in_manifest: true,
        problem,
    };
    let mut findings: Vec<Finding> = report.problems.into_iter().map(in_manifest).collect();
    let mut warnings: Vec<Finding> = report.warnings.into_iter().map(in_manifest).collect();

    let versions = Versions {
        core: args.core_version.clone().unwrap_or(compat::CORE_PLUGIN_API),
        ..Versions::default()
    };
    findings.extend(
        compat::problems(&doc.value, &versions)
            .into_iter()
            .map(in_manifest),
    );
    findings.sort_by(|a, b| a.problem.cmp(&b.problem));

    if let Some(values_path) = &args.values {
        match &report.manifest {
            Some(m) => match check_values(m, values_path) {
                Ok((problems, notes)) => {
                    findings.extend(problems);
                    warnings.extend(notes);
                }
                Err(e) => return unreadable(&values_path.display().to_string(), &e, args.json),
            },
            None => eprintln!(
                "note: {} was not checked because the manifest is invalid",
                values_path.display()
            ),
        }
    }

    for w in &warnings {
        eprintln!("warning: {}", w.line());
    }
    // What the admin must grant: the listed capabilities and the ones declarations request.
    let grant = report.manifest.as_ref().map(|m| {
        let caps: Vec<&str> = m
            .requested_capabilities()
            .into_iter()
            .map(|c| c.name())
            .collect();
        if caps.is_empty() {
            format!("a registration token for {} needs no capability", m.name)
        } else {
            format!(
                "a registration token for {} must grant: {}",
                m.name,
                caps.join(", ")
            )
        }
    });

    let mut out = io::stdout().lock();
    let written = match (&report.manifest, findings.is_empty(), args.json) {
        (Some(m), true, true) => writeln!(out, "{}", pretty(&m.to_json())),
        (Some(m), true, false) => writeln!(
            out,
            "{shown}: valid plugin manifest for {} {} (compatible with core plugin API {})\n{}",
            m.name,
            m.version,
            versions.core,
            grant.as_deref().unwrap_or_default()
        ),
        (_, _, true) => writeln!(
            out,
            "{}",
            pretty(&Value::Array(findings.iter().map(Finding::json).collect()))
        ),
        (_, _, false) => {
            let lines: Vec<String> = findings.iter().map(Finding::line).collect();
            writeln!(out, "{}", lines.join("\n"))
        }
    };
    // A closed stdout (for example `| head`) is not the manifest's fault; the exit code still
    // says whether it is valid.
    let _ = written;
    if findings.is_empty() {
        ExitCode::SUCCESS
    } else {
        if let (Some(g), false) = (&grant, args.json) {
            eprintln!("note: {g}");
        }
        eprintln!(
            "{shown}: invalid, {} problem{}",
            findings.len(),
            if findings.len() == 1 { "" } else { "s" }
        );
        ExitCode::from(1)
    }
}

/// Checks a Helm values file's `config:` against the manifest's configSchema. Returns the
/// problems and any notes.
fn check_values(m: &Manifest, path: &Path) -> Result<(Vec<Finding>, Vec<Finding>), Unreadable> {
    let shown = path.display().to_string();
    let bytes = read(path)?;
    let values =
        manifest::parse_document(&bytes, Format::from_path(path)).map_err(Unreadable::Source)?;
    let finding = |problem: Problem| Finding {
        file: shown.clone(),
        in_manifest: false,
        problem,
    };
    let config = match &values {
        Value::Null => Value::Object(Default::default()),
        Value::Object(map) => match map.get("config") {
            None | Some(Value::Null) => Value::Object(Default::default()),
            Some(c) => c.clone(),
        },
        other => {
            return Ok((
                vec![finding(Problem {
                    path: String::new(),
                    message: format!("a Helm values file is a mapping, found {}", kind(other)),
                })],
                vec![],
            ));
        }
    };
    match &m.config_schema {
        Some(schema) => Ok((
            manifest::validate_value_against(schema, &config, "/config")
                .into_iter()
                .map(finding)
                .collect(),
            vec![],
        )),
        None => {
            let empty = config.as_object().is_some_and(|c| c.is_empty());
            let notes = if empty {
                vec![]
            } else {
                vec![finding(Problem {
                    path: "/config".to_string(),
                    message: "not checked: the manifest declares no configSchema".to_string(),
                })]
            };
            Ok((vec![], notes))
        }
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

enum Unreadable {
    Io(io::Error),
    Source(SourceError),
}

/// Reads a file (or standard input for `-`), refusing more than the manifest limit before
/// reading it whole.
fn read(path: &Path) -> Result<Vec<u8>, Unreadable> {
    let limit = MAX_MANIFEST_BYTES as u64 + 1;
    let mut bytes = Vec::new();
    if path == Path::new("-") {
        io::stdin()
            .lock()
            .take(limit)
            .read_to_end(&mut bytes)
            .map_err(Unreadable::Io)?;
    } else {
        let file = File::open(path).map_err(Unreadable::Io)?;
        let meta = file.metadata().map_err(Unreadable::Io)?;
        if meta.is_dir() {
            return Err(Unreadable::Io(io::Error::other(
                "is a directory, and holds no plugin.yaml",
            )));
        }
        if meta.len() > MAX_MANIFEST_BYTES as u64 {
            return Err(Unreadable::Source(manifest::too_large(
                usize::try_from(meta.len()).unwrap_or(usize::MAX),
            )));
        }
        file.take(limit)
            .read_to_end(&mut bytes)
            .map_err(Unreadable::Io)?;
    }
    if bytes.len() > MAX_MANIFEST_BYTES {
        return Err(Unreadable::Source(manifest::too_large(bytes.len())));
    }
    Ok(bytes)
}

/// Reports a file that cannot be read or parsed; exit code 2.
fn unreadable(file: &str, e: &Unreadable, as_json: bool) -> ExitCode {
    let (code, message, line, column) = match e {
        Unreadable::Io(e) => (
            "file_unreadable",
            format!("cannot read the file: {e}"),
            None,
            None,
        ),
        Unreadable::Source(e) => (e.kind.code(), e.message.clone(), e.line, e.column),
    };
    if as_json {
        let mut detail = json!({"file": file});
        if let (Some(l), Some(c)) = (line, column) {
            detail["line"] = json!(l);
            detail["column"] = json!(c);
        }
        let envelope = json!({"error": {"code": code, "message": message, "details": [detail]}});
        let _ = writeln!(io::stdout().lock(), "{}", pretty(&envelope));
    } else {
        let at = match (line, column) {
            (Some(l), Some(c)) => format!("{file}:{l}:{c}"),
            _ => file.to_string(),
        };
        let prefix = match e {
            Unreadable::Source(SourceError {
                kind: SourceErrorKind::Syntax,
                ..
            }) => "not valid YAML or JSON: ",
            _ => "",
        };
        eprintln!("error: {at}: {prefix}{message}");
    }
    ExitCode::from(2)
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
}
