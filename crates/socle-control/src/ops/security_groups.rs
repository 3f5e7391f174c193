//! Security groups and their rules: CreateSecurityGroup, ReadSecurityGroups,
//! DeleteSecurityGroup, CreateSecurityGroupRule, DeleteSecurityGroupRule.
//!
//! Semantics (Outscale/AWS-like):
//! - A new group has no inbound rule and one outbound rule allowing
//!   everything (`-1` to `0.0.0.0/0`).
//! - Every account has a `default` group in the public cloud, created lazily
//!   by the first security-group call, and every Net has its own (made by
//!   CreateNet through [`ensure_default_group`]). A default group allows all
//!   inbound traffic from its own members and all outbound traffic; it
//!   cannot be deleted by the user, only with its Net ([`delete_groups_of_net`]).
//! - Rules: protocol `-1` (also `all`), `tcp` (`6`), `udp` (`17`), `icmp`
//!   (`1`), stored by name. tcp/udp need FromPortRange ≤ ToPortRange in
//!   0..=65535; icmp takes an ICMP type and code (-1: any); `-1` ignores
//!   ports. IP ranges must be IPv4 CIDRs written as their network (a range
//!   with host bits set, `10.0.0.1/8`, is refused, naming both readings,
//!   rather than silently widened). A peer group must be in the same Net (or
//!   both in the public cloud); another account's group is linked by ID and
//!   account only, and is indistinguishable from an absent one otherwise.
//! - Outbound rules are accepted on public-cloud groups too (Outscale only
//!   allows them in Nets): a superset, so that every group can be narrowed.
//! - Rules are shown as OSC does: one entry per (protocol, ports) listing its
//!   IpRanges and SecurityGroupsMembers. Each source is one row in the store.

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::Arc;

use socle_store::security_groups::{self as sg_store, GroupRow, RuleKey, RuleRow, DEFAULT_GROUP_NAME};
use socle_store::{now_iso, tags as tag_store, Conn};
use socle_types::error::ErrorCode;
use socle_types::ids::{AccountId, NetId, SecurityGroupId, SecurityGroupRuleId};
use socle_types::osc::*;
use socle_types::ApiError;

use super::{is_dry_run, resource_tags, tag_pairs, with_tags, write};
use crate::paging::{created_key, matches, paginate, reject_unsupported_filters, tags_match};
use crate::{Caller, Cloud};

const DEFAULT_DESCRIPTION: &str = "default security group";
/// Rule rows (one per IP range or peer) per group and flow.
pub(crate) const MAX_RULES_PER_FLOW: i64 = 100;
const INBOUND: &str = "inbound";
const OUTBOUND: &str = "outbound";

pub(crate) fn group_not_found(id_or_name: &str) -> ApiError {
    ApiError::not_found(ErrorCode::NoSuchSecurityGroup, "security group", id_or_name)
}

// ------------------------------------------------------------------ validation

/// Names: 1 to 255 of `a-z A-Z 0-9 space _.-:/()#,@[]+=&;{}!$*` (the OSC
/// set), not starting with `sg-`; `default` is reserved.
pub(crate) fn check_name(name: &str) -> Result<(), ApiError> {
    if name.is_empty() || name.chars().count() > 255 {
        return Err(ApiError::new(ErrorCode::InvalidParameterValueLength, "SecurityGroupName must be 1 to 255 characters"));
    }
    if let Some(c) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || " _.-:/()#,@[]+=&;{}!$*".contains(*c))) {
        return Err(ApiError::invalid_value(format!(
            "SecurityGroupName may contain letters, digits, spaces and _.-:/()#,@[]+=&;{{}}!$* only, not {c:?}"
        )));
    }
    if name.len() >= 3 && name[..3].eq_ignore_ascii_case("sg-") {
        return Err(ApiError::invalid_value("SecurityGroupName must not start with \"sg-\" (that is how IDs start)"));
    }
    if name == DEFAULT_GROUP_NAME {
        return Err(ApiError::new(
            ErrorCode::ReservedGroup,
            "the name \"default\" is reserved for the group every account and Net has already",
        ));
    }
    Ok(())
}

/// Descriptions: 1 to 255 printable ASCII characters or accented letters.
pub(crate) fn check_description(d: &str) -> Result<(), ApiError> {
    if d.is_empty() || d.chars().count() > 255 {
        return Err(ApiError::new(ErrorCode::InvalidParameterValueLength, "Description must be 1 to 255 characters"));
    }
    if let Some(c) = d.chars().find(|c| !((' '..='~').contains(c) || (!c.is_ascii() && c.is_alphabetic()))) {
        return Err(ApiError::invalid_value(format!(
            "Description may contain printable ASCII characters and accented letters only, not {c:?}"
        )));
    }
    Ok(())
}

/// `Inbound`/`Outbound` (any case) to the stored form.
pub(crate) fn parse_flow(flow: &str) -> Result<&'static str, ApiError> {
    match flow.to_ascii_lowercase().as_str() {
        "inbound" => Ok(INBOUND),
        "outbound" => Ok(OUTBOUND),
        _ => Err(ApiError::invalid_value(format!("Flow must be Inbound or Outbound, got {flow:?}"))),
    }
}

/// A protocol name or number to its stored name: `-1`, `tcp`, `udp`, `icmp`.
pub(crate) fn normalize_protocol(p: &str) -> Result<&'static str, ApiError> {
    match p.trim().to_ascii_lowercase().as_str() {
        "-1" | "all" => Ok("-1"),
        "tcp" | "6" => Ok("tcp"),
        "udp" | "17" => Ok("udp"),
        "icmp" | "1" => Ok("icmp"),
        _ => Err(ApiError::new(
            ErrorCode::InvalidProtocol,
            format!("IpProtocol must be tcp, udp, icmp or -1 (all protocols), or their numbers 6, 17, 1; got {p:?}"),
        )),
    }
}

