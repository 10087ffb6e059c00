"""How a local sweep's runs execute and record their end, in the forked child the agent loop starts for each.

``train_run``: the built-in Ignite trainer (``training.train``), logged with wandb offline, its evaluations reported
to the sweep as they come (kept while a PostgreSQL store is away), resumed from a crashed or interrupted
predecessor's checkpoint. ``program_run``: a user's program or function, run as ``wandb agent`` runs it
(``execution.program``), its metrics read live. Both record how the run ended, once: ``finished``, ``stopped`` (by
the sweep), ``failed`` (its own failure: it raised, diverged, ran out of GPU memory), ``interrupted`` (Ctrl-C, or a
machine fault: then the agent stops, ``faults.py``), and the child's exit tells the agent the rest (``crashed``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ignite_sweep import faults
from ignite_sweep.backends.base import SweepRecord
from ignite_sweep.errors import IgniteSweepError
from ignite_sweep.execution.process import Interrupts, emit, interruption, run_ending
from ignite_sweep.format import fmt
from ignite_sweep.store.sql import LocalStore

FAULT_EXIT = 75  # a run's exit code: a machine fault cut it short (EX_TEMPFAIL)


def short_id(sweep_id: str) -> str:
    return sweep_id.split("/", 1)[1] if sweep_id.startswith("local/") else sweep_id


def eval_metric(config: dict[str, Any]) -> str | None:
    """The TrainConfig.metric matching the sweep metric (early stopping and checkpoints follow it)."""
    name = (config.get("metric") or {}).get("name", "")
    name = name.removeprefix("best/")
    return name if name in ("val/accuracy", "val/loss") else None


class LocalRuns:
    """The runs of one local agent (``backend``: its store, heartbeat, shared fault note and project)."""

    def __init__(self, backend: Any) -> None:
        self.backend = backend

    def train_run(self, sweep: SweepRecord, run: dict[str, Any], agent_interrupted: Callable[[], bool]) -> int:
        """In the forked child: train one run, log it offline, record how it ended. Returns the exit code.

        A run stopped by a signal because its agent was interrupted (or by Ctrl-C/SIGHUP reaching it directly)
        is ``interrupted``; stopped by the sweep (hyperband, target, ``ignite-sweep stop``) it is ``stopped``."""
        import wandb

        from ignite_sweep.training.config import TrainConfig
        from ignite_sweep.training.train import readable_checkpoint, train

        run_id = run["id"]
        store = self.open_store(run_id)  # never share a connection across fork
        if store is None:
            return FAULT_EXIT
        child = type(self.backend)(store)
        stop_beating = threading.Event()

        def beat() -> None:  # a beat that fails (the store away, busy, full) is tried again at the next one
            own: LocalStore | None = None  # sqlite connections belong to one thread
            while not stop_beating.wait(self.backend.heartbeat_s):
                try:
                    if own is None:
                        own = LocalStore(store.url)
                        own.wait_s = 0
                    own.heartbeat(run_id)
                except Exception:  # noqa: BLE001 - the run trains on; its end is recorded with a wait
                    pass
            if own is not None:
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
                wandb.init, id=wandb_id, resume=resume, project=self.backend._project(sweep), group=sweep.name,
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
                        print(f"warning: run {run_id}: sweep store {away.path} is {away.cause}: training goes on, "
                              "its evaluations are recorded when the store is back", file=sys.stderr)  # fmt: skip
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
            return self.cut_short(store, run_id, fault, starting)
        except IgniteSweepError as exc:
            store.end_run(run_id, "failed", error=str(exc))
            return _finish(starting, 1)
        except KeyboardInterrupt:  # a second Ctrl-C: no final evaluation
            store.end_run(run_id, "interrupted", error="interrupted twice: ended without its final evaluation")
            return _finish(starting, 1)
        except Exception as exc:  # noqa: BLE001 - any error in a run fails that run only, unless the machine's
            fault = faults.classify(exc, self.run_folders(sweep), str(store))
            if fault is not None:
                return self.cut_short(store, run_id, fault, starting)
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
            fault = faults.classify(exc, self.run_folders(sweep), str(store))
            if fault is None:
                raise
            return self.cut_short(store, run_id, fault, starting)

    def open_store(self, run_id: str) -> LocalStore | None:
        """The run's own connection to the store (waiting for a PostgreSQL server that is away); None when the
        machine failed it (the agent learns why through the shared note and stops; the run is noted cut short)."""
        try:
            return LocalStore(self.backend.store.url, wait_on_open=True)
        except Exception as exc:  # noqa: BLE001 - classified below, else raised
            fault = faults.classify(exc, [], str(self.backend.store))  # away past the wait, a full or read-only disk
            if fault is None:
                raise
            self.backend._fault_note.write(fault.advice())
            faults.mark_cut_short(run_id, str(fault))
            return None

    def run_folders(self, sweep: SweepRecord) -> list[Path]:
        """Where a run writes: its checkpoints, its W&B folder, the store's folder (SQLite)."""
        folders = [checkpoint_root() / short_id(sweep.id), Path(os.environ.get("WANDB_DIR") or ".") / "wandb"]
        return folders + ([Path(self.backend.store.path).parent] if self.backend.store.dialect == "sqlite" else [])

    def cut_short(self, store: LocalStore, run_id: str, fault: faults.MachineFault, starting: Future | None) -> int:
        """A machine fault ended the run: ``interrupted`` (no result, run again first, no attempt spent) if the
        store can still say so; either way the agent learns it through the shared note and stops."""
        self.backend._fault_note.write(fault.advice())
        try:
            store.end_run(run_id, "interrupted", error=str(fault), wait_s=0)
        except Exception:  # noqa: BLE001 - the store is the fault: the next agent on this machine records it
            faults.mark_cut_short(run_id, str(fault))
        with contextlib.suppress(Exception):
            _finish(starting, 1)
        return FAULT_EXIT

    def program_run(self, sweep: SweepRecord, run: dict[str, Any], agent_interrupted: Callable[[], bool],
                       function: Callable[[], Any] | None = None) -> int:  # fmt: skip
        """In the forked child: run the sweep's program as ``wandb agent`` would (or ``function``, forked, as
        ``wandb.agent`` would call it), feed what it logs to the sweep while it trains (hyperband, target, the
        live view), stop it when the sweep says so, record how it ended."""
        from ignite_sweep.execution.program import (
            ProgramRun,
            build_command,
            function_env,
            numbers,
            program_env,
            run_environment,
            sweep_folder,
        )

        run_id, sid = run["id"], short_id(sweep.id)
        store = self.open_store(run_id)  # never share a connection across fork
        if store is None:
            return FAULT_EXIT
        child = type(self.backend)(store)
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
            run_env.update(WANDB_SWEEP_ID=sid, WANDB_PROJECT=self.backend._project(sweep), WANDB_RUN_GROUP=sweep.name,
                           WANDB_JOB_TYPE="sweep-run", WANDB_TAGS=f"local-sweep-{sid}")  # fmt: skip
            metrics_path = sweep_folder(folder, sid) / f"metrics-{run_id}.jsonl"
            make_env = program_env if function is None else function_env
            program = ProgramRun(argv, make_env(dict(os.environ), run_env, metrics_path), metrics_path,
                                 function=function).start()  # fmt: skip
        except (OSError, ValueError, KeyError) as exc:
            fault = faults.classify(exc, self.run_folders(sweep)[1:], str(store)) if isinstance(exc, OSError) else None
            if fault is not None:  # its parameter files could not be written: the machine's
                return self.cut_short(store, run_id, fault, None)
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
                    next_beat = now + self.backend.heartbeat_s
                    store.heartbeat(run_id)
                time.sleep(0.1)
        except BaseException as exc:  # the supervisor itself failed: nothing of the program may outlive it
            program.kill_now()
            folders = self.run_folders(sweep)[1:]
            fault = faults.classify(exc, folders, str(store)) if isinstance(exc, Exception) else None
            if fault is None:
                raise
            return self.cut_short(store, run_id, fault, None)  # the store away or full: stop here, lose nothing
        try:
            return self._program_end(store, sweep, run_id, program, code, stopped_by, evaluations, last, started,
                                     wandb_dir, agent_interrupted)  # fmt: skip
        except Exception as exc:  # recording the end failed: the store's disk, say
            fault = faults.classify(exc, self.run_folders(sweep)[1:], str(store))
            if fault is None:
                raise
            return self.cut_short(store, run_id, fault, None)

    def _program_end(self, store: LocalStore, sweep: SweepRecord, run_id: str, program: Any, code: int,
                     stopped_by: str | None, evaluations: int, last: dict[str, Any], started: float, wandb_dir: str,
                     agent_interrupted: Callable[[], bool]) -> int:  # fmt: skip
        """The program has ended: its history from its .wandb file if the hook saw nothing, its summary, its end."""
        from ignite_sweep.execution.program import final_metrics, find_run_file, numbers

        metric = sweep.metric
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
        if state == "failed" and (fault := faults.from_line(error or "", self.run_folders(sweep)[1:])):
            return self.cut_short(store, run_id, fault, None)  # the machine's fault, not the program's
        if state == "finished" and metric and evaluations == 0 and metric not in summary:
            summary["missing_metric"] = metric  # no result: bayes leaves it out, the agent says so
            error = missing_metric_note(metric, [*last, *final])
        summary["status"] = state
        store.end_run(run_id, state, summary, error=error)
        return 0


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
