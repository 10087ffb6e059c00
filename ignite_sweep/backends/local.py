"""The embedded local backend: the sweep's state machine and the agent loop, over a store (SQLite or PostgreSQL).

A search engine (``ignite_sweep.search``: W&B's open-source ``sweeps`` engine for grid, random, bayes and
hyperband) decides configs and early stops; this module enforces what the engine does not: the store's write lock
and exactly-once claims, ``run_cap``, agent ``--count``, heartbeats, retries of crashed runs, re-runs of interrupted
ones, machine faults. Runs are logged with wandb offline, grouped by the sweep's name.
"""

from __future__ import annotations

import contextlib
import functools
import os
import secrets
import signal
import string
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ignite_sweep import faults
from ignite_sweep.backends.base import AgentResult, Backend, RunRecord, SweepRecord
from ignite_sweep.errors import BackendError, IgniteSweepError
from ignite_sweep.execution.process import (
    Interrupts,
    SharedNote,
    emit,
    interruption,
    run_ending,
    run_in_child,
    warm_up,
)
from ignite_sweep.format import fmt
from ignite_sweep.search import SearchEngine, engine_for
from ignite_sweep.store.sql import LocalStore
from ignite_sweep.sweepfile import is_program_sweep

DEFAULT_RETRIES = 2
FAULT_EXIT = 75  # a run's exit code: a machine fault cut it short (EX_TEMPFAIL)
NO_METRIC_RUNS = 3  # runs in a row without the sweep's metric before the agent says the sweep is not receiving it
PAUSED = "sweep is paused"


def _new_id() -> str:
    alphabet = string.ascii_lowercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(8))


def short_id(sweep_id: str) -> str:
    return sweep_id.split("/", 1)[1] if sweep_id.startswith("local/") else sweep_id


# ---------------------------------------------------------------- scheduling: pure functions over rows


def eval_metric(config: dict[str, Any]) -> str | None:
    """The TrainConfig.metric matching the sweep metric (early stopping and checkpoints follow it)."""
    name = (config.get("metric") or {}).get("name", "")
    name = name.removeprefix("best/")
    return name if name in ("val/accuracy", "val/loss") else None


# ---------------------------------------------------------------- the backend


