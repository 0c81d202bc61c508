//! `tessera secret set|delete|list|rotate-key`: plugin secrets on a SQLite core. `set`, `delete`
//! and `list` go through the running core's admin API; the value is read from standard input
//! or a file, never from the command line (where `ps` and shell history would keep it).
//! `rotate-key` seals every value again under a new key in the data dir.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde_json::{Value, json};

use super::token::{ApiArgs, call, finish};

#[derive(Debug, Subcommand)]
pub(crate) enum SecretCommand {
    /// Set a plugin's secret; the value comes from standard input (`--from-file -`, the
    /// default) or a file, with one trailing newline removed.
    Set(SetArgs),
    /// Remove a plugin's secret.
    Delete(NameArgs),
    /// List a plugin's secrets: declared in its plugin.yaml, set, when; never the values.
    List(ListArgs),
    /// Seal every secret again under a new key (`secrets-key` in the data dir); the core keeps
    /// answering throughout.
    RotateKey(RotateArgs),
}

#[derive(Debug, Args)]
pub(crate) struct SetArgs {
    /// The plugin.
    plugin: String,
    /// The secret's name, as the plugin's plugin.yaml lists it (e.g. STRIPE_KEY).
    name: String,
    /// Read the value from this file (`-`: standard input).
    #[arg(long, value_name = "PATH", default_value = "-")]
    from_file: String,
    #[command(flatten)]
    api: ApiArgs,
}

#[derive(Debug, Args)]
pub(crate) struct NameArgs {
    /// The plugin.
    plugin: String,
    /// The secret's name.
    name: String,
    #[command(flatten)]
    api: ApiArgs,
}

#[derive(Debug, Args)]
pub(crate) struct ListArgs {
    /// The plugin.
    plugin: String,
    #[command(flatten)]
    api: ApiArgs,
}

#[derive(Debug, Args)]
pub(crate) struct RotateArgs {
    /// The core's data dir (its `tessera.db` and `secrets-key`).
    #[arg(long, value_name = "DIR", default_value = ".tessera")]
    data_dir: PathBuf,
}

pub(crate) fn secret(cmd: SecretCommand) -> ExitCode {
    finish(match cmd {
        SecretCommand::Set(a) => set(&a),
        SecretCommand::Delete(a) => call(
            &a.api,
            reqwest::Method::DELETE,
            &format!("/api/plugins/{}/secrets/{}", a.plugin, a.name),
            None,
        )
        .map(|_| format!("deleted secret {} of plugin {}", a.name, a.plugin)),
        SecretCommand::List(a) => list(&a),
        SecretCommand::RotateKey(a) => rotate(&a),
    })
}

fn set(a: &SetArgs) -> Result<String, String> {
    let mut value = String::new();
    if a.from_file == "-" {
        std::io::stdin()
            .read_to_string(&mut value)
            .map_err(|e| format!("reading the value from standard input: {e}"))?;
    } else {
        value = std::fs::read_to_string(&a.from_file)
            .map_err(|e| format!("reading the value from {}: {e}", a.from_file))?;
    }
    if let Some(v) = value.strip_suffix('\n') {
        value = v.strip_suffix('\r').unwrap_or(v).to_string();
    }
    if value.is_empty() {
        return Err(
            "the value is empty (pipe it in: printf %s \"$KEY\" | tessera secret set PLUGIN NAME)"
                .into(),
        );
    }
    let answer = call(
        &a.api,
        reqwest::Method::PUT,
        &format!("/api/plugins/{}/secrets/{}", a.plugin, a.name),
        Some(json!({"value": value})),
    )?;
    let what = if answer["created"] == true {
        "set"
    } else {
        "replaced"
    };
    let mut out = format!("{what} secret {} of plugin {}", a.name, a.plugin);
    if answer["registered"] == false {
        out.push_str(&format!(
            " (plugin {} is not registered yet; it reads {} once it is, if its plugin.yaml lists it under secrets)",
            a.plugin, a.name
        ));
    } else if answer["declared"] == false {
        out.push_str(&format!(
            " (note: plugin {} does not list {} in its plugin.yaml secrets, so it cannot read it yet)",
            a.plugin, a.name
        ));
    }
    Ok(out)
}

fn list(a: &ListArgs) -> Result<String, String> {
    let v = call(
        &a.api,
        reqwest::Method::GET,
        &format!("/api/plugins/{}/secrets", a.plugin),
        None,
    )?;
    if a.api.json {
        return Ok(v.to_string());
    }
    let mut out = format!(
        "{:<40} {:<8} {:<5} {}",
        "NAME", "DECLARED", "SET", "UPDATED"
    );
    for s in v["secrets"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        let yes = |b: &Value| if *b == true { "yes" } else { "no" };
        out.push_str(&format!(
            "\n{:<40} {:<8} {:<5} {}",
            s["name"].as_str().unwrap_or(""),
            yes(&s["declared"]),
            yes(&s["set"]),
            s["updatedAt"].as_str().unwrap_or("-")
        ));
    }
    Ok(out)
}

fn rotate(a: &RotateArgs) -> Result<String, String> {
    let db = a.data_dir.join(crate::store::sqlite::DB_FILE);
    if !db.is_file() {
        return Err(format!(
            "{} holds no {} (pass the core's --data-dir)",
            a.data_dir.display(),
            crate::store::sqlite::DB_FILE
        ));
    }
    let (kid, n) = crate::store::secrets::rotate_key(&db, &a.data_dir)?;
    Ok(format!(
        "secrets key {kid} now seals {n} secret(s); the old key is gone"
    ))
}
