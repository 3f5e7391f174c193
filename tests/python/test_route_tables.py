"""Route tables through the official SDK: the main table every Net gets (and loses with
it), CreateRouteTable, ReadRouteTables (every filter, pagination, tags),
LinkRouteTable / UnlinkRouteTable (one explicit link per subnet, fallback to the main
table), DeleteRouteTable (not the main one, not while linked), CreateRoute (to an
internet service, a NAT service; to a NIC or VM) and DeleteRoute,
with the implicit local route, blackholes when a target goes, every refusal, DryRun,
and another account's tables, links and Nets answering exactly like absent ones."""

import re

import pytest

from socle_lib import (absent_id, check_filter, dry_run, expect_error, expect_raw_error, public_net, read_all,
                       same_as_absent)

RTB_RE = re.compile(r"^rtb-[0-9a-f]{8}$")
LINK_RE = re.compile(r"^rtbassoc-[0-9a-f]{8}$")


@pytest.fixture(scope="module")
def a(new_account):
    return new_account("rtb-a")


@pytest.fixture(scope="module")
def b(new_account):
    return new_account("rtb-b")


def tables(gw, **filters) -> list[dict]:
    return read_all(gw.ReadRouteTables, "RouteTables", filters)


def table(gw, rtb: str) -> dict:
    found = tables(gw, RouteTableIds=[rtb])
    assert len(found) == 1, found
    return found[0]


def local(ip_range: str) -> dict:
    return {"CreationMethod": "CreateRouteTable", "DestinationIpRange": ip_range, "GatewayId": "local", "State": "active"}


def main_of(gw, net: str) -> dict:
    found = tables(gw, NetIds=[net], LinkRouteTableMain=True)
    assert len(found) == 1, found
    return found[0]


def test_every_net_has_a_main_table_that_goes_with_it(a):
    net = a.gw.CreateNet(IpRange="10.70.0.0/16")["Net"]["NetId"]
    main = main_of(a.gw, net)
    assert RTB_RE.match(main["RouteTableId"]), main
    link = main["LinkRouteTables"][0]
    assert LINK_RE.match(link["LinkRouteTableId"]), main
    assert main == {
        "RouteTableId": main["RouteTableId"], "NetId": net, "Tags": [], "RoutePropagatingVirtualGateways": [],
        "LinkRouteTables": [{"LinkRouteTableId": link["LinkRouteTableId"], "Main": True, "NetId": net,
                             "RouteTableId": main["RouteTableId"]}],
        "Routes": [local("10.70.0.0/16")],
    }, main
    expect_error(a.gw.DeleteRouteTable, RouteTableId=main["RouteTableId"], status=400, code="9029")
    expect_error(a.gw.UnlinkRouteTable, LinkRouteTableId=link["LinkRouteTableId"], status=400, code="9029")
    a.gw.CreateTags(ResourceIds=[main["RouteTableId"]], Tags=[{"Key": "k", "Value": "v"}])
    assert a.gw.ReadTags(Filters={"ResourceIds": [main["RouteTableId"]]})["Tags"][0]["ResourceType"] == "route-table"
    a.gw.DeleteNet(NetId=net)
    assert tables(a.gw, RouteTableIds=[main["RouteTableId"]]) == []
    assert a.gw.ReadTags(Filters={"ResourceIds": [main["RouteTableId"]]})["Tags"] == []


