"""Per-run overhead of a backend: a sweep of 20 tiny runs through the real CLI agent.

overhead = (sweep wall time - the summed time spent inside Ignite's trainer.run, training plus
evaluation) / runs. Everything else counts as overhead: claiming the run (SQLite, or W&B's agent heartbeat),
the sweep engine's suggestion, forking the child, loading the data, building the model, wandb.init/finish
(offline), the checkpoint artifact and recording the result. The W&B backend runs against the local W&B API
stand-in of the tests (the real SDK and agent protocol, no network): ``wandb`` is ignite-sweep's agent with its
default settings (no IGNITE_SWEEP_WANDB_HEARTBEAT_S), ``wandb_cli_agent`` W&B's own ``wandb agent`` CLI on the same
sweep (the registered command, ``python -m ignite_sweep.train ${args}``, one process per run), side by side with
the local backend (``--backend both``: all three). Last line: JSON with per_run_overhead_s for each.
With ``--kind program`` the sweep runs a trivial program of the user's own (``wandb.init``, one ``wandb.log``,
``finish``) as ``wandb agent`` would; its overhead is (wall - runs x the program run alone) / runs, the program run
alone being measured in the same invocation (``program_alone_s``).
Usage: python benchmarks/overhead.py [--runs 20] [--method grid|random|bayes]
                                     [--backend local|wandb|wandb_cli_agent|both]
                                     [--kind builtin|program] [--store URL]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from local_sweep import run_sweep, wandb_stand_in


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--method", default="random", choices=["grid", "random", "bayes"])
    parser.add_argument("--backend", default="local", choices=["local", "wandb", "wandb_cli_agent", "both"])
    parser.add_argument("--kind", default="builtin", choices=["builtin", "program"])
    parser.add_argument("--store", default=None, help="the local backend's store URL (default: a SQLite file)")
    args = parser.parse_args()
    if args.store:
        os.environ["IGNITE_SWEEP_STORE"] = args.store
    if args.kind == "program":
        program_overhead(args.runs, args.method)
        return
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
    os.environ.pop("IGNITE_SWEEP_WANDB_HEARTBEAT_S", None)  # "wandb" is the agent with its default settings
    chosen = [name for name in ("local", "wandb", "wandb_cli_agent") if args.backend in ("both", name)]
    result = {}
    for name in chosen:
        if name == "wandb_cli_agent":
            wall, status = run_wandb_cli_agent(sweep)
        else:
            wall, status = run_sweep(sweep, backend=name)
        runs = status["runs"]
        inside = sum(r["summary"].get("run_time_s", 0.0) for r in runs)
        n = len(runs)
        print(f"{name}: {n} runs ({args.method}), states {sorted({r['state'] for r in runs})}: wall {wall:.1f}s, "
              f"inside trainer.run {inside:.1f}s, agent start included", file=sys.stderr)  # fmt: skip
        result[name] = {"runs": n, "wall_s": round(wall, 2), "in_run_s": round(inside, 2),
                        "per_run_overhead_s": round((wall - inside) / n, 3)}  # fmt: skip
    print(json.dumps(result if len(result) > 1 else next(iter(result.values()))))


def run_wandb_cli_agent(sweep: dict[str, Any]) -> tuple[float, dict[str, Any]]:
    """The same sweep created by ignite-sweep on the stand-in, run by W&B's own CLI agent (``wandb agent <id>``:
    its registered command in a new process per run) until the controller says exit. (agent wall s, status)"""
    with tempfile.TemporaryDirectory() as tmp, wandb_stand_in(Path(tmp)) as extra:
        path = os.pathsep.join(p for p in (os.path.dirname(sys.executable), os.environ.get("PATH")) if p)
        env = {**os.environ, "IGNITE_SWEEP_DIR": tmp, "WANDB_DIR": tmp, "WANDB_MODE": "offline",
               "WANDB_SILENT": "true", "PATH": path, **extra}  # fmt: skip
        file = Path(tmp) / "sweep.yaml"
        file.write_text(yaml.safe_dump(sweep))
        cli = [sys.executable, "-m", "ignite_sweep"]
        created = subprocess.run([*cli, "create", str(file), "--backend", "wandb", "--project", "bench"], env=env,
                                 check=True, capture_output=True, text=True)  # fmt: skip
        sweep_id = created.stdout.strip().splitlines()[-1]
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "wandb", "agent", sweep_id], env=env, check=True, capture_output=True,
                       cwd=tmp)  # fmt: skip
        wall = time.perf_counter() - start
        status = subprocess.run([*cli, "status", sweep_id, "--json"], env=env, check=True, capture_output=True)
    return wall, json.loads(status.stdout)


TRIVIAL = "import wandb\nrun = wandb.init()\nrun.log({'score': run.config['x']})\nrun.finish()\n"


def program_overhead(runs: int, method: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        program = Path(tmp) / "trivial.py"
        program.write_text(TRIVIAL)
        x: dict = {"values": list(range(runs))} if method == "grid" else {"min": 0.0, "max": 1.0}
        sweep = {"program": str(program), "method": method, "metric": {"name": "score", "goal": "maximize"},
                 "run_cap": runs, "parameters": {"x": x}}  # fmt: skip
        wall, status = run_sweep(sweep)
        env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_DIR": tmp,
               "WANDB_SWEEP_PARAM_PATH": str(Path(tmp) / "p.yaml")}  # fmt: skip
        (Path(tmp) / "p.yaml").write_text("wandb_version: 1\n\nx:\n  value: 1\n")
        alone = []
        for _ in range(3):
            start = time.perf_counter()
            subprocess.run([sys.executable, str(program)], env=env, check=True, capture_output=True)
            alone.append(time.perf_counter() - start)
    n = len(status["runs"])
    per_alone = sorted(alone)[1]
    print(f"program: {n} runs ({method}), states {sorted({r['state'] for r in status['runs']})}: wall {wall:.1f}s; "
          f"the program alone {per_alone:.2f}s (python start, wandb init/log/finish)", file=sys.stderr)  # fmt: skip
    print(json.dumps({"runs": n, "wall_s": round(wall, 2), "program_alone_s": round(per_alone, 3),
                      "per_run_wall_s": round(wall / n, 3),
                      "per_run_overhead_s": round((wall - n * per_alone) / n, 3)}))  # fmt: skip


if __name__ == "__main__":
    main()
