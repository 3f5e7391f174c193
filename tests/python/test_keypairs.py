"""Keypairs: generated and imported (ed25519, RSA), read with filters, deleted."""

import re
import subprocess

import pytest

from socle_lib import b64, expect_error, md5_fingerprint, unique


@pytest.fixture(scope="module")
def acct(new_account):
    return new_account("keypairs")


def ssh_keygen(tmp_path, kind: str, bits: int | None = None) -> str:
    key = tmp_path / f"id_{kind}"
    cmd = ["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", "socle-test", "-f", str(key)]
    if bits:
        cmd += ["-b", str(bits)]
    subprocess.run(cmd, check=True)
    return (tmp_path / f"id_{kind}.pub").read_text().strip()


def keypair_names(gw, **filters) -> list[str]:
    kw = {"Filters": filters} if filters else {}
    return sorted(k["KeypairName"] for k in gw.ReadKeypairs(**kw)["Keypairs"])


def test_create_generated_keypair_returns_private_key(acct, tmp_path):
    name = unique("gen")
    kp = acct.gw.CreateKeypair(KeypairName=name)["Keypair"]
    assert kp["KeypairName"] == name
    assert re.match(r"^key-[0-9a-f]{8}$", kp["KeypairId"]), kp
    private = kp.get("PrivateKey")
    assert private and "PRIVATE KEY" in private, kp
    # The private key is usable, and its public half is the one Socle fingerprinted.
    keyfile = tmp_path / "generated"
    keyfile.write_text(private if private.endswith("\n") else private + "\n")
    keyfile.chmod(0o600)
    pub = subprocess.run(["ssh-keygen", "-y", "-f", str(keyfile)], check=True,
                         capture_output=True, text=True).stdout.strip()
    assert pub.split()[0] == kp["KeypairType"], (pub.split()[0], kp["KeypairType"])
    assert kp["KeypairFingerprint"] == md5_fingerprint(pub)
    listed = acct.gw.ReadKeypairs(Filters={"KeypairNames": [name]})["Keypairs"]
    assert len(listed) == 1
    assert listed[0]["KeypairId"] == kp["KeypairId"]
    assert listed[0]["KeypairFingerprint"] == kp["KeypairFingerprint"]
    assert not listed[0].get("PrivateKey"), "ReadKeypairs must never return a private key"


@pytest.mark.parametrize("kind,bits,expected_type", [
    ("ed25519", None, "ssh-ed25519"),
    ("rsa", 2048, "ssh-rsa"),
])
def test_import_public_key(acct, tmp_path, kind, bits, expected_type):
    pub = ssh_keygen(tmp_path, kind, bits)
    name = unique(f"imp-{kind}")
    kp = acct.gw.CreateKeypair(KeypairName=name, PublicKey=b64(pub))["Keypair"]
    assert kp["KeypairName"] == name
    assert not kp.get("PrivateKey"), "an imported keypair has no private key to return"
    assert kp["KeypairType"] == expected_type
    assert kp["KeypairFingerprint"] == md5_fingerprint(pub)
    listed = acct.gw.ReadKeypairs(Filters={"KeypairNames": [name]})["Keypairs"]
    assert [(k["KeypairType"], k["KeypairFingerprint"]) for k in listed] == \
        [(expected_type, md5_fingerprint(pub))]


def test_import_invalid_public_key_is_refused(acct):
    name = unique("bad")
    expect_error(acct.gw.CreateKeypair, KeypairName=name,
                 PublicKey=b64("ssh-ed25519 AAAAnotakey socle"), status=400, code="4047")
    expect_error(acct.gw.CreateKeypair, KeypairName=name, PublicKey="%%% not base64 %%%",
                 status=400, code="4047")
    assert keypair_names(acct.gw, KeypairNames=[name]) == []


def test_read_keypairs_filters(acct, tmp_path):
    ed = ssh_keygen(tmp_path, "ed25519")
    a = acct.gw.CreateKeypair(KeypairName=unique("fa"), PublicKey=b64(ed))["Keypair"]
    b = acct.gw.CreateKeypair(KeypairName=unique("fb"))["Keypair"]
    all_names = keypair_names(acct.gw)
    assert a["KeypairName"] in all_names and b["KeypairName"] in all_names
    assert keypair_names(acct.gw, KeypairNames=[a["KeypairName"]]) == [a["KeypairName"]]
    assert keypair_names(acct.gw, KeypairNames=[a["KeypairName"], b["KeypairName"]]) == \
        sorted([a["KeypairName"], b["KeypairName"]])
    assert keypair_names(acct.gw, KeypairIds=[b["KeypairId"]]) == [b["KeypairName"]]
    assert keypair_names(acct.gw, KeypairFingerprints=[a["KeypairFingerprint"]]) == [a["KeypairName"]]
    ed_names = keypair_names(acct.gw, KeypairTypes=["ssh-ed25519"])
    assert a["KeypairName"] in ed_names
    assert all(k["KeypairType"] == "ssh-ed25519"
               for k in acct.gw.ReadKeypairs(Filters={"KeypairTypes": ["ssh-ed25519"]})["Keypairs"])
    assert keypair_names(acct.gw, KeypairNames=["no-such-keypair"]) == []
    # Different filters combine with AND.
    assert keypair_names(acct.gw, KeypairNames=[a["KeypairName"]], KeypairIds=[b["KeypairId"]]) == []


def test_duplicate_keypair_name_is_409(acct):
    name = unique("dup")
    first = acct.gw.CreateKeypair(KeypairName=name)["Keypair"]
    expect_error(acct.gw.CreateKeypair, KeypairName=name, status=409, code="9011")
    listed = acct.gw.ReadKeypairs(Filters={"KeypairNames": [name]})["Keypairs"]
    assert [k["KeypairId"] for k in listed] == [first["KeypairId"]], "the duplicate changed something"


def test_delete_keypair_by_name_and_by_id(acct):
    n1, n2 = unique("del1"), unique("del2")
    acct.gw.CreateKeypair(KeypairName=n1)
    k2 = acct.gw.CreateKeypair(KeypairName=n2)["Keypair"]
    acct.gw.DeleteKeypair(KeypairName=n1)
    assert keypair_names(acct.gw, KeypairNames=[n1, n2]) == [n2]
    acct.gw.DeleteKeypair(KeypairId=k2["KeypairId"])
    assert keypair_names(acct.gw, KeypairNames=[n1, n2]) == []
    expect_error(acct.gw.DeleteKeypair, KeypairName=n1, status=400, code="5071")
    expect_error(acct.gw.DeleteKeypair, KeypairId=k2["KeypairId"], status=400, code="5071")
    # The name is free again.
    again = acct.gw.CreateKeypair(KeypairName=n1)["Keypair"]
    assert again["KeypairName"] == n1


def test_delete_keypair_needs_name_or_id(acct):
    expect_error(acct.gw.DeleteKeypair, status=400, code="7000")


def test_keypair_malformed_id(acct):
    expect_error(acct.gw.DeleteKeypair, KeypairId="key-xyz", status=400, code="4105")
    expect_error(acct.gw.DeleteKeypair, KeypairId="i-12345678", status=400, code="4104")
