"""Error answers: each documented code, and proof that the failed request changed
nothing. What the SDK refuses to send goes as raw HTTP signed with the default
account's credentials by socle_lib's signer (itself checked in test_signer.py)."""

import datetime as dt
import pytest
import requests

from socle_lib import (VM_TYPE, check_error_envelope, create_vms, error_from_response, expect_error,
                       expect_raw_error, osc_date, read_vms, signed_headers, unique, wait_vms_state)


@pytest.fixture(scope="module")
def target_vm(default_account, image_id):
    """A running VM of the default account that the failed requests aim at."""
    gw = default_account.gw
    vm_id = create_vms(gw, image_id)[0]["VmId"]
    wait_vms_state(gw, [vm_id], "running")
    yield vm_id
    gw.DeleteVms(VmIds=[vm_id])
    wait_vms_state(gw, [vm_id], "terminated", allow_absent=True)


@pytest.fixture
def unchanged(default_account, target_vm):
    """Snapshot of the account before the test; asserts after it that nothing changed."""
    gw = default_account.gw

    def snapshot():
        return {
            "vms": {v["VmId"]: v["State"] for v in read_vms(gw)},
            "keypairs": sorted(k["KeypairName"] for k in gw.ReadKeypairs()["Keypairs"]),
            "tags": sorted((t["ResourceId"], t["Key"], t["Value"]) for t in gw.ReadTags()["Tags"]),
            "protection": gw.ReadVms(Filters={"VmIds": [target_vm]})["Vms"][0]["DeletionProtection"],
        }

    before = snapshot()
    assert before["vms"][target_vm] == "running"
    yield
    assert snapshot() == before, "a refused request changed the account"


@pytest.fixture
def raw(default_account):
    return default_account.raw


# ------------------------------------------------------------ through the SDK


def test_sdk_not_found_and_bad_ids(gw, unchanged, target_vm):
    expect_error(gw.StopVms, VmIds=["i-00000000"], status=400, code="5063", type_="InvalidResource")
    expect_error(gw.DeleteVms, VmIds=[target_vm, "i-00000000"], status=400, code="5063")
    expect_error(gw.StopVms, VmIds=["i-12"], status=400, code="4105")
    expect_error(gw.DeleteVms, VmIds=["vol-12345678"], status=400, code="4104")
    expect_error(gw.UpdateVm, VmId="i-00000000", DeletionProtection=True, status=400, code="5063")
    expect_error(gw.DeleteKeypair, KeypairName=unique("absent"), status=400, code="5071")
    expect_error(gw.CreateVms, ImageId="ami-00000000", VmType=VM_TYPE, status=400, code="5023")
    expect_error(gw.UpdateVm, VmId=target_vm, VmType="tinav5.c2r2p2", status=400, code="6006")


def test_sdk_bad_values(gw, unchanged, image_id, target_vm):
    expect_error(gw.CreateVms, ImageId=image_id, VmType="not-a-type", status=400, code="4047")
    expect_error(gw.CreateVms, ImageId=image_id, VmType=VM_TYPE, MaxVmsCount=0, status=400, code="4047")
    expect_error(gw.ReadVms, ResultsPerPage=0, status=400, code="4047")
    expect_error(gw.CreateVms, ImageId=image_id, VmType=VM_TYPE, UserData="***not base64***",
                 status=400, code="4047")


@pytest.mark.parametrize("op,params,code", [
    ("ReadVms", {"Bogus": 1}, "4045"),
    ("CreateVms", {"ImageId": "ami-00000000", "Colour": "red"}, "4045"),
    ("StopVms", {"VmIds": "i-00000000"}, "4108"),
    ("CreateVms", {"ImageId": 42}, "4108"),
    ("StopVms", {}, "7000"),
    ("CreateKeypair", {}, "7000"),
    ("ReadUnicorns", {}, "5038"),
])
def test_sdk_raw_call_errors(gw, unchanged, op, params, code):
    """Gateway.raw() signs like every SDK call but skips the SDK's own checks."""
    expect_error(gw.raw, op, **params, status=400, code=code)


# ---------------------------------------------------- raw HTTP, signed by us


