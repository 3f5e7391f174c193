"""Security groups through the official SDK: CreateSecurityGroup, ReadSecurityGroups
(filters, pagination), DeleteSecurityGroup, CreateSecurityGroupRule and
DeleteSecurityGroupRule (single-rule form and Rules, IP ranges and peer groups), the
lazily made `default` group, DryRun, refused inputs (names, duplicates, ports,
protocols, CIDRs), groups in use, tags, and other accounts: another account's group
answers exactly like an absent one, and can be linked as a peer only by ID + account.

Accounts A and B are fresh (no VMs); C is only used to watch the default group appear."""

import random
import re
from types import SimpleNamespace

import pytest

from socle_lib import (absent_id, account_id, call_error, check_filter, expect_error, read_all,
                       read_pages, same_as_absent, unique)

SG_ID_RE = re.compile(r"^sg-[0-9a-f]{8}$")
ALL_OUT = ("-1", -1, -1, ("0.0.0.0/0",), ())


@pytest.fixture(scope="module")
def a(new_account):
    acct = new_account("sg-a")
    acct.id = account_id(acct.gw)
    return acct


@pytest.fixture(scope="module")
def b(new_account):
    acct = new_account("sg-b")
    acct.id = account_id(acct.gw)
    return acct


# ------------------------------------------------------------------ helpers


def groups(gw, **filters) -> list[dict]:
    return read_all(gw.ReadSecurityGroups, "SecurityGroups", filters)


def group(gw, sg_id: str) -> dict | None:
    found = gw.ReadSecurityGroups(Filters={"SecurityGroupIds": [sg_id]})["SecurityGroups"]
    assert len(found) <= 1, found
    return found[0] if found else None


def create(gw, name: str | None = None, description: str = "test group", **kw) -> dict:
    sg = gw.CreateSecurityGroup(SecurityGroupName=name or unique("grp"), Description=description,
                                **kw)["SecurityGroup"]
    assert SG_ID_RE.match(sg["SecurityGroupId"]), sg
    return sg


def rules(sg: dict, flow: str) -> set:
    """The rules of one flow as comparable tuples:
    (protocol, from, to, sorted ranges, sorted member group IDs)."""
    out = set()
    for r in sg.get(f"{flow}Rules") or []:
        out.add((r.get("IpProtocol"), r.get("FromPortRange"), r.get("ToPortRange"),
                 tuple(sorted(r.get("IpRanges") or [])),
                 tuple(sorted(m["SecurityGroupId"] for m in r.get("SecurityGroupsMembers") or []))))
    return out


def default_of(gw) -> dict:
    found = [g for g in groups(gw, SecurityGroupNames=["default"]) if not g.get("NetId")]
    assert len(found) == 1, f"expected one public-cloud default group, got {found}"
    return found[0]


def add_rule(gw, sg_id: str, flow: str = "Inbound", **kw) -> dict:
    return gw.CreateSecurityGroupRule(SecurityGroupId=sg_id, Flow=flow, **kw)["SecurityGroup"]


def del_rule(gw, sg_id: str, flow: str = "Inbound", **kw) -> dict:
    return gw.DeleteSecurityGroupRule(SecurityGroupId=sg_id, Flow=flow, **kw)["SecurityGroup"]


def raw_fn(acct, operation: str):
    """An SDK-like call through the raw signed client, for what the SDK refuses to
    send (osc-sdk-python 0.42.0 refuses DryRun on the security-group operations,
    although the API spec defines it): raises HTTPError on errors."""
    def call(**params):
        resp = acct.raw.post(operation, params)
        resp.raise_for_status()
        return resp.json()
    return call


def other_account_id(*taken: str) -> str:
    while True:
        candidate = f"{random.randrange(10 ** 11, 10 ** 12)}"
        if candidate not in taken:
            return candidate


# ------------------------------------------------------------ default group


def test_default_group_is_made_once_on_first_read(new_account):
    c = new_account("sg-c")
    me = account_id(c.gw)
    listed = c.gw.ReadSecurityGroups()["SecurityGroups"]
    assert [g["SecurityGroupName"] for g in listed] == ["default"], listed
    d = listed[0]
    assert SG_ID_RE.match(d["SecurityGroupId"])
    assert d["Description"] == "default security group"
    assert d["AccountId"] == me
    assert not d.get("NetId")
    # Inbound: everything from members of the group itself; outbound: everything.
    assert d["InboundRules"] == [{
        "IpProtocol": "-1", "FromPortRange": -1, "ToPortRange": -1, "IpRanges": [],
        "SecurityGroupsMembers": [{"AccountId": me, "SecurityGroupId": d["SecurityGroupId"],
                                   "SecurityGroupName": "default"}],
    }], d["InboundRules"]
    assert rules(d, "Outbound") == {ALL_OUT}
    # Idempotent: later calls see the same group, never a second one.
    create(c.gw)
    again = c.gw.ReadSecurityGroups(Filters={"SecurityGroupNames": ["default"]})["SecurityGroups"]
    assert again == [d]


def test_default_group_is_made_by_create_too(new_account):
    c = new_account("sg-c2")
    sg = create(c.gw)
    names = sorted(g["SecurityGroupName"] for g in groups(c.gw))
    assert names == sorted(["default", sg["SecurityGroupName"]])


