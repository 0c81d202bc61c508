//! prometheus-client writes OpenMetrics text, where a counter family `x` has samples `x_total`
//! and the exposition ends in `# EOF`. The classic Prometheus text format (0.0.4), which every
//! Prometheus and `promtool check metrics` read, names the family `x_total` and has no trailer.
//! This converts the one into the other, for the core and plugins alike.

/// Families every plugin's `/metrics` exposes (the SDK runtime serves them; `tessera plugin
/// check` requires them).
pub const REQUIRED_PLUGIN_FAMILIES: [&str; 3] = [
    "plugin_http_requests_total",
    "plugin_http_request_duration_seconds",
    "plugin_http_errors_total",
];

/// OpenMetrics text from prometheus-client -> Prometheus text format 0.0.4.
pub fn classic(openmetrics: &str) -> String {
    let counters: Vec<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len() + 64);
    for line in openmetrics.lines() {
        if line == "# EOF" {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|p| {
            let rest = line.strip_prefix(p)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(&name)
                .then(|| format!("{p}{name}_total {tail}"))
        });
        out.push_str(renamed.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn counters_are_renamed_and_eof_dropped() {
        let om = "# HELP a_requests Requests.\n# TYPE a_requests counter\na_requests_total 3\n# HELP g A gauge.\n# TYPE g gauge\ng 1\n# EOF\n";
        assert_eq!(
            super::classic(om),
            "# HELP a_requests_total Requests.\n# TYPE a_requests_total counter\na_requests_total 3\n# HELP g A gauge.\n# TYPE g gauge\ng 1\n"
        );
    }
}
