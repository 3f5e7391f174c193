"""osc-cli (PyPI package `osc-sdk` 1.11.0), installed as its users install it, driving
Socle with a profile as Outscale documents it (issue 12, point 1).

osc-cli joins its endpoint and `/api/latest/<Op>` with a slash of its own: it sends
`POST //api/latest/<Op>` and signs `/api/latest/<Op>` (OSC4, `x-osc-target` signed, the
host with its port). Outscale's gateway collapses the slashes before routing and
verifying; so does Socle. Nothing here is replayed: each call is osc-cli's own."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from socle_lib import IMAGE_NAME, VM_TYPE, absent_id, wait_snapshot, wait_volume

OSC_CLI = Path(sys.executable).parent / "osc-cli"


class OscCli:
    def __init__(self, home: Path):
        self.env = {**os.environ, "HOME": str(home)}

    def raw(self, op: str, **params) -> subprocess.CompletedProcess:
        # fire parses each value: lists and objects are given as JSON.
        args = [f"--{k}={json.dumps(v) if isinstance(v, (list, dict, bool, int)) else v}" for k, v in params.items()]
        return subprocess.run([str(OSC_CLI), "api", op, *args], env=self.env, capture_output=True, text=True,
                              timeout=120)

    def __call__(self, op: str, **params) -> dict:
        p = self.raw(op, **params)
        assert p.returncode == 0, f"osc-cli api {op} failed ({p.returncode}):\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}"
        return json.loads(p.stdout)


@pytest.fixture(scope="module")
def cli(socle, new_account, tmp_path_factory) -> OscCli:
    if not OSC_CLI.exists():
        pytest.fail(f"{OSC_CLI} is missing: scripts/python-venv.sh installs osc-sdk")
    account = new_account("osccli")
    home = tmp_path_factory.mktemp("osc-cli-home")
    (home / ".osc").mkdir()
    # As Outscale documents it, with the endpoint of this Socle (no /api: osc-cli adds it).
    profile = {"access_key": account.access_key, "secret_key": account.secret_key, "region": account.region,
               "endpoint": f"http://{socle.listen}", "https": False}
    (home / ".osc" / "config.json").write_text(json.dumps({"default": profile}))
    (home / ".osc" / "config.json").chmod(0o600)
    c = OscCli(home)
    c.account = account
    return c


def test_catalogue_unsigned_and_signed(cli, socle):
    regions = cli("ReadRegions")["Regions"]
    assert socle.region in [r["RegionName"] for r in regions], regions
    assert cli("ReadSubregions")["Subregions"], "no subregion"
    assert any(i["ImageName"] == IMAGE_NAME for i in cli("ReadImages")["Images"])


def test_keypairs(cli):
    made = cli("CreateKeypair", KeypairName="osc-cli-kp")["Keypair"]
    assert made["KeypairName"] == "osc-cli-kp" and "PRIVATE KEY" in made["PrivateKey"], made
    names = [k["KeypairName"] for k in cli("ReadKeypairs", Filters={"KeypairNames": ["osc-cli-kp"]})["Keypairs"]]
    assert names == ["osc-cli-kp"]
    cli("DeleteKeypair", KeypairName="osc-cli-kp")
    assert cli("ReadKeypairs", Filters={"KeypairNames": ["osc-cli-kp"]})["Keypairs"] == []


def test_volumes_and_snapshots(cli, subregion):
    vol = cli("CreateVolume", SubregionName=subregion, Size=1, VolumeType="gp2")["Volume"]
    vid = vol["VolumeId"]
    wait_volume(cli.account.gw, vid, "available")
    assert cli("ReadVolumes", Filters={"VolumeIds": [vid]})["Volumes"][0]["Size"] == 1
    snap = cli("CreateSnapshot", VolumeId=vid, Description="from osc-cli")["Snapshot"]
    wait_snapshot(cli.account.gw, snap["SnapshotId"], "completed")
    read = cli("ReadSnapshots", Filters={"SnapshotIds": [snap["SnapshotId"]]})["Snapshots"][0]
    assert read["Description"] == "from osc-cli" and read["VolumeId"] == vid, read
    cli("DeleteSnapshot", SnapshotId=snap["SnapshotId"])
    cli("DeleteVolume", VolumeId=vid)


def test_nets_security_groups_and_public_ips(cli, subregion):
    net = cli("CreateNet", IpRange="10.9.0.0/16")["Net"]
    subnet = cli("CreateSubnet", NetId=net["NetId"], IpRange="10.9.1.0/24", SubregionName=subregion)["Subnet"]
    sg = cli("CreateSecurityGroup", NetId=net["NetId"], SecurityGroupName="osc-cli-sg", Description="web")["SecurityGroup"]
    cli("CreateSecurityGroupRule", SecurityGroupId=sg["SecurityGroupId"], Flow="Inbound", IpProtocol="tcp",
        FromPortRange=443, ToPortRange=443, IpRange="0.0.0.0/0")
    rules = cli("ReadSecurityGroups", Filters={"SecurityGroupIds": [sg["SecurityGroupId"]]})["SecurityGroups"][0]["InboundRules"]
    assert any(r["FromPortRange"] == 443 and r["IpRanges"] == ["0.0.0.0/0"] for r in rules), rules
    ip = cli("CreatePublicIp")["PublicIp"]
    assert cli("ReadPublicIps", Filters={"PublicIpIds": [ip["PublicIpId"]]})["PublicIps"][0]["PublicIp"] == ip["PublicIp"]
    cli("DeletePublicIp", PublicIpId=ip["PublicIpId"])
    cli("DeleteSecurityGroup", SecurityGroupId=sg["SecurityGroupId"])
    cli("DeleteSubnet", SubnetId=subnet["SubnetId"])
    cli("DeleteNet", NetId=net["NetId"])
    assert cli("ReadNets", Filters={"NetIds": [net["NetId"]]})["Nets"] == []


def test_vms(cli, image_id):
    vm = cli("CreateVms", ImageId=image_id, VmType=VM_TYPE)["Vms"][0]
    read = cli("ReadVms", Filters={"VmIds": [vm["VmId"]]})["Vms"]
    assert [v["VmId"] for v in read] == [vm["VmId"]] and read[0]["VmType"] == VM_TYPE, read
    cli("DeleteVms", VmIds=[vm["VmId"]])


def test_a_refusal_is_shown_with_its_code_and_the_exit_status_says_so(cli):
    missing = absent_id("vol")
    p = cli.raw("DeleteVolume", VolumeId=missing)
    assert p.returncode != 0, p.stdout
    last = (p.stdout + p.stderr).strip().splitlines()[-1]
    assert "status = 400, code = 5064, code_type = InvalidResource" in last and missing in last, last


def test_a_wrong_secret_is_refused(cli, tmp_path):
    config = json.loads((Path(cli.env["HOME"]) / ".osc" / "config.json").read_text())
    config["default"]["secret_key"] = "0" * 40
    (tmp_path / ".osc").mkdir()
    (tmp_path / ".osc" / "config.json").write_text(json.dumps(config))
    p = OscCli(tmp_path).raw("ReadVms")
    assert p.returncode != 0, p.stdout
    last = (p.stdout + p.stderr).strip().splitlines()[-1]
    assert "status = 401, code = 1, code_type = AccessDenied" in last, last