def test_raw_signed_request_works(raw, gw, target_vm):
    """Control: the raw client, correctly signed, is accepted, so the 401s below mean something."""
    body = raw.ok("ReadVms", {"Filters": {"VmIds": [target_vm]}})
    assert [v["VmId"] for v in body["Vms"]] == [target_vm]


@pytest.mark.parametrize("style,version", [("sdk", "v1"), ("cli", "latest"), ("cli", "v1"), ("aws", "v1")])
def test_signature_styles_of_real_clients(raw, gw, style, version):
    """Signatures as osc-sdk-python, osc-cli (/api/latest) and the Rust/Go SDKs make them."""
    expected = sorted(v["VmId"] for v in read_vms(gw))
    body = raw.ok("ReadVms", {}, style=style, version=version)
    assert sorted(v["VmId"] for v in body["Vms"]) == expected


def test_null_body_is_empty_request(raw, gw):
    """The Rust crate sends the literal body `null` when there are no parameters."""
    body = raw.ok("ReadVms", raw=b"null", style="aws")
    assert sorted(v["VmId"] for v in body["Vms"]) == sorted(v["VmId"] for v in read_vms(gw))


def test_malformed_json(raw, unchanged):
    name = unique("badjson")
    resp = raw.post("CreateKeypair", raw='{"KeypairName": "%s"' % name)
    expect_raw_error(resp, status=400, code="4110")
    resp = raw.post("CreateKeypair", raw=b"\xff\xfe not json")
    expect_raw_error(resp, status=400, code="4110")


def test_wrong_field_type(raw, unchanged, image_id, target_vm):
    resp = raw.post("CreateVms", {"ImageId": image_id, "VmType": VM_TYPE, "MaxVmsCount": "2"})
    expect_raw_error(resp, status=400, code="4108")
    resp = raw.post("StopVms", {"VmIds": target_vm})
    expect_raw_error(resp, status=400, code="4108")
    resp = raw.post("UpdateVm", {"VmId": target_vm, "DeletionProtection": "yes"})
    expect_raw_error(resp, status=400, code="4108")
    resp = raw.post("ReadVms", {"Filters": {"VmIds": target_vm}})
    expect_raw_error(resp, status=400, code="4108")
    # A body that is JSON but not an object: a wrong type (4108) or an unusable body (4110).
    resp = raw.post("CreateVms", raw=b'["ImageId"]')
    err = expect_raw_error(resp, status=400)
    assert err.code in ("4108", "4110"), err


def test_unknown_field(raw, unchanged, image_id, target_vm):
    resp = raw.post("CreateVms", {"ImageId": image_id, "VmType": VM_TYPE, "Colour": "red"})
    expect_raw_error(resp, status=400, code="4045")
    resp = raw.post("DeleteVms", {"VmIds": [target_vm], "Force": True})
    expect_raw_error(resp, status=400, code="4045")
    resp = raw.post("ReadVms", {"Filters": {"Colours": ["red"]}})
    expect_raw_error(resp, status=400, code="4045")
    # Names are case-sensitive.
    resp = raw.post("StopVms", {"vmIds": [target_vm]})
    err = error_from_response(resp)
    assert resp.status_code == 400 and err.code in ("4045", "7000"), err


def test_missing_required_field(raw, unchanged, target_vm):
    expect_raw_error(raw.post("CreateVms", {"VmType": VM_TYPE}), status=400, code="7000")
    expect_raw_error(raw.post("StopVms", {}), status=400, code="7000")
    expect_raw_error(raw.post("CreateTags", {"ResourceIds": [target_vm]}), status=400, code="7000")
    expect_raw_error(raw.post("CreateKeypair", {}), status=400, code="7000")


def test_body_too_large(raw, unchanged):
    name = unique("huge")
    body = {"KeypairName": name, "PublicKey": "A" * (1024 * 1024 + 1024)}
    try:
        resp = raw.post("CreateKeypair", body)
    except requests.ConnectionError as e:
        pytest.fail(f"a body over 1 MiB must be answered 413, the connection failed instead: {e}")
    expect_raw_error(resp, status=413, code="4118")


def test_unknown_operation(raw, unchanged):
    expect_raw_error(raw.post("CreateUnicorn", {}), status=400, code="5038")


