"""NICs through the official SDK: CreateNic, ReadNics (filters, tags), UpdateNic,
DeleteNic, LinkNic/UnlinkNic on a VM, LinkPrivateIps/UnlinkPrivateIps, and Nics in
CreateVms. Every refused input changes nothing; another account's NIC answers
exactly like an absent one. (Hot-plug into a running guest is proven with a real
guest in crates/socle/tests/networking.rs.)"""

import time

import pytest

from socle_lib import absent_id, expect_error, same_as_absent, wait_vms_state

SMALL = "tinav5.c1r1p2"


@pytest.fixture(scope="module")
def a(new_account):
    return new_account("nic-a")


@pytest.fixture(scope="module")
def b(new_account):
    return new_account("nic-b")


@pytest.fixture(scope="module")
def net(a):
    """A Net 10.40.0.0/16 with subnet 10.40.1.0/24 and a group 'web'."""
    net = a.gw.CreateNet(IpRange="10.40.0.0/16")["Net"]["NetId"]
    subnet = a.gw.CreateSubnet(NetId=net, IpRange="10.40.1.0/24")["Subnet"]["SubnetId"]
    web = a.gw.CreateSecurityGroup(NetId=net, SecurityGroupName="web", Description="web")["SecurityGroup"]
    return {"net": net, "subnet": subnet, "web": web["SecurityGroupId"]}


def nic_of(gw, nic_id):
    nics = gw.ReadNics(Filters={"NicIds": [nic_id]})["Nics"]
    assert len(nics) <= 1, nics
    return nics[0] if nics else None


def nic_ids(gw):
    return sorted(n["NicId"] for n in gw.ReadNics()["Nics"])


def addresses(nic):
    return sorted(p["PrivateIp"] for p in nic["PrivateIps"])


def wait_nic_state(gw, nic_id, state, timeout=60):
    deadline = time.monotonic() + timeout
    while True:
        nic = nic_of(gw, nic_id)
        if nic is not None and nic["State"] == state:
            return nic
        if time.monotonic() > deadline:
            pytest.fail(f"NIC {nic_id} did not become {state} within {timeout}s: {nic}")
        time.sleep(0.3)


