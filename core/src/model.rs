//! Domain types, from the lifecycle crate (records, states, conditions, audit events), and the
//! clock the core stamps them with.

pub use tessera_lifecycle::model::*;
pub use tessera_sdk::time::now_rfc3339;
