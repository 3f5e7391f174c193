"""Helpers shared by the end-to-end tests: SDK gateways, a small OSC4/AWS4 request
signer for raw HTTP, error capture and wait loops that explain themselves on timeout.

Nothing here talks to Socle's internals: everything goes through the public API
(the official osc-sdk-python, or raw HTTP signed like the real clients sign).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import os
import random
import re
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable
from urllib.parse import urlsplit

import pytest
import requests
from osc_sdk_python import Gateway
from osc_sdk_python.credentials import Endpoint

# The smallest VM type: 1 vCPU, 1 GiB, performance 2.
VM_TYPE = "tinav5.c1r1p2"
IMAGE_NAME = "socle-tiny"
READY_LINE = "socle-guest: ready"
# A VM reaches running in < 60 s under TCG on 2 cores; allow twice that.
VM_TIMEOUT = float(os.environ.get("SOCLE_VM_TIMEOUT", "120"))

TERMINAL_STATES = ("shutting-down", "terminated")
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.I)
VM_ID_RE = re.compile(r"^i-[0-9a-f]{8}$")


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def absent_id(prefix: str, exists: Callable[[str], bool] | None = None) -> str:
    """A well-formed ID (`prefix-` + 8 hex) that names nothing."""
    for _ in range(20):
        candidate = f"{prefix}-{random.getrandbits(32):08x}"
        if exists is None or not exists(candidate):
            return candidate
    raise AssertionError("could not find an unused ID")


# --------------------------------------------------------------------------- SDK


def make_gateway(access_key: str, secret_key: str, region: str, endpoint: str) -> Gateway:
    """The official SDK pointed at Socle, exactly as a user would do it.

    The client-side rate limiter (5 requests/s by default) is widened so that
    polling loops are not throttled, and retries are off so that a server error
    shows at once instead of after ~30 s of back-off.
    """
    return Gateway(
        access_key=access_key,
        secret_key=secret_key,
        region=region,
        endpoints=Endpoint(api=endpoint),
        limiter_max_requests=10_000,
        max_retries=0,
    )


@dataclass
class ApiError:
    """An error answer, as the wire carried it."""

    status: int
    body: Any
    headers: dict
    text: str

    @property
    def errors(self) -> list:
        return (self.body or {}).get("Errors") or []

    @property
    def code(self) -> str | None:
        return self.errors[0].get("Code") if self.errors else None

    @property
    def type(self) -> str | None:
        return self.errors[0].get("Type") if self.errors else None

    @property
    def details(self) -> str | None:
        return self.errors[0].get("Details") if self.errors else None

    def shape(self, *ids: str) -> tuple:
        """What a caller can observe, with the given IDs masked (for comparing the
        answer about another account's resource with the one about an absent ID)."""
        details = self.details or ""
        for i in ids:
            details = details.replace(i, "<ID>")
        return (self.status, self.code, self.type, details)

    def __str__(self) -> str:
        return f"HTTP {self.status}: {self.text[:500]}"


def error_from_response(resp: requests.Response) -> ApiError:
    try:
        body = resp.json()
    except ValueError:
        body = None
    return ApiError(resp.status_code, body, dict(resp.headers), resp.text)


def check_error_envelope(err: ApiError) -> None:
    """Every error answer: JSON content type, Errors[{Code,Type,Details}], ResponseContext.RequestId."""
    ctype = err.headers.get("Content-Type") or err.headers.get("content-type") or ""
    assert "application/json" in ctype, f"error answer has Content-Type {ctype!r}: {err}"
    assert isinstance(err.body, dict), f"error answer is not a JSON object: {err}"
    assert err.errors, f"error answer has no Errors: {err}"
    for e in err.errors:
        assert isinstance(e.get("Code"), str) and e["Code"], f"Errors[].Code missing: {err}"
        assert isinstance(e.get("Type"), str) and e["Type"], f"Errors[].Type missing: {err}"
        assert "Details" in e, f"Errors[].Details missing: {err}"
    rid = (err.body.get("ResponseContext") or {}).get("RequestId")
    assert rid and UUID_RE.match(rid), f"ResponseContext.RequestId is not a UUID: {err}"


def call_error(fn: Callable, *args, **kwargs) -> ApiError:
    """Run an SDK call that must fail; return the error as the server sent it."""
    try:
        result = fn(*args, **kwargs)
    except requests.HTTPError as e:
        if e.response is None:
            raise
        err = error_from_response(e.response)
        check_error_envelope(err)
        return err
    pytest.fail(f"expected an error answer, got success: {json.dumps(result)[:800]}")


def expect_error(fn: Callable, *args, status: int, code: str | None = None,
                 type_: str | None = None, **kwargs) -> ApiError:
    err = call_error(fn, *args, **kwargs)
    assert err.status == status, f"expected HTTP {status}, got {err}"
    if code is not None:
        assert err.code == code, f"expected code {code}, got {err}"
    if type_ is not None:
        assert err.type == type_, f"expected Type {type_}, got {err}"
    return err


def expect_raw_error(resp: requests.Response, *, status: int, code: str | None = None,
                     type_: str | None = None) -> ApiError:
    err = error_from_response(resp)
    assert resp.status_code == status, f"expected HTTP {status}, got {err}"
    check_error_envelope(err)
    if code is not None:
        assert err.code == code, f"expected code {code}, got {err}"
    if type_ is not None:
        assert err.type == type_, f"expected Type {type_}, got {err}"
    return err


# ----------------------------------------------------------------- request signing


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode("utf-8"), hashlib.sha256).digest()


