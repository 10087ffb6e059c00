"""ignite-sweep's own W&B sweep agent: W&B's agent protocol, sent through the SDK's own calls, without its waits.

W&B's agents (``wandb.agent``'s pyagent, the ``wandb agent`` CLI) register once (``CreateAgent``) and then
heartbeat (``Heartbeat``): each heartbeat reports the runs the agent has live (``runState``) and is answered with
commands (``run``/``resume``, ``stop``, ``exit``). They heartbeat every 5 s (pyagent's HEARTBEAT_SLEEP_SECONDS, the
CLI's POLL_INTERVAL) and take a new run only on a heartbeat, so every run waits up to 5 s to start.

This agent sends the same two operations through the same SDK functions both W&B agents call
(``wandb.apis.public.sweeps._register_agent`` and ``_agent_heartbeat``), and nothing else, but heartbeats again
as soon as a run has ended. While a run trains, and while the controller has nothing to hand out (a paused sweep),
it heartbeats every W&B interval, as W&B's agents do: never more often, so the server's load is theirs. It reports
the runs it has queued or running, as pyagent does, and keeps reporting a stopped run until its process has ended
(as the CLI agent does), so that the controller hands out no run while the agent is still busy.

Per run it does what pyagent does: ``WANDB_RUN_ID``, ``WANDB_SWEEP_ID`` and the run's config file in
``$WANDB_DIR/wandb/sweep-<id>/config-<run>.yaml`` named by ``WANDB_SWEEP_PARAM_PATH`` (``wandb.init`` reads it),
popped again after the run; ``WANDB_DIR`` (cwd when unset), ``WANDB_ENTITY``/``WANDB_PROJECT`` for the agent's
life, and the global settings' ``sweep_id`` cleared at the end. What it does not do: restart the wandb service
before every run (pyagent tears it down because its runs share its process; here each run is a forked child, and
all of them share the agent's one service).

A ``stop`` of the running run is a SIGTERM to its process (the run ends gracefully); ``exit`` stops the running
run the same way and ends the agent; a 404 (sweep deleted) lets the running run finish, then ends the agent.
SIGINT/SIGTERM/SIGHUP to the agent (Ctrl-C, the pool, a cluster's preemption, the server watchdog) end the
running run gracefully as ``interrupted`` (``agent_interrupted`` is true in the run's process too), then the
agent; a second one kills the run.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)


def wandb_interval() -> float:
    """Seconds between heartbeats while a run trains or the controller hands out nothing: W&B's agents' own
    interval (pyagent's HEARTBEAT_SLEEP_SECONDS, 5 s), or IGNITE_SWEEP_WANDB_HEARTBEAT_S (the tests shorten it)."""
    configured = os.environ.get("IGNITE_SWEEP_WANDB_HEARTBEAT_S")
    if configured:
        return float(configured)
    from wandb.agents import pyagent

    return float(pyagent.Agent.HEARTBEAT_SLEEP_SECONDS)


@dataclass
class Job:
    """A ``run`` (or ``resume``) command: the run's id and its parameters ({name: {"value": v}})."""

    run_id: str
    config: dict[str, Any]


@dataclass
class LoopResult:
    runs: int = 0  # runs started
    reason: str = "wandb agent finished"
    failures: int = 0  # failed or crashed runs in a row at the end
    last_failure: str | None = None
    interrupted: bool = False


class AgentSignals:
    """While the agent runs (main thread only): the first SIGINT/SIGTERM/SIGHUP marks the agent interrupted (a
    shared page, so the run's forked process sees it too) and raises KeyboardInterrupt, which ends the running run
    gracefully (``run_in_child`` sends it SIGTERM and waits); a second one raises again and the run is killed."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def __init__(self) -> None:
        import mmap

        self._shared = mmap.mmap(-1, 1)  # MAP_SHARED | MAP_ANONYMOUS: forked children see the agent's writes
        self.count = 0

    def interrupted(self) -> bool:
        return self._shared[0] == 1

    def _handle(self, signum: int, _frame: object) -> None:
        self._shared[0] = 1
        self.count += 1
        raise KeyboardInterrupt

    @contextlib.contextmanager
    def installed(self) -> Iterator[AgentSignals]:
        from ignite_sweep.execution.process import handlers_installed

        with handlers_installed(self.SIGNALS, self._handle):
            yield self


class AgentLoop:
    """One W&B sweep agent: a heartbeat thread talks to the controller; the calling thread runs the runs it is
    handed, one at a time, each through ``execute(job)`` (which returns when the run's process has ended, with
    None or a one-line failure) and stops them through ``stop_run(run_id)``."""

    def __init__(self, sweep: str, entity: str, project: str, execute: Callable[[Job], str | None],
                 stop_run: Callable[[str], None], count: int | None = None, max_consecutive_failures: int = 0,
                 interval: float | None = None) -> None:  # fmt: skip
        self.sweep, self.entity, self.project = sweep, entity, project
        self.execute, self.stop_run = execute, stop_run
        self.count, self.max_failures = count, max_consecutive_failures
        self.interval = wandb_interval() if interval is None else interval
        self.agent_id: str | None = None
        self._api: Any = None
        self._api_lock = threading.Lock()
        self._state = threading.Lock()
        self._jobs: queue.Queue[Job | None] = queue.Queue()
        self._live: dict[str, str] = {}  # run id -> "queued" | "running" | "stopping": reported in runState
        self._wake = threading.Event()  # a run ended: heartbeat now
        self._exit = threading.Event()
        self._exit_reason: str | None = None
        self._sweep_gone = False
        self.beats: list[float] = []  # monotonic time of each heartbeat sent (diagnostics)

    # ------------------------------------------------------------ protocol

    def register(self) -> None:
        import wandb
        from wandb.apis.public.sweeps import _register_agent

        self._api = wandb.Api()
        agent = _register_agent(self._api, socket.gethostname(), sweep_id=self.sweep, entity=self.entity,
                                project=self.project)  # fmt: skip
        self.agent_id = agent["id"]

    def heartbeat(self) -> list[dict[str, Any]]:
        """One heartbeat with the runs live now; the controller's commands ([] on an error, as W&B's agents)."""
        from wandb.apis.public.sweeps import _agent_heartbeat
        from wandb.sdk.sweeps import SweepNotFoundError

        with self._state:
            run_state = {run: True for run in self._live}
        try:
            with self._api_lock:
                self.beats.append(time.monotonic())
                return _agent_heartbeat(self._api, self.agent_id, {}, run_state)
        except SweepNotFoundError:
            self._sweep_gone = True
            return []
        except Exception:  # noqa: BLE001 - a heartbeat that failed is one without commands (as W&B's agents)
            logger.exception("W&B heartbeat failed")
            return []

    def handle(self, commands: list[dict[str, Any]]) -> None:
        for command in commands:
            kind, run_id = command.get("type"), command.get("run_id")
            if kind in ("run", "resume"):
                with self._state:
                    self._live[run_id] = "queued"
                self._jobs.put(Job(run_id, command.get("args") or {}))
            elif kind == "stop":
                with self._state:
                    was = self._live.get(run_id)
                    if was == "queued":
                        del self._live[run_id]  # never started (pyagent: marked stopped, skipped)
                    elif was == "running":
                        self._live[run_id] = "stopping"
                if was == "running":
                    self.stop_run(run_id)  # repeated stops of a stopping run: nothing more (pyagent never kills)
            elif kind == "exit":
                self._finish("wandb agent finished")
                with self._state:
                    running = [r for r, s in self._live.items() if s == "running"]
                    for r in running:
                        self._live[r] = "stopping"
                for r in running:
                    self.stop_run(r)
            else:
                logger.warning("W&B agent: unknown command %r", command)

    def _finish(self, reason: str) -> None:
        if not self._exit.is_set():
            self._exit_reason = reason
            self._exit.set()
            self._jobs.put(None)  # wakes the run loop

    # ------------------------------------------------------------ the heartbeat thread

    def _beat_loop(self) -> None:
        last = float("-inf")
        while not self._exit.is_set():
            woke = self._wake.wait(max(0.0, last + self.interval - time.monotonic()))
            if self._exit.is_set():
                return
            if woke:
                self._wake.clear()
            elif time.monotonic() < last + self.interval:
                continue
            if self._sweep_gone:  # as W&B's agents: no more heartbeats; the running run finishes first
                with self._state:
                    idle = not any(s in ("running", "stopping") for s in self._live.values())
                if idle:
                    self._finish("the sweep was deleted or the agent is unknown to W&B")
                    return
                last = time.monotonic()
                continue
            commands = self.heartbeat()
            last = time.monotonic()  # the interval runs from the answer, as pyagent's sleep after each heartbeat
            self.handle(commands)
            if self._sweep_gone:
                self._wake.set()  # decide at once whether the agent can end

    # ------------------------------------------------------------ the run loop

    def run(self) -> LoopResult:
        """Register, then run what the controller hands out until it says exit, ``count`` runs have ended, too many
        failed in a row, or the agent is interrupted."""
        result = LoopResult()
        self.register()
        beater = threading.Thread(target=self._beat_loop, name="ignite-sweep-wandb-heartbeat", daemon=True)
        self._wake.set()  # the first heartbeat right after registering, as W&B's agents
        beater.start()
        try:
            while not self._exit.is_set():
                try:
                    job = self._jobs.get(timeout=1.0)
                except queue.Empty:
                    continue
                if job is None:
                    break
                with self._state:
                    if self._live.get(job.run_id) != "queued":
                        continue  # stopped before it started
                    self._live[job.run_id] = "running"
                result.runs += 1
                try:
                    failure = self.execute(job)
                finally:
                    with self._state:
                        self._live.pop(job.run_id, None)
                if failure is None:
                    result.failures, result.last_failure = 0, None
                else:
                    result.failures, result.last_failure = result.failures + 1, failure
                if self.max_failures and result.failures >= self.max_failures:
                    self._finish("too many failures")
                elif self.count and result.runs >= self.count:
                    self._finish("wandb agent finished")  # no heartbeat after the last run, as W&B's agents
                else:
                    self._wake.set()  # the next run at once: heartbeat now, not at the next interval
        except KeyboardInterrupt:
            result.interrupted = True
            self._finish("interrupted")
        finally:
            self._exit.set()
            self._jobs.put(None)
            beater.join(timeout=1.0)  # a heartbeat in flight is W&B's retries' business; the thread is a daemon
        result.reason = self._exit_reason or result.reason
        return result


class CliAgentWake:
    """The command queue handed to W&B's CLI agent (``wandb_agent.Agent``, what ``wandb agent`` runs), to which no
    one sends commands: the agent's wait on it (``POLL_INTERVAL``, 5 s, at the top of each loop) is its sleep
    between heartbeats. This one ends that wait as soon as one of the agent's run processes has exited (and at the
    first call, so the first heartbeat follows the registration), so that the agent reaps the run and heartbeats
    for the next one at once; otherwise it waits the whole interval, as W&B's agent does."""

    POLL_S = 0.05  # how often it looks at the run processes (a local waitpid, no request)

    def __init__(self) -> None:
        self.agent: Any = None
        self._first = True

    def _a_run_ended(self) -> bool:
        processes = getattr(self.agent, "_run_processes", None) or {}
        return any(p.poll() is not None for p in list(processes.values()))

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        deadline = time.monotonic() + ((timeout or 0.0) if block else 0.0)
        first, self._first = self._first, False
        while not first and not self._a_run_ended():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            time.sleep(min(self.POLL_S, remaining))
        raise queue.Empty

    def get_nowait(self) -> Any:
        raise queue.Empty