def test_create_read_update_delete(a, b, net):
    nic = a.gw.CreateNic(SubnetId=net["subnet"], Description="backend",
                         PrivateIps=[{"PrivateIp": "10.40.1.20"}, {"PrivateIp": "10.40.1.21", "IsPrimary": True}],
                         SecurityGroupIds=[net["web"]])["Nic"]
    nid = nic["NicId"]
    assert nid.startswith("eni-") and nic["MacAddress"].startswith("aa:fc:"), nic
    assert (nic["State"], nic["SubnetId"], nic["NetId"], nic["Description"]) == \
        ("available", net["subnet"], net["net"], "backend"), nic
    assert nic["SubregionName"].startswith("eu-west-2"), nic
    assert "LinkNic" not in nic, nic
    assert nic["PrivateIps"] == [
        {"IsPrimary": True, "PrivateIp": "10.40.1.21", "PrivateDnsName": "ip-10-40-1-21.eu-west-2.compute.internal"},
        {"IsPrimary": False, "PrivateIp": "10.40.1.20", "PrivateDnsName": "ip-10-40-1-20.eu-west-2.compute.internal"},
    ], nic
    assert nic["PrivateDnsName"] == "ip-10-40-1-21.eu-west-2.compute.internal"
    assert nic["SecurityGroups"] == [{"SecurityGroupId": net["web"], "SecurityGroupName": "web"}]
    assert nic_of(a.gw, nid) == {**nic, "Tags": []}

    # Without groups: the Net's default group; without addresses: the lowest free one.
    plain = a.gw.CreateNic(SubnetId=net["subnet"])["Nic"]
    assert addresses(plain) == ["10.40.1.4"], plain
    assert plain["SecurityGroups"][0]["SecurityGroupName"] == "default", plain

    # Filters and tags.
    a.gw.CreateTags(ResourceIds=[nid], Tags=[{"Key": "role", "Value": "backend"}])
    assert [n["NicId"] for n in a.gw.ReadNics(Filters={"TagKeys": ["role"]})["Nics"]] == [nid]
    assert [n["NicId"] for n in a.gw.ReadNics(Filters={"PrivateIpsPrivateIps": ["10.40.1.20"]})["Nics"]] == [nid]
    assert [n["NicId"] for n in a.gw.ReadNics(Filters={"SecurityGroupNames": ["web"]})["Nics"]] == [nid]
    assert [n["NicId"] for n in a.gw.ReadNics(Filters={"MacAddresses": [plain["MacAddress"]]})["Nics"]] == [plain["NicId"]]
    assert sorted(n["NicId"] for n in a.gw.ReadNics(Filters={"SubnetIds": [net["subnet"]], "States": ["available"]})["Nics"]) \
        == sorted([nid, plain["NicId"]])

    # Refusals change nothing.
    before = nic_ids(a.gw)
    other_net = a.gw.CreateNet(IpRange="10.41.0.0/16")["Net"]["NetId"]
    foreign = a.gw.CreateSecurityGroup(NetId=other_net, SecurityGroupName="x", Description="x")["SecurityGroup"]
    for params, code in [
        ({"PrivateIps": [{"PrivateIp": "10.40.1.20"}]}, "9001"),                 # taken
        ({"PrivateIps": [{"PrivateIp": "10.40.2.9"}]}, "4030"),                  # outside the subnet
        ({"PrivateIps": [{"PrivateIp": "10.40.1.3"}]}, "4030"),                  # reserved
        ({"PrivateIps": [{"PrivateIp": "nope"}]}, "4047"),
        ({"PrivateIps": [{"PrivateIp": "10.40.1.30", "IsPrimary": True},
                         {"PrivateIp": "10.40.1.31", "IsPrimary": True}]}, "4047"),  # two primaries
        ({"PrivateIps": [{"PrivateIp": f"10.40.1.{i}"} for i in range(40, 51)]}, "10021"),  # 11 > 10
        ({"SecurityGroupIds": [foreign["SecurityGroupId"]]}, "4047"),
        ({"SecurityGroupIds": [absent_id("sg")]}, "5020"),
        ({"Description": "d" * 256}, "4106"),
    ]:
        expect_error(a.gw.CreateNic, SubnetId=net["subnet"], status=400, code=code, **params)
    expect_error(a.gw.CreateNic, SubnetId=absent_id("subnet"), status=400, code="5057")
    expect_error(a.gw.CreateNic, SubnetId="vpc-12345678", status=400, code="4104")
    expect_error(a.gw.ReadNics, Filters={"Bogus": ["x"]}, status=400)
    assert nic_ids(a.gw) == before

    # UpdateNic: description and groups (replaced); refusals change nothing.
    up = a.gw.UpdateNic(NicId=nid, Description="db", SecurityGroupIds=[net["web"]])["Nic"]
    assert up["Description"] == "db" and up["Tags"] == [{"Key": "role", "Value": "backend"}], up
    default = plain["SecurityGroups"][0]["SecurityGroupId"]
    up = a.gw.UpdateNic(NicId=nid, SecurityGroupIds=[default, net["web"]])["Nic"]
    assert [g["SecurityGroupId"] for g in up["SecurityGroups"]] == [default, net["web"]], up
    expect_error(a.gw.UpdateNic, NicId=nid, SecurityGroupIds=[foreign["SecurityGroupId"]], status=400, code="4047")
    expect_error(a.gw.UpdateNic, NicId=nid, SecurityGroupIds=[], status=400, code="4047")
    expect_error(a.gw.UpdateNic, NicId=nid, LinkNic={"DeleteOnVmDeletion": True}, status=400, code="6003")
    assert nic_of(a.gw, nid)["SecurityGroups"] == up["SecurityGroups"]

    # Another account: every operation answers as for an absent NIC; its list is empty.
    assert b.gw.ReadNics()["Nics"] == []
    assert b.gw.ReadNics(Filters={"NicIds": [nid]})["Nics"] == []
    for fn, build in [
        (b.gw.UpdateNic, lambda i: {"NicId": i, "Description": "mine"}),
        (b.gw.DeleteNic, lambda i: {"NicId": i}),
        (b.gw.LinkPrivateIps, lambda i: {"NicId": i, "SecondaryPrivateIpCount": 1}),
        (b.gw.UnlinkPrivateIps, lambda i: {"NicId": i, "PrivateIps": ["10.40.1.20"]}),
        (b.gw.CreateTags, lambda i: {"ResourceIds": [i], "Tags": [{"Key": "k", "Value": "v"}]}),
    ]:
        theirs = same_as_absent(fn, build, nid, absent_id("eni"))
        assert "5036" in str(theirs), theirs
    assert nic_of(a.gw, nid)["Description"] == "db"

    # Delete: the addresses are free again, the subnet can go once its NICs are gone.
    expect_error(a.gw.DeleteSubnet, SubnetId=net["subnet"], status=400, code="9057")
    a.gw.DeleteNic(NicId=nid)
    a.gw.DeleteNic(NicId=plain["NicId"])
    assert nic_of(a.gw, nid) is None
    expect_error(a.gw.DeleteNic, NicId=nid, status=400, code="5036")
    again = a.gw.CreateNic(SubnetId=net["subnet"], PrivateIps=[{"PrivateIp": "10.40.1.20"}])["Nic"]
    a.gw.DeleteNic(NicId=again["NicId"])
    a.gw.DeleteSecurityGroup(SecurityGroupId=foreign["SecurityGroupId"])
    a.gw.DeleteNet(NetId=other_net)


