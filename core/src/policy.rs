//! URL policy: the core fetches what plugins name, so server-side request forgery is the main
//! risk. A plugin URL must be http or https, carry no userinfo, name a host the allowlist
//! admits, and never a link-local or cloud-metadata address (refused whatever the allowlist
//! says). The prober never follows redirects, so a URL cannot bounce the core elsewhere.

use std::net::IpAddr;

use reqwest::Url;

use crate::config::UrlPolicyConfig;

/// Host names of cloud metadata services, always refused.
pub const METADATA_HOSTS: &[&str] = &[
    "metadata",
    "metadata.google.internal",
    "metadata.goog",
    "instance-data",
    "instance-data.ec2.internal",
];

/// Longest plugin URL accepted.
pub const MAX_URL_BYTES: usize = 2048;

/// Why a URL was refused: the rule it broke, for the error's message and details.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// The URL as given.
    pub url: String,
    /// Short name of the rule (`scheme`, `userinfo`, `link-local`, `metadata`, `allowlist`,
    /// `syntax`).
    pub rule: &'static str,
    /// What is wrong.
    pub message: String,
}

/// In cluster mode (the Kubernetes store): where plugin URLs must point.
#[derive(Clone, Copy, Debug, Default)]
pub struct Cluster<'a> {
    /// The registration token's namespace, when it has one: a Service URL must be in it.
    pub namespace: Option<&'a str>,
}

/// Checks a plugin URL against the policy (`cluster`: in cluster mode, with the token's scope).
pub fn check(
    url: &str,
    policy: &UrlPolicyConfig,
    cluster: Option<Cluster<'_>>,
) -> Result<Url, Refusal> {
    let refuse = |rule, message: String| Refusal {
        url: url.to_string(),
        rule,
        message,
    };
    // Refused as sent, before a parser tidies them away: the URL is stored and shown as given.
    if url.len() > MAX_URL_BYTES {
        return Err(Refusal {
            url: url.chars().take(200).collect::<String>() + "...",
            rule: "syntax",
            message: format!("the URL is longer than {MAX_URL_BYTES} bytes"),
        });
    }
    if let Some(c) = url
        .chars()
        .find(|c| c.is_whitespace() || c.is_control() || *c == '\\')
    {
        return Err(refuse(
            "syntax",
            format!(
                "the URL holds {c:?}; write it without spaces, control characters or backslashes"
            ),
        ));
    }
    let parsed = Url::parse(url).map_err(|e| refuse("syntax", format!("not a URL: {e}")))?;
    if parsed.port() == Some(0) {
        return Err(refuse(
            "syntax",
            "port 0 is not a port a service listens on".to_string(),
        ));
    }
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(refuse(
            "scheme",
            format!(
                "scheme \"{}\" is not allowed; use http or https",
                parsed.scheme()
            ),
        ));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(refuse(
            "userinfo",
            "credentials in the URL are not allowed".to_string(),
        ));
    }
    let host = match parsed.host() {
        Some(url::Host::Domain(d)) => HostKind::Name(d.trim_end_matches('.').to_ascii_lowercase()),
        Some(url::Host::Ipv4(ip)) => HostKind::Ip(IpAddr::V4(ip)),
        Some(url::Host::Ipv6(ip)) => HostKind::Ip(IpAddr::V6(ip)),
        None => return Err(refuse("syntax", "the URL has no host".to_string())),
    };
    if let HostKind::Ip(ip) = &host {
        if is_link_local(ip) {
            return Err(refuse(
                "link-local",
                format!(
                    "{ip} is a link-local address (169.254.0.0/16, fe80::/10), where cloud metadata services live; always refused"
                ),
            ));
        }
        if is_metadata_ip(ip) {
            return Err(refuse(
                "metadata",
                format!("{ip} is a cloud metadata address; always refused"),
            ));
        }
    }
    if let HostKind::Name(name) = &host
        && METADATA_HOSTS.contains(&name.as_str())
    {
        return Err(refuse(
            "metadata",
            format!("{name} is a cloud metadata host; always refused"),
        ));
    }
    // Admin-declared hosts; in cluster mode `loopback` would be the core's own pod.
    let declared = policy
        .allow_hosts
        .iter()
        .filter(|p| cluster.is_none() || !p.trim().eq_ignore_ascii_case("loopback"));
    if declared.clone().any(|p| matches(p, &host)) {
        return Ok(parsed);
    }
    if let Some(scope) = cluster {
        let suffixes = &policy.cluster_service_suffixes;
        return match service_namespace(&host, suffixes) {
            Some(ns) => match scope.namespace {
                Some(want) if want != ns => Err(refuse(
                    "namespace",
                    format!(
                        "host {host} is a Service in namespace \"{ns}\"; the registration token is for namespace \"{want}\""
                    ),
                )),
                _ => Ok(parsed),
            },
            None => Err(refuse(
                "cluster",
                format!(
                    "host {host} is not a Service of the cluster: name <service>.<namespace> with a suffix of urlPolicy.clusterServiceSuffixes [{}] (or a host in urlPolicy.allowHosts)",
                    suffixes.join(", ")
                ),
            )),
        };
    }
    {
        Err(refuse(
            "allowlist",
            format!(
                "host {} is not allowed by urlPolicy.allowHosts [{}]",
                host,
                policy.allow_hosts.join(", ")
            ),
        ))
    }
}

