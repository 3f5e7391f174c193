"""Internet services through the official SDK: CreateInternetService,
ReadInternetServices (filters, pagination, tags), LinkInternetService,
UnlinkInternetService, DeleteInternetService — one per Net at most (9024), unlink
from the wrong Net (9026), deleting a linked one, a Net with one linked cannot be
deleted (9066), DryRun, and another account's service or Net answers exactly like
an absent one."""

import re

import pytest

from socle_lib import absent_id, check_filter, dry_run, expect_error, expect_raw_error, read_all, same_as_absent

IGW_RE = re.compile(r"^igw-[0-9a-f]{8}$")


@pytest.fixture(scope="module")
def a(new_account):
    return new_account("igw-a")


@pytest.fixture(scope="module")
def b(new_account):
    return new_account("igw-b")


def igws(gw, **filters) -> list[dict]:
    return read_all(gw.ReadInternetServices, "InternetServices", filters)


def test_create_link_read_unlink_delete(a):
    first = a.gw.CreateInternetService()["InternetService"]
    assert IGW_RE.match(first["InternetServiceId"]), first
    # Unlinked: no Net, no link state.
    assert first == {"InternetServiceId": first["InternetServiceId"], "Tags": []}, first
    second = a.gw.CreateInternetService()["InternetService"]["InternetServiceId"]
    net = a.gw.CreateNet(IpRange="10.60.0.0/16")["Net"]["NetId"]
    a.gw.LinkInternetService(InternetServiceId=first["InternetServiceId"], NetId=net)
    a.gw.CreateTags(ResourceIds=[first["InternetServiceId"]], Tags=[{"Key": "role", "Value": "uplink"}])
    everything = igws(a.gw)
    assert [i["InternetServiceId"] for i in everything] == [first["InternetServiceId"], second]
    assert everything[0] == {"InternetServiceId": first["InternetServiceId"], "NetId": net, "State": "available",
                             "Tags": [{"Key": "role", "Value": "uplink"}]}, everything[0]
    assert everything[1] == {"InternetServiceId": second, "Tags": []}, everything[1]
    linked = lambda i: i.get("NetId") == net  # noqa: E731
    check_filter(a.gw.ReadInternetServices, "InternetServices", "InternetServiceId", everything,
                 {"InternetServiceIds": [second]}, lambda i: i["InternetServiceId"] == second, include=[second])
    check_filter(a.gw.ReadInternetServices, "InternetServices", "InternetServiceId", everything,
                 {"LinkNetIds": [net]}, linked, include=[first["InternetServiceId"]])
    check_filter(a.gw.ReadInternetServices, "InternetServices", "InternetServiceId", everything,
                 {"LinkStates": ["available"]}, linked, exclude=[second])
    check_filter(a.gw.ReadInternetServices, "InternetServices", "InternetServiceId", everything,
                 {"Tags": ["role=uplink"]}, linked)
    check_filter(a.gw.ReadInternetServices, "InternetServices", "InternetServiceId", everything,
                 {"TagKeys": ["nope"]}, lambda i: False)
    page = a.gw.ReadInternetServices(ResultsPerPage=1)
    rest = a.gw.ReadInternetServices(ResultsPerPage=1, NextPageToken=page["NextPageToken"])
    assert [i["InternetServiceId"] for i in page["InternetServices"] + rest["InternetServices"]] == \
        [first["InternetServiceId"], second]
    assert not rest.get("NextPageToken")
    assert a.gw.ReadTags(Filters={"ResourceIds": [first["InternetServiceId"]]})["Tags"] == [
        {"Key": "role", "Value": "uplink", "ResourceId": first["InternetServiceId"], "ResourceType": "internet-gateway"}]

    # One per Net, one Net per service; a linked one stays; unlink from its own Net only.
    expect_error(a.gw.LinkInternetService, InternetServiceId=first["InternetServiceId"], NetId=net, status=400, code="9024")
    err = expect_error(a.gw.LinkInternetService, InternetServiceId=second, NetId=net, status=400, code="9024")
    assert first["InternetServiceId"] in err.details, err
    other_net = a.gw.CreateNet(IpRange="10.61.0.0/16")["Net"]["NetId"]
    expect_error(a.gw.LinkInternetService, InternetServiceId=first["InternetServiceId"], NetId=other_net,
                 status=400, code="9024")
    expect_error(a.gw.DeleteInternetService, InternetServiceId=first["InternetServiceId"], status=400, code="9024")
    expect_error(a.gw.UnlinkInternetService, InternetServiceId=first["InternetServiceId"], NetId=other_net,
                 status=400, code="9026")
    expect_error(a.gw.UnlinkInternetService, InternetServiceId=second, NetId=net, status=400, code="9026")
    err = expect_error(a.gw.DeleteNet, NetId=net, status=400, code="9066")
    assert first["InternetServiceId"] in err.details, err

    # DryRun checks and changes nothing.
    assert dry_run(a, "UnlinkInternetService", InternetServiceId=first["InternetServiceId"], NetId=net).status_code == 200
    expect_raw_error(dry_run(a, "UnlinkInternetService", InternetServiceId=second, NetId=net), status=400, code="9026")
    assert dry_run(a, "LinkInternetService", InternetServiceId=second, NetId=other_net).status_code == 200
    assert dry_run(a, "CreateInternetService").status_code == 200
    assert dry_run(a, "DeleteInternetService", InternetServiceId=second).status_code == 200
    assert igws(a.gw) == everything

    a.gw.UnlinkInternetService(InternetServiceId=first["InternetServiceId"], NetId=net)
    assert igws(a.gw, InternetServiceIds=[first["InternetServiceId"]])[0].get("NetId") is None
    a.gw.LinkInternetService(InternetServiceId=second, NetId=net)  # the Net's place is free again
    a.gw.UnlinkInternetService(InternetServiceId=second, NetId=net)
    for igw in (first["InternetServiceId"], second):
        a.gw.DeleteInternetService(InternetServiceId=igw)
        expect_error(a.gw.DeleteInternetService, InternetServiceId=igw, status=400, code="5019")
    assert a.gw.ReadTags(Filters={"ResourceIds": [first["InternetServiceId"]]})["Tags"] == []
    a.gw.DeleteNet(NetId=net)
    a.gw.DeleteNet(NetId=other_net)


