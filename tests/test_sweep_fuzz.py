"""Property-based: every sweep W&B's spec can express, with this project's hyperparameter names, is either
accepted by `create` (and then every suggestion the engine makes builds a TrainConfig) or refused in one line
with exit 1 and no traceback. A few accepted sweeps run one real 1-epoch run each."""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from sweep_helpers import cli, store_runs
from sweep_strategies import sweep_config

from ignite_sweep import cli as ignite_cli
from ignite_sweep.sweepfile import _dry_run, load_sweep

FUZZ_EXAMPLES = int(os.environ.get("IGNITE_SWEEP_FUZZ_EXAMPLES", "150"))
TALLY = os.environ.get("IGNITE_SWEEP_FUZZ_TALLY")  # a file: one JSON line per example (outcome, reason)


def create_in_process(config: dict[str, Any], folder: Path) -> tuple[int, str, str]:
    path = folder / "sweep.yaml"
    path.write_text(yaml.safe_dump(config))
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = ignite_cli.run(["create", str(path), "--backend", "local"])
    return code, out.getvalue(), err.getvalue()


@settings(max_examples=FUZZ_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(config=st.one_of(sweep_config(junk=True), sweep_config(junk=False)))
def test_create_accepts_or_refuses_in_one_line(config: dict[str, Any]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        code, out, err = create_in_process(config, Path(folder))
        errors = [line for line in err.splitlines() if not line.startswith(("backend:", "warning:"))]
        assert code in (0, 1), (code, err)
        assert "Traceback" not in err and "(traceback:" not in err, err  # the backstop is for bugs: none here
        if code == 1:
            assert len(errors) == 1 and errors[0].startswith(f"error: {folder}/sweep.yaml: "), err
            assert out == ""
        else:
            assert errors == [] and out.strip().splitlines()[-1].startswith("local/"), (out, err)
            # Beyond create's own seeded draws: other seeds' suggestions all build a TrainConfig too.
            accepted = load_sweep(Path(folder) / "sweep.yaml", warn=lambda _: None)
            _dry_run(accepted, n=10 if accepted["method"] == "bayes" else 30, seed=12345)
        if TALLY:
            reason = errors[0].split("sweep.yaml: ", 1)[1] if code else "accepted"
            with open(TALLY, "a") as tally:
                line = {"code": code, "reason": reason, "method": config["method"], "config": config}
                tally.write(json.dumps(line) + "\n")


@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                                                  HealthCheck.function_scoped_fixture])  # fmt: skip
@given(config=sweep_config(junk=False))
def test_accepted_sweeps_run_a_real_epoch(config: dict[str, Any], offline_wandb: Path) -> None:
    config["parameters"].update({"epochs": {"value": 1}, "val_batch_size": {"value": 512},
                                 "log_interval": {"value": 50}, "patience": {"value": 0}})  # fmt: skip
    if "batch_size" in config["parameters"]:  # a drawn batch size of 1 is valid, and 20x slower
        config["parameters"]["batch_size"] = {"values": [32, 64]}
    code, out, _ = create_in_process(config, offline_wandb)
    assume(code == 0)  # refusals are the other test's business; this one trains what is accepted
    sweep_id = out.strip().splitlines()[-1]
    agent = cli("agent", sweep_id, "--count", "1")
    assert agent.returncode == 0, agent.stderr
    runs = store_runs(sweep_id)
    assert len(runs) == 1 and runs[0]["state"] in ("finished", "failed"), runs
    if runs[0]["state"] == "failed":  # only a diverging draw (a huge lr) may fail, and it says so
        assert runs[0]["error"].startswith("diverged"), runs[0]["error"]