def test_private_ips(a, net):
    one = a.gw.CreateNic(SubnetId=net["subnet"], PrivateIps=[{"PrivateIp": "10.40.1.60"}])["Nic"]["NicId"]
    two = a.gw.CreateNic(SubnetId=net["subnet"], PrivateIps=[{"PrivateIp": "10.40.1.70"}])["Nic"]["NicId"]
    a.gw.LinkPrivateIps(NicId=one, PrivateIps=["10.40.1.61", "10.40.1.62"])
    a.gw.LinkPrivateIps(NicId=one, SecondaryPrivateIpCount=2)
    got = addresses(nic_of(a.gw, one))
    assert "10.40.1.60" in got and "10.40.1.61" in got and "10.40.1.62" in got and len(got) == 5, got
    assert [p["PrivateIp"] for p in nic_of(a.gw, one)["PrivateIps"] if p["IsPrimary"]] == ["10.40.1.60"]

    # Taken by another NIC: refused, unless AllowRelink moves a secondary one.
    expect_error(a.gw.LinkPrivateIps, NicId=two, PrivateIps=["10.40.1.61"], status=400, code="9001")
    a.gw.LinkPrivateIps(NicId=two, PrivateIps=["10.40.1.61"], AllowRelink=True)
    assert "10.40.1.61" not in addresses(nic_of(a.gw, one)) and "10.40.1.61" in addresses(nic_of(a.gw, two))
    expect_error(a.gw.LinkPrivateIps, NicId=two, PrivateIps=["10.40.1.60"], AllowRelink=True, status=400, code="9001")

    # Refusals change nothing.
    before = (addresses(nic_of(a.gw, one)), addresses(nic_of(a.gw, two)))
    for params, code in [
        ({"PrivateIps": ["10.40.9.1"]}, "4030"),
        ({"PrivateIps": ["bad"]}, "4047"),
        ({"PrivateIps": ["10.40.1.90"], "SecondaryPrivateIpCount": 1}, "4047"),
        ({}, "7000"),
        ({"SecondaryPrivateIpCount": 9}, "10021"),     # 2 held + 9 > 10
    ]:
        expect_error(a.gw.LinkPrivateIps, NicId=two, status=400, code=code, **params)
    for params, code in [
        ({"PrivateIps": ["10.40.1.70"]}, "4047"),     # the primary stays
        ({"PrivateIps": ["10.40.1.99"]}, "4047"),     # not its address
        ({"PrivateIps": ["10.40.1.61", "bad"]}, "4047"),
    ]:
        expect_error(a.gw.UnlinkPrivateIps, NicId=two, status=400, code=code, **params)
    assert (addresses(nic_of(a.gw, one)), addresses(nic_of(a.gw, two))) == before

    a.gw.UnlinkPrivateIps(NicId=two, PrivateIps=["10.40.1.61"])
    assert addresses(nic_of(a.gw, two)) == ["10.40.1.70"]
    a.gw.LinkPrivateIps(NicId=one, PrivateIps=["10.40.1.61"])   # free again
    a.gw.DeleteNic(NicId=one)
    a.gw.DeleteNic(NicId=two)


