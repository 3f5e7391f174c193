"""Images made from VMs, through the official SDK: CreateImage, ReadImages (own,
shared, public), UpdateImage (launch permissions), DeleteImage; bad inputs and
another account's view."""
import pytest

from socle_lib import (account_id, absent_id, check_pagination, create_vms, expect_error, same_as_absent,
                       unique, wait_ready, wait_until, wait_vms_state, delete_all_vms)


def read_image(gw, image_id):
    images = gw.ReadImages(Filters={"ImageIds": [image_id]}).get("Images") or []
    return images[0] if images else None


@pytest.fixture(scope="module")
def golden(gw, new_account, image_id):
    """An image of the default account made from a running VM, and a second account."""
    vm = create_vms(gw, image_id)[0]["VmId"]
    wait_vms_state(gw, [vm], "running")
    wait_ready(gw, vm)
    name = unique("golden")
    image = gw.CreateImage(VmId=vm, ImageName=name, Description="from a VM")["Image"]
    assert image["State"] == "pending" and image["ImageName"] == name, image
    done = wait_until("image available", lambda: read_image(gw, image["ImageId"]),
                      lambda i: i and i["State"] == "available", timeout=120)
    other = new_account("img")
    yield {"vm": vm, "image": done, "name": name, "other": other}
    for g in (gw, other.gw):
        delete_all_vms(g)


def test_image_shape(gw, golden):
    img = golden["image"]
    assert img["AccountId"] == account_id(gw)
    assert img["BlockDeviceMappings"][0]["DeviceName"] == "/dev/sda1"
    assert img["BlockDeviceMappings"][0]["Bsu"]["SnapshotId"].startswith("snap-")
    assert img["PermissionsToLaunch"] == {"AccountIds": [], "GlobalPermission": False}
    mine = gw.ReadImages(Filters={"AccountIds": [account_id(gw)]})["Images"]
    assert [i["ImageId"] for i in mine] == [img["ImageId"]]


def test_create_image_refused(gw, golden, image_id):
    vm = golden["vm"]
    expect_error(gw.CreateImage, VmId=vm, status=400, code="7000")
    expect_error(gw.CreateImage, VmId=vm, ImageName="x", status=400, code="4106")
    expect_error(gw.CreateImage, VmId=vm, ImageName=golden["name"], status=400, code="4047")
    expect_error(gw.CreateImage, VmId=absent_id("i"), ImageName=unique("n"), status=400, code="5063")
    expect_error(gw.CreateImage, VmId="i-zz", ImageName=unique("n"), status=400, code="4105")
    expect_error(gw.CreateImage, VmId=vm, ImageName=unique("n"), SourceImageId=image_id, status=400, code="4047")
    assert len(gw.ReadImages(Filters={"AccountIds": [account_id(gw)]})["Images"]) == 1


def test_other_account_cannot_see_use_or_change_it(golden, image_id):
    other, img = golden["other"].gw, golden["image"]["ImageId"]
    assert not other.ReadImages(Filters={"ImageIds": [img]})["Images"]
    fake = absent_id("ami")
    same_as_absent(other.CreateVms, lambda i: {"ImageId": i, "VmType": "tinav5.c1r1p2"}, img, fake)
    same_as_absent(other.UpdateImage, lambda i: {"ImageId": i, "Description": "x"}, img, fake)
    same_as_absent(other.DeleteImage, lambda i: {"ImageId": i}, img, fake)
    same_as_absent(other.CreateImage, lambda i: {"VmId": i, "ImageName": unique("s")}, golden["vm"], absent_id("i"))


def test_share_launch_and_unshare(gw, golden):
    other, img = golden["other"], golden["image"]["ImageId"]
    out = gw.UpdateImage(ImageId=img, PermissionsToLaunch={"Additions": {"AccountIds": [other.account_id]}})["Image"]
    assert out["PermissionsToLaunch"]["AccountIds"] == [other.account_id]
    seen = other.gw.ReadImages(Filters={"ImageIds": [img]})["Images"][0]
    assert seen["PermissionsToLaunch"]["AccountIds"] == [], "the share list is the owner's business"
    vm = create_vms(other.gw, img)[0]["VmId"]
    wait_vms_state(other.gw, [vm], "running")
    wait_ready(other.gw, vm)
    gw.UpdateImage(ImageId=img, PermissionsToLaunch={"Removals": {"AccountIds": [other.account_id]}})
    assert not other.gw.ReadImages(Filters={"ImageIds": [img]})["Images"]
    expect_error(other.gw.CreateVms, ImageId=img, status=400, code="5023")


