"""Public IPs through the official SDK: CreatePublicIp (lowest free address of the
operator's pool, unique in the cloud; `socle up --public-ip-pool` and its exhaustion,
10011, on a second server with a tiny pool), ReadPublicIps (filters, pagination,
tags), DeletePublicIp (by ID or address), LinkPublicIp / UnlinkPublicIp refusals,
DryRun, and another account's public IPs answering exactly like absent ones. Linking
to VMs and NICs."""

import ipaddress
import re

import pytest

from conftest import SocleServer, socle_binary
from slot import Slot
from socle_lib import (Account, absent_id, check_filter, create_vms, dry_run, expect_error, expect_raw_error,
                       public_net, read_all, same_as_absent, wait_vms_state)

EIP_RE = re.compile(r"^eipalloc-[0-9a-f]{8}$")
DEFAULT_POOL = ipaddress.ip_network("198.18.0.0/24")


@pytest.fixture(scope="module")
def a(new_account):
    return new_account("eip-a")


@pytest.fixture(scope="module")
def b(new_account):
    return new_account("eip-b")


def ips(gw, **filters) -> list[dict]:
    return read_all(gw.ReadPublicIps, "PublicIps", filters)


def test_read_public_ip_ranges_gives_the_default_pool(a):
    assert a.gw.ReadPublicIpRanges()["PublicIps"] == ["198.18.0.0/24"]


def test_create_read_tag_delete(a, b):
    first = a.gw.CreatePublicIp()["PublicIp"]
    assert EIP_RE.match(first["PublicIpId"]), first
    assert first == {"PublicIpId": first["PublicIpId"], "PublicIp": first["PublicIp"], "Tags": []}, first
    assert ipaddress.ip_address(first["PublicIp"]) in DEFAULT_POOL
    second = a.gw.CreatePublicIp()["PublicIp"]
    theirs = b.gw.CreatePublicIp()["PublicIp"]
    assert len({first["PublicIp"], second["PublicIp"], theirs["PublicIp"]}) == 3, "addresses are unique in the cloud"
    a.gw.CreateTags(ResourceIds=[second["PublicIpId"]], Tags=[{"Key": "dns", "Value": "www"}])
    everything = ips(a.gw)
    assert [p["PublicIpId"] for p in everything] == [first["PublicIpId"], second["PublicIpId"]]
    assert everything[1]["Tags"] == [{"Key": "dns", "Value": "www"}]
    assert a.gw.ReadTags(Filters={"ResourceIds": [second["PublicIpId"]]})["Tags"][0]["ResourceType"] == "public-ip"
    for filters, pred in [
        ({"PublicIpIds": [first["PublicIpId"]]}, lambda p: p["PublicIpId"] == first["PublicIpId"]),
        ({"PublicIps": [second["PublicIp"], theirs["PublicIp"]]}, lambda p: p["PublicIp"] == second["PublicIp"]),
        ({"Tags": ["dns=www"]}, lambda p: p["PublicIpId"] == second["PublicIpId"]),
        ({"TagKeys": ["dns"]}, lambda p: p["PublicIpId"] == second["PublicIpId"]),
        # Unlinked addresses have no link, NIC, VM or private IP to match.
        ({"LinkPublicIpIds": [absent_id("eipassoc")]}, lambda p: False),
        ({"NicIds": [absent_id("eni")]}, lambda p: False),
        ({"VmIds": [absent_id("i")]}, lambda p: False),
        ({"PrivateIps": ["10.0.0.4"]}, lambda p: False),
        ({"NicAccountIds": ["123456789012"]}, lambda p: False),
    ]:
        check_filter(a.gw.ReadPublicIps, "PublicIps", "PublicIpId", everything, filters, pred)
    expect_raw_error(a.raw.post("ReadPublicIps", {"Filters": {"Placements": ["vpc"]}}), status=400, code="4047")
    page = a.gw.ReadPublicIps(ResultsPerPage=1)
    rest = a.gw.ReadPublicIps(ResultsPerPage=1, NextPageToken=page["NextPageToken"])
    assert [p["PublicIpId"] for p in page["PublicIps"] + rest["PublicIps"]] == [first["PublicIpId"], second["PublicIpId"]]

    # DryRun allocates nothing and deletes nothing.
    assert dry_run(a, "CreatePublicIp").status_code == 200
    assert dry_run(a, "DeletePublicIp", PublicIpId=first["PublicIpId"]).status_code == 200
    assert ips(a.gw) == everything

    # Delete by address, by ID; both must agree.
    expect_error(a.gw.DeletePublicIp, PublicIpId=first["PublicIpId"], PublicIp=second["PublicIp"], status=400, code="4047")
    expect_raw_error(a.raw.post("DeletePublicIp", {}), status=400, code="7000")
    expect_error(a.gw.DeletePublicIp, PublicIp="not-an-ip", status=400, code="4047")
    expect_error(a.gw.DeletePublicIp, PublicIpId="eipalloc-xyz", status=400, code="4105")
    a.gw.DeletePublicIp(PublicIp=first["PublicIp"])
    a.gw.DeletePublicIp(PublicIpId=second["PublicIpId"], PublicIp=second["PublicIp"])
    expect_error(a.gw.DeletePublicIp, PublicIpId=second["PublicIpId"], status=400, code="5025")
    expect_error(a.gw.DeletePublicIp, PublicIp=first["PublicIp"], status=400, code="5025")
    assert ips(a.gw) == []
    assert a.gw.ReadTags(Filters={"ResourceIds": [second["PublicIpId"]]})["Tags"] == []
    b.gw.DeletePublicIp(PublicIpId=theirs["PublicIpId"])


