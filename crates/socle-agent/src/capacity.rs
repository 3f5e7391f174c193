//! What this machine has for guests: its logical CPUs and physical memory,
//! as the kernel reports them (the control plane applies overcommit).

use socle_agent_api::HostCapacity;

pub fn of_this_machine() -> HostCapacity {
    let vcpus = std::thread::available_parallelism().map(|n| n.get() as u32).unwrap_or(1);
    let memory_mib = std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| mem_total_mib(&m)).unwrap_or(0);
    HostCapacity { vcpus, memory_mib }
}

/// `MemTotal:` of /proc/meminfo (in kB there), in MiB.
fn mem_total_mib(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_mem_total() {
        assert_eq!(super::mem_total_mib("MemFree: 1 kB\nMemTotal:       24576000 kB\n"), Some(24000));
        assert_eq!(super::mem_total_mib("MemFree: 1 kB\n"), None);
    }

    #[test]
    fn this_machine_has_something() {
        let c = super::of_this_machine();
        assert!(c.vcpus >= 1 && c.memory_mib > 0, "{c:?}");
    }
}
