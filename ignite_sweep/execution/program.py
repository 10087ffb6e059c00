"""A user's program, run the way W&B's CLI agent (``wandb agent``) runs it; its metrics seen while it trains.

The command: the sweep's ``command`` (else W&B's default ``${env} ${interpreter} ${program} ${args}``), expanded
by wandb's own macro code (``wandb.sdk.launch.sweeps.utils``): ``${envvar:NAME}`` inside any item, and whole-item
``${env}``, ``${interpreter}``, ``${program}``, ``${args}``, ``${args_no_hyphens}``, ``${args_no_boolean_flags}``,
``${args_no_equals}``, ``${args_json}``, ``${args_json_file}``, ``${args_append_hydra}``,
``${args_override_hydra}``; an unknown macro is dropped, as W&B does.

The environment, as W&B's agent sets it: ``WANDB_SWEEP_ID`` (the local sweep's id: scripts gate ``wandb.init`` on
it; ``ignite-sweep sync`` maps it to a W&B sweep), ``WANDB_RUN_ID``, ``WANDB_SWEEP_PARAM_PATH`` (a
``{name: {value: v}}`` YAML written by wandb's own ``config_util``, so ``wandb.init()`` in the program sees the run's
config), ``WANDB_DIR`` (default: where the agent started), ``WANDB_PROJECT``; no shell, the agent's working directory,
stdin closed, its own process group. Added: ``WANDB_RUN_GROUP`` (the sweep's name), job type and tag, as built-in runs
have them, and the agent's own environment (the folder of its Python) first on PATH, so ``${interpreter}``
(``python``) is the Python the agent runs in, as if its virtualenv were activated. On Linux the program's parent is
a keeper (``keeper.py``) that ends its whole process tree when it ends or when the agent dies.

Live metrics: ``live/sitecustomize.py`` goes first on the program's PYTHONPATH and appends each ``wandb.log``
call's numbers to a JSON-lines file that ``ProgramRun.new_rows`` reads (see that module). At the end the run's
``.wandb`` file gives its final summary and history, which a program the hook cannot see (not Python, or its
children started without the PYTHONPATH) still writes.

Stops, as W&B's agent: SIGTERM, then SIGKILL after ``WANDB_AGENT_KILL_DELAY`` seconds (default 30; the CLI's
``--kill-delay``). Unlike W&B, both go to the program's whole process group (DataLoader workers, ``accelerate
launch`` children) and the SIGKILL comes from a timer, not from the server repeating its stop.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ignite_sweep.execution import keeper

KILL_DELAY_S = 30
LIVE_DIR = Path(__file__).resolve().parent / "live"
DEFAULT_COMMAND = ["${env}", "${interpreter}", "${program}", "${args}"]
TAIL_BYTES = 8192


def warm_up_programs() -> None:
    """Import once, in the agent, what each forked supervisor needs (wandb's macro and config code, the .wandb
    reader's protobufs: about 0.6 s a run otherwise). Not torch: a program imports what it needs itself."""
    import importlib

    for name in ("wandb.sdk.launch.sweeps.utils", "wandb.sdk.lib.config_util", "wandb.proto.wandb_internal_pb2",
                 "ignite_sweep.wandb_file"):  # fmt: skip
        importlib.import_module(name)


def kill_delay() -> float:
    """Seconds between the SIGTERM of a stop and the SIGKILL: ``WANDB_AGENT_KILL_DELAY`` as W&B reads it."""
    try:
        return float(os.environ.get("WANDB_AGENT_KILL_DELAY", KILL_DELAY_S))
    except ValueError:
        return KILL_DELAY_S


def sweep_folder(wandb_dir: str | os.PathLike[str], sweep_id: str) -> Path:
    """Where W&B's agent writes a run's parameter files: ``$WANDB_DIR/wandb/sweep-<id>``."""
    return Path(wandb_dir) / "wandb" / f"sweep-{sweep_id}"


def build_command(
    config: dict[str, Any], run_id: str, params: dict[str, Any], sweep_id: str, wandb_dir: str
) -> tuple[list[str], dict[str, str]]:
    """(argv, the environment variables W&B's agent sets for this run); writes the run's parameter file(s)."""
    from wandb.sdk.launch.sweeps import utils as sweep_utils

    template = config.get("command")
    template = [str(c) for c in template] if isinstance(template, list) and template else list(DEFAULT_COMMAND)
    template = sweep_utils.create_sweep_command(template)  # ${envvar:NAME}; it edits the list it is given
    json_path = sweep_folder(wandb_dir, sweep_id) / f"config-{run_id}.json"
    run_command = {"type": "run", "run_id": run_id, "program": config.get("program"),
                   "args": {name: {"value": value} for name, value in params.items()}}  # fmt: skip
    env = run_environment(run_id, params, sweep_id, wandb_dir)
    macros: dict[str, Any] = sweep_utils.create_sweep_command_args(run_command)
    macros.pop("args_dict", None)  # W&B would splice a dict's keys into the command; nobody means that
    macros.update(env=["/usr/bin/env"], interpreter=["python"], args_json_file=[str(json_path)],
                  program=[str(config["program"])] if config.get("program") is not None else [])  # fmt: skip
    if "${args_json_file}" in template:
        json_path.write_text(macros["args_json"][0])
    argv: list[str] = []
    for item in template:
        if item.startswith("${") and item.endswith("}"):
            argv += [str(v) for v in macros.get(item[2:-1]) or []]
        else:
            argv.append(item)
    return argv, env


def run_environment(run_id: str, params: dict[str, Any], sweep_id: str, wandb_dir: str) -> dict[str, str]:
    """W&B's run variables, and the parameter file ``WANDB_SWEEP_PARAM_PATH`` names (written by wandb's own
    ``config_util``, as W&B's agent writes it): ``wandb.init()`` then gives ``wandb.config`` the run's values."""
    from wandb.sdk.lib import config_util

    param_path = sweep_folder(wandb_dir, sweep_id) / f"config-{run_id}.yaml"
    config_util.save_config_file_from_dict(str(param_path), {k: {"value": v} for k, v in params.items()})
    return {"WANDB_RUN_ID": run_id, "WANDB_SWEEP_PARAM_PATH": str(param_path), "WANDB_DIR": str(wandb_dir)}


def program_env(base: dict[str, str], run_env: dict[str, str], metrics_path: Path) -> dict[str, str]:
    """The program's environment: the agent's, W&B's run variables, the live hook and the agent's Python first."""
    env = {**base, **run_env}
    env.pop("WANDB_SERVICE", None)  # as W&B's agent: the program starts its own wandb service
    if env.pop("IGNITE_SWEEP_SILENCED_WANDB", None):  # the agent quieted its own wandb, not the program's
        env.pop("WANDB_SILENT", None)
    env.pop("IGNITE_SWEEP_EVENTS", None)  # the pool's event channel is the agent's, not the program's
    env["IGNITE_SWEEP_METRICS_FILE"] = str(metrics_path)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(LIVE_DIR), base.get("PYTHONPATH", "")) if p)
    env["PATH"] = os.pathsep.join(p for p in (os.path.dirname(sys.executable), base.get("PATH", "")) if p)
    return env


