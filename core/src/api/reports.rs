//! Reports from browsers: the shell's load results (`POST /api/shell/reports`, the `UiLoaded`
//! condition) and Content-Security-Policy violations (`POST /api/shell/csp-reports`, a metric).
//!
//! Both come only from the core's own pages: a cross-site page cannot mark a plugin's UI as
//! failed or inflate the violation counts. A shell report must carry `Origin` (or
//! `Sec-Fetch-Site: same-origin`) naming this origin, be JSON (so a cross-site form or
//! `text/plain` beacon, which need no preflight, is refused) and name a version the core
//! serves. Browsers send violation reports without always naming an origin, so there the
//! headers are checked when sent. Both are rate limited per client address.

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use serde::Deserialize;
use serde_json::Value;

use super::{AppState, RequestId, json_body, read_body};
use crate::error::{ApiError, Code};
use crate::registry::Actor;
use crate::shell;
use crate::telemetry::PluginLabels;

/// Whether a request must prove it is same-origin, or only must not say it is not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Strictness {
    /// `Origin` or `Sec-Fetch-Site` must be sent and name this origin.
    Required,
    /// Refused only when one of them is sent and names another site.
    IfSent,
}

/// Refuses a request that a browser sent from another site: `Sec-Fetch-Site` other than
/// `same-origin`, or an `Origin` whose host is not the `Host` the request was sent to.
pub(crate) fn same_origin(headers: &HeaderMap, strictness: Strictness) -> Result<(), ApiError> {
    let text = |name: header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    let refused = |why: String| {
        ApiError::new(
            Code::OriginNotAllowed,
            format!("only the core's own pages may send this: {why}"),
        )
    };
    let site = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok());
    if let Some(site) = site
        && site != "same-origin"
    {
        return Err(refused(format!(
            "Sec-Fetch-Site is \"{}\"",
            truncate(site, 40)
        )));
    }
    let origin = text(header::ORIGIN);
    if let Some(origin) = origin {
        let host = text(header::HOST).unwrap_or("");
        let origin_host = origin
            .split_once("://")
            .map(|(_, rest)| rest.trim_end_matches('/'))
            .unwrap_or("");
        if origin_host.is_empty() || !origin_host.eq_ignore_ascii_case(host) {
            return Err(refused(format!(
                "Origin \"{}\" is not this core's origin",
                truncate(origin, 100)
            )));
        }
    }
    if strictness == Strictness::Required && site.is_none() && origin.is_none() {
        return Err(refused(
            "neither Origin nor Sec-Fetch-Site says where it comes from".to_string(),
        ));
    }
    Ok(())
}

