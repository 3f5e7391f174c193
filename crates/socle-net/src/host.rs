//! Reading the host's current network state through `ip -j`, in the root
//! namespace or a Net's. Only the fields the driver compares are parsed.

use std::collections::HashMap;

use serde::Deserialize;

use crate::cidr::Ipv4Net;
use crate::cmd;
use crate::error::Result;

#[derive(Debug, Clone, Deserialize)]
pub struct Link {
    pub ifname: String,
    #[serde(default)]
    pub master: Option<String>,
    #[serde(default)]
    pub flags: Vec<String>,
    #[serde(default)]
    pub address: Option<String>,
    #[serde(default)]
    pub linkinfo: Option<LinkInfo>,
    /// `ip link set X alias …`: the driver tags root-namespace devices with
    /// their owner.
    #[serde(default)]
    pub ifalias: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct LinkInfo {
    #[serde(default)]
    pub info_kind: Option<String>,
    #[serde(default)]
    pub info_data: Option<serde_json::Value>,
}

impl Link {
    /// `bridge`, `veth`, `tun`, … (`None` for physical devices and lo).
    pub fn kind(&self) -> Option<&str> {
        self.linkinfo.as_ref()?.info_kind.as_deref()
    }

    pub fn is_tap(&self) -> bool {
        self.kind() == Some("tun")
            && self
                .linkinfo
                .as_ref()
                .and_then(|l| l.info_data.as_ref())
                .and_then(|d| d.get("type"))
                .and_then(|t| t.as_str())
                == Some("tap")
    }

    pub fn is_up(&self) -> bool {
        self.flags.iter().any(|f| f == "UP")
    }
}

/// All links of a namespace (`None`: the driver's own).
pub fn links(ns: Option<&str>) -> Result<Vec<Link>> {
    cmd::ip_json(ns, &["-d", "link", "show"])
}

pub fn links_by_name(ns: Option<&str>) -> Result<HashMap<String, Link>> {
    Ok(links(ns)?
        .into_iter()
        .map(|l| (l.ifname.clone(), l))
        .collect())
}

#[derive(Debug, Clone, Deserialize)]
struct AddrLink {
    ifname: String,
    #[serde(default)]
    addr_info: Vec<AddrInfo>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct AddrInfo {
    pub family: String,
    pub local: String,
    pub prefixlen: u8,
    /// The peer of a point-to-point address.
    #[serde(default)]
    pub address: Option<String>,
}

/// IPv4 addresses per interface, as (`local/prefixlen` or `local peer P`)
/// strings, sorted, so desired and actual compare as plain lists.
pub fn ipv4_addrs(ns: Option<&str>) -> Result<HashMap<String, Vec<String>>> {
    let v: Vec<AddrLink> = cmd::ip_json(ns, &["addr", "show"])?;
    Ok(v.into_iter()
        .map(|l| {
            let mut a: Vec<String> = l
                .addr_info
                .iter()
                .filter(|a| a.family == "inet")
                .map(|a| match &a.address {
                    Some(peer) => format!("{} peer {peer}", a.local),
                    None => format!("{}/{}", a.local, a.prefixlen),
                })
                .collect();
            a.sort();
            (l.ifname, a)
        })
        .collect())
}

#[derive(Debug, Clone, Deserialize)]
pub struct RouteEntry {
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    pub dst: String,
    #[serde(default)]
    pub dev: Option<String>,
    /// Absent for the main table.
    #[serde(default)]
    pub table: Option<String>,
    #[serde(default)]
    pub protocol: Option<String>,
}

impl RouteEntry {
    /// The destination as a prefix (`default` and bare host addresses
    /// normalised); `None` for IPv6 and anything unparsable.
    pub fn dest(&self) -> Option<Ipv4Net> {
        if self.dst == "default" {
            return Some(Ipv4Net::ANY);
        }
        self.dst.parse().ok()
    }

    pub fn table_id(&self) -> Option<u32> {
        match self.table.as_deref() {
            None => Some(254),
            Some("main") => Some(254),
            Some(t) => t.parse().ok(),
        }
    }
}

pub fn routes(ns: Option<&str>, args: &[&str]) -> Result<Vec<RouteEntry>> {
    let mut a = vec!["-4", "route", "show"];
    a.extend_from_slice(args);
    cmd::ip_json(ns, &a)
}

#[derive(Debug, Clone, Deserialize)]
pub struct RuleEntry {
    pub priority: u32,
    #[serde(default)]
    pub src: Option<String>,
    #[serde(default)]
    pub srclen: Option<u8>,
    #[serde(default)]
    pub dst: Option<String>,
    #[serde(default)]
    pub dstlen: Option<u8>,
    #[serde(default)]
    pub table: Option<String>,
}

impl RuleEntry {
    /// `from X to Y lookup T`, in the same shape as the desired rules.
    pub fn render(&self) -> String {
        let side = |a: &Option<String>, l: &Option<u8>| match (a.as_deref(), l) {
            (None | Some("all"), _) => "all".to_string(),
            (Some(a), Some(l)) => format!("{a}/{l}"),
            (Some(a), None) => format!("{a}/32"),
        };
        format!(
            "pref {} from {} to {} lookup {}",
            self.priority,
            side(&self.src, &self.srclen),
            side(&self.dst, &self.dstlen),
            match self.table.as_deref() {
                Some("main") | None => "254",
                Some(t) => t,
            }
        )
    }
}

pub fn rules(ns: Option<&str>) -> Result<Vec<RuleEntry>> {
    cmd::ip_json(ns, &["-4", "rule", "show"])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_ip_json() {
        let routes: Vec<RouteEntry> = serde_json::from_str(
            r#"[{"dst":"default","gateway":"100.64.0.1","dev":"u0","table":"1000","flags":["onlink"]},
                {"dst":"10.0.0.0/24","dev":"b0","protocol":"kernel","scope":"link","prefsrc":"10.0.0.1","flags":[]},
                {"type":"unreachable","dst":"10.0.0.0/16","flags":[]},
                {"dst":"100.64.0.1","dev":"u0","protocol":"kernel","scope":"link"}]"#,
        )
        .unwrap();
        assert_eq!(routes[0].dest(), Some(Ipv4Net::ANY));
        assert_eq!(routes[0].table_id(), Some(1000));
        assert_eq!(routes[1].table_id(), Some(254));
        assert_eq!(routes[2].kind.as_deref(), Some("unreachable"));
        assert_eq!(routes[3].dest(), Some("100.64.0.1/32".parse().unwrap()));
        let rules: Vec<RuleEntry> = serde_json::from_str(
            r#"[{"priority":0,"src":"all","table":"local"},
                {"priority":500,"src":"all","dst":"10.0.0.0","dstlen":16,"table":"main"},
                {"priority":1000,"src":"10.0.0.0","srclen":24,"table":"1000"}]"#,
        )
        .unwrap();
        assert_eq!(
            rules[1].render(),
            "pref 500 from all to 10.0.0.0/16 lookup 254"
        );
        assert_eq!(
            rules[2].render(),
            "pref 1000 from 10.0.0.0/24 to all lookup 1000"
        );
        let links: Vec<Link> = serde_json::from_str(
            r#"[{"ifname":"tp0","flags":["BROADCAST","UP"],"address":"7e:f4:da:df:49:34",
                 "linkinfo":{"info_kind":"tun","info_data":{"type":"tap","pi":false}}},
                {"ifname":"lo","flags":["LOOPBACK"]}]"#,
        )
        .unwrap();
        assert!(links[0].is_tap() && links[0].is_up());
        assert!(!links[1].is_tap() && links[1].kind().is_none());
    }
}
