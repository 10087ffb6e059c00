"""The W&B backend: W&B's sweep controller decides, agents on any number of machines train.

``create`` is ``wandb.sweep``; ``run_agent`` is ignite-sweep's own agent loop over W&B's agent protocol
(``wandb_agent.py``: the next run starts as soon as the last one ended), each run a forked child whose ``trial``
builds TrainConfig from ``wandb.config`` (a ``function=`` is ``wandb.agent``'s; a program sweep W&B's CLI agent
logic); ``runs``/``sweep`` read through ``wandb.Api``. The registered config carries a
``command`` (``python -m ignite_sweep.train ${args}``), so the stock ``wandb agent <id>`` CLI runs the same
training; W&B stops such a run with SIGTERM, which train() turns into a graceful ``engine.terminate()``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

from ignite_sweep.backends.base import AgentResult, Backend, RunRecord, SweepRecord
from ignite_sweep.errors import BackendError, ConfigError, IgniteSweepError


def base_url() -> str:
    return os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai").rstrip("/")


def api_key() -> str | None:
    """The key wandb would use: WANDB_API_KEY, else `wandb login`'s netrc entry for the server's host."""
    import netrc
    from urllib.parse import urlparse

    if os.environ.get("WANDB_API_KEY"):
        return os.environ["WANDB_API_KEY"]
    try:
        found = netrc.netrc(os.environ.get("NETRC")).authenticators(urlparse(base_url()).hostname or "")
    except (OSError, netrc.NetrcParseError):
        return None
    return found[2] if found else None


_VERIFIED: set[str] = set()


def preflight() -> None:
    """One short request before the SDK's own, which retry for minutes (20 tries, 2-60 s apart): a missing
    login, an unreachable server or a refused key is one line within seconds. Once per server and process."""
    import urllib.error

    url = base_url()
    if url in _VERIFIED:
        return
    key = api_key()
    if not key:
        raise BackendError(
            f"W&B: no login found for {url} (WANDB_API_KEY or `wandb login`); log in, or use --backend local"
        )
    try:
        answer = _viewer(url, key)
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403):
            raise BackendError(
                f"W&B at {url} refused the API key (HTTP {exc.code}); run `wandb login --relogin` or set WANDB_API_KEY"
            ) from None
        raise BackendError(f"W&B at {url} answered HTTP {exc.code} ({exc.reason}); try again later") from None
    except (OSError, ValueError) as exc:  # URLError, refused, timed out, not JSON
        reason = getattr(exc, "reason", None) or exc
        raise BackendError(
            f"W&B server {url} cannot be reached ({reason}); check the network or WANDB_BASE_URL, "
            "or use --backend local"
        ) from None
    if not (answer.get("data") or {}).get("viewer"):
        raise BackendError(f"W&B at {url} does not know this API key; run `wandb login --relogin`")
    _VERIFIED.add(url)


def _viewer(url: str, key: str) -> dict[str, Any]:
    """W&B's `Viewer` query, with our own timeout (IGNITE_SWEEP_WANDB_TIMEOUT_S, default 10 s)."""
    import base64
    import json
    import urllib.request

    request = urllib.request.Request(
        f"{url}/graphql", data=json.dumps({"query": "query Viewer { viewer { id entity } }"}).encode(),
        headers={"Content-Type": "application/json",
                 "Authorization": "Basic " + base64.b64encode(f"api:{key}".encode()).decode()},
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=float(os.environ.get("IGNITE_SWEEP_WANDB_TIMEOUT_S", "10"))) as r:
        return json.loads(r.read() or b"{}")


class ServerWatchdog:
    """While W&B's agent runs: ask the server every ``interval_s``; after ``misses`` unanswered asks in a row it
    is gone (W&B's agent would otherwise wait on the SDK's retries for many minutes). Then the running run is
    interrupted (SIGINT: recorded ``interrupted``, its data kept in its local .wandb file) and the agent is
    stopped as Ctrl-C stops it."""

    def __init__(self, interval_s: float, misses: int = 3) -> None:
        import threading

        self.interval_s, self.misses = interval_s, misses
        self.child: int | None = None  # the run's process, while one trains
        self.gone = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="ignite-sweep-wandb-watchdog", daemon=True)
        self._ignored_sigint = False

    def __enter__(self) -> ServerWatchdog:
        import signal
        import threading

        # An agent started in the background by a script (`ignite-sweep agent ... &`, an sbatch script) inherits
        # SIGINT ignored: the SIGINT this watchdog sends itself would be lost and the agent would wait for W&B
        # forever. While it runs, SIGINT is Python's KeyboardInterrupt again.
        self._ignored_sigint = (threading.current_thread() is threading.main_thread()
                                and signal.getsignal(signal.SIGINT) == signal.SIG_IGN)  # fmt: skip
        if self._ignored_sigint:
            signal.signal(signal.SIGINT, signal.default_int_handler)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        import signal

        self._stop.set()
        if self._ignored_sigint:
            signal.signal(signal.SIGINT, signal.SIG_IGN)

    def _watch(self) -> None:
        import signal

        url, key, missed = base_url(), api_key() or "", 0
        while not self._stop.wait(self.interval_s):
            try:
                _viewer(url, key)
                missed = 0
            except (OSError, ValueError):  # refused, timed out, an HTTP error, not JSON
                missed += 1
            if missed >= self.misses and not self._stop.is_set():
                self.gone = True
                for pid in (self.child, os.getpid()):
                    if pid is not None:
                        try:
                            os.kill(pid, signal.SIGINT)
                        except ProcessLookupError:
                            pass
                return