def _flip_signature(headers):
    auth = headers["Authorization"]
    last = auth[-1]
    headers["Authorization"] = auth[:-1] + ("0" if last != "0" else "1")
    return headers


def _auth_refused(resp, type_="AccessDenied"):
    err = error_from_response(resp)
    assert resp.status_code == 401, f"expected HTTP 401, got {err}"
    check_error_envelope(err)
    assert err.type == type_, err
    return err


@pytest.mark.parametrize("case", ["bad-signature", "wrong-secret", "unknown-access-key",
                                  "tampered-body", "no-authorization", "garbage-authorization",
                                  "signature-of-other-operation"])
def test_authentication_failures(raw, unchanged, case, target_vm):
    name = unique("auth")
    body = {"KeypairName": name}
    if case == "bad-signature":
        resp = raw.post("CreateKeypair", body, mangle=_flip_signature)
    elif case == "wrong-secret":
        resp = raw.post("CreateKeypair", body, secret_key="S" * 40)
    elif case == "unknown-access-key":
        resp = raw.post("CreateKeypair", body, access_key="AKNOSUCHKEY000000000")
    elif case == "tampered-body":
        resp = raw.post("CreateKeypair", body,
                        signed_body=b'{"KeypairName": "%s-other"}' % name.encode())
    elif case == "no-authorization":
        resp = raw.post("CreateKeypair", body, sign_it=False)
        _auth_refused(resp)
        resp = raw.post("DeleteVms", {"VmIds": [target_vm]}, sign_it=False)
        _auth_refused(resp)
        resp = raw.post("ReadVms", {}, sign_it=False)
    elif case == "garbage-authorization":
        resp = raw.post("CreateKeypair", body,
                        mangle=lambda h: {**h, "Authorization": "Bearer letmein"})
    elif case == "signature-of-other-operation":
        # A valid signature for ReadVms replayed on DeleteVms (the path is signed).
        data = b'{"VmIds": ["%s"]}' % target_vm.encode()
        hdrs = signed_headers("sdk", access_key=raw.access_key, secret_key=raw.secret_key,
                              region=raw.region, url=raw.url("ReadVms"), operation="ReadVms",
                              body=data, date_iso=osc_date())
        resp = raw.session.post(raw.url("DeleteVms"), data=data, headers=hdrs, timeout=30)
    else:
        raise AssertionError(case)
    _auth_refused(resp)


@pytest.mark.parametrize("minutes", [-6, 6])
def test_date_outside_five_minutes_is_expired(raw, unchanged, minutes):
    when = dt.datetime.now(dt.timezone.utc) + dt.timedelta(minutes=minutes)
    resp = raw.post("CreateKeypair", {"KeypairName": unique("late")}, when=when)
    _auth_refused(resp, type_="RequestExpired")


@pytest.mark.parametrize("minutes", [-4, 4])
def test_date_within_five_minutes_is_accepted(raw, gw, minutes):
    when = dt.datetime.now(dt.timezone.utc) + dt.timedelta(minutes=minutes)
    name = unique("skew")
    body = raw.ok("CreateKeypair", {"KeypairName": name}, when=when)
    assert body["Keypair"]["KeypairName"] == name
    gw.DeleteKeypair(KeypairName=name)


def test_unsigned_catalogue_but_not_the_rest(socle):
    """Only the documented operations answer without authentication."""
    for op in ("ReadRegions", "ReadVmTypes"):
        r = requests.post(f"{socle.endpoint}/{op}", json={}, timeout=10)
        assert r.status_code == 200, (op, r.status_code, r.text[:300])
    for op in ("ReadVms", "ReadKeypairs", "ReadImages", "ReadQuotas", "ReadAccessKeys",
               "ReadConsoleOutput", "ReadTags", "ReadSubregions"):
        r = requests.post(f"{socle.endpoint}/{op}", json={}, timeout=10)
        _auth_refused(r)


def test_error_request_ids_are_unique(raw):
    ids = set()
    for _ in range(3):
        err = error_from_response(raw.post("ReadUnicorns", {}))
        ids.add(err.body["ResponseContext"]["RequestId"])
    assert len(ids) == 3
