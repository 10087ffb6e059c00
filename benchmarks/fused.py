"""Fused runs: a sweep through the real agent and store at `--fuse K`, side by side (and the training core alone).

Agent level (the default; issue 26's benchmark): a --runs-run random sweep (lr log-uniform in [1e-3, 1e-1], momentum in
[0, 0.95], weight_decay in [0, 1e-3]) of the built-in MLP on the bundled digits, --epochs epochs, created and run with
`ignite-sweep agent --fuse K` for each K (a fresh store each), runs logged with wandb offline. For each K: the agent's
wall time (its start included), runs per hour, the states, the best val/accuracy; then the same runs' training steps
in a plain torch loop (no Ignite, evaluation, logging, process or store), and the ceiling of any fusing: the --fuse 1
wall over the runs' matmuls alone at the rate this machine reaches on the group's batched matmul. Last line: JSON
{"runs_per_hour": {"1": .., "4": .., ...}, "speedup_best": .., "best_k": .., "ceiling": .., "best_val_accuracy": ..}.
--threads N sets IGNITE_SWEEP_THREADS (torch threads per run process; default: torch's, as users run it); --hidden N
the MLP's hidden width (a smaller model: per-step overhead, not arithmetic, dominates).

In process (--in-process; the training core): K runs trained (a) one after another with train(), (b) with
train_fused() as one group; W&B disabled and offline; on 1 and 2 threads; --repeats times each, median wall time and
the ratio (a)/(b); the ceiling (a)/(plain): (plain) the same runs' training steps alone in a plain torch loop, the
most fusing can gain where a vmapped step costs what its members' steps cost (compute-bound, as on this CPU); also
the stacked optimizer's step vs one torch.optim optimizer per member over views of the stacked parameters. Last line:
JSON {"speedup": {"1": .., ...}, "ceiling": {...}} for offline logging on 1 thread, every cell under "cells".
Usage: python benchmarks/fused.py [--ks 1,4,8,16] [--runs 32] [--epochs 3] [--threads N] [--hidden N]
       python benchmarks/fused.py --in-process [--ks 1,4,8,16] [--threads 1,2] [--modes disabled,offline]
                                  [--repeats 3] [--epochs 3]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def sweep_configs(k: int, epochs: int, data_dir: str | None = None, seed: int = 0, hidden: int | None = None) -> list:
    """K configs of the benchmark's random sweep (``hidden``: ``small_mlp`` that wide; data_dir None: the default)."""
    from ignite_sweep.training.config import TrainConfig

    rng = random.Random(seed)
    model = {"model": "fused:small_mlp", "hidden": hidden} if hidden else {"model": "mlp"}
    where = {"data_dir": data_dir} if data_dir else {}
    return [TrainConfig.from_dict({"dataset": "digits", **model, "epochs": epochs, **where,
                                   "lr": math.exp(rng.uniform(math.log(1e-3), math.log(1e-1))),
                                   "momentum": rng.uniform(0, 0.95), "weight_decay": rng.uniform(0, 1e-3)})
            for _ in range(k)]  # fmt: skip


def one_after_another(cfgs: list) -> tuple[float, list[dict]]:
    from ignite_sweep.training.train import train

    started = time.perf_counter()
    summaries = [train(cfg) for cfg in cfgs]
    return time.perf_counter() - started, summaries


def plain_loop(cfgs: list) -> float:
    """The floor for (a): the same K runs' training steps one after another in a plain torch loop (the same data,
    model, optimizer and batches; no Ignite, evaluation, logging or checkpoints). alone / plain is the most fusing
    could gain on this machine if a vmapped step cost what K steps' arithmetic costs alone."""
    import torch

    from ignite_sweep.training.data import TensorBatches, load_dataset
    from ignite_sweep.training.models import build_model
    from ignite_sweep.training.train import build_loss, build_optimizer

    started = time.perf_counter()
    for cfg in cfgs:
        torch.manual_seed(cfg.seed)
        data = load_dataset(cfg.dataset, cfg.data_dir, cfg.download, cfg.seed)
        model = build_model(cfg.model, data.in_channels, data.image_size, data.num_classes, cfg.dropout,
                            cfg.factory_kwargs("model"))  # fmt: skip
        optimizer, loss_fn = build_optimizer(cfg, model), build_loss(cfg.loss)
        batches = TensorBatches(data.train_x, data.train_y, cfg.batch_size, shuffle=True, seed=cfg.seed)
        for _ in range(cfg.epochs):
            for x, y in batches:
                optimizer.zero_grad()
                loss_fn(model(x), y).backward()
                optimizer.step()
    return time.perf_counter() - started


