"""Read-only catalogue operations: regions, subregions, VM types, images; and the
credentials file written by `socle up`."""

import json
import os
import re
import stat

import requests

from socle_lib import IMAGE_NAME, VM_TYPE, absent_id


def test_credentials_file(socle):
    path = socle.data_dir / "credentials.json"
    mode = stat.S_IMODE(os.stat(path).st_mode)
    assert mode == 0o600, f"credentials.json has mode {oct(mode)}, expected 0o600"
    creds = json.loads(path.read_text())
    assert set(creds) >= {"AccessKey", "SecretKey", "Region", "Endpoint"}
    assert len(creds["AccessKey"]) == 20, creds["AccessKey"]
    assert len(creds["SecretKey"]) == 40
    assert creds["Endpoint"] == f"http://{socle.listen}/api/v1"


def test_read_regions(gw, socle):
    resp = gw.ReadRegions()
    regions = resp["Regions"]
    names = [r["RegionName"] for r in regions]
    assert socle.region in names, names
    for r in regions:
        assert r.get("Endpoint"), r
    assert re.match(r"^[0-9a-f-]{36}$", resp["ResponseContext"]["RequestId"])


def test_read_regions_and_vm_types_need_no_signature(socle, default_account):
    """ReadRegions and ReadVmTypes are unauthenticated on Outscale (osc-cli sends them unsigned)."""
    for op, key in (("ReadRegions", "Regions"), ("ReadVmTypes", "VmTypes")):
        r = requests.post(f"{socle.endpoint}/{op}", json={}, timeout=10)
        assert r.status_code == 200, f"unsigned {op}: HTTP {r.status_code} {r.text[:300]}"
        assert r.json()[key], r.text[:300]


def test_read_subregions(gw, socle):
    subs = gw.ReadSubregions()["Subregions"]
    names = [s["SubregionName"] for s in subs]
    assert f"{socle.region}a" in names, names
    for s in subs:
        assert s["RegionName"] == socle.region, s
        assert s["SubregionName"].startswith(socle.region)
        assert s.get("State") == "available", s
    only = gw.ReadSubregions(Filters={"SubregionNames": [f"{socle.region}a"]})["Subregions"]
    assert [s["SubregionName"] for s in only] == [f"{socle.region}a"]
    none = gw.ReadSubregions(Filters={"SubregionNames": ["mars-north-1z"]})["Subregions"]
    assert none == []


def test_read_vm_types(gw):
    types = gw.ReadVmTypes()["VmTypes"]
    by_name = {t["VmTypeName"]: t for t in types}
    assert VM_TYPE in by_name, sorted(by_name)[:50]
    small = by_name[VM_TYPE]
    assert small["VcoreCount"] == 1, small
    assert small["MemorySize"] == 1, small
    filtered = gw.ReadVmTypes(Filters={"VmTypeNames": [VM_TYPE]})["VmTypes"]
    assert [t["VmTypeName"] for t in filtered] == [VM_TYPE]
    # Every listed type is consistent with its name (tinavW.cXrY[pZ]).
    for t in types:
        m = re.match(r"^tinav\d+\.c(\d+)r(\d+)(p[123])?$", t["VmTypeName"])
        if m:
            assert t["VcoreCount"] == int(m.group(1)), t
            assert t["MemorySize"] == int(m.group(2)), t


def test_read_images_shows_socle_tiny(gw, socle):
    images = gw.ReadImages()["Images"]
    tiny = [i for i in images if i.get("ImageName") == IMAGE_NAME]
    assert len(tiny) == 1, [i.get("ImageName") for i in images]
    img = tiny[0]
    assert re.match(r"^ami-[0-9a-f]{8}$", img["ImageId"]), img
    assert img["State"] == "available", img
    by_name = gw.ReadImages(Filters={"ImageNames": [IMAGE_NAME]})["Images"]
    assert [i["ImageId"] for i in by_name] == [img["ImageId"]]
    by_id = gw.ReadImages(Filters={"ImageIds": [img["ImageId"]]})["Images"]
    assert [i["ImageName"] for i in by_id] == [IMAGE_NAME]
    assert gw.ReadImages(Filters={"ImageNames": ["no-such-image-name"]})["Images"] == []
    assert gw.ReadImages(Filters={"ImageIds": [absent_id("ami")]})["Images"] == []


def test_socle_tiny_visible_to_every_account(new_account, tiny_image):
    other = new_account("catalog")
    images = other.gw.ReadImages(Filters={"ImageNames": [IMAGE_NAME]})["Images"]
    assert [i["ImageId"] for i in images] == [tiny_image["ImageId"]]


def test_read_images_malformed_id_filter(gw):
    # A filter is a search, not a reference: an ID of the wrong shape matches nothing
    # or is refused as malformed, never a server error.
    try:
        images = gw.ReadImages(Filters={"ImageIds": ["ami-zz"]})["Images"]
        assert images == []
    except requests.HTTPError as e:
        assert e.response.status_code == 400, e.response.text
        assert e.response.json()["Errors"][0]["Code"] in ("4105", "4047"), e.response.text