def test_links_fall_back_to_the_main_table(a):
    net = a.gw.CreateNet(IpRange="10.71.0.0/16")["Net"]["NetId"]
    s1 = a.gw.CreateSubnet(NetId=net, IpRange="10.71.1.0/24")["Subnet"]["SubnetId"]
    s2 = a.gw.CreateSubnet(NetId=net, IpRange="10.71.2.0/24")["Subnet"]["SubnetId"]
    other_net = a.gw.CreateNet(IpRange="10.72.0.0/16")["Net"]["NetId"]
    elsewhere = a.gw.CreateSubnet(NetId=other_net, IpRange="10.72.1.0/24")["Subnet"]["SubnetId"]
    rt = a.gw.CreateRouteTable(NetId=net)["RouteTable"]
    assert RTB_RE.match(rt["RouteTableId"]), rt
    assert rt == {"RouteTableId": rt["RouteTableId"], "NetId": net, "LinkRouteTables": [], "Tags": [],
                  "RoutePropagatingVirtualGateways": [], "Routes": [local("10.71.0.0/16")]}, rt
    assert dry_run(a, "LinkRouteTable", RouteTableId=rt["RouteTableId"], SubnetId=s1).status_code == 200
    assert table(a.gw, rt["RouteTableId"])["LinkRouteTables"] == []
    link = a.gw.LinkRouteTable(RouteTableId=rt["RouteTableId"], SubnetId=s1)["LinkRouteTableId"]
    assert LINK_RE.match(link), link
    assert table(a.gw, rt["RouteTableId"])["LinkRouteTables"] == [
        {"LinkRouteTableId": link, "Main": False, "RouteTableId": rt["RouteTableId"], "SubnetId": s1}]
    main = main_of(a.gw, net)["RouteTableId"]
    err = expect_error(a.gw.LinkRouteTable, RouteTableId=main, SubnetId=s1, status=400, code="9059")
    assert link in err.details, err
    expect_error(a.gw.LinkRouteTable, RouteTableId=rt["RouteTableId"], SubnetId=elsewhere, status=400, code="4047")
    expect_error(a.gw.LinkRouteTable, RouteTableId=rt["RouteTableId"], SubnetId=absent_id("subnet"), status=400, code="5057")
    expect_error(a.gw.LinkRouteTable, RouteTableId=absent_id("rtb"), SubnetId=s2, status=400, code="5046")
    expect_error(a.gw.DeleteRouteTable, RouteTableId=rt["RouteTableId"], status=400, code="9059")
    err = expect_error(a.gw.DeleteNet, NetId=other_net, status=400, code="9066")  # its subnet is still there
    a.gw.DeleteSubnet(SubnetId=elsewhere)
    extra = a.gw.CreateRouteTable(NetId=other_net)["RouteTable"]["RouteTableId"]
    err = expect_error(a.gw.DeleteNet, NetId=other_net, status=400, code="9066")
    assert extra in err.details, err
    assert dry_run(a, "DeleteRouteTable", RouteTableId=extra).status_code == 200
    a.gw.DeleteRouteTable(RouteTableId=extra)
    expect_error(a.gw.DeleteRouteTable, RouteTableId=extra, status=400, code="5046")
    a.gw.DeleteNet(NetId=other_net)

    # The main table may be linked explicitly too; a subnet link goes with its subnet.
    main_link = a.gw.LinkRouteTable(RouteTableId=main, SubnetId=s2)["LinkRouteTableId"]
    a.gw.UnlinkRouteTable(LinkRouteTableId=main_link)
    assert dry_run(a, "UnlinkRouteTable", LinkRouteTableId=link).status_code == 200
    a.gw.UnlinkRouteTable(LinkRouteTableId=link)
    expect_error(a.gw.UnlinkRouteTable, LinkRouteTableId=link, status=400, code="5007")
    expect_error(a.gw.UnlinkRouteTable, LinkRouteTableId="rtbassoc-xyz", status=400, code="4105")
    a.gw.LinkRouteTable(RouteTableId=rt["RouteTableId"], SubnetId=s2)
    a.gw.DeleteSubnet(SubnetId=s2)
    assert table(a.gw, rt["RouteTableId"])["LinkRouteTables"] == []
    a.gw.DeleteRouteTable(RouteTableId=rt["RouteTableId"])
    a.gw.DeleteSubnet(SubnetId=s1)
    a.gw.DeleteNet(NetId=net)


