"""Nets and subnets through the official SDK: CreateNet, ReadNets, UpdateNet, DeleteNet,
CreateSubnet, ReadSubnets, UpdateSubnet, DeleteSubnet — filters, pagination, tags, dry
runs, every refused input (bad or overlapping ranges, a subnet outside its Net, deleting
a Net that still has subnets), and another account's view (exactly like absent IDs).
Two accounts use the same range at once."""

import pytest

from socle_lib import absent_id, check_filter, expect_error, expect_raw_error, read_all, same_as_absent


@pytest.fixture(scope="module")
def a(new_account):
    return new_account("net-a")


@pytest.fixture(scope="module")
def b(new_account):
    return new_account("net-b")


def test_create_read_and_tag_a_net(a):
    net = a.gw.CreateNet(IpRange="10.0.0.0/16")["Net"]
    assert net["NetId"].startswith("vpc-") and len(net["NetId"]) == 12, net
    assert (net["IpRange"], net["State"], net["Tenancy"], net["Tags"]) == ("10.0.0.0/16", "available", "default", [])
    a.gw.CreateTags(ResourceIds=[net["NetId"]], Tags=[{"Key": "env", "Value": "prod"}])
    other = a.gw.CreateNet(IpRange="172.16.0.0/24", Tenancy="dedicated")["Net"]
    everything = read_all(a.gw.ReadNets, "Nets", {})
    assert [n["NetId"] for n in everything] == [net["NetId"], other["NetId"]]
    assert everything[0]["Tags"] == [{"Key": "env", "Value": "prod"}]
    check_filter(a.gw.ReadNets, "Nets", "NetId", everything, {"NetIds": [net["NetId"]]},
                 lambda n: n["NetId"] == net["NetId"], include=[net["NetId"]])
    check_filter(a.gw.ReadNets, "Nets", "NetId", everything, {"IpRanges": ["172.16.0.0/24"]},
                 lambda n: n["IpRange"] == "172.16.0.0/24", include=[other["NetId"]])
    check_filter(a.gw.ReadNets, "Nets", "NetId", everything, {"TagKeys": ["env"]},
                 lambda n: n["NetId"] == net["NetId"], exclude=[other["NetId"]])
    check_filter(a.gw.ReadNets, "Nets", "NetId", everything, {"States": ["available"]}, lambda n: True)
    assert a.gw.ReadNets(Filters={"IsDefault": True})["Nets"] == []
    page = a.gw.ReadNets(ResultsPerPage=1)
    rest = a.gw.ReadNets(ResultsPerPage=1, NextPageToken=page["NextPageToken"])
    assert [n["NetId"] for n in page["Nets"] + rest["Nets"]] == [net["NetId"], other["NetId"]]
    assert not rest.get("NextPageToken")
    a.gw.DeleteNet(NetId=other["NetId"])
    expect_error(a.gw.DeleteNet, NetId=other["NetId"], status=400, code="5065")


def test_bad_ranges_are_refused(a):
    before = len(read_all(a.gw.ReadNets, "Nets", {}))
    expect_raw_error(a.raw.post("CreateNet", {}), status=400, code="7000")
    # DryRun (the SDK's spec lacks it for CreateNet) checks and changes nothing.
    assert a.raw.post("CreateNet", {"IpRange": "10.1.0.0/16", "DryRun": True}).status_code == 200
    expect_raw_error(a.raw.post("CreateNet", {"IpRange": "10.0.0.0/8", "DryRun": True}), status=400, code="4015")
    for bad, code in [("10.0.0.0/33", "4047"), ("10.0.0.1/16", "4047"), ("10.0.0.0", "4047"),
                      ("300.0.0.0/16", "4047"), ("nonsense", "4047"), ("10.0.0.0/8", "4015"),
                      ("10.0.0.0/29", "4015")]:
        expect_error(a.gw.CreateNet, IpRange=bad, status=400, code=code)
    expect_error(a.gw.CreateNet, IpRange="10.9.0.0/16", Tenancy="shared", status=400, code="4047")
    assert len(read_all(a.gw.ReadNets, "Nets", {})) == before


