//! What a token request may ask for: a lifetime, and for a registration token the plugin,
//! namespace and capabilities it grants, checked once for every way of minting one.

use tessera_sdk::Capability;

use super::{Claims, Keys, MAX_TTL_SECS};

/// How long an admin token lives when its minter names no lifetime (admin tokens always
/// expire).
pub const ADMIN_TOKEN_TTL_SECS: u64 = 12 * 3600;

/// What a registration token grants, checked once for every way of minting one (the admin
/// API, `tessera token issue|rotate`, the leader's token Secrets): a plugin name, the
/// namespace its URLs must live in (cluster mode), and known capabilities.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    /// The plugin the token registers.
    pub plugin: String,
    /// Capabilities granted.
    pub capabilities: Vec<Capability>,
    /// Namespace the plugin's URLs must live in.
    pub namespace: Option<String>,
}

impl Grant {
    /// Checks a grant; blank capability entries are skipped. The error says which part is
    /// wrong and what is allowed.
    pub fn new(
        plugin: &str,
        capabilities: &[impl AsRef<str>],
        namespace: Option<&str>,
    ) -> Result<Grant, InvalidRequest> {
        if !tessera_sdk::manifest::is_plugin_name(plugin) {
            return Err(InvalidRequest(format!(
                "plugin \"{plugin}\" is not a valid plugin name (lowercase letters, digits and '-', at most 63)"
            )));
        }
        if let Some(ns) = namespace
            && !tessera_sdk::names::is_dns_label(ns)
        {
            return Err(InvalidRequest(format!(
                "namespace \"{ns}\" is not a Kubernetes namespace name"
            )));
        }
        let capabilities = capabilities
            .iter()
            .map(|c| c.as_ref().trim())
            .filter(|c| !c.is_empty())
            .map(|c| Capability::parse(c).map_err(|e| InvalidRequest(format!("capabilities: {e}"))))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Grant {
            plugin: plugin.to_string(),
            capabilities,
            namespace: namespace.map(String::from),
        })
    }
}

impl Keys {
    /// Mints a registration token for a checked grant.
    pub fn issue_grant(
        &self,
        grant: &Grant,
        ttl_secs: Option<u64>,
    ) -> Result<(String, Claims), jsonwebtoken::errors::Error> {
        self.issue_registration(
            &grant.plugin,
            &grant.capabilities,
            grant.namespace.clone(),
            ttl_secs,
        )
    }
}

/// A token request that cannot be honoured: a lifetime that is not one, a plugin name, namespace
/// or capability that is not valid. The message says which and what is allowed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidRequest(pub String);

/// Parses durations such as `90d`, `12h`, `30m`, `45s`.
pub fn parse_ttl(s: &str) -> Result<u64, InvalidRequest> {
    let s = s.trim();
    let bad = |why: String| InvalidRequest(why);
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num.parse().map_err(|_| {
        bad(format!(
            "\"{s}\" is not a duration such as 90d, 12h, 30m or 45s"
        ))
    })?;
    let mult = match unit {
        "s" | "" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(bad(format!("\"{s}\": unit must be s, m, h or d"))),
    };
    let t = n
        .checked_mul(mult)
        .filter(|&t| t > 0)
        .ok_or_else(|| bad(format!("\"{s}\" must be a positive duration")))?;
    if t > MAX_TTL_SECS {
        return Err(bad(format!("\"{s}\" is longer than 100 years")));
    }
    Ok(t)
}