def test_default_group_cannot_be_deleted_or_recreated(a):
    d = default_of(a.gw)
    for kw in ({"SecurityGroupId": d["SecurityGroupId"]}, {"SecurityGroupName": "default"}):
        err = expect_error(a.gw.DeleteSecurityGroup, status=400, code="9051", type_="ResourceConflict", **kw)
        assert "default" in err.details, err
    expect_error(a.gw.CreateSecurityGroup, SecurityGroupName="default", Description="x",
                 status=400, code="9051")
    assert default_of(a.gw) == d
    # Its rules can be changed like any other's.
    add_rule(a.gw, d["SecurityGroupId"], IpProtocol="tcp", FromPortRange=22, ToPortRange=22,
             IpRange="10.9.0.0/16")
    after = del_rule(a.gw, d["SecurityGroupId"], IpProtocol="tcp", FromPortRange=22, ToPortRange=22,
                     IpRange="10.9.0.0/16")
    assert after == default_of(a.gw) == d


# --------------------------------------------------------------- create/read


def test_create_returns_the_group_as_read_shows_it(a):
    name = unique("web")
    sg = create(a.gw, name, "Serveurs web, accès équipe")
    assert sg["SecurityGroupName"] == name
    assert sg["Description"] == "Serveurs web, accès équipe"
    assert sg["AccountId"] == a.id
    assert not sg.get("NetId")
    assert sg["InboundRules"] == []
    assert rules(sg, "Outbound") == {ALL_OUT}
    assert sg.get("Tags") == []
    assert group(a.gw, sg["SecurityGroupId"]) == sg


@pytest.mark.parametrize("name,code", [
    ("sg-web", "4047"),
    ("SG-web", "4047"),
    ("", "4106"),
    ("x" * 256, "4106"),
    ("tab\there", "4047"),
    ("quote'", "4047"),
])
def test_bad_names_are_refused(a, name, code):
    before = groups(a.gw)
    expect_error(a.gw.CreateSecurityGroup, SecurityGroupName=name, Description="d", status=400, code=code)
    assert groups(a.gw) == before


@pytest.mark.parametrize("description,code", [("", "4106"), ("d" * 256, "4106"), ("line\nbreak", "4047")])
def test_bad_descriptions_are_refused(a, description, code):
    before = groups(a.gw)
    expect_error(a.gw.CreateSecurityGroup, SecurityGroupName=unique("d"), Description=description,
                 status=400, code=code)
    assert groups(a.gw) == before


def test_missing_description_is_refused(a):
    resp = a.raw.post("CreateSecurityGroup", {"SecurityGroupName": unique("nodesc")})
    assert resp.status_code == 400, resp.text
    assert resp.json()["Errors"][0]["Code"] == "7000", resp.text
    assert "Description" in resp.json()["Errors"][0]["Details"], resp.text


def test_duplicate_name_is_a_conflict(a, b):
    name = unique("dup")
    sg = create(a.gw, name)
    err = expect_error(a.gw.CreateSecurityGroup, SecurityGroupName=name, Description="again",
                       status=409, code="9008", type_="ResourceConflict")
    assert name in err.details
    assert [g["SecurityGroupId"] for g in groups(a.gw, SecurityGroupNames=[name])] == [sg["SecurityGroupId"]]
    # Names are per account: B may use the same one.
    create(b.gw, name)
    # A dry run checks the name too.
    expect_error(raw_fn(a, "CreateSecurityGroup"), SecurityGroupName=name, Description="again", DryRun=True,
                 status=409, code="9008")


def test_net_id_must_be_an_existing_net_of_the_caller(a):
    before = groups(a.gw)
    expect_error(a.gw.CreateSecurityGroup, SecurityGroupName=unique("n"), Description="d",
                 NetId=absent_id("vpc"), status=400, code="5065", type_="InvalidResource")
    expect_error(a.gw.CreateSecurityGroup, SecurityGroupName=unique("n"), Description="d",
                 NetId="vpc-zz", status=400, code="4105")
    expect_error(a.gw.CreateSecurityGroup, SecurityGroupName=unique("n"), Description="d",
                 NetId="subnet-12345678", status=400, code="4104")
    assert groups(a.gw) == before


# ------------------------------------------------------------------- DryRun


def test_dry_run_changes_nothing(a):
    before = groups(a.gw)
    name = unique("dry")
    resp = raw_fn(a, "CreateSecurityGroup")(SecurityGroupName=name, Description="d", DryRun=True)
    assert not resp.get("SecurityGroup"), resp
    assert groups(a.gw) == before

    sg = create(a.gw)
    sg_id = sg["SecurityGroupId"]
    resp = raw_fn(a, "CreateSecurityGroupRule")(SecurityGroupId=sg_id, Flow="Inbound", IpProtocol="tcp",
                                        FromPortRange=80, ToPortRange=80, IpRange="0.0.0.0/0", DryRun=True)
    assert not resp.get("SecurityGroup"), resp
    assert group(a.gw, sg_id) == sg
    resp = raw_fn(a, "DeleteSecurityGroupRule")(SecurityGroupId=sg_id, Flow="Outbound", IpProtocol="-1",
                                        IpRange="0.0.0.0/0", DryRun=True)
    assert not resp.get("SecurityGroup"), resp
    assert group(a.gw, sg_id) == sg
    raw_fn(a, "DeleteSecurityGroup")(SecurityGroupId=sg_id, DryRun=True)
    assert group(a.gw, sg_id) == sg
    # A dry run still answers what the real call would.
    expect_error(raw_fn(a, "DeleteSecurityGroupRule"), SecurityGroupId=sg_id, Flow="Inbound", IpProtocol="tcp",
                 FromPortRange=80, ToPortRange=80, IpRange="0.0.0.0/0", DryRun=True, status=400, code="5044")
    expect_error(raw_fn(a, "DeleteSecurityGroup"), SecurityGroupId=absent_id("sg"), DryRun=True, status=400,
                 code="5020")
    a.gw.DeleteSecurityGroup(SecurityGroupId=sg_id)
    assert group(a.gw, sg_id) is None