/// The stored ports of a rule: None for `-1` (ports are ignored), the ICMP
/// type and code (-1: any) for icmp, the first and last port for tcp/udp.
pub(crate) fn check_ports(protocol: &str, from: Option<i64>, to: Option<i64>) -> Result<(Option<i64>, Option<i64>), ApiError> {
    match protocol {
        "-1" => Ok((None, None)),
        "icmp" => {
            let (t, c) = (from.unwrap_or(-1), to.unwrap_or(-1));
            if !(-1..=255).contains(&t) {
                return Err(ApiError::new(
                    ErrorCode::InvalidStartPort,
                    format!("for icmp, FromPortRange is the ICMP type: 0 to 255, or -1 for any; got {t}"),
                ));
            }
            if !(-1..=255).contains(&c) {
                return Err(ApiError::new(
                    ErrorCode::InvalidEndPort,
                    format!("for icmp, ToPortRange is the ICMP code: 0 to 255, or -1 for any; got {c}"),
                ));
            }
            if t == -1 && c != -1 {
                return Err(ApiError::new(
                    ErrorCode::InvalidPortSpecification,
                    format!("an ICMP code ({c}) needs an ICMP type; with FromPortRange -1 (any type), ToPortRange must be -1"),
                ));
            }
            Ok((Some(t), Some(c)))
        }
        _ => {
            let (Some(f), Some(t)) = (from, to) else {
                return Err(ApiError::missing(&format!("FromPortRange and ToPortRange (required for {protocol})")));
            };
            if !(0..=65535).contains(&f) {
                return Err(ApiError::new(ErrorCode::InvalidStartPort, format!("FromPortRange must be 0 to 65535, got {f}")));
            }
            if !(0..=65535).contains(&t) {
                return Err(ApiError::new(ErrorCode::InvalidEndPort, format!("ToPortRange must be 0 to 65535, got {t}")));
            }
            if f > t {
                return Err(ApiError::new(
                    ErrorCode::InvalidPortSpecification,
                    format!("FromPortRange ({f}) must not be greater than ToPortRange ({t})"),
                ));
            }
            Ok((Some(f), Some(t)))
        }
    }
}

/// An IPv4 range in CIDR notation, written as its network address. Host
/// bits set are refused (not silently cleared): `10.0.0.1/8` could mean the
/// network or the host, and guessing wrong opens a firewall too wide.
pub(crate) fn parse_cidr(s: &str) -> Result<String, ApiError> {
    let bad = || {
        ApiError::invalid_value(format!("IpRange must be an IPv4 range in CIDR notation such as 10.0.0.0/16, got {s:?}"))
    };
    let (addr, len) = s.split_once('/').ok_or_else(bad)?;
    let ip: Ipv4Addr = addr.parse().map_err(|_| bad())?;
    if len.is_empty() || len.len() > 2 || !len.bytes().all(|b| b.is_ascii_digit()) || (len.len() == 2 && len.starts_with('0')) {
        return Err(bad());
    }
    let len: u32 = len.parse().map_err(|_| bad())?;
    if len > 32 {
        return Err(bad());
    }
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    let network = Ipv4Addr::from(u32::from(ip) & mask);
    if network != ip {
        return Err(ApiError::invalid_value(format!(
            "IpRange {s} has host bits set: write {network}/{len} for the network, or {ip}/32 for the single address"
        )));
    }
    Ok(format!("{ip}/{len}"))
}

fn check_account_id(id: &str, param: &str) -> Result<(), ApiError> {
    if id.len() != 12 || !id.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ApiError::invalid_value(format!("{param} must be an account ID (12 digits), got {id:?}")));
    }
    Ok(())
}

// ------------------------------------------------------------- rule requests

/// Where a rule's traffic comes from (inbound) or goes to (outbound), as the
/// request names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Source {
    Range(String),
    /// A group: by ID or (the caller's own only) by name; `account` defaults
    /// to the caller.
    Group { account: Option<String>, id: Option<SecurityGroupId>, name: Option<String> },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RuleSpec {
    pub protocol: &'static str,
    pub from: Option<i64>,
    pub to: Option<i64>,
    pub source: Source,
}

/// The rule fields of a Create/DeleteSecurityGroupRule request: either the
/// single-rule form or `Rules`.
pub(crate) struct RuleFields<'a> {
    pub protocol: Option<&'a str>,
    pub from: Option<i64>,
    pub to: Option<i64>,
    pub ip_range: Option<&'a str>,
    /// SecurityGroupNameToLink/ToUnlink: a group ID, or the name of one of the caller's.
    pub group: Option<&'a str>,
    pub group_account: Option<&'a str>,
    pub rules: Option<&'a [SecurityGroupRule]>,
    /// The request's names of the two group fields, for messages.
    pub group_param: &'static str,
    pub account_param: &'static str,
}

fn group_source(account: Option<&str>, id: Option<&str>, name: Option<&str>, account_param: &str) -> Result<Source, ApiError> {
    if let Some(a) = account {
        check_account_id(a, account_param)?;
    }
    let id = id.map(SecurityGroupId::parse).transpose()?;
    if id.is_none() && name.is_none() {
        return Err(ApiError::missing("SecurityGroupId or SecurityGroupName (in each SecurityGroupsMembers entry)"));
    }
    Ok(Source::Group { account: account.map(str::to_string), id, name: name.map(str::to_string) })
}

/// Checks and expands the rule fields into one spec per source.
pub(crate) fn parse_rule_fields(f: &RuleFields) -> Result<Vec<RuleSpec>, ApiError> {
    let mut specs = Vec::new();
    match f.rules {
        Some(rules) => {
            let single = [
                ("IpProtocol", f.protocol.is_some()),
                ("FromPortRange", f.from.is_some()),
                ("ToPortRange", f.to.is_some()),
                ("IpRange", f.ip_range.is_some()),
                (f.group_param, f.group.is_some()),
                (f.account_param, f.group_account.is_some()),
            ];
            if let Some((name, _)) = single.iter().find(|(_, given)| *given) {
                return Err(ApiError::invalid_value(format!(
                    "Rules cannot be combined with {name}: give either Rules or the single-rule parameters"
                )));
            }
            if rules.is_empty() {
                return Err(ApiError::missing("Rules (at least one rule)"));
            }
            for r in rules {
                if r.service_ids.as_ref().is_some_and(|s| !s.is_empty()) {
                    return Err(ApiError::invalid_value("ServiceIds in rules are not supported by this Socle version"));
                }
                let protocol = normalize_protocol(r.ip_protocol.as_deref().unwrap_or("-1"))?;
                let (from, to) = check_ports(protocol, r.from_port_range, r.to_port_range)?;
                let ranges = r.ip_ranges.as_deref().unwrap_or_default();
                let members = r.security_groups_members.as_deref().unwrap_or_default();
                if ranges.is_empty() && members.is_empty() {
                    return Err(ApiError::missing("IpRanges or SecurityGroupsMembers (in each of Rules)"));
                }
                for range in ranges {
                    specs.push(RuleSpec { protocol, from, to, source: Source::Range(parse_cidr(range)?) });
                }
                for m in members {
                    let source = group_source(
                        m.account_id.as_deref(),
                        m.security_group_id.as_deref(),
                        m.security_group_name.as_deref(),
                        "AccountId",
                    )?;
                    specs.push(RuleSpec { protocol, from, to, source });
                }
            }
        }
        None => {
            let protocol = normalize_protocol(f.protocol.unwrap_or("-1"))?;
            let (from, to) = check_ports(protocol, f.from, f.to)?;
            let source = match (f.ip_range, f.group) {
                (Some(_), Some(_)) => {
                    return Err(ApiError::invalid_value(format!("give IpRange or {}, not both", f.group_param)))
                }
                (Some(r), None) => {
                    if f.group_account.is_some() {
                        return Err(ApiError::invalid_value(format!("{} goes with {}, not IpRange", f.account_param, f.group_param)));
                    }
                    Source::Range(parse_cidr(r)?)
                }
                // The parameter takes an ID or (for the caller's own groups) a name;
                // names cannot start with "sg-".
                (None, Some(g)) if g.starts_with("sg-") => group_source(f.group_account, Some(g), None, f.account_param)?,
                (None, Some(g)) => group_source(f.group_account, None, Some(g), f.account_param)?,
                (None, None) => return Err(ApiError::missing(&format!("IpRange or {} (or Rules)", f.group_param))),
            };
            specs.push(RuleSpec { protocol, from, to, source });
        }
    }
    Ok(specs)
}