def test_link_and_unlink_refusals_without_nics(a):
    ip = a.gw.CreatePublicIp()["PublicIp"]
    pid = ip["PublicIpId"]
    expect_error(a.gw.LinkPublicIp, PublicIpId=pid, VmId=absent_id("i"), status=400, code="5063")
    expect_error(a.gw.LinkPublicIp, PublicIp=ip["PublicIp"], NicId=absent_id("eni"), status=400, code="5036")
    expect_error(a.gw.LinkPublicIp, PublicIpId=pid, VmId=absent_id("i"), NicId=absent_id("eni"), status=400, code="4047")
    expect_error(a.gw.LinkPublicIp, PublicIpId=pid, status=400, code="7000")
    expect_error(a.gw.LinkPublicIp, VmId=absent_id("i"), status=400, code="7000")
    expect_error(a.gw.LinkPublicIp, PublicIpId=absent_id("eipalloc"), VmId=absent_id("i"), status=400, code="5025")
    expect_raw_error(dry_run(a, "LinkPublicIp", PublicIpId=pid, VmId=absent_id("i")), status=400, code="5063")
    expect_error(a.gw.UnlinkPublicIp, LinkPublicIpId=absent_id("eipassoc"), status=400, code="5026")
    expect_error(a.gw.UnlinkPublicIp, PublicIp=ip["PublicIp"], status=400, code="5026")
    expect_error(a.gw.UnlinkPublicIp, PublicIp="198.51.100.1", status=400, code="5025")
    expect_raw_error(a.raw.post("UnlinkPublicIp", {}), status=400, code="7000")
    a.gw.DeletePublicIp(PublicIpId=pid)


def test_another_accounts_public_ip_is_absent(a, b):
    theirs = b.gw.CreatePublicIp()["PublicIp"]
    fake = absent_id("eipalloc")
    assert ips(a.gw, PublicIpIds=[theirs["PublicIpId"]]) == [] and ips(a.gw, PublicIps=[theirs["PublicIp"]]) == []
    same_as_absent(a.gw.DeletePublicIp, lambda i: {"PublicIpId": i}, theirs["PublicIpId"], fake)
    # An address of theirs and one nobody holds read alike.
    same_as_absent(a.gw.DeletePublicIp, lambda i: {"PublicIp": i}, theirs["PublicIp"], "198.51.100.7")
    same_as_absent(a.gw.UnlinkPublicIp, lambda i: {"PublicIp": i}, theirs["PublicIp"], "198.51.100.7")
    same_as_absent(a.gw.LinkPublicIp, lambda i: {"PublicIpId": i, "VmId": "i-12345678"}, theirs["PublicIpId"], fake)
    same_as_absent(a.gw.CreateTags, lambda i: {"ResourceIds": [i], "Tags": [{"Key": "k", "Value": "v"}]},
                   theirs["PublicIpId"], fake)
    assert [p["PublicIpId"] for p in ips(b.gw)] == [theirs["PublicIpId"]]
    b.gw.DeletePublicIp(PublicIpId=theirs["PublicIpId"])


