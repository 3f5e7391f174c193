"""Cross-account isolation: account B sees nothing of account A, and every request
B makes on one of A's resources gets exactly the answer it would get for an ID
that does not exist (same HTTP status, code, type and details, the ID aside)."""

import uuid

import pytest

from socle_lib import (VM_TYPE, absent_id, create_vms, delete_all_vms, outcome, read_vm, read_vms,
                       same_as_absent, unique, usage, wait_vms_state)


@pytest.fixture(scope="module")
def a(new_account, image_id):
    acct = new_account("iso-a")
    kp = acct.gw.CreateKeypair(KeypairName=unique("shared-name"))["Keypair"]
    vm_id = create_vms(acct.gw, image_id, KeypairName=kp["KeypairName"])[0]["VmId"]
    acct.gw.CreateTags(ResourceIds=[vm_id, kp["KeypairId"]], Tags=[{"Key": "owner", "Value": "a"}])
    wait_vms_state(acct.gw, [vm_id], "running")
    acct.vm_id = vm_id
    acct.keypair = kp
    yield acct
    problems = delete_all_vms(acct.gw)
    assert not problems, problems


@pytest.fixture(scope="module")
def b(new_account):
    acct = new_account("iso-b")
    kp = acct.gw.CreateKeypair(KeypairName=unique("b-own"))["Keypair"]
    acct.gw.CreateTags(ResourceIds=[kp["KeypairId"]], Tags=[{"Key": "owner", "Value": "b"}])
    acct.keypair = kp
    return acct


def a_is_intact(a):
    vm = read_vm(a.gw, a.vm_id)
    assert vm["State"] == "running", vm
    assert vm["DeletionProtection"] is False
    assert vm["VmType"] == VM_TYPE
    assert {t["Key"]: t["Value"] for t in vm.get("Tags") or []} == {"owner": "a"}
    kps = a.gw.ReadKeypairs(Filters={"KeypairIds": [a.keypair["KeypairId"]]})["Keypairs"]
    assert [k["KeypairFingerprint"] for k in kps] == [a.keypair["KeypairFingerprint"]]
    tags = a.gw.ReadTags(Filters={"ResourceIds": [a.keypair["KeypairId"]]})["Tags"]
    assert [(t["Key"], t["Value"]) for t in tags] == [("owner", "a")]


@pytest.mark.parametrize("op", ["StopVms", "StartVms", "RebootVms", "DeleteVms"])
def test_vm_actions_on_other_accounts_vm(a, b, op):
    fake = absent_id("i")
    result = same_as_absent(getattr(b.gw, op), lambda i: {"VmIds": [i]}, a.vm_id, fake)
    assert result[0] == "error" and result[1:3] == (400, "5063"), result
    a_is_intact(a)


@pytest.mark.parametrize("params", [{"DeletionProtection": True}, {"VmType": "tinav5.c2r2p2"},
                                    {"UserData": "ZWNobyBoaQ=="}])
def test_update_other_accounts_vm(a, b, params):
    result = same_as_absent(b.gw.UpdateVm, lambda i: {"VmId": i, **params}, a.vm_id, absent_id("i"))
    assert result[0] == "error" and result[1:3] == (400, "5063"), result
    a_is_intact(a)


def test_console_of_other_accounts_vm(a, b):
    result = same_as_absent(b.gw.ReadConsoleOutput, lambda i: {"VmId": i}, a.vm_id, absent_id("i"))
    assert result[0] == "error" and result[1:3] == (400, "5063"), result


def test_read_filters_never_show_other_accounts_vm(a, b):
    assert a.vm_id not in {v["VmId"] for v in read_vms(b.gw)}
    assert b.gw.ReadVms(Filters={"VmIds": [a.vm_id]})["Vms"] == []
    assert b.gw.ReadVms(Filters={"TagKeys": ["owner"], "TagValues": ["a"]})["Vms"] == []
    assert b.gw.ReadVmsState(AllVms=True, Filters={"VmIds": [a.vm_id]})["VmStates"] == []
    assert a.vm_id not in {s["VmId"] for s in b.gw.ReadVmsState(AllVms=True)["VmStates"]}
    # A still sees its VM (the filters above were not simply broken).
    assert a.gw.ReadVms(Filters={"VmIds": [a.vm_id]})["Vms"][0]["VmId"] == a.vm_id


