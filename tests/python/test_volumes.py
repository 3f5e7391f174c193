"""Block volumes through the official SDK: CreateVolume (types, IOPS, client token,
dry run, every refused input), ReadVolumes (filters, pagination), UpdateVolume (grow,
type and IOPS, online resize), LinkVolume / UnlinkVolume hot-plugged into a running
socle-tiny guest (which reports each disk on its console, serial = volume ID),
DeleteVolume, tags, ReadVms' BlockDeviceMappings, the release of volumes when their
VM is deleted, and another account's view of all that (exactly like absent IDs).

Account A has one VM (the hot-plug target), account B one VM (the cross-account link
target, which also gets a volume linked while it boots). The tests run in file order
and share the module's volumes; each brings what it uses to the state it needs."""

import datetime as dt
import time
import uuid
from types import SimpleNamespace

import pytest
import requests

from socle_lib import (GIB, VOLUME_ID_RE, absent_id, check_filter, check_pagination, console_text,
                       create_vms, disk_events, expect_error,
                       link_of, new_output, read_vm, read_volume, read_volumes, same_as_absent,
                       storage_state, volume_summary, wait_disk_event, wait_ready, wait_until,
                       wait_volume, wait_vms_state)

ROOT_DEVICE = "/dev/sda1"  # the VM's root volume, made from its image
POOL_TOO_SMALL = 14000  # a valid size (<= 14901 GiB) that the default 1024 GiB pool cannot hold
# How long a step that races with the reconciler may take to settle (normally ~3 s).
RACE_TIMEOUT = 10




@pytest.fixture(scope="module")
def a(storage_accounts):
    return storage_accounts("vol-a")


@pytest.fixture(scope="module")
def b(storage_accounts):
    return storage_accounts("vol-b")


@pytest.fixture(scope="module")
def lab(a, b, image_id, subregion):
    """What takes time, started together: A's VM and A's volumes (a standard one, the
    hot-plug subject; a gp2 and an io1 one; a spare to delete), B's VM with a volume of
    B's linked to it while it boots, and a spare volume of B's."""
    # Volumes are made one after the other: B's linked one first, so that it is plugged
    # early in its VM's boot.
    b_linked = b.gw.CreateVolume(SubregionName=subregion, Size=1)["Volume"]["VolumeId"]
    a_vm = create_vms(a.gw, image_id)[0]["VmId"]
    b_vm = create_vms(b.gw, image_id)[0]["VmId"]
    main = a.gw.CreateVolume(SubregionName=subregion, Size=1)["Volume"]
    gp2 = a.gw.CreateVolume(SubregionName=subregion, Size=2, VolumeType="gp2")["Volume"]
    io1 = a.gw.CreateVolume(SubregionName=subregion, Size=3, VolumeType="io1", Iops=150)["Volume"]
    spare = a.gw.CreateVolume(SubregionName=subregion, Size=1)["Volume"]
    b_spare = b.gw.CreateVolume(SubregionName=subregion, Size=1)["Volume"]["VolumeId"]
    wait_volume(b.gw, b_linked, "available")
    b.gw.LinkVolume(VolumeId=b_linked, VmId=b_vm, DeviceName="/dev/xvdc")
    return SimpleNamespace(
        answers={"main": main, "gp2": gp2, "io1": io1, "spare": spare},
        main=main["VolumeId"], gp2=gp2["VolumeId"], io1=io1["VolumeId"], spare=spare["VolumeId"],
        a_vm=a_vm, b_vm=b_vm, b_linked=b_linked, b_spare=b_spare)


def recent(iso: str, seconds: float = 300) -> bool:
    when = dt.datetime.fromisoformat(iso.replace("Z", "+00:00"))
    return abs((dt.datetime.now(dt.timezone.utc) - when).total_seconds()) < seconds


def settled(gw, volume_id):
    """Wait until the volume is neither being made, resized nor (un)plugged."""
    return wait_until(f"volume {volume_id} settled", lambda: read_volume(gw, volume_id),
                      lambda v: v["State"] in ("available", "in-use")
                      and (link_of(v) or {}).get("State") in (None, "attached"),
                      summary=volume_summary)


def ensure_available(gw, volume_id):
    """Unlink the volume if it is linked; wait until it is available and unlinked."""
    if link_of(settled(gw, volume_id)):
        gw.UnlinkVolume(VolumeId=volume_id)
    return wait_volume(gw, volume_id, "available", link=None)


def ensure_linked(gw, volume_id, vm_id, device):
    """Link the volume to vm_id at device unless it already is; wait until attached."""
    link = link_of(read_volume(gw, volume_id))
    if link and link["VmId"] == vm_id:
        return wait_volume(gw, volume_id, "in-use", link="attached")
    ensure_available(gw, volume_id)
    gw.LinkVolume(VolumeId=volume_id, VmId=vm_id, DeviceName=device)
    return wait_volume(gw, volume_id, "in-use", link="attached")


# -------------------------------------------------------------------- create


def test_create_volume_answers(lab, subregion):
    expected = {"main": ("standard", 1, None), "gp2": ("gp2", 2, None), "io1": ("io1", 3, 150),
                "spare": ("standard", 1, None)}
    for name, (vtype, size, iops) in expected.items():
        v = lab.answers[name]
        assert VOLUME_ID_RE.match(v["VolumeId"]), v
        assert v["State"] == "creating", v
        assert (v["VolumeType"], v["Size"], v["SubregionName"]) == (vtype, size, subregion), v
        if iops is not None:
            assert v["Iops"] == iops, v
        assert not v.get("LinkedVolumes"), v
        assert not v.get("Tags"), v
        assert not v.get("SnapshotId"), v
        assert not v.get("ClientToken"), v
        assert recent(v["CreationDate"]), v
    assert len({v["VolumeId"] for v in lab.answers.values()}) == 4


