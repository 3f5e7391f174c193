"""The network side of CreateVms through the official SDK: SubnetId, PrivateIps,
SecurityGroupIds and SecurityGroups place the VM's primary NIC; ReadVms shows it;
every refused input (an address taken, outside the subnet or reserved, PrivateIps
without a subnet or for several VMs, a group of another Net or unknown) changes
nothing; another account's subnet answers exactly like an absent one; subnets and
groups in use cannot be deleted; a VM without subnet lands on the account's
public-cloud network."""

import pytest

from socle_lib import absent_id, expect_error, same_as_absent, wait_vms_state

SMALL = "tinav5.c1r1p2"


@pytest.fixture(scope="module")
def a(new_account):
    return new_account("vmnet-a")


@pytest.fixture(scope="module")
def b(new_account):
    return new_account("vmnet-b")


def vm_ids(gw):
    return {v["VmId"] for v in gw.ReadVms()["Vms"] if v["State"] != "terminated"}


def test_vms_in_a_subnet_and_in_the_public_cloud(a, b, image_id):
    net = a.gw.CreateNet(IpRange="10.30.0.0/16")["Net"]["NetId"]
    subnet = a.gw.CreateSubnet(NetId=net, IpRange="10.30.1.0/24")["Subnet"]["SubnetId"]
    web = a.gw.CreateSecurityGroup(NetId=net, SecurityGroupName="web", Description="web")["SecurityGroup"]
    other_net = a.gw.CreateNet(IpRange="10.31.0.0/16")["Net"]["NetId"]
    foreign = a.gw.CreateSecurityGroup(NetId=other_net, SecurityGroupName="x", Description="x")["SecurityGroup"]

    vm = a.gw.CreateVms(ImageId=image_id, VmType=SMALL, SubnetId=subnet, PrivateIps=["10.30.1.10"],
                        SecurityGroupIds=[web["SecurityGroupId"]], BootOnCreation=False)["Vms"][0]
    assert (vm["PrivateIp"], vm["SubnetId"], vm["NetId"]) == ("10.30.1.10", subnet, net), vm
    assert vm["PrivateDnsName"] == "ip-10-30-1-10.eu-west-2.compute.internal", vm
    assert vm["SecurityGroups"] == [{"SecurityGroupId": web["SecurityGroupId"], "SecurityGroupName": "web"}]
    nic = vm["Nics"][0]
    assert nic["NicId"].startswith("eni-") and nic["MacAddress"].startswith("aa:fc:"), nic
    assert nic["LinkNic"]["DeviceNumber"] == 0 and nic["LinkNic"]["DeleteOnVmDeletion"] is True, nic
    assert nic["PrivateIps"] == [{"IsPrimary": True, "PrivateIp": "10.30.1.10",
                                  "PrivateDnsName": "ip-10-30-1-10.eu-west-2.compute.internal"}], nic
    assert a.gw.ReadVms(Filters={"VmIds": [vm["VmId"]]})["Vms"][0]["Nics"] == vm["Nics"]

    # By group name, and the lowest free address.
    second = a.gw.CreateVms(ImageId=image_id, VmType=SMALL, SubnetId=subnet, SecurityGroups=["web"],
                            BootOnCreation=False)["Vms"][0]
    assert second["PrivateIp"] == "10.30.1.4", second
    assert second["SecurityGroups"][0]["SecurityGroupId"] == web["SecurityGroupId"]

    # Refusals change nothing.
    before = vm_ids(a.gw)
    for params, code in [
        ({"SubnetId": subnet, "PrivateIps": ["10.30.1.10"]}, "9001"),        # taken
        ({"SubnetId": subnet, "PrivateIps": ["10.30.2.10"]}, "4030"),        # outside the subnet
        ({"SubnetId": subnet, "PrivateIps": ["10.30.1.1"]}, "4030"),         # the gateway
        ({"SubnetId": subnet, "PrivateIps": ["10.30.1.255"]}, "4030"),       # broadcast
        ({"SubnetId": subnet, "PrivateIps": ["not-an-ip"]}, "4047"),
        ({"PrivateIps": ["10.0.0.9"]}, "4047"),                              # no subnet
        ({"SubnetId": subnet, "PrivateIps": ["10.30.1.20"], "MaxVmsCount": 2}, "4047"),
        ({"SubnetId": subnet, "SecurityGroupIds": [foreign["SecurityGroupId"]]}, "4047"),
        ({"SubnetId": subnet, "SecurityGroups": ["nope"]}, "5020"),
        ({"SubnetId": absent_id("subnet")}, "5057"),
        ({"SubnetId": "vpc-12345678"}, "4104"),
    ]:
        expect_error(a.gw.CreateVms, ImageId=image_id, VmType=SMALL, BootOnCreation=False, status=400, code=code,
                     **params)
    assert vm_ids(a.gw) == before

    # Another account's subnet is like an absent one.
    theirs = same_as_absent(b.gw.CreateVms, lambda s: {"ImageId": image_id, "VmType": SMALL, "SubnetId": s,
                                                       "BootOnCreation": False}, subnet, absent_id("subnet"))
    assert "5057" in str(theirs)

    # In use: the subnet and the group.
    expect_error(a.gw.DeleteSubnet, SubnetId=subnet, status=400, code="9057")
    expect_error(a.gw.DeleteSecurityGroup, SecurityGroupId=web["SecurityGroupId"], status=400, code="9029")

    # The public cloud: no subnet, no Net, an address of the account's own network.
    public = a.gw.CreateVms(ImageId=image_id, VmType=SMALL, BootOnCreation=False)["Vms"][0]
    assert public["PrivateIp"].startswith("10.0.") and "SubnetId" not in public and "NetId" not in public, public
    assert public["SecurityGroups"][0]["SecurityGroupName"] == "default"

    ids = [vm["VmId"], second["VmId"], public["VmId"]]
    a.gw.DeleteVms(VmIds=ids)
    wait_vms_state(a.gw, ids, "terminated")
    a.gw.DeleteSecurityGroup(SecurityGroupId=web["SecurityGroupId"])
    a.gw.DeleteSubnet(SubnetId=subnet)
    a.gw.DeleteNet(NetId=net)
    a.gw.DeleteSecurityGroup(SecurityGroupId=foreign["SecurityGroupId"])
    a.gw.DeleteNet(NetId=other_net)
