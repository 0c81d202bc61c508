//! Route paths and components: what `ui.contributions.routes` entries mean.
//!
//! A path is made of `/`-separated segments: literal text, a parameter `:name` (handed to the
//! page as `ctx.params.name`) or, as the last segment only, a catch-all `*` (the rest of the
//! path, `ctx.params["*"]`). Two paths that differ only in their parameter names match the same
//! URLs, so they are the same route: [`key`] gives both one key, which is what uniqueness (within
//! a manifest, and across plugins in the core) is judged by.
//!
//! A component is written `Module#Export` (export `Export` of the exposed module `./Module`);
//! a bare `Export` means `Routes#Export`.

/// The module a bare component name refers to.
pub const DEFAULT_ROUTE_MODULE: &str = "Routes";

/// Checks what the schema's pattern cannot: parameter names, the catch-all's place, and
/// parameters named twice. The message says what to write instead.
pub fn check(path: &str) -> Result<(), String> {
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    let last = segments.len().saturating_sub(1);
    let mut names: Vec<&str> = Vec::new();
    for (i, seg) in segments.iter().enumerate() {
        if let Some(name) = seg.strip_prefix(':') {
            if !is_identifier(name) {
                return Err(format!(
                    "parameter \"{seg}\" in \"{path}\" needs a name of letters, digits and '_' after the ':' (e.g. \":sku\")"
                ));
            }
            if names.contains(&name) {
                return Err(format!(
                    "parameter \":{name}\" appears twice in \"{path}\"; give each parameter its own name"
                ));
            }
            names.push(name);
        } else if seg.contains('*') && *seg != "*" {
            return Err(format!(
                "segment \"{seg}\" in \"{path}\" mixes '*' with text; a catch-all is a whole last segment \"*\""
            ));
        } else if *seg == "*" && i != last {
            return Err(format!(
                "\"*\" in \"{path}\" matches the rest of the path, so it can only be the last segment (e.g. \"/docs/*\")"
            ));
        }
    }
    Ok(())
}

/// The key two routes collide on: parameters lose their names (`:`), a trailing slash is
/// ignored. `/a/:x` and `/a/:y/` have the same key.
pub fn key(path: &str) -> String {
    let trimmed = if path.len() > 1 {
        path.trim_end_matches('/')
    } else {
        path
    };
    if trimmed.is_empty() {
        return "/".to_string();
    }
    trimmed
        .split('/')
        .map(|seg| if seg.starts_with(':') { ":" } else { seg })
        .collect::<Vec<_>>()
        .join("/")
}

/// A route's `component` as (module, export): `"Routes#AnalyticsPage"` is
/// `("Routes", "AnalyticsPage")`, a bare `"AnalyticsPage"` the same, and a leading `./` on the
/// module is dropped.
pub fn component(spec: &str) -> (&str, &str) {
    match spec.split_once('#') {
        Some((module, export)) => (module.strip_prefix("./").unwrap_or(module), export),
        None => (DEFAULT_ROUTE_MODULE, spec),
    }
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_do_not_tell_routes_apart() {
        assert_eq!(key("/a/:x"), key("/a/:y"));
        assert_eq!(key("/a/:x/"), key("/a/:y"));
        assert_ne!(key("/a/:x"), key("/a/b"));
        assert_ne!(key("/a/:x"), key("/a/:x/:y"));
        assert_eq!(key("/"), "/");
        assert_eq!(key("/hello/"), "/hello");
        assert_eq!(key("/docs/*"), "/docs/*");
    }

    #[test]
    fn paths_with_parameters_and_a_catch_all_are_accepted() {
        for ok in [
            "/",
            "/hello",
            "/inventory/items/:sku",
            "/a/:x/b/:y",
            "/docs/*",
            "/a:b",
            "/items/:sku/",
        ] {
            assert_eq!(check(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn bad_parameters_and_catch_alls_are_refused_with_a_hint() {
        for (bad, says) in [
            ("/a/:", "needs a name"),
            ("/a/:1x", "needs a name"),
            ("/a/:x/:x", "appears twice"),
            ("/docs/*/more", "only be the last segment"),
            ("/docs/a*", "mixes '*'"),
        ] {
            let err = check(bad).unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }

    #[test]
    fn components_name_a_module_and_an_export() {
        assert_eq!(
            component("Routes#AnalyticsPage"),
            ("Routes", "AnalyticsPage")
        );
        assert_eq!(component("AnalyticsPage"), ("Routes", "AnalyticsPage"));
        assert_eq!(component("./Reports#Monthly"), ("Reports", "Monthly"));
    }
}
