//! The reference web shell, embedded in the binary: `GET /` (the page, with its
//! Content-Security-Policy), `/shell/shell.js`, `/shell/shell.css`, and the CSP violation
//! reports the browser sends back.
//!
//! The policy allows scripts only from the core's own origin (where every remote is served,
//! under `/plugins/...`) and from the remote origins an admin declares in `shell.remoteOrigins`
//! (a CDN); no inline script, no eval; the page cannot be framed. Violations are reported to
//! `/api/shell/csp-reports`, counted in metrics, and attributed to a plugin when the blocked URL
//! names one.
//!
//! [`list`] keeps the shell list's bytes (JSON, gzip, ETag, server-sent event), fed by the
//! registry's commits.

pub mod list;

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// The page.
pub const INDEX_HTML: &str = include_str!("index.html");
/// The shell's script.
pub const SHELL_JS: &str = include_str!("shell.js");
/// The shell's styles.
pub const SHELL_CSS: &str = include_str!("shell.css");

/// The Content-Security-Policy of the shell page.
pub fn csp(remote_origins: &[String]) -> String {
    let extra: String = remote_origins.iter().map(|o| format!(" {o}")).collect();
    format!(
        "default-src 'self'; script-src 'self'{extra}; style-src 'self'; img-src 'self' data:; \
         connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; \
         frame-ancestors 'none'; report-uri /api/shell/csp-reports"
    )
}

/// A static file with a content type and a short cache.
pub fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut res = Response::new(Body::from(body));
    res.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    res
}

/// The page with its policy.
pub fn page(remote_origins: &[String]) -> Response {
    let mut res = asset(INDEX_HTML, "text/html; charset=utf-8");
    if let Ok(v) = HeaderValue::from_str(&csp(remote_origins)) {
        res.headers_mut().insert(header::CONTENT_SECURITY_POLICY, v);
    }
    res
}

/// The plugin a blocked URL belongs to, when it is under `/plugins/<name>/`.
pub fn plugin_of(blocked: &str) -> Option<&str> {
    let path = match blocked.find("://") {
        Some(i) => blocked[i + 3..]
            .find('/')
            .map_or("", |j| &blocked[i + 3 + j..]),
        None => blocked,
    };
    path.strip_prefix("/plugins/")?
        .split('/')
        .next()
        .filter(|n| !n.is_empty())
}

/// The origin (`scheme://host[:port]`) of an absolute URL.
pub fn origin(url: &str) -> Option<&str> {
    let i = url.find("://")?;
    let end = url[i + 3..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |j| i + 3 + j);
    (end > i + 3).then(|| &url[..end])
}

/// 204, for report endpoints.
pub fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_names_declared_origins_and_no_unsafe_sources() {
        let p = csp(&["https://cdn.example.com".into()]);
        assert!(
            p.contains("script-src 'self' https://cdn.example.com;"),
            "{p}"
        );
        assert!(p.contains("frame-ancestors 'none'") && p.contains("connect-src 'self'"));
        assert!(!p.contains("unsafe-inline") && !p.contains("unsafe-eval"));
    }

    #[test]
    fn blocked_urls_are_attributed_to_plugins() {
        assert_eq!(
            plugin_of("http://127.0.0.1:8080/plugins/hello/0.1.0/remoteEntry.js"),
            Some("hello")
        );
        assert_eq!(plugin_of("/plugins/x/1/a.js"), Some("x"));
        assert_eq!(plugin_of("https://evil.example/x.js"), None);
        assert_eq!(plugin_of("inline"), None);
    }
}