def test_read_images_filters_and_pages(gw, golden):
    """Each filter of ReadImages, answered in SQL: the image's state as users see it
    (derived from its root snapshot), shares only for their owner, the caller's tags."""
    other, img = golden["other"], golden["image"]["ImageId"]
    mine = {"AccountIds": [account_id(gw)]}

    def ids(**filters):
        return [i["ImageId"] for i in gw.ReadImages(Filters=filters)["Images"]]

    assert ids(ImageIds=[img], States=["available"]) == [img]
    assert ids(ImageIds=[img], States=["pending", "failed"]) == []
    assert ids(ImageNames=[golden["name"]]) == [img]
    assert ids(ImageIds=[img], Architectures=["x86_64"]) == [img]
    assert ids(ImageIds=[img], Architectures=["arm64"]) == []
    assert img not in ids(AccountIds=[other.account_id])
    # Public images are everyone's; the platform's are public.
    public = ids(PermissionsToLaunchGlobalPermission=True)
    assert img not in public and len(public) >= 2, public
    assert img in ids(PermissionsToLaunchGlobalPermission=False)
    # Shares: the owner can filter on them; the account shared with sees the
    # image but cannot learn, nor filter on, whom it is shared with.
    gw.UpdateImage(ImageId=img, PermissionsToLaunch={"Additions": {"AccountIds": [other.account_id]}})
    try:
        assert ids(PermissionsToLaunchAccountIds=[other.account_id]) == [img]
        assert ids(PermissionsToLaunchAccountIds=[]) == []
        seen = other.gw.ReadImages(Filters={"ImageIds": [img]})["Images"]
        assert [i["ImageId"] for i in seen] == [img]
        assert not other.gw.ReadImages(Filters={"PermissionsToLaunchAccountIds": [other.account_id]})["Images"]
        # Tags are the owner's: the other account cannot find the image by them.
        gw.CreateTags(ResourceIds=[img], Tags=[{"Key": "tier", "Value": "gold"}])
        assert ids(TagKeys=["tier"]) == [img]
        assert ids(Tags=["tier=gold"]) == [img]
        assert ids(Tags=["tier=silver"]) == []
        assert not other.gw.ReadImages(Filters={"TagKeys": ["tier"]})["Images"]
    finally:
        gw.UpdateImage(ImageId=img, PermissionsToLaunch={"Removals": {"AccountIds": [other.account_id]}})
        gw.DeleteTags(ResourceIds=[img], Tags=[{"Key": "tier", "Value": "gold"}])
    check_pagination(gw.ReadImages, "Images", "ImageId")
    check_pagination(gw.ReadImages, "Images", "ImageId", mine)


def root_mapping(snapshot_id, **bsu):
    return [{"DeviceName": "/dev/sda1", "Bsu": {"SnapshotId": snapshot_id, **bsu}}]


def test_register_snapshot_and_boot_from_it(gw, golden):
    """CreateImage from a snapshot (BlockDeviceMappings + RootDeviceName): the
    golden image's root snapshot came from a socle-tiny disk, so the new image
    boots with the same kernel, and a VM from it comes up."""
    snap = golden["image"]["BlockDeviceMappings"][0]["Bsu"]["SnapshotId"]
    name = unique("registered")
    img = gw.CreateImage(ImageName=name, RootDeviceName="/dev/sda1",
                         BlockDeviceMappings=root_mapping(snap, VolumeSize=12))["Image"]
    assert img["State"] == "available", img
    assert img["BlockDeviceMappings"][0]["Bsu"] == {
        "DeleteOnVmDeletion": True, "SnapshotId": snap, "VolumeSize": 12, "VolumeType": "standard"}
    vm = create_vms(gw, img["ImageId"])[0]["VmId"]
    wait_vms_state(gw, [vm], "running")
    wait_ready(gw, vm)
    root = gw.ReadVolumes(Filters={"LinkVolumeVmIds": [vm]})["Volumes"][0]
    assert root["Size"] == 12
    gw.DeleteVms(VmIds=[vm])
    expect_error(gw.DeleteSnapshot, SnapshotId=snap, status=400, code="6003")
    gw.DeleteImage(ImageId=img["ImageId"])