# -------------------------------------------------------------------- rules


def test_single_rules_are_grouped_per_protocol_and_ports(a):
    sg_id = create(a.gw)["SecurityGroupId"]
    add_rule(a.gw, sg_id, IpProtocol="tcp", FromPortRange=22, ToPortRange=22, IpRange="10.0.0.0/8")
    add_rule(a.gw, sg_id, IpProtocol="udp", FromPortRange=53, ToPortRange=53, IpRange="10.0.0.0/8")
    add_rule(a.gw, sg_id, IpProtocol="icmp", FromPortRange=8, ToPortRange=-1, IpRange="0.0.0.0/0")
    # Protocol numbers are normalised to names; the same ports gather their ranges.
    answer = add_rule(a.gw, sg_id, IpProtocol="6", FromPortRange=22, ToPortRange=22, IpRange="192.168.0.0/16")
    expected = {
        ("tcp", 22, 22, ("10.0.0.0/8", "192.168.0.0/16"), ()),
        ("udp", 53, 53, ("10.0.0.0/8",), ()),
        ("icmp", 8, -1, ("0.0.0.0/0",), ()),
    }
    assert rules(answer, "Inbound") == expected
    assert len(answer["InboundRules"]) == 3, answer["InboundRules"]
    assert rules(answer, "Outbound") == {ALL_OUT}
    assert group(a.gw, sg_id) == answer, "CreateSecurityGroupRule and ReadSecurityGroups disagree"


def test_all_protocols_ignores_ports(a):
    sg_id = create(a.gw)["SecurityGroupId"]
    answer = add_rule(a.gw, sg_id, IpProtocol="all", FromPortRange=5, ToPortRange=1, IpRange="10.1.0.0/16")
    assert rules(answer, "Inbound") == {("-1", -1, -1, ("10.1.0.0/16",), ())}
    # The same rule with -1 and no ports is a duplicate.
    expect_error(a.gw.CreateSecurityGroupRule, SecurityGroupId=sg_id, Flow="Inbound", IpProtocol="-1",
                 IpRange="10.1.0.0/16", status=409, code="9005")


def test_rules_form_adds_everything_or_nothing(a):
    sg = create(a.gw)
    sg_id = sg["SecurityGroupId"]
    peer = create(a.gw)
    answer = add_rule(a.gw, sg_id, Rules=[
        {"IpProtocol": "tcp", "FromPortRange": 80, "ToPortRange": 443,
         "IpRanges": ["10.0.0.0/8", "172.16.0.0/12"],
         "SecurityGroupsMembers": [{"SecurityGroupId": peer["SecurityGroupId"]}]},
        {"IpProtocol": "icmp", "FromPortRange": -1, "ToPortRange": -1, "IpRanges": ["0.0.0.0/0"]},
    ])
    expected = {
        ("tcp", 80, 443, ("10.0.0.0/8", "172.16.0.0/12"), (peer["SecurityGroupId"],)),
        ("icmp", -1, -1, ("0.0.0.0/0",), ()),
    }
    assert rules(answer, "Inbound") == expected
    member = [r for r in answer["InboundRules"] if r["IpProtocol"] == "tcp"][0]["SecurityGroupsMembers"][0]
    assert member == {"AccountId": a.id, "SecurityGroupId": peer["SecurityGroupId"],
                      "SecurityGroupName": peer["SecurityGroupName"]}
    # One bad rule, or one already present: the call fails and adds nothing.
    for bad_rules, status, code in [
        ([{"IpProtocol": "udp", "FromPortRange": 1, "ToPortRange": 2, "IpRanges": ["10.0.0.0/8"]},
          {"IpProtocol": "tcp", "FromPortRange": 80, "ToPortRange": 443, "IpRanges": ["10.0.0.0/8"]}], 409, "9005"),
        ([{"IpProtocol": "udp", "FromPortRange": 1, "ToPortRange": 2, "IpRanges": ["10.0.0.0/8", "10.0.0.1/8"]}],
         400, "4047"),
        ([{"IpProtocol": "udp", "FromPortRange": 1, "ToPortRange": 2,
           "SecurityGroupsMembers": [{"SecurityGroupId": absent_id("sg")}]}], 400, "5020"),
        ([{"IpProtocol": "udp", "FromPortRange": 1, "ToPortRange": 2, "IpRanges": ["10.0.0.0/8"]},
          {"IpProtocol": "17", "FromPortRange": 1, "ToPortRange": 2, "IpRanges": ["10.0.0.0/8"]}], 409, "9005"),
    ]:
        expect_error(a.gw.CreateSecurityGroupRule, SecurityGroupId=sg_id, Flow="Inbound", Rules=bad_rules,
                     status=status, code=code)
        assert rules(group(a.gw, sg_id), "Inbound") == expected, bad_rules
    # Rules and the single-rule parameters do not mix.
    expect_error(a.gw.CreateSecurityGroupRule, SecurityGroupId=sg_id, Flow="Inbound", IpRange="10.0.0.0/8",
                 Rules=[{"IpProtocol": "-1", "IpRanges": ["10.0.0.0/8"]}], status=400, code="4047")


