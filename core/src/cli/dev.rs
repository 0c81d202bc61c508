//! `tessera dev`: the core and the template plugin on one machine, registered and Ready.
//!
//! Builds what is missing (the template's UI once, with npm; the plugin's backend with cargo),
//! starts the core on SQLite in a dev data dir, mints a token, starts the plugin, waits until
//! the core reports it Ready, prints where everything is, and on Ctrl-C stops both cleanly.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use clap::Args;
use tessera_sdk::Manifest;
use tessera_sdk::manifest::Format;

use crate::auth::Keys;
use crate::config::Config;

#[derive(Debug, Args)]
pub(crate) struct DevArgs {
    /// Address of the core.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Dev data dir (SQLite file, signing key, logs).
    #[arg(long, default_value = ".tessera-dev")]
    data_dir: PathBuf,
    /// Port of the template plugin's service.
    #[arg(long, default_value_t = 7001)]
    plugin_port: u16,
    /// The plugin folder (plugin.yaml, backend/, ui/).
    #[arg(long, default_value = "plugin-template")]
    template: PathBuf,
    /// Seconds to wait for the plugin to become Ready.
    #[arg(long, default_value_t = 120)]
    timeout: u64,
}

fn fail(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {msg}");
    ExitCode::FAILURE
}

pub(crate) fn dev(a: DevArgs) -> ExitCode {
    let manifest_path = a.template.join("plugin.yaml");
    let manifest = match std::fs::read(&manifest_path)
        .map_err(|e| {
            format!(
                "{}: {e} (run tessera dev from the repository root, or pass --template)",
                manifest_path.display()
            )
        })
        .and_then(|b| {
            Manifest::from_bytes(&b, Format::Yaml)
                .map_err(|e| format!("{}: {e}", manifest_path.display()))
        }) {
        Ok(m) => m,
        Err(e) => return fail(e),
    };
    let ui_dir = a.template.join("ui");
    let dist = ui_dir.join("dist");
    if let Err(e) = build_ui(&ui_dir, &dist) {
        return fail(e);
    }
    let backend = match build_backend(&a.template) {
        Ok(b) => b,
        Err(e) => return fail(e),
    };
    if let Err(e) = std::fs::create_dir_all(&a.data_dir) {
        return fail(format!("{}: {e}", a.data_dir.display()));
    }
    let keys = match Keys::load_or_create(&a.data_dir) {
        Ok(k) => k,
        Err(e) => return fail(format!("signing key: {e}")),
    };
    let minted = keys
        .issue_registration(
            &manifest.name,
            &manifest.requested_capabilities(),
            None,
            None,
        )
        .and_then(|plugin| {
            keys.issue_admin(crate::auth::ADMIN_TOKEN_TTL_SECS)
                .map(|admin| (plugin, admin))
        });
    let ((plugin_token, plugin_claims), (admin_token, admin_claims)) = match minted {
        Ok(t) => t,
        Err(e) => return fail(format!("minting tokens: {e}")),
    };
    for claims in [&plugin_claims, &admin_claims] {
        if let Err(e) = super::keys::record_offline(&a.data_dir, claims, &keys.kid(), "cli:dev") {
            return fail(format!("recording the dev tokens: {e}"));
        }
    }

    let core_log = a.data_dir.join("core.log");
    let plugin_log = a.data_dir.join(format!("{}.log", manifest.name));
    match std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&core_log)
    {
        Ok(f) => crate::serve::init_logging_to(Some(f)),
        Err(e) => return fail(format!("{}: {e}", core_log.display())),
    }
    let config = Config {
        listen: a.listen,
        data_dir: a.data_dir.clone(),
        ..Config::default()
    };
    let rt = match super::runtime(super::Runtime::Server) {
        Ok(rt) => rt,
        Err(e) => return fail(format!("runtime: {e}")),
    };
    rt.block_on(async move {
        let core = tokio::spawn(crate::serve::run(config));
        let base = format!("http://{}", a.listen);
        let http = reqwest::Client::new();
        if !wait_for(&http, &format!("{base}/healthz"), Duration::from_secs(10)).await {
            return match core.await {
                Ok(Err(e)) => fail(format!("the core did not start: {e}")),
                _ => fail(format!(
                    "the core did not start; see {}",
                    core_log.display()
                )),
            };
        }
        let log = match std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&plugin_log)
        {
            Ok(f) => f,
            Err(e) => return fail(format!("{}: {e}", plugin_log.display())),
        };
        let log_err = match log.try_clone() {
            Ok(f) => f,
            Err(e) => return fail(e),
        };
        let service = format!("http://127.0.0.1:{}", a.plugin_port);
        let child = Command::new(&backend)
            .env("CORE_BASE_URL", &base)
            .env("REG_TOKEN", &plugin_token)
            .env("PORT", a.plugin_port.to_string())
            .env("SERVICE_URL", &service)
            .env("UI_REMOTE_PATH", &dist)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn();
        let mut child = match child {
            Ok(c) => c,
            Err(e) => return fail(format!("starting {}: {e}", backend.display())),
        };
        println!("core     {base}  (log: {})", core_log.display());
        println!(
            "plugin   {service}  {} {}  (log: {})",
            manifest.name,
            manifest.version,
            plugin_log.display()
        );
        print!("waiting for {} to be Ready ", manifest.name);
        let ready = wait_ready(
            &http,
            &base,
            &admin_token,
            &manifest.name,
            &mut child,
            Duration::from_secs(a.timeout),
        )
        .await;
        println!();
        match ready {
            Ok(()) => {
                println!("ready    {} {} is Ready", manifest.name, manifest.version);
                println!("shell    {base}/  (open it in a browser)");
                println!("admin token (12h):\n{admin_token}");
                println!("Ctrl-C stops both.");
            }
            Err(e) => {
                eprintln!("error: {e}");
                eprintln!(
                    "plugin log ({}):\n{}",
                    plugin_log.display(),
                    tail(&plugin_log, 20)
                );
                stop(&mut child);
                return ExitCode::FAILURE;
            }
        }
        // The core's own task stops on the same signal.
        crate::serve::shutdown_signal().await;
        println!("\nstopping ...");
        stop(&mut child);
        match tokio::time::timeout(Duration::from_secs(15), core).await {
            Ok(Ok(Ok(()))) => {
                println!("stopped");
                ExitCode::SUCCESS
            }
            Ok(Ok(Err(e))) => fail(e),
            _ => fail("the core did not stop in time"),
        }
    })
}