def test_register_snapshot_refused(gw, golden):
    snap = golden["image"]["BlockDeviceMappings"][0]["Bsu"]["SnapshotId"]
    other = golden["other"]
    before = len(gw.ReadImages(Filters={"AccountIds": [account_id(gw)]})["Images"])
    ok = {"ImageName": unique("r"), "RootDeviceName": "/dev/sda1"}
    expect_error(gw.CreateImage, ImageName=unique("r"), BlockDeviceMappings=root_mapping(snap), status=400, code="7000")
    expect_error(gw.CreateImage, **ok, BlockDeviceMappings=[], status=400, code="4047")
    expect_error(gw.CreateImage, **{**ok, "RootDeviceName": "/dev/xvdb"}, BlockDeviceMappings=root_mapping(snap),
                 status=400, code="4047")
    expect_error(gw.CreateImage, **ok, BlockDeviceMappings=root_mapping(snap) + [
        {"DeviceName": "/dev/xvdb", "Bsu": {"VolumeSize": 1}}], status=400, code="4047")
    expect_error(gw.CreateImage, **ok, BlockDeviceMappings=root_mapping(snap, VolumeSize=0), status=400, code="4078")
    expect_error(gw.CreateImage, **ok, BlockDeviceMappings=[{"DeviceName": "/dev/sda1", "Bsu": {}}],
                 status=400, code="7000")
    expect_error(gw.CreateImage, **ok, BlockDeviceMappings=root_mapping("snap-zz"), status=400, code="4105")
    expect_error(gw.CreateImage, **ok, BlockDeviceMappings=root_mapping(absent_id("snap")), status=400, code="5054")
    expect_error(gw.CreateImage, **ok, VmId=golden["vm"], BlockDeviceMappings=root_mapping(snap), status=400, code="4047")
    expect_error(gw.CreateImage, **ok, BootModes=["uefi"], BlockDeviceMappings=root_mapping(snap), status=400, code="4047")
    # Another account: an unshared snapshot does not exist for it; a shared one
    # is refused with a way forward (the owner must stay free to delete it).
    same_as_absent(other.gw.CreateImage, lambda s: {**ok, "BlockDeviceMappings": root_mapping(s)}, snap, absent_id("snap"))
    gw.UpdateSnapshot(SnapshotId=snap, PermissionsToCreateVolume={"Additions": {"AccountIds": [other.account_id]}})
    try:
        err = expect_error(other.gw.CreateImage, **ok, BlockDeviceMappings=root_mapping(snap), status=400, code="4047")
    finally:
        gw.UpdateSnapshot(SnapshotId=snap, PermissionsToCreateVolume={"Removals": {"AccountIds": [other.account_id]}})
    assert "another account" in err.details, err
    assert not other.gw.ReadImages(Filters={"AccountIds": [other.account_id]})["Images"]
    assert len(gw.ReadImages(Filters={"AccountIds": [account_id(gw)]})["Images"]) == before


def test_public_then_deleted(gw, golden):
    img = golden["image"]["ImageId"]
    gw.UpdateImage(ImageId=img, PermissionsToLaunch={"Additions": {"GlobalPermission": True}})
    assert golden["other"].gw.ReadImages(Filters={"ImageIds": [img], "PermissionsToLaunchGlobalPermission": True})["Images"]
    snap = golden["image"]["BlockDeviceMappings"][0]["Bsu"]["SnapshotId"]
    expect_error(gw.DeleteSnapshot, SnapshotId=snap, status=400, code="6003")
    gw.DeleteImage(ImageId=img)
    assert read_image(gw, img) is None
    expect_error(gw.DeleteImage, ImageId=img, status=400, code="5023")
    gw.DeleteSnapshot(SnapshotId=snap)


def test_full_disk_platform_image_boots_through_the_bios(gw):
    img = gw.ReadImages(Filters={"ImageNames": ["socle-tiny-disk"]})["Images"][0]
    assert img["AccountAlias"] == "socle" and img["State"] == "available", img
    assert img["PermissionsToLaunch"]["GlobalPermission"] is True
    vm = create_vms(gw, img["ImageId"])[0]["VmId"]
    wait_vms_state(gw, [vm], "running")
    wait_ready(gw, vm)
    gw.DeleteVms(VmIds=[vm])

