"""Snapshots through the official SDK, with real data: a socle-tiny guest writes a
pattern to a hot-plugged volume from its UserData script; the volume is snapshotted
while the VM runs and again after UnlinkVolume; volumes made from the snapshots are
hot-plugged into a second VM, whose script reads the pattern back. Then CreateSnapshot
(client token, dry run, refused inputs), ReadSnapshots (filters, pagination), tags,
DeleteSnapshot, and sharing with UpdateSnapshot: another account sees nothing of a
private snapshot (exactly like an absent ID), can create volumes from it only while it
is shared with it or public, and never sees the owner's share list. Finally, the
pattern never appears in clear anywhere under the data directory.

Account A has two VMs: the writer and the reader. Account B has no VM."""

import hashlib
import random
import time
import uuid
from types import SimpleNamespace

import pytest

from socle_lib import (GIB, SNAPSHOT_ID_RE, absent_id, account_id, b64, check_filter,
                       check_pagination, console_text, create_vms,
                       expect_error, files_containing, link_of, read_snapshot, read_snapshots, read_volume,
                       read_volumes, same_as_absent, storage_state, wait_console, wait_disk_event,
                       wait_ready, wait_snapshot, wait_volume, wait_vms_state)

PATTERN_BYTES = 1024 * 1024  # 16 blocks of 64 KiB
WROTE = "socle-test: wrote"
READ = "socle-test: read"




@pytest.fixture(scope="module")
def a(storage_accounts):
    return storage_accounts("snap-a")


@pytest.fixture(scope="module")
def b(storage_accounts):
    return storage_accounts("snap-b")


@pytest.fixture(scope="module")
def ids(a, b):
    """The account IDs: from `socle account create` and from ReadQuotas (they agree), and
    a third, well-formed one that nobody here owns."""
    a_id, b_id = account_id(a.gw), account_id(b.gw)
    for acct, got in ((a, a_id), (b, b_id)):
        if acct.account_id is not None:
            assert acct.account_id == got, (acct.account_id, got)
    third = f"{random.randrange(10 ** 11, 10 ** 12)}"
    assert len({a_id, b_id, third}) == 3
    return SimpleNamespace(a=a_id, b=b_id, third=third)


