//! The `tessera` command line. Each subcommand is a small function over the library; exit codes
//! are part of the contract (documented in `docs/manifest.md` for `plugin validate`).

mod check;
mod dev;
mod plugin;
mod server;
mod token;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Tessera: a Kubernetes-native control plane for out-of-process plugins.
#[derive(Debug, Parser)]
#[command(name = "tessera", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the core server (SQLite store in the data dir).
    Serve(server::ServeArgs),
    /// Run the core and the template plugin together, registered and Ready (development).
    Dev(dev::DevArgs),
    /// Mint tokens offline with the data dir's signing key; list, revoke and rotate them.
    #[command(subcommand)]
    Token(token::TokenCommand),
    /// Work with plugin manifests and plugins.
    #[command(subcommand)]
    Plugin(plugin::PluginCommand),
    /// Exit 0 when a core answers its health endpoint (a container HEALTHCHECK).
    Health(server::HealthArgs),
}

/// Parses the process arguments and runs the command.
pub fn run() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => server::serve(args),
        Command::Dev(args) => dev::dev(args),
        Command::Token(cmd) => token::token(cmd),
        Command::Plugin(cmd) => plugin::run(cmd),
        Command::Health(args) => server::health(args),
    }
}

/// A small runtime for the commands that call a core or the Kubernetes API.
fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))
}