def test_duplicate_rule_is_a_conflict(a):
    sg_id = create(a.gw)["SecurityGroupId"]
    add_rule(a.gw, sg_id, IpProtocol="tcp", FromPortRange=443, ToPortRange=443, IpRange="0.0.0.0/0")
    before = group(a.gw, sg_id)
    for proto in ("tcp", "6", "TCP"):
        err = expect_error(a.gw.CreateSecurityGroupRule, SecurityGroupId=sg_id, Flow="Inbound", IpProtocol=proto,
                           FromPortRange=443, ToPortRange=443, IpRange="0.0.0.0/0",
                           status=409, code="9005", type_="ResourceConflict")
        assert "already has" in err.details and "443" in err.details, err
    # The default outbound rule is there already.
    expect_error(a.gw.CreateSecurityGroupRule, SecurityGroupId=sg_id, Flow="Outbound", IpProtocol="-1",
                 IpRange="0.0.0.0/0", status=409, code="9005")
    assert group(a.gw, sg_id) == before


@pytest.mark.parametrize("params,code,words", [
    ({"IpProtocol": "tcp", "FromPortRange": 80, "ToPortRange": 79, "IpRange": "10.0.0.0/8"}, "4051", "greater"),
    ({"IpProtocol": "tcp", "FromPortRange": 1, "ToPortRange": 70000, "IpRange": "10.0.0.0/8"}, "4021", "65535"),
    ({"IpProtocol": "udp", "FromPortRange": -5, "ToPortRange": 10, "IpRange": "10.0.0.0/8"}, "4064", "65535"),
    ({"IpProtocol": "tcp", "IpRange": "10.0.0.0/8"}, "7000", "FromPortRange"),
    ({"IpProtocol": "tcp", "FromPortRange": 22, "IpRange": "10.0.0.0/8"}, "7000", "ToPortRange"),
    ({"IpProtocol": "icmp", "FromPortRange": 300, "ToPortRange": 0, "IpRange": "10.0.0.0/8"}, "4064", "ICMP"),
    ({"IpProtocol": "icmp", "FromPortRange": -1, "ToPortRange": 3, "IpRange": "10.0.0.0/8"}, "4051", "ICMP"),
    ({"IpProtocol": "gre", "IpRange": "10.0.0.0/8"}, "4053", "tcp, udp, icmp"),
    ({"IpProtocol": "47", "IpRange": "10.0.0.0/8"}, "4053", "tcp, udp, icmp"),
    ({"IpProtocol": "-1", "IpRange": "10.0.0.1/8"}, "4047", "10.0.0.0/8"),
    ({"IpProtocol": "-1", "IpRange": "10.0.0.0/33"}, "4047", "CIDR"),
    ({"IpProtocol": "-1", "IpRange": "10.0.0.0"}, "4047", "CIDR"),
    ({"IpProtocol": "-1", "IpRange": "not-a-range"}, "4047", "CIDR"),
    ({"IpProtocol": "-1", "IpRange": "2001:db8::/32"}, "4047", "IPv4"),
    ({"IpProtocol": "-1"}, "7000", "IpRange"),
    ({"IpProtocol": "-1", "IpRange": "10.0.0.0/8", "SecurityGroupNameToLink": "default"}, "4047", "not both"),
    ({"IpProtocol": "-1", "SecurityGroupNameToLink": "default", "SecurityGroupAccountIdToLink": "12"}, "4047",
     "12 digits"),
])
def test_bad_rules_are_refused_clearly(a, params, code, words):
    sg_id = create(a.gw)["SecurityGroupId"]
    before = group(a.gw, sg_id)
    err = expect_error(a.gw.CreateSecurityGroupRule, SecurityGroupId=sg_id, Flow="Inbound", status=400,
                       code=code, **params)
    assert words in err.details, err
    assert group(a.gw, sg_id) == before


def test_bad_flow_and_group_ids(a):
    sg_id = create(a.gw)["SecurityGroupId"]
    expect_error(a.gw.CreateSecurityGroupRule, SecurityGroupId=sg_id, Flow="Sideways", IpRange="10.0.0.0/8",
                 status=400, code="4047")
    expect_error(a.gw.CreateSecurityGroupRule, SecurityGroupId="sg-zz", Flow="Inbound", IpRange="10.0.0.0/8",
                 status=400, code="4105")
    expect_error(a.gw.CreateSecurityGroupRule, SecurityGroupId="vol-12345678", Flow="Inbound",
                 IpRange="10.0.0.0/8", status=400, code="4104")
    expect_error(a.gw.CreateSecurityGroupRule, SecurityGroupId=absent_id("sg"), Flow="Inbound",
                 IpRange="10.0.0.0/8", status=400, code="5020", type_="InvalidResource")


