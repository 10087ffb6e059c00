"""One interface for every kind of run: the built-in trainer, a user's program, a user's function.

A ``Run`` is what an agent drives, in the process it forked for it: ``start()``, then ``wait(sink)`` trains and
hands each evaluation to the sink as it comes (``sink.evaluated(metrics)`` answers whether the sweep wants the run
stopped; ``sink.stop_requested()`` is asked between evaluations), ``stop(force)`` stops it gracefully (the trainer's
``engine.terminate()`` through SIGTERM, a program's SIGTERM) or at once, and ``wait`` returns an ``Outcome``: the
``states.Ending`` from which ``states.end_state`` decides the run's state, its summary, its W&B folder, and the
evaluations found only at its end. ``finish(code)`` closes the run's wandb run where the run owns one.

The sink is the backend's: the local backend records evaluations in its store and asks its engine for stops; the
W&B backend only shows them (W&B's controller decides stops). Nothing here knows a store or a backend: a run
starts, reports, stops and ends. Runs trained together (``--fuse``) are a ``FusedRun``: one process, one engine,
an ``Outcome`` per member.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ignite_sweep.errors import IgniteSweepError
from ignite_sweep.execution.process import Interrupts, emit, interruption, run_ending
from ignite_sweep.format import fmt
from ignite_sweep.states import Ending


class Sink:
    """What a run tells whoever drives it, and asks it. This one only shows evaluations (``emit``)."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id

    def evaluated(self, metrics: dict[str, Any]) -> bool:
        """One evaluation of the built-in trainer (shown, then ``record``ed); True when the sweep wants the run
        stopped."""
        emit({"event": "eval", "run": self.run_id, "epoch": metrics.get("epoch"), "metrics": metrics})
        return self.record([metrics])

    def record(self, evaluations: list[dict[str, Any]]) -> bool:
        """Evaluations that arrived together, already shown; True when the sweep wants the run stopped."""
        return False

    def stop_requested(self) -> bool:
        """Whether the run was asked to stop without reporting (another run's report, ``cancel``)."""
        return False

    def resumed(self, epoch: int) -> None:
        """The run goes on from a predecessor's checkpoint after ``epoch``."""
        emit({"event": "resume", "run": self.run_id, "epoch": epoch})


@dataclass
class Outcome:
    ending: Ending
    summary: dict[str, Any] | None = None
    run_dir: str | None = None  # the run's W&B folder, once known
    history: list[dict[str, Any]] = field(default_factory=list)  # evaluations found only at the end


class Run(ABC):
    """One run as an agent drives it (runs trained together: ``FusedRun``)."""

    failure_is_the_runs = True
    """Whether an exception out of ``wait`` is the run's own failure (``failed``): so for the trainer, which trains
    in this process; not for a program, where it is the supervisor's (the process then dies: ``crashed``)."""
    writes_checkpoints = False
    trains_through_outages = False
    """Whether the run trains on while its evaluations cannot be recorded (the store away): so the trainer, whose
    evaluations wait in order; a program's supervisor waits for the store instead (bounded)."""

    @abstractmethod
    def start(self) -> None: ...

    @abstractmethod
    def wait(self, sink: Sink) -> Outcome: ...

    @abstractmethod
    def stop(self, force: bool = False) -> None: ...

    def finish(self, code: int) -> None:
        """Close the wandb run this process started for the run, if any (``code``: its exit code)."""
        return None

    def settled(self, outcome: Outcome, state: str) -> dict[str, Any] | None:
        """The summary to record once ``end_state`` decided ``state`` (what the run's kind adds to it)."""
        return outcome.summary


def run_error(exc: BaseException, params: dict[str, Any]) -> str:
    """A failed run's one-line error; running out of GPU memory names what to change."""
    first = str(exc).splitlines()[0] if str(exc) else ""
    if type(exc).__name__ == "OutOfMemoryError" or "CUDA out of memory" in first:
        shown = ", ".join(f"{k} {fmt(params.get(k))}" for k in ("batch_size", "model") if k in params)
        return (f"CUDA out of memory with {shown or 'this config'} (lower batch_size, or set amp: true): "
                f"{first[:160]}")
    return f"{type(exc).__name__}: {first}"


def failure(exc: BaseException, params: dict[str, Any]) -> Ending:
    """The ending of a run that raised ``exc`` (a second Ctrl-C is an interruption)."""
    if isinstance(exc, KeyboardInterrupt):
        return Ending(twice=True)
    return Ending(raised=str(exc) if isinstance(exc, IgniteSweepError) else run_error(exc, params))


