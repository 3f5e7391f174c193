"""Tags on VMs and keypairs: CreateTags, ReadTags (filters), DeleteTags."""

import pytest

from socle_lib import absent_id, call_error, create_vms, delete_all_vms, expect_error, read_vm, unique


@pytest.fixture(scope="module")
def acct(new_account):
    a = new_account("tags")
    yield a
    problems = delete_all_vms(a.gw)
    assert not problems, problems


@pytest.fixture(scope="module")
def vm_id(acct, image_id):
    return create_vms(acct.gw, image_id)[0]["VmId"]


@pytest.fixture(scope="module")
def keypair(acct):
    return acct.gw.CreateKeypair(KeypairName=unique("tagged"))["Keypair"]


def tags_of(gw, resource_id) -> dict:
    tags = gw.ReadTags(Filters={"ResourceIds": [resource_id]})["Tags"]
    for t in tags:
        assert t["ResourceId"] == resource_id
    return {t["Key"]: t["Value"] for t in tags}


def test_create_and_read_tags(acct, vm_id, keypair):
    kp_id = keypair["KeypairId"]
    env_key = unique("env")
    acct.gw.CreateTags(ResourceIds=[vm_id, kp_id],
                       Tags=[{"Key": env_key, "Value": "prod"}, {"Key": "empty", "Value": ""}])
    assert tags_of(acct.gw, vm_id) == {env_key: "prod", "empty": ""}
    assert tags_of(acct.gw, kp_id) == {env_key: "prod", "empty": ""}

    rows = acct.gw.ReadTags(Filters={"Keys": [env_key]})["Tags"]
    assert sorted((t["ResourceId"], t["ResourceType"], t["Value"]) for t in rows) == sorted(
        [(vm_id, "instance", "prod"), (kp_id, "keypair", "prod")])

    by_type = acct.gw.ReadTags(Filters={"ResourceTypes": ["instance"]})["Tags"]
    assert {t["ResourceId"] for t in by_type} == {vm_id}
    assert all(t["ResourceType"] == "instance" for t in by_type)
    by_type = acct.gw.ReadTags(Filters={"ResourceTypes": ["keypair"]})["Tags"]
    assert {t["ResourceId"] for t in by_type} == {kp_id}

    by_value = acct.gw.ReadTags(Filters={"Values": ["prod"]})["Tags"]
    assert {(t["ResourceId"], t["Key"]) for t in by_value} == {(vm_id, env_key), (kp_id, env_key)}

    combined = acct.gw.ReadTags(Filters={"Keys": [env_key], "ResourceIds": [vm_id]})["Tags"]
    assert [(t["ResourceId"], t["Key"]) for t in combined] == [(vm_id, env_key)]
    assert acct.gw.ReadTags(Filters={"Keys": ["no-such-key"]})["Tags"] == []

    # The resources themselves show their tags.
    vm_tags = {t["Key"]: t["Value"] for t in read_vm(acct.gw, vm_id)["Tags"]}
    assert vm_tags == {env_key: "prod", "empty": ""}
    kp = acct.gw.ReadKeypairs(Filters={"KeypairIds": [kp_id]})["Keypairs"][0]
    assert {t["Key"]: t["Value"] for t in kp.get("Tags") or []} == {env_key: "prod", "empty": ""}


def test_create_tags_replaces_value_of_same_key(acct, vm_id):
    key = unique("k")
    acct.gw.CreateTags(ResourceIds=[vm_id], Tags=[{"Key": key, "Value": "one"}])
    acct.gw.CreateTags(ResourceIds=[vm_id], Tags=[{"Key": key, "Value": "two"}])
    rows = acct.gw.ReadTags(Filters={"ResourceIds": [vm_id], "Keys": [key]})["Tags"]
    assert [(t["Key"], t["Value"]) for t in rows] == [(key, "two")]


def test_delete_tags(acct, vm_id, keypair):
    key = unique("gone")
    kp_id = keypair["KeypairId"]
    acct.gw.CreateTags(ResourceIds=[vm_id, kp_id], Tags=[{"Key": key, "Value": "v"}])
    acct.gw.DeleteTags(ResourceIds=[vm_id], Tags=[{"Key": key, "Value": "v"}])
    assert key not in tags_of(acct.gw, vm_id)
    assert tags_of(acct.gw, kp_id).get(key) == "v", "DeleteTags on the VM removed the keypair's tag"
    assert key not in {t["Key"] for t in read_vm(acct.gw, vm_id).get("Tags") or []}
    assert acct.gw.ReadVms(Filters={"TagKeys": [key]})["Vms"] == []


def test_create_tags_on_absent_resource_changes_nothing(acct, vm_id):
    key = unique("atomic")
    missing = absent_id("i")
    expect_error(acct.gw.CreateTags, ResourceIds=[vm_id, missing],
                 Tags=[{"Key": key, "Value": "x"}], status=400, code="5063")
    assert key not in tags_of(acct.gw, vm_id), "a failed CreateTags tagged part of its resources"


@pytest.mark.parametrize("op", ["CreateTags", "DeleteTags"])
@pytest.mark.parametrize("prefix,code", [("i", "5063"), ("key", "5071"), ("ami", "5023")])
def test_tags_on_absent_resource_use_its_not_found_code(acct, op, prefix, code):
    """The not-found code of the resource's kind: 5063 VM, 5071 keypair, 5023 image."""
    expect_error(getattr(acct.gw, op), ResourceIds=[absent_id(prefix)],
                 Tags=[{"Key": "k", "Value": "v"}], status=400, code=code, type_="InvalidResource")


def test_create_tags_bad_values(acct, vm_id):
    before = tags_of(acct.gw, vm_id)
    err = call_error(acct.gw.CreateTags, ResourceIds=[vm_id], Tags=[{"Key": "", "Value": "x"}])
    assert err.status == 400 and err.type == "InvalidParameterValue", err
    err = call_error(acct.gw.CreateTags, ResourceIds=[vm_id], Tags=[{"Key": "k" * 256, "Value": "x"}])
    assert err.status == 400 and err.type == "InvalidParameterValue", err
    expect_error(acct.gw.CreateTags, ResourceIds=["i-zz"], Tags=[{"Key": "k", "Value": "x"}],
                 status=400, code="4105")
    assert tags_of(acct.gw, vm_id) == before