/// Resolves a peer group for a rule of `target`. Unknown groups, another
/// account's groups named without their account, and another account's
/// groups outside `target`'s network scope all answer the same not-found.
fn resolve_peer(
    conn: &Conn,
    caller: &AccountId,
    target: &GroupRow,
    account: Option<&str>,
    id: Option<&SecurityGroupId>,
    name: Option<&str>,
) -> Result<GroupRow, ApiError> {
    let owner = account.map(|a| AccountId::from_trusted(a.to_string())).unwrap_or_else(|| caller.clone());
    let own = owner == *caller;
    let peer = match (id, name) {
        (Some(_), Some(_)) if !own => {
            return Err(ApiError::invalid_value(
                "a security group of another account is linked by its SecurityGroupId alone, without a name",
            ));
        }
        (Some(id), name) => {
            let g = sg_store::get(conn, &owner, id)?.ok_or_else(|| group_not_found(id.as_str()))?;
            if let Some(n) = name {
                if g.name != n {
                    return Err(ApiError::invalid_value(format!("the security group {id} is named {:?}, not {n:?}", g.name)));
                }
            }
            g
        }
        (None, Some(n)) => {
            if !own {
                return Err(ApiError::invalid_value(
                    "a security group of another account is linked by its ID (with its account), not by name",
                ));
            }
            sg_store::get_by_name(conn, caller, target.net_id.as_ref(), n)?.ok_or_else(|| {
                ApiError::not_found(
                    ErrorCode::NoSuchSecurityGroup,
                    "security group",
                    &format!("named {n:?} in {}", scope_name(target.net_id.as_ref())),
                )
            })?
        }
        (None, None) => return Err(ApiError::missing("SecurityGroupId or SecurityGroupName")),
    };
    if peer.net_id != target.net_id {
        if !own {
            return Err(group_not_found(peer.security_group_id.as_str()));
        }
        return Err(ApiError::invalid_value(format!(
            "{} is in {} but {} is in {}: a rule can only link groups of the same Net",
            peer.security_group_id,
            scope_name(peer.net_id.as_ref()),
            target.security_group_id,
            scope_name(target.net_id.as_ref())
        )));
    }
    Ok(peer)
}

fn scope_name(net: Option<&NetId>) -> String {
    net.map(|n| format!("the Net {n}")).unwrap_or_else(|| "the public cloud".into())
}

fn resolve_rules(conn: &Conn, caller: &AccountId, target: &GroupRow, flow: &str, specs: &[RuleSpec]) -> Result<Vec<RuleKey>, ApiError> {
    let mut keys = Vec::with_capacity(specs.len());
    for s in specs {
        let (ip_range, peer_group_id) = match &s.source {
            Source::Range(r) => (Some(r.clone()), None),
            Source::Group { account, id, name } => {
                let peer = resolve_peer(conn, caller, target, account.as_deref(), id.as_ref(), name.as_deref())?;
                (None, Some(peer.security_group_id))
            }
        };
        keys.push(RuleKey { flow: flow.into(), protocol: s.protocol.into(), from_port: s.from, to_port: s.to, ip_range, peer_group_id });
    }
    Ok(keys)
}

/// "inbound tcp 22-22 from 10.0.0.0/8", for messages.
pub(crate) fn describe(k: &RuleKey) -> String {
    let proto = match (k.protocol.as_str(), k.from_port, k.to_port) {
        ("-1", _, _) => "all protocols".to_string(),
        ("icmp", Some(t), Some(c)) => format!("icmp type {t} code {c}"),
        (p, Some(f), Some(t)) => format!("{p} {f}-{t}"),
        (p, _, _) => p.to_string(),
    };
    let dir = if k.flow == INBOUND { "from" } else { "to" };
    let source = k.ip_range.clone().or_else(|| k.peer_group_id.as_ref().map(|p| p.to_string())).unwrap_or_default();
    format!("{} {proto} {dir} {source}", k.flow)
}

// ------------------------------------------------------------------- views

/// The OSC shape: one entry per (protocol, ports), in order of first rule,
/// listing its IP ranges and peer groups. A peer's name is shown only when
/// the peer belongs to the group's owner.
fn rule_views(rules: &[&RuleRow], owner: &AccountId) -> Vec<SecurityGroupRule> {
    let mut out: Vec<SecurityGroupRule> = Vec::new();
    let mut index: HashMap<(String, Option<i64>, Option<i64>), usize> = HashMap::new();
    for r in rules {
        let i = *index.entry((r.protocol.clone(), r.from_port, r.to_port)).or_insert_with(|| {
            out.push(SecurityGroupRule {
                from_port_range: Some(r.from_port.unwrap_or(-1)),
                ip_protocol: Some(r.protocol.clone()),
                ip_ranges: Some(vec![]),
                security_group_rule_id: None,
                security_groups_members: Some(vec![]),
                service_ids: None,
                to_port_range: Some(r.to_port.unwrap_or(-1)),
            });
            out.len() - 1
        });
        let entry = &mut out[i];
        if let Some(range) = &r.ip_range {
            entry.ip_ranges.get_or_insert_with(Vec::new).push(range.clone());
        }
        if let Some(peer) = &r.peer_group_id {
            let own = r.peer_account_id.as_ref() == Some(owner);
            entry.security_groups_members.get_or_insert_with(Vec::new).push(SecurityGroupsMember {
                account_id: r.peer_account_id.as_ref().map(|a| a.to_string()),
                security_group_id: Some(peer.to_string()),
                security_group_name: if own { r.peer_name.clone() } else { None },
            });
        }
    }
    out
}

fn group_view(g: &GroupRow, rules: &[RuleRow], tags: Vec<ResourceTag>) -> SecurityGroup {
    let of = |flow: &str| -> Vec<&RuleRow> {
        rules.iter().filter(|r| r.security_group_id == g.security_group_id && r.flow == flow).collect()
    };
    SecurityGroup {
        account_id: Some(g.account_id.to_string()),
        description: Some(g.description.clone()),
        inbound_rules: Some(rule_views(&of(INBOUND), &g.account_id)),
        net_id: g.net_id.as_ref().map(|n| n.to_string()),
        outbound_rules: Some(rule_views(&of(OUTBOUND), &g.account_id)),
        security_group_id: Some(g.security_group_id.to_string()),
        security_group_name: Some(g.name.clone()),
        tags: Some(tags),
    }
}

