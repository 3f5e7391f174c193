//! Fault injection for crash tests, on both sides of the protocol:
//! `SOCLE_FAULT=<point>` makes the process abort when it reaches that
//! point, as a power cut would. Points sit right after host work and before
//! it is recorded — the windows where a crash could leave orphans if the
//! design were wrong. Unset, it costs one environment lookup per point.

/// Aborts the process if `SOCLE_FAULT` names this point.
pub fn point(name: &str) {
    if std::env::var("SOCLE_FAULT").is_ok_and(|f| f == name) {
        eprintln!("SOCLE_FAULT: aborting at {name}");
        std::process::abort();
    }
}
