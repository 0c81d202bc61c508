//! The egress proxy's metric families (`tessera_egress_*`).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

/// A connection's plugin, destination (the `egressAllow` entry it matched) and kind.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConnectionLabels {
    /// Plugin name.
    pub plugin: String,
    /// The `egressAllow` entry (`host:port`, `*.suffix:port`).
    pub destination: String,
    /// `tunnel` (CONNECT) or `http` (absolute-form request).
    pub kind: String,
}

/// Bytes of a plugin's traffic to a destination, one way.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BytesLabels {
    /// Plugin name.
    pub plugin: String,
    /// The `egressAllow` entry.
    pub destination: String,
    /// `sent` (plugin to destination) or `received`.
    pub direction: String,
}

/// A refusal's plugin (`unknown` before authentication) and reason.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusalLabels {
    /// Plugin name.
    pub plugin: String,
    /// The error code it was refused with.
    pub reason: String,
}

/// Egress metrics.
#[derive(Clone, Debug, Default)]
pub struct EgressMetrics {
    /// Connections opened to destinations.
    pub connections: Family<ConnectionLabels, Counter>,
    /// Bytes carried.
    pub bytes: Family<BytesLabels, Counter>,
    /// Requests refused.
    pub refusals: Family<RefusalLabels, Counter>,
}

impl EgressMetrics {
    /// Registers the families in `registry`.
    pub fn register(registry: &mut Registry) -> EgressMetrics {
        let m = EgressMetrics::default();
        registry.register(
            "egress_connections",
            "Connections plugins opened through the egress proxy, by plugin, egressAllow entry and kind (tunnel, http)",
            m.connections.clone(),
        );
        registry.register(
            "egress_bytes",
            "Bytes carried by the egress proxy, by plugin, egressAllow entry and direction (sent, received)",
            m.bytes.clone(),
        );
        registry.register(
            "egress_refusals",
            "Requests the egress proxy refused, by plugin and error code",
            m.refusals.clone(),
        );
        m
    }
}