def test_link_and_unlink_on_a_vm(a, net, image_id):
    vm = a.gw.CreateVms(ImageId=image_id, VmType=SMALL, SubnetId=net["subnet"], BootOnCreation=False)["Vms"][0]
    vm_id = vm["VmId"]
    extra = a.gw.CreateNic(SubnetId=net["subnet"])["Nic"]["NicId"]

    # Refusals change nothing.
    other_net = a.gw.CreateNet(IpRange="10.42.0.0/16")["Net"]["NetId"]
    other_subnet = a.gw.CreateSubnet(NetId=other_net, IpRange="10.42.1.0/24")["Subnet"]["SubnetId"]
    elsewhere = a.gw.CreateNic(SubnetId=other_subnet)["Nic"]["NicId"]
    public_vm = a.gw.CreateVms(ImageId=image_id, VmType=SMALL, BootOnCreation=False)["Vms"][0]["VmId"]
    for params, code in [
        ({"NicId": extra, "DeviceNumber": 0}, "4047"),          # the primary's
        ({"NicId": extra, "DeviceNumber": 8}, "4047"),
        ({"NicId": elsewhere, "DeviceNumber": 1}, "4047"),      # another Net
        ({"NicId": absent_id("eni"), "DeviceNumber": 1}, "5036"),
    ]:
        expect_error(a.gw.LinkNic, VmId=vm_id, status=400, code=code, **params)
    expect_error(a.gw.LinkNic, VmId=public_vm, NicId=extra, DeviceNumber=1, status=400, code="9062")
    expect_error(a.gw.LinkNic, VmId=absent_id("i"), NicId=extra, DeviceNumber=1, status=400, code="5063")
    assert nic_of(a.gw, extra)["State"] == "available"

    link = a.gw.LinkNic(VmId=vm_id, NicId=extra, DeviceNumber=1)["LinkNicId"]
    assert link.startswith("eni-attach-"), link
    nic = wait_nic_state(a.gw, extra, "in-use")
    assert nic["LinkNic"]["VmId"] == vm_id and nic["LinkNic"]["DeviceNumber"] == 1, nic
    assert nic["LinkNic"]["State"] == "attached" and nic["LinkNic"]["DeleteOnVmDeletion"] is False, nic
    seen = a.gw.ReadVms(Filters={"VmIds": [vm_id]})["Vms"][0]
    assert [n["NicId"] for n in seen["Nics"]] == [vm["Nics"][0]["NicId"], extra], seen["Nics"]
    assert [n["NicId"] for n in a.gw.ReadNics(Filters={"LinkNicVmIds": [vm_id], "LinkNicDeviceNumbers": [1]})["Nics"]] == [extra]

    # On the VM: cannot be deleted or linked again; its device number is taken.
    expect_error(a.gw.DeleteNic, NicId=extra, status=400, code="6003")
    expect_error(a.gw.LinkNic, VmId=vm_id, NicId=extra, DeviceNumber=2, status=400, code="6003")
    spare = a.gw.CreateNic(SubnetId=net["subnet"])["Nic"]["NicId"]
    expect_error(a.gw.LinkNic, VmId=vm_id, NicId=spare, DeviceNumber=1, status=400, code="9004")
    expect_error(a.gw.UnlinkNic, LinkNicId=vm["Nics"][0]["LinkNic"]["LinkNicId"], status=400, code="6003")
    expect_error(a.gw.UnlinkNic, LinkNicId=absent_id("eni-attach"), status=400, code="5007")

    # UpdateNic changes what happens to it with its VM.
    expect_error(a.gw.UpdateNic, NicId=extra, LinkNic={"LinkNicId": absent_id("eni-attach"), "DeleteOnVmDeletion": True},
                 status=400, code="5007")
    up = a.gw.UpdateNic(NicId=extra, LinkNic={"LinkNicId": link, "DeleteOnVmDeletion": True})["Nic"]
    assert up["LinkNic"]["DeleteOnVmDeletion"] is True, up
    a.gw.UpdateNic(NicId=extra, LinkNic={"LinkNicId": link, "DeleteOnVmDeletion": False})

    a.gw.UnlinkNic(LinkNicId=link)
    nic = wait_nic_state(a.gw, extra, "available")
    assert "LinkNic" not in nic, nic
    assert [n["NicId"] for n in a.gw.ReadVms(Filters={"VmIds": [vm_id]})["Vms"][0]["Nics"]] == [vm["Nics"][0]["NicId"]]

    # Linked again, then the VM goes: the NIC stays (DeleteOnVmDeletion false), available.
    a.gw.LinkNic(VmId=vm_id, NicId=extra, DeviceNumber=3)
    wait_nic_state(a.gw, extra, "in-use")
    a.gw.DeleteVms(VmIds=[vm_id, public_vm])
    wait_vms_state(a.gw, [vm_id, public_vm], "terminated")
    assert wait_nic_state(a.gw, extra, "available")
    assert nic_of(a.gw, vm["Nics"][0]["NicId"]) is None, "the primary NIC goes with its VM"
    for n in (extra, spare, elsewhere):
        a.gw.DeleteNic(NicId=n)
    a.gw.DeleteSubnet(SubnetId=other_subnet)
    a.gw.DeleteNet(NetId=other_net)


