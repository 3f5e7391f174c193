"""Session fixtures: one `socle up` for the whole run, its default account, and a
factory for more accounts (`socle account create`).

Environment:
  SOCLE_BIN            the socle binary (default: <repo>/target/debug/socle)
  SOCLE_START_TIMEOUT  seconds to wait for the first readiness (default 600: the
                       first start builds the guest image)
  SOCLE_VM_TIMEOUT     seconds to wait for a VM state change (default 120)
  SOCLE_TEST_DATABASE  `postgres`: the cloud keeps its state in a throwaway
                       PostgreSQL cluster the suite starts (default: SQLite)
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))

from socle_lib import IMAGE_NAME, Account, delete_all_storage, delete_all_vms  # noqa: E402
from postgres_cluster import PgCluster  # noqa: E402
from slot import Slot  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT = float(os.environ.get("SOCLE_START_TIMEOUT", "600"))
STOP_TIMEOUT = 60.0

# The SDK merges OSC_* variables and ~/.osc/config.json into every Gateway: keep the
# tester's own settings out of the run, so that only what the tests pass is used.
for _k in [k for k in os.environ if k.startswith("OSC_")]:
    del os.environ[_k]
_osc_cfg_dir = tempfile.mkdtemp(prefix="socle-osc-config-")
with open(os.path.join(_osc_cfg_dir, "config.json"), "w") as _f:
    json.dump({"default": {}}, _f)
os.environ["OSC_CONFIG_FILE"] = os.path.join(_osc_cfg_dir, "config.json")

_SERVER: "SocleServer | None" = None


def socle_binary() -> Path:
    env = os.environ.get("SOCLE_BIN")
    return Path(env) if env else REPO / "target" / "debug" / "socle"


def die_with_parent() -> None:
    """In the child: SIGKILL when pytest dies, however it dies."""
    import ctypes
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def qemu_processes(marker: str) -> list[tuple[int, str]]:
    """(pid, command line) of every qemu-system process whose command line contains marker."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode("utf-8", "replace")
        except OSError:
            continue
        if "qemu-system" in cmd and marker in cmd:
            found.append((int(entry), cmd))
    return found


def remove_networks(prefix: str, data_dir: Path) -> list[str]:
    """Removes what a stopped `socle up` with network prefix `prefix` left on the
    host, as the Rust TestCloud's remove_networks() does through the driver: its
    dnsmasq processes, namespaces (`<prefix>-<net>`, with their bridges, taps and
    tables), root-namespace interfaces (`<prefix>…`: uplink veths, taps) and
    root nftables tables (`inet <prefix>_<net>`). Returns what it removed."""
    removed = []
    state = f"--conf-file={data_dir / 'net'}/"
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                args = f.read().decode("utf-8", "replace").split("\0")
        except OSError:
            continue
        if any(a.startswith(state) for a in args):
            try:
                os.kill(int(entry), signal.SIGKILL)
                removed.append(f"dnsmasq {entry}")
            except ProcessLookupError:
                pass

    def run(*cmd: str) -> str:
        return subprocess.run(cmd, capture_output=True, text=True).stdout

    for line in run("ip", "netns", "list").splitlines():
        ns = line.split()[0] if line.split() else ""
        if ns.startswith(f"{prefix}-"):
            run("ip", "netns", "delete", ns)
            removed.append(f"namespace {ns}")
    # After the namespaces: a tap that was in one may be back in the root namespace.
    for line in run("ip", "-o", "link", "show").splitlines():
        parts = line.split(":")
        name = parts[1].strip().split("@")[0] if len(parts) > 1 else ""
        if name.startswith(prefix):
            run("ip", "link", "del", name)
            removed.append(f"interface {name}")
    for line in run("nft", "list", "tables", "inet").splitlines():
        table = line.strip().removeprefix("table inet ").strip()
        if table.startswith(f"{prefix}_"):
            run("nft", "delete", "table", "inet", table)
            removed.append(f"nftables table inet {table}")
    return removed


