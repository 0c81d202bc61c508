//! A real `tessera serve` process on a loopback port, with its own data dir, for tests.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::tessera_bin;

/// A running core.
#[derive(Debug)]
pub struct Core {
    child: Option<Child>,
    listen: String,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// The egress proxy, `http://127.0.0.1:PORT` (a port of its own each start).
    pub egress_url: String,
    /// Runs the core through this command and its arguments (`unshare`, `prlimit`), when set.
    wrapper: Vec<String>,
    /// Its data dir (kept across restarts).
    pub data_dir: PathBuf,
    config: PathBuf,
    stderr_log: PathBuf,
    extra_args: Vec<String>,
    env: Vec<(String, String)>,
    /// The open-file limit the process starts with (`prlimit`), when set.
    nofile: Option<u64>,
}

/// A fresh, empty folder under the system temp dir.
pub fn temp_dir(tag: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let dir = std::env::temp_dir().join(format!("tessera-{tag}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// A config with fast probes (period 0.2 s), for tests; `extra` is appended YAML.
pub fn fast_config(extra: &str) -> String {
    format!(
        "probe:\n  periodSeconds: 0.2\n  timeoutSeconds: 1\n  failureThreshold: 3\n  successThreshold: 1\n{extra}"
    )
}

impl Core {
    /// Starts a core with `config` (YAML) in a new data dir.
    pub fn start(config: &str) -> Core {
        let data_dir = temp_dir("core");
        Core::start_in(&data_dir, config)
    }

    /// Starts a core on an existing data dir.
    pub fn start_in(data_dir: &Path, config: &str) -> Core {
        Core::start_at(data_dir, config, "127.0.0.1:0")
    }

    /// Starts a core on an existing data dir, listening on `listen`.
    pub fn start_at(data_dir: &Path, config: &str, listen: &str) -> Core {
        let cfg = data_dir.join("config.yaml");
        std::fs::write(&cfg, config).expect("write config");
        let mut core = Core {
            child: None,
            listen: listen.to_string(),
            url: String::new(),
            egress_url: String::new(),
            wrapper: Vec::new(),
            data_dir: data_dir.to_path_buf(),
            config: cfg,
            stderr_log: data_dir.join("core.log"),
            extra_args: Vec::new(),
            env: Vec::new(),
            nofile: None,
        };
        core.spawn();
        core
    }

    /// Starts a core that resolves names with `hosts` as its `/etc/hosts` (a user and mount
    /// namespace of its own, `unshare -rm`; the network is the machine's).
    pub fn start_with_hosts(config: &str, hosts: &Path) -> Core {
        let data_dir = temp_dir("core-hosts");
        let cfg = data_dir.join("config.yaml");
        std::fs::write(&cfg, config).expect("write config");
        let script = format!(
            "mount --bind '{}' /etc/hosts && exec \"$0\" \"$@\"",
            hosts.display()
        );
        let mut core = Core {
            child: None,
            listen: "127.0.0.1:0".into(),
            url: String::new(),
            egress_url: String::new(),
            wrapper: vec![
                "unshare".into(),
                "-rm".into(),
                "sh".into(),
                "-c".into(),
                script,
            ],
            data_dir: data_dir.clone(),
            config: cfg,
            stderr_log: data_dir.join("core.log"),
            extra_args: Vec::new(),
            env: Vec::new(),
            nofile: None,
        };
        core.spawn();
        core
    }

    /// Starts a core with `config` whose open-file limit is `nofile` (util-linux `prlimit`),
    /// as an operator's `ulimit -n` would set it.
    pub fn start_with_open_file_limit(config: &str, nofile: u64) -> Core {
        let data_dir = temp_dir("core-nofile");
        let cfg = data_dir.join("config.yaml");
        std::fs::write(&cfg, config).expect("write config");
        let mut core = Core {
            child: None,
            listen: "127.0.0.1:0".to_string(),
            url: String::new(),
            egress_url: String::new(),
            wrapper: Vec::new(),
            data_dir: data_dir.clone(),
            config: cfg,
            stderr_log: data_dir.join("core.log"),
            extra_args: Vec::new(),
            env: Vec::new(),
            nofile: Some(nofile),
        };
        core.spawn();
        core
    }

    /// Starts a core on the Kubernetes store (`--store kubernetes --namespace NS`) with
    /// `KUBECONFIG` pointing at `kubeconfig` (a fake API server's, in tests), as pod `pod`
    /// (its Lease identity).
    pub fn start_kube_as(kubeconfig: &Path, namespace: &str, config: &str, pod: &str) -> Core {
        let data_dir = temp_dir("kube-core");
        let cfg = data_dir.join("config.yaml");
        std::fs::write(&cfg, config).expect("write config");
        let mut core = Core {
            child: None,
            listen: "127.0.0.1:0".into(),
            url: String::new(),
            egress_url: String::new(),
            wrapper: Vec::new(),
            data_dir: data_dir.clone(),
            config: cfg,
            stderr_log: data_dir.join("core.log"),
            extra_args: vec![
                "--store".into(),
                "kubernetes".into(),
                "--namespace".into(),
                namespace.into(),
            ],
            env: vec![
                ("KUBECONFIG".into(), kubeconfig.display().to_string()),
                ("POD_NAME".into(), pod.into()),
            ],
            nofile: None,
        };
        core.spawn();
        core
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.stderr_log)
            .expect("log file");
        let mut cmd = match (self.nofile, self.wrapper.split_first()) {
            (Some(n), _) => {
                let mut c = Command::new("prlimit");
                c.arg(format!("--nofile={n}:{n}")).arg(tessera_bin());
                c
            }
            (None, Some((program, args))) => {
                let mut c = Command::new(program);
                c.args(args).arg(tessera_bin());
                c
            }
            (None, None) => Command::new(tessera_bin()),
        };
        let mut child = cmd
            .args(["serve", "--listen", &self.listen])
            .args(["--egress-listen", "127.0.0.1:0", "--data-dir"])
            .arg(&self.data_dir)
            .arg("--config")
            .arg(&self.config)
            .args(&self.extra_args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("start tessera serve");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            // The API's line, then the egress proxy's (always: the tests name its address).
            let mut api = None;
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("listening on ") {
                    api = Some(url.to_string());
                }
                if let (Some(url), Some(api)) = (
                    line.strip_prefix("egress proxy listening on "),
                    api.as_ref(),
                ) {
                    let _ = tx.send((api.clone(), url.to_string()));
                }
            }
        });
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok((url, egress)) => {
                self.url = url;
                self.egress_url = egress;
            }
            Err(_) => {
                let _ = child.kill();
                panic!("tessera serve did not start; log:\n{}", self.log());
            }
        }
        self.child = Some(child);
    }

    /// The core's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr_log).unwrap_or_default()
    }

    /// The process id while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// `kill -9`: no chance to flush or clean up.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then waits for a clean exit; returns the exit code.
    pub fn terminate(&mut self) -> Option<i32> {
        let mut c = self.child.take()?;
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .status();
        for _ in 0..200 {
            if let Ok(Some(status)) = c.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = c.kill();
        let _ = c.wait();
        None
    }

    /// Starts the core again on the same data dir and config (after `kill9` or `terminate`).
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    /// Runs `tessera token issue ARGS --data-dir <this core's>` and returns the token.
    pub fn token(&self, args: &[&str]) -> String {
        let out = Command::new(tessera_bin())
            .args(["token", "issue"])
            .args(args)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .output()
            .expect("tessera token issue");
        assert!(
            out.status.success(),
            "token issue failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// An admin token.
    pub fn admin_token(&self) -> String {
        self.token(&["--admin"])
    }
}

impl Drop for Core {
    fn drop(&mut self) {
        self.kill9();
    }
}