def test_volumes_become_available(a, lab):
    for name, created in lab.answers.items():
        history: list = []
        v = wait_volume(a.gw, created["VolumeId"], "available", history=history)
        assert [h[0] for h in history] in (["creating", "available"], ["available"]), history
        differ = {k: (created[k], v.get(k)) for k in created if k != "State" and created[k] != v.get(k)}
        assert not differ, f"ReadVolumes disagrees with the CreateVolume answer on {differ}"


def test_client_token_is_idempotent_and_per_account(a, b, subregion):
    token = str(uuid.uuid4())
    before = {v["VolumeId"] for v in read_volumes(a.gw)}
    first = a.gw.CreateVolume(SubregionName=subregion, Size=1, ClientToken=token)["Volume"]
    again = a.gw.CreateVolume(SubregionName=subregion, Size=1, ClientToken=token)["Volume"]
    assert again["VolumeId"] == first["VolumeId"], "same ClientToken, different volumes"
    assert first["ClientToken"] == token, first
    assert {v["VolumeId"] for v in read_volumes(a.gw)} == before | {first["VolumeId"]}
    listed = read_volumes(a.gw, ClientTokens=[token])
    assert [(v["VolumeId"], v["ClientToken"]) for v in listed] == [(first["VolumeId"], token)]
    assert read_volumes(a.gw, ClientTokens=[str(uuid.uuid4())]) == []
    # The token is the account's own: B using it gets a volume of its own.
    b_before = storage_state(b.gw)["volumes"]
    theirs = b.gw.CreateVolume(SubregionName=subregion, Size=1, ClientToken=token)["Volume"]
    assert theirs["VolumeId"] != first["VolumeId"]
    assert set(storage_state(b.gw)["volumes"]) == set(b_before) | {theirs["VolumeId"]}
    assert [v["VolumeId"] for v in read_volumes(b.gw, ClientTokens=[token])] == [theirs["VolumeId"]]
    assert [v["VolumeId"] for v in read_volumes(a.gw, ClientTokens=[token])] == [first["VolumeId"]]
    wait_volume(a.gw, first["VolumeId"], "available")
    wait_volume(b.gw, theirs["VolumeId"], "available")


def test_create_volume_dry_run(a, subregion):
    before = storage_state(a.gw)
    resp = a.gw.raw("CreateVolume", SubregionName=subregion, Size=1, DryRun=True)
    assert resp.get("ResponseContext", {}).get("RequestId"), resp
    resp = a.gw.raw("CreateVolume", SubregionName=subregion, Size=1, VolumeType="io1", Iops=100,
                    ClientToken=str(uuid.uuid4()), DryRun=True)
    assert storage_state(a.gw) == before, "CreateVolume DryRun created a volume"
    # A dry run still checks its parameters, and the pool.
    expect_error(a.gw.raw, "CreateVolume", SubregionName=subregion, Size=0, DryRun=True,
                 status=400, code="4078")
    expect_error(a.gw.raw, "CreateVolume", SubregionName=subregion, Size=POOL_TOO_SMALL, DryRun=True,
                 status=400, code="10024")
    assert storage_state(a.gw) == before


BAD_CREATE = [
    ("size-zero", {"Size": 0}, "4078"),
    ("size-negative", {"Size": -1}, "4078"),
    ("size-over-14901", {"Size": 14902}, "4078"),
    ("pool-capacity", {"Size": POOL_TOO_SMALL}, "10024"),
    ("io1-without-iops", {"Size": 1, "VolumeType": "io1"}, "7000"),
    ("io1-iops-99", {"Size": 1, "VolumeType": "io1", "Iops": 99}, "4029"),
    ("io1-iops-13001", {"Size": 100, "VolumeType": "io1", "Iops": 13001}, "4029"),
    ("gp2-with-iops", {"Size": 1, "VolumeType": "gp2", "Iops": 100}, "4029"),
    ("standard-with-iops", {"Size": 1, "VolumeType": "standard", "Iops": 100}, "4029"),
    ("default-type-with-iops", {"Size": 1, "Iops": 100}, "4029"),
    ("unknown-type", {"Size": 1, "VolumeType": "sc1"}, "4047"),
    ("unknown-subregion", {"Size": 1, "SubregionName": "{region}z"}, "4047"),
    ("other-region-subregion", {"Size": 1, "SubregionName": "us-east-2a"}, "4047"),
    ("no-size-no-snapshot", {}, "7000"),
    ("absent-snapshot", {"SnapshotId": "{absent-snap}"}, "5054"),
    ("malformed-snapshot-id", {"SnapshotId": "snap-12"}, "4105"),
    ("wrong-prefix-snapshot-id", {"SnapshotId": "vol-12345678"}, "4104"),
]


@pytest.mark.parametrize("case,params,code", BAD_CREATE, ids=[c[0] for c in BAD_CREATE])
def test_create_volume_refused(a, socle, subregion, case, params, code):
    params = {"SubregionName": subregion, **params}
    params = {k: (v.replace("{region}", socle.region).replace("{absent-snap}", absent_id("snap"))
                  if isinstance(v, str) else v) for k, v in params.items()}
    before = storage_state(a.gw)
    expect_error(a.gw.CreateVolume, **params, status=400, code=code)
    assert storage_state(a.gw) == before, f"a refused CreateVolume ({case}) changed the account"


def test_volume_being_created_cannot_be_linked_or_snapshotted(a, lab, subregion):
    """A volume still being made (State creating) cannot be linked or snapshotted yet."""
    vid = a.gw.CreateVolume(SubregionName=subregion, Size=1)["Volume"]["VolumeId"]
    before = storage_state(a.gw)
    assert before["volumes"][vid]["State"] == "creating", before["volumes"][vid]
    expect_error(a.gw.LinkVolume, VolumeId=vid, VmId=lab.a_vm, DeviceName="/dev/xvdi", status=400, code="6007")
    expect_error(a.gw.CreateSnapshot, VolumeId=vid, status=400, code="6007")
    after = storage_state(a.gw)
    assert after["volumes"][vid]["State"] == "creating", "too slow: the checks above ran on an available volume"
    assert after == before
    wait_volume(a.gw, vid, "available", link=None)
    a.gw.DeleteVolume(VolumeId=vid)
    wait_volume(a.gw, vid, None)