def test_routes_targets_blackholes_and_filters(a):
    net, subnet, igw = public_net(a.gw, "10.73.0.0/16")
    main = main_of(a.gw, net)["RouteTableId"]
    rt = a.gw.CreateRouteTable(NetId=net)["RouteTable"]["RouteTableId"]
    link = a.gw.LinkRouteTable(RouteTableId=rt, SubnetId=subnet)["LinkRouteTableId"]
    out = a.gw.CreateRoute(RouteTableId=main, DestinationIpRange="0.0.0.0/0", GatewayId=igw)["RouteTable"]
    to_igw = {"CreationMethod": "CreateRoute", "DestinationIpRange": "0.0.0.0/0", "GatewayId": igw, "State": "active"}
    assert out["Routes"] == [local("10.73.0.0/16"), to_igw], out
    ip = a.gw.CreatePublicIp()["PublicIp"]["PublicIpId"]
    nat = a.gw.CreateNatService(SubnetId=subnet, PublicIpId=ip)["NatService"]["NatServiceId"]
    out = a.gw.CreateRoute(RouteTableId=rt, DestinationIpRange="0.0.0.0/0", NatServiceId=nat)["RouteTable"]
    to_nat = {"CreationMethod": "CreateRoute", "DestinationIpRange": "0.0.0.0/0", "NatServiceId": nat, "State": "active"}
    assert out["Routes"] == [local("10.73.0.0/16"), to_nat], out
    a.gw.CreateRoute(RouteTableId=rt, DestinationIpRange="192.168.0.0/24", GatewayId=igw)

    # Refusals.
    expect_error(a.gw.CreateRoute, RouteTableId=main, DestinationIpRange="0.0.0.0/0", GatewayId=igw, status=400, code="9052")
    for inside in ("10.73.0.0/16", "10.73.5.0/24", "10.73.1.7/32"):
        err = expect_error(a.gw.CreateRoute, RouteTableId=main, DestinationIpRange=inside, GatewayId=igw,
                           status=400, code="4047")
        assert "local route" in err.details, err
    for bad in ("10.80.0.1/16", "nonsense", "10.80.0.0/33", "10.80.0.0"):
        expect_error(a.gw.CreateRoute, RouteTableId=main, DestinationIpRange=bad, GatewayId=igw, status=400, code="4047")
    spare = a.gw.CreateInternetService()["InternetService"]["InternetServiceId"]
    expect_error(a.gw.CreateRoute, RouteTableId=main, DestinationIpRange="1.0.0.0/8", GatewayId=spare, status=400, code="9026")
    expect_error(a.gw.CreateRoute, RouteTableId=main, DestinationIpRange="1.0.0.0/8", status=400, code="7000")
    expect_error(a.gw.CreateRoute, RouteTableId=main, DestinationIpRange="1.0.0.0/8", GatewayId=igw, NatServiceId=nat,
                 status=400, code="4047")
    expect_error(a.gw.CreateRoute, RouteTableId=main, DestinationIpRange="1.0.0.0/8", NetPeeringId="pcx-12345678",
                 status=400, code="4047")
    expect_error(a.gw.CreateRoute, RouteTableId=main, DestinationIpRange="1.0.0.0/8", GatewayId=absent_id("igw"),
                 status=400, code="5019")
    expect_error(a.gw.CreateRoute, RouteTableId=main, DestinationIpRange="1.0.0.0/8", NatServiceId=absent_id("nat"),
                 status=400, code="5032")
    expect_error(a.gw.CreateRoute, RouteTableId=main, DestinationIpRange="1.0.0.0/8", NicId=absent_id("eni"),
                 status=400, code="5036")
    expect_error(a.gw.CreateRoute, RouteTableId=main, DestinationIpRange="1.0.0.0/8", VmId=absent_id("i"),
                 status=400, code="5063")
    expect_error(a.gw.CreateRoute, RouteTableId=absent_id("rtb"), DestinationIpRange="1.0.0.0/8", GatewayId=igw,
                 status=400, code="5046")
    before = table(a.gw, main)
    assert dry_run(a, "CreateRoute", RouteTableId=main, DestinationIpRange="1.0.0.0/8", GatewayId=igw).status_code == 200
    expect_raw_error(dry_run(a, "CreateRoute", RouteTableId=main, DestinationIpRange="0.0.0.0/0", GatewayId=igw),
                     status=400, code="9052")
    assert dry_run(a, "DeleteRoute", RouteTableId=main, DestinationIpRange="0.0.0.0/0").status_code == 200
    assert table(a.gw, main) == before

    # Filters, on tables, their links and their routes.
    a.gw.CreateTags(ResourceIds=[rt], Tags=[{"Key": "tier", "Value": "private"}])
    everything = tables(a.gw, NetIds=[net])
    assert [t["RouteTableId"] for t in everything] == [main, rt]
    both, only_main, only_rt = {main, rt}, {main}, {rt}
    for filters, expected in [
        ({"RouteTableIds": [rt]}, only_rt),
        ({"LinkRouteTableMain": True}, only_main),
        ({"LinkRouteTableMain": False}, only_rt),
        ({"LinkSubnetIds": [subnet]}, only_rt),
        ({"LinkRouteTableIds": [rt]}, only_rt),
        ({"LinkRouteTableLinkRouteTableIds": [link]}, only_rt),
        ({"RouteGatewayIds": [igw]}, both),
        ({"RouteGatewayIds": ["local"]}, both),
        ({"RouteNatServiceIds": [nat]}, only_rt),
        ({"RouteDestinationIpRanges": ["192.168.0.0/24"]}, only_rt),
        ({"RouteCreationMethods": ["CreateRoute"]}, both),
        ({"RouteStates": ["blackhole"]}, set()),
        ({"RouteVmIds": [absent_id("i")]}, set()),
        ({"RouteDestinationServiceIds": ["pl-12345678"]}, set()),
        ({"RouteNetPeeringIds": ["pcx-12345678"]}, set()),
        ({"Tags": ["tier=private"]}, only_rt),
        ({"TagKeys": ["tier"], "TagValues": ["private"]}, only_rt),
    ]:
        check_filter(a.gw.ReadRouteTables, "RouteTables", "RouteTableId", everything, {"NetIds": [net], **filters},
                     lambda t, e=expected: t["RouteTableId"] in e)
    pages = [a.gw.ReadRouteTables(Filters={"NetIds": [net]}, ResultsPerPage=1)]
    pages.append(a.gw.ReadRouteTables(Filters={"NetIds": [net]}, ResultsPerPage=1, NextPageToken=pages[0]["NextPageToken"]))
    assert [p["RouteTables"][0]["RouteTableId"] for p in pages] == [main, rt] and not pages[1].get("NextPageToken")

    # Targets that go away leave blackholes.
    a.gw.DeleteNatService(NatServiceId=nat)
    assert table(a.gw, rt)["Routes"][1] == {**to_nat, "State": "blackhole"}
    check_filter(a.gw.ReadRouteTables, "RouteTables", "RouteTableId", everything,
                 {"NetIds": [net], "RouteStates": ["blackhole"]}, lambda t: t["RouteTableId"] == rt)
    a.gw.UnlinkInternetService(InternetServiceId=igw, NetId=net)
    assert table(a.gw, main)["Routes"] == [local("10.73.0.0/16"), {**to_igw, "State": "blackhole"}]
    a.gw.LinkInternetService(InternetServiceId=igw, NetId=net)
    assert table(a.gw, main)["Routes"][1]["State"] == "active"

    out = a.gw.DeleteRoute(RouteTableId=rt, DestinationIpRange="0.0.0.0/0")["RouteTable"]
    assert [r["DestinationIpRange"] for r in out["Routes"]] == ["10.73.0.0/16", "192.168.0.0/24"], out
    expect_error(a.gw.DeleteRoute, RouteTableId=rt, DestinationIpRange="0.0.0.0/0", status=400, code="5045")
    expect_error(a.gw.DeleteRoute, RouteTableId=rt, DestinationIpRange="10.73.0.0/16", status=400, code="4047")
    expect_error(a.gw.DeleteRoute, RouteTableId=rt, DestinationIpRange="10.73.0.1/16", status=400, code="4047")
    # A table goes with its routes.
    a.gw.UnlinkRouteTable(LinkRouteTableId=link)
    a.gw.DeleteRouteTable(RouteTableId=rt)
    a.gw.UnlinkInternetService(InternetServiceId=igw, NetId=net)
    for i in (igw, spare):
        a.gw.DeleteInternetService(InternetServiceId=i)
    a.gw.DeletePublicIp(PublicIpId=ip)
    a.gw.DeleteSubnet(SubnetId=subnet)
    a.gw.DeleteNet(NetId=net)


