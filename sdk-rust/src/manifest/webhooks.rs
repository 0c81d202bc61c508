//! The rules of `webhooks` beyond the schema: each name once, a signing secret the manifest
//! lists, a tolerance only with a timestamp.

use std::collections::HashMap;

use serde_json::Value;

use super::Problem;

/// Names declared twice, secrets not listed in `secrets`, `toleranceSeconds` without a
/// `timestampHeader`, each with its pointer.
pub(super) fn problems(hooks: &[Value], secrets: &[Value], problems: &mut Vec<Problem>) {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (i, hook) in hooks.iter().enumerate() {
        let at = format!("/webhooks/{i}");
        if let Some(name) = hook.get("name").and_then(Value::as_str)
            && let Some(first) = seen.insert(name, i)
        {
            problems.push(Problem::new(
                format!("{at}/name"),
                format!("webhook \"{name}\" is already declared at /webhooks/{first}"),
            ));
            seen.insert(name, first);
        }
        if let Some(secret) = hook.pointer("/signature/secret").and_then(Value::as_str)
            && !secrets.iter().any(|s| s.as_str() == Some(secret))
        {
            problems.push(Problem::new(
                format!("{at}/signature/secret"),
                format!("secret \"{secret}\" is not listed in secrets; add it there (the core reads the signing key from it)"),
            ));
        }
        if hook.get("toleranceSeconds").is_some() && hook.get("timestampHeader").is_none() {
            problems.push(Problem::new(
                format!("{at}/toleranceSeconds"),
                "toleranceSeconds applies to the timestamp: name its header in timestampHeader",
            ));
        }
    }
}
