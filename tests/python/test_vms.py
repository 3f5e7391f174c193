"""VM lifecycle through the official SDK: CreateVms (types, counts, keypair, user
data, placement, deletion protection, client token, dry run), ReadVms (filters,
pagination), ReadVmsState, Start/Stop/Reboot/Delete, UpdateVm, ReadConsoleOutput.

One account for the module; one main VM is reused by the lifecycle tests, each of
which first brings it to the state it needs."""

import base64
import datetime as dt
import re
import time
import uuid

import pytest

from socle_lib import (READY_LINE, VM_ID_RE, VM_TYPE, absent_id, b64, call_error, console_text,
                       create_vms, delete_all_vms, ensure_running, ensure_stopped, expect_error,
                       new_output, read_vm, read_vms, ready_count, start_and_wait_ready, unique,
                       wait_ready, wait_vms_state)

USER_DATA = b64("#!/bin/sh\necho socle-user-data-ok\n")
# What socle-tiny prints when it is asked to shut down (ACPI power button).
SHUTDOWN_LINE = "socle-guest: shutting down"


@pytest.fixture(scope="module")
def acct(new_account):
    a = new_account("vms")
    yield a
    problems = delete_all_vms(a.gw)
    assert not problems, problems


@pytest.fixture(scope="module")
def keypair(acct):
    return acct.gw.CreateKeypair(KeypairName=unique("vmkey"))["Keypair"]


@pytest.fixture(scope="module")
def main(acct, image_id, keypair, socle):
    """The main VM: created once with a keypair, user data and a placement; the
    CreateVms answer is kept for the test that checks it."""
    resp = acct.gw.CreateVms(ImageId=image_id, VmType=VM_TYPE, KeypairName=keypair["KeypairName"],
                             UserData=USER_DATA,
                             Placement={"SubregionName": f"{socle.region}a"})
    vms = resp["Vms"]
    assert len(vms) == 1, resp
    return {"id": vms[0]["VmId"], "created": vms[0]}


@pytest.fixture(scope="module")
def protected(acct, image_id):
    """A VM created with DeletionProtection and a ClientToken."""
    token = str(uuid.uuid4())
    vms = create_vms(acct.gw, image_id, ClientToken=token, DeletionProtection=True)
    assert len(vms) == 1
    return {"id": vms[0]["VmId"], "token": token, "created": vms[0]}


def all_ids(gw) -> set:
    return {v["VmId"] for v in read_vms(gw)}


# ----------------------------------------------------------------- create / read


def test_create_vm_answer(main, image_id, keypair, socle):
    vm = main["created"]
    assert VM_ID_RE.match(vm["VmId"]), vm
    assert vm["State"] == "pending", vm
    assert vm["VmType"] == VM_TYPE
    assert vm["ImageId"] == image_id
    assert vm["KeypairName"] == keypair["KeypairName"]
    assert vm["Placement"]["SubregionName"] == f"{socle.region}a"
    assert vm["DeletionProtection"] is False
    assert re.match(r"^r-[0-9a-f]{8}$", vm["ReservationId"]), vm
    assert vm["LaunchNumber"] == 0
    created = dt.datetime.fromisoformat(vm["CreationDate"].replace("Z", "+00:00"))
    assert abs((dt.datetime.now(dt.timezone.utc) - created).total_seconds()) < 300, vm["CreationDate"]


def test_vm_boots_and_console_shows_ready(acct, main):
    wait_vms_state(acct.gw, [main["id"]], "running")
    resp = acct.gw.ReadConsoleOutput(VmId=main["id"])
    assert resp["VmId"] == main["id"]
    # Strict base64, decoding to text; then wait for the guest's ready line.
    base64.b64decode(resp.get("ConsoleOutput") or "", validate=True)
    text = wait_ready(acct.gw, main["id"])
    assert READY_LINE in text
    # The guest received the user data (socle-tiny reports its size on the console).
    size = len(base64.b64decode(USER_DATA))
    assert f"socle-guest: user-data {size} bytes" in text, text[-1500:]


