"""NAT services through the official SDK: CreateNatService (needs an internet service
on the Net, 9045; a public IP of the caller that nothing uses, 9031; ClientToken
idempotency; at most 5 per Net, 10032), ReadNatServices (filters, pagination, tags),
DeleteNatService (the public IP is free again); what a NAT service keeps alive (its
public IP, subnet, Net and the Net's internet service); DryRun; and another account's
NAT services, subnets and public IPs answering exactly like absent ones."""

import re

import pytest

from socle_lib import (absent_id, check_filter, dry_run, expect_error, expect_raw_error, public_net, read_all,
                       same_as_absent, unique)

NAT_RE = re.compile(r"^nat-[0-9a-f]{8}$")


@pytest.fixture(scope="module")
def a(new_account):
    return new_account("nat-a")


@pytest.fixture(scope="module")
def b(new_account):
    return new_account("nat-b")


def nats(gw, **filters) -> list[dict]:
    return read_all(gw.ReadNatServices, "NatServices", filters)


def test_create_read_and_what_a_nat_service_keeps_alive(a):
    net = a.gw.CreateNet(IpRange="10.100.0.0/16")["Net"]["NetId"]
    subnet = a.gw.CreateSubnet(NetId=net, IpRange="10.100.1.0/24")["Subnet"]["SubnetId"]
    ip = a.gw.CreatePublicIp()["PublicIp"]
    err = expect_error(a.gw.CreateNatService, SubnetId=subnet, PublicIpId=ip["PublicIpId"], status=400, code="9045")
    assert net in err.details, err
    igw = a.gw.CreateInternetService()["InternetService"]["InternetServiceId"]
    a.gw.LinkInternetService(InternetServiceId=igw, NetId=net)
    assert dry_run(a, "CreateNatService", SubnetId=subnet, PublicIpId=ip["PublicIpId"]).status_code == 200
    assert nats(a.gw) == []
    token = unique("tok")
    nat = a.gw.CreateNatService(SubnetId=subnet, PublicIpId=ip["PublicIpId"], ClientToken=token)["NatService"]
    assert NAT_RE.match(nat["NatServiceId"]), nat
    assert nat == {"NatServiceId": nat["NatServiceId"], "NetId": net, "SubnetId": subnet, "State": "available",
                   "ClientToken": token, "Tags": [],
                   "PublicIps": [{"PublicIp": ip["PublicIp"], "PublicIpId": ip["PublicIpId"]}]}, nat
    # The same token gives the same NAT service back, whatever else changed.
    again = a.gw.CreateNatService(SubnetId=subnet, PublicIpId=ip["PublicIpId"], ClientToken=token)["NatService"]
    assert again == nat
    assert len(nats(a.gw)) == 1
    got = a.gw.ReadPublicIps(Filters={"PublicIpIds": [ip["PublicIpId"]]})["PublicIps"][0]
    assert got["NatServiceId"] == nat["NatServiceId"], got

    # Its public IP, subnet, Net and internet service stay while it exists.
    expect_error(a.gw.CreateNatService, SubnetId=subnet, PublicIpId=ip["PublicIpId"], status=400, code="9031")
    err = expect_error(a.gw.DeletePublicIp, PublicIpId=ip["PublicIpId"], status=400, code="9031")
    assert nat["NatServiceId"] in err.details, err
    expect_error(a.gw.LinkPublicIp, PublicIpId=ip["PublicIpId"], NicId=absent_id("eni"), status=400, code="5036")
    expect_error(a.gw.DeleteSubnet, SubnetId=subnet, status=400, code="9057")
    expect_error(a.gw.DeleteNet, NetId=net, status=400, code="9066")
    err = expect_error(a.gw.UnlinkInternetService, InternetServiceId=igw, NetId=net, status=400, code="9029")
    assert "NAT" in err.details, err

    a.gw.CreateTags(ResourceIds=[nat["NatServiceId"]], Tags=[{"Key": "zone", "Value": "a"}])
    assert a.gw.ReadTags(Filters={"ResourceIds": [nat["NatServiceId"]]})["Tags"][0]["ResourceType"] == "natgateway"
    ip2 = a.gw.CreatePublicIp()["PublicIp"]["PublicIpId"]
    other = a.gw.CreateNatService(SubnetId=subnet, PublicIpId=ip2)["NatService"]
    assert "ClientToken" not in other, other
    everything = nats(a.gw)
    assert [n["NatServiceId"] for n in everything] == [nat["NatServiceId"], other["NatServiceId"]]
    first = lambda n: n["NatServiceId"] == nat["NatServiceId"]  # noqa: E731
    for filters, pred in [
        ({"NatServiceIds": [other["NatServiceId"]]}, lambda n: n["NatServiceId"] == other["NatServiceId"]),
        ({"ClientTokens": [token]}, first),
        ({"Tags": ["zone=a"]}, first),
        ({"TagValues": ["a"]}, first),
        ({"NetIds": [net]}, lambda n: True),
        ({"SubnetIds": [subnet]}, lambda n: True),
        ({"States": ["available"]}, lambda n: True),
        ({"States": ["deleted"]}, lambda n: False),
        ({"NetIds": [absent_id("vpc")]}, lambda n: False),
    ]:
        check_filter(a.gw.ReadNatServices, "NatServices", "NatServiceId", everything, filters, pred)
    page = a.gw.ReadNatServices(ResultsPerPage=1)
    rest = a.gw.ReadNatServices(ResultsPerPage=1, NextPageToken=page["NextPageToken"])
    assert [n["NatServiceId"] for n in page["NatServices"] + rest["NatServices"]] == \
        [nat["NatServiceId"], other["NatServiceId"]]

    # Deleting frees the public IP; nothing is kept in a `deleted` state.
    assert dry_run(a, "DeleteNatService", NatServiceId=nat["NatServiceId"]).status_code == 200
    assert len(nats(a.gw)) == 2
    for n in (nat, other):
        a.gw.DeleteNatService(NatServiceId=n["NatServiceId"])
        expect_error(a.gw.DeleteNatService, NatServiceId=n["NatServiceId"], status=400, code="5032")
    assert nats(a.gw) == []
    assert a.gw.ReadTags(Filters={"ResourceIds": [nat["NatServiceId"]]})["Tags"] == []
    assert "NatServiceId" not in a.gw.ReadPublicIps(Filters={"PublicIpIds": [ip["PublicIpId"]]})["PublicIps"][0]
    a.gw.UnlinkInternetService(InternetServiceId=igw, NetId=net)
    a.gw.DeleteInternetService(InternetServiceId=igw)
    for p in (ip["PublicIpId"], ip2):
        a.gw.DeletePublicIp(PublicIpId=p)
    a.gw.DeleteSubnet(SubnetId=subnet)
    a.gw.DeleteNet(NetId=net)