class LocalBackend(Backend):
    name = "local"

    def __init__(self, store: LocalStore | None = None):
        self.store = store or LocalStore()
        self.heartbeat_s = float(os.environ.get("IGNITE_SWEEP_HEARTBEAT_S", "5"))
        self.heartbeat_timeout_s = float(os.environ.get("IGNITE_SWEEP_HEARTBEAT_TIMEOUT_S", "60"))
        self._engines: dict[str, SearchEngine] = {}  # sweep id -> its search engine
        self._fault_note = SharedNote()  # what a forked run says of a machine fault that ended it

    # -- contract

    def create(self, config: dict[str, Any], project: str | None = None, entity: str | None = None,
               warn: Callable[[str], None] | None = None) -> str:  # fmt: skip
        from ignite_sweep.training.config import DEFAULT_PROJECT

        sweep_id = _new_id()
        name = str(config.get("name") or f"sweep-{sweep_id}")
        retries = int(os.environ.get("IGNITE_SWEEP_RETRIES", DEFAULT_RETRIES))
        self.store.add_sweep(sweep_id, name, config, project or config.get("project") or DEFAULT_PROJECT, retries)
        return f"local/{sweep_id}"

    def sweep(self, sweep_id: str) -> SweepRecord:
        row = self.store.sweep(short_id(sweep_id))
        if row is None:
            known = ", ".join(f"local/{s['id']}" for s in self.store.sweeps()[-5:]) or "none"
            raise BackendError(f"unknown sweep '{sweep_id}' in {self.store} (recent: {known})")
        return SweepRecord(
            id=f"local/{row['id']}", name=row["name"], method=row["config"]["method"], state=row["state"],
            config=row["config"], reason=row["reason"],
        )  # fmt: skip

    def sweeps(self) -> list[SweepRecord]:
        return [
            SweepRecord(
                id=f"local/{r['id']}",
                name=r["name"],
                method=r["config"]["method"],
                state=r["state"],
                config=r["config"],
                reason=r["reason"],
                n_runs=r["n_runs"],
            )  # fmt: skip
            for r in self.store.sweeps()
        ]

    def runs(self, sweep_id: str) -> list[RunRecord]:
        self.sweep(sweep_id)
        with self.store.transaction() as db:  # a run whose process died is never shown as running
            self.store.reap_stale(db, short_id(sweep_id), self.heartbeat_timeout_s)
        records = []
        for row in self.store.runs(short_id(sweep_id), with_history=True):
            end = row["ended_at"] or (time.time() if row["state"] == "running" else None)
            records.append(
                RunRecord(
                    id=row["id"],
                    state=row["state"],
                    config=row["config"],
                    summary=row["summary"],
                    error=row["error"],
                    runtime_s=(end - row["started_at"]) if end else None,
                    slot=row["slot"],
                    history=row["history"],
                    continues=row["retry_of"],
                    resumed_epoch=row.get("resumed_epoch"),
                    wandb_id=row["wandb_id"],
                )  # fmt: skip
            )
        return records

    def stop(self, sweep_id: str) -> None:
        """No new runs; running runs finish (W&B's ``wandb sweep --stop``)."""
        self._change_state(sweep_id, ("running", "paused"), "stopped", "stopped by user")

    def cancel(self, sweep_id: str) -> None:
        """No new runs; running runs stop now (W&B's ``--cancel``): a SIGTERM to those on this host (they end
        at their next iteration through engine.terminate()), a stop request read at the next evaluation by
        those on other hosts. They are recorded ``stopped``."""
        import signal
        import socket

        self._change_state(sweep_id, ("running", "paused"), "canceled", "canceled by user")
        with self.store.transaction() as db:
            running = [r for r in self.store.runs(short_id(sweep_id)) if r["state"] == "running"]
            self.store.request_stop(db, [r["id"] for r in running])
        for run in running:
            if run["pid"] and run["host"] == socket.gethostname():
                try:
                    os.kill(run["pid"], signal.SIGTERM)
                except ProcessLookupError:
                    pass

    def pause(self, sweep_id: str) -> None:
        """No new runs until ``resume``; agents wait, running runs go on (W&B's ``--pause``)."""
        self._change_state(sweep_id, ("running",), "paused", "paused by user")

    def resume(self, sweep_id: str) -> None:
        self._change_state(sweep_id, ("paused",), "running", None)

    def _change_state(self, sweep_id: str, allowed: tuple[str, ...], state: str, reason: str | None) -> None:
        sid = short_id(sweep_id)
        self.sweep(sweep_id)  # unknown: one line naming the store
        with self.store.transaction() as db:
            current = self.store.sweep(sid)["state"]
            if current not in allowed:
                raise BackendError(f"sweep '{sweep_id}' is {current}; allowed from {' | '.join(allowed)}")
            self.store.set_sweep_state(db, sid, state, reason)

    # -- scheduling with the store

    def claim(self, sweep_id: str, slot: str | None = None, gpu: str | None = None
              ) -> tuple[dict[str, Any] | None, str]:  # fmt: skip
        """``_claim``, done again whole while a PostgreSQL store is away (a restart), for a bounded time."""
        return self.store.retrying(lambda: self._claim(sweep_id, slot, gpu))

    def _claim(self, sweep_id: str, slot: str | None = None, gpu: str | None = None
               ) -> tuple[dict[str, Any] | None, str]:  # fmt: skip
        """Atomically pick the next run: an interrupted run's or a crashed run's config again first, then the
        engine's suggestion. Returns (run, reason if None).

        The write lock is held for a few indexed reads and one insert, whatever the sweep's size: the store keeps
        what grid needs (points taken) up to date, random reads no runs, and bayes' Gaussian process runs before
        the lock is taken, on a plain read; inside it, what it decided is checked again (sweep running, no re-run
        due, run_cap)."""
        sid = short_id(sweep_id)
        before = self.store.sweep(sid)
        engine = self.engine(before) if before else None
        prepared = engine.prepare(self.store, before) if engine and before["state"] == "running" else None
        with self.store.transaction() as db:
            sweep = self.store.sweep(sid)
            if sweep is None or engine is None:
                raise BackendError(f"unknown sweep '{sweep_id}'")
            if sweep["state"] != "running":
                return None, PAUSED if sweep["state"] == "paused" else sweep["reason"] or f"sweep is {sweep['state']}"
            config = sweep["config"]
            self.store.reap_stale(db, sid, self.heartbeat_timeout_s)
            running = self.store.any_running(db, sid)

            def finish(reason: str) -> tuple[None, str]:
                if not running:
                    self.store.set_sweep_state(db, sid, "finished", reason)
                return None, reason

            if engine.target_reached(self.store, db, sid):
                return finish(f"metric target {config['metric']['target']} reached")
            run: dict[str, Any] = {"id": _new_id(), "sweep_id": sid, "slot": slot, "gpu": gpu}
            retry = self.store.next_retry(db, sid, sweep["retries"])
            if retry is not None:  # an interrupt is no attempt of the run's own: it spends no retry
                attempt = retry["attempt"] + (retry["state"] == "crashed")
                run.update(config=retry["config"], attempt=attempt, retry_of=retry["id"], grid_key=retry["grid_key"])
            else:
                cap = config.get("run_cap")
                if cap is not None and self.store.count_first_runs(db, sid) >= cap:
                    return finish(f"run_cap {cap} reached")
                suggestions = engine.suggest(self.store, db, sweep, prepared, k=1)
                if not suggestions:
                    return finish(engine.exhausted)
                chosen = suggestions[0]
                run.update(config=chosen.params, grid_key=chosen.grid_key, search_info=chosen.search_info)
            self.store.insert_run(db, run)
            return run, ""

    def engine(self, sweep: dict[str, Any]) -> SearchEngine:
        """The sweep's search engine (``search.engine_for``), made once per agent: a sweep's config never changes."""
        if sweep["id"] not in self._engines:
            self._engines[sweep["id"]] = engine_for(sweep["config"])
        return self._engines[sweep["id"]]

    def report(self, run_id: str, metrics: dict[str, Any]) -> bool:
        """Store one evaluation's metrics; True when the run should stop (hyperband or sweep stopped)."""
        return self.report_many(run_id, [metrics])

    def report_many(self, run_id: str, evaluations: list[dict[str, Any]], wait_s: float | None = None) -> bool:
        """Store evaluations in one transaction, then decide once whether the run should stop (done again whole
        while a PostgreSQL store is away, for at most ``wait_s``; then ``StoreAway``)."""
        return self.store.retrying(lambda: self._report_many(run_id, evaluations), wait_s)

    def _report_many(self, run_id: str, evaluations: list[dict[str, Any]]) -> bool:
        with self.store.transaction() as db:
            for metrics in evaluations:
                self.store.append_history(db, run_id, metrics)
            run = self.store.run(run_id)
            sweep = self.store.sweep(run["sweep_id"]) if run else None
            if run is None or sweep is None:
                return True
            if run["should_stop"] or sweep["state"] == "canceled":  # stop lets running runs finish
                return True
            to_stop = self.engine(sweep).stops(self.store, db, sweep["id"])
            self.store.request_stop(db, to_stop)
            return run_id in to_stop

    def stop_requested(self, run_id: str) -> bool:
        """Whether the run was asked to stop (hyperband on another run's report, ``cancel``), without reporting."""
        run = self.store.run(run_id)
        sweep = self.store.sweep(run["sweep_id"]) if run else None
        return run is None or sweep is None or bool(run["should_stop"]) or sweep["state"] == "canceled"

    # -- the agent

    def run_agent(self, sweep_id: str, count: int | None = None, max_consecutive_failures: int = 5,
                  slot: str | None = None, echo: Callable[[str], None] | None = None,
                  function: Callable[[], Any] | None = None) -> AgentResult:  # fmt: skip
        """Run the sweep's runs: the built-in trainer, the sweep's program, or ``function`` (what one would hand
        ``wandb.agent``: it calls ``wandb.init()`` and reads ``wandb.config``), each in its own process."""
        say = echo or (lambda line: print(line, file=sys.stderr))
        slot = slot or os.environ.get("IGNITE_SWEEP_SLOT")
        gpu = os.environ.get("IGNITE_SWEEP_GPU")
        sweep = self.sweep(sweep_id)
        os.environ.setdefault("WANDB_MODE", "offline")
        if "WANDB_SILENT" not in os.environ:  # the agent prints one line per run instead; a program keeps wandb's own
            os.environ["WANDB_SILENT"] = "true"
            os.environ["IGNITE_SWEEP_SILENCED_WANDB"] = "1"
        program = is_program_sweep(sweep.config)
        if function is None and not program and "command" not in sweep.config:
            raise BackendError(
                f"sweep '{sweep_id}' was made for a function (its parameters are its own): "
                "run it with ignite_sweep.agent(sweep_id, function=...), or give it a program"
            )
        if not program:  # a program imports what it needs itself: no torch in the agent
            warm_up("sweeps")
        else:
            from ignite_sweep.execution.program import warm_up_programs

            warm_up_programs()
        if function is not None:
            trial: Callable[..., int] = functools.partial(self._program_trial, function=function)
        else:
            trial = self._program_trial if program else self._trial
        interrupts = Interrupts()
        states: dict[str, int] = {}
        done, failures, without_metric, reason, waiting = 0, 0, 0, "", False
        with self._faults_stop_the_agent(), interrupts.installed():
            while True:
                if interrupts.requested:
                    reason = "interrupted"
                    break
                if count is not None and done >= count:
                    reason = f"--count {count} reached"
                    break
                run, reason = self.claim(sweep_id, slot=slot, gpu=gpu)
                if run is None and reason == PAUSED:  # as W&B's agent does: wait for `resume`
                    if not waiting:
                        say(f"sweep is paused: waiting (ignite-sweep resume {sweep_id}; Ctrl-C to leave)")
                    waiting = True
                    time.sleep(min(self.heartbeat_s, 1.0))
                    continue
                waiting = False
                if run is None:
                    break
                label = " ".join(f"{k}={fmt(v)}" for k, v in run["config"].items())
                retry = f" (continues {run['retry_of']})" if run.get("retry_of") else ""
                say(f"run {run['id']} started{retry}: {label}")
                emit({"event": "start", "run": run["id"], "params": run["config"]})
                outcome = run_in_child(
                    lambda run=run: trial(sweep, run, interrupts.interrupted),
                    interrupts,
                    on_start=lambda pid, run=run: self.store.set_pid(run["id"], pid),
                )
                fault = self._fault_note.take()
                if fault or outcome.code == FAULT_EXIT:  # the machine's, not the run's: stop here, lose nothing
                    with contextlib.suppress(Exception):
                        if (self.store.run(run["id"]) or {}).get("state") == "running":
                            self.store.end_run(run["id"], "interrupted", error=fault.split(" (", 1)[0])
                    raise BackendError(fault or f"run {run['id']} was cut short by a machine fault")
                if not outcome.ok:  # the child could not record its end itself
                    state = "interrupted" if interrupts.requested else "crashed"
                    self.store.end_run(run["id"], state, error=outcome.describe())
                row = self.store.run(run["id"]) or {}
                state = row.get("state", "crashed")
                states[state] = states.get(state, 0) + 1
                done += 1
                metric = sweep.metric
                value = (row.get("summary") or {}).get(metric) if metric else None
                shown = f" {metric}={value:.4f}" if isinstance(value, float) else ""
                error = f": {row.get('error')}" if row.get("error") else ""
                missing = (row.get("summary") or {}).get("missing_metric")
                if missing:  # a run that logged no result: one warning line
                    say(f"warning: run {run['id']} {state} but {row.get('error')}")
                else:
                    say(f"run {run['id']} {state}{shown}{error}")
                emit({"event": "end", "run": run["id"], "state": state, "metric": value, "error": row.get("error"),
                      "params": run["config"]})  # fmt: skip
                without_metric = without_metric + 1 if missing else 0
                if without_metric == NO_METRIC_RUNS:  # once, when it becomes a pattern
                    say(f"warning: the sweep is not receiving its metric: {without_metric} runs in a row never "
                        f"logged {missing}; make metric.name in the sweep file a name the program logs")
                failures = failures + 1 if state in ("failed", "crashed") else 0
                if failures >= max_consecutive_failures:
                    raise BackendError(
                        f"agent stopped: {failures} runs in a row failed or crashed "
                        f"(--max-consecutive-failures {max_consecutive_failures}); last error: {row.get('error')}"
                    )
        return AgentResult(runs=done, reason=reason, states=states)

    @contextlib.contextmanager
    def _faults_stop_the_agent(self) -> Any:
        """A machine fault in the agent itself (a claim or a record on a full or read-only store): one line, what
        to do, and that nothing was lost (the store's transaction rolled back whole)."""
        try:
            yield
        except faults.MachineFault as fault:  # a store away for longer than the wait, say
            raise BackendError(fault.advice()) from None
        except IgniteSweepError:
            raise
        except Exception as exc:
            folders = [Path(self.store.path).parent] if self.store.dialect == "sqlite" else []
            fault = faults.classify(exc, folders, str(self.store))
            if fault is None:
                raise
            raise BackendError(fault.advice()) from None

    def _trial(self, sweep: SweepRecord, run: dict[str, Any], agent_interrupted: Callable[[], bool]) -> int:
        """In the forked child: train one run, log it offline, record how it ended. Returns the exit code.

        A run stopped by a signal because its agent was interrupted (or by Ctrl-C/SIGHUP reaching it directly)
        is ``interrupted``; stopped by the sweep (hyperband, target, ``ignite-sweep stop``) it is ``stopped``."""
        import wandb

        from ignite_sweep.training.config import TrainConfig
        from ignite_sweep.training.train import readable_checkpoint, train

        store = LocalStore(self.store.url, wait_on_open=True)  # never share a connection across fork
        child = LocalBackend(store)
        run_id = run["id"]
        stop_beating = threading.Event()

        def beat() -> None:
            own = LocalStore(store.url, wait_on_open=True)  # sqlite connections belong to one thread
            own.wait_s = 0  # a server away: the next beat tries again (the run trains on)
            while not stop_beating.wait(self.heartbeat_s):
                with contextlib.suppress(faults.StoreAway):
                    own.heartbeat(run_id)
            own.close()

        threading.Thread(target=beat, daemon=True, name="ignite-sweep-heartbeat").start()
        starting: Future | None = None
        try:
            values = dict(run["config"])
            metric = eval_metric(sweep.config)
            if metric and "metric" not in values:
                values["metric"] = metric
            cfg = TrainConfig.from_dict(values)
            folder = checkpoint_root() / short_id(sweep.id)
            retry_of = run.get("retry_of")
            # A retry that resumes a checkpoint goes on logging to the W&B run it continues (offline, a folder of
            # its own with the same run id: `wandb sync` of both folders makes one run, steps continuing).
            wandb_id, resume = run_id, None
            if retry_of and readable_checkpoint(folder / retry_of) is not None:
                wandb_id, resume = (store.run(retry_of) or {}).get("wandb_id") or retry_of, "allow"
                store.heartbeat(run_id, wandb_id=wandb_id)
                # The agent's shared wandb service may still hold the dead run's id ("run ID ... is in use"):
                # this run gets a service of its own (as `wandb agent` gives its runs), about a second more.
                os.environ.pop(wandb.env.SERVICE, None)
            # wandb.init (about half a second) runs while train() loads the data and builds the model.
            starting = ThreadPoolExecutor(1).submit(
                wandb.init, id=wandb_id, resume=resume, project=self._project(sweep), group=sweep.name,
                job_type="sweep-run", tags=[f"local-sweep-{short_id(sweep.id)}"], config=run["config"],
            )  # fmt: skip

            pending: list[dict[str, Any]] = []  # evaluations a store that is away has not recorded yet

            def reporter(metrics: dict[str, Any]) -> bool:
                emit({"event": "eval", "run": run_id, "epoch": metrics.get("epoch"), "metrics": metrics})
                pending.append(metrics)
                try:  # while the store is away the run trains on; its evaluations go in, in order, once it is back
                    stop = child.report_many(run_id, pending, wait_s=0)
                except faults.StoreAway as away:
                    if len(pending) == 1:
                        print(f"warning: run {run_id}: {away}: training goes on, its evaluations are recorded when "
                              "the store is back", file=sys.stderr)  # fmt: skip
                    return False
                pending.clear()
                return stop

            def resumed(epoch: int) -> None:  # the history of the run it continues, up to the checkpoint
                with store.transaction() as db:
                    store.resume_run(db, run_id, retry_of, epoch)
                emit({"event": "resume", "run": run_id, "epoch": epoch})

            summary = train(cfg, reporter=reporter, run=starting, checkpoint_dir=folder / run_id,
                            resume_from=folder / retry_of if retry_of else None, on_resume=resumed,
                            interrupted=lambda stopped_by: interruption(stopped_by, agent_interrupted()))  # fmt: skip
            run_ending()
            if pending:  # the store was away at the last evaluations: wait for it (bounded) to record them
                child.report_many(run_id, pending)
            summary["cuda_visible_devices"] = os.environ.get("CUDA_VISIBLE_DEVICES")  # as the run saw it
            store.heartbeat(run_id, run_dir=os.path.dirname(starting.result().dir))
        except faults.MachineFault as fault:  # the store away for longer than the wait, say
            return self._cut_short(store, run_id, fault, starting)
        except IgniteSweepError as exc:
            store.end_run(run_id, "failed", error=str(exc))
            return _finish(starting, 1)
        except KeyboardInterrupt:  # a second Ctrl-C: no final evaluation
            store.end_run(run_id, "interrupted", error="interrupted twice: ended without its final evaluation")
            return _finish(starting, 1)
        except Exception as exc:  # noqa: BLE001 - any error in a run fails that run only, unless the machine's
            fault = faults.classify(exc, self._run_folders(sweep), str(store))
            if fault is not None:
                return self._cut_short(store, run_id, fault, starting)
            store.end_run(run_id, "failed", error=run_error(exc, run["config"]))
            return _finish(starting, 1)
        finally:
            stop_beating.set()
        try:
            status = summary["status"]
            if status == "interrupted":
                reached = f"interrupted ({summary['stopped_by']}) after {summary['epochs_completed']} epochs"
                store.end_run(run_id, "interrupted", summary, error=reached)
                return _finish(starting, 1)
            if status == "diverged":
                store.end_run(run_id, "failed", summary, error="diverged: the loss became NaN or infinite")
            else:
                store.end_run(run_id, "stopped" if status == "stopped" else "finished", summary)
            return _finish(starting, 0)
        except Exception as exc:  # recording the end failed: the store's disk, say
            fault = faults.classify(exc, self._run_folders(sweep), str(store))
            if fault is None:
                raise
            return self._cut_short(store, run_id, fault, starting)

    def _run_folders(self, sweep: SweepRecord) -> list[Path]:
        """Where a run writes: its checkpoints, its W&B folder, the store's folder (SQLite)."""
        folders = [checkpoint_root() / short_id(sweep.id), Path(os.environ.get("WANDB_DIR") or ".") / "wandb"]
        return folders + ([Path(self.store.path).parent] if self.store.dialect == "sqlite" else [])

    def _cut_short(self, store: LocalStore, run_id: str, fault: faults.MachineFault, starting: Future | None) -> int:
        """A machine fault ended the run: ``interrupted`` (no result, run again first, no attempt spent) if the
        store can still say so; either way the agent learns it through the shared note and stops."""
        self._fault_note.write(fault.advice())
        with contextlib.suppress(Exception):
            store.end_run(run_id, "interrupted", error=str(fault), wait_s=0)
        with contextlib.suppress(Exception):
            _finish(starting, 1)
        return FAULT_EXIT

    def _program_trial(self, sweep: SweepRecord, run: dict[str, Any], agent_interrupted: Callable[[], bool],
                       function: Callable[[], Any] | None = None) -> int:  # fmt: skip
        """In the forked child: run the sweep's program as ``wandb agent`` would (or ``function``, forked, as
        ``wandb.agent`` would call it), feed what it logs to the sweep while it trains (hyperband, target, the
        live view), stop it when the sweep says so, record how it ended."""
        from ignite_sweep.execution.program import (
            ProgramRun,
            build_command,
            final_metrics,
            find_run_file,
            function_env,
            numbers,
            program_env,
            run_environment,
            sweep_folder,
        )

        store = LocalStore(self.store.url, wait_on_open=True)  # never share a connection across fork
        child = LocalBackend(store)
        run_id, sid = run["id"], short_id(sweep.id)
        caught: list[str] = []
        for sig in Interrupts.SIGNALS:  # the agent interrupted: stop the program gracefully, then record it
            signal.signal(sig, lambda signum, _f: caught.append(signal.Signals(signum).name))
        wandb_dir = os.environ.get("WANDB_DIR") or os.getcwd()
        metric = sweep.metric
        started = time.time()
        try:
            folder = os.path.abspath(wandb_dir)
            if function is None:
                argv, run_env = build_command(sweep.config, run_id, run["config"], sid, folder)
            else:
                argv, run_env = None, run_environment(run_id, run["config"], sid, folder)
            # WANDB_SWEEP_ID as `wandb agent` sets it (scripts gate wandb.init on it); `sync` registers the sweep
            run_env.update(WANDB_SWEEP_ID=sid, WANDB_PROJECT=self._project(sweep), WANDB_RUN_GROUP=sweep.name,
                           WANDB_JOB_TYPE="sweep-run", WANDB_TAGS=f"local-sweep-{sid}")  # fmt: skip
            metrics_path = sweep_folder(folder, sid) / f"metrics-{run_id}.jsonl"
            make_env = program_env if function is None else function_env
            program = ProgramRun(argv, make_env(dict(os.environ), run_env, metrics_path), metrics_path,
                                 function=function).start()  # fmt: skip
        except (OSError, ValueError, KeyError) as exc:
            store.end_run(run_id, "failed", error=f"cannot start the program: {exc}")
            return 0
        last: dict[str, Any] = {}
        evaluations = 0
        stopped_by: str | None = None
        next_beat = next_check = time.monotonic()
        try:
            while True:
                code = program.poll()
                evaluated = []
                for row in map(numbers, program.new_rows()):
                    last.update(row)
                    if metric and metric in row:
                        evaluations += 1
                        evaluated.append(row)
                        emit({"event": "eval", "run": run_id, "epoch": evaluations, "metrics": row})
                # one transaction and one stop decision per poll, however many rows arrived
                if evaluated and child.report_many(run_id, evaluated) and stopped_by is None and code is None:
                    stopped_by = "sweep"
                    program.stop()
                if code is not None:
                    break
                now = time.monotonic()
                if caught and stopped_by is None:  # SIGTERM from `cancel`, or the agent interrupted
                    stopped_by = caught[0]
                    program.stop()
                if now >= next_check and stopped_by is None:
                    next_check = now + 1.0
                    if child.stop_requested(run_id):
                        stopped_by = "sweep"
                        program.stop()
                if now >= next_beat:
                    next_beat = now + self.heartbeat_s
                    store.heartbeat(run_id)
                time.sleep(0.1)
        except faults.MachineFault as fault:  # the store away for longer than the wait: stop here, lose nothing
            program.kill_now()
            return self._cut_short(store, run_id, fault, None)
        except BaseException:  # the supervisor itself failed: nothing of the program may outlive it
            program.kill_now()
            raise
        run_file = find_run_file(wandb_dir, run_id)
        rows, final = final_metrics(run_file)
        if evaluations == 0 and rows:  # the hook saw nothing (not Python, say): the history from the .wandb file
            kept = [v for v in map(numbers, rows) if v and (metric is None or metric in v)]
            with store.transaction() as db:
                for values in kept:
                    store.append_history(db, run_id, values)
            evaluations = sum(metric in v for v in kept) if metric else 0
        summary: dict[str, Any] = {**numbers(last), **numbers(final)}
        summary.update(exit_code=code, run_time_s=round(time.time() - started, 3), stopped_by=stopped_by,
                       cuda_visible_devices=os.environ.get("CUDA_VISIBLE_DEVICES"))  # fmt: skip
        if run_file is not None:
            store.heartbeat(run_id, run_dir=str(run_file.parent))
        state, error = program_outcome(code, stopped_by, agent_interrupted(), program.killed,
                                       program.last_error_line)  # fmt: skip
        if state == "failed" and (fault := faults.from_line(error or "", self._run_folders(sweep)[1:])):
            return self._cut_short(store, run_id, fault, None)  # the machine's fault, not the program's
        if state == "finished" and metric and evaluations == 0 and metric not in summary:
            summary["missing_metric"] = metric  # no result: bayes leaves it out, the agent says so
            error = missing_metric_note(metric, [*last, *final])
        summary["status"] = state
        store.end_run(run_id, state, summary, error=error)
        return 0

    def _project(self, sweep: SweepRecord) -> str:
        row = self.store.sweep(short_id(sweep.id)) or {}
        return str(row.get("project") or "ignite-sweep")