def test_delete_volume_while_creating(a, subregion):
    """DeleteVolume on a volume still being made: refused as a wrong state (6007), or
    accepted, and then the volume goes away. Accepted and still there is a lost delete."""
    vid = a.gw.CreateVolume(SubregionName=subregion, Size=1)["Volume"]["VolumeId"]
    assert read_volume(a.gw, vid)["State"] == "creating"
    try:
        a.gw.DeleteVolume(VolumeId=vid)
    except requests.HTTPError:
        expect_error(a.gw.DeleteVolume, VolumeId=vid, status=400, code="6007")
        wait_volume(a.gw, vid, "available")
        a.gw.DeleteVolume(VolumeId=vid)
    wait_volume(a.gw, vid, None, timeout=RACE_TIMEOUT)


def test_create_volume_without_subregion(a):
    """The SDK refuses to send it (SubregionName is required): raw call."""
    before = storage_state(a.gw)
    expect_error(a.gw.raw, "CreateVolume", Size=1, status=400, code="7000")
    assert storage_state(a.gw) == before


def test_io1_iops_per_gib_ratio(a, subregion):
    """outscale.yaml, CreateVolumeRequest.Iops: "maximum performance ratio of 300 IOPS
    per gibibyte": 301 IOPS on a 1 GiB io1 volume is refused (status and type only: the
    spec names no code)."""
    before = storage_state(a.gw)
    expect_error(a.gw.CreateVolume, SubregionName=subregion, Size=1, VolumeType="io1", Iops=301,
                 status=400, type_="InvalidParameterValue")
    assert storage_state(a.gw) == before


# ---------------------------------------------------------------------- read


def test_read_volumes_filters(a, lab, socle, subregion):
    for vid in (lab.main, lab.gp2, lab.io1, lab.spare):
        wait_volume(a.gw, vid, "available", link=None)
    a.gw.CreateTags(ResourceIds=[lab.gp2], Tags=[{"Key": "role", "Value": "data"}])
    a.gw.CreateTags(ResourceIds=[lab.io1], Tags=[{"Key": "role", "Value": "logs"},
                                                 {"Key": "tier", "Value": "fast"}])
    everything = read_volumes(a.gw)
    assert {lab.main, lab.gp2, lab.io1, lab.spare} <= {v["VolumeId"] for v in everything}
    tags = lambda v: {t["Key"]: t["Value"] for t in v.get("Tags") or []}

    def check(filters, predicate, include=(), exclude=()):
        return check_filter(a.gw.ReadVolumes, "Volumes", "VolumeId", everything, filters, predicate,
                            include, exclude)

    missing = absent_id("vol")
    check({"VolumeIds": [lab.gp2]}, lambda v: v["VolumeId"] == lab.gp2, [lab.gp2])
    check({"VolumeIds": [lab.gp2, lab.io1, missing]}, lambda v: v["VolumeId"] in (lab.gp2, lab.io1),
          [lab.gp2, lab.io1])
    check({"VolumeIds": [missing]}, lambda v: False)
    check({"VolumeTypes": ["io1"]}, lambda v: v["VolumeType"] == "io1", [lab.io1], [lab.gp2, lab.main])
    check({"VolumeTypes": ["gp2", "io1"]}, lambda v: v["VolumeType"] in ("gp2", "io1"),
          [lab.gp2, lab.io1], [lab.main])
    check({"VolumeTypes": ["standard"]}, lambda v: v["VolumeType"] == "standard", [lab.main, lab.spare],
          [lab.gp2])
    check({"VolumeSizes": [3]}, lambda v: v["Size"] == 3, [lab.io1], [lab.gp2, lab.main])
    check({"VolumeSizes": [2, 3]}, lambda v: v["Size"] in (2, 3), [lab.gp2, lab.io1], [lab.main])
    check({"VolumeSizes": [999]}, lambda v: False)
    check({"VolumeStates": ["available"]}, lambda v: v["State"] == "available", [lab.main, lab.gp2])
    check({"VolumeStates": ["in-use", "deleting"]}, lambda v: v["State"] in ("in-use", "deleting"),
          exclude=[lab.main])
    check({"SubregionNames": [subregion]}, lambda v: v["SubregionName"] == subregion, [lab.main])
    check({"SubregionNames": [f"{socle.region}z"]}, lambda v: False)
    check({"SnapshotIds": [absent_id("snap")]}, lambda v: False)
    check({"TagKeys": ["role"]}, lambda v: "role" in tags(v), [lab.gp2, lab.io1], [lab.main])
    check({"TagKeys": ["tier"]}, lambda v: "tier" in tags(v), [lab.io1], [lab.gp2])
    check({"TagValues": ["data"]}, lambda v: "data" in tags(v).values(), [lab.gp2], [lab.io1])
    check({"TagValues": ["data", "fast"]}, lambda v: {"data", "fast"} & set(tags(v).values()),
          [lab.gp2, lab.io1])
    check({"Tags": ["role=logs"]}, lambda v: tags(v).get("role") == "logs", [lab.io1], [lab.gp2])
    check({"Tags": ["role=data", "role=logs"]}, lambda v: tags(v).get("role") in ("data", "logs"),
          [lab.gp2, lab.io1])
    check({"Tags": ["role=nope"]}, lambda v: False)
    # Different filters combine with AND, the values of one filter with OR.
    check({"VolumeTypes": ["gp2", "io1"], "VolumeSizes": [2]},
          lambda v: v["VolumeType"] in ("gp2", "io1") and v["Size"] == 2, [lab.gp2], [lab.io1])
    check({"TagKeys": ["role"], "VolumeTypes": ["standard"]}, lambda v: False)
    check({"VolumeIds": [lab.main, lab.io1], "VolumeStates": ["in-use"]}, lambda v: False)
    # The volumes show their tags.
    v = read_volume(a.gw, lab.io1)
    assert tags(v) == {"role": "logs", "tier": "fast"}, v