def sign(*, algorithm: str, key_prefix: str, service: str, term: str, access_key: str,
         secret_key: str, region: str, date_iso: str, path: str,
         headers: list[tuple[str, str]], body: bytes) -> str:
    """The Authorization header value for a request, per NOTES.md: canonical request,
    string to sign, HMAC key chain from prefix+SK over date/region/service/term."""
    date = date_iso[:8]
    names = ";".join(n.lower() for n, _ in headers)
    canonical = (
        "POST\n" + path + "\n\n"
        + "".join(f"{n.lower()}:{v}\n" for n, v in headers)
        + "\n" + names + "\n" + hashlib.sha256(body).hexdigest()
    )
    scope = f"{date}/{region}/{service}/{term}"
    to_sign = f"{algorithm}\n{date_iso}\n{scope}\n" + hashlib.sha256(canonical.encode()).hexdigest()
    key = (key_prefix + secret_key).encode()
    for part in (date, region, service, term):
        key = _hmac(key, part)
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    return f"{algorithm} Credential={access_key}/{scope}, SignedHeaders={names}, Signature={signature}"


def osc_date(when: dt.datetime | None = None) -> str:
    when = when or dt.datetime.now(dt.timezone.utc)
    return when.astimezone(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def signed_headers(style: str, *, access_key: str, secret_key: str, region: str, url: str,
                   operation: str, body: bytes, date_iso: str) -> dict:
    """Headers as each real client sends them (see NOTES.md, 'three styles')."""
    parts = urlsplit(url)
    host_port = parts.netloc
    host = parts.hostname
    path = parts.path
    if style == "sdk":  # osc-sdk-python: host without the port
        ctype = "application/json; charset=utf-8"
        hdrs = [("content-type", ctype), ("host", host), ("x-osc-date", date_iso)]
        auth = sign(algorithm="OSC4-HMAC-SHA256", key_prefix="OSC4", service="api",
                    term="osc4_request", access_key=access_key, secret_key=secret_key,
                    region=region, date_iso=date_iso, path=path, headers=hdrs, body=body)
        return {"Content-Type": ctype, "X-Osc-Date": date_iso, "Authorization": auth}
    if style == "cli":  # osc-cli: host with the port, x-osc-target signed
        target = f"OutscaleService.{operation}"
        hdrs = [("host", host_port), ("x-osc-date", date_iso), ("x-osc-target", target)]
        auth = sign(algorithm="OSC4-HMAC-SHA256", key_prefix="OSC4", service="api",
                    term="osc4_request", access_key=access_key, secret_key=secret_key,
                    region=region, date_iso=date_iso, path=path, headers=hdrs, body=body)
        return {"Content-Type": "application/json", "X-Osc-Date": date_iso,
                "x-osc-target": target, "Authorization": auth}
    if style == "aws":  # outscale_api (Rust), osc-sdk-go: AWS4, service oapi
        hdrs = [("host", host_port), ("x-amz-date", date_iso)]
        auth = sign(algorithm="AWS4-HMAC-SHA256", key_prefix="AWS4", service="oapi",
                    term="aws4_request", access_key=access_key, secret_key=secret_key,
                    region=region, date_iso=date_iso, path=path, headers=hdrs, body=body)
        return {"Content-Type": "application/json", "X-Amz-Date": date_iso, "Authorization": auth}
    raise ValueError(style)


class RawClient:
    """Raw HTTP to the API, signed by the code above, for what the SDK refuses to send."""

    def __init__(self, endpoint: str, access_key: str, secret_key: str, region: str):
        self.endpoint = endpoint.rstrip("/")
        self.access_key = access_key
        self.secret_key = secret_key
        self.region = region
        self.session = requests.Session()

    def url(self, operation: str, version: str = "v1") -> str:
        base = self.endpoint
        if version != "v1":
            base = re.sub(r"/api/v1$", f"/api/{version}", base)
        return f"{base}/{operation}"

    def post(self, operation: str, body: Any = None, *, raw: bytes | str | None = None,
             sign_it: bool = True, style: str = "sdk", access_key: str | None = None,
             secret_key: str | None = None, when: dt.datetime | None = None,
             version: str = "v1", signed_body: bytes | None = None,
             mangle: Callable[[dict], dict] | None = None, timeout: float = 30) -> requests.Response:
        """POST one operation. `body` is JSON-encoded unless `raw` bytes are given.
        `signed_body` signs other bytes than those sent (tampering);
        `mangle` edits the final headers (e.g. to break the signature)."""
        if raw is not None:
            data = raw.encode() if isinstance(raw, str) else raw
        else:
            data = json.dumps({} if body is None else body).encode()
        url = self.url(operation, version)
        if sign_it:
            headers = signed_headers(
                style, access_key=access_key or self.access_key,
                secret_key=secret_key or self.secret_key, region=self.region, url=url,
                operation=operation, body=data if signed_body is None else signed_body,
                date_iso=osc_date(when))
        else:
            headers = {"Content-Type": "application/json"}
        if mangle:
            headers = mangle(headers)
        return self.session.post(url, data=data, headers=headers, timeout=timeout)

    def ok(self, operation: str, body: Any = None, **kw) -> dict:
        resp = self.post(operation, body, **kw)
        assert resp.status_code == 200, f"{operation}: HTTP {resp.status_code}: {resp.text[:800]}"
        return resp.json()


# ------------------------------------------------------------------------- VMs


def read_pages(fn: Callable, key: str, filters: dict | None = None,
               per_page: int | None = None) -> list[list[dict]]:
    """Every page of a Read* call (`fn` an SDK method, `key` the list in its answer),
    following NextPageToken."""
    pages: list[list[dict]] = []
    token = None
    for _ in range(1000):
        kw: dict = {"Filters": filters} if filters else {}
        if per_page is not None:
            kw["ResultsPerPage"] = per_page
        if token:
            kw["NextPageToken"] = token
        resp = fn(**kw)
        pages.append(resp.get(key) or [])
        token = resp.get("NextPageToken")
        if not token:
            return pages
    raise AssertionError(f"{key}: pagination does not end")


def read_all(fn: Callable, key: str, filters: dict | None = None) -> list[dict]:
    """All items of a Read* call matching the filters, over all pages."""
    return [item for page in read_pages(fn, key, filters) for item in page]


def read_vms(gw: Gateway, **filters) -> list[dict]:
    """All VMs matching the filters, following NextPageToken."""
    return read_all(gw.ReadVms, "Vms", filters)


def read_vm(gw: Gateway, vm_id: str) -> dict | None:
    vms = gw.ReadVms(Filters={"VmIds": [vm_id]}).get("Vms") or []
    assert len(vms) <= 1, f"ReadVms VmIds=[{vm_id}] gave {len(vms)} VMs"
    return vms[0] if vms else None


def vm_state(gw: Gateway, vm_id: str) -> str | None:
    vm = read_vm(gw, vm_id)
    return vm["State"] if vm else None


def console_text(gw: Gateway, vm_id: str) -> str:
    resp = gw.ReadConsoleOutput(VmId=vm_id)
    out = resp.get("ConsoleOutput") or ""
    return base64.b64decode(out, validate=True).decode("utf-8", "replace")


def _diagnose(gw: Gateway, vm_ids: Iterable[str]) -> str:
    lines = []
    for vm_id in vm_ids:
        try:
            vm = read_vm(gw, vm_id)
            lines.append(f"ReadVms {vm_id}: {json.dumps(vm)[:1500]}")
        except Exception as e:  # noqa: BLE001 - diagnostics only
            lines.append(f"ReadVms {vm_id} failed: {e}")
        try:
            tail = console_text(gw, vm_id)[-1500:]
            lines.append(f"console tail of {vm_id}:\n{tail}")
        except Exception as e:  # noqa: BLE001
            lines.append(f"ReadConsoleOutput {vm_id} failed: {e}")
    return "\n".join(lines)


def wait_vms_state(gw: Gateway, vm_ids: list[str], states: str | tuple, timeout: float = VM_TIMEOUT,
                   allow_absent: bool = False) -> dict[str, dict]:
    """Poll ReadVms until every VM is in one of `states`. On timeout, fail showing the
    last ReadVms answer and the console tail of each VM."""
    if isinstance(states, str):
        states = (states,)
    deadline = time.monotonic() + timeout
    seen: dict[str, list[str]] = {v: [] for v in vm_ids}
    while True:
        vms = {v["VmId"]: v for v in read_vms(gw, VmIds=list(vm_ids))}
        for v in vm_ids:
            s = vms[v]["State"] if v in vms else None
            if not seen[v] or seen[v][-1] != s:
                seen[v].append(s)
        done = all((v in vms and vms[v]["State"] in states) or (allow_absent and v not in vms)
                   for v in vm_ids)
        if done:
            return vms
        if time.monotonic() > deadline:
            pytest.fail(
                f"VMs did not reach {states} within {timeout:.0f}s; states seen: {seen}\n"
                + _diagnose(gw, vm_ids))
        time.sleep(0.5)


def wait_console(gw: Gateway, vm_id: str, predicate: Callable[[str], bool], what: str,
                 timeout: float = VM_TIMEOUT) -> str:
    deadline = time.monotonic() + timeout
    while True:
        text = console_text(gw, vm_id)
        if predicate(text):
            return text
        if time.monotonic() > deadline:
            pytest.fail(f"console of {vm_id} did not show {what} within {timeout:.0f}s\n"
                        + _diagnose(gw, [vm_id]))
        time.sleep(1)


def ready_count(text: str) -> int:
    return text.count(READY_LINE)


def wait_ready(gw: Gateway, vm_id: str, at_least: int = 1, timeout: float = VM_TIMEOUT) -> str:
    return wait_console(gw, vm_id, lambda t: ready_count(t) >= at_least,
                        f"{at_least}x {READY_LINE!r}", timeout)


def new_output(before: str, now: str) -> str:
    """What the console gained since `before` (all of it if the console was reset)."""
    return now[len(before):] if now.startswith(before) else now


def wait_fresh_ready(gw: Gateway, vm_id: str, before: str, timeout: float = VM_TIMEOUT) -> str:
    """Wait for a ready line printed after the console looked like `before`
    (an old ready line from a previous boot does not count)."""
    return wait_console(gw, vm_id, lambda t: READY_LINE in new_output(before, t),
                        f"a new {READY_LINE!r} line", timeout)


def start_and_wait_ready(gw: Gateway, vm_id: str) -> dict:
    before = console_text(gw, vm_id)
    resp = gw.StartVms(VmIds=[vm_id])
    wait_vms_state(gw, [vm_id], "running")
    wait_fresh_ready(gw, vm_id, before)
    return resp


def ensure_running(gw: Gateway, vm_id: str) -> dict:
    state = vm_state(gw, vm_id)
    if state in ("stopping", "stopped"):
        wait_vms_state(gw, [vm_id], "stopped")
        start_and_wait_ready(gw, vm_id)
    vm = wait_vms_state(gw, [vm_id], "running")[vm_id]
    wait_ready(gw, vm_id)
    return vm


def ensure_stopped(gw: Gateway, vm_id: str, force: bool = True) -> dict:
    state = vm_state(gw, vm_id)
    if state == "pending":
        wait_vms_state(gw, [vm_id], "running")
        state = "running"
    if state == "running":
        gw.StopVms(VmIds=[vm_id], ForceStop=force)
    return wait_vms_state(gw, [vm_id], "stopped")[vm_id]


def create_vms(gw: Gateway, image_id: str, count: int = 1, **kw) -> list[dict]:
    kw.setdefault("VmType", VM_TYPE)
    if count != 1:
        kw.setdefault("MinVmsCount", count)
        kw.setdefault("MaxVmsCount", count)
    resp = gw.CreateVms(ImageId=image_id, **kw)
    vms = resp.get("Vms") or []
    assert vms, f"CreateVms returned no VM: {resp}"
    return vms


def delete_all_vms(gw: Gateway, timeout: float = VM_TIMEOUT) -> list[str]:
    """Delete every VM of the account that is not already going away (turning
    DeletionProtection off first) and wait until all are terminated. Returns the
    list of problems (empty when everything went well)."""
    problems: list[str] = []
    try:
        vms = [v for v in read_vms(gw) if v.get("State") not in TERMINAL_STATES]
    except Exception as e:  # noqa: BLE001
        return [f"ReadVms failed: {e}"]
    ids = [v["VmId"] for v in vms]
    for v in vms:
        if v.get("DeletionProtection"):
            try:
                gw.UpdateVm(VmId=v["VmId"], DeletionProtection=False)
            except Exception as e:  # noqa: BLE001
                problems.append(f"UpdateVm {v['VmId']} DeletionProtection=False failed: {e}")
    if ids:
        try:
            gw.DeleteVms(VmIds=ids)
        except Exception as e:  # noqa: BLE001
            problems.append(f"DeleteVms {ids} failed: {e}")
            for one in ids:  # one by one, so one bad VM does not keep the others alive
                try:
                    gw.DeleteVms(VmIds=[one])
                except Exception as e2:  # noqa: BLE001
                    problems.append(f"DeleteVms {one} failed: {e2}")
    try:
        all_ids = [v["VmId"] for v in read_vms(gw) if v.get("State") != "terminated"]
        if all_ids:
            wait_vms_state(gw, all_ids, "terminated", timeout=timeout, allow_absent=True)
    except BaseException as e:  # noqa: BLE001 - pytest.fail raises BaseException subclasses
        problems.append(f"VMs not terminated: {e}")
    return problems


# ---------------------------------------------------------- volumes, snapshots

VOLUME_ID_RE = re.compile(r"^vol-[0-9a-f]{8}$")
SNAPSHOT_ID_RE = re.compile(r"^snap-[0-9a-f]{8}$")
ACCOUNT_ID_RE = re.compile(r"^[0-9]{12}$")
GIB = 1024 ** 3
# Volumes and snapshots are made, resized and deleted by the reconciler in the
# background (seconds each); allow much more.
STORAGE_TIMEOUT = float(os.environ.get("SOCLE_STORAGE_TIMEOUT", "120"))
# The guest's console lines about its block devices (serial = volume ID).
DISK_EVENT_RE = re.compile(
    r"socle-guest: disk (present|added|resized|removed) (\S+) serial=(\S*)(?: size=(\d+))?")
_ANY = object()


def wait_until(what: str, fetch: Callable[[], Any], done: Callable[[Any], bool], *,
               timeout: float = STORAGE_TIMEOUT, summary: Callable[[Any], Any] = lambda x: x,
               history: list | None = None, interval: float = 0.1) -> Any:
    """Poll fetch() until done(value); return that value. Every distinct summary(value)
    seen is appended to `history` (when given) and shown on timeout."""
    deadline = time.monotonic() + timeout
    seen: list = [] if history is None else history
    while True:
        value = fetch()
        brief = summary(value)
        if not seen or seen[-1] != brief:
            seen.append(brief)
        if done(value):
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not reached within {timeout:.0f}s; seen, in order: {seen}\n"
                        f"last value: {json.dumps(value, default=str)[:1500]}")
        time.sleep(interval)


