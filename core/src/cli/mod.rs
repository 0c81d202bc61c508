//! The `tessera` command line, one file a command: `serve`, `dev`, `token` (with `keys`, where
//! offline and cluster signing keys come from), `health`, `plugin/{validate,check}`. Each is a
//! small function over the library; exit codes are part of the contract (documented in
//! `docs/manifest.md` for `plugin validate`).

mod dev;
mod health;
mod keys;
mod plugin;
mod secret;
mod serve;
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
    Serve(serve::ServeArgs),
    /// Run the core and the template plugin together, registered and Ready (development).
    Dev(dev::DevArgs),
    /// Mint tokens offline with the data dir's signing key; list, revoke and rotate them.
    #[command(subcommand)]
    Token(token::TokenCommand),
    /// Rotate, list and retire the core's signing keys.
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// Work with plugin manifests and plugins.
    #[command(subcommand)]
    Plugin(plugin::PluginCommand),
    /// Set, list and delete plugin secrets (SQLite store); rotate their key.
    #[command(subcommand)]
    Secret(secret::SecretCommand),
    /// Exit 0 when a core answers its health endpoint (a container HEALTHCHECK).
    Health(health::HealthArgs),
}

/// Parses the process arguments and runs the command.
pub fn run() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve::serve(args),
        Command::Dev(args) => dev::dev(args),
        Command::Token(cmd) => token::token(cmd),
        Command::Plugin(cmd) => plugin::run(cmd),
        Command::Keys(cmd) => keys::keys(cmd),
        Command::Secret(cmd) => secret::secret(cmd),
        Command::Health(args) => health::health(args),
    }
}

/// What a command's runtime is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Runtime {
    /// The server (`serve`, `dev`): every core, store writes serialized, so a few blocking
    /// threads are plenty (each idle one would keep its own allocator arena).
    Server,
    /// A command that calls a core or the Kubernetes API.
    Client,
}

/// The one place the commands build their tokio runtime.
fn runtime(kind: Runtime) -> Result<tokio::runtime::Runtime, String> {
    let mut b = tokio::runtime::Builder::new_multi_thread();
    match kind {
        Runtime::Server => b.max_blocking_threads(8),
        Runtime::Client => b.worker_threads(2),
    };
    b.enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))
}