def test_read_volumes_pagination(a, lab):
    ids = [lab.main, lab.gp2, lab.io1, lab.spare]
    listed = check_pagination(a.gw.ReadVolumes, "Volumes", "VolumeId", {"VolumeIds": ids})
    assert sorted(v["VolumeId"] for v in listed) == sorted(ids)
    check_pagination(a.gw.ReadVolumes, "Volumes", "VolumeId")
    expect_error(a.gw.ReadVolumes, ResultsPerPage=0, status=400, code="4047")
    expect_error(a.gw.ReadVolumes, ResultsPerPage=1001, status=400, code="4047")
    expect_error(a.gw.ReadVolumes, NextPageToken="bm90IGEgdG9rZW4=", status=400, type_="InvalidParameterValue")


# -------------------------------------------------------------------- update


def test_update_volume_grows_and_changes_type(a, lab):
    vid = lab.gp2
    ensure_available(a.gw, vid)
    resp = a.gw.UpdateVolume(VolumeId=vid, Size=4)["Volume"]
    assert resp["VolumeId"] == vid and resp["Size"] == 4, resp
    assert resp["State"] == "updating", f"a volume being resized must say so: {resp}"
    # While it is being resized, it cannot be updated, linked or deleted.
    during = storage_state(a.gw)
    if during["volumes"][vid]["State"] == "updating":
        expect_error(a.gw.UpdateVolume, VolumeId=vid, Size=5, status=400, code="6007")
        expect_error(a.gw.LinkVolume, VolumeId=vid, VmId=lab.a_vm, DeviceName="/dev/xvdj", status=400,
                     code="6007")
        expect_error(a.gw.DeleteVolume, VolumeId=vid, status=400, code="6007")
        assert read_volume(a.gw, vid)["Size"] == 4
    assert read_volume(a.gw, vid)["State"] in ("updating", "available")
    history: list = []
    v = wait_volume(a.gw, vid, "available", history=history)
    assert v["Size"] == 4, v
    assert [h[0] for h in history] in (["updating", "available"], ["available"]), history
    # Same size: accepted, nothing to do.
    a.gw.UpdateVolume(VolumeId=vid, Size=4)
    assert wait_volume(a.gw, vid, "available")["Size"] == 4
    # Type and IOPS.
    resp = a.gw.UpdateVolume(VolumeId=vid, VolumeType="io1", Iops=200)["Volume"]
    assert (resp["VolumeType"], resp["Iops"]) == ("io1", 200), resp
    assert resp["State"] == "available", f"new I/O limits hold nothing up: {resp}"
    # At once, while the first limits may still be applied: taken, and the
    # last wish is what the volume keeps.
    a.gw.UpdateVolume(VolumeId=vid, Iops=250)
    v = wait_volume(a.gw, vid, "available")
    assert (v["VolumeType"], v["Iops"], v["Size"]) == ("io1", 250, 4), v
    a.gw.UpdateVolume(VolumeId=vid, Iops=300)
    v = wait_volume(a.gw, vid, "available")
    assert (v["VolumeType"], v["Iops"]) == ("io1", 300), v
    a.gw.UpdateVolume(VolumeId=vid, VolumeType="gp2")
    v = wait_volume(a.gw, vid, "available")
    assert v["VolumeType"] == "gp2", v
    assert v.get("Iops") != 300, f"a gp2 volume kept its provisioned io1 IOPS: {v}"
    assert read_volumes(a.gw, VolumeTypes=["gp2"], VolumeSizes=[4], VolumeIds=[vid])[0]["VolumeId"] == vid


BAD_UPDATE = [
    ("shrink", {"Size": 1}, "4078"),
    ("size-zero", {"Size": 0}, "4078"),
    ("size-over-14901", {"Size": 14902}, "4078"),
    ("pool-capacity", {"Size": POOL_TOO_SMALL}, "10024"),
    ("io1-without-iops", {"VolumeType": "io1"}, "7000"),
    ("io1-iops-50", {"VolumeType": "io1", "Iops": 50}, "4029"),
    ("io1-iops-13001", {"VolumeType": "io1", "Iops": 13001}, "4029"),
    ("iops-on-gp2", {"Iops": 200}, "4029"),
    ("standard-with-iops", {"VolumeType": "standard", "Iops": 200}, "4029"),
    ("unknown-type", {"VolumeType": "sc1"}, "4047"),
]


@pytest.mark.parametrize("case,params,code", BAD_UPDATE, ids=[c[0] for c in BAD_UPDATE])
def test_update_volume_refused(a, lab, case, params, code):
    vid = lab.gp2  # a gp2 volume of 4 GiB by now
    wait_volume(a.gw, vid, "available")
    before = storage_state(a.gw)
    expect_error(a.gw.UpdateVolume, VolumeId=vid, **params, status=400, code=code)
    assert storage_state(a.gw) == before, f"a refused UpdateVolume ({case}) changed the account"


def test_update_unknown_or_malformed_volume(a):
    before = storage_state(a.gw)
    expect_error(a.gw.UpdateVolume, VolumeId=absent_id("vol"), Size=5, status=400, code="5064",
                 type_="InvalidResource")
    expect_error(a.gw.UpdateVolume, VolumeId="vol-12", Size=5, status=400, code="4105")
    expect_error(a.gw.UpdateVolume, VolumeId="snap-12345678", Size=5, status=400, code="4104")
    assert storage_state(a.gw) == before


# ------------------------------------------------------------- link / unlink