enum HostKind {
    Name(String),
    Ip(IpAddr),
}

impl std::fmt::Display for HostKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HostKind::Name(n) => f.write_str(n),
            HostKind::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

/// The namespace of a Service host name, `<service>.<namespace><suffix>`.
fn service_namespace(host: &HostKind, suffixes: &[String]) -> Option<String> {
    let HostKind::Name(name) = host else {
        return None;
    };
    suffixes.iter().find_map(|suffix| {
        let rest = name.strip_suffix(suffix.to_ascii_lowercase().as_str())?;
        let (service, ns) = rest.split_once('.')?;
        let label = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        };
        (label(service) && label(ns)).then(|| ns.to_string())
    })
}

fn matches(pattern: &str, host: &HostKind) -> bool {
    let pattern = pattern.trim().to_ascii_lowercase();
    match (pattern.as_str(), host) {
        ("loopback", HostKind::Ip(ip)) => ip.is_loopback(),
        ("loopback", HostKind::Name(n)) => n == "localhost",
        (p, HostKind::Name(n)) if p.starts_with("*.") => {
            n.ends_with(&p[1..]) && n.len() > p.len() - 1
        }
        (p, HostKind::Name(n)) => p == n,
        (p, HostKind::Ip(ip)) => p.parse::<IpAddr>().is_ok_and(|q| q == *ip),
    }
}

/// Whether an address is link-local (checked again on every connection the prober makes, so a
/// name that resolves there is refused too).
pub fn is_link_local(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => {
            (v6.segments()[0] & 0xffc0) == 0xfe80
                || embedded_v4(v6).is_some_and(|v4| v4.is_link_local())
        }
    }
}

/// The IPv4 address an IPv6 address carries and reaches: IPv4-mapped (`::ffff:a.b.c.d`),
/// IPv4-compatible (`::a.b.c.d`), NAT64 (`64:ff9b::a.b.c.d`, `64:ff9b:1::/48`) and 6to4
/// (`2002:a.b.c.d::`).
pub(crate) fn embedded_v4(v6: &std::net::Ipv6Addr) -> Option<std::net::Ipv4Addr> {
    let s = v6.segments();
    let low = std::net::Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    if let Some(v4) = v6.to_ipv4_mapped() {
        return Some(v4);
    }
    if s[..6] == [0, 0, 0, 0, 0, 0] && !v6.is_loopback() && !v6.is_unspecified() {
        return Some(low);
    }
    // NAT64: the well-known prefix 64:ff9b::/96 and the local-use 64:ff9b:1::/48.
    if s[0] == 0x64 && s[1] == 0xff9b && (s[2..6] == [0, 0, 0, 0] || s[2] == 1) {
        return Some(low);
    }
    if s[0] == 0x2002 {
        return Some(std::net::Ipv4Addr::new(
            (s[1] >> 8) as u8,
            s[1] as u8,
            (s[2] >> 8) as u8,
            s[2] as u8,
        ));
    }
    None
}

