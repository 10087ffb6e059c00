"""Agent processes: each run trains in its own forked child; signals stop runs gracefully.

The agent process imports torch, Ignite and wandb once (and starts the wandb service) but never touches
CUDA, so forking a child per run is cheap and a crash, OOM or segfault ends only that child.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from ignite_sweep.states import interruption  # noqa: F401 - where runs and the W&B backend have found it

RUN_IMPORTS = (
    "torch",
    "ignite.engine",
    "ignite.handlers",
    "ignite.metrics",
    "ignite_sweep.training.data",
    "ignite_sweep.training.models",
    "ignite_sweep.training.train",
    "ignite_sweep.training.wandb_logging",
)
"""What a run imports (train() imports lazily, so that ``ignite-sweep --help`` stays instant)."""


def warm_up(*modules: str) -> None:
    """Pay the one-time costs once, in the agent, so that every forked run starts fast.

    Starts the wandb service the children share and, while it starts (a second, in another process),
    imports what a run imports (``RUN_IMPORTS``, and torch._dynamo through torch's optimizers) and
    ``modules`` (the backend's own). Never touches CUDA: a forked child must be free to initialise it.
    """
    import importlib
    import warnings

    import wandb

    service = threading.Thread(target=wandb.setup, name="ignite-sweep-wandb-setup", daemon=True)
    service.start()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. the sweep engine's pydantic v1-style config
        for name in RUN_IMPORTS:
            importlib.import_module(name)
        import torch

        dummy = [torch.nn.Parameter(torch.zeros(1))]
        for optimizer in (torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW):
            optimizer(dummy, lr=0.1)  # the first optimizer imports torch._dynamo (about a second)
        for name in modules:
            importlib.import_module(name)
        _warm_up_wandb_init()
    service.join()
    wandb.setup()  # started above; raises here if the service failed to start


def _warm_up_wandb_init() -> None:
    """Do once what every ``wandb.init`` would do again in each forked run (measured: 0.35 s -> 0.07 s).

    ``wandb.init`` imports its launch-inputs module (W&B's public API, about 60 pydantic models: 0.25 s)
    and lists the installed packages for the run's requirements.txt by parsing every distribution's
    metadata (0.07 s). Import the one here and list the other once; the runs still save requirements.
    """
    import wandb.util

    with contextlib.suppress(ImportError):  # where wandb moved them, runs just pay the imports themselves
        import wandb.sdk.artifacts._internal_artifact  # noqa: F401 - the model artifact at the run's end
        import wandb.sdk.launch.inputs.internal  # noqa: F401
    working_set = getattr(wandb.util, "working_set", None)
    if callable(working_set):
        installed = list(working_set())
        wandb.util.working_set = lambda: iter(installed)


EVENT_PREFIX = "@@ignite-sweep "


def emit(event: dict) -> None:
    """Tell the agent pool what happens (one JSON line on stdout); silent outside a pool."""
    if os.environ.get("IGNITE_SWEEP_EVENTS") == "1":
        import json

        line = json.dumps({**event, "slot": os.environ.get("IGNITE_SWEEP_SLOT")}, default=str)
        sys.stdout.write(f"{EVENT_PREFIX}{line}\n")
        sys.stdout.flush()


PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36


def libc_prctl() -> Callable[..., int] | None:
    """Linux's ``prctl`` (None elsewhere), looked up now so that calling it is safe between fork and exec."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        return ctypes.CDLL("libc.so.6", use_errno=True).prctl
    except OSError:
        return None


def parent_death_signal(sig: int = signal.SIGKILL) -> Callable[[], bool]:
    """A call that makes the calling process receive ``sig`` (SIGKILL: die) when its parent dies (Linux; elsewhere
    it does nothing and says False)."""
    prctl = libc_prctl()

    def arm() -> bool:
        if prctl is None:
            return False
        prctl(PR_SET_PDEATHSIG, sig)
        return True

    return arm


def die_with_parent() -> None:
    """Linux: the run dies (SIGKILL) if its agent dies, instead of running on as an orphan; its run is
    then found crashed (its pid is gone) and offered again."""
    parent_death_signal()()


def set_threads() -> None:
    """Apply IGNITE_SWEEP_THREADS (torch intra-op threads of a run) where the process default differs.

    A pool slot gets its share of the cores through OMP_NUM_THREADS, set before its process starts (so
    nothing changes here): calling torch.set_num_threads(n > 1) in a forked child was measured to leave
    the run on one busy core at a third of the speed.
    """
    threads = os.environ.get("IGNITE_SWEEP_THREADS")
    if threads and "torch" in sys.modules:  # a program's supervisor never imports torch for it
        import torch

        if torch.get_num_threads() != int(threads):
            torch.set_num_threads(int(threads))


THREAD_VARIABLES = ("OMP_NUM_THREADS", "IGNITE_SWEEP_THREADS", "MKL_NUM_THREADS")


def agents_on_this_machine(folder: str | None = None) -> tuple[int, Any]:
    """Register this agent on this machine and count the other live ones: each agent holds an exclusive
    ``flock`` on a file named by its pid in a per-user folder under the temp directory (the lock goes when its
    process dies, ``kill -9`` too; a file no one holds is removed). Returns (others, the file to keep open)."""
    import fcntl
    import tempfile
    from pathlib import Path

    where = Path(folder or os.environ.get("IGNITE_SWEEP_AGENTS_DIR")
                 or Path(tempfile.gettempdir()) / f"ignite-sweep-agents-{os.getuid()}")  # fmt: skip
    try:
        where.mkdir(mode=0o700, parents=True, exist_ok=True)
        own = open(where / str(os.getpid()), "w")  # noqa: SIM115 - held for the agent's life
        fcntl.flock(own, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:  # a read-only or odd temp dir: no count, no warning
        return 0, None
    others = 0
    for path in where.iterdir():
        if path.name == str(os.getpid()):
            continue
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            others += 1  # held: its agent is alive
        except OSError:
            pass
        else:
            with contextlib.suppress(OSError):
                path.unlink()  # its agent is gone
        finally:
            os.close(fd)
    return others, own


def shared_cores_warning(others: int) -> str | None:
    """A one-line warning when other agents run on this machine and this one's runs would take every core
    (torch's default: no thread count set). Their OpenMP threads then fight over the cores: on 2 cores, two
    agents took 64 s for a 6-run grid against 9.3 s with one thread each."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if others == 0 or cores < 2 or any(os.environ.get(k) for k in THREAD_VARIABLES):
        return None
    share = max(1, cores // (others + 1))
    return (f"{others} other ignite-sweep agent{'s' if others > 1 else ''} on this machine: each agent's runs take "
            f"all {cores} cores and they slow each other down; start them as one `agent --workers {others + 1}` "
            f"(it splits the cores), or give each OMP_NUM_THREADS={share}")


def run_ending() -> None:
    """Called in a run's process once training has ended, before its end is recorded: a SIGTERM from now on is
    ignored. After a Ctrl-C the agent stops its run with a SIGTERM too (W&B's agent, Interrupts), and one that
    came after training met the default action and killed the run before its end was written. The agent waits
    for the run; a second Ctrl-C there kills it (SIGKILL)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, signal.SIG_IGN)


class SharedNote:
    """A line a forked run leaves for its agent (an anonymous shared page, as ``Interrupts``): how a machine fault
    ended it, when the store it would record that in is the thing that failed."""

    SIZE = 4096

    def __init__(self) -> None:
        import mmap

        self._page = mmap.mmap(-1, self.SIZE)

    def write(self, text: str) -> None:
        data = text.encode("utf-8", "replace")[: self.SIZE - 1]
        self._page[: len(data) + 1] = data + b"\0"

    def take(self) -> str:
        """The line left since the last call ("" if none), cleared."""
        text = bytes(self._page[: self.SIZE]).split(b"\0", 1)[0].decode("utf-8", "replace")
        self._page[:1] = b"\0"
        return text


@dataclass
class ChildExit:
    code: int | None  # exit code, None when killed by a signal
    signal: int | None
    released: int | None = None  # the pid of a child that released its agent and finishes on its own (reap it)

    @property
    def ok(self) -> bool:
        return self.code == 0

    def describe(self) -> str:
        if self.signal is not None:
            return f"process killed by {signal.Signals(self.signal).name}"
        return f"process exited with code {self.code}"


class Interrupts:
    """First SIGINT/SIGTERM/SIGHUP: stop gracefully (children get SIGTERM); second: kill the children.

    ``interrupted()`` is shared with forked children (an anonymous shared page, set before they are
    signalled): a run that stops because its agent was interrupted is recorded ``interrupted`` (unfinished
    work, run again by the next agent), not ``stopped`` (a result)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def __init__(self) -> None:
        import mmap

        self.count = 0
        self.children: set[int] = set()
        self._shared = mmap.mmap(-1, 1)  # MAP_SHARED | MAP_ANONYMOUS: a forked child sees the parent's writes

    @property
    def requested(self) -> bool:
        return self.count > 0

    def interrupted(self) -> bool:
        """True once the agent was interrupted; true in its forked children too."""
        return self._shared[0] == 1

    def _handle(self, signum: int, _frame: object) -> None:
        self._shared[0] = 1
        self.count += 1
        sig = signal.SIGTERM if self.count == 1 else signal.SIGKILL
        for pid in list(self.children):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        if self.count == 1:
            print("stopping: running runs end gracefully (Ctrl-C again to kill them)", file=sys.stderr)

    @contextmanager
    def installed(self) -> Iterator[Interrupts]:
        with handlers_installed(self.SIGNALS, self._handle):
            yield self


@contextmanager
def handlers_installed(signals: tuple[int, ...], handler: Callable[[int, Any], None]) -> Iterator[None]:
    """``handler`` for ``signals`` while the block runs, the previous handlers back after it (main thread only:
    elsewhere Python cannot install handlers, and nothing changes)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in signals}
    for s in signals:
        signal.signal(s, handler)
    try:
        yield
    finally:
        for s, before in previous.items():
            signal.signal(s, before)


_release_fd: int | None = None  # in a run's child started with ``release``: where ``release_agent`` writes


def release_agent() -> None:
    """In a run's child, once its end is recorded: let the agent go on (claim and start the next run) while this
    process finishes what is left (its wandb run, its exit). Nothing where the agent did not ask for it."""
    global _release_fd
    fd, _release_fd = _release_fd, None
    if fd is not None:
        with contextlib.suppress(OSError):
            os.write(fd, b"r")
            os.close(fd)


def _not_inherited() -> None:
    """What a run's child forks (the keeper, a user's function) must not hold the agent's release pipe: its end
    (EOF) is how the agent learns the child itself is gone."""
    global _release_fd
    fd, _release_fd = _release_fd, None
    if fd is not None:
        with contextlib.suppress(OSError):
            os.close(fd)


os.register_at_fork(after_in_child=_not_inherited)


def reap(pid: int, block: bool = False) -> bool:
    """Reap a released child (``ChildExit.released``); True once it is gone."""
    try:
        done, _ = os.waitpid(pid, 0 if block else os.WNOHANG)
    except ChildProcessError:
        return True
    return bool(done)


def run_in_child(
    target: Callable[[], int],
    interrupts: Interrupts,
    on_start: Callable[[int], None],
    release: bool = False,
) -> ChildExit:
    """Fork, run ``target`` in the child (its return value is the exit code), wait for it.

    With ``release`` the wait also ends when the child calls ``release_agent()`` (its end is recorded): the
    result then has ``released`` (its pid, for ``reap``) and the child finishes on its own, no longer signalled
    by ``interrupts``."""
    global _release_fd
    sys.stdout.flush()
    sys.stderr.flush()
    read_fd, write_fd = os.pipe2(os.O_CLOEXEC) if release else (None, None)  # CLOEXEC: a program never holds it
    pid = os.fork()
    if pid == 0:  # child
        code = 1
        if read_fd is not None:
            os.close(read_fd)
            _release_fd = write_fd
        try:
            for sig in Interrupts.SIGNALS:
                signal.signal(sig, signal.SIG_DFL)
            die_with_parent()
            set_threads()
            code = target()
        except BaseException:  # noqa: BLE001 - the child must never return into the parent's code
            import traceback

            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    interrupts.children.add(pid)
    if read_fd is not None:
        os.close(write_fd)
        try:
            on_start(pid)
            if os.read(read_fd, 1) == b"r":  # released (signals still reach Interrupts: the read resumes after them)
                interrupts.children.discard(pid)
                return ChildExit(0, None, released=pid)
        except BaseException:
            interrupts.children.discard(pid)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            os.waitpid(pid, 0)
            raise
        finally:
            os.close(read_fd)
        on_start = lambda _pid: None  # noqa: E731 - the child ended without releasing: wait for its exit below
    try:
        on_start(pid)
        if threading.current_thread() is threading.main_thread():
            _, status = os.waitpid(pid, 0)  # signals still reach Interrupts: the wait resumes after them
        else:  # polled: W&B's agent stops a run by raising an exception into this thread between bytecodes
            while True:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    break
                time.sleep(0.01)
    except BaseException:
        # Our wait was interrupted (W&B's agent stops a run by raising in this thread): stop the run the
        # graceful way and wait for it to record its end.
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        os.waitpid(pid, 0)
        raise
    finally:
        interrupts.children.discard(pid)
    if os.WIFSIGNALED(status):
        return ChildExit(None, os.WTERMSIG(status))
    return ChildExit(os.WEXITSTATUS(status), None)