def test_link_hot_plugs_into_running_guest(a, lab):
    vid, vm = lab.main, lab.a_vm
    wait_vms_state(a.gw, [vm], "running")
    wait_ready(a.gw, vm)
    ensure_available(a.gw, vid)
    before = console_text(a.gw, vm)
    resp = a.gw.LinkVolume(VolumeId=vid, VmId=vm, DeviceName="/dev/xvdb")
    assert set(resp) == {"ResponseContext"}, resp
    history: list = []
    v = wait_volume(a.gw, vid, "in-use", link="attached", history=history)
    assert all(h[0] == "in-use" for h in history), f"a linked volume must be in-use: {history}"
    assert [h[2] for h in history] in (["attaching", "attached"], ["attached"]), history
    assert link_of(v) == {"VmId": vm, "VolumeId": vid, "DeviceName": "/dev/xvdb", "State": "attached",
                          "DeleteOnVmDeletion": False}, v
    # The guest sees the disk appear, with the volume ID as serial and the volume's size.
    verb, dev, serial, size = wait_disk_event(a.gw, vm, vid, "added", since=before)
    assert dev.startswith("vd") and size == 1 * GIB, (verb, dev, serial, size)
    # ReadVms shows it.
    mappings = read_vm(a.gw, vm)["BlockDeviceMappings"]
    mine = [m for m in mappings if (m.get("Bsu") or {}).get("VolumeId") == vid]
    assert len(mine) == 1, mappings
    assert mine[0]["DeviceName"] == "/dev/xvdb", mine
    bsu = mine[0]["Bsu"]
    assert (bsu["State"], bsu["DeleteOnVmDeletion"]) == ("attached", False), bsu
    assert recent(bsu["LinkDate"], 120), bsu


@pytest.mark.parametrize("delay", [0, 0.05])
def test_unlink_while_attaching(a, lab, delay):
    """UnlinkVolume right after LinkVolume (the link may still be attaching) is accepted:
    the volume must then end up unlinked and available, and out of the guest."""
    vid, vm = lab.io1, lab.a_vm
    ensure_available(a.gw, vid)
    before = console_text(a.gw, vm)
    a.gw.LinkVolume(VolumeId=vid, VmId=vm, DeviceName="/dev/xvdh")
    time.sleep(delay)
    a.gw.UnlinkVolume(VolumeId=vid)
    try:
        wait_volume(a.gw, vid, "available", link=None, timeout=RACE_TIMEOUT)
        time.sleep(1)  # the guest polls its disks every 0.3 s
        events = [e for e in disk_events(new_output(before, console_text(a.gw, vm))) if e[2] == vid]
        assert not events or events[-1][0] == "removed", f"the guest still has the disk: {events}"
        assert vid not in {(m.get("Bsu") or {}).get("VolumeId")
                           for m in read_vm(a.gw, vm)["BlockDeviceMappings"]}
    finally:
        ensure_available(a.gw, vid)  # so that the next tests find it unlinked either way


def test_read_volumes_link_filters(a, lab):
    vid, vm = lab.main, lab.a_vm
    ensure_linked(a.gw, vid, vm, "/dev/xvdb")
    everything = read_volumes(a.gw)
    device = link_of(read_volume(a.gw, vid))["DeviceName"]
    linked = lambda v: link_of(v) or {}

    def check(filters, predicate, include=(), exclude=()):
        return check_filter(a.gw.ReadVolumes, "Volumes", "VolumeId", everything, filters, predicate,
                            include, exclude)

    check({"LinkVolumeVmIds": [vm]}, lambda v: linked(v).get("VmId") == vm, [vid], [lab.io1])
    check({"LinkVolumeVmIds": [absent_id("i")]}, lambda v: False)
    check({"LinkVolumeDeviceNames": [device]}, lambda v: linked(v).get("DeviceName") == device, [vid])
    check({"LinkVolumeDeviceNames": ["/dev/xvdz"]}, lambda v: False)
    check({"LinkVolumeLinkStates": ["attached"]}, lambda v: linked(v).get("State") == "attached", [vid])
    check({"LinkVolumeLinkStates": ["detaching", "detached"]}, lambda v: False)
    check({"LinkVolumeDeleteOnVmDeletion": False}, lambda v: linked(v).get("DeleteOnVmDeletion") is False,
          [vid], [lab.io1])
    # The VM's root volume (/dev/sda1) goes with the VM; volumes linked by LinkVolume do not.
    check({"LinkVolumeDeleteOnVmDeletion": True}, lambda v: linked(v).get("DeleteOnVmDeletion") is True,
          exclude=[vid])
    check({"VolumeStates": ["in-use"]}, lambda v: v["State"] == "in-use", [vid], [lab.io1])
    check({"LinkVolumeVmIds": [vm], "VolumeTypes": ["io1"]},
          lambda v: linked(v).get("VmId") == vm and v["VolumeType"] == "io1", exclude=[vid, lab.io1])


def test_grow_linked_volume_online(a, lab):
    vid, vm = lab.main, lab.a_vm
    v = ensure_linked(a.gw, vid, vm, "/dev/xvdb")
    new_size = v["Size"] + 1
    before = console_text(a.gw, vm)
    resp = a.gw.UpdateVolume(VolumeId=vid, Size=new_size)["Volume"]
    assert resp["Size"] == new_size and resp["State"] == "updating", resp
    _, _, _, size = wait_disk_event(a.gw, vm, vid, "resized", since=before)
    assert size == new_size * GIB
    v = wait_volume(a.gw, vid, "in-use", link="attached")
    assert v["Size"] == new_size, v
    assert not [e for e in disk_events(new_output(before, console_text(a.gw, vm))) if e[0] == "removed"], \
        "the disk was unplugged to be resized"