def read_volumes(gw: Gateway, **filters) -> list[dict]:
    return read_all(gw.ReadVolumes, "Volumes", filters)


def read_volume(gw: Gateway, volume_id: str) -> dict | None:
    vols = gw.ReadVolumes(Filters={"VolumeIds": [volume_id]}).get("Volumes") or []
    assert len(vols) <= 1, f"ReadVolumes VolumeIds=[{volume_id}] gave {len(vols)} volumes"
    return vols[0] if vols else None


def link_of(volume: dict | None) -> dict | None:
    """The volume's LinkedVolumes entry (a volume is linked to one VM at most)."""
    links = (volume or {}).get("LinkedVolumes") or []
    assert len(links) <= 1, f"a volume linked more than once: {volume}"
    return links[0] if links else None


def volume_summary(v: dict | None):
    if v is None:
        return None
    link = link_of(v)
    return (v.get("State"), v.get("Size"), link and link.get("State"))


def wait_volume(gw: Gateway, volume_id: str, state: str | tuple | None, *, link=_ANY,
                timeout: float = STORAGE_TIMEOUT, history: list | None = None) -> dict | None:
    """Wait until the volume is in `state` (a state, a tuple of states, or None: gone)
    and, when `link` is given, its link is in that state (None: not linked)."""
    states = (state,) if isinstance(state, str) or state is None else tuple(state)

    def done(v):
        if v is None:
            return None in states
        if v.get("State") not in states:
            return False
        lk = link_of(v)
        return link is _ANY or (lk.get("State") if lk else None) == link

    return wait_until(f"volume {volume_id} in {states}" + ("" if link is _ANY else f", link {link}"),
                      lambda: read_volume(gw, volume_id), done, timeout=timeout,
                      summary=volume_summary, history=history)