def test_subnets_inside_their_net_without_overlap(a, subregion):
    net = a.gw.CreateNet(IpRange="10.20.0.0/16")["Net"]["NetId"]
    s1 = a.gw.CreateSubnet(NetId=net, IpRange="10.20.1.0/24", SubregionName=subregion)["Subnet"]
    assert s1["SubnetId"].startswith("subnet-"), s1
    assert (s1["NetId"], s1["IpRange"], s1["State"], s1["SubregionName"]) == (net, "10.20.1.0/24", "available", subregion)
    assert s1["AvailableIpsCount"] == 251 and s1["MapPublicIpOnLaunch"] is False, s1
    s2 = a.gw.CreateSubnet(NetId=net, IpRange="10.20.2.0/28")["Subnet"]
    assert s2["SubregionName"] == subregion and s2["AvailableIpsCount"] == 11, s2
    before = len(read_all(a.gw.ReadSubnets, "Subnets", {}))
    expect_error(a.gw.CreateSubnet, NetId=net, IpRange="10.20.1.128/25", status=400, code="9058")
    expect_error(a.gw.CreateSubnet, NetId=net, IpRange="10.20.0.0/16", status=400, code="9058")
    expect_error(a.gw.CreateSubnet, NetId=net, IpRange="10.21.0.0/24", status=400, code="9044")
    expect_error(a.gw.CreateSubnet, NetId=net, IpRange="10.20.3.0/30", status=400, code="4015")
    expect_error(a.gw.CreateSubnet, NetId=net, IpRange="10.20.3.1/24", status=400, code="4047")
    expect_error(a.gw.CreateSubnet, NetId=net, IpRange="10.20.3.0/24", SubregionName="mars-1a", status=400, code="4047")
    expect_error(a.gw.CreateSubnet, NetId=absent_id("vpc"), IpRange="10.20.3.0/24", status=400, code="5065")
    expect_error(a.gw.CreateSubnet, NetId="vpc-zz", IpRange="10.20.3.0/24", status=400, code="4105")
    expect_raw_error(a.raw.post("CreateSubnet", {"IpRange": "10.20.3.0/24"}), status=400, code="7000")
    assert a.raw.post("CreateSubnet", {"NetId": net, "IpRange": "10.20.3.0/24", "DryRun": True}).status_code == 200
    assert len(read_all(a.gw.ReadSubnets, "Subnets", {})) == before

    everything = read_all(a.gw.ReadSubnets, "Subnets", {})
    check_filter(a.gw.ReadSubnets, "Subnets", "SubnetId", everything, {"NetIds": [net]},
                 lambda s: s["NetId"] == net, include=[s1["SubnetId"], s2["SubnetId"]])
    check_filter(a.gw.ReadSubnets, "Subnets", "SubnetId", everything, {"SubnetIds": [s2["SubnetId"]]},
                 lambda s: s["SubnetId"] == s2["SubnetId"])
    check_filter(a.gw.ReadSubnets, "Subnets", "SubnetId", everything, {"IpRanges": ["10.20.1.0/24"]},
                 lambda s: s["IpRange"] == "10.20.1.0/24", include=[s1["SubnetId"]])
    check_filter(a.gw.ReadSubnets, "Subnets", "SubnetId", everything, {"AvailableIpsCounts": [11]},
                 lambda s: s["AvailableIpsCount"] == 11, include=[s2["SubnetId"]])
    check_filter(a.gw.ReadSubnets, "Subnets", "SubnetId", everything, {"SubregionNames": [subregion]},
                 lambda s: True)

    out = a.gw.UpdateSubnet(SubnetId=s1["SubnetId"], MapPublicIpOnLaunch=True)["Subnet"]
    assert out["MapPublicIpOnLaunch"] is True
    a.gw.CreateTags(ResourceIds=[s1["SubnetId"]], Tags=[{"Key": "tier", "Value": "web"}])
    check_filter(a.gw.ReadSubnets, "Subnets", "SubnetId", everything, {"Tags": ["tier=web"]},
                 lambda s: s["SubnetId"] == s1["SubnetId"])
    assert a.gw.ReadSubnets(Filters={"SubnetIds": [s1["SubnetId"]]})["Subnets"][0]["MapPublicIpOnLaunch"] is True

    # A Net goes only once its subnets are gone; then its range is free again.
    err = expect_error(a.gw.DeleteNet, NetId=net, status=400, code="9066")
    assert s1["SubnetId"] in err.details, err
    assert a.raw.post("DeleteSubnet", {"SubnetId": s1["SubnetId"], "DryRun": True}).status_code == 200
    a.gw.DeleteSubnet(SubnetId=s1["SubnetId"])
    a.gw.DeleteSubnet(SubnetId=s2["SubnetId"])
    expect_error(a.gw.DeleteSubnet, SubnetId=s2["SubnetId"], status=400, code="5057")
    assert a.gw.ReadTags(Filters={"ResourceIds": [s1["SubnetId"]]})["Tags"] == []
    a.gw.DeleteNet(NetId=net)
    assert a.gw.ReadSubnets(Filters={"NetIds": [net]})["Subnets"] == []
    expect_error(a.gw.UpdateNet, NetId=net, DhcpOptionsSetId="dopt-12345678", status=400, code="5065")


