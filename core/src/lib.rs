//! # tessera-core
//!
//! The Tessera control plane: the server that plugins register with and the command line that
//! admins and plugin authors use. The plugin contract itself (manifest, ranges, capabilities,
//! compatibility) lives in `tessera-sdk`, so the core and plugins share one definition.
//!
//! Modules, one a concern (see ARCHITECTURE.md):
//! - [`cli`]: the `tessera` command line (clap), thin over the modules below.

#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

pub mod admit;
pub mod api;
pub mod assets;
pub mod auth;
pub mod cli;
pub mod config;
pub mod declared;
pub mod egress;
pub mod error;
pub mod events;
pub mod jobs;
pub mod listener;
pub mod model;
pub mod policy;
pub mod probe;
pub mod proxy;
pub mod ratelimit;
pub mod registry;
pub mod runs;
pub mod secrets;
pub mod serve;
pub mod shell;
pub mod store;
pub mod sync;
pub mod telemetry;
pub mod users;
pub mod webhooks;