class SocleServer:
    def __init__(self, binary: Path, slot: Slot, log_path: Path, extra_args: tuple[str, ...] = ()):
        self.binary = binary
        self.extra_args = list(extra_args)
        self.slot = slot
        self.data_dir = slot.path / "data"
        self.data_dir.mkdir()
        self.log_path = log_path
        self.port = free_port()
        self.listen = f"127.0.0.1:{self.port}"
        self.net_prefix = slot.net_prefix
        self.proc: subprocess.Popen | None = None
        self.credentials: dict = {}
        self.accounts: list[Account] = []

    # -- process -------------------------------------------------------------
    def start(self) -> None:
        self._log = open(self.log_path, "ab")
        # The slot's network prefix and uplink range: a `socle up` of the
        # tester (prefix "socle") or a test running beside never shares them.
        cmd = [str(self.binary), "up", "--data-dir", str(self.data_dir),
               "--listen", self.listen, "--accel", "tcg",
               "--net-prefix", self.net_prefix,
               "--uplink-range", self.slot.uplink_range, *self.extra_args]
        self._log.write(f"$ {' '.join(cmd)}\n".encode())
        self._log.flush()
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self._log,
                                     stderr=subprocess.STDOUT, cwd=str(self.data_dir.parent),
                                     preexec_fn=die_with_parent)

    def remove_networks(self) -> None:
        """After the server stopped: removes what its network prefix left on
        the host (networks still being removed when it stopped, or all of them
        after a crash), noting it in the server log."""
        removed = remove_networks(self.net_prefix, self.data_dir)
        if removed:
            with open(self.log_path, "a") as log:
                log.write(f"teardown: removed what `socle up` left: {', '.join(removed)}\n")

    def log_tail(self, lines: int = 60) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError as e:
            return f"(no log: {e})"
        text = re.sub(r"\x1b\[[0-9;]*m", "", text)  # drop the log's colours
        return "\n".join(text.splitlines()[-lines:])

    def _fail(self, msg: str):
        pytest.fail(f"{msg}\n--- last lines of {self.log_path} ---\n{self.log_tail()}", pytrace=False)

    def wait_ready(self) -> None:
        cred_path = self.data_dir / "credentials.json"
        deadline = time.monotonic() + START_TIMEOUT
        last = "credentials.json not written yet"
        while time.monotonic() < deadline:
            code = self.proc.poll()
            if code is not None:
                self._fail(f"`socle up` exited with status {code} before becoming ready")
            if cred_path.exists():
                try:
                    creds = json.loads(cred_path.read_text())
                    endpoint = creds["Endpoint"]
                    r = requests.post(f"{endpoint.rstrip('/')}/ReadRegions", data=b"{}",
                                      headers={"Content-Type": "application/json"}, timeout=5)
                    if r.status_code == 200:
                        self.credentials = creds
                        return
                    last = f"unsigned ReadRegions answered HTTP {r.status_code}: {r.text[:300]}"
                except (ValueError, KeyError, OSError, requests.RequestException) as e:
                    last = f"not ready: {e!r}"
            time.sleep(0.5)
        self._fail(f"`socle up` not ready after {START_TIMEOUT:.0f}s ({last})")

    def stop(self) -> list[str]:
        problems = []
        if self.proc is None:
            return problems
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                problems.append(f"`socle up` still running {STOP_TIMEOUT:.0f}s after SIGTERM: killed")
                self.proc.kill()
                self.proc.wait(timeout=30)
        else:
            problems.append(f"`socle up` had already exited with status {self.proc.returncode}")
        self._log.close()
        return problems

    # -- CLI -----------------------------------------------------------------
    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        cmd = [str(self.binary), *args, "--data-dir", str(self.data_dir)]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if res.returncode != 0:
            pytest.fail(f"`{' '.join(cmd)}` failed with status {res.returncode}\n"
                        f"stdout: {res.stdout}\nstderr: {res.stderr}")
        return res

    def create_account_raw(self, name: str) -> dict:
        res = self.cli("account", "create", name)
        try:
            return json.loads(res.stdout)
        except ValueError:
            pytest.fail(f"`socle account create {name}` did not print JSON: {res.stdout!r}")

    def create_account(self, name: str) -> Account:
        info = self.create_account_raw(name)
        acct = Account(name=name, access_key=info["AccessKey"], secret_key=info["SecretKey"],
                       region=info["Region"], endpoint=info["Endpoint"],
                       account_id=info.get("AccountId"))
        self.accounts.append(acct)
        return acct

    def set_quota(self, name: str, *, max_vms: int | None = None, max_vcpus: int | None = None,
                  max_memory_gib: int | None = None) -> None:
        args = ["account", "quota", name]
        if max_vms is not None:
            args += ["--max-vms", str(max_vms)]
        if max_vcpus is not None:
            args += ["--max-vcpus", str(max_vcpus)]
        if max_memory_gib is not None:
            args += ["--max-memory-gib", str(max_memory_gib)]
        self.cli(*args)


