"""Run a command in a real pseudo-terminal (stdin, stdout and stderr all a tty, with a window size), as a
user's shell would: code that checks isatty() takes its terminal path."""

from __future__ import annotations

import fcntl
import os
import select
import struct
import subprocess
import termios
import time


def run_in_pty(args: list[str], timeout: float = 300, cols: int = 120, rows: int = 40,
               env: dict[str, str] | None = None) -> tuple[int, str]:  # fmt: skip
    """(exit code, everything the terminal received). The window has a size, as a real one does: tqdm
    draws nothing in a 0-column terminal."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    # The window's size is the terminal's, as in a user's shell: COLUMNS/LINES from the test runner (pytest-xdist's
    # workers set 80x24) would override it for rich and tqdm.
    env = {k: v for k, v in (env or os.environ).items() if k not in ("COLUMNS", "LINES")}
    process = subprocess.Popen(
        args, stdin=slave, stdout=slave, stderr=slave, env=env, start_new_session=True,
    )  # fmt: skip
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while True:
            if time.monotonic() > deadline:
                process.kill()
                raise TimeoutError(f"{args} did not finish in {timeout}s:\n{b''.join(chunks).decode(errors='replace')}")
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: every holder of the terminal's slave side has exited
                    data = b""
                if not data:
                    break
                chunks.append(data)
            elif process.poll() is not None and not select.select([master], [], [], 0.2)[0]:
                break
        code = process.wait(timeout=30)
    finally:
        os.close(master)
    return code, b"".join(chunks).decode(errors="replace")