def test_peer_groups_by_name_and_id(a):
    sg = create(a.gw)
    sg_id = sg["SecurityGroupId"]
    peer = create(a.gw)
    answer = add_rule(a.gw, sg_id, IpProtocol="tcp", FromPortRange=5432, ToPortRange=5432,
                      SecurityGroupNameToLink=peer["SecurityGroupName"])
    assert rules(answer, "Inbound") == {("tcp", 5432, 5432, (), (peer["SecurityGroupId"],))}
    # By ID (the parameter takes IDs too), with the caller's own account given.
    answer = add_rule(a.gw, sg_id, IpProtocol="tcp", FromPortRange=6379, ToPortRange=6379,
                      SecurityGroupNameToLink=peer["SecurityGroupId"], SecurityGroupAccountIdToLink=a.id)
    assert ("tcp", 6379, 6379, (), (peer["SecurityGroupId"],)) in rules(answer, "Inbound")
    # The same peer again is a duplicate, by name or by ID.
    expect_error(a.gw.CreateSecurityGroupRule, SecurityGroupId=sg_id, Flow="Inbound", IpProtocol="tcp",
                 FromPortRange=5432, ToPortRange=5432, SecurityGroupNameToLink=peer["SecurityGroupId"],
                 status=409, code="9005")
    # A group can name itself.
    answer = add_rule(a.gw, sg_id, IpProtocol="-1", SecurityGroupNameToLink=sg_id)
    assert ("-1", -1, -1, (), (sg_id,)) in rules(answer, "Inbound")
    # Unknown peers.
    expect_error(a.gw.CreateSecurityGroupRule, SecurityGroupId=sg_id, Flow="Inbound",
                 SecurityGroupNameToLink=unique("nobody"), status=400, code="5020")
    expect_error(a.gw.CreateSecurityGroupRule, SecurityGroupId=sg_id, Flow="Inbound",
                 SecurityGroupNameToLink=absent_id("sg"), status=400, code="5020")
    expect_error(a.gw.CreateSecurityGroupRule, SecurityGroupId=sg_id, Flow="Inbound",
                 Rules=[{"SecurityGroupsMembers": [{"SecurityGroupName": unique("nobody")}]}],
                 status=400, code="5020")


def test_outbound_rules_can_be_narrowed(a):
    sg_id = create(a.gw)["SecurityGroupId"]
    answer = add_rule(a.gw, sg_id, "Outbound", IpProtocol="tcp", FromPortRange=443, ToPortRange=443,
                      IpRange="0.0.0.0/0")
    assert rules(answer, "Outbound") == {ALL_OUT, ("tcp", 443, 443, ("0.0.0.0/0",), ())}
    answer = del_rule(a.gw, sg_id, "Outbound", IpProtocol="-1", IpRange="0.0.0.0/0")
    assert rules(answer, "Outbound") == {("tcp", 443, 443, ("0.0.0.0/0",), ())}
    assert answer["InboundRules"] == []
    assert group(a.gw, sg_id) == answer


def test_delete_rules(a):
    sg_id = create(a.gw)["SecurityGroupId"]
    peer = create(a.gw)
    add_rule(a.gw, sg_id, Rules=[
        {"IpProtocol": "tcp", "FromPortRange": 22, "ToPortRange": 22, "IpRanges": ["10.0.0.0/8", "10.1.0.0/16"]},
        {"IpProtocol": "udp", "FromPortRange": 53, "ToPortRange": 53,
         "SecurityGroupsMembers": [{"SecurityGroupName": peer["SecurityGroupName"]}]},
    ])
    # One source of an entry: the others stay.
    answer = del_rule(a.gw, sg_id, IpProtocol="6", FromPortRange=22, ToPortRange=22, IpRange="10.1.0.0/16")
    assert rules(answer, "Inbound") == {("tcp", 22, 22, ("10.0.0.0/8",), ()),
                                        ("udp", 53, 53, (), (peer["SecurityGroupId"],))}
    # A rule that is not there: a clear error, nothing removed (even with others that are).
    err = expect_error(a.gw.DeleteSecurityGroupRule, SecurityGroupId=sg_id, Flow="Inbound", IpProtocol="tcp",
                       FromPortRange=22, ToPortRange=22, IpRange="10.1.0.0/16", status=400, code="5044")
    assert "10.1.0.0/16" in err.details and sg_id in err.details, err
    expect_error(a.gw.DeleteSecurityGroupRule, SecurityGroupId=sg_id, Flow="Inbound", Rules=[
        {"IpProtocol": "tcp", "FromPortRange": 22, "ToPortRange": 22, "IpRanges": ["10.0.0.0/8"]},
        {"IpProtocol": "tcp", "FromPortRange": 23, "ToPortRange": 23, "IpRanges": ["10.0.0.0/8"]},
    ], status=400, code="5044")
    assert rules(group(a.gw, sg_id), "Inbound") == rules(answer, "Inbound")
    # The flow matters.
    expect_error(a.gw.DeleteSecurityGroupRule, SecurityGroupId=sg_id, Flow="Outbound", IpProtocol="tcp",
                 FromPortRange=22, ToPortRange=22, IpRange="10.0.0.0/8", status=400, code="5044")
    # Several at once, peers by name.
    answer = del_rule(a.gw, sg_id, Rules=[
        {"IpProtocol": "tcp", "FromPortRange": 22, "ToPortRange": 22, "IpRanges": ["10.0.0.0/8"]},
        {"IpProtocol": "udp", "FromPortRange": 53, "ToPortRange": 53,
         "SecurityGroupsMembers": [{"SecurityGroupName": peer["SecurityGroupName"]}]},
    ])
    assert answer["InboundRules"] == []
    assert group(a.gw, sg_id) == answer


# ------------------------------------------------------------------- delete


def test_delete_by_id_and_by_name(a):
    by_id = create(a.gw)
    by_name = create(a.gw)
    a.gw.DeleteSecurityGroup(SecurityGroupId=by_id["SecurityGroupId"])
    a.gw.DeleteSecurityGroup(SecurityGroupName=by_name["SecurityGroupName"])
    assert group(a.gw, by_id["SecurityGroupId"]) is None
    assert group(a.gw, by_name["SecurityGroupId"]) is None
    expect_error(a.gw.DeleteSecurityGroup, SecurityGroupId=by_id["SecurityGroupId"], status=400, code="5020")
    expect_error(a.gw.DeleteSecurityGroup, SecurityGroupName=by_name["SecurityGroupName"], status=400, code="5020")
    expect_error(a.gw.DeleteSecurityGroup, status=400, code="7000")
    # ID and name must agree.
    sg = create(a.gw)
    expect_error(a.gw.DeleteSecurityGroup, SecurityGroupId=sg["SecurityGroupId"],
                 SecurityGroupName=unique("other"), status=400, code="4047")
    assert group(a.gw, sg["SecurityGroupId"]) is not None


