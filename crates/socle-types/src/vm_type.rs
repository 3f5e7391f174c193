//! VM types: Outscale's `tinavW.cXrYpZ` names (generation W, X vCPUs, Y GiB
//! of RAM, performance Z) and the AWS-style aliases Outscale accepts.

use crate::ApiError;

/// The largest VM Socle accepts; larger requests are refused up front rather
/// than failing later on the host.
pub const MAX_VCPUS: u32 = 64;
pub const MAX_MEMORY_GIB: u32 = 512;

/// What a VM type name means in resources.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VmShape {
    pub vcpus: u32,
    pub memory_mib: u64,
    /// 1 highest, 2 high (default), 3 medium.
    pub performance: u8,
}

impl VmShape {
    pub fn performance_name(&self) -> &'static str {
        match self.performance {
            1 => "highest",
            3 => "medium",
            _ => "high",
        }
    }
}

/// The default type when `CreateVms` gives none, as on Outscale.
pub const DEFAULT_VM_TYPE: &str = "t2.small";

/// AWS-style names Outscale accepts, with their TINA equivalent.
const ALIASES: &[(&str, u32, u64)] = &[
    ("t2.nano", 1, 512),
    ("t2.micro", 1, 1024),
    ("t2.small", 1, 2048),
    ("t2.medium", 2, 4096),
    ("t2.large", 2, 8192),
    ("m4.large", 2, 8192),
    ("m4.xlarge", 4, 16384),
    ("c4.large", 2, 4096),
    ("c4.xlarge", 4, 8192),
    ("r4.large", 2, 16384),
];

/// Parses a VM type name into its shape.
pub fn parse_vm_type(name: &str) -> Result<VmShape, ApiError> {
    if let Some(&(_, vcpus, memory_mib)) = ALIASES.iter().find(|(n, _, _)| *n == name) {
        return Ok(VmShape { vcpus, memory_mib, performance: 2 });
    }
    let bad = || {
        ApiError::invalid_value(format!(
            "{name:?} is not a VM type: use tinavW.cXrYpZ (W generation, X vCPUs, Y GiB, Z performance 1-3) or an alias such as t2.small"
        ))
    };
    let rest = name.strip_prefix("tinav").ok_or_else(bad)?;
    let (generation, rest) = rest.split_once(".c").ok_or_else(bad)?;
    let generation: u32 = generation.parse().map_err(|_| bad())?;
    let (cores, rest) = rest.split_once('r').ok_or_else(bad)?;
    let (ram, perf) = match rest.split_once('p') {
        Some((ram, perf)) => (ram, Some(perf)),
        None => (rest, None),
    };
    let vcpus: u32 = cores.parse().map_err(|_| bad())?;
    let ram_gib: u32 = ram.parse().map_err(|_| bad())?;
    let performance: u8 = match perf {
        None => 2,
        Some(p) => p.parse().map_err(|_| bad())?,
    };
    if !(1..=7).contains(&generation) || !(1..=3).contains(&performance) {
        return Err(bad());
    }
    if vcpus == 0 || vcpus > MAX_VCPUS {
        return Err(ApiError::invalid_value(format!(
            "VM type {name:?} asks for {vcpus} vCPUs; Socle accepts 1 to {MAX_VCPUS}"
        )));
    }
    if ram_gib == 0 || ram_gib > MAX_MEMORY_GIB {
        return Err(ApiError::invalid_value(format!(
            "VM type {name:?} asks for {ram_gib} GiB of memory; Socle accepts 1 to {MAX_MEMORY_GIB}"
        )));
    }
    Ok(VmShape { vcpus, memory_mib: u64::from(ram_gib) * 1024, performance })
}

/// The catalogue `ReadVmTypes` lists: the aliases, then common TINA shapes.
pub fn catalogue() -> Vec<(String, VmShape)> {
    let mut out: Vec<(String, VmShape)> = ALIASES
        .iter()
        .map(|&(n, vcpus, memory_mib)| (n.to_string(), VmShape { vcpus, memory_mib, performance: 2 }))
        .collect();
    for cores in [1u32, 2, 4, 8, 16] {
        for per_core in [1u32, 2, 4] {
            let name = format!("tinav5.c{cores}r{}p2", cores * per_core);
            let shape = parse_vm_type(&name).expect("catalogue names are valid");
            out.push((name, shape));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tina_names_parse() {
        let s = parse_vm_type("tinav5.c2r4p1").unwrap();
        assert_eq!((s.vcpus, s.memory_mib, s.performance), (2, 4096, 1));
        let s = parse_vm_type("tinav3.c1r1").unwrap();
        assert_eq!((s.vcpus, s.memory_mib, s.performance), (1, 1024, 2));
        assert_eq!(parse_vm_type("t2.small").unwrap().memory_mib, 2048);
    }

    #[test]
    fn bad_names_are_refused() {
        for bad in ["", "tinav", "tinav5.c0r1", "tinav5.c1r0", "tinav5.c1r1p4", "tinav5.c999r1", "x1.huge", "tinav5.c1r1p"] {
            assert!(parse_vm_type(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn catalogue_is_valid() {
        assert!(catalogue().len() > 10);
    }
}
