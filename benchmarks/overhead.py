"""Per-run overhead of a backend: a sweep of 20 tiny runs through the real CLI agent.

overhead = (sweep wall time - the summed time spent inside Ignite's trainer.run, training plus
evaluation) / runs. Everything else counts as overhead: claiming the run (SQLite, or W&B's agent heartbeat),
the sweep engine's suggestion, forking the child, loading the data, building the model, wandb.init/finish
(offline), the checkpoint artifact and recording the result. The W&B backend runs against the local W&B API
stand-in of the tests (the real SDK and agent protocol, no network): once with W&B's own 5 s heartbeat and once
with 0.2 s, the same sweep side by side with the local backend. Last line: JSON with per_run_overhead_s for each.
Usage: python benchmarks/overhead.py [--runs 20] [--method grid|random|bayes] [--backend local|wandb|both]
"""

from __future__ import annotations

import argparse
import json
import sys

from local_sweep import run_sweep


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--method", default="random", choices=["grid", "random", "bayes"])
    parser.add_argument("--backend", default="local", choices=["local", "wandb", "both"])
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
    settings = {"local": ("local", {}), "wandb_heartbeat_5s": ("wandb", {}),
                "wandb_heartbeat_0.2s": ("wandb", {"IGNITE_SWEEP_WANDB_HEARTBEAT_S": "0.2"})}  # fmt: skip
    chosen = {name: s for name, s in settings.items() if args.backend in ("both", s[0])}
    result = {}
    for name, (backend, env) in chosen.items():
        wall, status = run_sweep(sweep, backend=backend, env=env)
        runs = status["runs"]
        inside = sum(r["summary"].get("run_time_s", 0.0) for r in runs)
        n = len(runs)
        print(f"{name}: {n} runs ({args.method}), states {sorted({r['state'] for r in runs})}: wall {wall:.1f}s, "
              f"inside trainer.run {inside:.1f}s, agent start included", file=sys.stderr)  # fmt: skip
        result[name] = {"runs": n, "wall_s": round(wall, 2), "in_run_s": round(inside, 2),
                        "per_run_overhead_s": round((wall - inside) / n, 3)}  # fmt: skip
    print(json.dumps(result if len(result) > 1 else next(iter(result.values()))))


if __name__ == "__main__":
    main()