class TrainerRun(Run):
    """The built-in Ignite trainer (``training.train``) on ``params``; its wandb run is started with ``init`` in a
    thread while the data loads (the local agent), or is ``run`` (already started: W&B's agent)."""

    writes_checkpoints = True
    trains_through_outages = True

    def __init__(self, params: dict[str, Any], *, init: Callable[[], Any] | None = None, run: Any = None,
                 checkpoint_dir: Path | None = None, resume_from: Path | None = None,
                 agent_interrupted: Callable[[], bool] = lambda: False) -> None:  # fmt: skip
        from ignite_sweep.training.config import TrainConfig

        self.params = params
        self.cfg = TrainConfig.from_dict(params)  # a bad config fails the run before its wandb run starts
        self._init = init
        self.starting: Future | None = None
        self._run = run
        self.checkpoint_dir, self.resume_from = checkpoint_dir, resume_from
        self.agent_interrupted = agent_interrupted

    def start(self) -> None:
        if self._init is not None:
            self.starting = ThreadPoolExecutor(1).submit(self._init)

    def wait(self, sink: Sink) -> Outcome:
        from ignite_sweep.training.train import train

        summary = train(self.cfg, reporter=sink.evaluated, run=self.starting or self._run,
                        checkpoint_dir=self.checkpoint_dir, resume_from=self.resume_from, on_resume=sink.resumed,
                        interrupted=lambda stopped_by: interruption(stopped_by, self.agent_interrupted()))  # fmt: skip
        run_ending()
        return self.outcome(summary)

    def outcome(self, summary: dict[str, Any]) -> Outcome:
        """The ``Outcome`` of a run whose training ended with ``summary`` (train()'s)."""
        summary["cuda_visible_devices"] = os.environ.get("CUDA_VISIBLE_DEVICES")  # as the run saw it
        wandb_run = self.starting.result() if self.starting is not None else self._run
        run_dir = os.path.dirname(wandb_run.dir) if wandb_run is not None and self.starting is not None else None
        ending = Ending(status=summary["status"], stopped_by=summary["stopped_by"], epochs=summary["epochs_completed"])
        return Outcome(ending, summary, run_dir)

    def stop(self, force: bool = False) -> None:
        """train() turns a SIGTERM into ``engine.terminate()`` at the next iteration (its summary then says
        which signal stopped it)."""
        os.kill(os.getpid(), signal.SIGKILL if force else signal.SIGTERM)

    def finish(self, code: int) -> None:
        """Finish the wandb run if it was started here (wandb.init may itself have failed)."""
        if self.starting is not None and self.starting.exception() is None:
            self.starting.result().finish(exit_code=code)


class FusedRun:
    """Runs of the built-in trainer trained together in this process (``training.fused``): one engine over stacked
    parameters, one batch for all, each member still a run of its own: its sink, its wandb run (started one after
    another in one thread while the data loads), its checkpoints, and its ``Outcome``, handed to ``ended`` as the
    member ends while the others train on. Members that cannot train together (a different architecture, a model
    torch.func cannot trace, a retry that resumes a checkpoint) train alone, one after another, after ``on_alone``
    says why."""

    def __init__(self, members: list[TrainerRun], on_alone: Callable[[int, str], None]) -> None:
        self.members, self.on_alone = members, on_alone

    def start(self) -> None:
        starter = ThreadPoolExecutor(1)  # wandb.init one at a time: K runs of one process, no race between them
        for member in self.members:
            if member._init is not None:
                member.starting = starter.submit(member._init)
        starter.shutdown(wait=False)

    def wait(self, sinks: list[Sink], ended: Callable[[int, Outcome], None],
             failed: Callable[[int, Exception], None]) -> None:  # fmt: skip
        """Train; ``ended(i, outcome)`` as member i ends, ``failed(i, exception)`` when what trained it raised (the
        others go on unless ``failed`` raises)."""
        from ignite_sweep.training.fused import train_fused

        members = self.members
        agent_interrupted = members[0].agent_interrupted
        train_fused([m.cfg for m in members], reporters=[s.evaluated for s in sinks],
                    runs=[m.starting or m._run for m in members], checkpoint_dirs=[m.checkpoint_dir for m in members],
                    resume_from=[m.resume_from for m in members], on_resume=[s.resumed for s in sinks],
                    interrupted=lambda stopped_by: interruption(stopped_by, agent_interrupted()),
                    on_alone=self.on_alone,
                    on_finished=lambda i, summary: ended(i, members[i].outcome(summary)),
                    on_failed=failed)  # fmt: skip
        run_ending()

    def stop(self, force: bool = False) -> None:
        """Every member stops, as one run does (``TrainerRun.stop``)."""
        os.kill(os.getpid(), signal.SIGKILL if force else signal.SIGTERM)


class StartError(IgniteSweepError):
    """A program could not be started (its command, its parameter files): the run failed, the agent goes on,
    unless its cause (``__cause__``) is the machine's (a full disk)."""