def test_another_accounts_tables_links_and_nets_are_absent(a, b):
    their_net, their_subnet, their_igw = public_net(b.gw, "10.74.0.0/16")
    their_rt = b.gw.CreateRouteTable(NetId=their_net)["RouteTable"]["RouteTableId"]
    their_link = b.gw.LinkRouteTable(RouteTableId=their_rt, SubnetId=their_subnet)["LinkRouteTableId"]
    b.gw.CreateRoute(RouteTableId=their_rt, DestinationIpRange="0.0.0.0/0", GatewayId=their_igw)
    my_net = a.gw.CreateNet(IpRange="10.74.0.0/16")["Net"]["NetId"]
    my_subnet = a.gw.CreateSubnet(NetId=my_net, IpRange="10.74.0.0/24")["Subnet"]["SubnetId"]
    my_rt = a.gw.CreateRouteTable(NetId=my_net)["RouteTable"]["RouteTableId"]
    fake_rt, fake_link, fake_net, fake_subnet = absent_id("rtb"), absent_id("rtbassoc"), absent_id("vpc"), absent_id("subnet")
    assert tables(a.gw, RouteTableIds=[their_rt]) == [] and tables(a.gw, NetIds=[their_net]) == []
    same_as_absent(a.gw.DeleteRouteTable, lambda i: {"RouteTableId": i}, their_rt, fake_rt)
    same_as_absent(a.gw.CreateRouteTable, lambda i: {"NetId": i}, their_net, fake_net)
    same_as_absent(a.gw.LinkRouteTable, lambda i: {"RouteTableId": i, "SubnetId": my_subnet}, their_rt, fake_rt)
    same_as_absent(a.gw.LinkRouteTable, lambda i: {"RouteTableId": my_rt, "SubnetId": i}, their_subnet, fake_subnet)
    same_as_absent(a.gw.UnlinkRouteTable, lambda i: {"LinkRouteTableId": i}, their_link, fake_link)
    same_as_absent(a.gw.CreateRoute, lambda i: {"RouteTableId": i, "DestinationIpRange": "1.0.0.0/8", "GatewayId": their_igw},
                   their_rt, fake_rt)
    same_as_absent(a.gw.CreateRoute, lambda i: {"RouteTableId": my_rt, "DestinationIpRange": "1.0.0.0/8", "GatewayId": i},
                   their_igw, absent_id("igw"))
    same_as_absent(a.gw.DeleteRoute, lambda i: {"RouteTableId": i, "DestinationIpRange": "0.0.0.0/0"}, their_rt, fake_rt)
    same_as_absent(a.gw.CreateTags, lambda i: {"ResourceIds": [i], "Tags": [{"Key": "k", "Value": "v"}]}, their_rt, fake_rt)
    assert len(table(b.gw, their_rt)["Routes"]) == 2
    b.gw.UnlinkRouteTable(LinkRouteTableId=their_link)
    b.gw.DeleteRouteTable(RouteTableId=their_rt)
    b.gw.UnlinkInternetService(InternetServiceId=their_igw, NetId=their_net)
    b.gw.DeleteInternetService(InternetServiceId=their_igw)
    b.gw.DeleteSubnet(SubnetId=their_subnet)
    b.gw.DeleteNet(NetId=their_net)
    a.gw.DeleteRouteTable(RouteTableId=my_rt)
    a.gw.DeleteSubnet(SubnetId=my_subnet)
    a.gw.DeleteNet(NetId=my_net)


