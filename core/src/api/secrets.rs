//! Secrets: `GET /api/plugin/v1/secrets/{name}` (plugin token, `secrets:read`, names the
//! plugin's manifest lists) and the admin's `GET /api/plugins/{plugin}/secrets`,
//! `PUT`/`DELETE /api/plugins/{plugin}/secrets/{name}`. Every answer that carries a value is
//! `Cache-Control: no-store`; values never reach a log line, an error or the audit log (reads
//! are audited by name).

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tessera_sdk::Capability;

use super::plugin_v1::PluginCaller;
use super::{AdminActor, ApiPath, AppState, read_body};
use crate::error::{ApiError, Code};
use crate::secrets::{MAX_VALUE_CHARS, declared_names, is_secret_name};
use crate::store::StoreError;

fn unavailable(e: StoreError) -> ApiError {
    ApiError::new(
        Code::StoreUnavailable,
        format!("secrets cannot be read or written now: {e}"),
    )
}

fn no_store(mut res: Response) -> Response {
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

fn check_names(plugin: &str, name: &str) -> Result<(), ApiError> {
    if !tessera_sdk::manifest::is_plugin_name(plugin) {
        return Err(ApiError::new(
            Code::InvalidSecret,
            format!("\"{plugin}\" is not a plugin name"),
        ));
    }
    if is_secret_name(name) {
        return Ok(());
    }
    Err(ApiError::new(
        Code::InvalidSecret,
        format!(
            "\"{name}\" is not a secret name: a letter or '_', then letters, digits or '_' (at most 253)"
        ),
    ))
}

/// `GET /api/plugin/v1/secrets/{name}` -> `{name, value}`.
async fn read(
    State(state): State<AppState>,
    caller: PluginCaller,
    ApiPath(name): ApiPath<String>,
) -> Result<Response, ApiError> {
    caller.require(Capability::SecretsRead)?;
    let record = state.registry.get(&caller.plugin);
    let declared = record.as_ref().map(declared_names).unwrap_or_default();
    if !declared.contains(&name) {
        return Err(ApiError::new(
            Code::SecretNotDeclared,
            format!(
                "plugin \"{}\" does not list the secret \"{name}\" in its plugin.yaml (secrets); a plugin reads only the secrets it declares",
                caller.plugin
            ),
        )
        .with_details(vec![json!({"declared": declared})]));
    }
    let owner = state.secrets.owner(&caller.plugin, record.as_ref());
    let value = state
        .secrets
        .get(owner, name.clone())
        .await
        .map_err(unavailable)?;
    let Some(value) = value else {
        return Err(ApiError::new(
            Code::SecretNotFound,
            format!(
                "secret \"{name}\" of plugin \"{}\" is not set; an admin sets it (tessera secret set {} {name})",
                caller.plugin, caller.plugin
            ),
        ));
    };
    state
        .registry
        .note(
            "read-secret",
            Some(&caller.plugin),
            format!("secret \"{name}\" read"),
            &caller.actor,
        )
        .await?;
    Ok(no_store(
        Json(json!({"name": name, "value": value})).into_response(),
    ))
}

/// `GET /api/plugins/{plugin}/secrets`: each name the manifest declares or the store holds,
/// whether it is declared and set; never a value.
async fn list(
    State(state): State<AppState>,
    _admin: AdminActor,
    ApiPath(plugin): ApiPath<String>,
) -> Result<Response, ApiError> {
    let record = state.registry.get(&plugin);
    if record.is_none() && !tessera_sdk::manifest::is_plugin_name(&plugin) {
        return Err(ApiError::new(
            Code::PluginNotFound,
            format!("\"{plugin}\" is not a plugin name"),
        ));
    }
    let declared = record.as_ref().map(declared_names).unwrap_or_default();
    let owner = state.secrets.owner(&plugin, record.as_ref());
    let managed = state.secrets.managed_elsewhere(&owner);
    let stored = state.secrets.list(owner).await.map_err(unavailable)?;
    let mut names: Vec<&str> = declared
        .iter()
        .map(String::as_str)
        .chain(stored.iter().map(|s| s.name.as_str()))
        .collect();
    names.sort_unstable();
    names.dedup();
    let items: Vec<Value> = names
        .iter()
        .map(|n| {
            let set = stored.iter().find(|s| s.name == *n);
            json!({
                "name": n,
                "declared": declared.iter().any(|d| d == n),
                "set": set.is_some(),
                "updatedAt": set.and_then(|s| s.updated_at.clone()),
            })
        })
        .collect();
    Ok(no_store(
        Json(json!({"plugin": plugin, "managedBy": if managed.is_some() { "kubernetes" } else { "core" }, "secrets": items}))
            .into_response(),
    ))
}

/// `PUT /api/plugins/{plugin}/secrets/{name}` with `{"value": "..."}`: 201 when new, 200 when
/// replaced.
async fn put(
    State(state): State<AppState>,
    AdminActor(actor): AdminActor,
    ApiPath((plugin, name)): ApiPath<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    check_names(&plugin, &name)?;
    let record = state.registry.get(&plugin);
    let owner = state.secrets.owner(&plugin, record.as_ref());
    if let Some(elsewhere) = state.secrets.managed_elsewhere(&owner) {
        return Err(ApiError::new(Code::SecretsManagedElsewhere, elsewhere));
    }
    let bytes = read_body(&headers, body).await?;
    // The value is never echoed: a parse error names the problem, not the text.
    let value = match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(mut o)) => match o.remove("value") {
            Some(Value::String(v)) if o.is_empty() => v,
            Some(Value::String(_)) => {
                return Err(ApiError::new(
                    Code::InvalidSecret,
                    "the body takes one field, \"value\"",
                ));
            }
            _ => {
                return Err(ApiError::new(
                    Code::InvalidSecret,
                    "the body must be {\"value\": \"<the secret as a string>\"}",
                ));
            }
        },
        _ => {
            return Err(ApiError::new(
                Code::InvalidSecret,
                "the body must be a JSON object {\"value\": \"<the secret as a string>\"}",
            ));
        }
    };
    if value.is_empty() {
        return Err(ApiError::new(
            Code::InvalidSecret,
            "the value is empty; to remove a secret, DELETE it",
        ));
    }
    let chars = value.chars().count();
    if chars > MAX_VALUE_CHARS {
        return Err(ApiError::new(
            Code::InvalidSecret,
            format!("the value has {chars} characters; at most {MAX_VALUE_CHARS} are kept"),
        ));
    }
    let created = state
        .secrets
        .put(owner, name.clone(), value)
        .await
        .map_err(unavailable)?;
    let declared = record.as_ref().map(declared_names).unwrap_or_default();
    state
        .registry
        .note(
            "put-secret",
            Some(&plugin),
            format!(
                "secret \"{name}\" {}",
                if created { "set" } else { "replaced" }
            ),
            &actor,
        )
        .await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(no_store(
        (
            status,
            Json(json!({
                "plugin": plugin,
                "name": name,
                "declared": declared.contains(&name),
                "registered": record.is_some(),
                "created": created,
            })),
        )
            .into_response(),
    ))
}

