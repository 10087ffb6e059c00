"""The embedded local backend: the sweep's state machine and the agent loop, over a store (SQLite or PostgreSQL).

A search engine (``ignite_sweep.search``: W&B's open-source ``sweeps`` engine for grid, random, bayes and
hyperband) decides configs and early stops; this module enforces what the engine does not: the store's write lock
and exactly-once claims, ``run_cap``, agent ``--count``, heartbeats, retries of crashed runs, re-runs of interrupted
ones, machine faults. Each run executes in a child forked from the warm agent, driven through the run interface
(``execution.runs``) by ``local_runs``; it releases the agent once its end is recorded, so the next run starts while
it finishes its wandb run. Runs are logged with wandb offline, grouped by the sweep's name.
"""

from __future__ import annotations

import contextlib
import functools
import os
import secrets
import signal
import string
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ignite_sweep import faults
from ignite_sweep.backends.base import AgentResult, Backend, RunRecord, SweepRecord
from ignite_sweep.backends.local_runs import (  # noqa: F401 - checkpoint_root: this module's API too
    FAULT_EXIT,
    LocalRuns,
    checkpoint_root,
    eval_metric,
    short_id,
)
from ignite_sweep.errors import BackendError, IgniteSweepError
from ignite_sweep.execution.group_size import GroupSize
from ignite_sweep.execution.process import Interrupts, SharedNote, emit, reap, run_in_child, warm_up
from ignite_sweep.format import fmt
from ignite_sweep.search import SearchEngine, engine_for
from ignite_sweep.states import Ending, end_state
from ignite_sweep.store.sql import LocalStore
from ignite_sweep.sweepfile import is_program_sweep

DEFAULT_RETRIES = 2
NO_METRIC_RUNS = 3  # runs in a row without the sweep's metric before the agent says the sweep is not receiving it
PAUSED = "sweep is paused"


@contextlib.contextmanager
def _waiting_for(finishing: list[int]) -> Any:
    """The agent ends once its runs have finished their wandb runs (their ends are recorded already)."""
    try:
        yield
    finally:
        for pid in finishing:
            reap(pid, block=True)


def end_line(sweep: SweepRecord, row: dict[str, Any]) -> str:
    """The agent's line for a run that ended (``row``: its store row): its state, scores and error; a warning for
    one that logged no result."""
    state, summary = row.get("state", "crashed"), row.get("summary") or {}
    if summary.get("missing_metric"):
        return f"warning: run {row['id']} {state} but {row.get('error')}"
    error = f": {row.get('error')}" if row.get("error") else ""
    return f"run {row['id']} {state}{sweep.scores_text(summary)}{error}"


def _new_id() -> str:
    alphabet = string.ascii_lowercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(8))


