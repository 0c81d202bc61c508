//! # tessera-sdk
//!
//! The plugin contract of Tessera, shared by the core and by plugins so both sides judge a
//! plugin by one definition:
//!
//! - [`manifest`]: `plugin.yaml`, its typed form, loading (YAML or JSON), validation against
//!   the embedded JSON Schema plus the rules a schema cannot express, and normalization;
//! - [`range`]: npm-style version ranges (`>=2.1 <3.0`, `^1.4`, `1.2 - 1.8`, `A || B`)
//!   translated into `semver` requirements;
//! - [`compat`]: the versions this core speaks and the compatibility check;
//! - [`capability`]: the closed capability catalogue and the requested-vs-granted check;
//! - [`events`]: event types and subscription patterns (`*` one segment, a last `>` the rest).
//!
//! With the `runtime` feature (on by default), [`runtime`] is the plugin side: `serve(app,
//! manifest)` with the standard endpoints, the registration loop, JSON logs and metrics.

#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

pub mod capability;
pub mod compat;
pub mod events;
#[cfg(feature = "metrics")]
pub mod http_metrics;
pub mod jobs;
pub mod manifest;
pub mod mime;
pub mod names;
pub mod prometheus_text;
pub mod range;
#[cfg(feature = "runtime")]
pub mod runtime;
#[cfg(feature = "shutdown")]
pub mod shutdown;
pub mod time;
pub mod webhooks;

pub use capability::Capability;
pub use compat::Versions;
pub use manifest::{Manifest, Problem};
pub use range::Range;