/// Builds the UI when `dist/remoteEntry.js` is missing or older than a source file.
fn build_ui(ui: &Path, dist: &Path) -> Result<(), String> {
    let entry = dist.join("remoteEntry.js");
    let built = std::fs::metadata(&entry).and_then(|m| m.modified()).ok();
    let newest_src = newest(&ui.join("src"))
        .max(newest(&ui.join("package.json")))
        .max(newest(&ui.join("build.mjs")));
    if built.is_some_and(|b| newest_src.is_none_or(|s| s <= b)) {
        return Ok(());
    }
    println!(
        "building the UI in {} (first run, or sources changed) ...",
        ui.display()
    );
    if !ui.join("node_modules").is_dir() {
        run(
            Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund"])
                .current_dir(ui),
            "npm ci (needs node and npm)",
        )?;
    }
    run(
        Command::new("npm").args(["run", "build"]).current_dir(ui),
        "npm run build",
    )
}

/// Builds the plugin's backend with cargo (a no-op when it is up to date) and returns its path.
fn build_backend(template: &Path) -> Result<PathBuf, String> {
    let manifest = template.join("backend").join("Cargo.toml");
    println!("building the plugin backend ({}) ...", manifest.display());
    let out = Command::new("cargo")
        .args([
            "build",
            "--quiet",
            "--message-format",
            "short",
            "--manifest-path",
        ])
        .arg(&manifest)
        .stdin(Stdio::null())
        .status()
        .map_err(|e| format!("cargo: {e} (a Rust toolchain is needed)"))?;
    if !out.success() {
        return Err(format!(
            "cargo build --manifest-path {} failed",
            manifest.display()
        ));
    }
    let meta = Command::new("cargo")
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--manifest-path",
        ])
        .arg(&manifest)
        .output()
        .map_err(|e| format!("cargo metadata: {e}"))?;
    let v: serde_json::Value =
        serde_json::from_slice(&meta.stdout).map_err(|e| format!("cargo metadata: {e}"))?;
    let target = v["target_directory"]
        .as_str()
        .ok_or("cargo metadata: no target directory")?;
    let bin = Path::new(target)
        .join("debug")
        .join(format!("hello-plugin{}", std::env::consts::EXE_SUFFIX));
    if bin.is_file() {
        Ok(bin)
    } else {
        Err(format!("{} was not built", bin.display()))
    }
}

fn run(cmd: &mut Command, what: &str) -> Result<(), String> {
    let status = cmd
        .stdin(Stdio::null())
        .status()
        .map_err(|e| format!("{what}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{what} failed ({status})"))
    }
}

fn newest(path: &Path) -> Option<std::time::SystemTime> {
    let meta = std::fs::metadata(path).ok()?;
    if meta.is_file() {
        return meta.modified().ok();
    }
    std::fs::read_dir(path)
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|e| newest(&e.path()))
        .max()
}

async fn wait_for(http: &reqwest::Client, url: &str, limit: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if http
            .get(url)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// How long the plugin must have run before it counts as started: a service that cannot bind
/// its port exits well within this.
const CHILD_GRACE: Duration = Duration::from_secs(1);

async fn wait_ready(
    http: &reqwest::Client,
    base: &str,
    admin: &str,
    name: &str,
    child: &mut Child,
    limit: Duration,
) -> Result<(), String> {
    use std::io::Write;
    let start = Instant::now();
    let mut last = String::new();
    while start.elapsed() < limit {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("the plugin exited at start ({status})"));
        }
        if let Ok(r) = http
            .get(format!("{base}/api/plugins/{name}"))
            .bearer_auth(admin)
            .send()
            .await
            && let Ok(v) = r.json::<serde_json::Value>().await
        {
            // A record left Ready by an earlier run says nothing about this one: Ready counts
            // only once this core has probed the plugin successfully (probe figures live in
            // memory), and only while the child started here is alive, past the moment a
            // failed start (a port already taken) would have ended it.
            if v["state"] == "Ready"
                && !v["probe"]["lastSuccess"].is_null()
                && start.elapsed() >= CHILD_GRACE
            {
                return match child.try_wait() {
                    Ok(None) => Ok(()),
                    Ok(Some(status)) => Err(format!("the plugin exited at start ({status})")),
                    Err(e) => Err(format!("the plugin's state is unknown: {e}")),
                };
            }
            last = v["conditions"]
                .as_array()
                .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
                .and_then(|c| c["message"].as_str())
                .unwrap_or("")
                .to_string();
        }
        print!(".");
        let _ = std::io::stdout().flush();
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Err(format!(
        "{name} was not Ready after {} s: {last}",
        limit.as_secs()
    ))
}

fn stop(child: &mut Child) {
    #[cfg(unix)]
    {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .stderr(Stdio::null())
            .status();
        for _ in 0..100 {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