/// One group as the API shows it, read inside the caller's transaction.
fn load_view(conn: &Conn, g: &GroupRow) -> Result<SecurityGroup, ApiError> {
    let rules = sg_store::rules_of(conn, std::slice::from_ref(&g.security_group_id))?;
    let tags = resource_tags(conn, g.security_group_id.as_str())?;
    Ok(group_view(g, &rules, tags))
}

// ------------------------------------------------------------- shared with Nets

fn insert_new_group(
    tx: &Conn,
    account: &AccountId,
    net_id: Option<&NetId>,
    name: &str,
    description: &str,
) -> Result<GroupRow, ApiError> {
    let row = GroupRow {
        security_group_id: SecurityGroupId::generate(),
        account_id: account.clone(),
        net_id: net_id.cloned(),
        name: name.to_string(),
        description: description.to_string(),
        created_at: now_iso(),
    };
    sg_store::insert_group(tx, &row).map_err(|e| {
        if e.is_unique_violation() {
            ApiError::new(
                ErrorCode::DuplicateGroup,
                format!("a security group named {name:?} already exists in {}", scope_name(net_id)),
            )
        } else {
            e.into()
        }
    })?;
    let all_out = RuleKey {
        flow: OUTBOUND.into(),
        protocol: "-1".into(),
        from_port: None,
        to_port: None,
        ip_range: Some("0.0.0.0/0".into()),
        peer_group_id: None,
    };
    sg_store::insert_rule(tx, &row.security_group_id, &SecurityGroupRuleId::generate(), &all_out, &row.created_at)?;
    Ok(row)
}

/// The `default` group of `account` in `net_id` (None: the public cloud),
/// created if missing: inbound allowed from its own members, outbound
/// allowed everywhere. Idempotent; call it inside the transaction that
/// needs the group (CreateNet calls it for each new Net).
pub(crate) fn ensure_default_group(tx: &Conn, account: &AccountId, net_id: Option<&NetId>) -> Result<SecurityGroupId, ApiError> {
    if let Some(g) = sg_store::get_by_name(tx, account, net_id, DEFAULT_GROUP_NAME)? {
        return Ok(g.security_group_id);
    }
    let g = insert_new_group(tx, account, net_id, DEFAULT_GROUP_NAME, DEFAULT_DESCRIPTION)?;
    let from_self = RuleKey {
        flow: INBOUND.into(),
        protocol: "-1".into(),
        from_port: None,
        to_port: None,
        ip_range: None,
        peer_group_id: Some(g.security_group_id.clone()),
    };
    sg_store::insert_rule(tx, &g.security_group_id, &SecurityGroupRuleId::generate(), &from_self, &g.created_at)?;
    Ok(g.security_group_id)
}

/// For DeleteNet: refuses while the Net has a group other than its
/// `default` one, otherwise deletes the default group, its rules and tags.
#[allow(dead_code)] // called by DeleteNet (ops/nets.rs)
pub(crate) fn delete_groups_of_net(tx: &Conn, net_id: &NetId) -> Result<(), ApiError> {
    let groups = sg_store::list_in_net(tx, net_id)?;
    let others: Vec<String> = groups.iter().filter(|g| !g.is_default()).map(|g| g.security_group_id.to_string()).collect();
    if !others.is_empty() {
        return Err(ApiError::new(
            ErrorCode::NetInUse,
            format!("the Net {net_id} still has security groups: {}; delete them first", others.join(", ")),
        ));
    }
    for g in groups {
        sg_store::delete_rules_with_peer(tx, &g.security_group_id)?;
        tag_store::delete_all_for_resource(tx, g.security_group_id.as_str())?;
        sg_store::delete_group(tx, &g.security_group_id)?;
    }
    Ok(())
}

fn get_owned(conn: &Conn, account: &AccountId, id: &SecurityGroupId) -> Result<GroupRow, ApiError> {
    sg_store::get(conn, account, id)?.ok_or_else(|| group_not_found(id.as_str()))
}

// -------------------------------------------------------------- operations

pub async fn create_security_group(
    cloud: &Arc<Cloud>,
    caller: &Caller,
    req: CreateSecurityGroupRequest,
) -> Result<CreateSecurityGroupResponse, ApiError> {
    check_name(&req.security_group_name)?;
    check_description(&req.description)?;
    let net_id = req.net_id.as_deref().map(NetId::parse).transpose()?;
    let account = caller.account_id.clone();
    let view = write(cloud, req.dry_run, move |tx| {
        ensure_default_group(tx, &account, None)?;
        if let Some(net) = &net_id {
            if sg_store::net_owner(tx, net)?.as_ref() != Some(&account) {
                return Err(ApiError::not_found(ErrorCode::NoSuchNet, "Net", net.as_str()));
            }
            ensure_default_group(tx, &account, Some(net))?;
        }
        if sg_store::get_by_name(tx, &account, net_id.as_ref(), &req.security_group_name)?.is_some() {
            return Err(ApiError::new(
                ErrorCode::DuplicateGroup,
                format!(
                    "a security group named {:?} already exists in {}",
                    req.security_group_name,
                    scope_name(net_id.as_ref())
                ),
            ));
        }
        let g = insert_new_group(tx, &account, net_id.as_ref(), &req.security_group_name, &req.description)?;
        load_view(tx, &g)
    })
    .await?;
    if is_dry_run(req.dry_run) {
        return Ok(CreateSecurityGroupResponse::default());
    }
    Ok(CreateSecurityGroupResponse { security_group: Some(view), ..Default::default() })
}

const FILTERS: &[&str] = &[
    "Descriptions",
    "InboundRuleAccountIds",
    "InboundRuleFromPortRanges",
    "InboundRuleIpRanges",
    "InboundRuleProtocols",
    "InboundRuleSecurityGroupIds",
    "InboundRuleSecurityGroupNames",
    "InboundRuleToPortRanges",
    "NetIds",
    "OutboundRuleAccountIds",
    "OutboundRuleFromPortRanges",
    "OutboundRuleIpRanges",
    "OutboundRuleProtocols",
    "OutboundRuleSecurityGroupIds",
    "OutboundRuleSecurityGroupNames",
    "OutboundRuleToPortRanges",
    "SecurityGroupIds",
    "SecurityGroupNames",
    "TagKeys",
    "TagValues",
    "Tags",
];

/// The rule filters of one flow; each given filter must match some rule of
/// that flow (not necessarily the same rule), as on AWS.
struct RuleFilter<'a> {
    account_ids: &'a Option<Vec<String>>,
    from_ports: &'a Option<Vec<i64>>,
    to_ports: &'a Option<Vec<i64>>,
    ip_ranges: &'a Option<Vec<String>>,
    protocols: Option<Vec<&'static str>>,
    group_ids: &'a Option<Vec<String>>,
    group_names: &'a Option<Vec<String>>,
}

