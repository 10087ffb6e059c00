"""The keeper a program starts under (Linux): the supervisor reads the program's own exit, and nothing the program
started outlives it."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from ignite_sweep.execution.keeper import Kept, available

pytestmark = pytest.mark.skipif(not available(), reason="the keeper is Linux's (subreaper, /proc)")


def ended(kept: Kept, timeout: float = 30) -> int:
    deadline = time.monotonic() + timeout
    while (code := kept.poll()) is None:
        assert time.monotonic() < deadline, "the kept program did not end"
        time.sleep(0.02)
    return code


def python(code: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code])


def test_the_supervisor_reads_the_programs_exit_and_what_it_left_is_killed(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("IGNITE_SWEEP_KEEPER_GRACE_S", "0.5")  # what it leaves may end by itself first
    assert ended(Kept(lambda: python("import sys; sys.exit(3)"))) == 3
    assert ended(Kept(lambda: python("import os, signal; os.kill(os.getpid(), signal.SIGTERM)"))) == -15
    leaves = ("import os, subprocess, sys\n"  # a process in a session of its own that ignores SIGTERM, left behind
              "p = subprocess.Popen(['sh', '-c', 'trap \"\" TERM; sleep 600'], start_new_session=True)\n"
              f"open({str(tmp_path / 'pid')!r}, 'w').write(str(p.pid))\n")  # fmt: skip
    kept = Kept(lambda: python(leaves))
    assert ended(kept) == 0
    left = int((tmp_path / "pid").read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(left, 0)  # killed and reaped by the keeper


def test_a_program_that_cannot_start_is_the_error_popen_gives() -> None:
    with pytest.raises(FileNotFoundError, match="no-such-program-here"):
        Kept(lambda: subprocess.Popen(["no-such-program-here"]))