def test_tags_on_other_accounts_resources(a, b):
    for real in (a.vm_id, a.keypair["KeypairId"]):
        prefix = real.split("-")[0]
        same_as_absent(b.gw.CreateTags,
                       lambda i: {"ResourceIds": [i], "Tags": [{"Key": "owner", "Value": "b"}]},
                       real, absent_id(prefix))
        same_as_absent(b.gw.DeleteTags,
                       lambda i: {"ResourceIds": [i], "Tags": [{"Key": "owner", "Value": "a"}]},
                       real, absent_id(prefix))
    vm_result = outcome(b.gw.CreateTags, [a.vm_id], ResourceIds=[a.vm_id],
                        Tags=[{"Key": "owner", "Value": "b"}])
    assert vm_result[0] == "error" and vm_result[1] == 400, vm_result
    a_is_intact(a)


def test_read_tags_never_show_other_accounts_tags(a, b):
    b_tags = b.gw.ReadTags()["Tags"]
    assert {t["ResourceId"] for t in b_tags} == {b.keypair["KeypairId"]}
    assert b.gw.ReadTags(Filters={"ResourceIds": [a.vm_id, a.keypair["KeypairId"]]})["Tags"] == []
    assert b.gw.ReadTags(Filters={"Values": ["a"]})["Tags"] == []
    assert {t["Value"] for t in b.gw.ReadTags(Filters={"Keys": ["owner"]})["Tags"]} == {"b"}


def test_keypairs_of_other_account(a, b):
    name, kp_id = a.keypair["KeypairName"], a.keypair["KeypairId"]
    result = same_as_absent(b.gw.DeleteKeypair, lambda n: {"KeypairName": n}, name, unique("absent"))
    assert result[0] == "error" and result[1:3] == (400, "5071"), result
    result = same_as_absent(b.gw.DeleteKeypair, lambda i: {"KeypairId": i}, kp_id, absent_id("key"))
    assert result[0] == "error" and result[1:3] == (400, "5071"), result
    listed = b.gw.ReadKeypairs()["Keypairs"]
    assert [k["KeypairId"] for k in listed] == [b.keypair["KeypairId"]]
    assert b.gw.ReadKeypairs(Filters={"KeypairNames": [name]})["Keypairs"] == []
    assert b.gw.ReadKeypairs(Filters={"KeypairIds": [kp_id]})["Keypairs"] == []
    a_is_intact(a)


def test_keypair_names_are_per_account(a, b, image_id):
    # B cannot launch with A's keypair: same answer as for a keypair name nobody has.
    name = a.keypair["KeypairName"]
    result = same_as_absent(b.gw.CreateVms,
                            lambda n: {"ImageId": image_id, "VmType": VM_TYPE, "KeypairName": n},
                            name, unique("absent"))
    assert result[0] == "error" and result[1:3] == (400, "5071"), result
    assert read_vms(b.gw) == []
    # B may use the same name for its own keypair; A's is untouched.
    mine = b.gw.CreateKeypair(KeypairName=name)["Keypair"]
    assert mine["KeypairId"] != a.keypair["KeypairId"]
    b.gw.DeleteKeypair(KeypairName=name)
    a_is_intact(a)


def test_access_keys_of_other_account(a, b):
    a_keys = [k["AccessKeyId"] for k in a.gw.ReadAccessKeys()["AccessKeys"]]
    assert a.access_key in a_keys
    b_keys = [k["AccessKeyId"] for k in b.gw.ReadAccessKeys()["AccessKeys"]]
    assert not set(a_keys) & set(b_keys)
    fake = "AK" + uuid.uuid4().hex[:18].upper()
    same_as_absent(b.gw.UpdateAccessKey, lambda k: {"AccessKeyId": k, "State": "INACTIVE"},
                   a.access_key, fake)
    same_as_absent(b.gw.DeleteAccessKey, lambda k: {"AccessKeyId": k}, a.access_key, fake)
    assert b.gw.ReadAccessKeys(Filters={"AccessKeyIds": [a.access_key]})["AccessKeys"] == []
    a.gw.ReadKeypairs()  # A's key still works
    assert {k["AccessKeyId"]: k["State"] for k in a.gw.ReadAccessKeys()["AccessKeys"]}[a.access_key] == "ACTIVE"


def test_quotas_count_only_own_vms(a, b):
    assert {k: used for k, (_, used) in usage(b.gw).items()} == {"vms": 0, "vcpus": 0, "memory": 0}, \
        "B's quota usage counts A's VM"
    assert {k: used for k, (_, used) in usage(a.gw).items()} == {"vms": 1, "vcpus": 1, "memory": 1}