STATE_MAP = {"running": "running", "finished": "finished", "failed": "failed", "crashed": "crashed",
             "killed": "stopped", "preempted": "crashed", "pending": "running"}  # fmt: skip


def split_id(sweep_id: str) -> tuple[str, str, str]:
    parts = sweep_id.split("/")
    if len(parts) != 3 or not all(parts):
        raise ConfigError(f"sweep id '{sweep_id}': expected entity/project/<id> for the W&B backend")
    return parts[0], parts[1], parts[2]


def trial(agent_interrupted: Callable[[], bool] | None = None) -> dict[str, Any] | None:
    """One run of the sweep, in its own process: wandb.config -> the built-in trainer, driven through the run
    interface (``execution.runs.TrainerRun``), its end state decided by ``states.end_state`` as on the local
    backend. ``agent_interrupted`` says whether the agent that started it was interrupted (a stop then means
    unfinished work, not a result). W&B's controller decides stops: the sink only shows evaluations."""
    import wandb

    from ignite_sweep.execution.process import emit
    from ignite_sweep.execution.runs import Sink, TrainerRun, failure
    from ignite_sweep.states import end_state

    run = wandb.init()
    params = {k: v for k, v in dict(run.config).items() if not k.startswith("_")}
    emit({"event": "start", "run": run.id, "params": params})
    try:
        # Ctrl-C or a closed terminal, not W&B's stop (a SIGTERM): unfinished work, recorded `interrupted` with a
        # non-zero exit. W&B's controller decides whether it is offered again.
        the_run = TrainerRun(params, run=run, agent_interrupted=agent_interrupted or (lambda: False))
        the_run.start()
        outcome = the_run.wait(Sink(run.id))
    except Exception as exc:
        state, error = end_state(failure(exc, params))
        if isinstance(exc, IgniteSweepError):
            print(f"error: {exc}", file=sys.stderr)
        run.summary["error"] = error
        run.finish(exit_code=1)
        emit({"event": "end", "run": run.id, "state": state, "error": error, "params": params})
        if isinstance(exc, IgniteSweepError):
            return None
        raise
    summary = outcome.summary or {}
    state, _error = end_state(outcome.ending)
    run.finish(exit_code=1 if summary["status"] in ("diverged", "interrupted") else 0)
    emit({"event": "end", "run": run.id, "state": state, "metrics": summary, "params": params})
    return summary


def _run_trainer_agent(sid: str, entity: str, project: str, count: int | None, max_consecutive_failures: int,
                       watchdog: ServerWatchdog, say: Callable[[str], None]) -> Any:  # fmt: skip
    """The built-in trainer's runs, through ignite-sweep's own agent loop over W&B's agent protocol
    (backends/wandb_agent.py): the next run starts as soon as the last one ended."""
    from ignite_sweep.backends.wandb_agent import run_sweep_agent

    def target(agent_interrupted: Callable[[], bool]) -> int:
        return 0 if trial(agent_interrupted) is not None else 1

    return run_sweep_agent(sid, entity, project, target, count=count, max_consecutive_failures=max_consecutive_failures,
                           on_start=lambda pid: setattr(watchdog, "child", pid), say=say)  # fmt: skip


def _upsert(config: dict[str, Any], project: str, entity: str) -> tuple[str | None, list[str]]:
    """Create the sweep: the sweep's name and the server's validation warnings.

    ``wandb.sweep`` is the same mutation, but it prints the warnings in a multi-line box of its own and the id
    to stdout; its helper ``_upsert_sweep`` returns both. Older SDKs without it fall back to ``wandb.sweep``.
    """
    import wandb

    try:
        from wandb.apis.public.sweeps import _upsert_sweep
    except ImportError:  # pragma: no cover - SDKs before 0.2x
        return wandb.sweep(config, project=project, entity=entity), []
    sweep, warnings_ = _upsert_sweep(wandb.Api(overrides={"entity": entity, "project": project}), dict(config),
                                     project=project, entity=entity)  # fmt: skip
    return (sweep or {}).get("name"), [str(w) for w in warnings_ or []]