fn truncate(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct ShellReport {
    plugin: String,
    version: String,
    #[serde(default)]
    ok: bool,
    #[serde(default)]
    stage: Option<String>,
    #[serde(default)]
    message: String,
}

/// A shell's report of loading a remote: same-origin JSON only, for a version the core serves;
/// it sets the plugin's `UiLoaded` condition and nothing else.
pub(super) async fn shell_report(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    axum::Extension(rid): axum::Extension<RequestId>,
    headers: HeaderMap,
    body: Body,
) -> Result<StatusCode, ApiError> {
    state.limiter.check(
        &format!("report:{}", peer.ip()),
        60,
        "shell reports from this address",
    )?;
    same_origin(&headers, Strictness::Required)?;
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if !json {
        return Err(ApiError::new(
            Code::InvalidRequest,
            "a shell report is sent as Content-Type: application/json",
        ));
    }
    let r: ShellReport = json_body(&headers, body).await?;
    // Only a version the core serves (or is bringing up) can be reported on.
    let Some(rec) = state.registry.get(&r.plugin) else {
        return Err(ApiError::new(
            Code::PluginNotFound,
            format!("no plugin named \"{}\"", truncate(&r.plugin, 100)),
        ));
    };
    let known = rec.current.version == r.version
        || rec.serving.as_ref().is_some_and(|s| s.version == r.version);
    if !known {
        return Err(ApiError::new(
            Code::InvalidRequest,
            format!(
                "plugin \"{}\" has no version \"{}\" the core serves",
                r.plugin,
                truncate(&r.version, 100)
            ),
        ));
    }
    let message: String = format!(
        "{}{}",
        r.stage.map(|s| format!("{s}: ")).unwrap_or_default(),
        if r.ok {
            "loaded".to_string()
        } else {
            r.message
        }
    )
    .chars()
    .take(2000)
    .collect();
    let actor = Actor {
        who: "shell".into(),
        request_id: Some(rid.0),
    };
    state
        .registry
        .report_ui(&r.plugin, &r.version, r.ok, &message, &actor)
        .await?;
    Ok(StatusCode::ACCEPTED)
}

/// A browser's CSP violation report (`application/csp-report`, or the Reporting API's JSON).
pub(super) async fn csp_report(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    state.limiter.check(
        &format!("csp:{}", peer.ip()),
        120,
        "CSP reports from this address",
    )?;
    same_origin(&headers, Strictness::IfSent)?;
    let bytes = read_body(&headers, body).await?;
    let v: Value = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::new(Code::InvalidRequest, format!("not a CSP report: {e}")))?;
    let reports: Vec<&Value> = match &v {
        Value::Array(items) => items.iter().map(|i| i.get("body").unwrap_or(i)).collect(),
        other => vec![other.get("csp-report").unwrap_or(other)],
    };
    for r in reports {
        let blocked = r
            .get("blocked-uri")
            .or_else(|| r.get("blockedURL"))
            .and_then(Value::as_str)
            .unwrap_or("");
        let directive = r
            .get("violated-directive")
            .or_else(|| r.get("effectiveDirective"))
            .and_then(Value::as_str)
            .unwrap_or("");
        let source = r
            .get("source-file")
            .or_else(|| r.get("sourceFile"))
            .and_then(Value::as_str)
            .unwrap_or("");
        // Only names of known plugins become labels, so reports cannot grow the series: a
        // file under /plugins/<name>/ (blocked, or the script that tried), else a plugin whose
        // own service has the blocked URL's origin.
        let plugin = [blocked, source]
            .into_iter()
            .filter_map(shell::plugin_of)
            .find(|n| state.registry.get(n).is_some())
            .map(str::to_string)
            .or_else(|| {
                let o = shell::origin(blocked)?;
                state
                    .registry
                    .list()
                    .into_iter()
                    .find(|p| {
                        [&p.current.backend_url, &p.current.remote_url]
                            .into_iter()
                            .any(|u| shell::origin(u) == Some(o))
                    })
                    .map(|p| p.name)
            })
            .unwrap_or_else(|| "unknown".to_string());
        tracing::warn!(plugin = %plugin, blocked = %blocked.chars().take(300).collect::<String>(), directive = %directive.chars().take(100).collect::<String>(), "content security policy violation");
        state
            .metrics
            .csp_violations
            .get_or_create(&PluginLabels { plugin })
            .inc();
    }
    Ok(shell::no_content())
}

/// The browsers' reports.
pub(super) fn routes() -> axum::Router<AppState> {
    use axum::routing::post;
    axum::Router::new()
        .route("/api/shell/reports", post(shell_report))
        .route("/api/shell/csp-reports", post(csp_report))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                *k,
                v.parse()
                    .unwrap_or(axum::http::HeaderValue::from_static("")),
            );
        }
        h
    }

    #[test]
    fn only_the_cores_own_pages_pass() {
        let host = ("host", "127.0.0.1:8080");
        for ok in [
            headers(&[host, ("origin", "http://127.0.0.1:8080")]),
            headers(&[host, ("sec-fetch-site", "same-origin")]),
            headers(&[
                host,
                ("origin", "http://127.0.0.1:8080"),
                ("sec-fetch-site", "same-origin"),
            ]),
        ] {
            assert!(same_origin(&ok, Strictness::Required).is_ok(), "{ok:?}");
        }
        for bad in [
            headers(&[host, ("origin", "http://evil.example")]),
            headers(&[host, ("origin", "null")]),
            headers(&[host, ("sec-fetch-site", "cross-site")]),
            headers(&[
                host,
                ("origin", "http://127.0.0.1:8080"),
                ("sec-fetch-site", "same-site"),
            ]),
        ] {
            let e = same_origin(&bad, Strictness::IfSent).unwrap_err();
            assert_eq!(e.code, Code::OriginNotAllowed, "{bad:?}");
        }
        assert!(same_origin(&headers(&[host]), Strictness::IfSent).is_ok());
        assert!(same_origin(&headers(&[host]), Strictness::Required).is_err());
    }
}
