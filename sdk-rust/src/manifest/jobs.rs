//! The rules of `jobs` beyond the schema: each name once, a schedule that parses and runs.

use std::collections::HashMap;

use serde_json::Value;

use super::Problem;

/// Names declared twice, and schedules that do not parse (or never match), each with its
/// pointer. The schema already checked the shape and the bounds.
pub(super) fn problems(jobs: &[Value], problems: &mut Vec<Problem>) {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (i, job) in jobs.iter().enumerate() {
        let at = format!("/jobs/{i}");
        if let Some(name) = job.get("name").and_then(Value::as_str)
            && let Some(first) = seen.insert(name, i)
        {
            problems.push(Problem::new(
                format!("{at}/name"),
                format!("job \"{name}\" is already declared at /jobs/{first}"),
            ));
            seen.insert(name, first);
        }
        if let Some(schedule) = job.get("schedule").and_then(Value::as_str)
            && !schedule.is_empty()
            && let Err(why) = crate::jobs::Schedule::parse(schedule)
        {
            problems.push(Problem::new(format!("{at}/schedule"), why));
        }
    }
}