/// Whether an address is a cloud metadata service outside link-local space (Alibaba Cloud's,
/// AWS's IPv6 one), also in its IPv6 embeddings.
pub fn is_metadata_ip(ip: &IpAddr) -> bool {
    match ip {
        // Alibaba Cloud's metadata service lives outside link-local space.
        IpAddr::V4(v4) => v4.octets() == [100, 100, 100, 200],
        // AWS's IPv6 metadata endpoint, and IPv4 metadata addresses embedded in IPv6.
        IpAddr::V6(v6) => {
            v6.segments() == [0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254]
                || embedded_v4(v6).is_some_and(|v4| v4.octets() == [100, 100, 100, 200])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local() -> UrlPolicyConfig {
        UrlPolicyConfig::default()
    }

    fn rule(url: &str, p: &UrlPolicyConfig) -> &'static str {
        check(url, p, None).map(|_| "ok").unwrap_or_else(|r| r.rule)
    }

    #[test]
    fn local_mode_admits_loopback_only() {
        for ok in [
            "http://127.0.0.1:7001",
            "http://localhost:7001/mf/remoteEntry.js",
            "https://[::1]:8443/x",
            "http://127.9.9.9/",
        ] {
            assert_eq!(rule(ok, &local()), "ok", "{ok}");
        }
        assert_eq!(rule("http://10.0.0.5/", &local()), "allowlist");
        assert_eq!(rule("http://example.com/", &local()), "allowlist");
    }

    #[test]
    fn dangerous_urls_are_refused_whatever_the_allowlist() {
        let open = UrlPolicyConfig {
            allow_hosts: vec![
                "*.internal".into(),
                "169.254.169.254".into(),
                "loopback".into(),
                "metadata.google.internal".into(),
            ],
            ..Default::default()
        };
        assert_eq!(
            rule("http://169.254.169.254/latest/meta-data/", &open),
            "link-local"
        );
        assert_eq!(rule("http://[fe80::1]/", &open), "link-local");
        assert_eq!(rule("http://[::ffff:169.254.1.1]/", &open), "link-local");
        assert_eq!(rule("http://metadata.google.internal/", &open), "metadata");
        assert_eq!(rule("http://100.100.100.200/", &open), "metadata");
        assert_eq!(rule("file:///etc/passwd", &open), "scheme");
        assert_eq!(rule("gopher://127.0.0.1/", &open), "scheme");
        assert_eq!(rule("http://user:pw@127.0.0.1/", &open), "userinfo");
        assert_eq!(rule("not a url", &open), "syntax");
    }

    #[test]
    fn cluster_patterns() {
        let p = UrlPolicyConfig {
            allow_hosts: vec!["*.svc".into(), "*.svc.cluster.local".into()],
            ..Default::default()
        };
        assert_eq!(rule("http://analytics.plugins.svc:80", &p), "ok");
        assert_eq!(
            rule(
                "http://analytics.plugins.svc.cluster.local/mf/remoteEntry.js",
                &p
            ),
            "ok"
        );
        assert_eq!(rule("http://svc/", &p), "allowlist");
        assert_eq!(rule("http://evil.com/.svc", &p), "allowlist");
        assert_eq!(rule("http://127.0.0.1/", &p), "allowlist");
    }

    fn in_cluster(url: &str, p: &UrlPolicyConfig, ns: Option<&str>) -> &'static str {
        check(url, p, Some(Cluster { namespace: ns }))
            .map(|_| "ok")
            .unwrap_or_else(|r| r.rule)
    }

    #[test]
    fn cluster_mode_admits_services_in_the_token_namespace() {
        let p = UrlPolicyConfig::default();
        let ok = [
            ("http://analytics.plugins.svc:8080/", None),
            (
                "http://analytics.plugins.svc.cluster.local/mf/remoteEntry.js",
                None,
            ),
            ("http://analytics.plugins.svc/", Some("plugins")),
            ("http://Analytics.Plugins.SVC./", Some("plugins")),
        ];
        for (url, ns) in ok {
            assert_eq!(in_cluster(url, &p, ns), "ok", "{url}");
        }
        assert_eq!(
            in_cluster("http://analytics.other.svc/", &p, Some("plugins")),
            "namespace"
        );
        assert_eq!(in_cluster("http://analytics.svc/", &p, None), "cluster");
        assert_eq!(in_cluster("http://a.b.plugins.svc/", &p, None), "cluster");
        assert_eq!(in_cluster("http://example.com/", &p, None), "cluster");
        assert_eq!(in_cluster("http://10.0.0.7:8080/", &p, None), "cluster");
        // loopback would be the core's own pod: not admitted even though it is the default.
        assert_eq!(in_cluster("http://127.0.0.1:8080/", &p, None), "cluster");
        assert_eq!(in_cluster("http://localhost/", &p, None), "cluster");
        // Dangerous addresses stay refused first.
        assert_eq!(
            in_cluster("http://169.254.169.254/", &p, None),
            "link-local"
        );
        // Hosts the admin declares (a CDN, or an explicit address) are admitted as declared.
        let cdn = UrlPolicyConfig {
            allow_hosts: vec!["cdn.example.com".into(), "127.0.0.1".into()],
            ..Default::default()
        };
        assert_eq!(
            in_cluster("https://cdn.example.com/x.js", &cdn, Some("plugins")),
            "ok"
        );
        assert_eq!(in_cluster("http://127.0.0.1:9/", &cdn, None), "ok");
        let custom = UrlPolicyConfig {
            cluster_service_suffixes: vec![".svc.corp.local".into()],
            ..Default::default()
        };
        assert_eq!(
            in_cluster("http://a.b.svc.corp.local/", &custom, None),
            "ok"
        );
        assert_eq!(in_cluster("http://a.b.svc/", &custom, None), "cluster");
    }

    #[test]
    fn link_local_hidden_in_ipv6_forms_is_refused_even_when_allowlisted() {
        let mut p = local();
        p.allow_hosts = vec![
            "::a9fe:a9fe".into(),
            "64:ff9b::a9fe:a9fe".into(),
            "2002:a9fe:a9fe::".into(),
            "::ffff:a9fe:a9fe".into(),
        ];
        for bad in [
            "http://[::a9fe:a9fe]/",
            "http://[64:ff9b::a9fe:a9fe]/",
            "http://[64:ff9b:1::a9fe:a9fe]/",
            "http://[2002:a9fe:a9fe::]/",
            "http://[::ffff:169.254.169.254]/",
        ] {
            assert_eq!(rule(bad, &p), "link-local", "{bad}");
        }
    }

    #[test]
    fn urls_are_refused_as_sent_not_as_a_parser_tidies_them() {
        for bad in [
            "http://127.0.0.1:7001/\n",
            "http://127.0.0.1:7001\\@evil.example/",
            "http://127.0.0.1:0/",
            " http://127.0.0.1:7001/",
        ] {
            assert_eq!(rule(bad, &local()), "syntax", "{bad:?}");
        }
        let long = format!("http://127.0.0.1:7001/{}", "a".repeat(MAX_URL_BYTES));
        let r = check(&long, &local(), None).unwrap_err();
        assert_eq!(r.rule, "syntax");
        assert!(r.url.len() < 300);
    }
}
