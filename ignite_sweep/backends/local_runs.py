"""How a local sweep's runs execute and record their end, in the forked child the agent loop starts for each.

One driver, ``LocalRuns.execute``, for every kind of run behind ``execution.runs.Run``: ``train_run`` makes the
built-in Ignite trainer's (``TrainerRun``: logged with wandb offline, resumed from a crashed or interrupted
predecessor's checkpoint), ``program_run`` a user program's or function's (``UserRun``: run as ``wandb agent`` runs
it, its metrics read live). The driver beats the run's heartbeat, hands its evaluations to the store as they come
(``StoreSink``: kept while a PostgreSQL store is away, the engine asked for stops), and records how it ended, once,
as ``states.end_state`` decides: ``finished``, ``stopped`` (by the sweep), ``failed`` (its own failure: it raised,
diverged, ran out of GPU memory), ``interrupted`` (Ctrl-C, or a machine fault: then the agent stops,
``faults.py``); the child's exit tells the agent the rest (``crashed``).
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ignite_sweep import faults
from ignite_sweep.backends.base import SweepRecord
from ignite_sweep.execution.process import emit, release_agent
from ignite_sweep.execution.runs import (
    FusedRun,
    Outcome,
    Run,
    Sink,
    StartError,
    TrainerRun,
    UserRun,
    failure,
    starting,
)
from ignite_sweep.states import Ending, end_state
from ignite_sweep.store.sql import LocalStore

FAULT_EXIT = 75  # a run's exit code: a machine fault cut it short (EX_TEMPFAIL)


def short_id(sweep_id: str) -> str:
    return sweep_id.split("/", 1)[1] if sweep_id.startswith("local/") else sweep_id


def eval_metric(config: dict[str, Any]) -> str | None:
    """The TrainConfig.metric matching the sweep metric (early stopping and checkpoints follow it)."""
    name = (config.get("metric") or {}).get("name", "")
    name = name.removeprefix("best/")
    return name if name in ("val/accuracy", "val/loss") else None


class StoreSink(Sink):
    """A run's evaluations recorded in the sweep's store as they come, the sweep's engine asked for stops; while a
    PostgreSQL store is away the run trains on and its evaluations wait, in order, until it is back."""

    def __init__(self, run_id: str, backend: Any, store: LocalStore, retry_of: str | None, queue: bool) -> None:
        super().__init__(run_id)
        self.backend, self.store, self.retry_of, self.queue = backend, store, retry_of, queue
        self.pending: list[dict[str, Any]] = []

    def record(self, evaluations: list[dict[str, Any]]) -> bool:
        if not self.queue:  # wait for the store (bounded), then ``StoreAway``
            return self.backend.report_many(self.run_id, evaluations)
        self.pending.extend(evaluations)
        try:
            stop = self.backend.report_many(self.run_id, self.pending, wait_s=0)
        except faults.StoreAway as away:
            if len(self.pending) == len(evaluations):
                print(f"warning: run {self.run_id}: sweep store {away.path} is {away.cause}: training goes on, "
                      "its evaluations are recorded when the store is back", file=sys.stderr)  # fmt: skip
            return False
        self.pending.clear()
        return stop

    def flush(self) -> None:
        """The store was away at the last evaluations: wait for it (bounded) to record them."""
        if self.pending:
            self.backend.report_many(self.run_id, self.pending)
            self.pending.clear()

    def stop_requested(self) -> bool:
        return self.backend.stop_requested(self.run_id)

    def resumed(self, epoch: int) -> None:  # the history of the run it continues, up to the checkpoint
        with self.store.transaction() as db:
            self.store.resume_run(db, self.run_id, self.retry_of, epoch)
        super().resumed(epoch)


class LocalRuns:
    """How the runs of one local agent (``backend``: its store, heartbeat, shared fault note and project) execute,
    each in the child the agent forked for it: one driver (``execute``) for every kind of run
    (``execution.runs``), which records how it ended, once, as ``states.end_state`` decides."""

    def __init__(self, backend: Any) -> None:
        self.backend = backend
        self.fault: faults.MachineFault | None = None  # the machine fault that cut this process's run short

    def train_run(self, sweep: SweepRecord, run: dict[str, Any], agent_interrupted: Callable[[], bool]) -> int:
        """The built-in trainer. A retry that resumes a checkpoint goes on logging to the W&B run it continues
        (offline, a folder of its own with the same run id: `wandb sync` of both folders makes one run, steps
        continuing)."""
        return self.execute(sweep, run, lambda store: self.trainer_run(store, sweep, run, agent_interrupted),
                            TrainerRun)  # fmt: skip

    def trainer_run(self, store: LocalStore, sweep: SweepRecord, run: dict[str, Any],
                    agent_interrupted: Callable[[], bool], together: bool = False) -> TrainerRun:  # fmt: skip
        """``run`` as a ``TrainerRun`` (its wandb run to be started, one more of this process's when ``together``)."""
        import wandb

        from ignite_sweep.training.train import readable_checkpoint

        run_id, retry_of = run["id"], run.get("retry_of")
        values = dict(run["config"])
        metric = eval_metric(sweep.config)
        if metric and "metric" not in values:
            values["metric"] = metric
        folder = checkpoint_root() / short_id(sweep.id)
        wandb_id, resume = run_id, None
        if retry_of and readable_checkpoint(folder / retry_of) is not None:
            wandb_id, resume = (store.run(retry_of) or {}).get("wandb_id") or retry_of, "allow"
            store.heartbeat(run_id, wandb_id=wandb_id)
            # The agent's shared wandb service may still hold the dead run's id ("run ID ... is in use"):
            # this run gets a service of its own (as `wandb agent` gives its runs), about a second more.
            os.environ.pop(wandb.env.SERVICE, None)
        init = functools.partial(  # about half a second, while train() loads the data and builds the model
            wandb.init, id=wandb_id, resume=resume, project=self.backend._project(sweep), group=sweep.name,
            job_type="sweep-run", tags=[f"local-sweep-{short_id(sweep.id)}"], config=run["config"],
            **({"reinit": "create_new"} if together else {}),
        )  # fmt: skip
        return TrainerRun(values, init=init, checkpoint_dir=folder / run_id,
                          resume_from=folder / retry_of if retry_of else None,
                          agent_interrupted=agent_interrupted)  # fmt: skip

    def fused_run(self, sweep: SweepRecord, runs: list[dict[str, Any]], agent_interrupted: Callable[[], bool],
                  announce: Callable[[dict[str, Any]], None] | None = None) -> int:  # fmt: skip
        """In the forked child: the claimed ``runs`` trained together (``FusedRun``), each one a run of its own: its
        heartbeat, its evaluations to the store as they come, its end recorded (and its wandb run finished, and
        ``announce`` told its row) as it ends while the others train on. A run whose config is bad fails alone. The
        agent is released once every end is recorded. Returns the child's exit code, as ``execute``'s."""
        store = self.open_store(*(run["id"] for run in runs))
        if store is None:
            return FAULT_EXIT
        sinks = [StoreSink(run["id"], type(self.backend)(store), store, run.get("retry_of"), True) for run in runs]
        stop_beating = self._beat(store.url, *(run["id"] for run in runs))
        folders = self.run_folders(sweep)
        members: list[tuple[dict[str, Any], StoreSink, TrainerRun]] = []
        ended: set[str] = set()

        def end(run: dict[str, Any], sink: StoreSink, outcome: Outcome, the_run: TrainerRun | None) -> None:
            if the_run is not None:
                sink.flush()
            code = self.ended(store, run["id"], outcome, the_run, folders, release=False)
            ended.add(run["id"])
            emit({"event": "left", "run": run["id"], "state": end_state(outcome.ending)[0]})  # the pool's row goes
            if announce is not None:
                announce({"id": run["id"], **(store.run(run["id"]) or {})})
            if code == FAULT_EXIT and self.fault is not None:  # the machine's: the group's other runs stop too
                raise self.fault

        def failed(run: dict[str, Any], sink: StoreSink, the_run: TrainerRun, exc: Exception) -> None:
            """What trained ``run`` raised: that run failed, unless the machine's fault (then the group stops)."""
            fault = exc if isinstance(exc, faults.MachineFault) else faults.classify(exc, folders, str(store))
            if fault is not None:
                raise fault
            end(run, sink, Outcome(failure(exc, run["config"])), the_run)

        try:
            for run, sink in zip(runs, sinks, strict=True):
                try:
                    members.append((run, sink, self.trainer_run(store, sweep, run, agent_interrupted, together=True)))
                except Exception as exc:  # noqa: BLE001 - its config: that run fails, the others train
                    end(run, sink, Outcome(failure(exc, run["config"])), None)
            if members:
                group = FusedRun([m for _, _, m in members], on_alone=lambda i, why: print(
                    f"run {members[i][0]['id']} trains alone: {why}", file=sys.stderr))  # fmt: skip
                group.start()
                group.wait([sink for _, sink, _ in members],
                           lambda i, outcome: end(*members[i][:2], outcome, members[i][2]),
                           lambda i, exc: failed(*members[i], exc))  # fmt: skip
        except faults.MachineFault as fault:
            for run, _, the_run in members:
                if run["id"] not in ended:
                    self.cut_short(store, run["id"], fault, the_run)
            return FAULT_EXIT
        except BaseException as exc:  # noqa: BLE001 - as execute: the group's error fails its runs, unless the machine's
            fault = faults.classify(exc, folders, str(store)) if isinstance(exc, Exception) else None
            left = [(run, sink, the_run) for run, sink, the_run in members if run["id"] not in ended]
            if fault is not None:
                for run, _, the_run in left:
                    self.cut_short(store, run["id"], fault, the_run)
                return FAULT_EXIT
            if not isinstance(exc, Exception | KeyboardInterrupt):
                raise
            for run, sink, the_run in left:
                end(run, sink, Outcome(failure(exc, run["config"])), the_run)
        finally:
            stop_beating.set()
        release_agent()
        return 0

    def program_run(self, sweep: SweepRecord, run: dict[str, Any], agent_interrupted: Callable[[], bool],
                    function: Callable[[], Any] | None = None) -> int:  # fmt: skip
        """The sweep's program as ``wandb agent`` would run it (or ``function``, forked, as ``wandb.agent`` would
        call it), what it logs fed to the sweep while it trains (hyperband, target, the live view)."""
        from ignite_sweep.execution.program import (
            build_command,
            function_env,
            program_env,
            run_environment,
            sweep_folder,
        )

        def make(store: LocalStore) -> Run:
            run_id, sid = run["id"], short_id(sweep.id)
            wandb_dir = os.environ.get("WANDB_DIR") or os.getcwd()
            with starting():
                folder = os.path.abspath(wandb_dir)
                if function is None:
                    argv, run_env = build_command(sweep.config, run_id, run["config"], sid, folder)
                else:
                    argv, run_env = None, run_environment(run_id, run["config"], sid, folder)
                # WANDB_SWEEP_ID as `wandb agent` sets it (scripts gate wandb.init on it); `sync` registers it
                run_env.update(WANDB_SWEEP_ID=sid, WANDB_PROJECT=self.backend._project(sweep),
                               WANDB_RUN_GROUP=sweep.name, WANDB_JOB_TYPE="sweep-run",
                               WANDB_TAGS=f"local-sweep-{sid}")  # fmt: skip
                metrics_path = sweep_folder(folder, sid) / f"metrics-{run_id}.jsonl"
                env = (program_env if function is None else function_env)(dict(os.environ), run_env, metrics_path)
            return UserRun(argv, env, metrics_path, sweep.metric, run_id, wandb_dir, function=function,
                           agent_interrupted=agent_interrupted)  # fmt: skip

        return self.execute(sweep, run, make, UserRun)

    def execute(self, sweep: SweepRecord, run: dict[str, Any], make: Callable[[LocalStore], Run],
                kind: type[Run]) -> int:  # fmt: skip
        """In the forked child: make the run, start it, let it train while a thread beats its heartbeat and its
        evaluations go to the store, and record how it ended. Returns the child's exit code (0: its end was
        recorded; ``FAULT_EXIT``: a machine fault cut it short; anything else: crashed before recording)."""
        run_id = run["id"]
        store = self.open_store(run_id)  # never share a connection across fork
        if store is None:
            return FAULT_EXIT
        sink = StoreSink(run_id, type(self.backend)(store), store, run.get("retry_of"), kind.trains_through_outages)
        stop_beating = self._beat(store.url, run_id)
        the_run: Run | None = None
        folders = self.run_folders(sweep)[(0 if kind.writes_checkpoints else 1):]
        try:
            the_run = make(store)
            the_run.start()
            outcome = the_run.wait(sink)
            sink.flush()
        except faults.MachineFault as fault:  # the store away for longer than the wait, say
            return self.cut_short(store, run_id, fault, the_run)
        except StartError as exc:
            cause = exc.__cause__
            fault = faults.classify(cause, folders, str(store)) if isinstance(cause, OSError) else None
            if fault is not None:  # its parameter files could not be written: the machine's
                return self.cut_short(store, run_id, fault, None)
            return self.record_end(store, run_id, Outcome(Ending(raised=str(exc))), the_run)
        except BaseException as exc:  # noqa: BLE001 - a run's error fails that run only, unless the machine's
            fault = faults.classify(exc, folders, str(store)) if isinstance(exc, Exception) else None
            if fault is not None:
                return self.cut_short(store, run_id, fault, the_run)
            if not kind.failure_is_the_runs or not isinstance(exc, Exception | KeyboardInterrupt):
                raise
            return self.record_end(store, run_id, Outcome(failure(exc, run["config"])), the_run)
        finally:
            stop_beating.set()
        return self.ended(store, run_id, outcome, the_run, folders)

    def ended(self, store: LocalStore, run_id: str, outcome: Outcome, the_run: Run | None, folders: list[Path],
              release: bool = True) -> int:  # fmt: skip
        """Record how the run ended (what it found only at its end too), then finish its wandb run; a machine fault
        on the way (the store's disk, say) cuts it short. Returns ``execute``'s exit code."""
        try:
            if outcome.history:  # evaluations found only at its end (a program the live hook did not see)
                with store.transaction() as db:
                    for values in outcome.history:
                        store.append_history(db, run_id, values)
            if outcome.run_dir:
                store.heartbeat(run_id, run_dir=outcome.run_dir)
            state, error = end_state(outcome.ending)
            if state == "failed" and outcome.ending.code is not None and (fault := faults.from_line(error or "",
                                                                                                    folders)):
                return self.cut_short(store, run_id, fault, the_run)  # the machine's fault, not the program's
            return self.record_end(store, run_id, outcome, the_run, release)
        except Exception as exc:  # recording the end failed: the store's disk, say
            fault = faults.classify(exc, folders, str(store))
            if fault is None:
                raise
            return self.cut_short(store, run_id, fault, the_run)

    def _beat(self, url: str, *run_ids: str) -> threading.Event:
        """Beat the runs' heartbeats every ``heartbeat_s`` on a connection of the thread's own until the returned
        event is set (a run that has ended is left as it is); a beat that fails (the store away, busy, full) is
        tried again at the next one."""
        stop = threading.Event()

        def beat() -> None:
            own: LocalStore | None = None  # sqlite connections belong to one thread
            while not stop.wait(self.backend.heartbeat_s):
                try:
                    if own is None:
                        own = LocalStore(url)
                        own.wait_s = 0
                    for run_id in run_ids:
                        own.heartbeat(run_id)
                except Exception:  # noqa: BLE001 - the run trains on; its end is recorded with a wait
                    pass
            if own is not None:
                own.close()

        threading.Thread(target=beat, daemon=True, name="ignite-sweep-heartbeat").start()
        return stop

    @staticmethod
    def record_end(store: LocalStore, run_id: str, outcome: Outcome, the_run: Run | None, release: bool = True) -> int:
        """Record the run's end (its state from ``states.end_state``), then finish its wandb run: exit code 1
        for a run that raised or was interrupted (a diverged run's wandb run ends 0: its summary says so)."""
        state, error = end_state(outcome.ending)
        summary = the_run.settled(outcome, state) if the_run is not None else outcome.summary
        store.end_run(run_id, state, summary, error=error)
        if release:  # recorded: the agent goes on to the next run while this one finishes its wandb run
            release_agent()
        if the_run is not None:
            the_run.finish(1 if outcome.ending.raised is not None or state == "interrupted" else 0)
        return 0  # the end was recorded; a non-zero exit means "crashed before recording"

    def open_store(self, *run_ids: str) -> LocalStore | None:
        """The runs' own connection to the store (waiting for a PostgreSQL server that is away); None when the
        machine failed it (the agent learns why through the shared note and stops; the runs are noted cut short)."""
        try:
            return LocalStore(self.backend.store.url, wait_on_open=True)
        except Exception as exc:  # noqa: BLE001 - classified below, else raised
            fault = faults.classify(exc, [], str(self.backend.store))  # away past the wait, a full or read-only disk
            if fault is None:
                raise
            self.backend._fault_note.write(fault.advice())
            for run_id in run_ids:
                faults.mark_cut_short(run_id, str(fault))
            return None

    def run_folders(self, sweep: SweepRecord) -> list[Path]:
        """Where a run writes: its checkpoints, its W&B folder, the store's folder (SQLite)."""
        folders = [checkpoint_root() / short_id(sweep.id), Path(os.environ.get("WANDB_DIR") or ".") / "wandb"]
        return folders + ([Path(self.backend.store.path).parent] if self.backend.store.dialect == "sqlite" else [])

    def cut_short(self, store: LocalStore, run_id: str, fault: faults.MachineFault, the_run: Run | None) -> int:
        """A machine fault ended the run: ``interrupted`` (no result, run again first, no attempt spent) if the
        store can still say so; either way the agent learns it through the shared note and stops."""
        self.fault = fault
        self.backend._fault_note.write(fault.advice())
        try:
            store.end_run(run_id, "interrupted", error=str(fault), wait_s=0)
        except Exception:  # noqa: BLE001 - the store is the fault: the next agent on this machine records it
            faults.mark_cut_short(run_id, str(fault))
        if the_run is not None:
            with contextlib.suppress(Exception):
                the_run.finish(1)
        return FAULT_EXIT


def checkpoint_root() -> Path:
    """Where runs keep their resume checkpoints: ``IGNITE_SWEEP_CHECKPOINTS``, else ``$IGNITE_SWEEP_DIR/checkpoints``.
    On a cluster, a folder every node sees (a retry may run on another node)."""
    explicit = os.environ.get("IGNITE_SWEEP_CHECKPOINTS")
    return Path(explicit or Path(os.environ.get("IGNITE_SWEEP_DIR", ".ignite-sweep")) / "checkpoints").expanduser()