def _new_group_dying_with_parent() -> Callable[[], None]:
    """What runs in the program's process between fork and exec: its own process group (as W&B's agent), and
    on Linux a SIGKILL when the supervising process dies, so that a killed agent leaves no orphan training."""
    from ignite_sweep.execution.process import parent_death_signal

    arm = parent_death_signal()
    parent = os.getpid()

    def before_exec() -> None:
        os.setpgid(0, 0)
        if arm() and os.getppid() != parent:  # the supervisor died before it was armed: do not run as an orphan
            os._exit(1)

    return before_exec


_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07]*(\x07|\x1b\\\\)")


def _write_all(fd: int, data: bytes) -> None:
    while data:
        try:
            data = data[os.write(fd, data) :]
        except InterruptedError:
            continue
        except OSError:
            return


def _stderr_pair() -> tuple[int, int]:
    """(read end, the program's stderr). A pseudo-terminal of the same size when the agent's stderr is a terminal,
    so the program's ``isatty()`` checks (progress bars, colours) answer as they would under ``wandb agent``;
    a pipe otherwise. Either way the agent sees the output, to keep its last line for the run's error."""
    if os.isatty(2):
        import fcntl
        import termios

        main, program_side = os.openpty()
        try:
            size = fcntl.ioctl(2, termios.TIOCGWINSZ, b"\0" * 8)
            fcntl.ioctl(program_side, termios.TIOCSWINSZ, size)
        except OSError:
            pass
        return main, program_side
    return os.pipe()


