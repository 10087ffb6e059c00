"""Machine faults: what the machine did to a run, told from what the run did.

A run's own failure (its config diverges, the user's code raises, CUDA runs out of memory for this config) is a
result: ``failed``. A fault of the machine (no space left, a quota, a read-only or vanished folder, an I/O error on
the store, the checkpoints or the W&B folder) is not: the run is ``interrupted`` (run again, no attempt spent on its
config) and the agent stops with one line naming the path, the cause in words and what to do.

Errors that wrap the cause (torch's serialization, SQLAlchemy, wandb) are unwrapped: the exception chain is searched
for an ``OSError`` of a fault's errno and for SQLite's own words for it; failing that, the run's folders are probed
(a small file written and synced in each, their free space read), since torch's zip writer reports a full disk as
``unexpected pos 24128 vs 24032``.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterable
from pathlib import Path

from ignite_sweep.errors import IgniteSweepError

CAUSES = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded",
          errno.EROFS: "read-only file system", errno.EIO: "input/output error"}  # fmt: skip
"""errnos that are the machine's whatever raised them."""

SQLITE = {"database or disk is full": errno.ENOSPC, "attempt to write a readonly database": errno.EROFS,
          "disk i/o error": errno.EIO}  # fmt: skip
LOW_SPACE = 16 << 20  # a folder with less free space than this, after a failed write, is full
PROBE = 1 << 20


class MachineFault(IgniteSweepError):
    """The machine failed a run or the agent: one line with the path, the cause in words and what to do."""

    def __init__(self, path: str | os.PathLike[str] | None, cause: str, code: int | None = None) -> None:
        self.path, self.cause, self.code = (str(path) if path else None), cause, code
        where = f"{self.path}: " if self.path else ""
        super().__init__(f"machine fault: {where}{cause}")

    def advice(self) -> str:
        """The agent's last line: what happened, what to do, and that the sweep lost nothing."""
        todo = {errno.ENOSPC: "free space there", errno.EDQUOT: "free space or raise the quota there",
                errno.EROFS: "make it writable", errno.EIO: "check the disk or the file system",
                errno.ENOENT: "put it back"}.get(
            self.code or 0, "make it writable again")  # fmt: skip
        return (f"{self} ({todo}, then run the agent again; the sweep lost nothing: a run it cut short runs "
                "again first)")


class StoreAway(MachineFault):
    """A PostgreSQL store that did not answer for the whole wait (``IGNITE_SWEEP_STORE_WAIT_S``)."""

    def advice(self) -> str:
        return (f"{self} (start it, or mend the network, then run the agent again; the sweep lost nothing: a run it "
                "cut short runs again first)")


def in_chain(exc: BaseException, folders: Iterable[str | os.PathLike[str]] = (),
             store: str | None = None) -> MachineFault | None:  # fmt: skip
    """The fault an exception carries, anywhere in its chain (``__cause__``, ``__context__``, SQLAlchemy's
    ``orig``): an ``OSError`` of a fault's errno, a permission error on a path under ``folders`` (the run's own: a
    folder that became unwritable; a missing file there may be the run's own doing, a half-written checkpoint, so it
    is not taken for the machine's), or SQLite's words for a fault (then about ``store``)."""
    ours = [os.path.abspath(f) for f in folders]
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        current = todo.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in CAUSES:
            return MachineFault(current.filename, CAUSES[current.errno], current.errno)
        if isinstance(current, OSError) and current.errno in (errno.EACCES, errno.EPERM) and isinstance(
                current.filename, str) and any(os.path.abspath(current.filename).startswith(f + os.sep)
                                               for f in ours):  # fmt: skip
            return MachineFault(current.filename, (current.strerror or str(current)).lower(), current.errno)
        text = str(current).lower()
        for words, code in SQLITE.items():
            if words in text:
                return MachineFault(store, f"{words} ({CAUSES[code]})", code)
        todo += [current.__cause__, current.__context__, getattr(current, "orig", None)]
    return None