def checkpoint_root() -> Path:
    """Where runs keep their resume checkpoints: ``IGNITE_SWEEP_CHECKPOINTS``, else ``$IGNITE_SWEEP_DIR/checkpoints``.
    On a cluster, a folder every node sees (a retry may run on another node)."""
    explicit = os.environ.get("IGNITE_SWEEP_CHECKPOINTS")
    return Path(explicit or Path(os.environ.get("IGNITE_SWEEP_DIR", ".ignite-sweep")) / "checkpoints").expanduser()


def program_outcome(code: int, stopped_by: str | None, agent_interrupted: bool, killed: bool,
                    last_line: Callable[[], str]) -> tuple[str, str | None]:  # fmt: skip
    """How a program (or function) run ended: (state, error). A stop by the sweep (hyperband, target, ``cancel``)
    is ``stopped`` even if Ctrl-C comes during its kill delay; a signal from outside the sweep is ``interrupted``
    when the agent was interrupted (or it was SIGINT/SIGHUP), and is run again."""
    note = " (killed after --kill-delay)" if killed else ""
    if interruption(stopped_by, agent_interrupted):
        return "interrupted", f"interrupted ({stopped_by}){note}"
    if stopped_by is not None:
        return "stopped", f"stopped by the sweep{note}" if note else None
    if code == 0:
        return "finished", None
    if code > 0:
        return "failed", last_line() or f"exited with code {code}"
    try:
        name = signal.Signals(-code).name
    except ValueError:
        name = f"signal {-code}"
    return "crashed", f"killed by {name}"