/// `DELETE /api/plugins/{plugin}/secrets/{name}`: 204, or 404 when not set.
async fn delete(
    State(state): State<AppState>,
    AdminActor(actor): AdminActor,
    ApiPath((plugin, name)): ApiPath<(String, String)>,
) -> Result<Response, ApiError> {
    check_names(&plugin, &name)?;
    let record = state.registry.get(&plugin);
    let owner = state.secrets.owner(&plugin, record.as_ref());
    if let Some(elsewhere) = state.secrets.managed_elsewhere(&owner) {
        return Err(ApiError::new(Code::SecretsManagedElsewhere, elsewhere));
    }
    let deleted = state
        .secrets
        .delete(owner, name.clone())
        .await
        .map_err(unavailable)?;
    if !deleted {
        return Err(ApiError::new(
            Code::SecretNotFound,
            format!("secret \"{name}\" of plugin \"{plugin}\" is not set"),
        ));
    }
    state
        .registry
        .note(
            "delete-secret",
            Some(&plugin),
            format!("secret \"{name}\" deleted"),
            &actor,
        )
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The secrets endpoints.
pub(super) fn routes() -> axum::Router<AppState> {
    use axum::routing::{get, put as put_route};
    axum::Router::new()
        .route("/api/plugin/v1/secrets/{name}", get(read))
        .route("/api/plugins/{name}/secrets", get(list))
        .route(
            "/api/plugins/{name}/secrets/{secret}",
            put_route(put).delete(delete),
        )
}
