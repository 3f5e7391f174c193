//! Types shared by every Socle crate: typed resource IDs, the OSC API
//! request/response structs (generated from the spec) and [`ApiError`], the
//! single error type that crosses the API boundary.

pub mod error;
pub mod ids;
pub mod osc;
pub mod vm_type;

pub use error::{ApiError, ErrorCode};
