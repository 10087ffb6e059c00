"""The agent pool: one agent process per slot (a GPU, a share of a GPU, or a share of the CPU cores).

``ignite-sweep agent ID --gpus 0,1 --per-gpu 2`` or ``--workers 4`` starts one ``ignite-sweep agent ID
--slot NAME`` process per slot, staggered, each seeing only its GPU (``CUDA_VISIBLE_DEVICES``) and its
share of the cores (``OMP_NUM_THREADS``, set before the slot starts, so torch's thread count follows).
Slot agents report what they do as JSON event lines on stdout; the pool shows them live (rich) or as plain
lines, restarts a slot whose process dies and retires one that keeps dying. Ctrl-C once: every slot stops
gracefully; twice: killed.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ignite_sweep.errors import ConfigError
from ignite_sweep.execution.process import EVENT_PREFIX, THREAD_VARIABLES

MAX_RESTARTS = 3


@dataclass
class Slot:
    name: str
    gpu: str | None = None
    threads: int | None = None

    def env(self) -> dict[str, str]:
        env = {"IGNITE_SWEEP_SLOT": self.name, "IGNITE_SWEEP_EVENTS": "1"}
        if self.gpu is not None:
            env["CUDA_VISIBLE_DEVICES"] = self.gpu
            env["IGNITE_SWEEP_GPU"] = self.gpu
        if self.threads:  # set before the slot's process starts: torch's default thread count follows it
            env.update({k: str(self.threads) for k in THREAD_VARIABLES})
        return env


def available_gpus() -> list[str]:
    """GPU indices this process may use, found without initialising CUDA (nvidia-smi; CUDA_VISIBLE_DEVICES)."""
    inventory = os.environ.get("IGNITE_SWEEP_GPU_INVENTORY")  # override where nvidia-smi cannot see them
    if inventory is not None:
        found = [g.strip() for g in inventory.split(",") if g.strip()]
    elif shutil.which("nvidia-smi"):
        result = subprocess.run(
            ["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"], capture_output=True, text=True, timeout=30
        )
        found = [line.strip() for line in result.stdout.splitlines() if line.strip()] if result.returncode == 0 else []
    else:
        found = []
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and inventory is None:
        allowed = [v.strip() for v in visible.split(",") if v.strip()]
        found = [g for g in found if g in allowed]
    return found


def plan_slots(gpus: str | None, per_gpu: int, workers: int | None, cores: int | None = None) -> list[Slot]:
    """Slots for --gpus/--per-gpu or --workers; errors name the option and what is allowed."""
    cores = cores or len(os.sched_getaffinity(0))
    if gpus is not None and workers is not None:
        raise ConfigError("options '--gpus' and '--workers': use one (GPU slots or CPU workers)")
    if per_gpu < 1:
        raise ConfigError(f"option '--per-gpu': got {per_gpu}, allowed: an integer >= 1")
    if gpus is not None:
        present = available_gpus()
        if not present:
            raise ConfigError("option '--gpus': no CUDA GPU found (nvidia-smi lists none); use --workers N on the CPU")
        if gpus.strip().lower() == "all":
            chosen = present
        else:
            chosen = [g.strip() for g in gpus.split(",") if g.strip()]
            if not chosen or any(not g.isdigit() for g in chosen):
                raise ConfigError(f"option '--gpus': got '{gpus}', allowed: all or indices like 0,1,3")
            missing = [g for g in chosen if g not in present]
            if missing:
                raise ConfigError(
                    f"option '--gpus': GPU {', '.join(missing)} does not exist (found: {', '.join(present)})"
                )
        total = len(chosen) * per_gpu
        threads = max(1, cores // total)
        return [Slot(f"gpu{g}" + (f".{k}" if per_gpu > 1 else ""), g, threads) for g in chosen for k in range(per_gpu)]
    n = workers or 1
    if n < 1:
        raise ConfigError(f"option '--workers': got {n}, allowed: an integer >= 1")
    return [Slot(f"cpu{i}", None, max(1, cores // n)) for i in range(n)]


@dataclass
class SlotState:
    slot: Slot
    process: subprocess.Popen[str] | None = None
    restarts: int = 0
    done: bool = False
    retired: str | None = None
    exit_code: int | None = None
    runs: dict[str, Running] = field(default_factory=dict)  # its running runs (several with --fuse), by id
    left: dict[str, Running] = field(default_factory=dict)  # runs of a fused group that ended while it trains on
    last_error: str = ""


@dataclass
class Running:
    """A slot's running run, as the live view shows it."""

    params: dict[str, Any] = field(default_factory=dict)
    epoch: int | None = None
    metric: float | None = None
    metrics: dict[str, Any] = field(default_factory=dict)  # its last evaluation (a metrics: sweep shows each)