class LocalBackend(Backend):
    name = "local"

    def __init__(self, store: LocalStore | None = None):
        self.store = store or LocalStore()
        self.heartbeat_s = float(os.environ.get("IGNITE_SWEEP_HEARTBEAT_S", "5"))
        self.heartbeat_timeout_s = float(os.environ.get("IGNITE_SWEEP_HEARTBEAT_TIMEOUT_S", "60"))
        self._engines: dict[str, SearchEngine] = {}  # sweep id -> its search engine
        self._fault_note = SharedNote()  # what a forked run says of a machine fault that ended it
        self._settled: list[str] = []  # cut-short runs recorded interrupted in the open transaction

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
            self._reap(db, short_id(sweep_id))
        self._forget_settled()
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
        def attempt() -> tuple[dict[str, Any] | None, str]:
            self._settled.clear()  # a claim done again after a rollback settles its runs again
            return self._claim(sweep_id, slot, gpu)

        claimed = self.store.retrying(attempt)
        self._forget_settled()
        return claimed

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
            self._reap(db, sid)
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

    def _reap(self, db: Any, sid: str) -> None:
        """Runs whose process is gone: ``interrupted`` when a machine fault cut them short and their store could not
        say so then (noted on this machine: ``faults.mark_cut_short``), else ``crashed`` (``reap_stale``)."""
        for run_id, fault in faults.cut_short_runs().items():
            if self.store.end_run(run_id, "interrupted", error=fault):  # a run of this store, still 'running'
                self._settled.append(run_id)  # its note goes once the transaction commits (_forget_settled)
        self.store.reap_stale(db, sid, self.heartbeat_timeout_s)

    def _forget_settled(self) -> None:
        while self._settled:
            faults.forget_cut_short(self._settled.pop())

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
                  function: Callable[[], Any] | None = None, fuse: int = 1) -> AgentResult:  # fmt: skip
        """Run the sweep's runs: the built-in trainer, the sweep's program, or ``function`` (what one would hand
        ``wandb.agent``: it calls ``wandb.init()`` and reads ``wandb.config``), each in its own process; with
        ``fuse`` K > 1, the built-in trainer's runs are claimed K at a time and trained together in one process
        (``execution.runs.FusedRun``), each still a run of its own."""
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
        if fuse > 1 and (program or function is not None):
            say(f"--fuse {fuse}: runs of {'a program' if program else 'a function'} cannot train together (only the "
                "built-in trainer's can): one run at a time")  # fmt: skip
            fuse = 1
        if not program:  # a program imports what it needs itself: no torch in the agent
            warm_up("sweeps")
            if fuse > 1:
                from ignite_sweep.training import fused

                fused.warm_up()
        else:
            from ignite_sweep.execution.program import warm_up_programs

            warm_up_programs()
        runs = LocalRuns(self)
        if function is not None:
            trial: Callable[..., int] = functools.partial(runs.program_run, function=function)
        else:
            trial = runs.program_run if program else runs.train_run
        interrupts = Interrupts()
        group_size = GroupSize(fuse, say)
        finishing: list[int] = []  # runs that recorded their end and are finishing their wandb run
        states: dict[str, int] = {}
        tally = {"done": 0, "failures": 0, "without_metric": 0}
        reason, waiting = "", False

        def ended(run: dict[str, Any], shown: bool = True, counted: bool = True) -> dict[str, Any]:
            """One line for a run that ended (unless its fused group's process said it as the run ended), its event,
            and the agent's counts (a failure in a row unless not ``counted``). Returns its store row."""
            row = self.store.run(run["id"]) or {}
            summary = row.get("summary") or {}
            state = row.get("state", "crashed")
            states[state] = states.get(state, 0) + 1
            tally["done"] += 1
            missing = summary.get("missing_metric")
            if shown:
                say(end_line(sweep, {"id": run["id"], **row}))
            emit({"event": "end", "run": run["id"], "state": state, "error": row.get("error"),
                  "metric": summary.get(sweep.metric) if sweep.metric else None,
                  "metrics": {name: summary.get(name) for name, _ in sweep.objectives},
                  "params": run["config"]})  # fmt: skip
            tally["without_metric"] = tally["without_metric"] + 1 if missing else 0
            if tally["without_metric"] == NO_METRIC_RUNS:  # once, when it becomes a pattern
                say(f"warning: the sweep is not receiving its metric: {NO_METRIC_RUNS} runs in a row never "
                    f"logged {missing}; make metric.name in the sweep file a name the program logs")
            if counted:
                tally["failures"] = tally["failures"] + 1 if state in ("failed", "crashed") else 0
            return row

        with self._faults_stop_the_agent(), interrupts.installed(), _waiting_for(finishing):
            while True:
                if interrupts.requested:
                    reason = "interrupted"
                    break
                if count is not None and tally["done"] >= count:
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
                size = group_size.next()  # --fuse K, bounded by what the device holds now
                claimed = [run]  # with --fuse K: up to K (grid, random: K points; bayes, TPE: the first ones pending)
                if size > 1:
                    try:
                        self._claim_more(sweep_id, claimed, min(size, count - tally["done"] if count else size), slot,
                                         gpu)  # fmt: skip
                    except BaseException:  # the store failed, or Ctrl-C twice: none of them started
                        self._never_started(claimed, "the agent stopped before it started the run")
                        raise
                    if interrupts.requested:
                        self._never_started(claimed, "the agent was interrupted before it started the run")
                        reason = "interrupted"
                        break
                for run in claimed:
                    label = " ".join(f"{k}={fmt(v)}" for k, v in run["config"].items())
                    retry = f" (continues {run['retry_of']})" if run.get("retry_of") else ""
                    together = f" (trains with {len(claimed) - 1} more)" if len(claimed) > 1 else ""
                    say(f"run {run['id']} started{retry}{together}: {label}")
                    emit({"event": "start", "run": run["id"], "params": run["config"]})
                if len(claimed) == 1:
                    child = functools.partial(trial, sweep, run, interrupts.interrupted)
                else:
                    child = functools.partial(runs.fused_run, sweep, claimed, interrupts.interrupted,
                                              announce=lambda row: say(end_line(sweep, row)))  # fmt: skip
                outcome = run_in_child(
                    child,
                    interrupts,
                    on_start=lambda pid, claimed=claimed: [self.store.set_pid(r["id"], pid) for r in claimed],
                    release=True,  # once its end is recorded: the next run starts while it finishes its wandb run
                )
                finishing[:] = [pid for pid in finishing if not reap(pid)]
                if outcome.released:
                    finishing.append(outcome.released)
                fault = self._fault_note.take()
                if fault or outcome.code == FAULT_EXIT:  # the machine's, not the run's: stop here, lose nothing
                    for run in claimed:
                        with contextlib.suppress(Exception):
                            if (self.store.run(run["id"]) or {}).get("state") == "running":
                                self.store.end_run(run["id"], "interrupted", error=fault.split(" (", 1)[0])
                    raise BackendError(fault or f"run {claimed[0]['id']} was cut short by a machine fault")
                shown = [len(claimed) == 1] * len(claimed)  # a group's process said its own runs' ends
                if not outcome.ok:  # the child could not record its end itself (end_run keeps one it did)
                    died = Ending(died=outcome.describe(), agent_interrupted=interrupts.requested)
                    state, error = end_state(died)
                    shown = [self.store.end_run(run["id"], state, error=error) or one for run, one in
                             zip(claimed, shown, strict=True)]  # fmt: skip
                group_died = not outcome.ok and len(claimed) > 1  # one process died: one failure, not K
                for run, one in zip(claimed, shown, strict=True):
                    last = ended(run, shown=one, counted=not group_died)
                    group_size.ended(last.get("summary") or {})
                tally["failures"] += group_died
                if tally["failures"] >= max_consecutive_failures:
                    raise BackendError(
                        f"agent stopped: {tally['failures']} runs in a row failed or crashed "
                        f"(--max-consecutive-failures {max_consecutive_failures}); last error: {last.get('error')}"
                    )
        return AgentResult(runs=tally["done"], reason=reason, states=states)

    def _claim_more(self, sweep_id: str, claimed: list[dict[str, Any]], up_to: int, slot: str | None,
                    gpu: str | None) -> None:  # fmt: skip
        """Claim runs into ``claimed`` until it holds ``up_to`` (a fused group: grid and random hand out more
        points; bayes and TPE suggest each with the ones claimed before as pending), or the sweep has none now
        (exhausted, run_cap, stopped, paused: the next claim says why)."""
        while len(claimed) < up_to:
            run, _why = self.claim(sweep_id, slot=slot, gpu=gpu)
            if run is None:
                return
            claimed.append(run)

    def _never_started(self, claimed: list[dict[str, Any]], why: str) -> None:
        """Claimed runs that will not start (Ctrl-C, or the store failed while the group was claimed): recorded
        ``interrupted``, run again first and no attempt spent; noted for the next agent here if the store cannot
        say so now."""
        for run in claimed:
            try:
                self.store.end_run(run["id"], "interrupted", error=why, wait_s=0)
            except Exception:  # noqa: BLE001 - the store is away: the next agent on this machine records it
                faults.mark_cut_short(run["id"], why)

    @contextlib.contextmanager
    def _faults_stop_the_agent(self) -> Any:
        """A machine fault in the agent itself (a claim or a record on a full or read-only store): one line, what
        to do, and that nothing was lost (the store's transaction rolled back whole)."""
        try:
            yield
        except IgniteSweepError:  # a MachineFault too (a store away past the wait): the CLI adds what to do
            raise
        except Exception as exc:
            folders = [Path(self.store.path).parent] if self.store.dialect == "sqlite" else []
            fault = faults.classify(exc, folders, str(self.store))
            if fault is None:
                raise
            raise fault from None

    def _project(self, sweep: SweepRecord) -> str:
        row = self.store.sweep(short_id(sweep.id)) or {}
        return str(row.get("project") or "ignite-sweep")