def test_nics_in_create_vms(a, net, image_id):
    existing = a.gw.CreateNic(SubnetId=net["subnet"], PrivateIps=[{"PrivateIp": "10.40.1.80"}])["Nic"]["NicId"]
    vm = a.gw.CreateVms(ImageId=image_id, VmType=SMALL, BootOnCreation=False, Nics=[
        {"DeviceNumber": 1, "NicId": existing},
        {"DeviceNumber": 0, "SubnetId": net["subnet"], "Description": "front",
         "PrivateIps": [{"PrivateIp": "10.40.1.81", "IsPrimary": True}], "SecondaryPrivateIpCount": 1,
         "SecurityGroupIds": [net["web"]]},
    ])["Vms"][0]
    assert vm["PrivateIp"] == "10.40.1.81" and vm["SubnetId"] == net["subnet"], vm
    assert [n["LinkNic"]["DeviceNumber"] for n in vm["Nics"]] == [0, 1], vm["Nics"]
    primary, second = vm["Nics"]
    assert second["NicId"] == existing and second["LinkNic"]["DeleteOnVmDeletion"] is False, second
    assert primary["Description"] == "front" and primary["LinkNic"]["DeleteOnVmDeletion"] is True, primary
    assert len(primary["PrivateIps"]) == 2, primary
    assert vm["SecurityGroups"][0]["SecurityGroupId"] == net["web"]

    # Refusals change nothing.
    before = {v["VmId"] for v in a.gw.ReadVms()["Vms"] if v["State"] != "terminated"}
    other_net = a.gw.CreateNet(IpRange="10.43.0.0/16")["Net"]["NetId"]
    other_subnet = a.gw.CreateSubnet(NetId=other_net, IpRange="10.43.1.0/24")["Subnet"]["SubnetId"]
    spare = a.gw.CreateNic(SubnetId=net["subnet"])["Nic"]["NicId"]
    for params in [
        {"Nics": [{"DeviceNumber": 0, "SubnetId": net["subnet"]}], "SubnetId": net["subnet"]},   # both forms
        {"Nics": [{"DeviceNumber": 1, "SubnetId": net["subnet"]}]},                              # no device 0
        {"Nics": [{"DeviceNumber": 0, "SubnetId": net["subnet"]}, {"DeviceNumber": 0, "NicId": spare}]},
        {"Nics": [{"DeviceNumber": 0, "NicId": spare}], "MaxVmsCount": 2},
        {"Nics": [{"DeviceNumber": 0, "NicId": spare, "SubnetId": net["subnet"]}]},
        {"Nics": [{"DeviceNumber": 0, "SubnetId": net["subnet"]}, {"DeviceNumber": 1, "SubnetId": other_subnet}]},
        {"Nics": [{"DeviceNumber": 0, "NicId": existing}]},                                     # in use
        {"Nics": [{"DeviceNumber": 9, "SubnetId": net["subnet"]}]},
    ]:
        err = expect_error(a.gw.CreateVms, ImageId=image_id, VmType=SMALL, BootOnCreation=False, status=400, **params)
        assert err.code in ("4047", "6003"), (params, err)
    assert {v["VmId"] for v in a.gw.ReadVms()["Vms"] if v["State"] != "terminated"} == before
    assert nic_of(a.gw, spare)["State"] == "available"

    a.gw.DeleteVms(VmIds=[vm["VmId"]])
    wait_vms_state(a.gw, [vm["VmId"]], "terminated")
    assert nic_of(a.gw, primary["NicId"]) is None
    assert wait_nic_state(a.gw, existing, "available")
    for n in (existing, spare):
        a.gw.DeleteNic(NicId=n)
    a.gw.DeleteSubnet(SubnetId=other_subnet)
    a.gw.DeleteNet(NetId=other_net)