@dataclass
class Ended:
    """A run that ended, as the live view knows it (for a multi-objective sweep's Pareto front)."""

    id: str
    state: str
    summary: dict[str, Any]


@dataclass
class PoolView:
    """What the pool knows, for the live table and the final line."""

    metric: str | None
    goal: str
    slots: list[SlotState]
    swept: list[str] | None = None  # parameters to show (the fixed ones add nothing)
    counts: dict[str, int] = field(default_factory=dict)
    best: tuple[str, float, dict[str, Any]] | None = None
    objectives: list[tuple[str, str]] = field(default_factory=list)  # a metrics: sweep's: a Pareto front, no best
    ended: list[Ended] = field(default_factory=list)

    @property
    def multi(self) -> bool:
        return len(self.objectives) > 1

    def scores(self, metrics: dict[str, Any] | None) -> str:
        """Each objective's value, as the lines show it (" a=0.9 b=0.1"; a missing one is left out)."""
        from ignite_sweep.format import fmt

        found = [(name, (metrics or {}).get(name)) for name, _ in self.objectives]
        return "".join(f" {name}={fmt(value)}" for name, value in found if value is not None)

    def front(self) -> list[Ended]:
        from ignite_sweep.pareto import pareto_front

        return pareto_front(self.ended, self.objectives)

    def front_text(self) -> str:
        front = self.front()
        return f"Pareto front: {len(front)} run{'s' if len(front) != 1 else ''}" + (
            f" ({', '.join(r.id for r in front)})" if front else "")  # fmt: skip

    def end_values(self, event: dict[str, Any], last: dict[str, Any] | None = None) -> dict[str, Any]:
        """A multi-objective run's values at its end: the end event's summary, else its last evaluation's."""
        found = dict(last or {})
        found.update({k: v for k, v in (event.get("metrics") or {}).items() if v is not None})
        return {name: found[name] for name, _ in self.objectives if name in found}

    def record_end(self, event: dict[str, Any], last: dict[str, Any] | None = None) -> None:
        self.counts[event["state"]] = self.counts.get(event["state"], 0) + 1
        if self.multi:
            self.ended.append(Ended(event["run"], event["state"], self.end_values(event, last)))
            return
        value = event.get("metric", (event.get("metrics") or {}).get(self.metric or ""))
        if isinstance(value, (int, float)):
            sign = 1.0 if self.goal == "maximize" else -1.0
            if self.best is None or sign * value > sign * self.best[1]:
                self.best = (event["run"], float(value), event.get("params", {}))

    def table(self) -> Any:
        from rich.table import Table

        from ignite_sweep.format import fmt

        counts = ", ".join(f"{n} {s}" for s, n in sorted(self.counts.items())) or "no runs ended yet"
        best = f"best {self.metric} = {fmt(self.best[1])} (run {self.best[0]})" if self.best else "no best yet"
        if self.multi:
            best = self.front_text()
        table = Table(title=f"{counts}  |  {best}", title_justify="left")
        metric_columns = [name for name, _ in self.objectives] if self.multi else [self.metric or "metric"]
        for column in ("slot", "gpu", "run", "params", "epoch", *metric_columns, "status"):
            table.add_column(column)
        for s in self.slots:
            status = s.retired or ("done" if s.done else f"restarted {s.restarts}x" if s.restarts else "running")
            for i, (run_id, r) in enumerate(list(s.runs.items()) or [("-", Running())]):  # a row per running run
                params = " ".join(f"{k}={fmt(v)}" for k, v in r.params.items() if self.swept is None or k in self.swept)
                shown = [fmt(r.metrics.get(name)) for name in metric_columns] if self.multi else [fmt(r.metric)]
                name, gpu = (s.slot.name, s.slot.gpu or "-") if i == 0 else ("", "")
                table.add_row(name, gpu, run_id, params, fmt(r.epoch), *shown, status if i == 0 else "")
        return table


