//! The egress proxy's settings (`egress:`; the same keys in Helm values).

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// `egress:` — where the forward proxy listens, which private destinations the admin lets
/// through, and how much one plugin may open.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct EgressConfig {
    /// Address of the forward proxy (`--egress-listen`). Unset: [`DEFAULT_LISTEN`], and when
    /// that address is taken the core starts without the proxy (and says so); set, the core
    /// does not start without it.
    pub listen: Option<SocketAddr>,
    /// `host:port` destinations whose loopback or private addresses plugins may reach (their
    /// manifest's `egressAllow` must name them too). Link-local and metadata addresses are
    /// never reachable.
    pub allow: Vec<String>,
    /// Per-plugin limits.
    pub rate_limit: EgressRateLimit,
    /// Seconds to open a connection to a destination.
    pub connect_timeout_seconds: f64,
    /// Seconds a connection may go without a byte either way before it is closed.
    pub idle_timeout_seconds: f64,
}

/// `egress.rateLimit`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct EgressRateLimit {
    /// Connections (tunnels and plain requests) one plugin may open a minute, in bursts of as
    /// many (429 `rate_limited` past it).
    pub per_minute: u32,
    /// Connections one plugin may hold open at once (429 `rate_limited` past it).
    pub concurrent: u32,
}

impl Default for EgressRateLimit {
    fn default() -> Self {
        EgressRateLimit {
            per_minute: 600,
            concurrent: 64,
        }
    }
}

impl Default for EgressConfig {
    fn default() -> Self {
        EgressConfig {
            listen: None,
            allow: Vec::new(),
            rate_limit: EgressRateLimit::default(),
            connect_timeout_seconds: 10.0,
            idle_timeout_seconds: 300.0,
        }
    }
}

/// Where the egress proxy listens when `egress.listen` is unset.
pub const DEFAULT_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 8081);

impl EgressConfig {
    /// Connect timeout.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.connect_timeout_seconds)
    }

    /// Idle timeout.
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.idle_timeout_seconds)
    }

    pub(super) fn check(&self) -> Result<(), ConfigError> {
        let bad = |why: String| Err(ConfigError::Invalid(why));
        for a in &self.allow {
            let ok = a
                .rsplit_once(':')
                .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0));
            if !ok {
                return bad(format!("egress.allow: \"{a}\" is not host:port"));
            }
            if a.contains('*') {
                return bad(format!(
                    "egress.allow: \"{a}\": name each private destination exactly (host:port), without wildcards"
                ));
            }
        }
        if self.rate_limit.per_minute == 0 || self.rate_limit.concurrent == 0 {
            return bad("egress.rateLimit: perMinute and concurrent must be at least 1".into());
        }
        for (name, v, max) in [
            ("connectTimeoutSeconds", self.connect_timeout_seconds, 300.0),
            ("idleTimeoutSeconds", self.idle_timeout_seconds, 86_400.0),
        ] {
            if !(v > 0.0 && v <= max) {
                return bad(format!("egress.{name}: {v} is outside (0, {max}]"));
            }
        }
        Ok(())
    }
}