def test_delete_refused_while_peer_of_another_group(a):
    used = create(a.gw)
    user = create(a.gw)
    add_rule(a.gw, user["SecurityGroupId"], IpProtocol="tcp", FromPortRange=80, ToPortRange=80,
             SecurityGroupNameToLink=used["SecurityGroupId"])
    err = expect_error(a.gw.DeleteSecurityGroup, SecurityGroupId=used["SecurityGroupId"], status=400,
                       code="9029", type_="ResourceConflict")
    assert user["SecurityGroupId"] in err.details and "in use" in err.details, err
    assert group(a.gw, used["SecurityGroupId"]) is not None
    # A group that names only itself can go; so can the user (its rules go with it).
    add_rule(a.gw, used["SecurityGroupId"], SecurityGroupNameToLink=used["SecurityGroupId"])
    a.gw.DeleteSecurityGroup(SecurityGroupId=user["SecurityGroupId"])
    a.gw.DeleteSecurityGroup(SecurityGroupId=used["SecurityGroupId"])
    assert group(a.gw, used["SecurityGroupId"]) is None


# ------------------------------------------------------------- filters/pages


@pytest.fixture(scope="module")
def lab(a):
    """Groups with rules and tags to filter on."""
    tag_key = unique("tier")
    web = create(a.gw, unique("web"), "web tier")
    db = create(a.gw, unique("db"), "db tier")
    bare = create(a.gw, unique("bare"), "nothing")
    add_rule(a.gw, web["SecurityGroupId"], IpProtocol="tcp", FromPortRange=443, ToPortRange=443,
             IpRange="0.0.0.0/0")
    add_rule(a.gw, db["SecurityGroupId"], IpProtocol="tcp", FromPortRange=5432, ToPortRange=5432,
             SecurityGroupNameToLink=web["SecurityGroupName"])
    add_rule(a.gw, db["SecurityGroupId"], IpProtocol="udp", FromPortRange=53, ToPortRange=53,
             IpRange="10.0.0.0/8")
    add_rule(a.gw, db["SecurityGroupId"], "Outbound", IpProtocol="tcp", FromPortRange=25, ToPortRange=25,
             IpRange="192.168.0.0/16")
    del_rule(a.gw, bare["SecurityGroupId"], "Outbound", IpProtocol="-1", IpRange="0.0.0.0/0")
    a.gw.CreateTags(ResourceIds=[web["SecurityGroupId"]], Tags=[{"Key": tag_key, "Value": "front"}])
    a.gw.CreateTags(ResourceIds=[db["SecurityGroupId"]], Tags=[{"Key": tag_key, "Value": "back"}])
    return SimpleNamespace(web=web["SecurityGroupId"], db=db["SecurityGroupId"], bare=bare["SecurityGroupId"],
                           web_name=web["SecurityGroupName"], tag_key=tag_key)


def _has(flow, pred):
    return lambda g: any(pred(r) for r in g.get(f"{flow}Rules") or [])


def test_filters(a, lab):
    every = groups(a.gw)
    assert {lab.web, lab.db, lab.bare} <= {g["SecurityGroupId"] for g in every}
    fn = a.gw.ReadSecurityGroups

    def check(filters, pred, include=(), exclude=()):
        check_filter(fn, "SecurityGroups", "SecurityGroupId", every, filters, pred, include, exclude)

    check({"SecurityGroupIds": [lab.web, lab.bare]}, lambda g: g["SecurityGroupId"] in (lab.web, lab.bare),
          [lab.web, lab.bare], [lab.db])
    check({"SecurityGroupNames": [lab.web_name, "default"]},
          lambda g: g["SecurityGroupName"] in (lab.web_name, "default"), [lab.web], [lab.db])
    check({"Descriptions": ["db tier"]}, lambda g: g["Description"] == "db tier", [lab.db], [lab.web])
    check({"NetIds": [absent_id("vpc")]}, lambda g: False)
    check({"TagKeys": [lab.tag_key]}, lambda g: g["SecurityGroupId"] in (lab.web, lab.db), [lab.web, lab.db],
          [lab.bare])
    check({"TagValues": ["back"]}, lambda g: g["SecurityGroupId"] == lab.db, [lab.db], [lab.web])
    check({"Tags": [f"{lab.tag_key}=front"]}, lambda g: g["SecurityGroupId"] == lab.web, [lab.web], [lab.db])
    check({"InboundRuleProtocols": ["udp"]}, _has("Inbound", lambda r: r["IpProtocol"] == "udp"), [lab.db],
          [lab.web])
    check({"InboundRuleProtocols": ["6"]}, _has("Inbound", lambda r: r["IpProtocol"] == "tcp"),
          [lab.web, lab.db], [lab.bare])
    check({"InboundRuleIpRanges": ["0.0.0.0/0"]}, _has("Inbound", lambda r: "0.0.0.0/0" in r["IpRanges"]),
          [lab.web], [lab.db])
    check({"InboundRuleFromPortRanges": [5432]}, _has("Inbound", lambda r: r["FromPortRange"] == 5432),
          [lab.db], [lab.web])
    check({"InboundRuleToPortRanges": [443]}, _has("Inbound", lambda r: r["ToPortRange"] == 443),
          [lab.web], [lab.db])
    members = lambda g, key: {m.get(key) for r in g.get("InboundRules") or []
                              for m in r.get("SecurityGroupsMembers") or []}
    check({"InboundRuleSecurityGroupIds": [lab.web]}, lambda g: lab.web in members(g, "SecurityGroupId"),
          [lab.db], [lab.web])
    check({"InboundRuleSecurityGroupNames": [lab.web_name]},
          lambda g: lab.web_name in members(g, "SecurityGroupName"), [lab.db], [lab.web])
    check({"InboundRuleAccountIds": [a.id]}, lambda g: a.id in members(g, "AccountId"), [lab.db], [lab.web])
    check({"OutboundRuleIpRanges": ["192.168.0.0/16"]},
          _has("Outbound", lambda r: "192.168.0.0/16" in r["IpRanges"]), [lab.db], [lab.web])
    check({"OutboundRuleProtocols": ["-1"]}, _has("Outbound", lambda r: r["IpProtocol"] == "-1"),
          [lab.web, lab.db], [lab.bare])
    check({"OutboundRuleFromPortRanges": [25]}, _has("Outbound", lambda r: r["FromPortRange"] == 25),
          [lab.db], [lab.web])
    # Several filters: all must hold.
    check({"InboundRuleProtocols": ["tcp"], "TagValues": ["front"]}, lambda g: g["SecurityGroupId"] == lab.web,
          [lab.web], [lab.db])
    expect_error(fn, Filters={"InboundRuleProtocols": ["gre"]}, status=400, code="4053")


