//! Where a plugin may call out to: pure rules, no I/O. A destination must match the plugin's
//! `egressAllow` (`host:port`, or `*.suffix:port` for any name under the suffix); each address
//! it resolves to is then judged: never link-local, metadata, unspecified or multicast;
//! loopback and private (RFC 1918, CGNAT, unique-local) only where the admin's `egress.allow`
//! names that `host:port`; anything else is public and admitted.

use std::net::IpAddr;

/// A destination as a client named it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Destination {
    /// Lowercase host name or IP literal (without brackets).
    pub host: String,
    /// Port.
    pub port: u16,
}

impl std::fmt::Display for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl Destination {
    /// Parses `host:port` (a CONNECT target; IPv6 in brackets), or a host with `default_port`
    /// when the port is absent.
    pub fn parse(authority: &str, default_port: Option<u16>) -> Result<Destination, String> {
        let bad = || format!("\"{authority}\" is not host:port");
        let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
            let (h, tail) = rest.split_once(']').ok_or_else(bad)?;
            let port = match tail.strip_prefix(':') {
                Some(p) => Some(p),
                None if tail.is_empty() => None,
                None => return Err(bad()),
            };
            (h.to_string(), port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), Some(p)),
                None => (authority.to_string(), None),
            }
        };
        let port = match (port, default_port) {
            (Some(p), _) => p.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(bad)?,
            (None, Some(d)) => d,
            (None, None) => return Err(bad()),
        };
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        let valid = !host.is_empty()
            && host.len() <= 253
            && (host.parse::<IpAddr>().is_ok()
                || host.split('.').all(|l| {
                    !l.is_empty()
                        && l.len() <= 63
                        && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                }));
        if !valid {
            return Err(bad());
        }
        Ok(Destination { host, port })
    }
}

/// The `egressAllow` entry that admits `d`, if any.
pub fn allowed<'a>(egress_allow: &'a [String], d: &Destination) -> Option<&'a str> {
    egress_allow
        .iter()
        .find(|entry| {
            let Some((host, port)) = entry.rsplit_once(':') else {
                return false;
            };
            if port.parse::<u16>().ok() != Some(d.port) {
                return false;
            }
            let host = host.to_ascii_lowercase();
            match host.strip_prefix("*.") {
                Some(suffix) => d
                    .host
                    .strip_suffix(suffix)
                    .is_some_and(|head| head.len() > 1 && head.ends_with('.')),
                None => host == d.host,
            }
        })
        .map(String::as_str)
}

/// What kind of address a destination resolved to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// Reachable on the internet: admitted.
    Public,
    /// Loopback or private: admitted only where the admin allows the `host:port`.
    Private,
    /// Link-local, metadata, unspecified, multicast or broadcast: never.
    Never,
}

/// The class of `ip`.
pub fn classify(ip: &IpAddr) -> Class {
    if crate::policy::is_link_local(ip) || crate::policy::is_metadata_ip(ip) {
        return Class::Never;
    }
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            if v4.is_unspecified() || v4.is_multicast() || v4.is_broadcast() || o[0] == 0 {
                Class::Never
            } else if v4.is_loopback()
                || v4.is_private()
                || (o[0] == 100 && (64..128).contains(&o[1]))
                || (o[0] == 198 && (o[1] == 18 || o[1] == 19))
            {
                Class::Private
            } else {
                Class::Public
            }
        }
        IpAddr::V6(v6) => {
            // An IPv4 address carried in IPv6 (mapped, compatible, NAT64, 6to4) is judged as
            // the IPv4 address it reaches.
            if let Some(v4) = crate::policy::embedded_v4(v6) {
                return classify(&IpAddr::V4(v4));
            }
            let seg = v6.segments();
            if v6.is_unspecified() || v6.is_multicast() {
                Class::Never
            } else if v6.is_loopback() || (seg[0] & 0xfe00) == 0xfc00 {
                Class::Private
            } else {
                Class::Public
            }
        }
    }
}