def function_env(base: dict[str, str], run_env: dict[str, str], metrics_path: Path) -> dict[str, str]:
    """A user function's environment: the agent's (its wandb service included) and W&B's run variables."""
    env = {**base, **run_env}
    env.pop("IGNITE_SWEEP_EVENTS", None)
    env["IGNITE_SWEEP_METRICS_FILE"] = str(metrics_path)
    return env


class _Stop(BaseException):
    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _raise_stop(signum: int, _frame: Any) -> None:
    raise _Stop(signum)


class _ForkedFunction:
    """A user function (what one hands ``wandb.agent``) in a forked process, answering as a ``Popen`` does."""

    def __init__(self, function: Callable[[], Any], env: dict[str, str], stderr_fd: int, read_fd: int):
        before_exec = _new_group_dying_with_parent()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the run
            code = 1
            try:
                before_exec()
                if _events_on_stdout():
                    os.dup2(2, 1)  # the agent's stdout carries the pool's events; the function's output goes aside
                os.dup2(stderr_fd, 2)
                devnull = os.open(os.devnull, os.O_RDONLY)
                os.dup2(devnull, 0)
                for fd in (read_fd, stderr_fd, devnull):
                    os.close(fd)
                for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # a stop unwinds the function
                    signal.signal(sig, _raise_stop)
                os.environ.clear()
                os.environ.update(env)
                _load_hook().install_in_process(env["IGNITE_SWEEP_METRICS_FILE"])
                function()
                code = 0
            except _Stop as stop:  # finish its wandb run, then end by the signal, as an unhandled one would
                _finish_wandb(128 + stop.signum)
                sys.stdout.flush()
                sys.stderr.flush()
                signal.signal(stop.signum, signal.SIG_DFL)
                os.kill(os.getpid(), stop.signum)
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
                if not isinstance(exc.code, (int, type(None))):
                    print(exc.code, file=sys.stderr)
            except BaseException:  # noqa: BLE001 - its traceback's last line becomes the run's error
                import traceback

                traceback.print_exc()
            finally:
                _finish_wandb(code)  # as W&B's agent does after the function returns: the run is finished
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            done, status = os.waitpid(self.pid, os.WNOHANG)
            if done:
                self.returncode = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.returncode is None:
            os.kill(self.pid, sig)


def _events_on_stdout() -> bool:
    return os.environ.get("IGNITE_SWEEP_EVENTS") == "1"


def _finish_wandb(code: int) -> None:
    wandb = sys.modules.get("wandb")
    try:
        if wandb is not None and wandb.run is not None:
            wandb.finish(exit_code=code)
    except Exception:  # noqa: BLE001 - the run's end is recorded by the agent either way
        pass


