//! The host's own networks: what its routing tables reach. A test never
//! puts an address of those in the root namespace (a test machine's uplink
//! may well be in a documentation range such as 192.0.2.0/24).

use std::fmt;
use std::net::Ipv4Addr;
use std::process::Command;
use std::time::Duration;

/// An IPv4 range, `a.b.c.d/n`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Range {
    pub base: Ipv4Addr,
    pub prefix: u8,
}

impl Ipv4Range {
    pub fn new(base: Ipv4Addr, prefix: u8) -> Ipv4Range {
        assert!(prefix <= 32);
        Ipv4Range { base: Ipv4Addr::from(u32::from(base) & Self::mask(prefix)), prefix }
    }

    fn mask(prefix: u8) -> u32 {
        if prefix == 0 { 0 } else { u32::MAX << (32 - prefix) }
    }

    pub fn parse(s: &str) -> Option<Ipv4Range> {
        let (ip, prefix) = match s.split_once('/') {
            Some((ip, p)) => (ip, p.parse().ok()?),
            None => (s, 32),
        };
        if prefix > 32 {
            return None;
        }
        Some(Ipv4Range::new(ip.parse().ok()?, prefix))
    }

    pub fn overlaps(&self, other: &Ipv4Range) -> bool {
        let shortest = self.prefix.min(other.prefix);
        u32::from(self.base) & Self::mask(shortest) == u32::from(other.base) & Self::mask(shortest)
    }

    /// The `i`-th subrange of length `prefix` (`i` counted from 0).
    pub fn nth(&self, prefix: u8, i: u32) -> Ipv4Range {
        assert!(prefix >= self.prefix && prefix <= 32);
        let count = 1u64 << (prefix - self.prefix);
        assert!(u64::from(i) < count, "{self} has {count} /{prefix}s, not {}", i + 1);
        let size = if prefix == 0 { 0 } else { 1u32 << (32 - prefix) };
        Ipv4Range::new(Ipv4Addr::from(u32::from(self.base) + i * size), prefix)
    }

    /// Its `i`-th address.
    pub fn addr(&self, i: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.base) + i)
    }
}

impl fmt::Display for Ipv4Range {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.base, self.prefix)
    }
}

/// One route of the host: where to, and the line it came from.
#[derive(Debug, Clone)]
pub struct HostRoute {
    pub to: Ipv4Range,
    pub line: String,
}

/// Route types `ip route` prints before the destination.
const ROUTE_TYPES: &[&str] = &["unicast", "local", "broadcast", "multicast", "unreachable", "blackhole", "prohibit", "throw", "nat", "anycast"];

/// The routes of every table of the root namespace, except the default
/// route (it reaches everything and claims nothing) and routes of test
/// slots' own devices (`ts` + two hex digits, see [`crate::Slot`]).
pub fn host_routes() -> Vec<HostRoute> {
    let out = crate::output_within(Command::new("ip").args(["-4", "-o", "route", "show", "table", "all"]), Duration::from_secs(30));
    assert!(out.status.success(), "ip route failed: {}", String::from_utf8_lossy(&out.stderr));
    parse_routes(&String::from_utf8_lossy(&out.stdout))
}

fn parse_routes(text: &str) -> Vec<HostRoute> {
    let mut routes = Vec::new();
    for line in text.lines() {
        let mut words = line.split_whitespace().peekable();
        if words.peek().is_some_and(|w| ROUTE_TYPES.contains(w)) {
            words.next();
        }
        let Some(to) = words.next() else { continue };
        if to == "default" {
            continue;
        }
        let dev = line.split_whitespace().skip_while(|w| *w != "dev").nth(1).unwrap_or("");
        if is_slot_device(dev) {
            continue;
        }
        if let Some(to) = Ipv4Range::parse(to) {
            routes.push(HostRoute { to, line: line.trim().to_string() });
        }
    }
    routes
}

fn is_slot_device(dev: &str) -> bool {
    let b = dev.as_bytes();
    b.len() >= 4 && b.starts_with(b"ts") && b[2].is_ascii_hexdigit() && b[3].is_ascii_hexdigit() && !b[2].is_ascii_uppercase() && !b[3].is_ascii_uppercase()
}

/// The first of `candidates` that no route of the host overlaps; panics,
/// naming the routes in the way, when there is none.
pub(crate) fn first_free(what: &str, candidates: &[&str]) -> Ipv4Range {
    let routes = host_routes();
    let mut taken = Vec::new();
    for c in candidates {
        let range = Ipv4Range::parse(c).expect("a valid candidate range");
        match routes.iter().find(|r| r.to.overlaps(&range)) {
            None => return range,
            Some(r) => taken.push(format!("{range} (host route: {})", r.line)),
        }
    }
    panic!("no free range for {what} on this host: {}", taken.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        let r = Ipv4Range::parse("192.0.2.0/24").unwrap();
        assert!(r.overlaps(&Ipv4Range::parse("192.0.2.77").unwrap()));
        assert!(r.overlaps(&Ipv4Range::parse("192.0.0.0/16").unwrap()));
        assert!(!r.overlaps(&Ipv4Range::parse("192.0.3.0/24").unwrap()));
        assert_eq!(r.nth(30, 3).to_string(), "192.0.2.12/30");
        assert_eq!(Ipv4Range::parse("10.1.2.3/8").unwrap().to_string(), "10.0.0.0/8");
        assert_eq!(Ipv4Range::parse("10.0.0.0/33"), None);
    }

    #[test]
    fn routes_of_the_host_not_of_test_slots() {
        let routes = parse_routes(
            "default via 192.0.2.1 dev eth0\n\
             192.0.2.0/24 dev eth0 proto kernel scope link src 192.0.2.2\n\
             local 127.0.0.1 dev lo table local proto kernel scope host src 127.0.0.1\n\
             203.0.113.4/30 dev ts05o proto kernel scope link src 203.0.113.5\n",
        );
        let to: Vec<String> = routes.iter().map(|r| r.to.to_string()).collect();
        assert_eq!(to, ["192.0.2.0/24", "127.0.0.1/32"]);
    }
}