def run_error(exc: BaseException, params: dict[str, Any]) -> str:
    """A failed run's one-line error; running out of GPU memory names what to change."""
    first = str(exc).splitlines()[0] if str(exc) else ""
    if type(exc).__name__ == "OutOfMemoryError" or "CUDA out of memory" in first:
        shown = ", ".join(f"{k} {fmt(params.get(k))}" for k in ("batch_size", "model") if k in params)
        return (f"CUDA out of memory with {shown or 'this config'} (lower batch_size, or set amp: true): "
                f"{first[:160]}")
    return f"{type(exc).__name__}: {first}"


def missing_metric_note(metric: str, logged: list[str]) -> str:
    """A run's note when it never logged the sweep's metric: what it did log, and the closest name."""
    import difflib

    names = sorted({n for n in logged if not n.startswith("_")})
    if not names:
        return f"never logged {metric} (the sweep's metric) nor anything else: does it call wandb.init and wandb.log?"
    close = difflib.get_close_matches(metric, names, n=1, cutoff=0.3)
    shown = ", ".join(names[:8]) + (f" and {len(names) - 8} more" if len(names) > 8 else "")
    return f"never logged {metric} (the sweep's metric); it logged {shown}" + (f": did you mean {close[0]}?" if close
                                                                                else "")


def _finish(starting: Future | None, code: int) -> int:
    """Finish the wandb run if it was started (wandb.init may itself have failed)."""
    if starting is not None and starting.exception() is None:
        starting.result().finish(exit_code=code)
    return 0  # the end was recorded; a non-zero exit means "crashed before recording"