def test_bad_requests(a):
    expect_error(a.gw.DeleteInternetService, InternetServiceId="igw-zz", status=400, code="4105")
    expect_error(a.gw.DeleteInternetService, InternetServiceId="vpc-12345678", status=400, code="4104")
    expect_raw_error(a.raw.post("LinkInternetService", {"InternetServiceId": absent_id("igw")}), status=400, code="7000")
    expect_error(a.gw.LinkInternetService, InternetServiceId=absent_id("igw"), NetId=absent_id("vpc"),
                 status=400, code="5019")
    igw = a.gw.CreateInternetService()["InternetService"]["InternetServiceId"]
    expect_error(a.gw.LinkInternetService, InternetServiceId=igw, NetId=absent_id("vpc"), status=400, code="5065")
    expect_raw_error(a.raw.post("ReadInternetServices", {"Filters": {"Nope": ["x"]}}), status=400, code="4045")
    a.gw.DeleteInternetService(InternetServiceId=igw)


def test_another_accounts_service_or_net_is_absent(a, b):
    theirs = b.gw.CreateInternetService()["InternetService"]["InternetServiceId"]
    their_net = b.gw.CreateNet(IpRange="10.62.0.0/16")["Net"]["NetId"]
    b.gw.LinkInternetService(InternetServiceId=theirs, NetId=their_net)
    mine = a.gw.CreateInternetService()["InternetService"]["InternetServiceId"]
    my_net = a.gw.CreateNet(IpRange="10.62.0.0/16")["Net"]["NetId"]
    fake, fake_net = absent_id("igw"), absent_id("vpc")
    assert igws(a.gw, InternetServiceIds=[theirs]) == []
    same_as_absent(a.gw.DeleteInternetService, lambda i: {"InternetServiceId": i}, theirs, fake)
    same_as_absent(a.gw.LinkInternetService, lambda i: {"InternetServiceId": i, "NetId": my_net}, theirs, fake)
    same_as_absent(a.gw.UnlinkInternetService, lambda i: {"InternetServiceId": i, "NetId": their_net}, theirs, fake)
    same_as_absent(a.gw.LinkInternetService, lambda n: {"InternetServiceId": mine, "NetId": n}, their_net, fake_net)
    same_as_absent(a.gw.CreateTags, lambda i: {"ResourceIds": [i], "Tags": [{"Key": "k", "Value": "v"}]}, theirs, fake)
    assert igws(b.gw)[0]["NetId"] == their_net
    b.gw.UnlinkInternetService(InternetServiceId=theirs, NetId=their_net)
    b.gw.DeleteInternetService(InternetServiceId=theirs)
    b.gw.DeleteNet(NetId=their_net)
    a.gw.DeleteInternetService(InternetServiceId=mine)
    a.gw.DeleteNet(NetId=my_net)
