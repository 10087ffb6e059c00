"""The W&B backend: W&B's sweep controller decides, agents on any number of machines train.

``create`` is ``wandb.sweep``; ``run_agent`` is ``wandb.agent`` with a function that builds TrainConfig
from ``wandb.config``; ``runs``/``sweep`` read through ``wandb.Api``. The registered config carries a
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

STATE_MAP = {"running": "running", "finished": "finished", "failed": "failed", "crashed": "crashed",
             "killed": "stopped", "preempted": "crashed", "pending": "running"}  # fmt: skip


def split_id(sweep_id: str) -> tuple[str, str, str]:
    parts = sweep_id.split("/")
    if len(parts) != 3 or not all(parts):
        raise ConfigError(f"sweep id '{sweep_id}': expected entity/project/<id> for the W&B backend")
    return parts[0], parts[1], parts[2]


def trial() -> dict[str, Any] | None:
    """What ``wandb.agent`` calls for each run: wandb.config -> TrainConfig -> train()."""
    import wandb

    from ignite_sweep.agent import emit
    from ignite_sweep.config import TrainConfig
    from ignite_sweep.train import train

    run = wandb.init()
    params = {k: v for k, v in dict(run.config).items() if not k.startswith("_")}
    emit({"event": "start", "run": run.id, "params": params})

    def progress(metrics: dict[str, Any]) -> bool:  # W&B's controller decides stops; this only reports
        emit({"event": "eval", "run": run.id, "epoch": metrics.get("epoch"), "metrics": metrics})
        return False

    try:
        cfg = TrainConfig.from_dict(params)
        summary = train(cfg, reporter=progress)
    except IgniteSweepError as exc:
        print(f"error: {exc}", file=sys.stderr)
        run.summary["error"] = str(exc)
        run.finish(exit_code=1)
        emit({"event": "end", "run": run.id, "state": "failed", "error": str(exc), "params": params})
        return None
    except Exception as exc:
        run.summary["error"] = f"{type(exc).__name__}: {exc}"
        run.finish(exit_code=1)
        emit({"event": "end", "run": run.id, "state": "failed", "error": run.summary["error"], "params": params})
        raise
    if summary["status"] == "stopped" and summary.get("stopped_by") in ("SIGINT", "SIGHUP"):
        # Ctrl-C or a closed terminal, not W&B's stop (a SIGTERM): unfinished work. W&B's controller decides
        # whether it is offered again; the summary says what happened and the exit code is non-zero.
        summary["status"] = run.summary["status"] = "interrupted"
    run.finish(exit_code=1 if summary["status"] in ("diverged", "interrupted") else 0)
    status = summary["status"]
    state = "failed" if status == "diverged" else status if status in ("stopped", "interrupted") else "finished"
    emit({"event": "end", "run": run.id, "state": state, "metrics": summary, "params": params})
    return summary


class WandbBackend(Backend):
    name = "wandb"

    def create(self, config: dict[str, Any], project: str | None = None, entity: str | None = None) -> str:
        import wandb

        from ignite_sweep.wandb_logging import DEFAULT_PROJECT

        project = project or config.get("project") or DEFAULT_PROJECT
        entity = entity or config.get("entity") or wandb.Api().default_entity
        if not entity:
            raise BackendError("W&B: no entity known; pass --entity or run `wandb login`")
        sweep = wandb.sweep(config, project=project, entity=entity)
        if not sweep:
            raise BackendError("W&B refused to create the sweep (see wandb's message above)")
        return f"{entity}/{project}/{sweep}"

    def run_agent(self, sweep_id: str, count: int | None = None, max_consecutive_failures: int = 5,
                  slot: str | None = None, echo: Callable[[str], None] | None = None) -> AgentResult:  # fmt: skip
        import wandb

        from ignite_sweep.agent import Interrupts, run_in_child, warm_up

        entity, project, sid = split_id(sweep_id)
        warm_up()  # torch, its compiler and wandb.init's imports once here, not again in every run's child
        done = {"runs": 0}
        say = echo or (lambda line: print(line, file=sys.stderr))

        def function() -> None:
            # Each run in its own child process: a crash ends only that run, and W&B's stop (an exception
            # raised into this thread) becomes a SIGTERM that the run turns into engine.terminate().
            done["runs"] += 1
            outcome = run_in_child(lambda: 0 if trial() is not None else 1, Interrupts(), on_start=lambda pid: None)
            if not outcome.ok:
                say(f"run {os.environ.get('WANDB_RUN_ID', '?')}: {outcome.describe()}")

        wandb.agent(sid, function=function, entity=entity, project=project, count=count)
        return AgentResult(runs=done["runs"], reason="wandb agent finished")

    def _api_sweep(self, sweep_id: str) -> Any:
        import wandb

        split_id(sweep_id)
        try:
            return wandb.Api().sweep(sweep_id)
        except Exception as exc:  # noqa: BLE001 - the API raises many types for "not found"/no network
            raise BackendError(f"W&B sweep '{sweep_id}': {str(exc).splitlines()[0] if str(exc) else exc}") from None

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
        return records[::-1]  # the API lists newest first

    def runs_with_history(self, sweep_id: str) -> list[RunRecord]:
        sweep = self._api_sweep(sweep_id)
        metric = (dict(sweep.config).get("metric") or {}).get("name", "val/accuracy")
        records = {r.id: r for r in self.runs(sweep_id)}
        for run in sweep.runs:
            if run.id in records:
                records[run.id].history = [
                    row for row in run.scan_history(keys=[metric, "epoch"]) if row.get(metric) is not None
                ]
        return list(records.values())

    def stop(self, sweep_id: str) -> None:
        """What ``wandb sweep --stop`` does: no new runs, running runs finish."""
        import wandb
        from wandb.apis.public.sweeps import _set_sweep_state

        entity, project, sid = split_id(sweep_id)
        try:
            _set_sweep_state(wandb.Api(), sid, "FINISHED", entity=entity, project=project)
        except Exception as exc:  # noqa: BLE001 - "already finished", no network, ...
            raise BackendError(f"W&B sweep '{sweep_id}': {str(exc).splitlines()[0] if str(exc) else exc}") from None
