//! `tessera token ...`: mint tokens offline with the signing key, keep the token list, and
//! list, revoke and rotate tokens through a running core's admin API (or, in a cluster, in the
//! plugins' token Secrets).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde_json::{Value, json};

use super::{Runtime, keys, runtime};
use crate::auth;

#[derive(Debug, Subcommand)]
pub(crate) enum TokenCommand {
    /// Print a new registration token (--plugin) or admin token (--admin), signed offline with
    /// the data dir's key (or the cluster's), and add it to the token list.
    Issue(IssueArgs),
    /// List the tokens a running core minted (jti, subject, capabilities, issued, expires,
    /// revoked); never the tokens themselves.
    List(ApiArgs),
    /// Revoke a token by its id (jti) on a running core; it is refused from then on.
    Revoke(RevokeArgs),
    /// Mint a new token for a plugin with the same grant and revoke its old ones: through a
    /// running core (SQLite store), or in the plugin's token Secret (--k8s-namespace).
    Rotate(RotateArgs),
    /// Print a call token for a plugin, as the core presents when it calls the plugin's API
    /// (2 minutes; signed with the data dir's key): for trying a plugin's routes by hand.
    Call(CallArgs),
}

#[derive(Debug, Args)]
pub(crate) struct CallArgs {
    /// The plugin called (the token's audience is `plugin:<name>`).
    plugin: String,
    /// On whose behalf: a user's subject, `anonymous` or `core`.
    #[arg(long, default_value = "anonymous")]
    sub: String,
    /// The caller's tenant.
    #[arg(long, default_value = "default")]
    tenant: String,
    /// The caller's groups, comma-separated.
    #[arg(long, value_delimiter = ',')]
    groups: Vec<String>,
    /// Why the core calls.
    #[arg(long, value_enum, default_value = "request")]
    kind: CallKindArg,
    /// Data dir holding the signing key: the core's --data-dir.
    #[arg(long, value_name = "DIR", default_value = ".tessera")]
    data_dir: PathBuf,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub(crate) enum CallKindArg {
    Request,
    Event,
    Job,
    Webhook,
}

fn call_token(a: &CallArgs) -> Result<String, String> {
    use auth::call::{CallKind, CallTokens, OnBehalfOf};
    if !tessera_sdk::manifest::is_plugin_name(&a.plugin) {
        return Err(format!("\"{}\" is not a plugin name", a.plugin));
    }
    let keys = keys::for_minting(None, &a.data_dir, false).map_err(|(e, _)| e)?;
    let kind = match a.kind {
        CallKindArg::Request => CallKind::Request,
        CallKindArg::Event => CallKind::Event,
        CallKindArg::Job => CallKind::Job,
        CallKindArg::Webhook => CallKind::Webhook,
    };
    let who = OnBehalfOf {
        sub: a.sub.clone(),
        tenant: a.tenant.clone(),
        groups: a.groups.iter().filter(|g| !g.is_empty()).cloned().collect(),
    };
    CallTokens::default()
        .token(&keys, &a.plugin, &who, kind)
        .map_err(|e| format!("signing failed: {e}"))
}

/// How to reach a running core's admin API.
#[derive(Debug, Args)]
pub(crate) struct ApiArgs {
    /// The core's base URL.
    #[arg(
        long,
        value_name = "URL",
        env = "TESSERA_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    pub(crate) url: String,
    /// An admin token (`tessera token issue --admin`; `make run` prints one).
    #[arg(
        long,
        value_name = "TOKEN",
        env = "TESSERA_ADMIN_TOKEN",
        hide_env_values = true
    )]
    pub(crate) admin_token: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct RevokeArgs {
    /// The token's id (the `jti` column of `tessera token list`).
    jti: String,
    #[command(flatten)]
    api: ApiArgs,
}

