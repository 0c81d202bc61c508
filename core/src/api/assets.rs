//! Remote files through the core's origin: `GET /plugins/<name>/<version>/<path>`.

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;

use super::{ApiPath, AppState};
use crate::assets::{self};
use crate::error::{ApiError, Code};

pub(super) async fn asset(
    State(state): State<AppState>,
    ApiPath((name, version, path)): ApiPath<(String, String, String)>,
    uri: axum::http::Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    // The path as sent: an encoded character (`sub%2fx.js`) would otherwise reach the checks
    // below already decoded.
    // (Only the file path: a version's `+` may arrive as `%2B`.)
    if uri
        .path()
        .splitn(5, '/')
        .nth(4)
        .is_some_and(|p| p.contains('%'))
    {
        return Err(ApiError::new(
            Code::PathNotAllowed,
            "encoded characters are not allowed in remote file paths",
        ));
    }
    let content_type = assets::allowed_type(&path).ok_or_else(|| {
        ApiError::new(
            Code::FileTypeNotAllowed,
            format!(
                "\"{}\" is not a file type a remote needs; the core serves only {}",
                path.chars().take(200).collect::<String>(),
                assets::ALLOWED_EXTENSIONS
            ),
        )
    })?;
    let path = assets::safe_path(&path)
        .ok_or_else(|| {
            ApiError::new(
                Code::PathNotAllowed,
                format!("\"{path}\" is not a file path under the remote's directory"),
            )
        })?
        .to_string();
    let (remote_url, integrity) = match state.registry.serving(&name, &version) {
        None => {
            return Err(ApiError::new(
                Code::PluginNotFound,
                format!("no plugin named \"{name}\""),
            ));
        }
        Some(Err(st)) => {
            return Err(ApiError::new(
                Code::PluginNotReady,
                format!(
                    "plugin \"{name}\" version {version} is not being served (state {})",
                    st.as_str()
                ),
            ));
        }
        Some(Ok(found)) => found,
    };
    let Some(integrity) = integrity else {
        return Err(ApiError::new(
            Code::PluginNotReady,
            format!("plugin \"{name}\" version {version} has no pinned remote entry yet"),
        ));
    };
    // Every file of a remote is named, in the cache and in its ETag, by the entry it belongs
    // to: a rebuilt entry under the same version never meets the chunks of the old one.
    let etag = assets::etag(&integrity, &path);
    if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"))
    {
        return Ok(asset_response(
            StatusCode::NOT_MODIFIED,
            Body::empty(),
            content_type,
            &etag,
        ));
    }
    let (dir, entry_file) = remote_url.rsplit_once('/').unwrap_or((&remote_url, ""));
    let bytes = if path == entry_file {
        remote_entry(&state, &name, &version, &remote_url, &integrity).await?
    } else {
        let key = assets::key(&name, &version, &integrity, &path);
        match state.assets.get(&key) {
            Some(b) => {
                state.metrics.asset_hits.inc();
                b
            }
            None => {
                state.metrics.asset_misses.inc();
                let url = format!("{dir}/{path}");
                let b = crate::probe::get(&state.http, &url, 16 << 20)
                    .await
                    .map_err(|e| {
                        ApiError::new(
                            Code::UpstreamFailed,
                            format!("fetching {path} from plugin \"{name}\" failed: {e}"),
                        )
                    })?;
                state.assets.put(key, b.clone());
                b
            }
        }
    };
    Ok(asset_response(
        StatusCode::OK,
        Body::from(bytes),
        content_type,
        &etag,
    ))
}

/// The remote entry of a served version: the bytes the prober hashed, or, when this core has
/// not fetched them yet (just after a start), fetched now and served only if they still have
/// the pinned integrity.
pub(super) async fn remote_entry(
    state: &AppState,
    name: &str,
    version: &str,
    remote_url: &str,
    integrity: &str,
) -> Result<Bytes, ApiError> {
    let held = state.registry.remote_entry(name, version);
    let fetched = held.is_none();
    let bytes = match held {
        Some(b) => b,
        None => crate::probe::get(
            &state.http,
            remote_url,
            crate::probe::MAX_REMOTE_ENTRY_BYTES,
        )
        .await
        .map_err(|e| {
            ApiError::new(
                Code::UpstreamFailed,
                format!("fetching the remote entry of plugin \"{name}\" failed: {e}"),
            )
        })?,
    };
    if crate::registry::integrity(&bytes) != integrity {
        return Err(ApiError::new(
            Code::PluginNotReady,
            format!("the remote entry of \"{name}\" {version} changed; withdrawn"),
        ));
    }
    if fetched {
        state.registry.keep_remote_bytes(name, version, &bytes);
    }
    Ok(bytes)
}

/// A remote file's response: one of the types a remote needs, under a policy that keeps it from
/// running as a page, revalidated by the browser on every use (`no-cache` with a strong ETag),
/// since a file's URL does not change when a plugin rebuilds its UI under the same version.
pub(super) fn asset_response(
    status: StatusCode,
    body: Body,
    content_type: &'static str,
    etag: &str,
) -> Response {
    let mut res = Response::new(body);
    *res.status_mut() = status;
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(assets::FILE_CSP),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(v) = HeaderValue::from_str(etag) {
        h.insert(header::ETAG, v);
    }
    res
}

/// Remote files, through the core.
pub(super) fn routes() -> axum::Router<AppState> {
    axum::Router::new().route(
        "/plugins/{name}/{version}/{*path}",
        axum::routing::get(asset),
    )
}