def test_routes_to_a_vm_or_nic(a, image_id):
    net, subnet, igw = public_net(a.gw, "10.75.0.0/16")
    vm = a.gw.CreateVms(ImageId=image_id, VmType="tinav5.c1r1p2", SubnetId=subnet)["Vms"][0]
    nic = vm["Nics"][0]["NicId"]
    main = main_of(a.gw, net)["RouteTableId"]
    out = a.gw.CreateRoute(RouteTableId=main, DestinationIpRange="172.16.0.0/12", VmId=vm["VmId"])["RouteTable"]
    assert out["Routes"][1] == {"CreationMethod": "CreateRoute", "DestinationIpRange": "172.16.0.0/12", "NicId": nic,
                                "VmId": vm["VmId"], "VmAccountId": vm.get("AccountId") or out["Routes"][1]["VmAccountId"],
                                "State": "active"}, out
    a.gw.CreateRoute(RouteTableId=main, DestinationIpRange="192.168.0.0/16", NicId=nic)
    check_filter(a.gw.ReadRouteTables, "RouteTables", "RouteTableId", tables(a.gw, NetIds=[net]),
                 {"RouteVmIds": [vm["VmId"]]}, lambda t: t["RouteTableId"] == main)
    err = expect_error(a.gw.DeleteNet, NetId=net, status=400, code="9066")
    assert "NIC" in err.details or subnet in err.details, err
    # A NIC of another Net is refused.
    other_net, other_subnet, other_igw = public_net(a.gw, "10.76.0.0/16")
    other_vm = a.gw.CreateVms(ImageId=image_id, VmType="tinav5.c1r1p2", SubnetId=other_subnet)["Vms"][0]
    expect_error(a.gw.CreateRoute, RouteTableId=main, DestinationIpRange="1.0.0.0/8", VmId=other_vm["VmId"],
                 status=400, code="4047")
    # Deleting the VM leaves the routes as blackholes.
    from socle_lib import wait_vms_state
    a.gw.DeleteVms(VmIds=[vm["VmId"], other_vm["VmId"]])
    wait_vms_state(a.gw, [vm["VmId"], other_vm["VmId"]], "terminated")
    assert {r["State"] for r in table(a.gw, main)["Routes"][1:]} == {"blackhole"}
