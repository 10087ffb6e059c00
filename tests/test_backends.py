"""The backend contract (ignite_sweep/backends/base.py), one test class run against every backend.

local: a real SQLite store in tmp_path. wandb: the real wandb SDK (wandb.sweep, wandb.agent, wandb.Api) talking
to the local W&B API stand-in (tests/wandb_server.py), whose controller is W&B's own sweep engine. Both train
for real on digits with wandb offline.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ignite_sweep.backends import REGISTRY
from ignite_sweep.backends.base import RUN_STATES, Backend
from ignite_sweep.sweepfile import validate_sweep

ID_FORMS = {"local": r"local/[a-z0-9]{8}", "wandb": r"me/contract/sw\d{5}"}
FAST = {"dataset": {"value": "digits"}, "epochs": {"value": 1},
        "batch_size": {"value": 256}, "log_interval": {"value": 50}}  # fmt: skip


def grid(**values: list[Any]) -> dict[str, Any]:
    return validate_sweep({
        "method": "grid",
        "metric": {"name": "val/accuracy", "goal": "maximize"},
        "parameters": {**FAST, **{k: {"values": v} for k, v in values.items()}},
    })  # fmt: skip


@pytest.fixture(params=sorted(REGISTRY))
def backend(request: pytest.FixtureRequest, offline_wandb: Path) -> Iterator[tuple[str, Backend]]:
    name = request.param
    if name == "wandb":
        request.getfixturevalue("wandb_standin")
    yield name, REGISTRY[name]()


class TestBackendContract:
    def test_create_returns_an_id_of_the_backends_form_and_sweep_reads_it_back(
        self, backend: tuple[str, Backend]
    ) -> None:
        name, b = backend
        sweep_id = b.create(grid(lr=[0.05, 0.02], model=["mlp"]), project="contract")
        assert re.fullmatch(ID_FORMS[name], sweep_id), sweep_id
        sweep = b.sweep(sweep_id)
        assert (sweep.id, sweep.method, sweep.state) == (sweep_id, "grid", "running")
        assert (sweep.metric, sweep.goal) == ("val/accuracy", "maximize")
        assert sweep.config["parameters"]["lr"] == {"values": [0.05, 0.02]} and "command" in sweep.config
        assert b.runs(sweep_id) == []

    def test_agent_runs_count_runs_then_the_rest_of_the_grid_once_each(self, backend: tuple[str, Backend]) -> None:
        _, b = backend
        sweep_id = b.create(grid(lr=[0.05, 0.02], model=["mlp", "no_such_module:build"]), project="contract")
        first = b.run_agent(sweep_id, count=2)
        assert first.runs == 2
        first_ids = [r.id for r in b.runs(sweep_id)]
        assert len(first_ids) == 2
        rest = b.run_agent(sweep_id)  # until the grid is exhausted
        assert rest.runs == 2
        runs = b.runs(sweep_id)
        assert [r.id for r in runs][:2] == first_ids  # creation order
        points = sorted((r.config["lr"], r.config["model"]) for r in runs)
        assert points == sorted((lr, m) for lr in (0.05, 0.02) for m in ("mlp", "no_such_module:build"))
        assert all(r.state in RUN_STATES for r in runs)
        bad = [r for r in runs if r.config["model"] != "mlp"]
        good = [r for r in runs if r.config["model"] == "mlp"]
        for run in bad:  # a value that cannot work fails that run only, with its reason
            assert run.state == "failed" and "no_such_module" in (run.error or ""), run
        assert all(r.state == "finished" and (r.metric("val/accuracy") or 0) > 0.3 for r in good)
        best = b.best_run(sweep_id)
        assert best is not None and best.id == max(good, key=lambda r: r.metric("val/accuracy") or 0).id
        assert b.sweep(sweep_id).state != "running"  # exhausted

    def test_stop_means_no_new_runs(self, backend: tuple[str, Backend]) -> None:
        _, b = backend
        sweep_id = b.create(grid(lr=[0.05, 0.02], model=["mlp"]), project="contract")
        b.stop(sweep_id)
        assert b.sweep(sweep_id).state != "running"
        assert b.run_agent(sweep_id).runs == 0
        assert b.runs(sweep_id) == []