def read_snapshots(gw: Gateway, **filters) -> list[dict]:
    return read_all(gw.ReadSnapshots, "Snapshots", filters)


def read_snapshot(gw: Gateway, snapshot_id: str) -> dict | None:
    snaps = gw.ReadSnapshots(Filters={"SnapshotIds": [snapshot_id]}).get("Snapshots") or []
    assert len(snaps) <= 1, f"ReadSnapshots SnapshotIds=[{snapshot_id}] gave {len(snaps)} snapshots"
    return snaps[0] if snaps else None


def wait_snapshot(gw: Gateway, snapshot_id: str, state: str | tuple | None, *,
                  timeout: float = STORAGE_TIMEOUT, history: list | None = None) -> dict | None:
    """Wait until the snapshot is in `state` (a state, a tuple of states, or None: gone)."""
    states = (state,) if isinstance(state, str) or state is None else tuple(state)
    return wait_until(f"snapshot {snapshot_id} in {states}", lambda: read_snapshot(gw, snapshot_id),
                      lambda s: (s.get("State") if s else None) in states, timeout=timeout,
                      summary=lambda s: s and (s.get("State"), s.get("Progress")), history=history)


def account_id(gw: Gateway) -> str:
    """The caller's account ID, as ReadQuotas shows it."""
    ids = {q.get("AccountId") for t in gw.ReadQuotas()["QuotaTypes"] for q in (t.get("Quotas") or [])}
    ids.discard(None)
    assert len(ids) == 1 and ACCOUNT_ID_RE.match(next(iter(ids))), f"ReadQuotas AccountIds: {ids}"
    return ids.pop()


