//! `fake-kube [--port PORT] [--kubeconfig FILE] [--namespace NS]`: runs the fake API server
//! until interrupted and writes a kubeconfig pointing at it (to try `tessera serve --store
//! kubernetes`, or the real-cluster tests' code paths, without a cluster).

#![allow(clippy::print_stdout)]

use std::path::PathBuf;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let mut port = 0u16;
    let mut kubeconfig = PathBuf::from("fake-kubeconfig");
    let mut namespace = "default".to_string();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let value = args.next();
        match (a.as_str(), value) {
            ("--port", Some(v)) => match v.parse() {
                Ok(p) => port = p,
                Err(_) => return usage(&format!("--port {v}: not a port")),
            },
            ("--kubeconfig", Some(v)) => kubeconfig = PathBuf::from(v),
            ("--namespace", Some(v)) => namespace = v,
            _ => return usage(&format!("unexpected argument {a}")),
        }
    }
    let fake = match fake_kube::FakeKube::start_on(port).await {
        Ok(f) => f,
        Err(e) => return usage(&format!("cannot listen: {e}")),
    };
    if let Err(e) = fake.write_kubeconfig(&kubeconfig, &namespace) {
        return usage(&format!("{}: {e}", kubeconfig.display()));
    }
    println!(
        "fake API server on {}; kubeconfig {}",
        fake.url(),
        kubeconfig.display()
    );
    let _ = tokio::signal::ctrl_c().await;
    std::process::ExitCode::SUCCESS
}

fn usage(why: &str) -> std::process::ExitCode {
    eprintln!("error: {why}\nusage: fake-kube [--port PORT] [--kubeconfig FILE] [--namespace NS]");
    std::process::ExitCode::from(2)
}