def test_pagination(a, lab):
    newest = [create(a.gw)["SecurityGroupId"] for _ in range(3)]
    full = a.gw.ReadSecurityGroups()
    assert not full.get("NextPageToken"), full
    ids = [g["SecurityGroupId"] for g in full["SecurityGroups"]]
    assert len(ids) >= 7 and len(ids) == len(set(ids))
    assert ids[-3:] == newest, "not in creation order"
    for per_page in (1, 2, 3):
        pages = read_pages(a.gw.ReadSecurityGroups, "SecurityGroups", None, per_page)
        assert all(len(p) == per_page for p in pages[:-1]), pages
        assert [g["SecurityGroupId"] for p in pages for g in p] == ids, f"ResultsPerPage={per_page}"
    assert default_of(a.gw)["SecurityGroupId"] in ids
    filtered = read_pages(a.gw.ReadSecurityGroups, "SecurityGroups", {"TagKeys": [lab.tag_key]}, 1)
    assert [g["SecurityGroupId"] for p in filtered for g in p] == [lab.web, lab.db]
    expect_error(a.gw.ReadSecurityGroups, ResultsPerPage=0, status=400, code="4047")
    expect_error(a.gw.ReadSecurityGroups, NextPageToken="%%%", status=400, code="4047")


# --------------------------------------------------------------------- tags


def test_tags(a, lab):
    sg = create(a.gw)
    sg_id = sg["SecurityGroupId"]
    key = unique("k")
    a.gw.CreateTags(ResourceIds=[sg_id], Tags=[{"Key": key, "Value": "v"}])
    rows = a.gw.ReadTags(Filters={"ResourceIds": [sg_id]})["Tags"]
    assert [(t["Key"], t["Value"], t["ResourceType"]) for t in rows] == [(key, "v", "security-group")]
    assert group(a.gw, sg_id)["Tags"] == [{"Key": key, "Value": "v"}]
    by_type = a.gw.ReadTags(Filters={"ResourceTypes": ["security-group"]})["Tags"]
    assert {t["ResourceId"] for t in by_type} >= {sg_id, lab.web, lab.db}
    a.gw.DeleteTags(ResourceIds=[sg_id], Tags=[{"Key": key, "Value": "v"}])
    assert group(a.gw, sg_id)["Tags"] == []
    # Tags go with their group.
    a.gw.CreateTags(ResourceIds=[sg_id], Tags=[{"Key": key, "Value": "w"}])
    a.gw.DeleteSecurityGroup(SecurityGroupId=sg_id)
    assert a.gw.ReadTags(Filters={"ResourceIds": [sg_id]})["Tags"] == []
    expect_error(a.gw.CreateTags, ResourceIds=[absent_id("sg")], Tags=[{"Key": "k", "Value": "v"}],
                 status=400, code="5020", type_="InvalidResource")


# ----------------------------------------------------------- other accounts


@pytest.fixture(scope="module")
def theirs(b):
    """A group of B's, with a rule, and a tag."""
    sg = create(b.gw, unique("theirs"))
    add_rule(b.gw, sg["SecurityGroupId"], IpProtocol="tcp", FromPortRange=22, ToPortRange=22,
             IpRange="10.0.0.0/8")
    b.gw.CreateTags(ResourceIds=[sg["SecurityGroupId"]], Tags=[{"Key": "owner", "Value": "b"}])
    return group(b.gw, sg["SecurityGroupId"])


def test_other_accounts_groups_are_invisible(a, b, theirs):
    their_id = theirs["SecurityGroupId"]
    assert their_id not in {g["SecurityGroupId"] for g in groups(a.gw)}
    assert a.gw.ReadSecurityGroups(Filters={"SecurityGroupIds": [their_id]})["SecurityGroups"] == []
    assert a.gw.ReadSecurityGroups(Filters={"SecurityGroupNames": [theirs["SecurityGroupName"]]})[
        "SecurityGroups"] == []
    assert all(g["AccountId"] == b.id for g in groups(b.gw))
    assert all(g["AccountId"] == a.id for g in groups(a.gw))
    # B has its own default group, distinct from A's.
    assert default_of(a.gw)["SecurityGroupId"] != default_of(b.gw)["SecurityGroupId"]


