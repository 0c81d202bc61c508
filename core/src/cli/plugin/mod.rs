//! `tessera plugin ...`: commands for plugin authors, one file a command: `validate` (a
//! manifest, offline) and `check` (a running plugin service, against the contract).

mod check;
mod validate;

use std::process::ExitCode;

use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub(crate) enum PluginCommand {
    /// Check a plugin.yaml (or .json) against the plugin contract, offline.
    ///
    /// Exit status: 0 valid; 1 invalid (every problem printed as `<path>: <message>`);
    /// 2 the file cannot be read or is not YAML/JSON.
    Validate(validate::ValidateArgs),
    /// Check a running plugin service against the contract (health, readiness, metrics,
    /// manifest, remote entry). Exit status 1 on any failed check.
    Check(check::CheckArgs),
}

pub(crate) fn run(cmd: PluginCommand) -> ExitCode {
    match cmd {
        PluginCommand::Validate(args) => validate::validate(&args),
        PluginCommand::Check(args) => check::check(args),
    }
}
