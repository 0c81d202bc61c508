//! Event types and subscription patterns, as the core and plugins both judge them.
//!
//! An event type is dot-separated segments, the first one the publishing plugin's name
//! (`billing.invoice.created`). A subscription pattern is written the way NATS subjects are:
//! `*` stands for exactly one segment, a last `>` for one or more segments
//! (`billing.invoice.*`, `billing.>`).

/// Longest event type or pattern.
pub const MAX_TYPE_LEN: usize = 256;

/// Whether a segment is made of the characters a type may hold.
fn is_segment(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Why `ty` cannot be published by `plugin`, or `None` when it can: at least two segments, the
/// first one `plugin`, each of letters, digits, `_` or `-`, at most 256 characters.
pub fn type_problem(ty: &str, plugin: &str) -> Option<String> {
    if ty.len() > MAX_TYPE_LEN {
        return Some(format!(
            "event type is {} characters long; the limit is {MAX_TYPE_LEN}",
            ty.len()
        ));
    }
    let mut segments = ty.split('.');
    let first = segments.next().unwrap_or("");
    let rest: Vec<&str> = segments.collect();
    if rest.is_empty() || !is_segment(first) || !rest.iter().all(|s| is_segment(s)) {
        return Some(format!(
            "event type \"{ty}\" is not dot-separated segments of letters, digits, '_' or '-' (e.g. \"{plugin}.invoice.created\")"
        ));
    }
    if first != plugin {
        return Some(format!(
            "event type \"{ty}\" must start with the publishing plugin's name and a dot (\"{plugin}.\")"
        ));
    }
    if rest.first() == Some(&"webhook") {
        return Some(format!(
            "event type \"{ty}\": types \"{plugin}.webhook.*\" are what the plugin's webhooks ingest; the core alone gives them"
        ));
    }
    None
}

/// Why `pattern` is not a subscription pattern, or `None` when it is.
pub fn pattern_problem(pattern: &str) -> Option<String> {
    if pattern.len() > MAX_TYPE_LEN {
        return Some(format!(
            "pattern is {} characters long; the limit is {MAX_TYPE_LEN}",
            pattern.len()
        ));
    }
    let segments: Vec<&str> = pattern.split('.').collect();
    for (i, s) in segments.iter().enumerate() {
        match *s {
            "*" => {}
            ">" if i + 1 == segments.len() => {}
            ">" => {
                return Some(format!(
                    "pattern \"{pattern}\": '>' stands for the rest of the type and may only be the last segment"
                ));
            }
            s if is_segment(s) => {}
            _ => {
                return Some(format!(
                    "pattern \"{pattern}\" is not dot-separated segments of letters, digits, '_' or '-', '*' (one segment) or a last '>' (the rest)"
                ));
            }
        }
    }
    None
}

/// Whether event type `ty` matches `pattern` (`*` one segment, a last `>` one or more).
pub fn matches(pattern: &str, ty: &str) -> bool {
    let mut p = pattern.split('.');
    let mut t = ty.split('.');
    loop {
        match (p.next(), t.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_as_nats_subjects_do() {
        let cases = [
            ("billing.invoice.created", "billing.invoice.created", true),
            ("billing.invoice.*", "billing.invoice.created", true),
            ("billing.invoice.*", "billing.invoice.created.v2", false),
            ("billing.invoice.*", "billing.invoice", false),
            ("billing.>", "billing.invoice.created", true),
            ("billing.>", "billing.invoice", true),
            ("billing.>", "billing", false),
            ("*.invoice.created", "shop.invoice.created", true),
            ("*.*", "a.b", true),
            ("*.*", "a.b.c", false),
            (">", "a.b", true),
            ("billing.invoice.created", "billing.invoice.createdX", false),
            ("billing.invoice", "billing.invoice.created", false),
        ];
        for (pattern, ty, want) in cases {
            assert_eq!(matches(pattern, ty), want, "{pattern} vs {ty}");
        }
    }

    #[test]
    fn patterns_are_checked() {
        for ok in [
            "billing.invoice.created",
            "billing.*",
            "billing.>",
            ">",
            "*",
            "a-b.c_d",
        ] {
            assert_eq!(pattern_problem(ok), None, "{ok}");
        }
        for bad in [
            "",
            "billing..x",
            "billing.>.x",
            "billing.in voice",
            "billing.*x",
            "a.b.",
        ] {
            assert!(pattern_problem(bad).is_some(), "{bad}");
        }
        assert!(pattern_problem(&"a.".repeat(200)).is_some());
    }

    #[test]
    fn types_start_with_the_publisher() {
        assert_eq!(type_problem("billing.invoice.created", "billing"), None);
        let other = type_problem("shop.invoice.created", "billing").unwrap_or_default();
        assert!(
            other.contains("must start with the publishing plugin's name"),
            "{other}"
        );
        for bad in ["billing", "billing.", "billing.*", "billing.a b", ""] {
            assert!(type_problem(bad, "billing").is_some(), "{bad}");
        }
    }
}
