"""The offline report (HTML opened in headless Chromium, PNG) and sync of a real, finished local sweep."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from sweep_helpers import cli, create, store_runs, sweep_file

from ignite_sweep.backends.base import RunRecord, SweepRecord
from ignite_sweep.report.tables import param_columns, param_value

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run",
                  "--disable-component-update", "--disable-sync", "--virtual-time-budget=15000"]  # fmt: skip


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing: .ci/run installs Debian's chromium")
        pytest.skip("chromium not installed here (apt-get install chromium)")
    return path


def not_blank(path: Path) -> tuple[int, float]:
    pixels = np.asarray(Image.open(path).convert("RGB"), dtype=float)
    return len(np.unique(pixels.reshape(-1, 3), axis=0)), float(pixels.std())


def test_report_html_png_and_sync_of_a_finished_sweep(offline_wandb: Path) -> None:
    path = sweep_file(
        offline_wandb,
        early_terminate={"type": "hyperband", "min_iter": 1, "eta": 2},
        parameters={"epochs": {"value": 2}, "lr": {"values": [0.05, 0.04, 1e-7]},
                    "optimizer": {"values": ["sgd"]}},
    )  # fmt: skip
    sweep_id = create(path)
    assert cli("agent", sweep_id).returncode == 0
    runs = store_runs(sweep_id)
    assert sorted(r["state"] for r in runs) == ["finished", "finished", "stopped"]

    html, png = offline_wandb / "report.html", offline_wandb / "summary.png"
    result = cli("report", sweep_id, "-o", str(html), "--png", str(png))
    assert result.returncode == 0, result.stderr
    text = html.read_text()
    assert "<script src=" not in text and "plotly.js v" in text  # works offline: plotly's JS is embedded
    for panel in ("parcoords", "importance", "history", "curves", "runs"):
        assert f'id="{panel}"' in text
    assert "(stopped)" in text and "(best)" in text

    browser = chromium()
    profile = offline_wandb / "chromium-profile"
    dom = subprocess.run([browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--dump-dom", html.as_uri()],
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert 'data-js-errors="0"' in dom.stdout, dom.stderr[-2000:]
    drawn = int(dom.stdout.split('data-plots-drawn="')[1].split('"')[0])
    assert drawn >= 4  # every plotly panel drew its SVG
    shot = offline_wandb / "shot.png"
    subprocess.run([browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--window-size=1400,2400",
                    f"--screenshot={shot}", html.as_uri()], capture_output=True, timeout=120)  # fmt: skip
    colors, spread = not_blank(shot)
    assert colors > 50 and spread > 10, (colors, spread)

    image = Image.open(png)
    assert image.size == (1400, 1000)
    colors, spread = not_blank(png)
    assert colors > 50 and spread > 10

    dry = cli("sync", sweep_id, "--project", "home", "--entity", "me", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    command = shlex.split(dry.stdout.split("would run: ", 1)[1])
    assert command[1:8] == ["-m", "wandb", "sync", "--project", "home", "--entity", "me"]
    folders = command[8:]
    assert sorted(Path(f).name[-8:] for f in folders) == sorted(r["id"] for r in runs)
    assert all(Path(f).is_dir() and list(Path(f).glob("*.wandb")) for f in folders)


def cells(line: str) -> list[str]:
    """A row of a rich table as printed (its header row too)."""
    return [c.strip() for c in line.replace("┃", "│").strip("│ ").split("│")]


def test_a_program_sweep_shows_its_epochs_and_nested_parameters_as_dotted_columns(offline_wandb: Path) -> None:
    """A user's script has no ``epochs_completed``: its epochs are its evaluations. A nested parameter is one
    column (and one parallel-coordinates axis) per swept leaf, not one of dicts."""
    script = offline_wandb / "nested.py"
    script.write_text("import wandb\nrun = wandb.init()\nfor epoch in range(3):\n"
                      "    run.log({'score': run.config['model']['hidden'] * (epoch + 1), 'epoch': epoch + 1})\n"
                      "run.finish()\n")  # fmt: skip
    body = {"program": str(script), "method": "grid", "metric": {"name": "score", "goal": "maximize"},
            "parameters": {"lr": {"values": [0.1]}, "model": {"parameters": {
                "hidden": {"values": [16, 32]}, "act": {"values": ["relu"]}, "depth": {"value": 2}}}}}  # fmt: skip
    path = offline_wandb / "nested.yaml"
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    sweep_id = create(path)
    assert cli("agent", sweep_id, cwd=offline_wandb).returncode == 0

    table = cli("status", sweep_id).stdout
    head, *rows = [cells(line) for line in table.splitlines() if line[:1] in "┃│" and line.strip()]
    assert head[:5] == ["run", "state", "lr", "model.hidden", "model.act"] and "epochs" in head, table
    assert "model.depth" not in table and "{" not in table  # fixed leaves add nothing; no dicts
    assert sorted((r[3], r[head.index("epochs")]) for r in rows) == [("16", "3"), ("32", "3")], table

    html = offline_wandb / "report.html"
    assert cli("report", sweep_id, "-o", str(html)).returncode == 0
    text = html.read_text()
    assert '"label":"model.hidden"' in text and '"label":"model.act"' in text and '"label":"model"' not in text
    assert "<th>model.hidden</th>" in text and "<td>32</td><td>relu</td><td>96</td><td>3</td>" in text


def test_epochs_reached_and_dotted_parameter_values() -> None:
    trainer = RunRecord("a", "finished", {}, summary={"epochs_completed": 2}, history=[{"v": 1}] * 3)
    program = RunRecord("b", "running", {}, history=[{"v": 1}, {"v": 2}])
    listed = RunRecord("c", "finished", {}, summary={"v": 2})  # a W&B run listed without its history
    assert [r.epochs_reached for r in (trainer, program, listed)] == [2, 2, None]
    config = {"model": {"hidden": 16, "act": "relu"}, "opt.lr": 0.1}
    assert [param_value(config, c) for c in ("model.hidden", "model.act", "opt.lr", "model.nope")] == [
        16, "relu", 0.1, None]  # fmt: skip
    fixed = SweepRecord("local/x", "x", "grid", "finished", {"parameters": {"model": {"parameters": {
        "hidden": {"value": 16}}}}})  # fmt: skip
    assert param_columns(fixed, [RunRecord("a", "finished", config)]) == ["model.act", "model.hidden", "opt.lr"]


def test_report_without_a_finished_run_is_one_line(offline_wandb: Path) -> None:
    sweep_id = create(sweep_file(offline_wandb))
    result = cli("report", sweep_id, "-o", str(offline_wandb / "r.html"))
    assert result.returncode == 1 and result.stderr.count("\n") == 1
    assert "has no finished run with val/accuracy yet" in result.stderr
    assert not (offline_wandb / "r.html").exists()


def test_sync_refuses_a_wandb_sweep_and_an_empty_one(offline_wandb: Path) -> None:
    result = cli("sync", "me/proj/abc123", "--dry-run")
    assert result.returncode == 1 and "sync uploads local sweeps" in result.stderr
    sweep_id = create(sweep_file(offline_wandb))
    result = cli("sync", sweep_id, "--dry-run")
    assert result.returncode == 1 and "no offline run folders" in result.stderr