@pytest.fixture(scope="session")
def socle(tmp_path_factory):
    """One `socle up` for the whole session."""
    global _SERVER
    binary = socle_binary()
    if not (binary.is_file() and os.access(binary, os.X_OK)):
        pytest.fail(f"socle binary not found or not executable at {binary}: build it "
                    f"(cargo build -p socle) or point SOCLE_BIN at it", pytrace=False)
    slot = Slot()
    base = slot.path
    engine = os.environ.get("SOCLE_TEST_DATABASE", "sqlite")
    cluster = None
    if engine == "postgres":
        cluster = PgCluster(under=slot.path)
        # Read by `socle up` and by every `socle account …` the tests run.
        os.environ["SOCLE_DATABASE"] = cluster.start()
        print(f"\nstate in PostgreSQL ({cluster.dir})")
    elif engine != "sqlite":
        pytest.fail(f"SOCLE_TEST_DATABASE must be sqlite or postgres, not {engine!r}", pytrace=False)
    server = SocleServer(binary, slot, base / "socle.log")
    data_dir = server.data_dir
    _SERVER = server
    server.start()
    try:
        server.wait_ready()
    except BaseException:
        server.stop()
        for pid, _cmd in qemu_processes(str(data_dir)):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        server.remove_networks()
        _SERVER = None
        if cluster:
            cluster.stop()
        slot.release()
        raise
    creds = server.credentials
    server.default_account = Account(
        name="default", access_key=creds["AccessKey"], secret_key=creds["SecretKey"],
        region=creds["Region"], endpoint=creds["Endpoint"])
    server.accounts.append(server.default_account)
    server.endpoint = creds["Endpoint"]
    server.region = creds["Region"]

    yield server

    # Teardown: delete every VM of every account the tests used and wait until they
    # are terminated, then SIGTERM the server; no QEMU process of ours may remain,
    # and nothing of its network prefix either.
    problems = []
    server_alive = server.proc.poll() is None
    if server_alive:
        for acct in server.accounts:
            for p in delete_all_vms(acct.gw):
                problems.append(f"account {acct.name}: {p}")
    deadline = time.monotonic() + 5
    while True:
        before_stop = qemu_processes(str(data_dir))
        if not before_stop or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    if server_alive and before_stop and not problems:
        problems.append(f"every VM is terminated but QEMU processes remain: "
                        f"{[(p, c[:200]) for p, c in before_stop]}")
    problems += server.stop()
    deadline = time.monotonic() + 10
    while True:
        leftovers = qemu_processes(str(data_dir))
        if not leftovers or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    for pid, cmd in leftovers:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        problems.append(f"QEMU process {pid} left after `socle up` stopped (killed): {cmd[:300]}")
    # With QEMU gone (its taps with it): the networks the prefix left.
    server.remove_networks()
    _SERVER = None
    if cluster:
        cluster.stop()
    if problems:
        # Keep the log for the report below; the next holder of the slot sweeps it.
        import shutil
        kept = Path(tempfile.gettempdir()) / f"socle-python-suite-{os.getpid()}.log"
        shutil.copy(server.log_path, kept)
        server.log_path = kept
    slot.release()
    if problems:
        pytest.fail("session teardown:\n  " + "\n  ".join(problems)
                    + f"\n--- last lines of {server.log_path} ---\n{server.log_tail()}",
                    pytrace=False)


@pytest.fixture(scope="session")
def default_account(socle) -> Account:
    return socle.default_account


@pytest.fixture(scope="session")
def gw(default_account):
    """The official SDK Gateway on the default account."""
    return default_account.gw


@pytest.fixture(scope="session")
def new_account(socle):
    """Factory: new_account("prefix") -> Account with its own Gateway (socle account create)."""
    counter = iter(range(1, 10_000))

    def make(prefix: str = "acct") -> Account:
        name = f"{prefix}-{os.getpid()}-{next(counter)}"
        return socle.create_account(name)

    return make


@pytest.fixture(scope="session")
def tiny_image(gw) -> dict:
    images = gw.ReadImages(Filters={"ImageNames": [IMAGE_NAME]}).get("Images") or []
    assert len(images) == 1, f"ReadImages ImageNames=[{IMAGE_NAME}] gave {images}"
    return images[0]


@pytest.fixture(scope="session")
def image_id(tiny_image) -> str:
    return tiny_image["ImageId"]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed and _SERVER is not None:
        report.sections.append(("socle log (tail)", _SERVER.log_tail(30)))


@pytest.fixture(scope="module")
def subregion(socle):
    return f"{socle.region}a"


@pytest.fixture(scope="module")
def storage_accounts(new_account):
    """Factory of accounts whose VMs, volumes and snapshots are all deleted (and
    checked gone) when the module ends."""
    made = []

    def make(prefix: str):
        acct = new_account(prefix)
        made.append(acct)
        return acct

    yield make
    problems = []
    for acct in made:
        problems += delete_all_vms(acct.gw)
        problems += delete_all_storage(acct.gw)
    assert not problems, problems
