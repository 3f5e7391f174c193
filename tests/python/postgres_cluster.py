"""A throwaway PostgreSQL cluster for the suite (`SOCLE_TEST_DATABASE=postgres`):
Debian's server binaries, a data directory in a temp dir, a Unix socket only
(no TCP port), fsync off (a commit reaches the OS, not the disk: what
survives a server crash, not a power cut). The same recipe as the Rust tests'
`socle_store::testing::PgCluster`."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path


def _bin_dir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=lambda p: int(p.split("/")[4]))
    if not found:
        raise RuntimeError("PostgreSQL server binaries not found under /usr/lib/postgresql "
                           "(scripts/install-deps.sh installs them)")
    return Path(found[-1]).parent


class PgCluster:
    def __init__(self, under: Path | None = None) -> None:
        """A cluster in a new directory of `under` (a test slot's: its sweep then
        ends the server if pytest dies), else of the temp dir."""
        self.bin = _bin_dir()
        self.dir = Path(tempfile.mkdtemp(prefix="socle-pytest-pg-", dir=under))
        # PostgreSQL refuses to run as root: then it runs as the package's user.
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
            self.as_user = ["runuser", "-u", "postgres", "--"]
        self.proc: subprocess.Popen | None = None

    def _run(self, *cmd: str) -> None:
        res = subprocess.run([*self.as_user, *cmd], capture_output=True, text=True, timeout=120)
        if res.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed: {res.stderr or res.stdout}")

    def start(self) -> str:
        """Starts the cluster, creates database `socle`, returns its URL."""
        data = self.dir / "data"
        self._run(str(self.bin / "initdb"), "--auth=trust", "--no-sync", "--locale=C",
                  "--encoding=UTF8", "--username=postgres", "-D", str(data))
        log = open(self.dir / "server.log", "ab")
        self.proc = subprocess.Popen(
            [*self.as_user, str(self.bin / "postgres"), "-D", str(data), "-k", str(self.dir),
             "-c", "listen_addresses=", "-c", "fsync=off", "-c", "full_page_writes=off"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while True:
            res = subprocess.run([*self.as_user, str(self.bin / "pg_isready"), "-h", str(self.dir), "-q"],
                                 timeout=30)
            if res.returncode == 0:
                break
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"PostgreSQL did not start: {(self.dir / 'server.log').read_text()}")
            time.sleep(0.1)
        self._run(str(self.bin / "createdb"), "-h", str(self.dir), "-U", "postgres", "socle")
        return f"postgresql:///socle?host={self.dir}&user=postgres"

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            # SIGINT: PostgreSQL's fast shutdown (runuser passes it on).
            self.proc.send_signal(2)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        shutil.rmtree(self.dir, ignore_errors=True)