@contextlib.contextmanager
def starting() -> Iterator[None]:
    """What fails while a program starts is a ``StartError``."""
    try:
        yield
    except (OSError, ValueError, KeyError) as exc:
        raise StartError(f"cannot start the program: {exc}") from exc


class UserRun(Run):
    """A user's program (``argv``) or function, run as ``wandb agent`` / ``wandb.agent`` runs it
    (``execution.program``), what it logs read live; ``metric`` is the sweep's, counted as evaluations."""

    failure_is_the_runs = False

    def __init__(self, argv: list[str] | None, env: dict[str, str], metrics_path: Path, metric: str | None,
                 run_id: str, wandb_dir: str, function: Callable[[], Any] | None = None,
                 agent_interrupted: Callable[[], bool] = lambda: False) -> None:  # fmt: skip
        self.argv, self.env, self.metrics_path, self.function = argv, env, metrics_path, function
        self.metric, self.run_id, self.wandb_dir = metric, run_id, wandb_dir
        self.agent_interrupted = agent_interrupted
        self.process: Any = None
        self.stopped_by: str | None = None
        self._caught: list[str] = []

    def start(self) -> None:
        from ignite_sweep.execution.program import ProgramRun

        for sig in Interrupts.SIGNALS:  # the agent interrupted: stop the program gracefully, then record it
            signal.signal(sig, lambda signum, _f: self._caught.append(signal.Signals(signum).name))
        self.started = time.time()
        with starting():
            self.process = ProgramRun(self.argv, self.env, self.metrics_path, function=self.function).start()

    def stop(self, force: bool = False, by: str = "sweep") -> None:
        if force:
            self.process.kill_now()
            return
        if self.stopped_by is None:
            self.stopped_by = by
            self.process.stop()

    def wait(self, sink: Sink) -> Outcome:
        from ignite_sweep.execution.program import numbers

        last: dict[str, Any] = {}
        evaluations = 0
        next_check = time.monotonic()
        try:
            while True:
                code = self.process.poll()
                evaluated = []
                for row in map(numbers, self.process.new_rows()):
                    last.update(row)
                    if self.metric and self.metric in row:
                        evaluations += 1
                        evaluated.append(row)
                        emit({"event": "eval", "run": self.run_id, "epoch": evaluations, "metrics": row})
                # one transaction and one stop decision per poll, however many rows arrived
                if evaluated and sink.record(evaluated) and code is None:
                    self.stop()
                if code is not None:
                    break
                now = time.monotonic()
                if self._caught:  # SIGTERM from `cancel`, or the agent interrupted
                    self.stop(by=self._caught[0])
                if now >= next_check and self.stopped_by is None:
                    next_check = now + 1.0
                    if sink.stop_requested():
                        self.stop()
                time.sleep(0.1)
        except BaseException:  # the supervisor itself failed: nothing of the program may outlive it
            self.process.kill_now()
            raise
        return self._outcome(code, evaluations, last)

    def _outcome(self, code: int, evaluations: int, last: dict[str, Any]) -> Outcome:
        """The program has ended: its history from its .wandb file if the hook saw nothing, its summary."""
        from ignite_sweep.execution.program import final_metrics, find_run_file, numbers

        metric = self.metric
        run_file = find_run_file(self.wandb_dir, self.run_id)
        rows, final = final_metrics(run_file)
        history: list[dict[str, Any]] = []
        if evaluations == 0 and rows:  # the hook saw nothing (not Python, say): the history from the .wandb file
            history = [v for v in map(numbers, rows) if v and (metric is None or metric in v)]
            evaluations = sum(metric in v for v in history) if metric else 0
        summary: dict[str, Any] = {**numbers(last), **numbers(final)}
        summary.update(exit_code=code, run_time_s=round(time.time() - self.started, 3), stopped_by=self.stopped_by,
                       cuda_visible_devices=os.environ.get("CUDA_VISIBLE_DEVICES"))  # fmt: skip
        missing = None
        if metric and evaluations == 0 and metric not in summary:
            missing = missing_metric_note(metric, [*last, *final])
        ending = Ending(code=code, stopped_by=self.stopped_by, agent_interrupted=self.agent_interrupted(),
                        killed=self.process.killed, last_error=self.process.last_error_line,
                        no_result=missing)  # fmt: skip
        return Outcome(ending, summary, str(run_file.parent) if run_file is not None else None, history)

    def settled(self, outcome: Outcome, state: str) -> dict[str, Any] | None:
        """A program's summary says its state; a finished one without the metric names it (no result: bayes
        leaves it out, the agent says so)."""
        if outcome.summary is None:  # it never started
            return None
        summary = dict(outcome.summary)
        if state == "finished" and outcome.ending.no_result:
            summary["missing_metric"] = self.metric
        summary["status"] = state
        return summary


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
