//! The middleware every request passes: a request id (echoed, in every error envelope and log
//! line), header limits, security headers, HTTP metrics by route template.

use axum::Json;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::{AppState, MAX_HEADER_BYTES, MAX_HEADERS, RequestId};
use crate::auth::{self};
use crate::error::{ApiError, Code, ErrorBody};

/// Gives every request an id (the caller's `X-Request-Id` when it is sane), echoes it, puts it
/// in error envelopes, logs the request, and sets the security headers every response carries.
pub(super) async fn request_id(
    State(state): State<AppState>,
    mut req: Request,
    next: Next,
) -> Response {
    let id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(String::from)
        .unwrap_or_else(auth::new_jti);
    req.extensions_mut().insert(RequestId(id.clone()));
    let method = req.method().clone();
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    // The plugin a request is about, when its route names one.
    let plugin = route
        .split('/')
        .position(|seg| seg == "{plugin}")
        .or_else(|| route.split('/').position(|seg| seg == "{name}"))
        .and_then(|i| req.uri().path().split('/').nth(i))
        .map(String::from)
        .unwrap_or_default();
    let started = std::time::Instant::now();
    let header_bytes: usize = req
        .headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum();
    let mut res = if req.headers().len() > MAX_HEADERS || header_bytes > MAX_HEADER_BYTES {
        ApiError::new(
            Code::HeadersTooLarge,
            format!(
                "the request has {} headers of {header_bytes} bytes; the core reads at most {MAX_HEADERS} headers of {MAX_HEADER_BYTES} bytes",
                req.headers().len()
            ),
        )
        .into_response()
    } else {
        next.run(req).await
    };
    let latency_ms = started.elapsed().as_millis() as u64;
    if let Some(ErrorBody(code, body)) = res.extensions_mut().remove::<ErrorBody>() {
        let mut body = body;
        body["error"]["requestId"] = json!(id);
        let status = res.status();
        let retry = res.headers().get(header::RETRY_AFTER).cloned();
        tracing::info!(request_id = %id, %method, route, plugin, status = status.as_u16(), latency_ms, error_code = code.as_str(), "request failed");
        res = (status, Json(body)).into_response();
        if let Some(r) = retry {
            res.headers_mut().insert(header::RETRY_AFTER, r);
        }
    } else {
        tracing::debug!(request_id = %id, %method, route, plugin, status = res.status().as_u16(), latency_ms, "request");
    }
    let route_label = if route.starts_with('/') {
        route
    } else {
        "unmatched".to_string()
    };
    state.metrics.http.observe(
        method.as_str(),
        &route_label,
        res.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    let h = res.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&id) {
        h.insert("x-request-id", v);
    }
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    res
}
