"""Quotas: ReadQuotas shows the VM / vCPU / memory limits set with
`socle account quota` and their usage; CreateVms beyond them is refused and
creates nothing; MaxVmsCount creates as many as the quota allows above MinVmsCount."""

import pytest

from socle_lib import create_vms, delete_all_vms, expect_error, quotas, read_vms, usage, wait_vms_state

@pytest.fixture(scope="module")
def acct(new_account):
    a = new_account("quotas")
    yield a
    problems = delete_all_vms(a.gw)
    assert not problems, problems


def live_vm_count(gw) -> int:
    return len([v for v in read_vms(gw) if v["State"] not in ("shutting-down", "terminated")])


def test_read_quotas_shows_limits_and_usage(socle, acct, image_id):
    socle.set_quota(acct.name, max_vms=3, max_vcpus=5, max_memory_gib=7)
    q = quotas(acct.gw)
    for entry in q.values():
        if entry.get("AccountId") is not None:
            assert entry["AccountId"] == acct.account_id, entry
    assert usage(acct.gw) == {"vms": (3, 0), "vcpus": (5, 0), "memory": (7, 0)}

    vm = create_vms(acct.gw, image_id, VmType="tinav5.c2r3p2")[0]
    assert usage(acct.gw) == {"vms": (3, 1), "vcpus": (5, 2), "memory": (7, 3)}
    acct.gw.DeleteVms(VmIds=[vm["VmId"]])
    wait_vms_state(acct.gw, [vm["VmId"]], "terminated", allow_absent=True)
    assert usage(acct.gw) == {"vms": (3, 0), "vcpus": (5, 0), "memory": (7, 0)}, \
        "a terminated VM still counts against the quotas"


def test_vm_count_quota(socle, acct, image_id):
    socle.set_quota(acct.name, max_vms=2, max_vcpus=20, max_memory_gib=20)
    assert live_vm_count(acct.gw) == 0
    expect_error(acct.gw.CreateVms, ImageId=image_id, VmType="tinav5.c1r1p2",
                 MinVmsCount=3, MaxVmsCount=3, status=400, code="10010")
    assert live_vm_count(acct.gw) == 0, "a CreateVms refused for quota created VMs"

    # MaxVmsCount: the largest possible number above MinVmsCount is created.
    vms = create_vms(acct.gw, image_id, MinVmsCount=1, MaxVmsCount=5)
    assert len(vms) == 2, f"quota 2, MinVmsCount 1, MaxVmsCount 5: expected 2 VMs, got {len(vms)}"
    assert usage(acct.gw)["vms"] == (2, 2)

    expect_error(acct.gw.CreateVms, ImageId=image_id, VmType="tinav5.c1r1p2",
                 status=400, code="10010")
    assert live_vm_count(acct.gw) == 2
    problems = delete_all_vms(acct.gw)
    assert not problems, problems
    assert usage(acct.gw)["vms"] == (2, 0)


def test_vcpu_quota(socle, acct, image_id):
    socle.set_quota(acct.name, max_vms=10, max_vcpus=3, max_memory_gib=100)
    expect_error(acct.gw.CreateVms, ImageId=image_id, VmType="tinav5.c4r1p2",
                 status=400, code="10029")
    expect_error(acct.gw.CreateVms, ImageId=image_id, VmType="tinav5.c2r1p2",
                 MinVmsCount=2, MaxVmsCount=2, status=400, code="10029")
    assert live_vm_count(acct.gw) == 0
    assert usage(acct.gw)["vcpus"] == (3, 0)


def test_memory_quota(socle, acct, image_id):
    socle.set_quota(acct.name, max_vms=10, max_vcpus=100, max_memory_gib=3)
    expect_error(acct.gw.CreateVms, ImageId=image_id, VmType="tinav5.c1r4p2",
                 status=400, code="10042")
    expect_error(acct.gw.CreateVms, ImageId=image_id, VmType="tinav5.c1r2p2",
                 MinVmsCount=2, MaxVmsCount=2, status=400, code="10042")
    assert live_vm_count(acct.gw) == 0
    assert usage(acct.gw)["memory"] == (3, 0)