impl RuleFilter<'_> {
    fn matches(&self, rules: &[&RuleRow], owner: &AccountId) -> bool {
        fn any<T>(filter: &Option<Vec<T>>, rules: &[&RuleRow], hit: impl Fn(&[T], &RuleRow) -> bool) -> bool {
            filter.as_ref().is_none_or(|f| rules.iter().any(|r| hit(f, r)))
        }
        any(self.account_ids, rules, |f, r| r.peer_account_id.as_ref().is_some_and(|a| f.iter().any(|x| x == a.as_str())))
            && any(self.from_ports, rules, |f, r| f.contains(&r.from_port.unwrap_or(-1)))
            && any(self.to_ports, rules, |f, r| f.contains(&r.to_port.unwrap_or(-1)))
            && any(self.ip_ranges, rules, |f, r| r.ip_range.as_ref().is_some_and(|i| f.contains(i)))
            && any(&self.protocols, rules, |f, r| f.contains(&r.protocol.as_str()))
            && any(self.group_ids, rules, |f, r| r.peer_group_id.as_ref().is_some_and(|p| f.iter().any(|x| x == p.as_str())))
            && any(self.group_names, rules, |f, r| {
                r.peer_account_id.as_ref() == Some(owner) && r.peer_name.as_ref().is_some_and(|n| f.contains(n))
            })
    }
}

fn protocols(list: &Option<Vec<String>>) -> Result<Option<Vec<&'static str>>, ApiError> {
    list.as_ref().map(|l| l.iter().map(|p| normalize_protocol(p)).collect()).transpose()
}

pub async fn read_security_groups(
    cloud: &Arc<Cloud>,
    caller: &Caller,
    req: ReadSecurityGroupsRequest,
) -> Result<ReadSecurityGroupsResponse, ApiError> {
    reject_unsupported_filters(&req.filters, FILTERS)?;
    let f = req.filters.unwrap_or_default();
    let inbound = RuleFilter {
        account_ids: &f.inbound_rule_account_ids,
        from_ports: &f.inbound_rule_from_port_ranges,
        to_ports: &f.inbound_rule_to_port_ranges,
        ip_ranges: &f.inbound_rule_ip_ranges,
        protocols: protocols(&f.inbound_rule_protocols)?,
        group_ids: &f.inbound_rule_security_group_ids,
        group_names: &f.inbound_rule_security_group_names,
    };
    let outbound = RuleFilter {
        account_ids: &f.outbound_rule_account_ids,
        from_ports: &f.outbound_rule_from_port_ranges,
        to_ports: &f.outbound_rule_to_port_ranges,
        ip_ranges: &f.outbound_rule_ip_ranges,
        protocols: protocols(&f.outbound_rule_protocols)?,
        group_ids: &f.outbound_rule_security_group_ids,
        group_names: &f.outbound_rule_security_group_names,
    };
    let account = caller.account_id.clone();
    let (groups, rules) = cloud
        .store
        .write(move |conn| {
            if sg_store::get_by_name(conn, &account, None, DEFAULT_GROUP_NAME)?.is_none() {
                ensure_default_group(conn, &account, None)?;
            }
            let groups = sg_store::list(conn, &account)?;
            let rules = sg_store::rules_of_account(conn, &account)?;
            Ok::<_, ApiError>((with_tags(conn, &account, groups, |g| g.security_group_id.as_str())?, rules))
        })
        .await?;
    let mut by_group: HashMap<&SecurityGroupId, Vec<&RuleRow>> = HashMap::new();
    for r in &rules {
        by_group.entry(&r.security_group_id).or_default().push(r);
    }
    let no_rules = Vec::new();
    let items: Vec<_> = groups
        .into_iter()
        .filter(|(g, tags)| {
            let rules = by_group.get(&g.security_group_id).unwrap_or(&no_rules);
            let of = |flow: &str| rules.iter().copied().filter(|r| r.flow == flow).collect::<Vec<_>>();
            matches(&f.security_group_ids, g.security_group_id.as_str())
                && matches(&f.security_group_names, &g.name)
                && matches(&f.descriptions, &g.description)
                && f.net_ids.as_ref().is_none_or(|l| g.net_id.as_ref().is_some_and(|n| l.iter().any(|x| x == n.as_str())))
                && tags_match(&tag_pairs(tags), &f.tag_keys, &f.tag_values, &f.tags)
                && inbound.matches(&of(INBOUND), &g.account_id)
                && outbound.matches(&of(OUTBOUND), &g.account_id)
        })
        .collect();
    let (page, next) = paginate(items, req.next_page_token.as_deref(), req.results_per_page, |(g, _)| {
        created_key(&g.created_at, g.security_group_id.as_str())
    })?;
    Ok(ReadSecurityGroupsResponse {
        security_groups: Some(page.into_iter().map(|(g, t)| group_view(&g, &rules, t)).collect()),
        next_page_token: next,
        ..Default::default()
    })
}

pub async fn delete_security_group(
    cloud: &Arc<Cloud>,
    caller: &Caller,
    req: DeleteSecurityGroupRequest,
) -> Result<DeleteSecurityGroupResponse, ApiError> {
    let id = req.security_group_id.as_deref().map(SecurityGroupId::parse).transpose()?;
    let name = req.security_group_name.clone();
    if id.is_none() && name.is_none() {
        return Err(ApiError::missing("SecurityGroupId or SecurityGroupName"));
    }
    let account = caller.account_id.clone();
    write(cloud, req.dry_run, move |tx| {
        ensure_default_group(tx, &account, None)?;
        let g = match (&id, &name) {
            (Some(id), _) => get_owned(tx, &account, id)?,
            // By name: groups of the public cloud only (in a Net, names are per Net: use the ID).
            (None, Some(n)) => sg_store::get_by_name(tx, &account, None, n)?.ok_or_else(|| {
                ApiError::not_found(ErrorCode::NoSuchSecurityGroup, "security group", &format!("named {n:?} in the public cloud"))
            })?,
            (None, None) => unreachable!("checked above"),
        };
        if let (Some(_), Some(n)) = (&id, &name) {
            if g.name != *n {
                return Err(ApiError::invalid_value(format!("the security group {} is named {:?}, not {n:?}", g.security_group_id, g.name)));
            }
        }
        if g.is_default() {
            return Err(ApiError::new(
                ErrorCode::ReservedGroup,
                format!(
                    "{} is the default security group of {}; it cannot be deleted{}",
                    g.security_group_id,
                    scope_name(g.net_id.as_ref()),
                    if g.net_id.is_some() { " (it goes with its Net)" } else { "" }
                ),
            ));
        }
        let users = sg_store::referencing_groups(tx, &g.security_group_id)?;
        if !users.is_empty() {
            let own: Vec<String> = users.iter().filter(|(_, a)| *a == account).map(|(id, _)| id.to_string()).collect();
            let foreign = users.len() - own.len();
            let mut by = Vec::new();
            if !own.is_empty() {
                by.push(format!("rules of {}", own.join(", ")));
            }
            if foreign > 0 {
                by.push(format!("rules of {foreign} security group(s) of other accounts"));
            }
            return Err(ApiError::new(
                ErrorCode::ResourceConflict,
                format!("the security group {} is in use: it is the peer of {}; delete those rules first", g.security_group_id, by.join(" and ")),
            ));
        }
        let members = socle_store::nics::members_of_group(tx, &g.security_group_id)?;
        if !members.is_empty() {
            let names: Vec<String> = members.iter().map(|n| n.to_string()).collect();
            return Err(ApiError::new(
                ErrorCode::ResourceConflict,
                format!("the security group {} is in use by the NIC(s) {}; change or delete them first", g.security_group_id, names.join(", ")),
            ));
        }
        tag_store::delete_all_for_resource(tx, g.security_group_id.as_str())?;
        sg_store::delete_group(tx, &g.security_group_id)?;
        Ok(())
    })
    .await?;
    Ok(DeleteSecurityGroupResponse::default())
}