@pytest.fixture(scope="module")
def small_pool():
    """A second `socle up` whose pool is 198.18.7.0/30 (two usable addresses) and one
    single address: three public IPs in all."""
    slot = Slot()
    server = SocleServer(socle_binary(), slot, slot.path / "socle.log",
                         extra_args=("--public-ip-pool", "198.18.7.0/30,198.18.7.9"))
    server.start()
    try:
        server.wait_ready()
        c = server.credentials
        yield Account(name="default", access_key=c["AccessKey"], secret_key=c["SecretKey"], region=c["Region"],
                      endpoint=c["Endpoint"])
    finally:
        problems = server.stop()
        slot.release()
        assert not problems, problems


def test_the_pool_is_used_lowest_first_and_runs_out(small_pool):
    gw = small_pool.gw
    # ReadPublicIpRanges needs no signature and tells the pool.
    assert small_pool.raw.ok("ReadPublicIpRanges", {}, sign_it=False)["PublicIps"] == ["198.18.7.0/30", "198.18.7.9/32"]
    got = [gw.CreatePublicIp()["PublicIp"] for _ in range(3)]
    assert [p["PublicIp"] for p in got] == ["198.18.7.1", "198.18.7.2", "198.18.7.9"], got
    err = expect_error(gw.CreatePublicIp, status=400, code="10011", type_="TooManyResources (QuotaExceded)")
    assert "198.18.7.0/30" in err.details, err
    expect_raw_error(dry_run(small_pool, "CreatePublicIp"), status=400, code="10011")
    gw.DeletePublicIp(PublicIpId=got[0]["PublicIpId"])
    assert gw.CreatePublicIp()["PublicIp"]["PublicIp"] == "198.18.7.1", "a freed address is handed out first"


# ------------------------------------------------------------------ with NICs


