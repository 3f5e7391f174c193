"""The quick tier's end-to-end smoke test (scripts/test.sh --quick), through the
official osc-sdk-python: a VM in a subnet of a new Net boots, a volume is made,
hot-plugged into it (the guest sees it) and unplugged; then everything is deleted
and nothing of it is left. The full suite covers each of these in depth."""

from socle_lib import (GIB, create_vms, read_vm, read_volume, wait_disk_event,
                       wait_ready, wait_until, wait_volume, wait_vms_state)


def test_a_vm_on_a_net_boots_takes_a_volume_and_all_of_it_is_deleted(new_account, image_id, subregion):
    gw = new_account("smoke").gw
    net = gw.CreateNet(IpRange="10.9.0.0/16")["Net"]["NetId"]
    subnet = gw.CreateSubnet(NetId=net, IpRange="10.9.1.0/24", SubregionName=subregion)["Subnet"]["SubnetId"]
    vm = create_vms(gw, image_id, SubnetId=subnet)[0]
    vm_id = vm["VmId"]
    wait_vms_state(gw, [vm_id], "running")
    before = wait_ready(gw, vm_id)
    assert read_vm(gw, vm_id)["PrivateIp"].startswith("10.9.1."), read_vm(gw, vm_id)

    volume = gw.CreateVolume(Size=1, SubregionName=subregion)["Volume"]["VolumeId"]
    wait_volume(gw, volume, "available")
    gw.LinkVolume(VolumeId=volume, VmId=vm_id, DeviceName="/dev/xvdb")
    wait_volume(gw, volume, "in-use", link="attached")
    _, _, serial, size = wait_disk_event(gw, vm_id, volume, ("added", "present"), since=before)
    assert (serial, size) == (volume, 1 * GIB)
    gw.UnlinkVolume(VolumeId=volume)
    wait_volume(gw, volume, "available", link=None)

    gw.DeleteVms(VmIds=[vm_id])
    wait_vms_state(gw, [vm_id], "terminated", allow_absent=True)
    gw.DeleteVolume(VolumeId=volume)
    wait_volume(gw, volume, None)
    # The VM's NIC goes with it; then the subnet and the Net can go.
    wait_until("the subnet deleted", lambda: _try(lambda: gw.DeleteSubnet(SubnetId=subnet)), bool)
    gw.DeleteNet(NetId=net)
    assert gw.ReadNets(Filters={"NetIds": [net]})["Nets"] == []
    assert read_volume(gw, volume) is None


def _try(call) -> bool:
    try:
        call()
        return True
    except Exception:  # the NIC may still be going: try again
        return False
