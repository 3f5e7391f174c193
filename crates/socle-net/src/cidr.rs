//! IPv4 prefixes and MAC addresses: the small amount of address arithmetic
//! the driver needs (containment, overlap, gateway, netmask), written out
//! rather than pulled in so the rules stay visible.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// An IPv4 prefix such as `10.0.0.0/16`. Always normalised: host bits are
/// zero (parsing `10.0.0.7/24` is an error, so a typo cannot silently widen
/// a rule or a route).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ipv4Net {
    addr: Ipv4Addr,
    prefix: u8,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid IPv4 prefix {input:?}: {reason}")]
pub struct ParseNetError {
    input: String,
    reason: &'static str,
}

impl Ipv4Net {
    /// Every address.
    pub const ANY: Ipv4Net = Ipv4Net {
        addr: Ipv4Addr::UNSPECIFIED,
        prefix: 0,
    };

    /// `addr/prefix`; `None` when the prefix is over 32 or host bits are set.
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Option<Ipv4Net> {
        if prefix > 32 || u32::from(addr) & !mask(prefix) != 0 {
            return None;
        }
        Some(Ipv4Net { addr, prefix })
    }

    /// The /32 of one address.
    pub fn host(addr: Ipv4Addr) -> Ipv4Net {
        Ipv4Net { addr, prefix: 32 }
    }

    pub fn network(&self) -> Ipv4Addr {
        self.addr
    }

    pub fn prefix_len(&self) -> u8 {
        self.prefix
    }

    pub fn netmask(&self) -> Ipv4Addr {
        Ipv4Addr::from(mask(self.prefix))
    }

    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) | !mask(self.prefix))
    }

    /// Number of addresses (2^(32-prefix)), as u64 so /0 fits.
    pub fn size(&self) -> u64 {
        1u64 << (32 - u32::from(self.prefix))
    }

    /// The `n`-th address of the range (0 is the network address), if inside.
    pub fn nth(&self, n: u32) -> Option<Ipv4Addr> {
        if u64::from(n) >= self.size() {
            return None;
        }
        Some(Ipv4Addr::from(u32::from(self.addr) + n))
    }

    /// The subnet gateway convention of the cloud: the first host address.
    pub fn first_host(&self) -> Option<Ipv4Addr> {
        if self.prefix >= 31 {
            return None;
        }
        self.nth(1)
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & mask(self.prefix) == u32::from(self.addr)
    }

    /// `other` lies entirely inside `self` (equal counts).
    pub fn contains_net(&self, other: &Ipv4Net) -> bool {
        other.prefix >= self.prefix && self.contains(other.addr)
    }

    /// Two prefixes share an address; for prefixes that is the same as one
    /// containing the other.
    pub fn overlaps(&self, other: &Ipv4Net) -> bool {
        self.contains_net(other) || other.contains_net(self)
    }

    /// A usable host address of this range: not the network, not broadcast
    /// (for prefixes shorter than /31).
    pub fn is_host_address(&self, ip: Ipv4Addr) -> bool {
        self.contains(ip) && (self.prefix >= 31 || (ip != self.addr && ip != self.broadcast()))
    }
}

fn mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix))
    }
}

/// Drops prefixes contained in another one of the list and sorts the rest:
/// nftables refuses overlapping elements in an anonymous set, and callers
/// (security-group resolution) legitimately produce nested lists.
pub fn normalize(nets: &[Ipv4Net]) -> Vec<Ipv4Net> {
    let mut v: Vec<Ipv4Net> = nets.to_vec();
    // Shortest prefix first, so an element is only compared to wider ones kept.
    v.sort_by_key(|n| (n.prefix, n.addr));
    v.dedup();
    let mut out: Vec<Ipv4Net> = Vec::new();
    for n in v {
        if !out.iter().any(|o| o.contains_net(&n)) {
            out.push(n);
        }
    }
    out.sort();
    out
}

impl fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl fmt::Debug for Ipv4Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for Ipv4Net {
    type Err = ParseNetError;

    /// `a.b.c.d/n`, or a bare address meaning /32.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason| ParseNetError {
            input: s.to_string(),
            reason,
        };
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: Ipv4Addr = a.parse().map_err(|_| err("bad address"))?;
        let prefix = match p {
            Some(p) => p.parse::<u8>().map_err(|_| err("bad prefix length"))?,
            None => 32,
        };
        if prefix > 32 {
            return Err(err("prefix length over 32"));
        }
        Ipv4Net::new(addr, prefix).ok_or_else(|| err("host bits set (use the network address)"))
    }
}

