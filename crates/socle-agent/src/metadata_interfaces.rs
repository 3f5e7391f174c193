//! The `network/interfaces/macs/` tree of the metadata service: one
//! directory per NIC of the calling VM, named by MAC, as EC2 lays it out
//! (cloud-init reads the secondary addresses of each NIC there).

use socle_agent_api::GuestInterface;

/// The body of `rest`, the path below `network/interfaces/macs` (`""`,
/// `/MAC`, `/MAC/field`); None: 404.
pub(crate) fn answer(nics: &[GuestInterface], rest: &str) -> Option<String> {
    let parts: Vec<&str> = rest.split('/').filter(|p| !p.is_empty()).collect();
    match parts.as_slice() {
        [] => Some(nics.iter().map(|n| format!("{}/\n", n.mac)).collect()),
        [mac, field @ ..] => {
            let n = nics.iter().find(|n| n.mac == *mac)?;
            let lines = |v: &[String]| (!v.is_empty()).then(|| v.join("\n"));
            match field {
                [] => {
                    let mut entries = vec!["device-number", "interface-id", "local-ipv4s", "mac", "security-group-ids"];
                    if !n.public_ips.is_empty() {
                        entries.push("public-ipv4s");
                    }
                    if n.subnet.is_some() {
                        entries.extend(["subnet-id", "subnet-ipv4-cidr-block"]);
                    }
                    if n.net.is_some() {
                        entries.extend(["vpc-id", "vpc-ipv4-cidr-block"]);
                    }
                    entries.sort_unstable();
                    Some(entries.join("\n") + "\n")
                }
                ["device-number"] => Some(n.device_number.to_string()),
                ["interface-id"] => Some(n.nic_id.clone()),
                ["mac"] => Some(n.mac.clone()),
                ["local-ipv4s"] => lines(&n.private_ips),
                ["public-ipv4s"] => lines(&n.public_ips),
                ["security-group-ids"] => lines(&n.group_ids),
                ["subnet-id"] => n.subnet.as_ref().map(|s| s.0.clone()),
                ["subnet-ipv4-cidr-block"] => n.subnet.as_ref().map(|s| s.1.clone()),
                ["vpc-id"] => n.net.as_ref().map(|v| v.0.clone()),
                ["vpc-ipv4-cidr-block"] => n.net.as_ref().map(|v| v.1.clone()),
                _ => None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nics() -> Vec<GuestInterface> {
        vec![
            GuestInterface {
                mac: "aa:fc:00:00:00:01".into(),
                device_number: 0,
                nic_id: "eni-00000001".into(),
                private_ips: vec!["10.0.1.4".into(), "10.0.1.9".into()],
                public_ips: vec!["198.18.0.7".into()],
                group_ids: vec!["sg-00000001".into()],
                subnet: Some(("subnet-00000001".into(), "10.0.1.0/24".into())),
                net: Some(("vpc-00000001".into(), "10.0.0.0/16".into())),
            },
            GuestInterface { mac: "aa:fc:00:00:00:02".into(), device_number: 1, nic_id: "eni-00000002".into(), private_ips: vec!["10.0.2.5".into()], ..Default::default() },
        ]
    }

    #[test]
    fn the_tree_lists_each_nic_by_mac_with_its_addresses() {
        let n = nics();
        assert_eq!(answer(&n, "").unwrap(), "aa:fc:00:00:00:01/\naa:fc:00:00:00:02/\n");
        let first = answer(&n, "/aa:fc:00:00:00:01/").unwrap();
        assert!(first.contains("local-ipv4s\n") && first.contains("public-ipv4s\n") && first.contains("vpc-id\n"), "{first}");
        assert_eq!(answer(&n, "/aa:fc:00:00:00:01/local-ipv4s").unwrap(), "10.0.1.4\n10.0.1.9");
        assert_eq!(answer(&n, "/aa:fc:00:00:00:01/subnet-ipv4-cidr-block").unwrap(), "10.0.1.0/24");
        assert_eq!(answer(&n, "/aa:fc:00:00:00:02/device-number").unwrap(), "1");
        assert_eq!(answer(&n, "/aa:fc:00:00:00:02/interface-id").unwrap(), "eni-00000002");
        let second = answer(&n, "/aa:fc:00:00:00:02").unwrap();
        assert!(!second.contains("public-ipv4s") && !second.contains("vpc-id"), "{second}");
        assert_eq!(answer(&n, "/aa:fc:00:00:00:02/public-ipv4s"), None);
        assert_eq!(answer(&n, "/aa:fc:00:00:00:03"), None, "not this VM's NIC");
        assert_eq!(answer(&n, "/aa:fc:00:00:00:01/bogus"), None);
    }
}
