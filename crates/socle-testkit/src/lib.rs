//! What every test harness of Socle shares so that a test run never stalls
//! the machine it runs on:
//!
//! * [`Slot`]: a test's marker on the host. Everything a test starts or
//!   creates carries it — its files and the command lines of its processes
//!   live under the slot's directory, its namespaces, links and nftables
//!   tables start with the slot's network prefix, its root-namespace
//!   addresses come from the slot's blocks — and it is swept, by
//!   `scripts/sweep.sh`, when the test ends *or its process dies*, SIGKILL
//!   included, and again by the next holder of the slot.
//! * [`output_within`]: an external command with a deadline.
//! * [`die_with_parent`]: a child process that ends with its parent.
//! * [`host_routes`]: the host's own networks, which tests never take.

mod bounded;
mod host_routes;
mod slot;

pub use bounded::{die_with_parent, output_within, try_output_within, CommandWithin};
pub use host_routes::{host_routes, Ipv4Range};
pub use slot::{sweep_script, test_root, Slot, SLOTS};