impl serde::Serialize for Ipv4Net {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Ipv4Net {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// An Ethernet address, shown and parsed as `02:00:00:aa:bb:cc`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MacAddr(pub [u8; 6]);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid MAC address {0:?}: expected six hex bytes separated by ':'")]
pub struct ParseMacError(String);

impl MacAddr {
    /// Group bit clear: a frame source must be unicast.
    pub fn is_unicast(&self) -> bool {
        self.0[0] & 1 == 0 && self.0 != [0; 6]
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for MacAddr {
    type Err = ParseMacError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for b in out.iter_mut() {
            let p = parts.next().ok_or_else(|| ParseMacError(s.to_string()))?;
            if p.len() != 2 {
                return Err(ParseMacError(s.to_string()));
            }
            *b = u8::from_str_radix(p, 16).map_err(|_| ParseMacError(s.to_string()))?;
        }
        if parts.next().is_some() {
            return Err(ParseMacError(s.to_string()));
        }
        Ok(MacAddr(out))
    }
}

impl serde::Serialize for MacAddr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for MacAddr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Both travel as strings (`10.0.0.0/16`, `02:00:00:aa:bb:cc`) in the
/// agent protocol's generated document.
macro_rules! string_schema {
    ($t:ty, $name:literal, $pattern:literal, $description:literal) => {
        impl schemars::JsonSchema for $t {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                $name.into()
            }

            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                schemars::json_schema!({"type": "string", "pattern": $pattern, "description": $description})
            }
        }
    };
}

string_schema!(Ipv4Net, "Ipv4Net", r"^\d{1,3}(\.\d{1,3}){3}/\d{1,2}$", "an IPv4 network in CIDR notation, host bits clear");
string_schema!(MacAddr, "MacAddr", r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$", "an Ethernet address, six hex bytes separated by ':'");

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn parse_and_display() {
        assert_eq!(n("10.0.0.0/16").to_string(), "10.0.0.0/16");
        assert_eq!(n("10.0.0.7").to_string(), "10.0.0.7/32");
        assert_eq!(n("0.0.0.0/0"), Ipv4Net::ANY);
        assert!("10.0.0.7/24".parse::<Ipv4Net>().is_err(), "host bits set");
        assert!("10.0.0.0/33".parse::<Ipv4Net>().is_err());
        assert!("10.0.0/8".parse::<Ipv4Net>().is_err());
        assert!("10.0.0.0/x".parse::<Ipv4Net>().is_err());
    }

    #[test]
    fn arithmetic() {
        let s = n("10.0.1.0/24");
        assert_eq!(s.first_host(), Some(Ipv4Addr::new(10, 0, 1, 1)));
        assert_eq!(s.broadcast(), Ipv4Addr::new(10, 0, 1, 255));
        assert_eq!(s.netmask(), Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(s.size(), 256);
        assert_eq!(Ipv4Net::ANY.size(), 1 << 32);
        assert!(Ipv4Net::ANY.contains(Ipv4Addr::new(1, 2, 3, 4)));
        assert!(s.contains(Ipv4Addr::new(10, 0, 1, 200)));
        assert!(!s.contains(Ipv4Addr::new(10, 0, 2, 1)));
        assert!(s.is_host_address(Ipv4Addr::new(10, 0, 1, 5)));
        assert!(!s.is_host_address(Ipv4Addr::new(10, 0, 1, 0)));
        assert!(!s.is_host_address(Ipv4Addr::new(10, 0, 1, 255)));
        assert!(n("10.0.0.0/16").contains_net(&s));
        assert!(!s.contains_net(&n("10.0.0.0/16")));
        assert!(s.overlaps(&n("10.0.0.0/16")) && n("10.0.0.0/16").overlaps(&s));
        assert!(!s.overlaps(&n("10.0.2.0/24")));
        assert_eq!(s.nth(256), None);
    }

    #[test]
    fn normalize_drops_nested_and_duplicates() {
        let v = normalize(&[
            n("10.0.1.0/24"),
            n("10.0.0.0/16"),
            n("10.0.0.5"),
            n("192.168.0.1"),
            n("192.168.0.1"),
        ]);
        assert_eq!(v, vec![n("10.0.0.0/16"), n("192.168.0.1/32")]);
        assert_eq!(normalize(&[n("1.2.3.4"), Ipv4Net::ANY]), vec![Ipv4Net::ANY]);
    }

    #[test]
    fn mac() {
        let m: MacAddr = "02:AB:00:00:00:01".parse().unwrap();
        assert_eq!(m.to_string(), "02:ab:00:00:00:01");
        assert!(m.is_unicast());
        assert!(!"ff:ff:ff:ff:ff:ff".parse::<MacAddr>().unwrap().is_unicast());
        assert!("02:ab:00:00:00".parse::<MacAddr>().is_err());
        assert!("02:ab:00:00:00:01:02".parse::<MacAddr>().is_err());
        assert!("2:ab:00:00:00:01".parse::<MacAddr>().is_err());
    }

    #[test]
    fn serde_round_trip() {
        let j = serde_json::to_string(&n("10.0.0.0/16")).unwrap();
        assert_eq!(j, "\"10.0.0.0/16\"");
        let back: Ipv4Net = serde_json::from_str(&j).unwrap();
        assert_eq!(back, n("10.0.0.0/16"));
    }
}