@pytest.mark.parametrize("op,build", [
    ("DeleteSecurityGroup", lambda i: {"SecurityGroupId": i}),
    ("CreateSecurityGroupRule", lambda i: {"SecurityGroupId": i, "Flow": "Inbound", "IpProtocol": "tcp",
                                           "FromPortRange": 80, "ToPortRange": 80, "IpRange": "0.0.0.0/0"}),
    ("CreateSecurityGroupRule", lambda i: {"SecurityGroupId": i, "Flow": "Inbound", "IpProtocol": "tcp",
                                           "FromPortRange": 22, "ToPortRange": 22, "IpRange": "10.0.0.0/8"}),
    ("DeleteSecurityGroupRule", lambda i: {"SecurityGroupId": i, "Flow": "Inbound", "IpProtocol": "tcp",
                                           "FromPortRange": 22, "ToPortRange": 22, "IpRange": "10.0.0.0/8"}),
    ("DeleteSecurityGroupRule", lambda i: {"SecurityGroupId": i, "Flow": "Outbound", "IpProtocol": "-1",
                                           "IpRange": "0.0.0.0/0"}),
    ("raw:DeleteSecurityGroup", lambda i: {"SecurityGroupId": i, "DryRun": True}),
    ("CreateTags", lambda i: {"ResourceIds": [i], "Tags": [{"Key": "k", "Value": "v"}]}),
    ("DeleteTags", lambda i: {"ResourceIds": [i], "Tags": [{"Key": "owner", "Value": "b"}]}),
    ("ReadSecurityGroups", lambda i: {"Filters": {"SecurityGroupIds": [i]}}),
    ("ReadTags", lambda i: {"Filters": {"ResourceIds": [i]}}),
])
def test_other_accounts_group_is_like_an_absent_one(a, b, theirs, op, build):
    their_id = theirs["SecurityGroupId"]
    fn = raw_fn(a, op[4:]) if op.startswith("raw:") else getattr(a.gw, op)
    same_as_absent(fn, build, their_id, absent_id("sg"))
    assert group(b.gw, their_id) == theirs, f"{op} by another account changed the group"


def test_linking_another_accounts_group(a, b, theirs):
    their_id = theirs["SecurityGroupId"]
    mine = create(a.gw)["SecurityGroupId"]
    before = group(a.gw, mine)
    link = lambda ident, **kw: dict(SecurityGroupId=mine, Flow="Inbound", IpProtocol="tcp", FromPortRange=8080,
                                    ToPortRange=8080, SecurityGroupNameToLink=ident, **kw)
    # Without B's account, or with a wrong one, B's group is like an absent one.
    same_as_absent(a.gw.CreateSecurityGroupRule, lambda i: link(i), their_id, absent_id("sg"))
    third = other_account_id(a.id, b.id)
    same_as_absent(a.gw.CreateSecurityGroupRule, lambda i: link(i, SecurityGroupAccountIdToLink=third),
                   their_id, absent_id("sg"))
    same_as_absent(a.gw.CreateSecurityGroupRule,
                   lambda i: {"SecurityGroupId": mine, "Flow": "Inbound",
                              "Rules": [{"SecurityGroupsMembers": [{"SecurityGroupId": i}]}]},
                   their_id, absent_id("sg"))
    # By name, another account's group is never found (the name is B's business).
    err1 = call_error(a.gw.CreateSecurityGroupRule,
                      **link(theirs["SecurityGroupName"], SecurityGroupAccountIdToLink=b.id))
    err2 = call_error(a.gw.CreateSecurityGroupRule, **link(unique("nobody"), SecurityGroupAccountIdToLink=b.id))
    assert (err1.status, err1.code, err1.details) == (err2.status, err2.code, err2.details)
    assert group(a.gw, mine) == before
    # By ID and account, as on AWS: allowed, and B's group name is not shown to A.
    answer = add_rule(a.gw, mine, **{k: v for k, v in link(their_id, SecurityGroupAccountIdToLink=b.id).items()
                                     if k not in ("SecurityGroupId", "Flow")})
    entry = [r for r in answer["InboundRules"] if r["FromPortRange"] == 8080][0]
    assert entry["SecurityGroupsMembers"] == [{"AccountId": b.id, "SecurityGroupId": their_id}], entry
    assert group(a.gw, mine) == answer
    # B cannot delete its group while A's rule names it; the error does not reveal A's group.
    err = expect_error(b.gw.DeleteSecurityGroup, SecurityGroupId=their_id, status=400, code="9029")
    assert mine not in err.details and "other accounts" in err.details, err
    # A removes the rule (the account is needed to name the peer again).
    same_as_absent(a.gw.DeleteSecurityGroupRule,
                   lambda i: {"SecurityGroupId": mine, "Flow": "Inbound", "IpProtocol": "tcp",
                              "FromPortRange": 8080, "ToPortRange": 8080, "SecurityGroupNameToUnlink": i},
                   their_id, absent_id("sg"))
    answer = del_rule(a.gw, mine, IpProtocol="tcp", FromPortRange=8080, ToPortRange=8080,
                      SecurityGroupNameToUnlink=their_id, SecurityGroupAccountIdToUnlink=b.id)
    assert answer == before
    # Now B can delete it.
    extra = create(b.gw)
    b.gw.DeleteSecurityGroup(SecurityGroupId=extra["SecurityGroupId"])
    assert group(b.gw, extra["SecurityGroupId"]) is None