def test_link_to_a_vm_in_a_net_and_unlink(a, image_id):
    net = a.gw.CreateNet(IpRange="10.90.0.0/16")["Net"]["NetId"]
    subnet = a.gw.CreateSubnet(NetId=net, IpRange="10.90.1.0/24")["Subnet"]["SubnetId"]
    vm = create_vms(a.gw, image_id, SubnetId=subnet)[0]
    nic = vm["Nics"][0]
    private = vm["PrivateIp"]
    ip = a.gw.CreatePublicIp()["PublicIp"]
    # No internet service in the Net: refused, 9045.
    err = expect_error(a.gw.LinkPublicIp, PublicIpId=ip["PublicIpId"], VmId=vm["VmId"], status=400, code="9045")
    assert net in err.details, err
    igw = a.gw.CreateInternetService()["InternetService"]["InternetServiceId"]
    a.gw.LinkInternetService(InternetServiceId=igw, NetId=net)
    assert dry_run(a, "LinkPublicIp", PublicIpId=ip["PublicIpId"], VmId=vm["VmId"]).status_code == 200
    assert ips(a.gw, PublicIpIds=[ip["PublicIpId"]])[0].get("LinkPublicIpId") is None
    link = a.gw.LinkPublicIp(PublicIpId=ip["PublicIpId"], VmId=vm["VmId"])["LinkPublicIpId"]
    assert re.match(r"^eipassoc-[0-9a-f]{8}$", link), link
    got = ips(a.gw, PublicIpIds=[ip["PublicIpId"]])[0]
    assert got == {**ip, "LinkPublicIpId": link, "NicId": nic["NicId"], "PrivateIp": private, "VmId": vm["VmId"],
                   "NicAccountId": got["NicAccountId"]}, got
    everything = ips(a.gw)
    for filters in ({"NicIds": [nic["NicId"]]}, {"VmIds": [vm["VmId"]]}, {"PrivateIps": [private]},
                    {"LinkPublicIpIds": [link]}):
        check_filter(a.gw.ReadPublicIps, "PublicIps", "PublicIpId", everything, filters,
                     lambda p: p["PublicIpId"] == ip["PublicIpId"])
    # In a Net, relinking needs AllowRelink; the internet service must stay while linked.
    other = a.gw.CreatePublicIp()["PublicIp"]
    expect_error(a.gw.LinkPublicIp, PublicIpId=other["PublicIpId"], NicId=nic["NicId"], status=400, code="9031")
    expect_error(a.gw.LinkPublicIp, PublicIpId=ip["PublicIpId"], NicId=nic["NicId"], PrivateIp="10.90.1.250",
                 status=400, code="4030")
    expect_error(a.gw.UnlinkInternetService, InternetServiceId=igw, NetId=net, status=400, code="9029")
    a.gw.UnlinkPublicIp(LinkPublicIpId=link)
    expect_error(a.gw.UnlinkPublicIp, LinkPublicIpId=link, status=400, code="5026")
    link = a.gw.LinkPublicIp(PublicIp=ip["PublicIp"], NicId=nic["NicId"], PrivateIp=private)["LinkPublicIpId"]
    a.gw.UnlinkPublicIp(PublicIp=ip["PublicIp"])
    a.gw.LinkPublicIp(PublicIpId=ip["PublicIpId"], VmId=vm["VmId"])
    # Deleting a linked public IP unlinks it; deleting the VM unlinks the others.
    a.gw.DeletePublicIp(PublicIpId=ip["PublicIpId"])
    a.gw.LinkPublicIp(PublicIpId=other["PublicIpId"], VmId=vm["VmId"])
    a.gw.DeleteVms(VmIds=[vm["VmId"]])
    wait_vms_state(a.gw, [vm["VmId"]], "terminated")
    assert ips(a.gw, PublicIpIds=[other["PublicIpId"]])[0].get("LinkPublicIpId") is None
    a.gw.DeletePublicIp(PublicIpId=other["PublicIpId"])
    a.gw.UnlinkInternetService(InternetServiceId=igw, NetId=net)
    a.gw.DeleteInternetService(InternetServiceId=igw)
    a.gw.DeleteSubnet(SubnetId=subnet)
    a.gw.DeleteNet(NetId=net)


def test_public_cloud_vm_needs_no_internet_service_and_relinks_by_default(a, image_id):
    vm1, vm2 = create_vms(a.gw, image_id, count=2)
    ip = a.gw.CreatePublicIp()["PublicIp"]
    a.gw.LinkPublicIp(PublicIpId=ip["PublicIpId"], VmId=vm1["VmId"])
    a.gw.LinkPublicIp(PublicIpId=ip["PublicIpId"], VmId=vm2["VmId"])  # AllowRelink defaults to true here
    assert ips(a.gw, PublicIpIds=[ip["PublicIpId"]])[0]["VmId"] == vm2["VmId"]
    expect_error(a.gw.LinkPublicIp, PublicIpId=ip["PublicIpId"], VmId=vm1["VmId"], AllowRelink=False,
                 status=400, code="9031")
    a.gw.DeleteVms(VmIds=[vm1["VmId"], vm2["VmId"]])
    wait_vms_state(a.gw, [vm1["VmId"], vm2["VmId"]], "terminated")
    a.gw.DeletePublicIp(PublicIpId=ip["PublicIpId"])


def test_a_public_net_helper_vm_gets_its_address(a, image_id):
    net, subnet, igw = public_net(a.gw, "10.91.0.0/16")
    vm = create_vms(a.gw, image_id, SubnetId=subnet)[0]
    ip = a.gw.CreatePublicIp()["PublicIp"]
    a.gw.LinkPublicIp(PublicIpId=ip["PublicIpId"], VmId=vm["VmId"])
    err = expect_error(a.gw.DeleteNet, NetId=net, status=400, code="9066")
    assert subnet in err.details or "NIC" in err.details, err
    a.gw.DeleteVms(VmIds=[vm["VmId"]])
    wait_vms_state(a.gw, [vm["VmId"]], "terminated")
    a.gw.DeletePublicIp(PublicIpId=ip["PublicIpId"])
    a.gw.UnlinkInternetService(InternetServiceId=igw, NetId=net)
    a.gw.DeleteInternetService(InternetServiceId=igw)
    a.gw.DeleteSubnet(SubnetId=subnet)
    a.gw.DeleteNet(NetId=net)