def run_sweep_agent(sweep: str, entity: str, project: str, target: Callable[[Callable[[], bool]], int],
                    count: int | None = None, max_consecutive_failures: int = 0,
                    on_start: Callable[[int | None], None] | None = None,
                    say: Callable[[str], None] | None = None) -> LoopResult:  # fmt: skip
    """Run the sweep's runs in this agent: each in a child forked from this process (``target(agent_interrupted)``
    is its exit code), with the environment pyagent gives a run. ``on_start`` hears each run's pid, then None."""
    import wandb
    from wandb.sdk import wandb_login, wandb_setup
    from wandb.sdk.lib import config_util

    from ignite_sweep.execution.process import Interrupts, run_in_child

    wandb_login._login(_silent=True)  # as wandb.agent: reads the key, sends nothing
    if os.environ.get(wandb.env.DIR) is None:
        os.environ[wandb.env.DIR] = os.path.abspath(os.getcwd())
    os.environ[wandb.env.SWEEP_ID] = sweep
    wandb.env.set_entity(entity)
    wandb.env.set_project(project)
    signals = AgentSignals()
    children: dict[str, int] = {}
    early_stops: set[str] = set()  # stopped while its process was being forked
    guard = threading.Lock()

    def stop_run(run_id: str) -> None:  # from the heartbeat thread: the run ends through engine.terminate()
        with guard:
            pid = children.get(run_id)
            if pid is None:
                early_stops.add(run_id)
                return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)

    def started(run_id: str, pid: int) -> None:
        if on_start is not None:
            on_start(pid)
        with guard:
            children[run_id] = pid
            stopped = run_id in early_stops
        if stopped:
            stop_run(run_id)

    def execute(job: Job) -> str | None:
        config_file = os.path.join("wandb", f"sweep-{sweep}", f"config-{job.run_id}.yaml")
        os.environ[wandb.env.RUN_ID] = job.run_id
        param_path = os.path.join(os.environ.get(wandb.env.DIR, ""), config_file)
        os.environ[wandb.env.SWEEP_PARAM_PATH] = param_path
        config_util.save_config_file_from_dict(param_path, job.config)
        os.environ[wandb.env.SWEEP_ID] = sweep
        wandb.termlog(f"Agent Starting Run: {job.run_id} with config:")
        for key, value in job.config.items():
            wandb.termlog(f"\t{key}: {value.get('value') if isinstance(value, dict) else value}")
        try:
            outcome = run_in_child(lambda: target(signals.interrupted), Interrupts(),
                                   on_start=lambda pid: started(job.run_id, pid))  # fmt: skip
        except KeyboardInterrupt:  # run_in_child has stopped the run (SIGTERM) and waited, unless cut short again
            pid = children.get(job.run_id)
            if pid is not None:
                with contextlib.suppress(ChildProcessError):
                    if os.waitpid(pid, os.WNOHANG) == (0, 0):  # still running: a second signal kills it
                        os.kill(pid, signal.SIGKILL)
                        os.waitpid(pid, 0)
            raise
        finally:
            with guard:
                children.pop(job.run_id, None)
                early_stops.discard(job.run_id)
            if on_start is not None:
                on_start(None)
            for name in (wandb.env.RUN_ID, wandb.env.SWEEP_ID, wandb.env.SWEEP_PARAM_PATH):
                os.environ.pop(name, None)
        if outcome.ok:
            return None
        if say is not None:
            say(f"run {job.run_id}: {outcome.describe()}")
        return outcome.describe()

    loop = AgentLoop(sweep, entity, project, execute, stop_run, count=count,
                     max_consecutive_failures=max_consecutive_failures)  # fmt: skip
    try:
        with signals.installed():
            return loop.run()
    finally:
        os.environ.pop(wandb.env.SWEEP_ID, None)
        with contextlib.suppress(Exception):  # as wandb.agent: a later wandb.init here is no sweep's run
            wandb_setup.singleton().settings.sweep_id = None
