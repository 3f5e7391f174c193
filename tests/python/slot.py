"""A test slot, as the Rust harnesses take one (crates/socle-testkit/src/slot.rs):
a lock on ROOT/slot-NN.lock held while the suite runs, its files under
ROOT/slot-NN, its network objects named `tsNN…`. Whatever the suite leaves —
also when pytest is killed — is swept by the watcher started here
(scripts/sweep.sh --slot NN --on-eof), which holds the lock until it is done,
and again by the next holder of the slot."""

from __future__ import annotations

import fcntl
import os
import random
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SWEEP = REPO / "scripts" / "sweep.sh"
SLOTS = 64


def test_root() -> Path:
    return Path(os.environ.get("SOCLE_TEST_ROOT") or "/tmp/socle-tests")


class Slot:
    def __init__(self) -> None:
        root = test_root()
        root.mkdir(parents=True, exist_ok=True)
        start = random.randrange(SLOTS)
        for i in range(SLOTS):
            index = (start + i) % SLOTS
            fd = os.open(root / f"slot-{index:02}.lock", os.O_CREAT | os.O_RDWR, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            self.index, self._lock = index, fd
            break
        else:
            raise RuntimeError(f"all {SLOTS} test slots under {root} are held by live processes")
        env = {**os.environ, "SOCLE_TEST_ROOT": str(root)}
        swept = subprocess.run(["bash", str(SWEEP), "--slot", str(self.index)], env=env,
                               capture_output=True, text=True, timeout=120, check=True)
        if swept.stdout.strip():
            print(f"slot {self.index}: removed what an earlier test left:\n{swept.stdout}")
        self.path = root / f"slot-{self.index:02}"
        self.path.mkdir(parents=True, exist_ok=True)
        log = open(root / f"slot-{self.index:02}.sweep.log", "wb")
        # Its own session (a kill of pytest's process group spares it); it
        # inherits the lock and sweeps when its stdin closes.
        self._watcher = subprocess.Popen(
            ["bash", str(SWEEP), "--slot", str(self.index), "--on-eof"], env=env,
            stdin=subprocess.PIPE, stdout=log, stderr=log, start_new_session=True,
            pass_fds=(fd,))
        log.close()

    @property
    def net_prefix(self) -> str:
        return f"ts{self.index:02x}"

    @property
    def uplink_range(self) -> str:
        # Slot.uplink_range() of socle-testkit: the slot's /26 of 169.254.128.0/20.
        k = self.index
        return f"169.254.{128 + k // 4}.{(k % 4) * 64}/26"

    def release(self) -> None:
        """Sweeps the slot (processes naming its directory, its network
        objects, its files) and gives it back."""
        self._watcher.stdin.close()
        self._watcher.wait(timeout=120)
        os.close(self._lock)