pub async fn create_security_group_rule(
    cloud: &Arc<Cloud>,
    caller: &Caller,
    req: CreateSecurityGroupRuleRequest,
) -> Result<CreateSecurityGroupRuleResponse, ApiError> {
    let id = SecurityGroupId::parse(&req.security_group_id)?;
    let flow = parse_flow(&req.flow)?;
    let specs = parse_rule_fields(&RuleFields {
        protocol: req.ip_protocol.as_deref(),
        from: req.from_port_range,
        to: req.to_port_range,
        ip_range: req.ip_range.as_deref(),
        group: req.security_group_name_to_link.as_deref(),
        group_account: req.security_group_account_id_to_link.as_deref(),
        rules: req.rules.as_deref(),
        group_param: "SecurityGroupNameToLink",
        account_param: "SecurityGroupAccountIdToLink",
    })?;
    let account = caller.account_id.clone();
    let view = write(cloud, req.dry_run, move |tx| {
        ensure_default_group(tx, &account, None)?;
        let g = get_owned(tx, &account, &id)?;
        let keys = resolve_rules(tx, &account, &g, flow, &specs)?;
        let mut seen = HashSet::new();
        for k in &keys {
            if !seen.insert(k) {
                return Err(ApiError::new(ErrorCode::DuplicateRule, format!("the request gives the rule {} twice", describe(k))));
            }
            if sg_store::find_rule(tx, &id, k)?.is_some() {
                return Err(ApiError::new(ErrorCode::DuplicateRule, format!("{id} already has the rule {}", describe(k))));
            }
        }
        let count = sg_store::count_rules(tx, &id, flow)?;
        if count + keys.len() as i64 > MAX_RULES_PER_FLOW {
            return Err(ApiError::new(
                ErrorCode::TooManySecurityGroupRules,
                format!(
                    "{id} would have {} {flow} rules; the limit is {MAX_RULES_PER_FLOW} (each IP range or group counts as one)",
                    count + keys.len() as i64
                ),
            ));
        }
        let now = now_iso();
        for k in &keys {
            sg_store::insert_rule(tx, &id, &SecurityGroupRuleId::generate(), k, &now).map_err(|e| {
                if e.is_unique_violation() {
                    ApiError::new(ErrorCode::DuplicateRule, format!("{id} already has the rule {}", describe(k)))
                } else {
                    e.into()
                }
            })?;
        }
        load_view(tx, &g)
    })
    .await?;
    if is_dry_run(req.dry_run) {
        return Ok(CreateSecurityGroupRuleResponse::default());
    }
    cloud.network_changed();
    Ok(CreateSecurityGroupRuleResponse { security_group: Some(view), ..Default::default() })
}