def test_read_vms_shows_creation_parameters(acct, main, keypair, image_id, socle):
    ensure_running(acct.gw, main["id"])
    vm = read_vm(acct.gw, main["id"])
    assert vm["State"] == "running"
    assert vm["VmType"] == VM_TYPE
    assert vm["ImageId"] == image_id
    assert vm["KeypairName"] == keypair["KeypairName"]
    assert vm["UserData"] == USER_DATA
    assert vm["Placement"]["SubregionName"] == f"{socle.region}a"
    assert vm["ReservationId"] == main["created"]["ReservationId"]
    assert vm["CreationDate"] == main["created"]["CreationDate"]


def test_read_vms_filters(acct, main, image_id, socle):
    vid = main["id"]
    ensure_running(acct.gw, vid)
    key, value = unique("role"), unique("web")
    acct.gw.CreateTags(ResourceIds=[vid], Tags=[{"Key": key, "Value": value}])

    def ids(**filters):
        return {v["VmId"] for v in acct.gw.ReadVms(Filters=filters)["Vms"]}

    assert ids(VmIds=[vid]) == {vid}
    assert ids(VmIds=[vid, absent_id("i")]) == {vid}
    assert ids(VmIds=[absent_id("i")]) == set()
    assert vid in ids(VmStateNames=["running"])
    assert vid not in ids(VmStateNames=["stopped", "terminated"])
    assert ids(TagKeys=[key]) == {vid}
    assert ids(TagKeys=[unique("nokey")]) == set()
    assert ids(TagValues=[value]) == {vid}
    assert ids(TagValues=["no-such-value"]) == set()
    assert ids(Tags=[f"{key}={value}"]) == {vid}
    assert ids(Tags=[f"{key}=other"]) == set()
    assert vid in ids(ImageIds=[image_id])
    assert ids(ImageIds=[absent_id("ami")]) == set()
    assert vid in ids(SubregionNames=[f"{socle.region}a"])
    assert ids(SubregionNames=[f"{socle.region}z"]) == set()
    # Different filters combine with AND, values of one filter with OR.
    assert ids(VmIds=[vid], VmStateNames=["stopped"]) == set()
    assert ids(VmIds=[vid], VmStateNames=["stopped", "running"]) == {vid}
    assert ids(TagKeys=[key], ImageIds=[absent_id("ami")]) == set()


def test_read_vms_state(acct, main, socle):
    vid = main["id"]
    ensure_running(acct.gw, vid)
    states = acct.gw.ReadVmsState()["VmStates"]
    mine = [s for s in states if s["VmId"] == vid]
    assert len(mine) == 1, states
    assert mine[0]["VmState"] == "running"
    assert mine[0]["SubregionName"] == f"{socle.region}a"
    only = acct.gw.ReadVmsState(Filters={"VmIds": [vid]})["VmStates"]
    assert [s["VmId"] for s in only] == [vid]
    assert acct.gw.ReadVmsState(Filters={"VmIds": [absent_id("i")]})["VmStates"] == []


# ------------------------------------------------------------ counts, pagination


