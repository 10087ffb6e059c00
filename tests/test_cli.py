"""End to end through the installed CLI: create -> agent -> ls / status / best -> train --config."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from sweep_helpers import cli, sweep_file


def test_create_agent_status_best_round_trip(offline_wandb: Path) -> None:
    path = sweep_file(offline_wandb, name="two.yaml", parameters={"lr": {"values": [0.002, 0.05]}})
    created = cli("create", str(path), "--backend", "local")
    assert created.returncode == 0, created.stderr
    lines = created.stdout.strip().splitlines()
    sweep_id = lines[-1]
    assert sweep_id.startswith("local/") and len(sweep_id) == len("local/") + 8
    assert f"ignite-sweep agent {sweep_id}" in created.stdout and "backend: local (--backend local)" in created.stderr

    agent = cli("agent", sweep_id, "--count", "1")
    assert agent.returncode == 0 and "--count 1 reached" in agent.stderr
    agent = cli("agent", sweep_id)
    assert agent.returncode == 0 and "every grid point has run" in agent.stderr

    listed = cli("ls")
    assert sweep_id in listed.stdout and "2 runs" in listed.stdout

    status = json.loads(cli("status", sweep_id, "--json").stdout)
    assert status["sweep"]["id"] == sweep_id and status["sweep"]["state"] == "finished"
    runs = status["runs"]
    assert [r["state"] for r in runs] == ["finished", "finished"]
    assert set(runs[0]) == {"id", "state", "config", "summary", "error", "runtime_s", "slot", "continues",
                            "resumed_epoch", "epoch", "wandb_id"}
    best = max(runs, key=lambda r: r["summary"]["val/accuracy"])
    assert status["sweep"]["best_run"] == best["id"] and best["config"]["lr"] == 0.05

    table = cli("status", sweep_id).stdout
    assert f"{best['id']} *" in table and "val/accuracy (maximize)" in table

    best_yaml = cli("best", sweep_id).stdout
    assert yaml.safe_load(best_yaml) == best["config"]
    config = offline_wandb / "best.yaml"
    config.write_text(best_yaml)
    train = subprocess.run(
        [sys.executable, "-m", "ignite_sweep.train", "--config", str(config), "--epochs=1"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert train.returncode == 0 and "finished after 1 epochs" in train.stdout, train.stderr


def test_run_creates_and_runs(offline_wandb: Path) -> None:
    path = sweep_file(offline_wandb, parameters={"lr": {"values": [0.05]}})
    result = cli("run", str(path), "--backend", "local")
    assert result.returncode == 0, result.stderr
    sweep_id = result.stdout.strip().splitlines()[-1]
    status = json.loads(cli("status", sweep_id, "--json").stdout)
    assert [r["state"] for r in status["runs"]] == ["finished"]


def test_help_explains_every_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    result = cli("--help")
    assert result.returncode == 0
    for command in ("create", "agent", "run", "ls", "status", "best", "stop", "cancel", "pause", "resume"):
        assert command in result.stdout
    agent_help = cli("agent", "--help").stdout
    assert "--count" in agent_help and "--max-consecutive-failures" in agent_help and "Ctrl-C" in agent_help


def test_best_without_results_is_one_line(offline_wandb: Path) -> None:
    sweep_id = cli("create", str(sweep_file(offline_wandb)), "--backend", "local").stdout.strip().splitlines()[-1]
    result = cli("best", sweep_id)
    assert result.returncode == 1 and result.stderr.count("\n") == 1 and "no run with its metric" in result.stderr


def test_a_sweep_without_metric_says_so_in_status_best_and_report(offline_wandb: Path) -> None:
    """W&B allows a sweep without `metric:`: nothing is scored, and nothing may pretend it is (val/accuracy)."""
    script = offline_wandb / "plain.py"
    script.write_text("import wandb\nrun = wandb.init()\nrun.log({'loss': run.config['x']})\nrun.finish()\n")
    path = offline_wandb / "plain.yaml"
    path.write_text(yaml.safe_dump({"program": str(script), "method": "grid", "parameters": {"x": {"values": [7]}}}))
    sweep_id = cli("create", str(path), "--backend", "local").stdout.strip().splitlines()[-1]
    assert cli("agent", sweep_id, cwd=offline_wandb).returncode == 0

    table = cli("status", sweep_id).stdout
    assert "no metric: this sweep's YAML has no `metric:`" in table and "val/accuracy" not in table, table
    assert "(maximize)" not in table and "(minimize)" not in table and "*" not in table

    best = cli("best", sweep_id)
    assert best.returncode == 1 and best.stdout == "" and best.stderr.count("\n") == 1, best.stderr
    assert "has no metric, so it has no best run" in best.stderr and "`metric: {name:" in best.stderr

    html = offline_wandb / "report.html"
    report = cli("report", sweep_id, "-o", str(html), "--png", str(offline_wandb / "r.png"))
    assert report.stdout == f"wrote {html} (runs only: the sweep has no metric to plot)\n"
    assert report.returncode == 1 and "no PNG written" in report.stderr and not (offline_wandb / "r.png").exists()
    text = html.read_text()
    assert "val/accuracy" not in text and "<b>no metric</b>" in text and 'id="parcoords"' not in text
    assert "<th>x</th><th>epochs</th><th>runtime</th>" in text and "<td>finished</td><td>7</td><td>1</td>" in text
