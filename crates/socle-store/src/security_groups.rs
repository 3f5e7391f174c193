//! Security groups and their rules.
//!
//! A group belongs to one account and to one Net (`net_id`), or to the
//! public cloud (`net_id` NULL). A rule row allows one flow (`inbound` or
//! `outbound`) for one protocol and port range from or to ONE source: an
//! IP range, or a peer group (whose members' addresses the network compiler
//! resolves). The API shows rules grouped per protocol and ports, as OSC
//! does; the table keeps one row per source so that adding and removing a
//! source is one row, and duplicates are refused by a unique index.
//!
//! Ports: NULL for protocol `-1` (all); for `icmp` the ICMP type and code
//! (-1: any); for `tcp`/`udp` the first and last port.

use crate::params;
use crate::db::{Conn, OptionalExtension, Row};
use socle_types::ids::{AccountId, NetId, SecurityGroupId, SecurityGroupRuleId};

use crate::Result;

/// The name of the group every account has in the public cloud and every Net has.
pub const DEFAULT_GROUP_NAME: &str = "default";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupRow {
    pub security_group_id: SecurityGroupId,
    pub account_id: AccountId,
    /// None: a group of the public cloud.
    pub net_id: Option<NetId>,
    pub name: String,
    pub description: String,
    pub created_at: String,
}

impl GroupRow {
    pub fn is_default(&self) -> bool {
        self.name == DEFAULT_GROUP_NAME
    }
}

/// One rule row, with its peer group (if any) resolved: the peer's owner,
/// name and Net, read in the same query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleRow {
    pub rule_id: SecurityGroupRuleId,
    pub security_group_id: SecurityGroupId,
    /// `inbound` or `outbound`.
    pub flow: String,
    /// `-1` (all), `tcp`, `udp` or `icmp`.
    pub protocol: String,
    pub from_port: Option<i64>,
    pub to_port: Option<i64>,
    /// Exactly one of `ip_range` and `peer_group_id` is set.
    pub ip_range: Option<String>,
    pub peer_group_id: Option<SecurityGroupId>,
    /// The peer's owner, name and Net; None when the rule has no peer (or
    /// the peer no longer exists, which deletion checks prevent).
    pub peer_account_id: Option<AccountId>,
    pub peer_name: Option<String>,
    pub peer_net_id: Option<NetId>,
    pub created_at: String,
}

/// A rule to insert or look for (before it has an ID).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RuleKey {
    pub flow: String,
    pub protocol: String,
    pub from_port: Option<i64>,
    pub to_port: Option<i64>,
    pub ip_range: Option<String>,
    pub peer_group_id: Option<SecurityGroupId>,
}

const GROUP_COLUMNS: &str = "security_group_id, account_id, net_id, name, description, created_at";

fn group_from_row(r: &Row) -> crate::Result<GroupRow> {
    Ok(GroupRow {
        security_group_id: SecurityGroupId::from_trusted(r.get(0)?),
        account_id: AccountId::from_trusted(r.get(1)?),
        net_id: r.get::<_, Option<String>>(2)?.map(NetId::from_trusted),
        name: r.get(3)?,
        description: r.get(4)?,
        created_at: r.get(5)?,
    })
}

pub fn insert_group(conn: &Conn, g: &GroupRow) -> Result<()> {
    conn.execute(
        &format!("INSERT INTO security_groups ({GROUP_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6)"),
        params![
            g.security_group_id.as_str(),
            g.account_id.as_str(),
            g.net_id.as_ref().map(|n| n.as_str()),
            g.name,
            g.description,
            g.created_at
        ],
    )?;
    Ok(())
}

/// One group of `account`; another account's is `None`, like an absent one.
pub fn get(conn: &Conn, account: &AccountId, id: &SecurityGroupId) -> Result<Option<GroupRow>> {
    Ok(conn
        .query_row(
            &format!("SELECT {GROUP_COLUMNS} FROM security_groups WHERE security_group_id = ?1 AND account_id = ?2"),
            params![id.as_str(), account.as_str()],
            group_from_row,
        )
        .optional()?)
}

/// The group of `account` named `name` in the Net `net_id` (None: the public cloud).
pub fn get_by_name(conn: &Conn, account: &AccountId, net_id: Option<&NetId>, name: &str) -> Result<Option<GroupRow>> {
    Ok(conn
        .query_row(
            &format!(
                "SELECT {GROUP_COLUMNS} FROM security_groups WHERE account_id = ?1 AND net_id IS NOT DISTINCT FROM ?2 AND name = ?3"
            ),
            params![account.as_str(), net_id.map(|n| n.as_str()), name],
            group_from_row,
        )
        .optional()?)
}

/// The groups of `account`, by creation date then ID.
pub fn list(conn: &Conn, account: &AccountId) -> Result<Vec<GroupRow>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {GROUP_COLUMNS} FROM security_groups WHERE account_id = ?1 ORDER BY created_at, security_group_id"
    ))?;
    let rows = stmt.query_map([account.as_str()], group_from_row)?.collect::<crate::Result<Vec<_>>>()?;
    Ok(rows)
}