def test_link_refused_while_linked(a, lab):
    vid, vm = lab.main, lab.a_vm
    v = ensure_linked(a.gw, vid, vm, "/dev/xvdb")
    device = link_of(v)["DeviceName"]
    ensure_available(a.gw, lab.io1)
    before = storage_state(a.gw)
    console_before = console_text(a.gw, vm)
    # The volume is already linked (to this VM, at another device).
    expect_error(a.gw.LinkVolume, VolumeId=vid, VmId=vm, DeviceName="/dev/xvdf", status=400,
                 code="6007", type_="InvalidState")
    # Another volume at the device this one uses.
    expect_error(a.gw.LinkVolume, VolumeId=lab.io1, VmId=vm, DeviceName=device, status=400,
                 code="9004", type_="ResourceConflict")
    # A linked volume cannot be deleted.
    expect_error(a.gw.DeleteVolume, VolumeId=vid, status=400, code="6007", type_="InvalidState")
    assert storage_state(a.gw) == before
    assert not [e for e in disk_events(new_output(console_before, console_text(a.gw, vm)))
                if e[2] == lab.io1], "a refused LinkVolume plugged a disk"


BAD_DEVICES = ["/dev/xvda", "/dev/sda", "/dev/sda1", "/dev/vdb", "xvdb", "/dev/xvdb1", "/dev/xvd", "",
               "/dev/xvdB", "/dev/hdb"]


@pytest.mark.parametrize("device", BAD_DEVICES)
def test_link_bad_device_name(a, lab, device):
    ensure_available(a.gw, lab.io1)
    before = storage_state(a.gw)
    expect_error(a.gw.LinkVolume, VolumeId=lab.io1, VmId=lab.a_vm, DeviceName=device, status=400,
                 code="4019")
    assert storage_state(a.gw) == before


def test_link_two_letter_device_name(a, lab):
    """outscale.yaml allows /dev/xvdXX (two letters). Socle deliberately serves one
    virtio-blk PCI slot per data volume, /dev/xvdb to /dev/xvdz (25 volumes per VM,
    documented in docs/ARCHITECTURE.md): two-letter names are refused with a clear
    4019 and nothing changes."""
    vid, vm = lab.io1, lab.a_vm
    ensure_available(a.gw, vid)
    before = storage_state(a.gw)
    err = expect_error(a.gw.LinkVolume, VolumeId=vid, VmId=vm, DeviceName="/dev/xvdba",
                       status=400, code="4019")
    assert "/dev/xvdz" in str(err), err
    assert storage_state(a.gw) == before


def test_link_unknown_or_malformed(a, lab):
    ensure_available(a.gw, lab.io1)
    before = storage_state(a.gw)
    vm, vid = lab.a_vm, lab.io1
    expect_error(a.gw.LinkVolume, VolumeId=absent_id("vol"), VmId=vm, DeviceName="/dev/xvdg",
                 status=400, code="5064", type_="InvalidResource")
    expect_error(a.gw.LinkVolume, VolumeId=vid, VmId=absent_id("i"), DeviceName="/dev/xvdg",
                 status=400, code="5063", type_="InvalidResource")
    expect_error(a.gw.LinkVolume, VolumeId="vol-zz", VmId=vm, DeviceName="/dev/xvdg", status=400, code="4105")
    expect_error(a.gw.LinkVolume, VolumeId=vid, VmId="i-1", DeviceName="/dev/xvdg", status=400, code="4105")
    expect_error(a.gw.LinkVolume, VolumeId="snap-12345678", VmId=vm, DeviceName="/dev/xvdg",
                 status=400, code="4104")
    expect_error(a.gw.LinkVolume, VolumeId=vid, VmId="vol-12345678", DeviceName="/dev/xvdg",
                 status=400, code="4104")
    # The SDK refuses to send a LinkVolume without DeviceName: raw call.
    expect_error(a.gw.raw, "LinkVolume", VolumeId=vid, VmId=vm, status=400, code="7000")
    assert storage_state(a.gw) == before


def test_unlink_hot_unplugs(a, lab):
    vid, vm = lab.main, lab.a_vm
    ensure_linked(a.gw, vid, vm, "/dev/xvdb")
    before = console_text(a.gw, vm)
    resp = a.gw.UnlinkVolume(VolumeId=vid)
    assert set(resp) == {"ResponseContext"}, resp
    history: list = []
    v = wait_volume(a.gw, vid, "available", link=None, history=history)
    assert history[-1][0] == "available" and all(h[2] in ("attached", "detaching", None) for h in history), \
        history
    assert not v.get("LinkedVolumes"), v
    verb, dev, serial, _ = wait_disk_event(a.gw, vm, vid, "removed", since=before)
    assert vid not in {(m.get("Bsu") or {}).get("VolumeId") for m in read_vm(a.gw, vm)["BlockDeviceMappings"]}
    assert a.gw.ReadVolumes(Filters={"LinkVolumeVmIds": [vm], "VolumeIds": [vid]})["Volumes"] == []
    # Unlinking it again: it is not linked.
    state = storage_state(a.gw)
    expect_error(a.gw.UnlinkVolume, VolumeId=vid, status=400, code="9063", type_="ResourceConflict")
    expect_error(a.gw.UnlinkVolume, VolumeId=absent_id("vol"), status=400, code="5064")
    expect_error(a.gw.UnlinkVolume, VolumeId="vol-1", status=400, code="4105")
    expect_error(a.gw.UnlinkVolume, VolumeId="i-12345678", status=400, code="4104")
    assert storage_state(a.gw) == state


