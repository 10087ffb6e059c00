"""Per-run overhead of the local backend: a sweep of 20 tiny runs through the real CLI agent.

overhead = (sweep wall time - the summed time spent inside Ignite's trainer.run, training plus
evaluation) / runs. Everything else counts as overhead: claiming the run in SQLite, the sweep engine's
suggestion, forking the child, loading the data, building the model, wandb.init/finish (offline), the
checkpoint artifact and recording the result. Last line: JSON with per_run_overhead_s.
Usage: python benchmarks/overhead.py [--runs 20] [--method grid|random|bayes]
"""

from __future__ import annotations

import argparse
import json
import sys

from local_sweep import run_local_sweep


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--method", default="random", choices=["grid", "random", "bayes"])
    args = parser.parse_args()
    lr: dict = {"values": [round(0.01 + 0.001 * i, 4) for i in range(args.runs)]}
    if args.method != "grid":
        lr = {"distribution": "log_uniform_values", "min": 0.005, "max": 0.05}
    sweep = {
        "method": args.method,
        "metric": {"name": "val/accuracy", "goal": "maximize"},
        "run_cap": args.runs,
        "parameters": {
            "dataset": {"value": "digits"},
            "model": {"value": "mlp"},
            "epochs": {"value": 1},
            "batch_size": {"value": 256},
            "log_interval": {"value": 20},
            "lr": lr,
        },
    }
    wall, status = run_local_sweep(sweep)
    runs = status["runs"]
    inside = sum(r["summary"].get("run_time_s", 0.0) for r in runs)
    n = len(runs)
    print(f"{n} runs ({args.method}), states {sorted({r['state'] for r in runs})}: wall {wall:.1f}s, "
          f"inside trainer.run {inside:.1f}s, agent start included", file=sys.stderr)  # fmt: skip
    print(json.dumps({"runs": n, "wall_s": round(wall, 2), "in_run_s": round(inside, 2),
                      "per_run_overhead_s": round((wall - inside) / n, 3)}))  # fmt: skip


if __name__ == "__main__":
    main()
