"""A throwaway PostgreSQL server for the tests, from Debian's ``postgresql`` package (``initdb``, ``pg_ctl``).

``python3 tests/pg_server.py start DIR`` prints ``IGNITE_SWEEP_TEST_POSTGRES=postgresql://...`` (for ``.ci/run``);
``stop DIR`` stops it. The tests' ``postgres_url`` fixture uses that variable, or starts a server itself. As root
(CI containers), the server runs as the ``postgres`` user, as PostgreSQL requires. No dependencies.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path


def _bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


def available() -> bool:
    return bool(_bin("initdb") and _bin("pg_ctl"))


def _as_server_user(args: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return args
    runuser = shutil.which("runuser")
    return [runuser, "-u", "postgres", "--", *args] if runuser else ["su", "postgres", "-c", " ".join(args)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(root: Path) -> str:
    """Start a server with its data in ``root``; returns its URL (user postgres, trust auth, 127.0.0.1)."""
    root = Path(root).resolve()
    data = root / "data"
    root.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    if not (data / "PG_VERSION").exists():
        subprocess.run(_as_server_user([_bin("initdb"), "-D", str(data), "-U", "postgres", "-A", "trust",
                                        "--no-sync", "-E", "UTF8"]), check=True, capture_output=True)  # fmt: skip
    port = _free_port()
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
    (root / "options").write_text(options)
    _start(root)
    url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return url
        time.sleep(0.2)
    raise RuntimeError(f"PostgreSQL did not start: see {root / 'server.log'}")


def _start(root: Path) -> None:
    subprocess.run(_as_server_user([_bin("pg_ctl"), "-D", str(root / "data"), "-l", str(root / "server.log"), "-o",
                                    (root / "options").read_text(), "-w", "-t", "60", "start"]),
                   check=True, capture_output=True)  # fmt: skip


def pause(root: Path, seconds: float) -> None:
    """Stop the server (fast: sessions are cut), wait, start it again on the same port (a restart, an upgrade)."""
    root = Path(root).resolve()
    stop(root)
    time.sleep(seconds)
    _start(root)


def restart(root: Path) -> None:
    """Start a server ``stop`` stopped, on the same port."""
    _start(Path(root).resolve())


def stop(root: Path) -> None:
    data = Path(root).resolve() / "data"
    if (data / "postmaster.pid").exists():
        subprocess.run(_as_server_user([_bin("pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"]),
                       check=False, capture_output=True)  # fmt: skip


if __name__ == "__main__":
    command, folder = sys.argv[1], Path(sys.argv[2])
    if command == "start":
        print(f"IGNITE_SWEEP_TEST_POSTGRES={start(folder)}")
    else:
        stop(folder)