def storage_state(gw: Gateway) -> dict:
    """Everything an account can see of its block storage, for "nothing changed" checks."""
    return {
        "volumes": {v["VolumeId"]: v for v in read_volumes(gw)},
        "snapshots": {s["SnapshotId"]: s for s in read_snapshots(gw)},
        "tags": sorted((t["ResourceId"], t["Key"], t["Value"]) for t in gw.ReadTags()["Tags"]
                       if t["ResourceId"].startswith(("vol-", "snap-"))),
    }


def delete_all_storage(gw: Gateway, timeout: float = STORAGE_TIMEOUT) -> list[str]:
    """Unlink and delete every volume of the account and delete every snapshot it owns,
    waiting until they are gone. Returns the list of problems (empty when all went well)."""
    problems: list[str] = []
    try:
        me = account_id(gw)
        settled_volume = lambda v: v["State"] in ("available", "in-use", "error", "deleting") and \
            (link_of(v) or {}).get("State") in (None, "attached")
        vols = wait_until("volumes settled", lambda: read_volumes(gw),
                          lambda vs: all(settled_volume(v) for v in vs), timeout=timeout,
                          summary=lambda vs: sorted((v["VolumeId"], volume_summary(v)) for v in vs))
        for v in vols:
            if link_of(v):
                try:
                    gw.UnlinkVolume(VolumeId=v["VolumeId"])
                except Exception as e:  # noqa: BLE001
                    problems.append(f"UnlinkVolume {v['VolumeId']} failed: {e}")
        vols = wait_until("volumes unlinked", lambda: read_volumes(gw),
                          lambda vs: all(not link_of(v) for v in vs), timeout=timeout,
                          summary=lambda vs: sorted((v["VolumeId"], volume_summary(v)) for v in vs))
        for v in vols:
            if v["State"] != "deleting":
                try:
                    gw.DeleteVolume(VolumeId=v["VolumeId"])
                except Exception as e:  # noqa: BLE001
                    problems.append(f"DeleteVolume {v['VolumeId']} failed: {e}")
        snaps = wait_until("snapshots settled", lambda: read_snapshots(gw, AccountIds=[me]),
                           lambda ss: all(s["State"] != "pending" for s in ss), timeout=timeout,
                           summary=lambda ss: sorted((s["SnapshotId"], s["State"]) for s in ss))
        for s in snaps:
            if s["State"] != "deleting":
                try:
                    gw.DeleteSnapshot(SnapshotId=s["SnapshotId"])
                except Exception as e:  # noqa: BLE001
                    problems.append(f"DeleteSnapshot {s['SnapshotId']} failed: {e}")
        wait_until("volumes and snapshots deleted",
                   lambda: ([v["VolumeId"] for v in read_volumes(gw)],
                            [s["SnapshotId"] for s in read_snapshots(gw, AccountIds=[me])]),
                   lambda left: left == ([], []), timeout=timeout)
    except BaseException as e:  # noqa: BLE001 - pytest.fail raises BaseException subclasses
        problems.append(f"storage not cleaned up: {e}")
    return problems