def _load_hook() -> Any:
    import importlib.util

    spec = importlib.util.spec_from_file_location("ignite_sweep_live_hook", LIVE_DIR / "sitecustomize.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class ProgramRun:
    """One run of a program (or of a user function, forked): start, the metrics it logs as they arrive, stop
    (SIGTERM, SIGKILL after a delay), wait. Its stderr passes through unchanged; the last line of it is kept for
    the run's error."""

    def __init__(self, argv: list[str] | None, env: dict[str, str], metrics_path: Path, delay_s: float | None = None,
                 function: Callable[[], Any] | None = None):  # fmt: skip
        self.argv, self.env, self.metrics_path, self.function = argv, env, metrics_path, function
        self.run_id = env.get("WANDB_RUN_ID")
        self.delay_s = kill_delay() if delay_s is None else delay_s
        self.proc: Any = None
        self.stop_sent: float | None = None
        self.killed = False
        self._cleared = False
        self._offset = 0
        self._partial = b""
        self._tail = b""
        self._tee: threading.Thread | None = None

    def start(self) -> ProgramRun:
        self.metrics_path.parent.mkdir(parents=True, exist_ok=True)
        self.metrics_path.write_bytes(b"")
        read_fd, write_fd = _stderr_pair()

        def launch() -> Any:  # in the program's parent: the keeper, else this process
            if self.function is not None:
                proc: Any = _ForkedFunction(self.function, self.env, write_fd, read_fd)
            else:
                proc = subprocess.Popen(self.argv or [], env=self.env, stdin=subprocess.PIPE, stderr=write_fd,
                                        stdout=2 if _events_on_stdout() else None,
                                        preexec_fn=_new_group_dying_with_parent())  # fmt: skip
                assert proc.stdin is not None
                proc.stdin.close()  # as W&B's agent: a read gets EOF, not a stop of a background process group
            with contextlib.suppress(OSError):  # also from the parent: a stop sent at once must reach the whole group
                os.setpgid(proc.pid, proc.pid)
            return proc

        try:  # on Linux, the program's whole tree ends with it, whatever dies (keeper.py)
            self.proc = keeper.Kept(launch) if keeper.available() else launch()
        except BaseException:
            os.close(read_fd)
            raise
        finally:
            os.close(write_fd)
        self._tee = threading.Thread(target=self._pass_stderr, args=(read_fd,), daemon=True,
                                     name="ignite-sweep-program-stderr")  # fmt: skip
        self._tee.start()
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def _pass_stderr(self, fd: int) -> None:
        try:
            while True:
                try:
                    chunk = os.read(fd, 65536)
                except OSError:  # EIO: a pseudo-terminal whose program side has closed
                    break
                if not chunk:
                    break
                _write_all(2, chunk)  # raw, so progress bars (\r) draw as they would
                self._tail = (self._tail + chunk)[-TAIL_BYTES:]
        finally:
            os.close(fd)

    def last_error_line(self) -> str:
        """The program's last line on stderr, without terminal colour codes."""
        if self._tee is not None:
            self._tee.join(timeout=2)
        text = _ANSI.sub("", self._tail.decode("utf-8", "replace")).replace("\r", "\n")
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        return lines[-1] if lines else ""

    def new_rows(self) -> list[dict[str, Any]]:
        """What the program logged since the last call: one row per ``wandb.log`` call, its numbers."""
        try:
            with open(self.metrics_path, "rb") as f:
                f.seek(self._offset)
                data = f.read()
        except OSError:
            return []
        self._offset += len(data)
        data = self._partial + data
        lines = data.split(b"\n")
        self._partial = lines.pop()  # a line still being written
        rows = []
        for line in lines:
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if entry.get("run") not in (None, self.run_id):  # another run's process that inherited the hook
                continue
            row = dict(entry.get("metrics") or {})
            if entry.get("step") is not None:
                row["_step"] = entry["step"]
            rows.append(row)
        return rows

    def stop(self) -> None:
        """SIGTERM to the program's process group, once; ``poll`` sends SIGKILL when the delay has passed."""
        if self.stop_sent is None and self.proc is not None and self.proc.poll() is None:
            self.stop_sent = time.monotonic()
            self._signal(signal.SIGTERM)

    def _signal(self, sig: int) -> None:
        assert self.proc is not None
        try:
            os.killpg(self.proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            try:
                self.proc.send_signal(sig)
            except ProcessLookupError:
                pass

    def poll(self) -> int | None:
        assert self.proc is not None
        code = self.proc.poll()
        if code is None and self.stop_sent is not None and time.monotonic() - self.stop_sent >= self.delay_s:
            self.killed = True
            self._signal(signal.SIGKILL)
        if code is not None and not self._cleared and not isinstance(self.proc, keeper.Kept):
            self._cleared = True  # (a keeper has ended the whole tree already)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)  # what it left behind in its group (workers holding a GPU)
        return code

    def kill_now(self) -> None:
        """The supervisor is going down: nothing of the program may outlive it."""
        if self.proc is not None and self.proc.poll() is None:
            self._signal(signal.SIGKILL)
            if isinstance(self.proc, keeper.Kept):
                self.proc.teardown()


def find_run_file(wandb_dir: str | os.PathLike[str], run_id: str) -> Path | None:
    """The run's ``.wandb`` file under ``$WANDB_DIR/wandb`` (or ``.wandb``), offline or online."""
    for folder in ("wandb", ".wandb"):
        found = sorted(Path(wandb_dir, folder).glob(f"*run-*-{run_id}*/run-{run_id}.wandb"))
        if found:
            return found[-1]
    return None


def final_metrics(run_file: Path | None, wait_s: float = 3.0) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(history rows, summary) from the run's ``.wandb`` file; waits briefly for wandb's service to write its end."""
    from ignite_sweep.wandb_file import read_run

    if run_file is None:
        return [], {}
    deadline = time.monotonic() + wait_s
    while True:
        rows, summary, exit_code = read_run(run_file, partial=True)
        if exit_code is not None or time.monotonic() > deadline:
            return rows, summary
        time.sleep(0.1)


def numbers(values: dict[str, Any]) -> dict[str, Any]:
    """The numeric entries (the store keeps metrics, not media or tables)."""
    return {k: v for k, v in values.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