def probe(folders: Iterable[str | os.PathLike[str]]) -> MachineFault | None:
    """Write and sync a small file in each folder (made if missing) and read its free space: the first that
    fails, as a fault."""
    for folder in folders:
        path = Path(folder)
        try:
            path.mkdir(parents=True, exist_ok=True)
            test = path / f".ignite-sweep-probe-{os.getpid()}"
            try:
                with open(test, "wb") as f:
                    f.write(b"\0" * PROBE)
                    f.flush()
                    os.fsync(f.fileno())
            finally:
                test.unlink(missing_ok=True)
            stat = os.statvfs(path)
        except OSError as exc:
            cause = CAUSES.get(exc.errno or 0) or (exc.strerror or str(exc)).lower()
            return MachineFault(path, cause, exc.errno)
        free = stat.f_bavail * stat.f_frsize
        if free < LOW_SPACE:
            return MachineFault(path, f"no space left on device ({free >> 10} KiB free)", errno.ENOSPC)
    return None


def classify(exc: BaseException, folders: Iterable[str | os.PathLike[str]],
             store: str | None = None) -> MachineFault | None:  # fmt: skip
    """The machine fault behind ``exc`` (its chain, then a probe of ``folders``), or None: the run's own failure."""
    if isinstance(exc, MachineFault):
        return exc
    if store and "://" not in store:  # a SQLite store: its folder, opened before, is gone (deleted, moved,
        folder = Path(store).parent  # unmounted), or cannot be looked at; the probe below would make it again, empty
        try:
            gone = not folder.is_dir()
        except OSError as exc:  # a dead network mount (ESTALE, ENOTCONN), EIO, EACCES
            return MachineFault(folder, CAUSES.get(exc.errno or 0) or (exc.strerror or str(exc)).lower(), exc.errno)
        if gone:
            return MachineFault(folder, "the sweep store's folder is gone (deleted, moved or unmounted)", errno.ENOENT)
    folders = list(folders)
    fault = in_chain(exc, folders, store)
    if fault is None or fault.path is None or fault.path == store:  # where, and why in the file system's words
        found = probe(folders)  # (SQLite says "disk I/O error" for a full or read-only folder)
        return found or fault
    return fault


def from_line(line: str, folders: Iterable[str | os.PathLike[str]]) -> MachineFault | None:
    """The fault a program's last error line names in the system's words ("OSError: [Errno 28] No space left on
    device"), located by a probe of ``folders`` when it can be; else a probe's finding alone."""
    text = line.lower()
    named = next((MachineFault(None, cause, code) for code, cause in CAUSES.items() if cause in text), None)
    found = probe(folders)
    return found or named


def _markers() -> Path:
    import tempfile

    return Path(os.environ.get("IGNITE_SWEEP_FAULTS_DIR") or
                Path(tempfile.gettempdir()) / f"ignite-sweep-cut-short-{os.getuid()}")  # fmt: skip


def mark_cut_short(run_id: str, line: str) -> None:
    """A run cut short by a fault whose end its store could not take (full, away): a note on this machine, so that
    the next agent here records it ``interrupted`` (no attempt spent) rather than finding it ``crashed``."""
    try:
        folder = _markers()
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        (folder / run_id).write_text(line)
    except OSError:  # the temp folder too: the run is found crashed instead, and retried
        pass


def cut_short_runs(max_age_s: float = 7 * 86400) -> dict[str, str]:
    """{run id: its fault} noted on this machine (notes older than ``max_age_s`` are dropped)."""
    import time

    found = {}
    try:
        for note in _markers().iterdir():
            try:
                if time.time() - note.stat().st_mtime > max_age_s:
                    note.unlink()
                else:
                    found[note.name] = note.read_text()
            except OSError:
                continue
    except OSError:
        pass
    return found


def forget_cut_short(run_id: str) -> None:
    try:
        (_markers() / run_id).unlink()
    except OSError:
        pass