class WandbBackend(Backend):
    name = "wandb"

    def preflight(self) -> None:
        preflight()

    def create(self, config: dict[str, Any], project: str | None = None, entity: str | None = None,
               warn: Callable[[str], None] | None = None) -> str:  # fmt: skip
        preflight()
        import wandb

        from ignite_sweep.training.config import DEFAULT_PROJECT

        project = project or config.get("project") or DEFAULT_PROJECT
        entity = entity or config.get("entity") or wandb.Api().default_entity
        if not entity:
            raise BackendError("W&B: no entity known; pass --entity or run `wandb login`")
        try:
            sweep, server_warnings = _upsert(config, project, entity)
        except Exception as exc:  # noqa: BLE001 - CommError and friends: W&B refused it
            raise BackendError(f"W&B refused the sweep: {_first_line(exc)}") from None
        for message in server_warnings:  # the server's configValidationWarnings, one line each
            (warn or (lambda line: print(f"warning: {line}", file=sys.stderr)))(f"W&B: {_first_line(message)}")
        if not sweep:
            raise BackendError("W&B refused to create the sweep (see wandb's message above)")
        return f"{entity}/{project}/{sweep}"

    def run_agent(self, sweep_id: str, count: int | None = None, max_consecutive_failures: int = 5,
                  slot: str | None = None, echo: Callable[[str], None] | None = None,
                  function: Callable[[], Any] | None = None, fuse: int = 1) -> AgentResult:  # fmt: skip
        if fuse > 1:  # W&B's server hands an agent one run per heartbeat command
            raise BackendError(f"--fuse {fuse} needs the local backend (W&B's server hands an agent one run at a "
                               "time): create the sweep with --backend local, or leave out --fuse")  # fmt: skip
        entity, project, sid = split_id(sweep_id)
        preflight()
        api_sweep = self._api_sweep(sweep_id)  # an unknown sweep is one line here, not the agent's retries
        import wandb

        from ignite_sweep.sweepfile import is_program_sweep

        if function is not None:  # the Python API: exactly wandb.agent
            calls = {"runs": 0}

            def counted() -> None:
                calls["runs"] += 1
                function()

            wandb.agent(sid, function=counted, entity=entity, project=project, count=count)
            return AgentResult(runs=calls["runs"], reason="wandb agent finished")
        if is_program_sweep(dict(api_sweep.config)):
            return self._run_program_agent(entity, project, sid, count, max_consecutive_failures)

        _quiet_service_finalizer()
        from ignite_sweep.execution.process import warm_up

        warm_up()  # torch, its compiler and wandb.init's imports once here, not again in every run's child
        say = echo or (lambda line: print(line, file=sys.stderr))
        watchdog = ServerWatchdog(float(os.environ.get("IGNITE_SWEEP_WANDB_WATCHDOG_S", "10")))
        with watchdog:
            result = _run_trainer_agent(sid, entity, project, count, max_consecutive_failures, watchdog, say)
        if watchdog.gone:
            folder = os.path.join(os.environ.get("WANDB_DIR", "."), "wandb")
            raise BackendError(
                f"W&B server {base_url()} went away during the agent ({watchdog.misses} checks "
                f"{watchdog.interval_s:g} s apart unanswered): stopped; runs logged so far keep their local copies "
                f"in {folder} (`wandb sync <run folder>` uploads one once the server is back)"
            )
        if result.reason == "too many failures":
            raise BackendError(
                f"agent stopped: {result.failures} runs in a row failed or crashed (--max-consecutive-failures "
                f"{max_consecutive_failures}); last: {result.last_failure}"
            )
        return AgentResult(runs=result.runs, reason=result.reason)

    def _run_program_agent(self, entity: str, project: str, sid: str, count: int | None,
                           max_consecutive_failures: int) -> AgentResult:  # fmt: skip
        """A program sweep: W&B's own CLI agent logic (what ``wandb agent`` runs), in this process, so that a pool
        slot runs it with its GPU. The program, its macros, its stops (and ``WANDB_AGENT_KILL_DELAY``) are W&B's;
        only its sleep after a run has ended is cut short (``CliAgentWake``)."""
        import wandb
        from wandb import wandb_agent

        from ignite_sweep.backends.wandb_agent import CliAgentWake

        heartbeat = os.environ.get("IGNITE_SWEEP_WANDB_HEARTBEAT_S")
        if heartbeat:  # W&B's CLI agent polls for commands every 5 s; tests shorten it
            wandb_agent.Agent.POLL_INTERVAL = float(heartbeat)
        wandb.env.set_entity(entity)
        wandb.env.set_project(project)
        os.environ[wandb.env.SWEEP_ID] = sid
        # ${interpreter} is `python` on PATH: this agent's own Python first, as on the local backend
        os.environ["PATH"] = os.pathsep.join(p for p in (os.path.dirname(sys.executable), os.environ.get("PATH")) if p)
        wake = CliAgentWake()  # its poll wait ends when a run's process has exited: the next run at once
        agent = wandb_agent.Agent(wandb.Api(), wake, sweep_id=sid, count=count,
                                  max_consecutive_failed_runs=max_consecutive_failures)  # fmt: skip
        wake.agent = agent
        try:
            agent.run()
        finally:
            os.environ.pop(wandb.env.SWEEP_ID, None)
        return AgentResult(runs=int(getattr(agent, "_finished", 0)), reason="wandb agent finished")

    def _api_sweep(self, sweep_id: str) -> Any:
        split_id(sweep_id)
        preflight()
        import wandb

        try:
            return wandb.Api().sweep(sweep_id)
        except Exception as exc:  # noqa: BLE001 - the API raises many types for "not found"/no network
            raise BackendError(f"W&B sweep '{sweep_id}': {_first_line(exc)}") from None

    def sweep(self, sweep_id: str) -> SweepRecord:
        sweep = self._api_sweep(sweep_id)
        config = dict(sweep.config)
        return SweepRecord(
            id=sweep_id, name=str(config.get("name") or sweep.name or sweep_id), method=config.get("method", "?"),
            state=str(sweep.state).lower(), config=config,
        )  # fmt: skip

    def runs(self, sweep_id: str) -> list[RunRecord]:
        records = []
        for run in self._api_sweep(sweep_id).runs:
            summary = dict(run.summary)
            state = STATE_MAP.get(str(run.state).lower(), str(run.state).lower())
            if state in ("finished", "failed") and summary.get("status") in ("stopped", "interrupted"):
                state = summary["status"]
            records.append(
                RunRecord(
                    id=run.id,
                    state=state,
                    config={k: v for k, v in dict(run.config).items() if not k.startswith("_")},
                    summary=summary,
                    error=summary.get("error"),
                    runtime_s=summary.get("_runtime"),
                )  # fmt: skip
            )
        return records  # the API lists them oldest first (order "+created_at", since wandb PR #10130)

    def runs_with_history(self, sweep_id: str) -> list[RunRecord]:
        sweep = self._api_sweep(sweep_id)
        metric = (dict(sweep.config).get("metric") or {}).get("name")
        records = {r.id: r for r in self.runs(sweep_id)}
        for run in sweep.runs if metric else ():  # a sweep without a metric has no curves to read
            if run.id in records:
                records[run.id].history = [
                    row for row in run.scan_history(keys=[metric, "epoch"]) if row.get(metric) is not None
                ]
        return list(records.values())

    def stop(self, sweep_id: str) -> None:
        """What ``wandb sweep --stop`` does: no new runs, running runs finish."""
        self._set_state(sweep_id, "FINISHED")

    def cancel(self, sweep_id: str) -> None:
        """``wandb sweep --cancel``: the controller stops the running runs (a SIGTERM each) and hands out none."""
        self._set_state(sweep_id, "CANCELED")

    def pause(self, sweep_id: str) -> None:
        self._set_state(sweep_id, "PAUSED")

    def resume(self, sweep_id: str) -> None:
        self._set_state(sweep_id, "RUNNING")

    def _set_state(self, sweep_id: str, state: str) -> None:
        entity, project, sid = split_id(sweep_id)
        preflight()
        import wandb
        from wandb.apis.public.sweeps import _set_sweep_state

        try:
            _set_sweep_state(wandb.Api(), sid, state, entity=entity, project=project)
        except Exception as exc:  # noqa: BLE001 - "already finished", no network, ...
            raise BackendError(f"W&B sweep '{sweep_id}': {_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _quiet_service_finalizer() -> None:
    """wandb 0.31: W&B's agent calls ``wandb.teardown()`` before every run, and a cleanup request still queued
    for the torn-down service makes wandb's ``wandb-ServiceFinalizer`` thread die with ``AlreadyJoinedError``,
    printing a traceback into the user's terminal. Nothing is lost (that service is gone): keep only that one
    exception of that one thread out of stderr; every other thread exception is shown as before."""
    import threading

    previous = threading.excepthook

    def hook(args: threading.ExceptHookArgs) -> None:
        thread = args.thread.name if args.thread is not None else ""
        if thread == "wandb-ServiceFinalizer" and type(args.exc_value).__name__ == "AlreadyJoinedError":
            return
        previous(args)

    threading.excepthook = hook
