"""W&B's server reduced to what the backend contract touches, for tests that cannot reach it.

Only the server is fake. ``wandb.sweep``, ``wandb.agent``, ``wandb.Api`` and ``_set_sweep_state`` are
patched with autospec'd mocks whose side effects keep the sweeps here; the controller's decisions come from
W&B's own engine (``sweeps.next_run``); each run is handed to the agent's function the way wandb's pyagent
hands it (``WANDB_SWEEP_PARAM_PATH`` YAML of ``{name: {value: v}}``, ``WANDB_RUN_ID``, a teardown first)
and trains for real with wandb offline; what the API returns is read back from the runs' ``.wandb`` files.
"""

from __future__ import annotations

import contextlib
import json
import os
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

import wandb
import yaml
from wandb.apis.public import Run, Sweep
from wandb_records import config, records, run_file, summary

REAL_API = wandb.Api  # the class, kept before it is patched: the fake API is specced on it


def hand_run(tmp: Path, run_id: str, params: dict[str, Any], function: Callable[[], Any]) -> None:
    """Hand one run to the agent's function as wandb's pyagent does: a teardown first, the params as a YAML
    of ``{name: {value: v}}`` in ``WANDB_SWEEP_PARAM_PATH``, the run id in ``WANDB_RUN_ID``."""
    param_file = tmp / f"config-{run_id}.yaml"
    param_file.write_text(yaml.safe_dump({k: {"value": v} for k, v in params.items()}))
    wandb.teardown()
    with mock.patch.dict(os.environ, {"WANDB_SWEEP_PARAM_PATH": str(param_file), "WANDB_RUN_ID": run_id}):
        function()


@dataclass
class FakeSweep:
    config: dict[str, Any]
    state: str = "RUNNING"
    run_ids: list[str] = field(default_factory=list)


class FakeWandbServer:
    def __init__(self, tmp: Path, entity: str = "me") -> None:
        self.tmp, self.entity = tmp, entity
        self.sweeps: dict[str, FakeSweep] = {}

    # ------------------------------------------------------------ what the patched functions do

    def sweep(self, config: dict[str, Any], project: str | None = None, entity: str | None = None) -> str:
        sweep_id = f"sw{len(self.sweeps):04d}"
        self.sweeps[sweep_id] = FakeSweep(json.loads(json.dumps(config)))
        return sweep_id

    def agent(self, sweep_id: str, function: Any = None, entity: Any = None, project: Any = None,
              count: Any = None) -> None:  # fmt: skip
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import sweeps
        sweep = self.sweeps[sweep_id]
        done = 0
        while sweep.state == "RUNNING" and (count is None or done < count):
            engine_runs = [
                sweeps.SweepRun(
                    name=r.id,
                    state=r.state,
                    config={k: {"value": v} for k, v in r.config.items()},
                    summary_metrics=dict(r.summary),
                    history=[],
                )
                for r in self.api_runs(sweep_id)
            ]
            suggestion = sweeps.next_run(sweep.config, engine_runs)
            if suggestion is None:
                sweep.state = "FINISHED"
                return
            run_id = f"{sweep_id}r{len(sweep.run_ids):03d}"
            sweep.run_ids.append(run_id)
            hand_run(self.tmp, run_id, {k: v["value"] for k, v in suggestion.config.items()}, function)
            done += 1

    def set_sweep_state(self, api: Any, sweep_id: str, state: str, entity: Any = None, project: Any = None) -> None:
        self.sweeps[sweep_id].state = state

    def api(self) -> Any:
        api = mock.create_autospec(REAL_API, instance=True)
        api.default_entity = self.entity
        api.sweep.side_effect = self.api_sweep
        return api

    # ------------------------------------------------------------ what the API returns

    def api_sweep(self, path: str) -> Any:
        sweep_id = path.split("/")[-1]
        fake = self.sweeps[sweep_id]
        sweep = mock.create_autospec(Sweep, instance=True)
        sweep.config, sweep.name, sweep.state = fake.config, sweep_id, fake.state
        sweep.runs = self.api_runs(sweep_id)[::-1]  # newest first, as the API lists them
        return sweep

    def api_runs(self, sweep_id: str) -> list[Any]:
        runs = []
        for run_id in self.sweeps[sweep_id].run_ids:
            (run_dir,) = (self.tmp / "wandb").glob(f"offline-run-*-{run_id}")
            path = run_file(run_dir)
            run = mock.create_autospec(Run, instance=True)
            run.id, run.summary, run.config = run_id, summary(path), config(path)
            exits = [r.exit.exit_code for r in records(path) if r.WhichOneof("record_type") == "exit"]
            run.state = "finished" if exits == [0] else "failed"
            runs.append(run)
        return runs

    @contextlib.contextmanager
    def patched(self) -> Iterator[FakeWandbServer]:
        with mock.patch.object(wandb, "sweep", autospec=True, side_effect=self.sweep), \
             mock.patch.object(wandb, "agent", autospec=True, side_effect=self.agent), \
             mock.patch.object(wandb, "Api", autospec=True, side_effect=self.api), \
             mock.patch("wandb.apis.public.sweeps._set_sweep_state", autospec=True,
                        side_effect=self.set_sweep_state):  # fmt: skip
            yield self
