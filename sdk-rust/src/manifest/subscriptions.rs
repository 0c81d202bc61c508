//! The rules of `events.subscribe` beyond the schema.

use std::collections::HashMap;

use serde_json::Value;

use super::Problem;

/// The rules of `events.subscribe` a schema cannot say: a backend `path` or `shell: true`
/// (exactly one), `ordered`/`maxInFlight` only for backend delivery, each pair once.
pub(super) fn problems(subs: &[Value], problems: &mut Vec<Problem>) {
    let mut seen: HashMap<(&str, String), usize> = HashMap::new();
    for (i, sub) in subs.iter().enumerate() {
        let at = format!("/events/subscribe/{i}");
        let Some(pattern) = sub.get("type").and_then(Value::as_str) else {
            continue;
        };
        if let Some(why) = crate::events::pattern_problem(pattern) {
            problems.retain(|p| p.path != format!("{at}/type"));
            problems.push(Problem::new(format!("{at}/type"), why));
        }
        let path = sub.get("path").and_then(Value::as_str);
        let shell = sub.get("shell").and_then(Value::as_bool).unwrap_or(false);
        let target = match (path, shell) {
            (Some(_), true) => {
                problems.push(Problem::new(
                    &at,
                    "a subscription goes to the backend (path) or to the UI (shell: true), not both; declare two subscriptions",
                ));
                continue;
            }
            (None, false) => {
                problems.push(Problem::new(
                    &at,
                    "a subscription needs a backend path (e.g. \"/events\") or shell: true",
                ));
                continue;
            }
            (Some(p), false) => p.to_string(),
            (None, true) => "shell".to_string(),
        };
        let ordered = sub.get("ordered").and_then(Value::as_bool);
        if shell && (ordered.is_some() || sub.get("maxInFlight").is_some()) {
            problems.push(Problem::new(
                &at,
                "ordered and maxInFlight apply to backend delivery (path), not to shell: true",
            ));
        }
        if sub.get("maxInFlight").is_some() && ordered != Some(false) {
            problems.push(Problem::new(
                format!("{at}/maxInFlight"),
                "maxInFlight needs ordered: false (an ordered subscription delivers one event of a source at a time)",
            ));
        }
        if let Some(first) = seen.insert((pattern, target.clone()), i) {
            problems.push(Problem::new(
                &at,
                format!("subscription to \"{pattern}\" for {target} is already declared at /events/subscribe/{first}"),
            ));
            seen.insert((pattern, target), first);
        }
    }
}
