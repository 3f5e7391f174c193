"""Access keys: create, read, deactivate/reactivate, delete; a key that is not
ACTIVE (or no longer exists) is refused with HTTP 401."""

import re

import pytest

from socle_lib import call_error, expect_error


@pytest.fixture(scope="module")
def acct(new_account):
    return new_account("keys")


def expect_refused(gw):
    err = call_error(gw.ReadKeypairs)
    assert err.status == 401, f"a disabled/deleted key must be refused with 401, got {err}"
    assert err.type == "AccessDenied", err
    return err


def key_ids(gw, **filters):
    kw = {"Filters": filters} if filters else {}
    return {k["AccessKeyId"]: k for k in gw.ReadAccessKeys(**kw)["AccessKeys"]}


def test_account_create_output(socle):
    info = socle.create_account_raw(f"shape-{id(socle) % 100000}")
    assert re.match(r"^\d{12}$", info["AccountId"]), info["AccountId"]
    assert re.match(r"^[A-Z0-9]{20}$", info["AccessKey"]), info["AccessKey"]
    assert len(info["SecretKey"]) == 40
    assert info["Region"] == socle.region
    assert info["Endpoint"] == socle.endpoint


def test_create_and_read_access_key(acct):
    created = acct.gw.CreateAccessKey()["AccessKey"]
    ak, sk = created["AccessKeyId"], created["SecretKey"]
    assert len(ak) == 20 and len(sk) == 40, created
    assert created["State"] == "ACTIVE"
    assert created.get("CreationDate"), created
    keys = key_ids(acct.gw)
    assert set(keys) >= {ak, acct.access_key}
    assert not any(k.get("SecretKey") for k in keys.values()), "ReadAccessKeys must not return secrets"
    assert keys[ak]["State"] == "ACTIVE"
    assert set(key_ids(acct.gw, AccessKeyIds=[ak])) == {ak}
    # The new key works with the SDK, on the same account.
    other = acct.gateway_with(ak, sk)
    assert set(key_ids(other)) == set(keys)


def test_create_access_key_with_tag(acct):
    created = acct.gw.CreateAccessKey(Tag="ci")["AccessKey"]
    assert created.get("Tag") == "ci"
    assert key_ids(acct.gw, AccessKeyIds=[created["AccessKeyId"]])[created["AccessKeyId"]].get("Tag") == "ci"
    acct.gw.DeleteAccessKey(AccessKeyId=created["AccessKeyId"])


def test_inactive_key_is_refused_until_reactivated(acct):
    created = acct.gw.CreateAccessKey()["AccessKey"]
    ak, sk = created["AccessKeyId"], created["SecretKey"]
    second = acct.gateway_with(ak, sk)
    second.ReadKeypairs()  # works while ACTIVE

    upd = acct.gw.UpdateAccessKey(AccessKeyId=ak, State="INACTIVE")["AccessKey"]
    assert upd["AccessKeyId"] == ak and upd["State"] == "INACTIVE"
    expect_refused(second)
    assert key_ids(acct.gw)[ak]["State"] == "INACTIVE"
    assert set(key_ids(acct.gw, States=["INACTIVE"])) == {ak}
    assert ak not in key_ids(acct.gw, States=["ACTIVE"])
    acct.gw.ReadKeypairs()  # the account's other key is unaffected

    upd = acct.gw.UpdateAccessKey(AccessKeyId=ak, State="ACTIVE")["AccessKey"]
    assert upd["State"] == "ACTIVE"
    second.ReadKeypairs()
    assert key_ids(acct.gw)[ak]["State"] == "ACTIVE"


def test_update_access_key_bad_state(acct):
    created = acct.gw.CreateAccessKey()["AccessKey"]
    expect_error(acct.gw.UpdateAccessKey, AccessKeyId=created["AccessKeyId"], State="SLEEPY",
                 status=400, code="4047")
    assert key_ids(acct.gw)[created["AccessKeyId"]]["State"] == "ACTIVE"
    acct.gw.DeleteAccessKey(AccessKeyId=created["AccessKeyId"])


def test_deleted_key_is_refused(acct):
    created = acct.gw.CreateAccessKey()["AccessKey"]
    ak, sk = created["AccessKeyId"], created["SecretKey"]
    second = acct.gateway_with(ak, sk)
    second.ReadKeypairs()
    acct.gw.DeleteAccessKey(AccessKeyId=ak)
    expect_refused(second)
    assert ak not in key_ids(acct.gw)
    expect_error(acct.gw.DeleteAccessKey, AccessKeyId=ak, status=400, code="4000")
    expect_error(acct.gw.UpdateAccessKey, AccessKeyId=ak, State="ACTIVE", status=400, code="4000")
    expect_refused(second)
