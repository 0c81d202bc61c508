//! What the test plugins (`events-plugin`, `jobs-plugin`, `surfaces-plugin`) share: their
//! start, from the manifest text to a served plugin, with a stand-in remote entry when
//! `UI_REMOTE_PATH` is not given.

use std::process::ExitCode;

use tessera_sdk::runtime::{self, PluginApp};

/// Serves `app` as plugin `name` with `manifest` (YAML); `remote` is the remote entry written
/// to a temporary folder when `UI_REMOTE_PATH` names none. Exit 2 for a bad manifest or
/// environment, 1 when serving fails.
pub async fn serve<A: PluginApp>(app: A, name: &str, manifest: &str, remote: &str) -> ExitCode {
    runtime::init_logging(name, "1.0.0");
    let manifest = match runtime::manifest_from_yaml(manifest) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let mut settings = match runtime::Settings::from_env(&manifest) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    if !std::env::var("UI_REMOTE_PATH").is_ok_and(|v| !v.trim().is_empty()) {
        let dir = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
        let written = std::fs::create_dir_all(&dir)
            .and_then(|()| std::fs::write(dir.join("remoteEntry.js"), remote));
        if let Err(e) = written {
            eprintln!("{}: {e}", dir.display());
            return ExitCode::from(2);
        }
        settings.ui_dir = dir;
    }
    match runtime::serve_with(app, manifest, settings).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// A remote entry that loads and renders nothing, for plugins whose UI is not under test.
pub fn empty_remote(name: &str) -> String {
    let scope = format!("plugin_{}", name.replace('-', "_"));
    format!("var {scope} = {{ init() {{}}, get() {{ return Promise.resolve(() => ({{}})); }} }};\n")
}