def test_vms_get_a_public_ip_at_launch_in_the_public_cloud_and_with_map_public_ip_on_launch(a, image_id):
    held = ips(a.gw)
    public = create_vms(a.gw, image_id, BootOnCreation=False)[0]
    addr = public["PublicIp"]
    assert ipaddress.ip_address(addr) in DEFAULT_POOL, public
    assert public["Nics"][0]["LinkPublicIp"]["PublicIp"] == addr, public["Nics"]
    # Not the account's to manage: not listed, not deletable, not counted.
    assert ips(a.gw) == held
    expect_error(a.gw.DeletePublicIp, PublicIp=addr, status=400, code="5025")

    # In a Net: only in a subnet with MapPublicIpOnLaunch.
    net = a.gw.CreateNet(IpRange="10.92.0.0/16")["Net"]["NetId"]
    subnet = a.gw.CreateSubnet(NetId=net, IpRange="10.92.1.0/24")["Subnet"]["SubnetId"]
    plain = create_vms(a.gw, image_id, SubnetId=subnet, BootOnCreation=False)[0]
    assert "PublicIp" not in plain, plain
    a.gw.UpdateSubnet(SubnetId=subnet, MapPublicIpOnLaunch=True)
    mapped = create_vms(a.gw, image_id, SubnetId=subnet, BootOnCreation=False)[0]
    assert ipaddress.ip_address(mapped["PublicIp"]) in DEFAULT_POOL, mapped

    # A public IP of the account linked to the VM takes the place of the
    # launch one, whose address goes back to the pool (lowest first).
    eip = a.gw.CreatePublicIp()["PublicIp"]
    a.gw.LinkPublicIp(PublicIpId=eip["PublicIpId"], VmId=public["VmId"])
    assert a.gw.ReadVms(Filters={"VmIds": [public["VmId"]]})["Vms"][0]["PublicIp"] == eip["PublicIp"]
    again = a.gw.CreatePublicIp()["PublicIp"]
    assert again["PublicIp"] == addr, (again, addr)

    # Deleting the VM releases its launch address too.
    a.gw.DeleteVms(VmIds=[mapped["VmId"]])
    wait_vms_state(a.gw, [mapped["VmId"]], "terminated")
    third = a.gw.CreatePublicIp()["PublicIp"]
    assert third["PublicIp"] == mapped["PublicIp"], (third, mapped["PublicIp"])

    ids = [public["VmId"], plain["VmId"]]
    a.gw.DeleteVms(VmIds=ids)
    wait_vms_state(a.gw, ids, "terminated")
    for p in (eip, again, third):
        a.gw.DeletePublicIp(PublicIpId=p["PublicIpId"])
    a.gw.DeleteSubnet(SubnetId=subnet)
    a.gw.DeleteNet(NetId=net)


def test_the_public_ip_quota_counts_the_accounts_own(new_account, image_id):
    c = new_account("eip-quota")
    got = [c.gw.CreatePublicIp()["PublicIp"]["PublicIpId"] for _ in range(10)]
    before = ips(c.gw)
    err = expect_error(c.gw.CreatePublicIp, status=400, code="10011")
    assert "quota" in err.details, err
    assert ips(c.gw) == before
    quota = [q for t in c.gw.ReadQuotas(Filters={"QuotaNames": ["public_ip_limit"]})["QuotaTypes"] for q in t["Quotas"]]
    assert [(q["MaxValue"], q["UsedValue"]) for q in quota] == [(10, 10)], quota
    # Addresses given with VMs at launch do not count.
    vm = create_vms(c.gw, image_id, BootOnCreation=False)[0]
    assert vm["PublicIp"], vm
    c.gw.DeleteVms(VmIds=[vm["VmId"]])
    wait_vms_state(c.gw, [vm["VmId"]], "terminated")
    for i in got:
        c.gw.DeletePublicIp(PublicIpId=i)
