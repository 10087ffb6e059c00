"""Runs per minute of a local sweep with --workers 1 and --workers 2, side by side in one run.

Each setting runs the same grid (N runs of the seed's Net on the bundled digits, 1 epoch) through the real
CLI pool. Last line: JSON {"workers_1": runs/min, "workers_2": runs/min, "speedup": ratio}.
On this project's 2-core CI machine both settings share the same two cores, so the speedup measures how
well two agents overlap their per-run overheads (start, data, wandb) with the other's training.
Usage: python benchmarks/parallel.py [--runs 8] [--workers 1 2]
"""

from __future__ import annotations

import argparse
import json
import sys

from local_sweep import run_local_sweep


def runs_per_minute(workers: int, runs: int, extra: list[str]) -> float:
    sweep = {
        "method": "grid",
        "metric": {"name": "val/accuracy", "goal": "maximize"},
        "parameters": {
            "dataset": {"value": "digits"},
            "epochs": {"value": 1},
            "log_interval": {"value": 50},
            "lr": {"values": [round(0.01 + 0.002 * i, 4) for i in range(runs)]},
        },
    }
    wall, status = run_local_sweep(sweep, ["--workers", str(workers), "--stagger", "0", *extra])
    minutes = wall / 60
    finished = sum(1 for r in status["runs"] if r["state"] == "finished")
    print(f"--workers {workers}: {finished} runs in {minutes * 60:.1f}s", file=sys.stderr)
    return finished / minutes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=8)
    args, extra = parser.parse_known_args()
    one = runs_per_minute(1, args.runs, extra)
    two = runs_per_minute(2, args.runs, extra)
    print(json.dumps({"workers_1": round(one, 2), "workers_2": round(two, 2), "speedup": round(two / one, 3)}))


if __name__ == "__main__":
    main()