def test_dry_runs_change_nothing(a, lab):
    vm = lab.a_vm
    ensure_available(a.gw, lab.io1)
    ensure_linked(a.gw, lab.main, vm, "/dev/xvdd")
    before = storage_state(a.gw)
    console_before = console_text(a.gw, vm)
    mappings = read_vm(a.gw, vm)["BlockDeviceMappings"]
    a.gw.raw("LinkVolume", VolumeId=lab.io1, VmId=vm, DeviceName="/dev/xvde", DryRun=True)
    a.gw.raw("UnlinkVolume", VolumeId=lab.main, DryRun=True)
    a.gw.raw("UpdateVolume", VolumeId=lab.io1, Size=10, DryRun=True)
    a.gw.raw("UpdateVolume", VolumeId=lab.io1, VolumeType="gp2", DryRun=True)
    a.gw.raw("DeleteVolume", VolumeId=lab.io1, DryRun=True)
    a.gw.raw("CreateTags", ResourceIds=[lab.io1], Tags=[{"Key": "dry", "Value": "run"}], DryRun=True)
    # Dry runs check like real calls.
    expect_error(a.gw.raw, "DeleteVolume", VolumeId=lab.main, DryRun=True, status=400, code="6007")
    expect_error(a.gw.raw, "UnlinkVolume", VolumeId=lab.io1, DryRun=True, status=400, code="9063")
    expect_error(a.gw.raw, "LinkVolume", VolumeId=lab.io1, VmId=vm, DeviceName="/dev/xvdd", DryRun=True,
                 status=400, code="9004")
    expect_error(a.gw.raw, "UpdateVolume", VolumeId=lab.io1, Size=1, DryRun=True, status=400, code="4078")
    time.sleep(1.5)  # time for the reconciler to act, had a dry run been recorded
    assert storage_state(a.gw) == before, "a dry run changed the account"
    assert read_vm(a.gw, vm)["BlockDeviceMappings"] == mappings
    events = disk_events(new_output(console_before, console_text(a.gw, vm)))
    assert not [e for e in events if e[2] == lab.io1 or e[0] == "removed"], \
        f"a dry run plugged or unplugged a disk: {events}"


def test_volume_tags(a, lab):
    vid = lab.spare
    a.gw.CreateTags(ResourceIds=[vid], Tags=[{"Key": "owner", "Value": "a"}, {"Key": "empty", "Value": ""}])
    rows = a.gw.ReadTags(Filters={"ResourceIds": [vid]})["Tags"]
    assert sorted((t["ResourceId"], t["ResourceType"], t["Key"], t["Value"]) for t in rows) == [
        (vid, "volume", "empty", ""), (vid, "volume", "owner", "a")]
    assert vid in {t["ResourceId"] for t in a.gw.ReadTags(Filters={"ResourceTypes": ["volume"]})["Tags"]}
    assert {t["Key"]: t["Value"] for t in read_volume(a.gw, vid)["Tags"]} == {"owner": "a", "empty": ""}
    a.gw.DeleteTags(ResourceIds=[vid], Tags=[{"Key": "empty", "Value": ""}])
    assert {t["Key"]: t["Value"] for t in read_volume(a.gw, vid)["Tags"]} == {"owner": "a"}
    # Not found: the volume's own code; a list with an absent volume tags nothing.
    before = storage_state(a.gw)
    expect_error(a.gw.CreateTags, ResourceIds=[absent_id("vol")], Tags=[{"Key": "k", "Value": "v"}],
                 status=400, code="5064", type_="InvalidResource")
    expect_error(a.gw.CreateTags, ResourceIds=[vid, absent_id("vol")], Tags=[{"Key": "k", "Value": "v"}],
                 status=400, code="5064")
    expect_error(a.gw.DeleteTags, ResourceIds=[absent_id("vol")], Tags=[{"Key": "owner", "Value": "a"}],
                 status=400, code="5064")
    assert storage_state(a.gw) == before


def test_delete_volume(a, lab):
    vid = lab.spare
    ensure_available(a.gw, vid)
    resp = a.gw.DeleteVolume(VolumeId=vid)
    assert set(resp) == {"ResponseContext"}, resp
    history: list = []
    wait_volume(a.gw, vid, None, history=history)
    assert all(h is None or h[0] in ("available", "deleting") for h in history), history
    assert vid not in {v["VolumeId"] for v in read_volumes(a.gw)}
    assert a.gw.ReadTags(Filters={"ResourceIds": [vid]})["Tags"] == [], "a deleted volume kept its tags"
    before = storage_state(a.gw)
    for op, params in [("DeleteVolume", {}), ("UpdateVolume", {"Size": 9}), ("UnlinkVolume", {}),
                       ("LinkVolume", {"VmId": lab.a_vm, "DeviceName": "/dev/xvdh"})]:
        expect_error(getattr(a.gw, op), VolumeId=vid, **params, status=400, code="5064")
    expect_error(a.gw.DeleteVolume, VolumeId=absent_id("vol"), status=400, code="5064")
    expect_error(a.gw.DeleteVolume, VolumeId="vol-123456789", status=400, code="4105")
    expect_error(a.gw.DeleteVolume, VolumeId="i-12345678", status=400, code="4104")
    assert storage_state(a.gw) == before


# ---------------------------------------------------------------- account B


def test_volume_linked_before_guest_watches(b, lab):
    """B's volume was linked while B's VM was booting: the guest lists it as present at
    boot, or as added if the plug came after its first scan."""
    vm, vid = lab.b_vm, lab.b_linked
    wait_vms_state(b.gw, [vm], "running")
    text = wait_ready(b.gw, vm)
    v = wait_volume(b.gw, vid, "in-use", link="attached")
    assert link_of(v)["VmId"] == vm and link_of(v)["DeviceName"] == "/dev/xvdc", v
    verb, _, _, size = wait_disk_event(b.gw, vm, vid, ("present", "added"))
    assert size == GIB
    if verb == "present":
        text = console_text(b.gw, vm)
        assert text.index(f"serial={vid}") < text.index("socle-guest: ready"), text[-1500:]
    mappings = read_vm(b.gw, vm)["BlockDeviceMappings"]
    assert [m["Bsu"]["VolumeId"] for m in mappings if m["DeviceName"] != ROOT_DEVICE] == [vid], mappings