/// Why `ip` (what `d` resolved to) may not be reached, or `None` when it may.
pub fn refuse_address(ip: &IpAddr, d: &Destination, admin_allow: &[String]) -> Option<String> {
    match classify(ip) {
        Class::Public => None,
        Class::Never => Some(format!(
            "{d} resolves to {ip}, a link-local, metadata or otherwise unroutable address; never reachable"
        )),
        Class::Private => {
            let named = admin_allow
                .iter()
                .any(|a| Destination::parse(a, None).is_ok_and(|a| a == *d));
            (!named).then(|| {
                format!(
                    "{d} resolves to {ip}, a loopback or private address; reachable only where the core's config names it in egress.allow"
                )
            })
        }
    }
}

/// Whether `host` is a cloud metadata name (refused before any lookup).
pub fn is_metadata_host(host: &str) -> bool {
    crate::policy::METADATA_HOSTS.contains(&host)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn d(s: &str) -> Destination {
        Destination::parse(s, None).unwrap()
    }

    #[test]
    fn destinations_parse_and_match_the_allowlist() {
        assert_eq!(
            d("API.Segment.io:443"),
            Destination {
                host: "api.segment.io".into(),
                port: 443
            }
        );
        assert_eq!(d("[::1]:8443").host, "::1");
        assert_eq!(
            Destination::parse("example.com", Some(80)).unwrap().port,
            80
        );
        for bad in [
            "example.com",
            "example.com:0",
            "example.com:99999",
            "a b:80",
            ":80",
            "[::1:80",
        ] {
            assert!(Destination::parse(bad, None).is_err(), "{bad}");
        }
        let allow = vec![
            "api.segment.io:443".to_string(),
            "*.example.com:443".to_string(),
        ];
        assert_eq!(
            allowed(&allow, &d("api.segment.io:443")),
            Some("api.segment.io:443")
        );
        assert_eq!(allowed(&allow, &d("api.segment.io:80")), None);
        assert_eq!(
            allowed(&allow, &d("a.example.com:443")),
            Some("*.example.com:443")
        );
        assert_eq!(
            allowed(&allow, &d("a.b.example.com:443")),
            Some("*.example.com:443")
        );
        assert_eq!(allowed(&allow, &d("example.com:443")), None);
        assert_eq!(allowed(&allow, &d("evilexample.com:443")), None);
    }

    #[test]
    fn addresses_are_judged_by_class() {
        let dest = d("db.internal:5432");
        let none: Vec<String> = Vec::new();
        let admin = vec!["db.internal:5432".to_string()];
        for never in [
            "169.254.169.254",
            "fe80::1",
            "100.100.100.200",
            "0.0.0.0",
            "::",
            "224.0.0.1",
            "::ffff:169.254.169.254",
        ] {
            let ip: IpAddr = never.parse().unwrap();
            assert_eq!(classify(&ip), Class::Never, "{never}");
            assert!(refuse_address(&ip, &dest, &admin).is_some(), "{never}");
        }
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "100.64.0.1",
            "::1",
            "fd00::1",
            "::ffff:10.0.0.1",
            "64:ff9b::10.0.0.1",
            "2002:c0a8:0101::1",
            "::10.0.0.1",
        ] {
            let ip: IpAddr = private.parse().unwrap();
            assert_eq!(classify(&ip), Class::Private, "{private}");
            assert!(refuse_address(&ip, &dest, &none).is_some(), "{private}");
            assert!(refuse_address(&ip, &dest, &admin).is_none(), "{private}");
            assert!(
                refuse_address(&ip, &d("db.internal:5433"), &admin).is_some(),
                "{private}"
            );
        }
        for public in ["93.184.216.34", "2606:2800:220:1::1", "1.1.1.1"] {
            assert!(
                refuse_address(&public.parse().unwrap(), &dest, &none).is_none(),
                "{public}"
            );
        }
        assert!(is_metadata_host("metadata.google.internal"));
    }
}