def matmul_floor(cfgs: list, k: int = 16) -> tuple[float, float, float]:
    """A floor under any way of training ``cfgs``: their Linear layers' matmuls (forward, weight gradients, input
    gradients but the first layer's), at the rate this machine reaches on the group's batched matmul (K members'
    first layer, torch's current threads). Returns (seconds, TFLOP, GFLOP/s)."""
    import torch

    from ignite_sweep.training.data import load_dataset
    from ignite_sweep.training.models import build_model

    flops = 0.0
    first_shape = None
    for cfg in cfgs:
        data = load_dataset(cfg.dataset, cfg.data_dir, cfg.download, cfg.seed)
        model = build_model(cfg.model, data.in_channels, data.image_size, data.num_classes, cfg.dropout,
                            cfg.factory_kwargs("model"))  # fmt: skip
        linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
        per_sample = sum(2 * m.in_features * m.out_features * (2 if i == 0 else 3) for i, m in enumerate(linears))
        samples = cfg.epochs * (len(data.train_x) // cfg.batch_size) * cfg.batch_size
        flops += per_sample * samples
        first_shape = first_shape or (cfg.batch_size, linears[0].in_features, linears[0].out_features)
    b, n_in, n_out = first_shape
    x, w = torch.randn(b, n_in), torch.randn(k, n_out, n_in)
    for _ in range(10):
        torch.matmul(x, w.transpose(1, 2))
    started, repeats = time.perf_counter(), 100
    for _ in range(repeats):
        torch.matmul(x, w.transpose(1, 2))
    rate = 2 * b * n_in * n_out * k * repeats / (time.perf_counter() - started)
    return flops / rate, flops / 1e12, rate / 1e9


def together(cfgs: list) -> tuple[float, list[dict]]:
    """The K runs as one fused group (at K = 1 too: train_fused would hand a group of one to train(); the fused
    engine at K = 1 is what fusing costs)."""
    from ignite_sweep.training.fused import _train_group, can_fuse

    started = time.perf_counter()
    groups, reasons = can_fuse(cfgs * 2)  # the probe, as train_fused runs it (cfgs * 2: a group even at K = 1)
    assert groups and not reasons, reasons
    n = len(cfgs)
    summaries = _train_group(cfgs, [None] * n, [None] * n, [None] * n, None)
    return time.perf_counter() - started, summaries


def optimizer_step_us(k: int = 16, kind: str = "sgd", steps: int = 30) -> dict[str, float]:
    """One optimizer step of k MLP members: the stacked optimizer vs k torch.optim optimizers over views."""
    import torch
    from torch.func import stack_module_state

    from ignite_sweep.training.models import MLP
    from ignite_sweep.training.stacked import StackedOptimizer

    models = [MLP(dropout=0.0) for _ in range(k)]
    make = {"sgd": lambda p: torch.optim.SGD(p, lr=0.01, momentum=0.9, weight_decay=1e-4),
            "adam": lambda p: torch.optim.Adam(p, lr=1e-3)}[kind]  # fmt: skip
    params, _ = stack_module_state(models)
    stacked = {n: v.detach() for n, v in params.items()}
    grads = {n: torch.randn_like(v) for n, v in stacked.items()}
    fused = StackedOptimizer(kind, [make(m.parameters()) for m in models], stacked)
    views = [[v[i] for v in stacked.values()] for i in range(k)]
    for member in views:
        for v in member:
            v.requires_grad_(False)
    per_member = []
    for i, member in enumerate(views):
        leaves = [torch.nn.Parameter(v, requires_grad=True) for v in member]  # shares the stacked storage
        for leaf, g in zip(leaves, grads.values(), strict=True):
            leaf.grad = g[i]
        per_member.append(make(leaves))

    def timed(fn: object) -> float:
        for _ in range(3):
            fn()  # type: ignore[operator]
        started = time.perf_counter()
        for _ in range(steps):
            fn()  # type: ignore[operator]
        return (time.perf_counter() - started) / steps * 1e6

    with torch.no_grad():
        stacked_us = timed(lambda: fused.step(stacked, grads))
        loop_us = timed(lambda: [o.step() for o in per_member])
    return {"stacked_us": stacked_us, "per_member_torch_optim_us": loop_us}


def small_mlp(in_channels: int, image_size: tuple[int, int], num_classes: int, dropout: float, hidden: int = 256):  # noqa: ANN201
    """The built-in MLP with a hidden width of the sweep's choosing (``model: fused:small_mlp``, ``hidden: N``: a
    user factory and its own hyperparameter, as a user sweeps their model)."""
    from ignite_sweep.training.models import MLP

    return MLP(in_channels, image_size, num_classes, dropout, hidden=hidden)


def agent_level(ks: list[int], runs: int, epochs: int, hidden: int | None = None) -> dict:
    """The same random sweep through the real CLI agent at each --fuse K (a fresh store each): runs per hour.
    ``hidden``: the MLP's hidden width (through ``small_mlp``; default the built-in MLP, 256 wide)."""
    if hidden:  # the agents import small_mlp from this folder
        here = str(Path(__file__).resolve().parent)
        os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH")) if p)
    from local_sweep import run_sweep

    sweep = {
        "method": "random",
        "metric": {"name": "val/accuracy", "goal": "maximize"},
        "run_cap": runs,
        "parameters": {
            "dataset": {"value": "digits"},
            "model": {"value": "fused:small_mlp" if hidden else "mlp"},
            "epochs": {"value": epochs},
            "lr": {"distribution": "log_uniform_values", "min": 1e-3, "max": 1e-1},
            "momentum": {"min": 0.0, "max": 0.95},
            "weight_decay": {"min": 0.0, "max": 1e-3},
            **({"hidden": {"value": hidden}} if hidden else {}),
        },
    }
    print(f"{'fuse':>4} {'runs':>5} {'wall s':>8} {'runs/hour':>10} {'speedup':>8} {'best acc':>9}  states", flush=True)
    cells = {}
    for k in ks:
        wall, status = run_sweep(sweep, ["--fuse", str(k)])
        done = status["runs"]
        states: dict[str, int] = {}
        for r in done:
            states[r["state"]] = states.get(r["state"], 0) + 1
        best = max((r["summary"].get("val/accuracy") or 0.0 for r in done), default=0.0)
        cells[k] = {"runs": len(done), "wall_s": round(wall, 2), "runs_per_hour": round(len(done) / wall * 3600, 1),
                    "best_val_accuracy": round(best, 4), "states": states}  # fmt: skip
        speedup = cells[k]["runs_per_hour"] / cells[ks[0]]["runs_per_hour"]
        print(f"{k:>4} {len(done):>5} {wall:>8.1f} {cells[k]['runs_per_hour']:>10.0f} {speedup:>7.2f}x {best:>9.4f}  "
              f"{states}", flush=True)  # fmt: skip
    # the ceiling on this machine: the same runs' training steps alone in a plain torch loop, one after another, on
    # the thread count the runs had: the most fusing can gain where a vmapped step costs what its members' cost
    threads = os.environ.get("IGNITE_SWEEP_THREADS")
    if threads:
        import torch

        torch.set_num_threads(int(threads))
    configs = sweep_configs(runs, epochs, hidden=hidden)
    plain = plain_loop(configs)
    floor, tflop, gflops = matmul_floor(configs, max(ks))
    ceiling = cells[ks[0]]["wall_s"] / floor
    print(f"the {runs} runs' training steps one after another in a plain torch loop: {plain:.1f} s", flush=True)
    print(f"their matmuls alone: {tflop:.2f} TFLOP at {gflops:.0f} GFLOP/s (a {max(ks)}-member batched matmul here) = "
          f"{floor:.1f} s; ceiling of any fusing (--fuse {ks[0]} wall / that): {ceiling:.2f}x", flush=True)  # fmt: skip
    base = cells[ks[0]]["runs_per_hour"]
    best_k = max(ks, key=lambda k: cells[k]["runs_per_hour"])
    return {"runs_per_hour": {str(k): c["runs_per_hour"] for k, c in cells.items()},
            "speedup_best": round(cells[best_k]["runs_per_hour"] / base, 3), "best_k": best_k,
            "plain_s": round(plain, 2), "matmul_floor_s": round(floor, 2), "ceiling": round(ceiling, 3),
            "best_val_accuracy": {str(k): c["best_val_accuracy"] for k, c in cells.items()},
            "wall_s": {str(k): c["wall_s"] for k, c in cells.items()}, "runs": runs, "epochs": epochs,
            "hidden": hidden or 256,
            "threads": os.environ.get("IGNITE_SWEEP_THREADS", "torch's default")}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ks", default="1,4,8,16")
    parser.add_argument("--in-process", action="store_true", help="the training core alone, not through the agent")
    parser.add_argument("--runs", type=int, default=32)
    parser.add_argument("--hidden", type=int, default=None, help="agent level: the MLP's hidden width (default 256)")
    parser.add_argument("--threads", default=None, help="agent level: N; in process: a list, default 1,2")
    parser.add_argument("--modes", default="disabled,offline")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    ks = [int(k) for k in args.ks.split(",")]
    if not args.in_process:
        if args.threads:
            os.environ["IGNITE_SWEEP_THREADS"] = os.environ["OMP_NUM_THREADS"] = args.threads
        print(json.dumps(agent_level(ks, args.runs, args.epochs, args.hidden)))
        return 0
    args.threads = args.threads or "1,2"
    import torch

    os.environ["WANDB_SILENT"] = "true"
    os.environ.setdefault("WANDB_PROJECT", "ignite-sweep-bench")
    work = Path(tempfile.mkdtemp(prefix="fused-bench-"))
    os.environ["WANDB_DIR"] = str(work)
    data_dir = os.environ.get("IGNITE_SWEEP_DATA", str(work / "data"))
    from ignite_sweep.training.data import load_dataset

    load_dataset("digits", data_dir)  # prepared once, before any timing
    os.environ["WANDB_MODE"] = "disabled"
    one_after_another(sweep_configs(1, 1, data_dir))  # imports and first-call costs, before any timing
    together(sweep_configs(2, 1, data_dir))
    cells = []
    print(f"{'logging':<9} {'threads':>7} {'K':>3} {'alone s':>9} {'fused s':>9} {'speedup':>8} "
          f"{'plain s':>8} {'ceiling':>8} {'acc alone':>9} {'acc fused':>9}", flush=True)  # fmt: skip
    for mode in args.modes.split(","):
        os.environ["WANDB_MODE"] = mode
        for threads in (int(t) for t in args.threads.split(",")):
            torch.set_num_threads(threads)
            for k in ks:
                cfgs = sweep_configs(k, args.epochs, data_dir)
                alone_s, fused_s, ratios, plain_s = [], [], [], []
                for _ in range(args.repeats):  # interleaved: neighbours in time see the same load
                    a, alone = one_after_another(cfgs)
                    f, fused = together(cfgs)
                    alone_s.append(a)
                    fused_s.append(f)
                    ratios.append(a / f)
                    plain_s.append(plain_loop(cfgs))
                best = {"alone": max(s.get("val/accuracy", 0.0) for s in alone),
                        "fused": max(s.get("val/accuracy", 0.0) for s in fused)}  # fmt: skip
                cell = {"mode": mode, "threads": threads, "k": k, "alone_s": statistics.median(alone_s),
                        "fused_s": statistics.median(fused_s), "speedup": statistics.median(ratios),
                        "speedups": [round(r, 3) for r in ratios], "plain_s": statistics.median(plain_s),
                        "best_acc": best}  # fmt: skip
                cell["ceiling"] = cell["alone_s"] / cell["plain_s"]
                cells.append(cell)
                print(f"{mode:<9} {threads:>7} {k:>3} {cell['alone_s']:>9.2f} {cell['fused_s']:>9.2f} "
                      f"{cell['speedup']:>7.2f}x {cell['plain_s']:>8.2f} {cell['ceiling']:>7.2f}x "
                      f"{best['alone']:>9.4f} {best['fused']:>9.4f}", flush=True)  # fmt: skip
    torch.set_num_threads(1)
    optim = {kind: optimizer_step_us(16, kind) for kind in ("sgd", "adam")}
    for kind, t in optim.items():
        print(f"optimizer step, 16 members, {kind}: stacked {t['stacked_us']:.0f} us, "
              f"one torch.optim per member {t['per_member_torch_optim_us']:.0f} us")  # fmt: skip
    headline = [c for c in cells if c["threads"] == 1 and c["mode"] == "offline"] or cells
    print(json.dumps({"speedup": {str(c["k"]): round(c["speedup"], 3) for c in headline},
                      "ceiling": {str(c["k"]): round(c["ceiling"], 3) for c in headline},
                      "setting": f"{headline[0]['mode']} logging, {headline[0]['threads']} thread(s)",
                      "optimizer_step_us": optim, "cells": cells}))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
