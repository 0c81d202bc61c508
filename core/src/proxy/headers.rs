//! Which headers cross the proxy, both ways. No I/O.
//!
//! Towards the plugin: hop-by-hop headers (and those a `Connection` header names) go, and so
//! do the browser's credentials and anything claiming to come from the core: `Authorization`,
//! `Cookie`, `Proxy-Authorization`, `X-Tessera-*`, `Forwarded`, `X-Forwarded-*`. The core adds
//! its own `Authorization` (the call token) and `X-Request-Id`; `traceparent`/`tracestate` pass.
//!
//! Towards the browser: hop-by-hop headers, `Set-Cookie` (a plugin must not set cookies on the
//! core's origin) and CORS grants (`Access-Control-*`: the core's origin is not the plugin's to
//! open to other sites) go; a `Content-Security-Policy` that sandboxes the response is set, so a
//! proxied document can never run as a page of the core's origin.

use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// The policy every proxied response carries: nothing it contains may run or load anything if
/// opened as a page, and it may not be framed.
pub const RESPONSE_CSP: &str = "sandbox; default-src 'none'; frame-ancestors 'none'";

/// Hop-by-hop headers (RFC 9110 7.6.1, plus the legacy ones proxies still see).
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Headers a `Connection` header names as hop-by-hop.
fn connection_listed(h: &HeaderMap) -> Vec<HeaderName> {
    h.get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect()
}

fn strip_hop_by_hop(h: &mut HeaderMap) {
    for n in connection_listed(h) {
        h.remove(n);
    }
    for n in HOP_BY_HOP {
        h.remove(*n);
    }
}

/// Whether a request asks to become a WebSocket.
pub fn is_websocket(h: &HeaderMap) -> bool {
    let upgrade = h
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let connection = connection_listed(h).contains(&header::UPGRADE);
    upgrade && connection
}

/// The headers a request carries to the plugin. `websocket` keeps the upgrade handshake.
pub fn to_plugin(
    mut h: HeaderMap,
    call_token: &HeaderValue,
    request_id: &str,
    websocket: bool,
) -> HeaderMap {
    strip_hop_by_hop(&mut h);
    let from_browser: Vec<HeaderName> = h
        .keys()
        .filter(|n| {
            let s = n.as_str();
            s.starts_with("x-tessera-") || s.starts_with("x-forwarded-")
        })
        .cloned()
        .collect();
    for n in from_browser {
        h.remove(n);
    }
    for n in [
        header::AUTHORIZATION,
        header::COOKIE,
        header::HOST,
        header::FORWARDED,
    ] {
        h.remove(n);
    }
    h.insert(header::AUTHORIZATION, call_token.clone());
    if let Ok(v) = HeaderValue::from_str(request_id) {
        h.insert("x-request-id", v);
    }
    if websocket {
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    }
    h
}

/// The headers a plugin's response carries to the browser. `websocket` keeps the handshake of
/// a `101 Switching Protocols`.
pub fn to_browser(mut h: HeaderMap, websocket: bool) -> HeaderMap {
    strip_hop_by_hop(&mut h);
    let cors: Vec<HeaderName> = h
        .keys()
        .filter(|n| n.as_str().starts_with("access-control-"))
        .cloned()
        .collect();
    for n in cors {
        h.remove(n);
    }
    h.remove(header::SET_COOKIE);
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(RESPONSE_CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if websocket {
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    }
    h
}

/// Whether a path (as sent, still percent-encoded) stays under the plugin's `basePath`, also
/// for a server that decodes `%2F` before it resolves dot segments: read with `%2e` as `.` and
/// `%2f` as `/`, it has no `.` or `..` segment; and it has no backslash, plain or encoded.
/// An encoded slash inside a segment (`a%2Fb`, an id) stays allowed.
pub fn path_is_safe(path: &str) -> bool {
    let lower = path.to_ascii_lowercase();
    !path.contains('\\')
        && !lower.contains("%5c")
        && lower
            .replace("%2e", ".")
            .replace("%2f", "/")
            .split('/')
            .all(|seg| seg != "." && seg != "..")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn the_browsers_credentials_never_reach_the_plugin() {
        let h = map(&[
            ("authorization", "Bearer stolen"),
            ("cookie", "tessera_session=abc"),
            ("x-tessera-user", "admin"),
            ("X-Tessera-Tenant", "other"),
            ("x-forwarded-for", "1.2.3.4"),
            ("forwarded", "for=1.2.3.4"),
            ("proxy-authorization", "Basic x"),
            ("connection", "keep-alive, x-secret"),
            ("x-secret", "hop"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("host", "core.example"),
            (
                "traceparent",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            ),
            ("x-request-id", "from-browser"),
            ("content-type", "application/json"),
            ("accept", "application/json"),
        ]);
        let token = HeaderValue::from_static("Bearer call");
        let out = to_plugin(h, &token, "rid-1", false);
        let mut names: Vec<&str> = out.keys().map(|k| k.as_str()).collect();
        names.sort();
        assert_eq!(
            names,
            [
                "accept",
                "authorization",
                "content-type",
                "traceparent",
                "x-request-id"
            ]
        );
        assert_eq!(out["authorization"], "Bearer call");
        assert_eq!(out["x-request-id"], "rid-1");
    }

    #[test]
    fn responses_lose_cookies_and_cors_grants_and_gain_a_sandbox() {
        let h = map(&[
            ("set-cookie", "a=b"),
            ("access-control-allow-origin", "https://evil.example"),
            ("access-control-allow-credentials", "true"),
            ("transfer-encoding", "chunked"),
            ("content-security-policy", "default-src *"),
            ("content-type", "text/html"),
            ("cache-control", "max-age=60"),
        ]);
        let out = to_browser(h, false);
        let mut names: Vec<&str> = out.keys().map(|k| k.as_str()).collect();
        names.sort();
        assert_eq!(
            names,
            [
                "cache-control",
                "content-security-policy",
                "content-type",
                "x-content-type-options"
            ]
        );
        assert_eq!(out["content-security-policy"], RESPONSE_CSP);
    }

    #[test]
    fn websocket_handshakes_keep_their_upgrade() {
        let h = map(&[
            ("connection", "Upgrade"),
            ("upgrade", "websocket"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("sec-websocket-version", "13"),
        ]);
        assert!(is_websocket(&h));
        let out = to_plugin(h, &HeaderValue::from_static("Bearer c"), "r", true);
        assert_eq!(out["upgrade"], "websocket");
        assert_eq!(out["connection"], "upgrade");
        assert_eq!(out["sec-websocket-key"], "dGhlIHNhbXBsZSBub25jZQ==");
        assert!(!is_websocket(&map(&[("upgrade", "websocket")])));
        assert!(!is_websocket(&map(&[
            ("connection", "upgrade"),
            ("upgrade", "h2c")
        ])));
    }

    #[test]
    fn paths_that_climb_out_of_the_base_path_are_refused() {
        for ok in [
            "items",
            "items/42",
            "a%2Fb",
            "v1/items?x=..",
            "...",
            ".well",
            "",
        ] {
            assert!(path_is_safe(ok), "{ok}");
        }
        for bad in [
            "..",
            "../metrics",
            "a/../../x",
            "%2e%2e/x",
            "a/%2E/b",
            "a\\b",
            "a%5cb",
            ".",
            "..%2Fadmin",
            "%2e%2e%2fadmin",
            "a%2F..%2F..%2Fmetrics",
        ] {
            assert!(!path_is_safe(bad), "{bad}");
        }
    }
}