pub async fn delete_security_group_rule(
    cloud: &Arc<Cloud>,
    caller: &Caller,
    req: DeleteSecurityGroupRuleRequest,
) -> Result<DeleteSecurityGroupRuleResponse, ApiError> {
    let id = SecurityGroupId::parse(&req.security_group_id)?;
    let flow = parse_flow(&req.flow)?;
    let specs = parse_rule_fields(&RuleFields {
        protocol: req.ip_protocol.as_deref(),
        from: req.from_port_range,
        to: req.to_port_range,
        ip_range: req.ip_range.as_deref(),
        group: req.security_group_name_to_unlink.as_deref(),
        group_account: req.security_group_account_id_to_unlink.as_deref(),
        rules: req.rules.as_deref(),
        group_param: "SecurityGroupNameToUnlink",
        account_param: "SecurityGroupAccountIdToUnlink",
    })?;
    let account = caller.account_id.clone();
    let view = write(cloud, req.dry_run, move |tx| {
        ensure_default_group(tx, &account, None)?;
        let g = get_owned(tx, &account, &id)?;
        let keys = resolve_rules(tx, &account, &g, flow, &specs)?;
        let mut found = Vec::with_capacity(keys.len());
        for k in &keys {
            let rule = sg_store::find_rule(tx, &id, k)?.ok_or_else(|| {
                ApiError::new(ErrorCode::NoSuchSecurityGroupRule, format!("{id} has no rule {}", describe(k)))
            })?;
            found.push(rule);
        }
        for rule in &found {
            sg_store::delete_rule(tx, rule)?;
        }
        load_view(tx, &g)
    })
    .await?;
    if is_dry_run(req.dry_run) {
        return Ok(DeleteSecurityGroupRuleResponse::default());
    }
    cloud.network_changed();
    Ok(DeleteSecurityGroupRuleResponse { security_group: Some(view), ..Default::default() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocols_are_normalized() {
        for (given, want) in [("-1", "-1"), ("all", "-1"), ("ALL", "-1"), ("tcp", "tcp"), ("TCP", "tcp"), ("6", "tcp"),
            ("udp", "udp"), ("17", "udp"), ("icmp", "icmp"), ("1", "icmp")] {
            assert_eq!(normalize_protocol(given).unwrap(), want, "{given}");
        }
        for bad in ["", "gre", "47", "tcp6", "0", "-2"] {
            assert_eq!(normalize_protocol(bad).unwrap_err().code(), "4053", "{bad}");
        }
    }

    #[test]
    fn ports_per_protocol() {
        assert_eq!(check_ports("tcp", Some(22), Some(22)).unwrap(), (Some(22), Some(22)));
        assert_eq!(check_ports("udp", Some(0), Some(65535)).unwrap(), (Some(0), Some(65535)));
        assert_eq!(check_ports("tcp", Some(-1), Some(22)).unwrap_err().code(), "4064");
        assert_eq!(check_ports("tcp", Some(1), Some(65536)).unwrap_err().code(), "4021");
        assert_eq!(check_ports("tcp", Some(80), Some(79)).unwrap_err().code(), "4051");
        assert_eq!(check_ports("tcp", None, Some(22)).unwrap_err().code(), "7000");
        assert_eq!(check_ports("udp", Some(53), None).unwrap_err().code(), "7000");
        // -1 ignores ports entirely.
        assert_eq!(check_ports("-1", Some(5), Some(1)).unwrap(), (None, None));
        assert_eq!(check_ports("-1", None, None).unwrap(), (None, None));
        // icmp: type and code, -1 for any.
        assert_eq!(check_ports("icmp", None, None).unwrap(), (Some(-1), Some(-1)));
        assert_eq!(check_ports("icmp", Some(8), Some(0)).unwrap(), (Some(8), Some(0)));
        assert_eq!(check_ports("icmp", Some(3), Some(-1)).unwrap(), (Some(3), Some(-1)));
        assert_eq!(check_ports("icmp", Some(256), Some(0)).unwrap_err().code(), "4064");
        assert_eq!(check_ports("icmp", Some(0), Some(300)).unwrap_err().code(), "4021");
        assert_eq!(check_ports("icmp", Some(-1), Some(4)).unwrap_err().code(), "4051");
    }

    #[test]
    fn cidrs() {
        for ok in ["10.0.0.0/8", "0.0.0.0/0", "192.168.1.7/32", "172.16.0.0/12", "10.1.2.0/24"] {
            assert_eq!(parse_cidr(ok).unwrap(), ok);
        }
        for bad in ["10.0.0.0", "10.0.0.0/33", "10.0.0/8", "10.0.0.0/", "/8", "10.0.0.0/08", "10.0.0.0/-1",
            "::/0", "10.0.0.256/32", "010.0.0.0/8", " 10.0.0.0/8", "10.0.0.0/8 ", "a.b.c.d/8", ""] {
            assert_eq!(parse_cidr(bad).unwrap_err().code(), "4047", "{bad}");
        }
        let e = parse_cidr("10.0.0.1/8").unwrap_err();
        assert_eq!(e.code(), "4047");
        assert!(e.details.contains("10.0.0.0/8") && e.details.contains("10.0.0.1/32"), "{}", e.details);
    }

    #[test]
    fn names_and_descriptions() {
        check_name("web servers (prod) #1").unwrap();
        check_name(&"a".repeat(255)).unwrap();
        assert_eq!(check_name("").unwrap_err().code(), "4106");
        assert_eq!(check_name(&"a".repeat(256)).unwrap_err().code(), "4106");
        assert_eq!(check_name("sg-web").unwrap_err().code(), "4047");
        assert_eq!(check_name("SG-web").unwrap_err().code(), "4047");
        assert_eq!(check_name("tab\there").unwrap_err().code(), "4047");
        assert_eq!(check_name("quote'").unwrap_err().code(), "4047");
        assert_eq!(check_name("default").unwrap_err().code(), "9051");
        check_name("Default").unwrap();
        check_description("Serveurs web, accès équipe").unwrap();
        check_description("it's \"fine\" ~ ?").unwrap();
        assert_eq!(check_description("").unwrap_err().code(), "4106");
        assert_eq!(check_description("line\nbreak").unwrap_err().code(), "4047");
        assert_eq!(check_description("emoji 🙂").unwrap_err().code(), "4047");
    }

    #[test]
    fn flows() {
        assert_eq!(parse_flow("Inbound").unwrap(), "inbound");
        assert_eq!(parse_flow("outbound").unwrap(), "outbound");
        assert_eq!(parse_flow("Ingress").unwrap_err().code(), "4047");
    }

    fn fields<'a>() -> RuleFields<'a> {
        RuleFields {
            protocol: None,
            from: None,
            to: None,
            ip_range: None,
            group: None,
            group_account: None,
            rules: None,
            group_param: "SecurityGroupNameToLink",
            account_param: "SecurityGroupAccountIdToLink",
        }
    }

    #[test]
    fn single_rule_form() {
        let specs = parse_rule_fields(&RuleFields { protocol: Some("6"), from: Some(22), to: Some(22), ip_range: Some("10.0.0.0/8"), ..fields() }).unwrap();
        assert_eq!(specs, vec![RuleSpec { protocol: "tcp", from: Some(22), to: Some(22), source: Source::Range("10.0.0.0/8".into()) }]);
        // The protocol defaults to -1.
        let specs = parse_rule_fields(&RuleFields { group: Some("web"), ..fields() }).unwrap();
        assert_eq!(specs[0].protocol, "-1");
        assert_eq!(specs[0].source, Source::Group { account: None, id: None, name: Some("web".into()) });
        let specs = parse_rule_fields(&RuleFields { group: Some("sg-0000000a"), group_account: Some("123456789012"), ..fields() }).unwrap();
        assert_eq!(
            specs[0].source,
            Source::Group { account: Some("123456789012".into()), id: Some(SecurityGroupId::parse("sg-0000000a").unwrap()), name: None }
        );
        assert_eq!(parse_rule_fields(&fields()).unwrap_err().code(), "7000");
        assert_eq!(parse_rule_fields(&RuleFields { ip_range: Some("1.2.3.0/24"), group: Some("x"), ..fields() }).unwrap_err().code(), "4047");
        assert_eq!(parse_rule_fields(&RuleFields { group: Some("sg-zz"), ..fields() }).unwrap_err().code(), "4105");
        assert_eq!(parse_rule_fields(&RuleFields { group: Some("x"), group_account: Some("12"), ..fields() }).unwrap_err().code(), "4047");
        assert_eq!(parse_rule_fields(&RuleFields { ip_range: Some("1.2.3.4/24"), ..fields() }).unwrap_err().code(), "4047");
        assert_eq!(parse_rule_fields(&RuleFields { protocol: Some("tcp"), ip_range: Some("1.2.3.0/24"), ..fields() }).unwrap_err().code(), "7000");
    }

    #[test]
    fn rules_form_expands_one_spec_per_source() {
        let rules = vec![
            SecurityGroupRule {
                ip_protocol: Some("tcp".into()),
                from_port_range: Some(80),
                to_port_range: Some(443),
                ip_ranges: Some(vec!["10.0.0.0/8".into(), "192.168.0.0/16".into()]),
                security_groups_members: Some(vec![SecurityGroupsMember { security_group_name: Some("web".into()), ..Default::default() }]),
                ..Default::default()
            },
            SecurityGroupRule { ip_protocol: Some("icmp".into()), ip_ranges: Some(vec!["0.0.0.0/0".into()]), ..Default::default() },
        ];
        let specs = parse_rule_fields(&RuleFields { rules: Some(&rules), ..fields() }).unwrap();
        assert_eq!(specs.len(), 4);
        assert!(specs[..3].iter().all(|s| s.protocol == "tcp" && s.from == Some(80) && s.to == Some(443)));
        assert_eq!(specs[3], RuleSpec { protocol: "icmp", from: Some(-1), to: Some(-1), source: Source::Range("0.0.0.0/0".into()) });
        // Rules and the single form do not mix; an empty rule is refused.
        assert_eq!(parse_rule_fields(&RuleFields { rules: Some(&rules), ip_range: Some("1.0.0.0/8"), ..fields() }).unwrap_err().code(), "4047");
        let empty = vec![SecurityGroupRule { ip_protocol: Some("-1".into()), ..Default::default() }];
        assert_eq!(parse_rule_fields(&RuleFields { rules: Some(&empty), ..fields() }).unwrap_err().code(), "7000");
        assert_eq!(parse_rule_fields(&RuleFields { rules: Some(&[]), ..fields() }).unwrap_err().code(), "7000");
        let bad_member = vec![SecurityGroupRule {
            security_groups_members: Some(vec![SecurityGroupsMember { security_group_id: Some("web".into()), ..Default::default() }]),
            ..Default::default()
        }];
        assert_eq!(parse_rule_fields(&RuleFields { rules: Some(&bad_member), ..fields() }).unwrap_err().code(), "4104");
    }

    /// A store with one Net of `account` (the nets table is the Nets module's; a
    /// bare row is enough here).
    fn store_with_net(account: &AccountId) -> (tempfile::TempDir, socle_store::Store, NetId) {
        let dir = tempfile::tempdir().unwrap();
        let store = socle_store::Store::open(&dir.path().join("t.db")).unwrap();
        let net = NetId::generate();
        store
            .write_sync(|conn| {
                conn.execute(
                    "INSERT INTO nets (net_id, account_id, ip_range, state, vni, created_at)
                     VALUES (?1, ?2, '10.0.0.0/16', 'available', 1, ?3)",
                    [net.as_str(), account.as_str(), &now_iso()],
                )
            })
            .unwrap();
        (dir, store, net)
    }

    #[test]
    fn default_groups_of_nets_and_their_deletion() {
        let account = AccountId::from_trusted("111111111111".into());
        let (_dir, store, net) = store_with_net(&account);
        store
            .write_sync(|conn| -> Result<(), ApiError> {
                let public = ensure_default_group(conn, &account, None)?;
                let in_net = ensure_default_group(conn, &account, Some(&net))?;
                assert_ne!(public, in_net);
                assert_eq!(ensure_default_group(conn, &account, Some(&net))?, in_net, "idempotent");
                assert_eq!(ensure_default_group(conn, &account, None)?, public, "idempotent");
                let g = get_owned(conn, &account, &in_net)?;
                assert_eq!((g.net_id.as_ref(), g.name.as_str()), (Some(&net), "default"));
                let view = load_view(conn, &g)?;
                let inbound = view.inbound_rules.unwrap();
                assert_eq!(inbound.len(), 1);
                assert_eq!(inbound[0].security_groups_members.as_ref().unwrap()[0].security_group_id.as_deref(), Some(in_net.as_str()));
                assert_eq!(view.outbound_rules.unwrap()[0].ip_ranges, Some(vec!["0.0.0.0/0".to_string()]));

                // Peers must share the network scope.
                let web = insert_new_group(conn, &account, Some(&net), "web", "d")?;
                let public_group = get_owned(conn, &account, &public)?;
                let e = resolve_peer(conn, &account, &public_group, None, Some(&web.security_group_id), None).unwrap_err();
                assert_eq!(e.code(), "4047");
                assert!(e.details.contains("same Net"), "{}", e.details);
                assert_eq!(resolve_peer(conn, &account, &web, None, None, Some("default"))?.security_group_id, in_net);
                // By name, the lookup stays in the target's Net.
                assert_eq!(resolve_peer(conn, &account, &public_group, None, None, Some("default"))?.security_group_id, public);
                // Another account cannot reach a Net's group even by ID and account.
                let stranger = AccountId::from_trusted("222222222222".into());
                let theirs = ensure_default_group(conn, &stranger, None)?;
                let theirs_row = get_owned(conn, &stranger, &theirs)?;
                let e = resolve_peer(conn, &stranger, &theirs_row, Some(account.as_str()), Some(&web.security_group_id), None).unwrap_err();
                assert_eq!(e.code(), "5020");

                // A Net with a group of its own cannot lose its groups; with only
                // its default one, that one goes (rules and tags with it).
                let e = delete_groups_of_net(conn, &net).unwrap_err();
                assert_eq!(e.code(), "9066");
                assert!(e.details.contains(web.security_group_id.as_str()), "{}", e.details);
                assert!(get_owned(conn, &account, &in_net).is_ok());
                sg_store::delete_group(conn, &web.security_group_id)?;
                delete_groups_of_net(conn, &net)?;
                assert!(sg_store::list_in_net(conn, &net)?.is_empty());
                assert!(sg_store::rules_of(conn, &[in_net.clone()])?.is_empty());
                assert!(get_owned(conn, &account, &public).is_ok(), "the public default stays");
                Ok(())
            })
            .unwrap();
    }

    #[test]
    fn rule_views_group_sources_per_protocol_and_ports() {
        let owner = AccountId::from_trusted("111111111111".into());
        let other = AccountId::from_trusted("222222222222".into());
        let g = SecurityGroupId::from_trusted("sg-00000001".into());
        let row = |proto: &str, ports: Option<(i64, i64)>, ip: Option<&str>, peer: Option<(&str, &AccountId)>| RuleRow {
            rule_id: SecurityGroupRuleId::generate(),
            security_group_id: g.clone(),
            flow: "inbound".into(),
            protocol: proto.into(),
            from_port: ports.map(|p| p.0),
            to_port: ports.map(|p| p.1),
            ip_range: ip.map(Into::into),
            peer_group_id: peer.map(|p| SecurityGroupId::from_trusted(p.0.into())),
            peer_account_id: peer.map(|p| p.1.clone()),
            peer_name: peer.map(|_| "peer".into()),
            peer_net_id: None,
            created_at: String::new(),
        };
        let rows = [
            row("tcp", Some((22, 22)), Some("10.0.0.0/8"), None),
            row("-1", None, None, Some(("sg-00000002", &owner))),
            row("tcp", Some((22, 22)), Some("192.168.0.0/16"), None),
            row("tcp", Some((22, 22)), None, Some(("sg-00000003", &other))),
        ];
        let refs: Vec<&RuleRow> = rows.iter().collect();
        let views = rule_views(&refs, &owner);
        assert_eq!(views.len(), 2);
        assert_eq!(views[0].ip_protocol.as_deref(), Some("tcp"));
        assert_eq!(views[0].ip_ranges, Some(vec!["10.0.0.0/8".to_string(), "192.168.0.0/16".to_string()]));
        let m = &views[0].security_groups_members.as_ref().unwrap()[0];
        assert_eq!(m.security_group_id.as_deref(), Some("sg-00000003"));
        assert_eq!(m.security_group_name, None, "another account's group name is not shown");
        assert_eq!((views[1].from_port_range, views[1].to_port_range), (Some(-1), Some(-1)));
        assert_eq!(views[1].security_groups_members.as_ref().unwrap()[0].security_group_name.as_deref(), Some("peer"));
    }
}