/// The groups of one Net, whatever their account (a Net has one owner).
pub fn list_in_net(conn: &Conn, net_id: &NetId) -> Result<Vec<GroupRow>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {GROUP_COLUMNS} FROM security_groups WHERE net_id = ?1 ORDER BY created_at, security_group_id"
    ))?;
    let rows = stmt.query_map([net_id.as_str()], group_from_row)?.collect::<crate::Result<Vec<_>>>()?;
    Ok(rows)
}

/// Deletes a group and (ON DELETE CASCADE) its rules.
pub fn delete_group(conn: &Conn, id: &SecurityGroupId) -> Result<()> {
    conn.execute("DELETE FROM security_groups WHERE security_group_id = ?1", [id.as_str()])?;
    Ok(())
}

/// The owner of a Net, if it exists. (Nets have their own module; this is the
/// one question security groups ask about them.)
pub fn net_owner(conn: &Conn, net_id: &NetId) -> Result<Option<AccountId>> {
    Ok(conn
        .query_row("SELECT account_id FROM nets WHERE net_id = ?1", [net_id.as_str()], |r| r.get::<_, String>(0))
        .optional()?
        .map(AccountId::from_trusted))
}

pub fn insert_rule(conn: &Conn, group: &SecurityGroupId, id: &SecurityGroupRuleId, k: &RuleKey, created_at: &str) -> Result<()> {
    conn.execute(
        "INSERT INTO security_group_rules
           (rule_id, security_group_id, flow, protocol, from_port, to_port, ip_range, peer_group_id, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![
            id.as_str(),
            group.as_str(),
            k.flow,
            k.protocol,
            k.from_port,
            k.to_port,
            k.ip_range,
            k.peer_group_id.as_ref().map(|p| p.as_str()),
            created_at
        ],
    )?;
    Ok(())
}

/// The ID of the rule of `group` equal to `k`, if there is one.
pub fn find_rule(conn: &Conn, group: &SecurityGroupId, k: &RuleKey) -> Result<Option<SecurityGroupRuleId>> {
    Ok(conn
        .query_row(
            "SELECT rule_id FROM security_group_rules
             WHERE security_group_id = ?1 AND flow = ?2 AND protocol = ?3 AND from_port IS NOT DISTINCT FROM ?4 AND to_port IS NOT DISTINCT FROM ?5
               AND ip_range IS NOT DISTINCT FROM ?6 AND peer_group_id IS NOT DISTINCT FROM ?7",
            params![
                group.as_str(),
                k.flow,
                k.protocol,
                k.from_port,
                k.to_port,
                k.ip_range,
                k.peer_group_id.as_ref().map(|p| p.as_str())
            ],
            |r| r.get::<_, String>(0),
        )
        .optional()?
        .map(SecurityGroupRuleId::from_trusted))
}

pub fn delete_rule(conn: &Conn, id: &SecurityGroupRuleId) -> Result<()> {
    conn.execute("DELETE FROM security_group_rules WHERE rule_id = ?1", [id.as_str()])?;
    Ok(())
}

/// How many rule rows `group` has in `flow`.
pub fn count_rules(conn: &Conn, group: &SecurityGroupId, flow: &str) -> Result<i64> {
    Ok(conn.query_row(
        "SELECT COUNT(*) FROM security_group_rules WHERE security_group_id = ?1 AND flow = ?2",
        params![group.as_str(), flow],
        |r| r.get(0),
    )?)
}

/// The groups (other than `id` itself) that have a rule naming `id` as peer,
/// with their owners.
pub fn referencing_groups(conn: &Conn, id: &SecurityGroupId) -> Result<Vec<(SecurityGroupId, AccountId)>> {
    let mut stmt = conn.prepare_cached(
        "SELECT DISTINCT g.security_group_id, g.account_id
         FROM security_group_rules r JOIN security_groups g ON g.security_group_id = r.security_group_id
         WHERE r.peer_group_id = ?1 AND r.security_group_id != ?1
         ORDER BY g.security_group_id",
    )?;
    let rows = stmt
        .query_map([id.as_str()], |r| {
            Ok((SecurityGroupId::from_trusted(r.get(0)?), AccountId::from_trusted(r.get(1)?)))
        })?
        .collect::<crate::Result<Vec<_>>>()?;
    Ok(rows)
}

/// Removes every rule naming `id` as peer (for a group about to go with its Net).
pub fn delete_rules_with_peer(conn: &Conn, id: &SecurityGroupId) -> Result<()> {
    conn.execute("DELETE FROM security_group_rules WHERE peer_group_id = ?1", [id.as_str()])?;
    Ok(())
}

const RULE_SELECT: &str = "SELECT r.rule_id, r.security_group_id, r.flow, r.protocol, r.from_port, r.to_port, r.ip_range,
            r.peer_group_id, p.account_id, p.name, p.net_id, r.created_at
     FROM security_group_rules r LEFT JOIN security_groups p ON p.security_group_id = r.peer_group_id";

fn rule_from_row(r: &Row) -> crate::Result<RuleRow> {
    Ok(RuleRow {
        rule_id: SecurityGroupRuleId::from_trusted(r.get(0)?),
        security_group_id: SecurityGroupId::from_trusted(r.get(1)?),
        flow: r.get(2)?,
        protocol: r.get(3)?,
        from_port: r.get(4)?,
        to_port: r.get(5)?,
        ip_range: r.get(6)?,
        peer_group_id: r.get::<_, Option<String>>(7)?.map(SecurityGroupId::from_trusted),
        peer_account_id: r.get::<_, Option<String>>(8)?.map(AccountId::from_trusted),
        peer_name: r.get(9)?,
        peer_net_id: r.get::<_, Option<String>>(10)?.map(NetId::from_trusted),
        created_at: r.get(11)?,
    })
}

/// Every rule of the given groups, each with its peer group resolved, in
/// the order of `group_ids` then by creation date and ID. Read-only: the
/// network compiler turns the peers into their members' addresses.
pub fn rules_of(conn: &Conn, group_ids: &[SecurityGroupId]) -> Result<Vec<RuleRow>> {
    let mut stmt =
        conn.prepare_cached(&format!("{RULE_SELECT} WHERE r.security_group_id = ?1 ORDER BY r.created_at, r.rule_id"))?;
    let mut out = Vec::new();
    for id in group_ids {
        let rows = stmt.query_map([id.as_str()], rule_from_row)?;
        for row in rows {
            out.push(row?);
        }
    }
    Ok(out)
}

/// Every rule of every group of `account` (one query, for ReadSecurityGroups).
pub fn rules_of_account(conn: &Conn, account: &AccountId) -> Result<Vec<RuleRow>> {
    let mut stmt = conn.prepare_cached(&format!(
        "{RULE_SELECT} JOIN security_groups g ON g.security_group_id = r.security_group_id
         WHERE g.account_id = ?1 ORDER BY r.created_at, r.rule_id"
    ))?;
    let rows = stmt.query_map([account.as_str()], rule_from_row)?.collect::<crate::Result<Vec<_>>>()?;
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::now_iso;

    fn group(account: &AccountId, name: &str) -> GroupRow {
        GroupRow {
            security_group_id: SecurityGroupId::generate(),
            account_id: account.clone(),
            net_id: None,
            name: name.into(),
            description: "d".into(),
            created_at: now_iso(),
        }
    }

    fn key(flow: &str, protocol: &str, ports: Option<(i64, i64)>, ip: Option<&str>, peer: Option<&SecurityGroupId>) -> RuleKey {
        RuleKey {
            flow: flow.into(),
            protocol: protocol.into(),
            from_port: ports.map(|p| p.0),
            to_port: ports.map(|p| p.1),
            ip_range: ip.map(Into::into),
            peer_group_id: peer.cloned(),
        }
    }

    #[test]
    fn names_unique_per_account_and_net_and_rules_unique() {
        crate::on_each_engine(|conn| -> Result<()> {
                let a = AccountId::generate();
                let b = AccountId::generate();
                let g = group(&a, "web");
                insert_group(conn, &g)?;
                insert_group(conn, &group(&b, "web"))?;
                assert!(insert_group(conn, &group(&a, "web")).unwrap_err().is_unique_violation());
                assert_eq!(get_by_name(conn, &a, None, "web")?.unwrap().security_group_id, g.security_group_id);
                assert!(get(conn, &b, &g.security_group_id)?.is_none(), "another account's group is invisible");

                let k = key("inbound", "tcp", Some((22, 22)), Some("10.0.0.0/8"), None);
                insert_rule(conn, &g.security_group_id, &SecurityGroupRuleId::generate(), &k, &now_iso())?;
                let again = insert_rule(conn, &g.security_group_id, &SecurityGroupRuleId::generate(), &k, &now_iso());
                assert!(again.unwrap_err().is_unique_violation());
                let all = key("inbound", "-1", None, None, Some(&g.security_group_id));
                insert_rule(conn, &g.security_group_id, &SecurityGroupRuleId::generate(), &all, &now_iso())?;
                assert!(find_rule(conn, &g.security_group_id, &all)?.is_some());
                assert!(find_rule(conn, &g.security_group_id, &key("outbound", "-1", None, None, None))?.is_none());

                let rules = rules_of(conn, &[g.security_group_id.clone()])?;
                assert_eq!(rules.len(), 2);
                let peer_rule = rules.iter().find(|r| r.peer_group_id.is_some()).unwrap();
                assert_eq!(peer_rule.peer_name.as_deref(), Some("web"));
                assert_eq!(peer_rule.peer_account_id.as_ref(), Some(&a));
                // A self-reference does not count as "in use".
                assert!(referencing_groups(conn, &g.security_group_id)?.is_empty());
                delete_group(conn, &g.security_group_id)?;
                assert!(rules_of(conn, &[g.security_group_id.clone()])?.is_empty(), "rules go with their group");
                Ok(())
            });
    }
}