def test_min_max_count_short_type_form_and_pagination(acct, image_id, main):
    before = all_ids(acct.gw)
    # VmType in its short form (no performance flag) is accepted and returned as given.
    vms = create_vms(acct.gw, image_id, VmType="tinav5.c1r1", MinVmsCount=2, MaxVmsCount=3)
    batch = [v["VmId"] for v in vms]
    try:
        assert len(batch) == 3, "MaxVmsCount=3 within quota must create 3 VMs"
        assert len({v["ReservationId"] for v in vms}) == 1, "one CreateVms, one reservation"
        assert sorted(v["LaunchNumber"] for v in vms) == [0, 1, 2]
        assert all(v["VmType"] == "tinav5.c1r1" for v in vms), [v["VmType"] for v in vms]
        assert all_ids(acct.gw) == before | set(batch)

        # Pagination over the batch plus the main VM: 4 VMs, 1 per page -> 4 pages.
        wanted = batch + [main["id"]]
        full = acct.gw.ReadVms(Filters={"VmIds": wanted})["Vms"]
        assert "NextPageToken" not in full or not full.get("NextPageToken")
        for per_page in (1, 3):
            pages, token = [], None
            for _ in range(10):
                kw = {"Filters": {"VmIds": wanted}, "ResultsPerPage": per_page}
                if token:
                    kw["NextPageToken"] = token
                resp = acct.gw.ReadVms(**kw)
                pages.append([v["VmId"] for v in resp["Vms"]])
                token = resp.get("NextPageToken")
                if not token:
                    break
            expected_pages = -(-len(wanted) // per_page)
            assert len(pages) == expected_pages, f"ResultsPerPage={per_page}: pages {pages}"
            assert all(len(p) == per_page for p in pages[:-1]), pages
            flat = [i for p in pages for i in p]
            assert sorted(flat) == sorted(wanted), f"pages {pages} lost or repeated VMs"
            assert flat == [v["VmId"] for v in full], "pages are not in the order of the full list"
        # Sorted by creation date, then ID.
        keys = [(v["CreationDate"], v["VmId"]) for v in full]
        assert keys == sorted(keys), keys

        # The whole account, 2 per page: same VMs as without pagination.
        everything = acct.gw.ReadVms()["Vms"]
        paged, token = [], None
        for _ in range(50):
            kw = {"ResultsPerPage": 2}
            if token:
                kw["NextPageToken"] = token
            resp = acct.gw.ReadVms(**kw)
            paged += [v["VmId"] for v in resp["Vms"]]
            token = resp.get("NextPageToken")
            if not token:
                break
        assert paged == [v["VmId"] for v in everything]

        expect_error(acct.gw.ReadVms, ResultsPerPage=0, status=400, code="4047")
        expect_error(acct.gw.ReadVms, ResultsPerPage=1001, status=400, code="4047")

        # The short form boots like the long one.
        wait_vms_state(acct.gw, batch, "running")
        assert {read_vm(acct.gw, i)["VmType"] for i in batch} == {"tinav5.c1r1"}
    finally:
        acct.gw.DeleteVms(VmIds=batch)
    wait_vms_state(acct.gw, batch, "terminated", allow_absent=True)


def test_min_count_greater_than_max_is_refused(acct, image_id):
    before = all_ids(acct.gw)
    expect_error(acct.gw.CreateVms, ImageId=image_id, VmType=VM_TYPE, MinVmsCount=3,
                 MaxVmsCount=2, status=400, code="4047")
    assert all_ids(acct.gw) == before


@pytest.mark.parametrize("bad_type", ["tinav5.c0r1p2", "tinav5.c1r1p9", "m1.gigantic", "tinav5"])
def test_bad_vm_type_is_refused(acct, image_id, bad_type):
    before = all_ids(acct.gw)
    expect_error(acct.gw.CreateVms, ImageId=image_id, VmType=bad_type, status=400, code="4047")
    assert all_ids(acct.gw) == before


def test_create_vm_with_unknown_image_or_keypair(acct):
    before = all_ids(acct.gw)
    expect_error(acct.gw.CreateVms, ImageId=absent_id("ami"), VmType=VM_TYPE, status=400, code="5023")
    expect_error(acct.gw.CreateVms, ImageId="ami-nothex!", VmType=VM_TYPE, status=400, code="4105")
    expect_error(acct.gw.CreateVms, ImageId="i-12345678", VmType=VM_TYPE, status=400, code="4104")
    assert all_ids(acct.gw) == before


def test_create_vm_with_unknown_keypair(acct, image_id):
    before = all_ids(acct.gw)
    expect_error(acct.gw.CreateVms, ImageId=image_id, VmType=VM_TYPE,
                 KeypairName=unique("nokey"), status=400, code="5071")
    assert all_ids(acct.gw) == before


def test_dry_run_creates_nothing(acct, image_id, main):
    # The SDK's own checks leave DryRun out of its parameter lists, so dry runs go
    # through Gateway.raw(), which signs and sends like any SDK call.
    gw = acct.gw
    before = all_ids(gw)
    resp = gw.raw("CreateVms", ImageId=image_id, VmType=VM_TYPE, DryRun=True)
    assert resp.get("ResponseContext", {}).get("RequestId"), resp
    assert all_ids(gw) == before, "CreateVms DryRun created a VM"
    # A dry run still checks its parameters.
    expect_error(gw.raw, "CreateVms", ImageId=absent_id("ami"), VmType=VM_TYPE, DryRun=True,
                 status=400, code="5023")
    expect_error(gw.raw, "CreateVms", ImageId=image_id, VmType="tinav5.c0r0", DryRun=True,
                 status=400, code="4047")
    # And other dry runs change nothing either.
    ensure_running(gw, main["id"])
    gw.raw("StopVms", VmIds=[main["id"]], DryRun=True)
    gw.raw("DeleteVms", VmIds=[main["id"]], DryRun=True)
    gw.raw("UpdateVm", VmId=main["id"], DeletionProtection=True, DryRun=True)
    gw.raw("CreateTags", ResourceIds=[main["id"]], Tags=[{"Key": "dry", "Value": "run"}], DryRun=True)
    time.sleep(1)
    vm = read_vm(gw, main["id"])
    assert vm["State"] == "running" and vm["DeletionProtection"] is False, vm
    assert "dry" not in {t["Key"] for t in vm.get("Tags") or []}
    assert all_ids(gw) == before


def test_client_token_is_idempotent(acct, image_id, protected):
    before = all_ids(acct.gw)
    again = create_vms(acct.gw, image_id, ClientToken=protected["token"], DeletionProtection=True)
    assert [v["VmId"] for v in again] == [protected["id"]], "same ClientToken, different VMs"
    assert all_ids(acct.gw) == before
    listed = acct.gw.ReadVms(Filters={"ClientTokens": [protected["token"]]})["Vms"]
    assert [v["VmId"] for v in listed] == [protected["id"]]
    assert listed[0]["ClientToken"] == protected["token"]
    # Another token makes another VM.
    other = create_vms(acct.gw, image_id, ClientToken=str(uuid.uuid4()))
    try:
        assert other[0]["VmId"] != protected["id"]
    finally:
        acct.gw.DeleteVms(VmIds=[other[0]["VmId"]])


# ------------------------------------------------------------------- lifecycle


def test_stop_graceful_and_start(acct, main):
    vid = main["id"]
    ensure_running(acct.gw, vid)
    before = console_text(acct.gw, vid)
    resp = acct.gw.StopVms(VmIds=[vid])["Vms"]
    assert [(v["VmId"], v["PreviousState"]) for v in resp] == [(vid, "running")]
    assert resp[0]["CurrentState"] in ("stopping", "stopped"), resp
    wait_vms_state(acct.gw, [vid], "stopped")
    # Graceful: the guest was asked to power off (ACPI) and shut itself down.
    assert SHUTDOWN_LINE in new_output(before, console_text(acct.gw, vid)), \
        "a graceful StopVms did not let the guest shut down:\n" + console_text(acct.gw, vid)[-1500:]
    assert vid in {v["VmId"] for v in acct.gw.ReadVms(Filters={"VmStateNames": ["stopped"]})["Vms"]}
    # ReadVmsState lists only running VMs unless AllVms is true.
    assert vid not in {s["VmId"] for s in acct.gw.ReadVmsState()["VmStates"]}
    everyone = {s["VmId"]: s["VmState"] for s in acct.gw.ReadVmsState(AllVms=True)["VmStates"]}
    assert everyone.get(vid) == "stopped", everyone

    resp = start_and_wait_ready(acct.gw, vid)["Vms"]
    assert [(v["VmId"], v["PreviousState"]) for v in resp] == [(vid, "stopped")]
    assert resp[0]["CurrentState"] in ("pending", "running"), resp


def test_force_stop(acct, main):
    vid = main["id"]
    ensure_running(acct.gw, vid)
    before = console_text(acct.gw, vid)
    resp = acct.gw.StopVms(VmIds=[vid], ForceStop=True)["Vms"]
    assert resp[0]["VmId"] == vid and resp[0]["PreviousState"] == "running", resp
    wait_vms_state(acct.gw, [vid], "stopped", timeout=30)
    # Forced: powered off without asking the guest.
    assert SHUTDOWN_LINE not in new_output(before, console_text(acct.gw, vid))


def test_reboot_shows_ready_twice(acct, main):
    vid = main["id"]
    ensure_running(acct.gw, vid)
    before = ready_count(console_text(acct.gw, vid))
    assert before >= 1
    acct.gw.RebootVms(VmIds=[vid])
    text = wait_ready(acct.gw, vid, at_least=before + 1)
    assert ready_count(text) >= 2
    assert read_vm(acct.gw, vid)["State"] == "running"


def test_update_vm_type_refused_while_running(acct, main):
    vid = main["id"]
    ensure_running(acct.gw, vid)
    current = read_vm(acct.gw, vid)["VmType"]
    expect_error(acct.gw.UpdateVm, VmId=vid, VmType="tinav5.c2r2p2", status=400, code="6006")
    vm = read_vm(acct.gw, vid)
    assert vm["VmType"] == current and vm["State"] == "running"


def test_update_vm_type_while_stopped(acct, main):
    vid = main["id"]
    ensure_stopped(acct.gw, vid)
    expect_error(acct.gw.RebootVms, VmIds=[vid], status=400, code="6006")
    resp = acct.gw.UpdateVm(VmId=vid, VmType="tinav5.c2r2p2")["Vm"]
    assert resp["VmId"] == vid and resp["VmType"] == "tinav5.c2r2p2"
    assert read_vm(acct.gw, vid)["VmType"] == "tinav5.c2r2p2"
    start_and_wait_ready(acct.gw, vid)
    assert read_vm(acct.gw, vid)["VmType"] == "tinav5.c2r2p2"
    # Back to the smallest type, so the rest of the module stays cheap.
    ensure_stopped(acct.gw, vid)
    acct.gw.UpdateVm(VmId=vid, VmType=VM_TYPE)
    assert read_vm(acct.gw, vid)["VmType"] == VM_TYPE


def test_update_vm_bad_type_is_refused(acct, main):
    vid = main["id"]
    ensure_stopped(acct.gw, vid)
    current = read_vm(acct.gw, vid)["VmType"]
    expect_error(acct.gw.UpdateVm, VmId=vid, VmType="tinav5.c0r0", status=400, code="4047")
    assert read_vm(acct.gw, vid)["VmType"] == current


def test_deletion_protection(acct, protected):
    vid = protected["id"]
    assert protected["created"]["DeletionProtection"] is True
    wait_vms_state(acct.gw, [vid], "running")
    assert read_vm(acct.gw, vid)["DeletionProtection"] is True
    err = call_error(acct.gw.DeleteVms, VmIds=[vid])
    assert err.status in (400, 409), err
    vm = read_vm(acct.gw, vid)
    assert vm["State"] == "running", "a protected VM was affected by DeleteVms"

    resp = acct.gw.UpdateVm(VmId=vid, DeletionProtection=False)["Vm"]
    assert resp["DeletionProtection"] is False
    assert read_vm(acct.gw, vid)["DeletionProtection"] is False

    resp = acct.gw.DeleteVms(VmIds=[vid])["Vms"]
    assert [(v["VmId"], v["PreviousState"]) for v in resp] == [(vid, "running")]
    assert resp[0]["CurrentState"] in ("shutting-down", "terminated"), resp
    wait_vms_state(acct.gw, [vid], "terminated")
    # Terminated VMs stay visible for a while.
    assert read_vm(acct.gw, vid)["State"] == "terminated"
    assert vid in {v["VmId"] for v in acct.gw.ReadVms(Filters={"VmStateNames": ["terminated"]})["Vms"]}
    # And can no longer be started.
    expect_error(acct.gw.StartVms, VmIds=[vid], status=400, code="6006")


def test_console_of_unknown_vm(acct):
    expect_error(acct.gw.ReadConsoleOutput, VmId=absent_id("i"), status=400, code="5063")
    expect_error(acct.gw.ReadConsoleOutput, VmId="i-123", status=400, code="4105")


@pytest.mark.parametrize("op", ["StartVms", "StopVms", "RebootVms", "DeleteVms"])
def test_lifecycle_on_unknown_vm(acct, main, op):
    state = read_vm(acct.gw, main["id"])["State"]
    missing = absent_id("i")
    expect_error(getattr(acct.gw, op), VmIds=[missing], status=400, code="5063")
    # A list with one absent VM fails whole: the existing one is untouched.
    expect_error(getattr(acct.gw, op), VmIds=[main["id"], missing], status=400, code="5063")
    assert read_vm(acct.gw, main["id"])["State"] == state
    expect_error(getattr(acct.gw, op), VmIds=["i-xyz"], status=400, code="4105")
    expect_error(getattr(acct.gw, op), VmIds=["ami-12345678"], status=400, code="4104")