def test_a_net_has_a_default_security_group_and_keeps_other_groups_alive(a):
    net = a.gw.CreateNet(IpRange="10.30.0.0/16")["Net"]["NetId"]
    groups = a.gw.ReadSecurityGroups(Filters={"NetIds": [net]})["SecurityGroups"]
    assert [g["SecurityGroupName"] for g in groups] == ["default"], groups
    web = a.gw.CreateSecurityGroup(NetId=net, SecurityGroupName="web", Description="web tier")["SecurityGroup"]
    err = expect_error(a.gw.DeleteNet, NetId=net, status=400, code="9066")
    assert web["SecurityGroupId"] in err.details, err
    a.gw.DeleteSecurityGroup(SecurityGroupId=web["SecurityGroupId"])
    a.gw.DeleteNet(NetId=net)
    assert a.gw.ReadSecurityGroups(Filters={"NetIds": [net]})["SecurityGroups"] == []


def test_same_range_in_two_accounts_and_nothing_crosses(a, b):
    na = a.gw.CreateNet(IpRange="10.50.0.0/16")["Net"]["NetId"]
    nb = b.gw.CreateNet(IpRange="10.50.0.0/16")["Net"]["NetId"]
    sa = a.gw.CreateSubnet(NetId=na, IpRange="10.50.1.0/24")["Subnet"]["SubnetId"]
    sb = b.gw.CreateSubnet(NetId=nb, IpRange="10.50.1.0/24")["Subnet"]["SubnetId"]
    assert na != nb and sa != sb
    assert nb not in [n["NetId"] for n in read_all(a.gw.ReadNets, "Nets", {})]
    assert a.gw.ReadSubnets(Filters={"SubnetIds": [sb]})["Subnets"] == []
    fake_net, fake_subnet = absent_id("vpc"), absent_id("subnet")
    same_as_absent(a.gw.DeleteNet, lambda i: {"NetId": i}, nb, fake_net)
    same_as_absent(a.gw.UpdateNet, lambda i: {"NetId": i, "DhcpOptionsSetId": "dopt-12345678"}, nb, fake_net)
    same_as_absent(a.gw.CreateSubnet, lambda i: {"NetId": i, "IpRange": "10.50.2.0/24"}, nb, fake_net)
    same_as_absent(a.gw.DeleteSubnet, lambda i: {"SubnetId": i}, sb, fake_subnet)
    same_as_absent(a.gw.UpdateSubnet, lambda i: {"SubnetId": i, "MapPublicIpOnLaunch": True}, sb, fake_subnet)
    same_as_absent(a.gw.CreateTags, lambda i: {"ResourceIds": [i], "Tags": [{"Key": "k", "Value": "v"}]}, nb, fake_net)
    assert b.gw.ReadSubnets(Filters={"SubnetIds": [sb]})["Subnets"][0]["MapPublicIpOnLaunch"] is False
    # UpdateNet has nothing it can change yet: DHCP options sets are not offered.
    err = expect_error(a.gw.UpdateNet, NetId=na, DhcpOptionsSetId="dopt-12345678", status=400, code="4047")
    assert "DHCP options" in err.details
    for acct, net, sub in ((a, na, sa), (b, nb, sb)):
        acct.gw.DeleteSubnet(SubnetId=sub)
        acct.gw.DeleteNet(NetId=net)