#[derive(Debug, Args)]
pub(crate) struct RotateArgs {
    /// Plugin whose token is rotated.
    #[arg(long, value_name = "NAME")]
    plugin: String,
    /// Namespace of the token Secret (Kubernetes store); without it the running core at --url
    /// mints the new token and revokes the old ones.
    #[arg(long, value_name = "NS")]
    k8s_namespace: Option<String>,
    /// Name of the token Secret [default: plugin-reg-token-<plugin>].
    #[arg(long, value_name = "NAME")]
    k8s_secret: Option<String>,
    /// Namespace of the core (its signing key and revoked tokens) [default: the kubeconfig's].
    #[arg(long, value_name = "NS")]
    core_namespace: Option<String>,
    /// Lifetime of the new token, e.g. 90d [default: none].
    #[arg(long, value_name = "DURATION", value_parser = auth::parse_ttl)]
    ttl: Option<u64>,
    /// Write the new token to this file (mode 0600) instead of printing it (without
    /// --k8s-namespace).
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    #[command(flatten)]
    api: ApiArgs,
}

#[derive(Debug, Args)]
pub(crate) struct IssueArgs {
    /// Plugin the registration token is for.
    #[arg(
        long,
        value_name = "NAME",
        conflicts_with = "admin",
        required_unless_present = "admin"
    )]
    plugin: Option<String>,
    /// Capabilities granted, comma-separated (e.g. ui:panel,ui:route).
    #[arg(
        long,
        value_name = "LIST",
        value_delimiter = ',',
        conflicts_with = "admin"
    )]
    capabilities: Vec<String>,
    /// Namespace the plugin's URLs must live in (cluster mode).
    #[arg(long, value_name = "NS", conflicts_with = "admin")]
    namespace: Option<String>,
    /// Mint an admin token instead.
    #[arg(long)]
    admin: bool,
    /// Lifetime, e.g. 90d, 12h, 30m [default: none for plugins, 12h for admins].
    #[arg(long, value_name = "DURATION", value_parser = auth::parse_ttl)]
    ttl: Option<u64>,
    /// Data dir holding the signing key: the core's --data-dir (`make run` uses .tessera-dev).
    #[arg(long, value_name = "DIR", default_value = ".tessera")]
    data_dir: PathBuf,
    /// Create a signing key in the data dir when it has none (a new core's first token).
    /// Without it, a data dir with no key is refused: a token signed by a key the core does
    /// not have would only be refused at registration (`token_unknown_key`).
    #[arg(long)]
    init: bool,
    /// Print {token, jti, claims} as JSON instead of the bare token.
    #[arg(long)]
    json: bool,
    /// Write the bare token to this file (mode 0600) instead of printing it.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Take the signing key from the core's Secret in this namespace (Kubernetes store)
    /// instead of the data dir.
    #[arg(long, value_name = "NS")]
    core_namespace: Option<String>,
    /// Also write the token into this Secret (`data.token`), created or updated.
    #[arg(long, value_name = "NAME", requires = "k8s_namespace")]
    k8s_secret: Option<String>,
    /// Namespace of --k8s-secret.
    #[arg(long, value_name = "NS", requires = "k8s_secret")]
    k8s_namespace: Option<String>,
}

