//! Helpers shared by Tessera's cross-process tests: where the repository is, and how to run the
//! real `tessera` binary.
//!
//! The tests run the binary the workspace built (`target/<profile>/tessera`, next to the test
//! executable's `deps/` folder). The README's test command builds it first; set `TESSERA_BIN`
//! to test another build.

#![forbid(unsafe_code)]
// Test support: a failed set-up step should fail the test loudly, which is what panics do here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Path of the `tessera` binary under test.
pub fn tessera_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("TESSERA_BIN") {
        return PathBuf::from(bin);
    }
    let exe = std::env::current_exe().unwrap_or_default();
    // target/<profile>/deps/<test> -> target/<profile>/tessera
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|dir| dir.join(format!("tessera{}", std::env::consts::EXE_SUFFIX)))
        .unwrap_or_default();
    assert!(
        bin.is_file(),
        "the tessera binary is not at {}: build it first with `cargo build --workspace --bins` \
         (the README's test command does), or set TESSERA_BIN",
        bin.display()
    );
    bin
}

/// Path of the template plugin's backend binary (`hello-plugin`), built with the workspace.
pub fn hello_plugin_bin() -> PathBuf {
    let bin = tessera_bin().with_file_name(format!("hello-plugin{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.is_file(),
        "{} is missing: build it with `cargo build --workspace --bins`",
        bin.display()
    );
    bin
}

/// Path of the echo plugin (`bench/src/bin/echo-plugin.rs`), built with the workspace.
pub fn echo_plugin_bin() -> PathBuf {
    let bin = tessera_bin().with_file_name(format!("echo-plugin{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.is_file(),
        "{} is missing: build it with `cargo build --workspace --bins`",
        bin.display()
    );
    bin
}

/// Path of the events plugin (`bench/src/bin/events-plugin.rs`), built with the workspace.
pub fn events_plugin_bin() -> PathBuf {
    let bin =
        tessera_bin().with_file_name(format!("events-plugin{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.is_file(),
        "{} is missing: build it with `cargo build --workspace --bins`",
        bin.display()
    );
    bin
}

/// Path of the jobs plugin (`bench/src/bin/jobs-plugin.rs`), built with the workspace.
pub fn jobs_plugin_bin() -> PathBuf {
    let bin = tessera_bin().with_file_name(format!("jobs-plugin{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.is_file(),
        "{} is missing: build it with `cargo build --workspace --bins`",
        bin.display()
    );
    bin
}

/// Path of the surfaces plugin (`bench/src/bin/surfaces-plugin.rs`), built with the workspace.
pub fn surfaces_plugin_bin() -> PathBuf {
    let bin =
        tessera_bin().with_file_name(format!("surfaces-plugin{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.is_file(),
        "{} is missing: build it with `cargo build --workspace --bins`",
        bin.display()
    );
    bin
}

/// Milliseconds since the epoch, now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or_default()
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// What a run of `tessera` printed and how it ended.
#[derive(Debug)]
pub struct Run {
    /// Exit code; `None` when killed by a signal (a panic gives 101).
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(o: Output) -> Run {
        Run {
            code: o.status.code(),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

/// Runs `tessera` with `args` in the repository root.
pub fn tessera(args: &[&str]) -> Run {
    tessera_with_stdin(args, None)
}

/// Runs `tessera` with `args` in the repository root, feeding `stdin` when given.
pub fn tessera_with_stdin(args: &[&str], stdin: Option<&[u8]>) -> Run {
    let mut child = Command::new(tessera_bin())
        .args(args)
        .current_dir(repo_root())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", tessera_bin().display()));
    if let (Some(bytes), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // The child may refuse early and close its end; that is its answer, not a test failure.
        let _ = pipe.write_all(bytes);
    }
    child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("tessera did not finish: {e}"))
        .into()
}

/// A tool the test command installs: `$ENV` if set, else `target/tools/<installed>` when present,
/// else `name` on the PATH; panics with how to get it.
pub fn tool(name: &str, env: &str, installed: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(env) {
        return p.into();
    }
    let local = repo_root().join("target/tools").join(installed);
    if local.is_file() {
        return local;
    }
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| {
        panic!(
            "{name} is required: run the README's test command, which installs it (or set {env})"
        )
    })
}

pub mod client;
pub mod core;
pub mod mutate;
pub mod nats;
pub mod plugin_server;

/// Checks Prometheus text with `promtool check metrics` ($PROMTOOL, the one the test command
/// installs under target/tools, or one on PATH); panics with promtool's words otherwise.
pub fn promtool_check(text: &str) {
    let mut child = Command::new(tool("promtool", "PROMTOOL", "prometheus/usr/bin/promtool"))
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("promtool");
    assert!(
        out.status.success(),
        "promtool: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
