"""A run's whole process tree ends with it, whatever dies: a keeper process between the supervisor and the program.

A program's own children (multiprocessing workers, DataLoader workers, a cross-validation fan-out) do not die with
it: after ``kill -9`` of an agent its program died (``PR_SET_PDEATHSIG``) and they ran on with ppid 1, holding
memory and GPUs. The supervisor therefore starts the program through a keeper, a small forked process that is the
program's parent and:

- lives in a process group of its own, outside the agent's: a ``kill -9`` of the agent, of its process group
  (a terminal's job) or of its supervisor leaves the keeper to clean up;
- is a child subreaper (``PR_SET_CHILD_SUBREAPER``): a descendant whose parent dies becomes its child, so it sees
  the whole tree, processes that left the program's group or session included;
- kills every descendant (SIGKILL, then reaps them) when the program's main process has ended (after a grace of
  ``IGNITE_SWEEP_KEEPER_GRACE_S``, 10 s, for what ends by itself: the program's wandb service finishing the run's
  file), at once when its supervisor dies (``PR_SET_PDEATHSIG`` = SIGUSR1) or asks (SIGUSR1);
- then ends as the program's main process ended (its exit code, or its signal), so the supervisor reads the
  program's own exit.

The supervisor's stops are unchanged: SIGTERM, then SIGKILL, to the program's process group. Linux only (elsewhere
the program is started directly). What only a cgroup could do: a ``kill -9`` of the keeper itself (or of every
process of the session at once) leaves descendants that left the session.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

from ignite_sweep.execution.process import PR_SET_CHILD_SUBREAPER, libc_prctl, parent_death_signal

TEARDOWN = signal.SIGUSR1
GRACE_S = 10.0


def available() -> bool:
    return sys.platform.startswith("linux") and os.path.isdir("/proc/self")


def descendants(root: int) -> list[int]:
    """Every live (not zombie) process below ``root``, from ``/proc``."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:  # gone meanwhile
            continue
        fields = stat[stat.rfind(b")") + 2 :].split()
        if len(fields) > 1 and fields[0] != b"Z":
            children.setdefault(int(fields[1]), []).append(int(name))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), ()):
            found.append(child)
            todo.append(child)
    return found


def _reap() -> None:
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass


def grace_s() -> float:
    """How long what a program leaves may finish on its own after it ended (``IGNITE_SWEEP_KEEPER_GRACE_S``, 10 s):
    its wandb service (a session of its own) writes the end of the run's ``.wandb`` file then."""
    try:
        return float(os.environ.get("IGNITE_SWEEP_KEEPER_GRACE_S", GRACE_S))
    except ValueError:
        return GRACE_S


def let_finish(timeout_s: float) -> None:
    """Wait up to ``timeout_s`` for this process's descendants to end by themselves, reaping them."""
    deadline = time.monotonic() + timeout_s
    while descendants(os.getpid()) and time.monotonic() < deadline:
        _reap()
        time.sleep(0.05)
    _reap()


def end_tree(timeout_s: float = 5.0) -> None:
    """SIGKILL every descendant of this process until none is left (orphans come to us as they are freed)."""
    me, deadline = os.getpid(), time.monotonic() + timeout_s
    while True:
        pids = descendants(me)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        _reap()
        if not pids or time.monotonic() > deadline:
            return
        time.sleep(0.01)


def _end_as(status: int) -> None:
    """Exit as a process with wait status ``status`` did: its code, or killed by its signal."""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        import resource

        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # the program's crash, not the keeper's core dump
        with contextlib.suppress(OSError, ValueError):
            signal.signal(sig, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, [sig])
        os.kill(os.getpid(), sig)
        os._exit(128 + sig)
    os._exit(os.WEXITSTATUS(status))


def _teardown(_signum: int, _frame: object) -> None:
    end_tree()
    os.kill(os.getpid(), signal.SIGKILL)


class Kept:
    """A program started under a keeper; answers as a ``Popen`` does. ``pid`` is the program's (its process group
    is the one stops go to); ``keeper`` the keeper's, which the supervisor waits for."""

    def __init__(self, launch: Callable[[], Any]) -> None:
        """``launch`` runs in the keeper, starts the program and returns its handle (a ``Popen``: kept, so that
        its finalizer never reaps the program before the keeper does); an ``OSError`` it raises (no such program,
        say) is raised here."""
        prctl, arm = libc_prctl(), parent_death_signal(TEARDOWN)
        assert prctl is not None, "the keeper is Linux's (keeper.available())"
        parent = os.getpid()
        read_end, write_end = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        keeper = os.fork()
        if keeper == 0:
            os.close(read_end)
            code = 1
            try:
                os.setpgid(0, 0)
                for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # meant for the agent or the program
                    signal.signal(sig, lambda *_: None)
                signal.signal(TEARDOWN, _teardown)
                prctl(PR_SET_CHILD_SUBREAPER, 1)
                arm()
                if os.getppid() != parent:  # the supervisor died before the keeper was armed
                    os._exit(1)
                try:
                    program = launch()
                    pid = program.pid
                except Exception as exc:  # noqa: BLE001 - no such program, a bad argument: the supervisor says so
                    error = {"errno": exc.errno, "strerror": exc.strerror, "filename": exc.filename} if isinstance(
                        exc, OSError) else {"text": f"{type(exc).__name__}: {exc}"}  # fmt: skip
                    os.write(write_end, json.dumps(error).encode() + b"\n")
                    os._exit(127)
                os.write(write_end, json.dumps({"pid": pid}).encode() + b"\n")
                os.close(write_end)
                while True:  # reap what comes to us as a subreaper, until the program's main process ends
                    done, status = os.waitpid(-1, 0)
                    if done == pid:
                        break
                let_finish(grace_s())  # its wandb service finishing the run's file, workers shutting down
                end_tree()
                _end_as(status)
            except BaseException:  # noqa: BLE001 - the keeper must never return into the supervisor's code
                import traceback

                traceback.print_exc()
                with contextlib.suppress(BaseException):
                    end_tree()
            finally:
                os._exit(code)
        os.close(write_end)
        try:  # one line (a forked function inherits the pipe: no EOF until it ends)
            answer = b""
            while not answer.endswith(b"\n") and (chunk := os.read(read_end, 65536)):
                answer += chunk
        finally:
            os.close(read_end)
        started = json.loads(answer or b"{}")
        self.keeper = keeper
        self.returncode: int | None = None
        if "pid" not in started:
            self._wait(0)
            if started.get("errno") is not None:
                raise OSError(started["errno"], started["strerror"], started["filename"])
            raise OSError(started.get("text") or "its keeper process ended before starting it")
        self.pid: int = started["pid"]

    def _wait(self, flags: int) -> int | None:
        if self.returncode is None:
            with contextlib.suppress(ChildProcessError):
                done, status = os.waitpid(self.keeper, flags)
                if done:
                    self.returncode = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
        return self.returncode

    def poll(self) -> int | None:
        return self._wait(os.WNOHANG)

    def send_signal(self, sig: int) -> None:
        """What a stop sends when the program's process group is gone: never to its pid (the keeper may have reaped
        it, and the pid may be another process's by now); a SIGKILL ends the whole tree through the keeper."""
        if sig == signal.SIGKILL:
            self.teardown()

    def teardown(self) -> None:
        """Kill the whole tree now (the supervisor is going down)."""
        if self.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.keeper, TEARDOWN)