pub(crate) fn token(cmd: TokenCommand) -> ExitCode {
    let a = match cmd {
        TokenCommand::Issue(a) => a,
        TokenCommand::List(api) => return finish(list(&api)),
        TokenCommand::Revoke(r) => return finish(revoke(&r)),
        TokenCommand::Rotate(r) if r.k8s_namespace.is_none() => {
            return finish(rotate_through_core(&r));
        }
        TokenCommand::Rotate(r) => return rotate(r),
        TokenCommand::Call(c) => return finish(call_token(&c)),
    };
    let keys = match keys::for_minting(a.core_namespace.as_deref(), &a.data_dir, a.init) {
        Ok(k) => k,
        Err((e, code)) => {
            eprintln!("error: {e}");
            return code;
        }
    };
    let signed = if a.admin {
        keys.issue_admin(a.ttl.unwrap_or(auth::ADMIN_TOKEN_TTL_SECS))
    } else {
        let name = a.plugin.unwrap_or_default();
        match auth::Grant::new(&name, &a.capabilities, a.namespace.as_deref()) {
            Ok(grant) => keys.issue_grant(&grant, a.ttl),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        }
    };
    match signed {
        Ok((token, claims)) => {
            if a.core_namespace.is_none()
                && let Err(e) = keys::record_offline(&a.data_dir, &claims, &keys.kid(), "cli")
            {
                eprintln!("error: recording the token in the token list: {e}");
                return ExitCode::FAILURE;
            }
            if let (Some(secret), Some(ns)) = (&a.k8s_secret, &a.k8s_namespace) {
                let written = runtime(Runtime::Client).and_then(|rt| {
                    rt.block_on(async {
                        let store = keys::kube_store(a.core_namespace.clone()).await?;
                        store
                            .write_token_secret(ns, secret, &claims.sub, &token, true)
                            .await
                            .map_err(String::from)
                    })
                });
                if let Err(e) = written {
                    eprintln!("error: {e}");
                    return ExitCode::FAILURE;
                }
                eprintln!(
                    "wrote the token to Secret {ns}/{secret} (key {})",
                    crate::store::kube::TOKEN_KEY
                );
            }
            if let Some(out) = &a.out {
                // A new token replaces the file; it is never readable by others, even briefly.
                let _ = std::fs::remove_file(out);
                if let Err(e) = auth::write_private(out, token.as_bytes()) {
                    eprintln!("error: {}: {e}", out.display());
                    return ExitCode::FAILURE;
                }
                eprintln!("wrote the token (jti {}) to {}", claims.jti, out.display());
            } else if a.json {
                println!(
                    "{}",
                    json!({"token": token, "jti": claims.jti, "claims": claims})
                );
            } else {
                println!("{token}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: signing failed: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `tessera token rotate`: mints a token with the same grant, writes it into the Secret, then
/// revokes the old token id (every replica refuses it once its watch sees the change).
fn rotate(r: RotateArgs) -> ExitCode {
    let k8s_namespace = r.k8s_namespace.clone().unwrap_or_default();
    let secret = r
        .k8s_secret
        .clone()
        .unwrap_or_else(|| crate::store::kube::token_secret_name(&r.plugin));
    let done = runtime(Runtime::Client).and_then(|rt| {
        rt.block_on(async {
            let store = keys::kube_store(r.core_namespace.clone()).await?;
            let keys = keys::cluster_keys(&store).await?;
            let old = store
                .read_token_secret(&k8s_namespace, &secret)
                .await?
                .ok_or_else(|| format!("Secret {}/{secret} holds no token", k8s_namespace))?;
            let claims = auth::peek_claims(&old)
                .ok_or_else(|| format!("Secret {}/{secret} does not hold a token", k8s_namespace))?;
            if claims.sub != r.plugin {
                return Err(format!(
                    "Secret {}/{secret} holds a token for plugin \"{}\", not \"{}\"",
                    k8s_namespace, claims.sub, r.plugin
                ));
            }
            let grant = auth::Grant::new(&r.plugin, &claims.caps, claims.ns.as_deref())
                .map_err(|e| e.0)?;
            let (token, fresh) = keys
                .issue_grant(&grant, r.ttl)
                .map_err(|e| e.to_string())?;
            store
                .write_token_secret(&k8s_namespace, &secret, &r.plugin, &token, true)
                .await?;
            store
                .revoke_token(&claims.jti, "cli:token-rotate")
                .await?;
            Ok(json!({"secret": format!("{}/{secret}", k8s_namespace), "jti": fresh.jti, "revoked": claims.jti}))
        })
    });
    match done {
        Ok(v) => {
            println!("{v}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

pub(crate) fn finish(done: Result<String, String>) -> ExitCode {
    match done {
        Ok(out) => {
            use std::io::Write;
            // A closed stdout (`| head`) is the reader's choice, not a failure.
            let _ = writeln!(std::io::stdout().lock(), "{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Calls the admin API; the JSON answer, or the error envelope's code and message.
pub(crate) fn call(
    api: &ApiArgs,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> Result<Value, String> {
    let token = api.admin_token.clone().ok_or(
        "an admin token is needed: pass --admin-token or set TESSERA_ADMIN_TOKEN \
         (tessera token issue --admin --data-dir <the core's data dir>)",
    )?;
    let url = format!("{}{path}", api.url.trim_end_matches('/'));
    runtime(Runtime::Client)?.block_on(async {
        let client = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| e.to_string())?;
        let mut req = client.request(method, &url).bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req
            .send()
            .await
            .map_err(|e| format!("{url}: {e} (is the core running there? --url)"))?;
        let status = res.status();
        let v: Value = res.json().await.unwrap_or(Value::Null);
        if status.is_success() {
            Ok(v)
        } else {
            let e = &v["error"];
            Err(format!(
                "{url}: HTTP {}: {} ({})",
                status.as_u16(),
                e["message"].as_str().unwrap_or("no message"),
                e["code"].as_str().unwrap_or("no code")
            ))
        }
    })
}

fn list(api: &ApiArgs) -> Result<String, String> {
    let v = call(api, reqwest::Method::GET, "/api/tokens", None)?;
    if api.json {
        return Ok(v.to_string());
    }
    let rows: Vec<&Value> = v.as_array().map(|a| a.iter().collect()).unwrap_or_default();
    let mut out = format!(
        "{:<32} {:<12} {:<20} {:<20} {:<20} {:<7} {}",
        "JTI", "KIND", "SUBJECT", "ISSUED", "EXPIRES", "REVOKED", "CAPABILITIES"
    );
    for t in rows {
        let caps: Vec<&str> = t["capabilities"]
            .as_array()
            .map(|c| c.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        out.push_str(&format!(
            "\n{:<32} {:<12} {:<20} {:<20} {:<20} {:<7} {}",
            t["jti"].as_str().unwrap_or(""),
            t["kind"].as_str().unwrap_or(""),
            t["subject"].as_str().unwrap_or(""),
            t["issued"].as_str().unwrap_or(""),
            t["expires"].as_str().unwrap_or("never"),
            if t["revoked"] == true { "yes" } else { "no" },
            caps.join(",")
        ));
    }
    Ok(out)
}

fn revoke(r: &RevokeArgs) -> Result<String, String> {
    let v = call(
        &r.api,
        reqwest::Method::POST,
        &format!("/api/tokens/{}/revoke", r.jti),
        None,
    )?;
    Ok(if r.api.json {
        v.to_string()
    } else {
        format!("revoked {}", r.jti)
    })
}

/// Rotation through a running core: a new token with the grant of the plugin's newest
/// unrevoked registration token, then every older one of the plugin revoked. Prints the new
/// token (or writes it to --out).
fn rotate_through_core(r: &RotateArgs) -> Result<String, String> {
    let api = &r.api;
    let all = call(api, reqwest::Method::GET, "/api/tokens", None)?;
    let live: Vec<&Value> = all
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|t| {
                    t["kind"] == "registration"
                        && t["subject"] == r.plugin.as_str()
                        && t["revoked"] != true
                })
                .collect()
        })
        .unwrap_or_default();
    let newest = live.first().ok_or_else(|| {
        format!(
            "the core lists no unrevoked registration token for plugin \"{}\" (tessera token list); issue one with tessera token issue --plugin {}",
            r.plugin, r.plugin
        )
    })?;
    let mut body = json!({
        "plugin": r.plugin,
        "capabilities": newest["capabilities"],
    });
    if let Some(ns) = newest["namespace"].as_str() {
        body["namespace"] = json!(ns);
    }
    if let Some(ttl) = r.ttl {
        body["ttl"] = json!(format!("{ttl}s"));
    }
    let minted = call(api, reqwest::Method::POST, "/api/tokens", Some(body))?;
    let token = minted["token"]
        .as_str()
        .ok_or("the core answered no token")?;
    let mut revoked = Vec::new();
    for t in &live {
        if let Some(jti) = t["jti"].as_str() {
            call(
                api,
                reqwest::Method::POST,
                &format!("/api/tokens/{jti}/revoke"),
                None,
            )?;
            revoked.push(jti.to_string());
        }
    }
    let summary = json!({"plugin": r.plugin, "jti": minted["jti"], "revoked": revoked});
    match &r.out {
        Some(out) => {
            let _ = std::fs::remove_file(out);
            auth::write_private(out, token.as_bytes())
                .map_err(|e| format!("{}: {e}", out.display()))?;
            Ok(summary.to_string())
        }
        None => {
            eprintln!("{summary}");
            Ok(token.to_string())
        }
    }
}