def test_at_most_five_per_net_and_bad_requests(a):
    net, subnet, igw = public_net(a.gw, "10.101.0.0/16")
    made, used_ips = [], []
    for _ in range(5):
        ip = a.gw.CreatePublicIp()["PublicIp"]["PublicIpId"]
        used_ips.append(ip)
        made.append(a.gw.CreateNatService(SubnetId=subnet, PublicIpId=ip)["NatService"]["NatServiceId"])
    spare = a.gw.CreatePublicIp()["PublicIp"]["PublicIpId"]
    expect_error(a.gw.CreateNatService, SubnetId=subnet, PublicIpId=spare, status=400, code="10032")
    expect_raw_error(dry_run(a, "CreateNatService", SubnetId=subnet, PublicIpId=spare), status=400, code="10032")
    expect_error(a.gw.CreateNatService, SubnetId=absent_id("subnet"), PublicIpId=spare, status=400, code="5057")
    expect_error(a.gw.CreateNatService, SubnetId=subnet, PublicIpId=absent_id("eipalloc"), status=400, code="5025")
    expect_error(a.gw.CreateNatService, SubnetId=subnet, PublicIpId="198.18.0.1", status=400, code="4104")
    expect_raw_error(a.raw.post("CreateNatService", {"SubnetId": subnet}), status=400, code="7000")
    expect_error(a.gw.DeleteNatService, NatServiceId="nat-xyz", status=400, code="4105")
    for n in made:
        a.gw.DeleteNatService(NatServiceId=n)
    for p in used_ips + [spare]:
        a.gw.DeletePublicIp(PublicIpId=p)
    a.gw.UnlinkInternetService(InternetServiceId=igw, NetId=net)
    a.gw.DeleteInternetService(InternetServiceId=igw)
    a.gw.DeleteSubnet(SubnetId=subnet)
    a.gw.DeleteNet(NetId=net)


def test_another_accounts_nat_subnet_and_public_ip_are_absent(a, b):
    their_net, their_subnet, their_igw = public_net(b.gw, "10.102.0.0/16")
    their_ip = b.gw.CreatePublicIp()["PublicIp"]["PublicIpId"]
    token = unique("shared-token")
    theirs = b.gw.CreateNatService(SubnetId=their_subnet, PublicIpId=their_ip, ClientToken=token)["NatService"]["NatServiceId"]
    my_net, my_subnet, my_igw = public_net(a.gw, "10.102.0.0/16")
    my_ip = a.gw.CreatePublicIp()["PublicIp"]["PublicIpId"]
    assert nats(a.gw, NatServiceIds=[theirs]) == []
    same_as_absent(a.gw.DeleteNatService, lambda i: {"NatServiceId": i}, theirs, absent_id("nat"))
    same_as_absent(a.gw.CreateNatService, lambda i: {"SubnetId": i, "PublicIpId": my_ip}, their_subnet, absent_id("subnet"))
    same_as_absent(a.gw.CreateNatService, lambda i: {"SubnetId": my_subnet, "PublicIpId": i}, their_ip, absent_id("eipalloc"))
    same_as_absent(a.gw.CreateTags, lambda i: {"ResourceIds": [i], "Tags": [{"Key": "k", "Value": "v"}]}, theirs, absent_id("nat"))
    # A ClientToken is the caller's: the same token elsewhere makes a new NAT service.
    mine = a.gw.CreateNatService(SubnetId=my_subnet, PublicIpId=my_ip, ClientToken=token)["NatService"]["NatServiceId"]
    assert mine != theirs
    for acct, nat, ip, igw, net, subnet in ((a, mine, my_ip, my_igw, my_net, my_subnet),
                                            (b, theirs, their_ip, their_igw, their_net, their_subnet)):
        acct.gw.DeleteNatService(NatServiceId=nat)
        acct.gw.DeletePublicIp(PublicIpId=ip)
        acct.gw.UnlinkInternetService(InternetServiceId=igw, NetId=net)
        acct.gw.DeleteInternetService(InternetServiceId=igw)
        acct.gw.DeleteSubnet(SubnetId=subnet)
        acct.gw.DeleteNet(NetId=net)