@pytest.fixture(scope="module")
def pattern():
    """A pattern of two random halves: the writer's script holds them apart (a=…; b=…),
    so the whole never exists outside the guest's memory and the volume."""
    t1, t2 = uuid.uuid4().hex, uuid.uuid4().hex
    line = f"{t1}{t2}\n".encode()
    data = (line * (PATTERN_BYTES // len(line) + 1))[:PATTERN_BYTES]
    return SimpleNamespace(t1=t1, t2=t2, needle=f"{t1}{t2}".encode(), md5=hashlib.md5(data).hexdigest())


def writer_script(volume_id: str, p) -> str:
    count = PATTERN_BYTES // 65536
    return f"""#!/bin/sh
d=$(socle-disks wait {volume_id} 300) || exit 1
a={p.t1}; b={p.t2}
yes "$a$b" | head -c {PATTERN_BYTES} > /tmp/p
dd if=/tmp/p of="$d" bs=65536 conv=fsync 2>/dev/null || exit 2
sync
echo "{WROTE} $(md5sum < /tmp/p | cut -d' ' -f1) to $d"
echo "socle-test: readback $(dd if="$d" bs=65536 count={count} iflag=direct 2>/dev/null | md5sum | cut -d' ' -f1)"
"""


READER_SCRIPT = f"""#!/bin/sh
# Prints the MD5 of the first {PATTERN_BYTES} bytes of every volume disk, once per volume.
seen=" "
end=$(($(date +%s) + 600))  # bounded: a guest left behind stops after 10 minutes
while [ "$(date +%s)" -lt "$end" ]; do
    for p in /sys/block/vd*; do
        [ -r "$p/serial" ] || continue
        s=""
        read -r s < "$p/serial"
        case "$s" in vol-*) ;; *) continue ;; esac
        case "$seen" in *" $s "*) continue ;; esac
        d=/dev/${{p##*/}}
        [ -b "$d" ] || continue
        sum=$(dd if="$d" bs=65536 count={PATTERN_BYTES // 65536} iflag=direct 2>/dev/null | md5sum | cut -d' ' -f1)
        echo "{READ} $s $sum"
        seen="$seen$s "
    done
    usleep 300000
done
"""


@pytest.fixture(scope="module")
def lab(a, b, image_id, subregion, pattern):
    """Started together: A's source volume, the writer VM (its script waits for that
    volume), the reader VM, and a volume of B's."""
    src = a.gw.CreateVolume(SubregionName=subregion, Size=1)["Volume"]["VolumeId"]
    b_vol = b.gw.CreateVolume(SubregionName=subregion, Size=1)["Volume"]["VolumeId"]
    writer = create_vms(a.gw, image_id, UserData=b64(writer_script(src, pattern)))[0]["VmId"]
    reader = create_vms(a.gw, image_id, UserData=b64(READER_SCRIPT))[0]["VmId"]
    return SimpleNamespace(src=src, b_vol=b_vol, writer=writer, reader=reader)


@pytest.fixture(scope="module")
def written(a, lab):
    """The source volume hot-plugged into the running writer, which wrote the pattern."""
    wait_vms_state(a.gw, [lab.writer], "running")
    wait_ready(a.gw, lab.writer)
    wait_volume(a.gw, lab.src, "available")
    before = console_text(a.gw, lab.writer)
    a.gw.LinkVolume(VolumeId=lab.src, VmId=lab.writer, DeviceName="/dev/xvdb")
    event = wait_disk_event(a.gw, lab.writer, lab.src, "added", since=before)
    text = wait_console(a.gw, lab.writer, lambda t: "socle-test: readback" in t or "exited with status" in t,
                        "the writer script's readback line")
    wait_volume(a.gw, lab.src, "in-use", link="attached")
    return SimpleNamespace(event=event, console=text)


@pytest.fixture(scope="module")
def live_snap(a, lab, written):
    """A snapshot of the source volume while it is linked to the running writer."""
    token = str(uuid.uuid4())
    created = a.gw.CreateSnapshot(VolumeId=lab.src, Description="live copy", ClientToken=token)["Snapshot"]
    return SimpleNamespace(id=created["SnapshotId"], created=created, token=token, description="live copy")


@pytest.fixture(scope="module")
def cold_snap(a, lab, live_snap):
    """A snapshot of the source volume after UnlinkVolume."""
    wait_snapshot(a.gw, live_snap.id, "completed")
    before = console_text(a.gw, lab.writer)
    a.gw.UnlinkVolume(VolumeId=lab.src)
    removed = wait_disk_event(a.gw, lab.writer, lab.src, "removed", since=before)
    wait_volume(a.gw, lab.src, "available", link=None)
    created = a.gw.CreateSnapshot(VolumeId=lab.src, Description="cold copy")["Snapshot"]
    return SimpleNamespace(id=created["SnapshotId"], created=created, removed=removed, description="cold copy")


@pytest.fixture(scope="module")
def copies(a, subregion, live_snap, cold_snap):
    """Volumes made from the two snapshots: the first at the snapshot's size, the second larger."""
    for s in (live_snap, cold_snap):
        wait_snapshot(a.gw, s.id, "completed")
    one = a.gw.CreateVolume(SubregionName=subregion, SnapshotId=live_snap.id)["Volume"]
    two = a.gw.CreateVolume(SubregionName=subregion, SnapshotId=cold_snap.id, Size=2)["Volume"]
    return SimpleNamespace(one=one["VolumeId"], two=two["VolumeId"], answers=(one, two))


@pytest.fixture(scope="module")
def big_snap(a, copies):
    """A snapshot of the 2 GiB copy."""
    wait_volume(a.gw, copies.two, ("available", "in-use"))
    created = a.gw.CreateSnapshot(VolumeId=copies.two)["Snapshot"]
    return wait_snapshot(a.gw, created["SnapshotId"], "completed")


def own_snapshots(gw, me):
    return {s["SnapshotId"]: s for s in read_snapshots(gw) if s["AccountId"] == me}


# ----------------------------------------------------------- data, hot-plug


def test_guest_writes_pattern_through_hot_plug(a, lab, written, pattern):
    verb, dev, serial, size = written.event
    assert (verb, serial, size) == ("added", lab.src, GIB), written.event
    text = written.console
    assert f"{WROTE} {pattern.md5} to /dev/{dev}" in text, text[-1500:]
    assert f"socle-test: readback {pattern.md5}" in text, text[-1500:]


def test_snapshot_of_linked_volume_while_vm_runs(a, lab, ids, live_snap):
    s = live_snap.created
    assert SNAPSHOT_ID_RE.match(s["SnapshotId"]), s
    assert (s["State"], s["Progress"]) == ("pending", 0), s
    assert (s["VolumeId"], s["VolumeSize"], s["AccountId"]) == (lab.src, 1, ids.a), s
    assert s["Description"] == live_snap.description and s["ClientToken"] == live_snap.token, s
    assert s["PermissionsToCreateVolume"] == {"AccountIds": [], "GlobalPermission": False}, s
    assert not s.get("Tags"), s
    history: list = []
    done = wait_snapshot(a.gw, s["SnapshotId"], "completed", history=history)
    assert done["Progress"] == 100, done
    states = [h[0] for h in history]
    assert states[-1] == "completed" and set(states) <= {"pending", "completed"}, history
    assert states == sorted(states, key=["pending", "completed"].index), history
    progress = [h[1] for h in history]
    assert progress == sorted(progress), f"Progress went backwards: {history}"
    for k in ("SnapshotId", "VolumeId", "VolumeSize", "AccountId", "Description", "CreationDate",
              "ClientToken"):
        assert done[k] == s[k], (k, done, s)
    # Taken live: the VM kept running with the volume attached.
    assert read_volume(a.gw, lab.src)["State"] == "in-use"
    assert link_of(read_volume(a.gw, lab.src))["State"] == "attached"
    wait_vms_state(a.gw, [lab.writer], "running", timeout=1)


def test_create_snapshot_client_token(a, b, lab, live_snap):
    before = storage_state(a.gw)
    again = a.gw.CreateSnapshot(VolumeId=lab.src, Description="live copy", ClientToken=live_snap.token)
    assert again["Snapshot"]["SnapshotId"] == live_snap.id, "same ClientToken, different snapshots"
    assert storage_state(a.gw)["snapshots"].keys() == before["snapshots"].keys()
    listed = read_snapshots(a.gw, ClientTokens=[live_snap.token])
    assert [(s["SnapshotId"], s["ClientToken"]) for s in listed] == [(live_snap.id, live_snap.token)]
    assert read_snapshots(a.gw, ClientTokens=[str(uuid.uuid4())]) == []
    # The token is A's own: B using it with its own volume gets a snapshot of its own.
    wait_volume(b.gw, lab.b_vol, "available")
    theirs = b.gw.CreateSnapshot(VolumeId=lab.b_vol, ClientToken=live_snap.token)["Snapshot"]
    assert theirs["SnapshotId"] != live_snap.id and theirs["VolumeId"] == lab.b_vol, theirs
    assert theirs["AccountId"] == account_id(b.gw)
    assert [s["SnapshotId"] for s in read_snapshots(b.gw, ClientTokens=[live_snap.token])] == \
        [theirs["SnapshotId"]]
    assert [s["SnapshotId"] for s in read_snapshots(a.gw, ClientTokens=[live_snap.token])] == [live_snap.id]
    wait_snapshot(b.gw, theirs["SnapshotId"], "completed")


def test_snapshot_after_unlink(a, lab, cold_snap):
    verb, _, serial, _ = cold_snap.removed
    assert (verb, serial) == ("removed", lab.src)
    s = cold_snap.created
    assert (s["State"], s["Progress"], s["VolumeId"], s["VolumeSize"]) == ("pending", 0, lab.src, 1), s
    assert not s.get("ClientToken"), s
    done = wait_snapshot(a.gw, s["SnapshotId"], "completed")
    assert done["Progress"] == 100


def test_create_volumes_from_snapshots(a, lab, subregion, live_snap, cold_snap, copies):
    one, two = copies.answers
    assert (one["SnapshotId"], one["Size"], one["State"], one["SubregionName"]) == \
        (live_snap.id, 1, "creating", subregion), one
    assert (two["SnapshotId"], two["Size"], two["State"]) == (cold_snap.id, 2, "creating"), two
    for vid in (copies.one, copies.two):
        wait_volume(a.gw, vid, "available")
    everything = read_volumes(a.gw)

    def check(filters, predicate, include=(), exclude=()):
        check_filter(a.gw.ReadVolumes, "Volumes", "VolumeId", everything, filters, predicate,
                     include, exclude)

    check({"SnapshotIds": [live_snap.id]}, lambda v: v.get("SnapshotId") == live_snap.id,
          [copies.one], [copies.two, lab.src])
    check({"SnapshotIds": [live_snap.id, cold_snap.id]},
          lambda v: v.get("SnapshotId") in (live_snap.id, cold_snap.id), [copies.one, copies.two])
    check({"SnapshotIds": [absent_id("snap")]}, lambda v: False)


def test_second_vm_reads_the_pattern_back(a, lab, copies, pattern):
    vm = lab.reader
    wait_vms_state(a.gw, [vm], "running")
    wait_ready(a.gw, vm)
    before = console_text(a.gw, vm)
    a.gw.LinkVolume(VolumeId=copies.one, VmId=vm, DeviceName="/dev/xvdb")
    a.gw.LinkVolume(VolumeId=copies.two, VmId=vm, DeviceName="/dev/xvdc")
    for vid, size in ((copies.one, GIB), (copies.two, 2 * GIB)):
        event = wait_disk_event(a.gw, vm, vid, "added", since=before)
        assert event[3] == size, event
    for vid in (copies.one, copies.two):
        text = wait_console(a.gw, vm, lambda t, vid=vid: f"{READ} {vid} " in t, f"the reader's line for {vid}")
        line = next(ln for ln in text.splitlines() if ln.startswith(f"{READ} {vid} "))
        assert line == f"{READ} {vid} {pattern.md5}", \
            f"the volume made from a snapshot does not hold what the guest wrote: {line!r}"
        wait_volume(a.gw, vid, "in-use", link="attached")
    before = console_text(a.gw, vm)
    for vid in (copies.one, copies.two):
        a.gw.UnlinkVolume(VolumeId=vid)
    for vid in (copies.one, copies.two):
        wait_disk_event(a.gw, vm, vid, "removed", since=before)
        wait_volume(a.gw, vid, "available", link=None)


def test_volume_data_is_encrypted_at_rest(socle, a, lab, pattern, cold_snap, copies):
    """Nothing under the data directory holds the pattern in clear: not the volumes, not
    the snapshots, not the copies (all qcow2+LUKS), nor anything else."""
    wait_snapshot(a.gw, cold_snap.id, "completed")
    for vid in (lab.src, copies.one, copies.two):
        wait_volume(a.gw, vid, "available", link=None)
    data_dir = socle.data_dir
    volume_file = data_dir / "agent" / "volumes" / f"{lab.src}.qcow2"
    assert volume_file.is_file() and volume_file.stat().st_size > PATTERN_BYTES, \
        f"{volume_file} should hold the written data: {sorted(p.name for p in volume_file.parent.iterdir())}"
    # The scan itself works: it finds what is known to be stored in clear.
    assert files_containing(data_dir, lab.writer.encode()), f"the scan finds no file naming {lab.writer}"
    hits = files_containing(data_dir, pattern.needle)
    assert hits == [], f"the pattern written by the guest is in clear in {hits}"


def test_create_volume_from_snapshot_smaller_than_it(a, subregion, big_snap):
    assert big_snap["VolumeSize"] == 2, big_snap
    before = storage_state(a.gw)
    expect_error(a.gw.CreateVolume, SubregionName=subregion, SnapshotId=big_snap["SnapshotId"], Size=1,
                 status=400, code="4078")
    expect_error(a.gw.CreateVolume, SubregionName=subregion, SnapshotId=big_snap["SnapshotId"], Size=14902,
                 status=400, code="4078")
    expect_error(a.gw.CreateVolume, SubregionName=subregion, SnapshotId=big_snap["SnapshotId"], Size=14000,
                 status=400, code="10024")
    assert storage_state(a.gw) == before


# ---------------------------------------------------------------------- read


def test_read_snapshots_filters(a, lab, ids, live_snap, cold_snap, copies, big_snap):
    big = big_snap["SnapshotId"]
    for s in (live_snap.id, cold_snap.id, big):
        wait_snapshot(a.gw, s, "completed")
    a.gw.CreateTags(ResourceIds=[live_snap.id], Tags=[{"Key": "stage", "Value": "live"}])
    a.gw.CreateTags(ResourceIds=[cold_snap.id], Tags=[{"Key": "stage", "Value": "cold"},
                                                     {"Key": "keep", "Value": "yes"}])
    everything = read_snapshots(a.gw)
    mine = {live_snap.id, cold_snap.id, big}
    assert mine <= {s["SnapshotId"] for s in everything}
    tags = lambda s: {t["Key"]: t["Value"] for t in s.get("Tags") or []}

    def check(filters, predicate, include=(), exclude=()):
        return check_filter(a.gw.ReadSnapshots, "Snapshots", "SnapshotId", everything, filters, predicate,
                            include, exclude)

    check({"SnapshotIds": [live_snap.id]}, lambda s: s["SnapshotId"] == live_snap.id, [live_snap.id])
    check({"SnapshotIds": [live_snap.id, big, absent_id("snap")]}, lambda s: s["SnapshotId"] in (live_snap.id, big),
          [live_snap.id, big])
    check({"SnapshotIds": [absent_id("snap")]}, lambda s: False)
    check({"VolumeIds": [lab.src]}, lambda s: s["VolumeId"] == lab.src, [live_snap.id, cold_snap.id], [big])
    check({"VolumeIds": [copies.two]}, lambda s: s["VolumeId"] == copies.two, [big], [live_snap.id])
    check({"VolumeIds": [absent_id("vol")]}, lambda s: False)
    check({"States": ["completed"]}, lambda s: s["State"] == "completed", mine)
    check({"States": ["pending", "error"]}, lambda s: s["State"] in ("pending", "error"), exclude=mine)
    check({"AccountIds": [ids.a]}, lambda s: s["AccountId"] == ids.a, mine)
    check({"AccountIds": [ids.b, ids.third]}, lambda s: s["AccountId"] in (ids.b, ids.third), exclude=mine)
    check({"Descriptions": ["cold copy"]}, lambda s: s["Description"] == "cold copy", [cold_snap.id],
          [live_snap.id])
    check({"Descriptions": ["cold copy", "live copy"]}, lambda s: s["Description"] in ("cold copy", "live copy"),
          [cold_snap.id, live_snap.id], [big])
    check({"Descriptions": ["no such description"]}, lambda s: False)
    check({"VolumeSizes": [2]}, lambda s: s["VolumeSize"] == 2, [big], [live_snap.id])
    check({"VolumeSizes": [1, 2]}, lambda s: s["VolumeSize"] in (1, 2), mine)
    check({"Progresses": [100]}, lambda s: s["Progress"] == 100, mine)
    check({"Progresses": [0, 50]}, lambda s: s["Progress"] in (0, 50), exclude=mine)
    check({"ClientTokens": [live_snap.token]}, lambda s: s.get("ClientToken") == live_snap.token,
          [live_snap.id], [cold_snap.id])
    check({"PermissionsToCreateVolumeGlobalPermission": False},
          lambda s: s["PermissionsToCreateVolume"]["GlobalPermission"] is False, mine)
    check({"PermissionsToCreateVolumeGlobalPermission": True},
          lambda s: s["PermissionsToCreateVolume"]["GlobalPermission"] is True, exclude=mine)
    check({"PermissionsToCreateVolumeAccountIds": [ids.b]}, lambda s: False)
    check({"TagKeys": ["stage"]}, lambda s: "stage" in tags(s), [live_snap.id, cold_snap.id], [big])
    check({"TagKeys": ["keep"]}, lambda s: "keep" in tags(s), [cold_snap.id], [live_snap.id])
    check({"TagValues": ["live"]}, lambda s: "live" in tags(s).values(), [live_snap.id], [cold_snap.id])
    check({"Tags": ["stage=cold"]}, lambda s: tags(s).get("stage") == "cold", [cold_snap.id], [live_snap.id])
    check({"Tags": ["stage=cold", "stage=live"]}, lambda s: tags(s).get("stage") in ("cold", "live"),
          [cold_snap.id, live_snap.id])
    check({"Tags": ["stage=frozen"]}, lambda s: False)
    # Different filters combine with AND, the values of one filter with OR.
    check({"VolumeIds": [lab.src], "Descriptions": ["live copy"]},
          lambda s: s["VolumeId"] == lab.src and s["Description"] == "live copy", [live_snap.id], [cold_snap.id])
    check({"VolumeSizes": [2], "TagKeys": ["stage"]}, lambda s: False)
    assert tags(read_snapshot(a.gw, cold_snap.id)) == {"stage": "cold", "keep": "yes"}


def test_read_snapshots_pagination(a, ids, live_snap, cold_snap, big_snap):
    wanted = [live_snap.id, cold_snap.id, big_snap["SnapshotId"]]
    listed = check_pagination(a.gw.ReadSnapshots, "Snapshots", "SnapshotId", {"SnapshotIds": wanted})
    assert sorted(s["SnapshotId"] for s in listed) == sorted(wanted)
    check_pagination(a.gw.ReadSnapshots, "Snapshots", "SnapshotId", {"AccountIds": [ids.a]})
    expect_error(a.gw.ReadSnapshots, ResultsPerPage=0, status=400, code="4047")
    expect_error(a.gw.ReadSnapshots, ResultsPerPage=1001, status=400, code="4047")
    expect_error(a.gw.ReadSnapshots, NextPageToken="bm90IGEgdG9rZW4=", status=400, type_="InvalidParameterValue")


def test_snapshot_tags(a, big_snap):
    sid = big_snap["SnapshotId"]
    a.gw.CreateTags(ResourceIds=[sid], Tags=[{"Key": "size", "Value": "big"}])
    rows = a.gw.ReadTags(Filters={"ResourceIds": [sid]})["Tags"]
    assert [(t["ResourceId"], t["ResourceType"], t["Key"], t["Value"]) for t in rows] == \
        [(sid, "snapshot", "size", "big")]
    assert sid in {t["ResourceId"] for t in a.gw.ReadTags(Filters={"ResourceTypes": ["snapshot"]})["Tags"]}
    assert read_snapshot(a.gw, sid)["Tags"] == [{"Key": "size", "Value": "big"}]
    a.gw.DeleteTags(ResourceIds=[sid], Tags=[{"Key": "size", "Value": "big"}])
    assert not read_snapshot(a.gw, sid).get("Tags")
    before = storage_state(a.gw)
    expect_error(a.gw.CreateTags, ResourceIds=[absent_id("snap")], Tags=[{"Key": "k", "Value": "v"}],
                 status=400, code="5054", type_="InvalidResource")
    expect_error(a.gw.CreateTags, ResourceIds=[sid, absent_id("snap")], Tags=[{"Key": "k", "Value": "v"}],
                 status=400, code="5054")
    assert storage_state(a.gw) == before


# ------------------------------------------------------------------ refusals


BAD_CREATE_SNAPSHOT = [
    ("absent-volume", {"VolumeId": "{absent-vol}"}, "5064"),
    ("malformed-volume-id", {"VolumeId": "vol-xyz"}, "4105"),
    ("wrong-prefix-volume-id", {"VolumeId": "snap-12345678"}, "4104"),
    ("copy-source-snapshot", {"SourceSnapshotId": "{snap}", "SourceRegionName": "{region}"}, "4047"),
    ("copy-source-snapshot-only", {"SourceSnapshotId": "{snap}"}, "4047"),
    ("import-file-location", {"FileLocation": "https://example.com/snap.qcow2", "SnapshotSize": 1 << 30},
     "4047"),
    ("volume-and-source-snapshot", {"VolumeId": "{src}", "SourceSnapshotId": "{snap}"}, "4047"),
    ("volume-and-file-location", {"VolumeId": "{src}", "FileLocation": "https://example.com/s"}, "4047"),
    ("nothing-to-snapshot", {}, "7000"),
]


@pytest.mark.parametrize("case,params,code", BAD_CREATE_SNAPSHOT, ids=[c[0] for c in BAD_CREATE_SNAPSHOT])
def test_create_snapshot_refused(a, socle, lab, live_snap, case, params, code):
    wait_snapshot(a.gw, live_snap.id, "completed")
    subst = {"{absent-vol}": absent_id("vol"), "{snap}": live_snap.id, "{region}": socle.region,
             "{src}": lab.src}
    params = {k: subst.get(v, v) if isinstance(v, str) else v for k, v in params.items()}
    before = storage_state(a.gw)
    expect_error(a.gw.CreateSnapshot, **params, status=400, code=code)
    assert storage_state(a.gw) == before, f"a refused CreateSnapshot ({case}) changed the account"


def test_snapshot_operations_on_unknown_ids(a, ids, live_snap):
    wait_snapshot(a.gw, live_snap.id, "completed")
    before = storage_state(a.gw)
    share = {"Additions": {"AccountIds": [ids.b]}}
    for bad, code in ((absent_id("snap"), "5054"), ("snap-1234", "4105"), ("vol-12345678", "4104")):
        expect_error(a.gw.DeleteSnapshot, SnapshotId=bad, status=400, code=code)
        expect_error(a.gw.UpdateSnapshot, SnapshotId=bad, PermissionsToCreateVolume=share, status=400, code=code)
    # Account IDs are 12 digits.
    for bad_account in ("12345", "abcdefghijkl", ""):
        err = expect_error(a.gw.UpdateSnapshot, SnapshotId=live_snap.id,
                           PermissionsToCreateVolume={"Additions": {"AccountIds": [bad_account]}}, status=400)
        assert err.type == "InvalidParameterValue", err
    assert storage_state(a.gw) == before


def test_snapshot_dry_runs_change_nothing(a, ids, lab, subregion, live_snap):
    wait_snapshot(a.gw, live_snap.id, "completed")
    wait_volume(a.gw, lab.src, ("available", "in-use"))
    before = storage_state(a.gw)
    a.gw.raw("CreateSnapshot", VolumeId=lab.src, Description="dry", DryRun=True)
    a.gw.raw("CreateSnapshot", VolumeId=lab.src, ClientToken=str(uuid.uuid4()), DryRun=True)
    a.gw.raw("DeleteSnapshot", SnapshotId=live_snap.id, DryRun=True)
    a.gw.raw("UpdateSnapshot", SnapshotId=live_snap.id, DryRun=True,
             PermissionsToCreateVolume={"Additions": {"AccountIds": [ids.b], "GlobalPermission": True}})
    a.gw.raw("CreateVolume", SubregionName=subregion, SnapshotId=live_snap.id, DryRun=True)
    a.gw.raw("CreateTags", ResourceIds=[live_snap.id], Tags=[{"Key": "dry", "Value": "run"}], DryRun=True)
    # Dry runs check like real calls.
    expect_error(a.gw.raw, "CreateSnapshot", VolumeId=absent_id("vol"), DryRun=True, status=400, code="5064")
    expect_error(a.gw.raw, "DeleteSnapshot", SnapshotId=absent_id("snap"), DryRun=True, status=400, code="5054")
    expect_error(a.gw.raw, "CreateVolume", SubregionName=subregion, SnapshotId=live_snap.id, Size=0,
                 DryRun=True, status=400, code="4078")
    time.sleep(1.5)  # time for the reconciler to act, had a dry run been recorded
    assert storage_state(a.gw) == before, "a dry run changed the account"


# ---------------------------------------------------------- other accounts


PRIVATE_OPS = [
    ("ReadSnapshots", lambda i, ids, sub: {"Filters": {"SnapshotIds": [i]}}),
    ("CreateVolume", lambda i, ids, sub: {"SnapshotId": i, "SubregionName": sub}),
    ("CreateVolume", lambda i, ids, sub: {"SnapshotId": i, "SubregionName": sub, "Size": 5}),
    ("DeleteSnapshot", lambda i, ids, sub: {"SnapshotId": i}),
    ("UpdateSnapshot", lambda i, ids, sub: {"SnapshotId": i,
                                            "PermissionsToCreateVolume": {"Additions": {"AccountIds": [ids.b]}}}),
    ("UpdateSnapshot", lambda i, ids, sub: {"SnapshotId": i,
                                            "PermissionsToCreateVolume": {"Additions": {"GlobalPermission": True}}}),
    ("UpdateSnapshot", lambda i, ids, sub: {"SnapshotId": i,
                                            "PermissionsToCreateVolume": {"Removals": {"AccountIds": [ids.b]}}}),
    ("CreateTags", lambda i, ids, sub: {"ResourceIds": [i], "Tags": [{"Key": "owner", "Value": "b"}]}),
    ("DeleteTags", lambda i, ids, sub: {"ResourceIds": [i], "Tags": [{"Key": "stage", "Value": "live"}]}),
    ("ReadTags", lambda i, ids, sub: {"Filters": {"ResourceIds": [i]}}),
]
MUTATING_OPS = [op for op in PRIVATE_OPS if op[0] not in ("ReadSnapshots", "ReadTags", "CreateVolume")]


def a_snapshot_view(a, sid):
    s = read_snapshot(a.gw, sid)
    return s, a.gw.ReadTags(Filters={"ResourceIds": [sid]})["Tags"]


@pytest.mark.parametrize("op,build", PRIVATE_OPS, ids=[f"{o}-{n}" for n, (o, _) in enumerate(PRIVATE_OPS)])
def test_other_account_private_snapshot_same_as_absent(a, b, ids, subregion, live_snap, op, build):
    wait_snapshot(a.gw, live_snap.id, "completed")
    a_before = storage_state(a.gw)
    b_before = storage_state(b.gw)
    result = same_as_absent(getattr(b.gw, op), lambda i: build(i, ids, subregion), live_snap.id,
                            absent_id("snap"))
    if op.startswith("Read"):
        assert result[0] == "ok", result
    else:
        assert result[:4] == ("error", 400, "5054", "InvalidResource"), result
    assert storage_state(a.gw) == a_before, f"B's {op} changed A's snapshot"
    assert storage_state(b.gw) == b_before


def test_other_account_sees_no_private_snapshot(a, b, ids, live_snap, cold_snap):
    listed = read_snapshots(b.gw)
    assert not {s["AccountId"] for s in listed} - {ids.b}, f"B sees snapshots of others: {listed}"
    assert read_snapshots(b.gw, SnapshotIds=[live_snap.id, cold_snap.id]) == []
    assert read_snapshots(b.gw, AccountIds=[ids.a]) == []
    assert read_snapshots(b.gw, VolumeIds=[live_snap.created["VolumeId"]]) == []
    assert read_snapshots(b.gw, Descriptions=["live copy"]) == []


@pytest.fixture(scope="module")
def shared(a, ids, live_snap):
    """A shares the live snapshot with B and with a third account, and tags it."""
    sid = live_snap.id
    wait_snapshot(a.gw, sid, "completed")
    a.gw.CreateTags(ResourceIds=[sid], Tags=[{"Key": "secret-tag", "Value": "a-only"}])
    resp = a.gw.UpdateSnapshot(SnapshotId=sid, PermissionsToCreateVolume={
        "Additions": {"AccountIds": [ids.b, ids.third]}})["Snapshot"]
    return SimpleNamespace(id=sid, answer=resp, b_volumes=[])


def test_share_with_another_account(a, ids, shared):
    resp = shared.answer
    assert resp["SnapshotId"] == shared.id
    assert sorted(resp["PermissionsToCreateVolume"]["AccountIds"]) == sorted([ids.b, ids.third]), resp
    assert resp["PermissionsToCreateVolume"]["GlobalPermission"] is False, resp
    mine = read_snapshot(a.gw, shared.id)
    assert sorted(mine["PermissionsToCreateVolume"]["AccountIds"]) == sorted([ids.b, ids.third]), mine
    for who in (ids.b, ids.third):
        assert [s["SnapshotId"] for s in read_snapshots(a.gw, PermissionsToCreateVolumeAccountIds=[who])] == \
            [shared.id]
    # Adding an account twice lists it once.
    resp = a.gw.UpdateSnapshot(SnapshotId=shared.id, PermissionsToCreateVolume={
        "Additions": {"AccountIds": [ids.b]}})["Snapshot"]
    assert sorted(resp["PermissionsToCreateVolume"]["AccountIds"]) == sorted([ids.b, ids.third]), resp


def test_shared_snapshot_seen_without_share_list_or_tags(b, ids, shared):
    theirs = read_snapshot(b.gw, shared.id)
    assert theirs is not None, "a snapshot shared with B is not in B's ReadSnapshots"
    assert (theirs["AccountId"], theirs["VolumeSize"], theirs["State"]) == (ids.a, 1, "completed"), theirs
    assert not (theirs.get("PermissionsToCreateVolume") or {}).get("AccountIds"), \
        f"B sees A's share list: {theirs}"
    assert theirs["PermissionsToCreateVolume"].get("GlobalPermission") is False, theirs
    assert "secret-tag" not in {t["Key"] for t in theirs.get("Tags") or []}, f"B sees A's tags: {theirs}"
    assert shared.id in {s["SnapshotId"] for s in read_snapshots(b.gw)}
    assert shared.id in {s["SnapshotId"] for s in read_snapshots(b.gw, AccountIds=[ids.a])}
    assert read_snapshots(b.gw, TagKeys=["secret-tag"]) == []
    assert b.gw.ReadTags(Filters={"ResourceIds": [shared.id]})["Tags"] == []


def test_shared_snapshot_share_list_not_revealed_by_filters(b, ids, shared):
    """B sees no share list; filtering on it must not reveal it either (here: that A
    also shares with a third account)."""
    leaked = read_snapshots(b.gw, PermissionsToCreateVolumeAccountIds=[ids.third])
    assert shared.id not in {s["SnapshotId"] for s in leaked}, \
        "B's filter PermissionsToCreateVolumeAccountIds=[a third account] lists A's snapshot: " \
        "it reveals whom else A shares with"


def test_volume_from_shared_snapshot(a, b, subregion, shared):
    vol = b.gw.CreateVolume(SubregionName=subregion, SnapshotId=shared.id)["Volume"]
    shared.b_volumes.append(vol["VolumeId"])
    assert (vol["SnapshotId"], vol["Size"]) == (shared.id, 1), vol
    assert wait_volume(b.gw, vol["VolumeId"], "available")["SnapshotId"] == shared.id
    assert vol["VolumeId"] not in {v["VolumeId"] for v in read_volumes(a.gw)}
    assert [v["VolumeId"] for v in read_volumes(b.gw, SnapshotIds=[shared.id])] == [vol["VolumeId"]]


def test_shared_snapshot_is_still_not_the_other_accounts(a, b, ids, subregion, shared):
    """Not B's to delete, update or tag: the answer of an absent ID."""
    a_before = a_snapshot_view(a, shared.id)
    for op, build in MUTATING_OPS:
        result = same_as_absent(getattr(b.gw, op), lambda i: build(i, ids, subregion), shared.id,
                                absent_id("snap"))
        assert result[:4] == ("error", 400, "5054", "InvalidResource"), (op, result)
    assert a_snapshot_view(a, shared.id) == a_before, "B changed A's shared snapshot"


def test_unshare(a, b, ids, subregion, shared):
    """A stops sharing with B: B no longer sees it nor can use it; B's volume stays."""
    resp = a.gw.UpdateSnapshot(SnapshotId=shared.id, PermissionsToCreateVolume={
        "Removals": {"AccountIds": [ids.b]}})["Snapshot"]
    assert resp["PermissionsToCreateVolume"]["AccountIds"] == [ids.third], resp
    assert read_snapshot(b.gw, shared.id) is None
    b_before = storage_state(b.gw)
    result = same_as_absent(b.gw.CreateVolume, lambda i: {"SnapshotId": i, "SubregionName": subregion},
                            shared.id, absent_id("snap"))
    assert result[:4] == ("error", 400, "5054", "InvalidResource"), result
    assert storage_state(b.gw) == b_before
    for vid in shared.b_volumes:
        assert wait_volume(b.gw, vid, "available")["SnapshotId"] == shared.id
    a.gw.UpdateSnapshot(SnapshotId=shared.id, PermissionsToCreateVolume={"Removals": {"AccountIds": [ids.third]}})
    assert read_snapshot(a.gw, shared.id)["PermissionsToCreateVolume"] == \
        {"AccountIds": [], "GlobalPermission": False}
    a.gw.DeleteTags(ResourceIds=[shared.id], Tags=[{"Key": "secret-tag", "Value": "a-only"}])


def test_public_snapshot(a, b, ids, subregion, cold_snap):
    sid = cold_snap.id
    wait_snapshot(a.gw, sid, "completed")
    resp = a.gw.UpdateSnapshot(SnapshotId=sid, PermissionsToCreateVolume={
        "Additions": {"GlobalPermission": True}})["Snapshot"]
    assert resp["PermissionsToCreateVolume"] == {"AccountIds": [], "GlobalPermission": True}, resp
    assert sid in {s["SnapshotId"] for s in read_snapshots(a.gw, PermissionsToCreateVolumeGlobalPermission=True)}
    theirs = read_snapshot(b.gw, sid)
    assert theirs is not None and theirs["AccountId"] == ids.a, theirs
    assert theirs["PermissionsToCreateVolume"]["GlobalPermission"] is True, theirs
    assert sid in {s["SnapshotId"] for s in read_snapshots(b.gw, PermissionsToCreateVolumeGlobalPermission=True)}
    assert sid not in {s["SnapshotId"]
                       for s in read_snapshots(b.gw, PermissionsToCreateVolumeGlobalPermission=False)}
    vol = b.gw.CreateVolume(SubregionName=subregion, SnapshotId=sid, Size=3)["Volume"]
    assert (vol["SnapshotId"], vol["Size"]) == (sid, 3), vol
    wait_volume(b.gw, vol["VolumeId"], "available")
    # Public is not B's either.
    result = same_as_absent(b.gw.DeleteSnapshot, lambda i: {"SnapshotId": i}, sid, absent_id("snap"))
    assert result[:3] == ("error", 400, "5054"), result
    # Private again.
    resp = a.gw.UpdateSnapshot(SnapshotId=sid, PermissionsToCreateVolume={
        "Removals": {"GlobalPermission": True}})["Snapshot"]
    assert resp["PermissionsToCreateVolume"]["GlobalPermission"] is False, resp
    assert read_snapshot(b.gw, sid) is None
    result = same_as_absent(b.gw.CreateVolume, lambda i: {"SnapshotId": i, "SubregionName": subregion},
                            sid, absent_id("snap"))
    assert result[:3] == ("error", 400, "5054"), result


# -------------------------------------------------------------------- delete


def test_delete_snapshot(a, b, ids, subregion, big_snap, copies):
    sid = big_snap["SnapshotId"]
    wait_snapshot(a.gw, sid, "completed")
    resp = a.gw.DeleteSnapshot(SnapshotId=sid)
    assert set(resp) == {"ResponseContext"}, resp
    history: list = []
    wait_snapshot(a.gw, sid, None, history=history)
    assert all(h is None or h[0] in ("completed", "deleting") for h in history), history
    assert a.gw.ReadTags(Filters={"ResourceIds": [sid]})["Tags"] == []
    before = storage_state(a.gw)
    expect_error(a.gw.DeleteSnapshot, SnapshotId=sid, status=400, code="5054")
    expect_error(a.gw.CreateVolume, SubregionName=subregion, SnapshotId=sid, status=400, code="5054")
    expect_error(a.gw.UpdateSnapshot, SnapshotId=sid,
                 PermissionsToCreateVolume={"Additions": {"AccountIds": [ids.b]}}, status=400, code="5054")
    assert storage_state(a.gw) == before
    # The volume it was taken from is untouched.
    assert read_volume(a.gw, copies.two)["State"] in ("available", "in-use")


def test_snapshot_outlives_its_volume_and_its_copies_outlive_it(a, b, lab, subregion, live_snap, cold_snap,
                                                                 copies):
    wait_volume(a.gw, lab.src, "available", link=None)
    a.gw.DeleteVolume(VolumeId=lab.src)
    wait_volume(a.gw, lab.src, None)
    s = read_snapshot(a.gw, cold_snap.id)
    assert (s["State"], s["VolumeId"], s["VolumeSize"]) == ("completed", lab.src, 1), s
    assert a.gw.raw("CreateVolume", SubregionName=subregion, SnapshotId=cold_snap.id, DryRun=True)
    # Deleting the snapshot leaves the volumes made from it (A's, and B's from the share).
    b_copies = [v["VolumeId"] for v in read_volumes(b.gw, SnapshotIds=[live_snap.id])]
    a.gw.DeleteSnapshot(SnapshotId=live_snap.id)
    wait_snapshot(a.gw, live_snap.id, None)
    assert read_volume(a.gw, copies.one)["State"] == "available"
    assert read_volume(a.gw, copies.one)["SnapshotId"] == live_snap.id
    for vid in b_copies:
        assert read_volume(b.gw, vid)["State"] == "available"
