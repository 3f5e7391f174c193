//! The agent protocol: what Socle's control plane asks of a host agent.
//!
//! One crate holds both sides' vocabulary so that they cannot drift:
//! * [`types`]: the values that cross the wire (VM specs, volume and
//!   snapshot descriptions, NICs, upload facts, [`VolumeKey`]s);
//! * [`Host`]: the trait the agent implements and the control plane calls,
//!   declared once in [`host`] — the same declaration generates the request
//!   bodies, the client ([`HostClient`]) and the server's dispatch
//!   ([`server`]), so a method cannot exist on one side only;
//! * [`HostError`]: the one error type of the boundary, with a typed
//!   [`HostErrorKind`] for the cases the control plane acts on.
//!
//! The transport is HTTP/1.1 + JSON: `POST /v1/<method>` with the method's
//! arguments as a JSON object, answered by its result (200) or a
//! [`HostError`] (4xx/5xx). `v1` is [`PROTOCOL_VERSION`]; an incompatible
//! change gets a new version and path, and [`Host::host_info`] tells which
//! one an agent speaks.

pub mod client;
pub mod error;
pub mod faults;
pub mod host;
pub mod join;
mod key;
pub mod pki;
pub mod server;
pub mod tls;
pub mod types;

pub use client::{answer_cap, deadline, HostClient};
pub use error::{HostError, HostErrorKind};
pub use host::{Host, METHODS};
pub use key::{VolumeKey, VOLUME_KEY_LEN};
pub use types::*;

/// The protocol version this crate speaks; requests go to `/v{PROTOCOL_VERSION}/<method>`.
pub const PROTOCOL_VERSION: u32 = 1;