def run_pool(sweep_id: str, slots: list[Slot], metric: str | None, goal: str, count: int | None,
             max_consecutive_failures: int, stagger_s: float, live: bool | None = None,
             say: Callable[[str], None] | None = None, swept: list[str] | None = None,
             objectives: list[tuple[str, str]] | None = None, fuse: int = 1) -> int:  # fmt: skip
    """Run one agent process per slot until all are done; returns the exit code (0, 1 or 130). ``objectives``: a
    multi-objective sweep's (``SweepRecord.objectives``): the view shows each one's value and the Pareto front.
    ``fuse``: each slot's agent trains up to that many runs together (``agent --fuse``)."""
    from ignite_sweep.format import fmt

    live = sys.stdout.isatty() if live is None else live
    console_say = say or (lambda line: print(line, flush=True))
    display: Any = None

    def say(line: str) -> None:
        if display is not None:
            display.console.print(line, markup=False, highlight=False)
        else:
            console_say(line)

    states = [SlotState(s) for s in slots]
    view = PoolView(metric, goal, states, swept, objectives=list(objectives or []))
    lock = threading.Lock()
    interrupts = {"count": 0}

    def command(state: SlotState) -> list[str]:
        cmd = [sys.executable, "-m", "ignite_sweep", "agent", sweep_id, "--slot", state.slot.name]
        cmd += ["--max-consecutive-failures", str(max_consecutive_failures)]
        cmd += ["--fuse", str(fuse)] if fuse > 1 else []
        return cmd + (["--count", str(count)] if count else [])

    def on_event(state: SlotState, event: dict[str, Any]) -> None:
        with lock:
            kind = event.get("event")
            if kind == "start":
                started = state.runs[event["run"]] = Running(params=event.get("params", {}))
                if not live:
                    shown = {k: v for k, v in started.params.items() if swept is None or k in swept}
                    say(
                        f"[{state.slot.name}] run {event['run']} started: "
                        + " ".join(f"{k}={v}" for k, v in shown.items())
                    )
            elif kind == "eval":
                r = state.runs.setdefault(event["run"], Running())
                r.epoch = event.get("epoch")
                r.metric = (event.get("metrics") or {}).get(metric) if metric else None
                r.metrics = dict(event.get("metrics") or {})
                if not live and view.multi:
                    say(f"[{state.slot.name}] run {event['run']} epoch {r.epoch}:{view.scores(r.metrics)}")
                elif not live:
                    shown = f": {metric}={fmt(r.metric)}" if metric else ""
                    say(f"[{state.slot.name}] run {event['run']} epoch {r.epoch}{shown}")
            elif kind == "left":  # a member's end is recorded; its agent says how it ended when the group ends
                gone = state.runs.pop(event.get("run"), None)
                if gone is not None:
                    state.left[event["run"]] = gone
            elif kind == "end":
                gone = state.runs.pop(event.get("run"), None) or state.left.pop(event.get("run"), None)
                last = gone.metrics if gone is not None else {}
                view.record_end(event, last)
                if not live:
                    error = f" ({event['error']})" if event.get("error") else ""
                    value = event.get("metric", (event.get("metrics") or {}).get(metric or ""))
                    shown = f" {metric}={fmt(value)}" if value is not None else ""
                    if view.multi:
                        shown = view.scores(view.end_values(event, last))
                    say(f"[{state.slot.name}] run {event['run']} {event['state']}{shown}{error}")

    def pump(state: SlotState, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            if line.startswith(EVENT_PREFIX):
                try:
                    on_event(state, json.loads(line[len(EVENT_PREFIX) :]))
                except (ValueError, KeyError):
                    pass
            elif line.strip() and not live:
                say(f"[{state.slot.name}] {line.rstrip()}")

    def errors(state: SlotState, process: subprocess.Popen[str]) -> None:
        assert process.stderr is not None
        for line in process.stderr:
            if line.strip():
                state.last_error = line.strip()
                if not live and (line.startswith(("error:", "warning:", "sweep store ")) or "Traceback" in line):
                    say(f"[{state.slot.name}] {line.rstrip()}")

    def start(state: SlotState) -> None:
        process = subprocess.Popen(
            command(state), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1,
            env={**os.environ, **state.slot.env()}, start_new_session=True,  # Ctrl-C reaches the pool only
        )  # fmt: skip
        state.process = process
        threading.Thread(target=pump, args=(state, process), daemon=True).start()
        threading.Thread(target=errors, args=(state, process), daemon=True).start()

    def handle(signum: int, _frame: Any) -> None:
        interrupts["count"] += 1
        for s in states:
            if s.process and s.process.poll() is None:
                try:
                    if interrupts["count"] == 1:
                        s.process.send_signal(signal.SIGINT)  # the slot agent stops its run gracefully
                    else:
                        os.killpg(s.process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    started_at = time.monotonic()
    try:
        if live:
            from rich.live import Live

            display = Live(view.table(), refresh_per_second=4, transient=False)
            display.start()
        while True:
            now = time.monotonic()
            for i, state in enumerate(states):
                if state.process is None and not interrupts["count"] and now >= started_at + i * stagger_s:
                    start(state)
            for state in states:
                p = state.process
                if p is None or state.done or state.retired or p.poll() is None:
                    continue
                code = p.returncode
                with lock:  # its runs ended with it (recorded by it, or found crashed and offered again)
                    state.runs.clear()
                    state.left.clear()
                if code in (0, 1, 130) or interrupts["count"]:
                    state.done, state.exit_code = True, code
                    if code == 1:
                        state.retired = f"exited: {state.last_error}"
                        say(f"[{state.slot.name}] {state.last_error}")
                    continue
                state.restarts += 1
                why = f"signal {-code}" if code < 0 else f"exit code {code}"
                if state.restarts > MAX_RESTARTS:
                    state.retired = f"retired after {MAX_RESTARTS} restarts ({why})"
                    state.exit_code = code
                    say(f"[{state.slot.name}] slot agent died ({why}) {MAX_RESTARTS + 1} times: retired; others go on")
                else:
                    say(f"[{state.slot.name}] slot agent died ({why}): restarting ({state.restarts}/{MAX_RESTARTS})")
                    start(state)
            if display is not None:
                with lock:
                    display.update(view.table())
            if all(s.done or s.retired for s in states if s.process is not None) and all(
                s.process is not None or interrupts["count"] for s in states
            ):
                break
            time.sleep(0.2)
    finally:
        if display is not None:
            display.update(view.table())
            display.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    counts = ", ".join(f"{n} {s}" for s, n in sorted(view.counts.items())) or "no runs"
    best = f"; best {metric} = {view.best[1]:.4g} (run {view.best[0]})" if view.best else ""
    if view.multi:
        best = f"; {view.front_text()}"
    say(f"pool done: {len(slots)} slots, {counts}{best}")
    if interrupts["count"]:
        return 130
    return 1 if any(s.retired for s in states) else 0