def test_other_account_sees_none_of_a_volumes(a, b, lab):
    ensure_linked(a.gw, lab.main, lab.a_vm, "/dev/xvdd")
    a_ids = {v["VolumeId"] for v in read_volumes(a.gw)}
    b_ids = {v["VolumeId"] for v in read_volumes(b.gw)}
    assert {lab.b_linked, lab.b_spare} <= b_ids
    assert not a_ids & b_ids
    assert read_volumes(b.gw, VolumeIds=sorted(a_ids)) == []
    assert read_volumes(b.gw, TagKeys=["role"]) == []
    assert read_volumes(b.gw, LinkVolumeVmIds=[lab.a_vm]) == []
    assert b.gw.ReadTags(Filters={"ResourceIds": sorted(a_ids)})["Tags"] == []
    assert lab.main not in {(m.get("Bsu") or {}).get("VolumeId")
                            for vm in b.gw.ReadVms()["Vms"] for m in vm.get("BlockDeviceMappings") or []}


CROSS_OPS = [
    ("ReadVolumes", lambda i, lab: {"Filters": {"VolumeIds": [i]}}),
    ("UpdateVolume", lambda i, lab: {"VolumeId": i, "Size": 8}),
    ("UpdateVolume", lambda i, lab: {"VolumeId": i, "VolumeType": "io1", "Iops": 500}),
    ("LinkVolume", lambda i, lab: {"VolumeId": i, "VmId": lab.b_vm, "DeviceName": "/dev/xvdk"}),
    ("LinkVolume", lambda i, lab: {"VolumeId": i, "VmId": lab.a_vm, "DeviceName": "/dev/xvdk"}),
    ("UnlinkVolume", lambda i, lab: {"VolumeId": i}),
    ("UnlinkVolume", lambda i, lab: {"VolumeId": i, "ForceUnlink": True}),
    ("DeleteVolume", lambda i, lab: {"VolumeId": i}),
    ("CreateSnapshot", lambda i, lab: {"VolumeId": i}),
    ("CreateTags", lambda i, lab: {"ResourceIds": [i], "Tags": [{"Key": "owner", "Value": "b"}]}),
    ("DeleteTags", lambda i, lab: {"ResourceIds": [i], "Tags": [{"Key": "role", "Value": "logs"}]}),
    ("ReadTags", lambda i, lab: {"Filters": {"ResourceIds": [i]}}),
]


@pytest.mark.parametrize("op,build", CROSS_OPS, ids=[f"{o}-{n}" for n, (o, _) in enumerate(CROSS_OPS)])
@pytest.mark.parametrize("which", ["linked", "available"])
def test_other_account_volume_ops_same_as_absent(a, b, lab, op, build, which):
    """B naming A's volume (linked to A's running VM, or available) gets exactly the
    answer of a volume ID that does not exist; A's volume is untouched."""
    ensure_linked(a.gw, lab.main, lab.a_vm, "/dev/xvdd")
    ensure_available(a.gw, lab.io1)
    real = lab.main if which == "linked" else lab.io1
    before = storage_state(a.gw)
    b_before = storage_state(b.gw)
    result = same_as_absent(getattr(b.gw, op), lambda i: build(i, lab), real, absent_id("vol"))
    if op.startswith("Read"):
        assert result[0] == "ok", result
    else:
        assert result[:4] == ("error", 400, "5064", "InvalidResource"), result
    assert storage_state(a.gw) == before, f"B's {op} on A's volume changed A's account"
    assert storage_state(b.gw) == b_before


def test_other_account_cannot_link_to_a_vm(a, b, lab):
    """B's own volume to A's VM answers like B's volume to a VM that does not exist."""
    wait_volume(b.gw, lab.b_spare, "available", link=None)
    before = storage_state(a.gw)
    console_before = console_text(a.gw, lab.a_vm)
    result = same_as_absent(b.gw.LinkVolume,
                            lambda i: {"VolumeId": lab.b_spare, "VmId": i, "DeviceName": "/dev/xvdm"},
                            lab.a_vm, absent_id("i"))
    assert result[:4] == ("error", 400, "5063", "InvalidResource"), result
    assert wait_volume(b.gw, lab.b_spare, "available", link=None)
    assert storage_state(a.gw) == before
    assert lab.b_spare not in {(m.get("Bsu") or {}).get("VolumeId")
                               for m in read_vm(a.gw, lab.a_vm)["BlockDeviceMappings"]}
    assert not [e for e in disk_events(new_output(console_before, console_text(a.gw, lab.a_vm)))
                if e[2] == lab.b_spare]


# ----------------------------------------------------------------- VM deletion


def test_vm_deletion_releases_volumes(a, b, lab):
    """Volumes linked with LinkVolume become available again; the root volume, which
    goes with its VM (DeleteOnVmDeletion), is deleted."""
    ensure_linked(a.gw, lab.main, lab.a_vm, "/dev/xvdd")
    ensure_linked(a.gw, lab.io1, lab.a_vm, "/dev/xvde")
    wait_volume(b.gw, lab.b_linked, "in-use", link="attached")
    roots = []
    for gw, vm in ((a.gw, lab.a_vm), (b.gw, lab.b_vm)):
        root = [m for m in read_vm(gw, vm)["BlockDeviceMappings"] if m["DeviceName"] == ROOT_DEVICE]
        assert len(root) == 1 and root[0]["Bsu"]["DeleteOnVmDeletion"] is True, root
        roots.append((gw, root[0]["Bsu"]["VolumeId"]))
    a.gw.DeleteVms(VmIds=[lab.a_vm])
    b.gw.DeleteVms(VmIds=[lab.b_vm])
    wait_vms_state(a.gw, [lab.a_vm], "terminated", allow_absent=True)
    wait_vms_state(b.gw, [lab.b_vm], "terminated", allow_absent=True)
    for gw, vid in ((a.gw, lab.main), (a.gw, lab.io1), (b.gw, lab.b_linked)):
        v = wait_volume(gw, vid, "available", link=None)
        assert not v.get("LinkedVolumes"), v
    assert read_volumes(a.gw, LinkVolumeVmIds=[lab.a_vm]) == []
    for gw, root in roots:
        wait_volume(gw, root, None)
    # Released volumes are ordinary available volumes again.
    a.gw.DeleteVolume(VolumeId=lab.io1)
    wait_volume(a.gw, lab.io1, None)