def check_filter(fn: Callable, key: str, id_key: str, everything: list[dict], filters: dict,
                 predicate: Callable[[dict], bool], include: Iterable[str] = (),
                 exclude: Iterable[str] = ()) -> set[str]:
    """Read with `filters` and check the answer is exactly the items of `everything` (the
    unfiltered listing) that `predicate` accepts, and holds `include` but none of `exclude`
    (so that a filter that matches nothing, or everything, cannot pass unnoticed)."""
    got = [item[id_key] for item in read_all(fn, key, filters)]
    assert len(got) == len(set(got)), f"Filters={filters}: duplicates in {got}"
    expected = {item[id_key] for item in everything if predicate(item)}
    assert set(got) == expected, f"Filters={filters}: got {sorted(got)}, expected {sorted(expected)}"
    assert set(include) <= set(got), f"Filters={filters}: {sorted(set(include) - set(got))} missing"
    assert not set(exclude) & set(got), f"Filters={filters}: {sorted(set(exclude) & set(got))} listed"
    return set(got)


def check_pagination(fn: Callable, key: str, id_key: str, filters: dict | None = None) -> list[dict]:
    """Pages of 1, 2 and 3 items give the unpaginated listing, in its order (creation
    date, then ID), each page but the last full; returns the unpaginated listing."""
    full = (fn(Filters=filters) if filters else fn())
    assert not full.get("NextPageToken"), f"a listing that fits in one page has a NextPageToken: {full}"
    items = full.get(key) or []
    ids = [i[id_key] for i in items]
    keys = [(i["CreationDate"], i[id_key]) for i in items]
    assert keys == sorted(keys), f"{key} not sorted by creation date, then ID: {keys}"
    for per_page in (1, 2, 3):
        pages = read_pages(fn, key, filters, per_page)
        assert len(pages) == max(1, -(-len(ids) // per_page)), f"ResultsPerPage={per_page}: {pages}"
        assert all(len(p) == per_page for p in pages[:-1]), f"ResultsPerPage={per_page}: {pages}"
        assert [i[id_key] for p in pages for i in p] == ids, \
            f"ResultsPerPage={per_page}: pages lost, repeated or reordered items"
    return items


def disk_events(text: str) -> list[tuple[str, str, str, int | None]]:
    """(verb, device, serial, size in bytes or None) of each guest disk line, in order."""
    return [(m[1], m[2], m[3], int(m[4]) if m[4] else None) for m in DISK_EVENT_RE.finditer(text)]


def wait_disk_event(gw: Gateway, vm_id: str, serial: str, verbs: str | tuple, *, since: str = "",
                    timeout: float = VM_TIMEOUT) -> tuple[str, str, str, int | None]:
    """Wait until the guest reports a disk line with one of `verbs` about the disk whose
    serial is `serial` (a volume ID), printed after the console looked like `since`."""
    verbs = (verbs,) if isinstance(verbs, str) else verbs

    def found(text):
        return [e for e in disk_events(new_output(since, text)) if e[2] == serial and e[0] in verbs]

    text = wait_console(gw, vm_id, lambda t: bool(found(t)), f"'disk {'|'.join(verbs)} … serial={serial}'",
                        timeout)
    return found(text)[0]


def files_containing(root: Path, needle: bytes, chunk: int = 1 << 20) -> list[Path]:
    """Every regular file under `root` whose bytes contain `needle`."""
    hits = []
    for path in sorted(root.rglob("*")):
        if not path.is_file() or path.is_symlink():
            continue
        try:
            with open(path, "rb") as f:
                tail = b""
                while True:
                    block = f.read(chunk)
                    if not block:
                        break
                    if needle in tail + block:
                        hits.append(path)
                        break
                    tail = block[-(len(needle) - 1):] if len(needle) > 1 else b""
        except OSError:
            continue
    return hits


# -------------------------------------------------------------- other accounts


def outcome(fn: Callable, ids: Iterable[str], **params) -> tuple:
    """What the caller observes: ('ok', body) or ('error', status, code, type, details),
    with the RequestId dropped and the given IDs masked."""
    try:
        body = fn(**params)
    except requests.HTTPError as e:
        resp = e.response
        try:
            err = resp.json()["Errors"][0]
        except (ValueError, KeyError, IndexError):
            return ("error", resp.status_code, resp.text)
        details = err.get("Details") or ""
        for i in ids:
            details = details.replace(i, "<ID>")
        return ("error", resp.status_code, err.get("Code"), err.get("Type"), details)
    body = dict(body)
    body.pop("ResponseContext", None)
    text = json.dumps(body, sort_keys=True)
    for i in ids:
        text = text.replace(i, "<ID>")
    return ("ok", text)


def same_as_absent(fn: Callable, build: Callable[[str], dict], real_id: str, fake_id: str) -> tuple:
    """Run fn with the other account's ID and with an absent one; both answers must match."""
    theirs = outcome(fn, [real_id], **build(real_id))
    absent = outcome(fn, [fake_id], **build(fake_id))
    assert theirs == absent, f"another account's resource is distinguishable from an absent one:\n" \
                             f"  theirs: {theirs}\n  absent: {absent}"
    return theirs


def public_net(gw: Gateway, ip_range: str) -> tuple[str, str, str]:
    """A Net of `ip_range` with one subnet (its first /24) and an internet service
    linked: (NetId, SubnetId, InternetServiceId)."""
    net = gw.CreateNet(IpRange=ip_range)["Net"]["NetId"]
    first = ip_range.split("/")[0]
    subnet = gw.CreateSubnet(NetId=net, IpRange=f"{first}/24")["Subnet"]["SubnetId"]
    igw = gw.CreateInternetService()["InternetService"]["InternetServiceId"]
    gw.LinkInternetService(InternetServiceId=igw, NetId=net)
    return net, subnet, igw


def dry_run(acct: "Account", operation: str, **params) -> requests.Response:
    """The call with DryRun: true, through the raw signed client: osc-sdk-python 0.42.0
    drops DryRun from the parameters it accepts, although the API defines it."""
    return acct.raw.post(operation, {**params, "DryRun": True})


def b64(text: str | bytes) -> str:
    if isinstance(text, str):
        text = text.encode()
    return base64.b64encode(text).decode()


def md5_fingerprint(openssh_public_key: str) -> str:
    """RFC 4716 section 4: MD5 of the key blob, lowercase hex pairs joined by ':'."""
    blob = base64.b64decode(openssh_public_key.split()[1])
    digest = hashlib.md5(blob).hexdigest()
    return ":".join(digest[i:i + 2] for i in range(0, 32, 2))


QUOTA_PATTERNS = {
    "vms": r"(^|[^a-z])(vms?|instances?)([^a-z]|$)",
    "vcpus": r"cpu|core",
    "memory": r"mem|ram",
}


def quotas(gw: Gateway) -> dict:
    """{"vms"|"vcpus"|"memory": Quota} from ReadQuotas, found by name."""
    entries = [q for t in gw.ReadQuotas()["QuotaTypes"] for q in (t.get("Quotas") or [])]
    found = {}
    for what, pattern in QUOTA_PATTERNS.items():
        matches = [q for q in entries if re.search(pattern, q.get("Name", ""), re.I)]
        assert len(matches) == 1, f"expected one {what} quota in ReadQuotas, found {matches} among {entries}"
        found[what] = matches[0]
    return found


def usage(gw: Gateway) -> dict:
    """{"vms"|"vcpus"|"memory": (MaxValue, UsedValue)}"""
    return {k: (q["MaxValue"], q["UsedValue"]) for k, q in quotas(gw).items()}


@dataclass
class Account:
    """One account of the running Socle, with an SDK gateway and a raw client on it."""

    name: str
    access_key: str
    secret_key: str
    region: str
    endpoint: str
    account_id: str | None = None
    gw: Gateway = field(init=False, repr=False)
    raw: RawClient = field(init=False, repr=False)

    def __post_init__(self):
        self.gw = make_gateway(self.access_key, self.secret_key, self.region, self.endpoint)
        self.raw = RawClient(self.endpoint, self.access_key, self.secret_key, self.region)

    def gateway_with(self, access_key: str, secret_key: str) -> Gateway:
        return make_gateway(access_key, secret_key, self.region, self.endpoint)
