"""Fused runs (training/fused.py): K runs trained together as one vmapped model vs the same K one after another.

First form (in-process, the training core): K = 1, 4, 8, 16 runs of the built-in MLP on the bundled digits, 3 epochs,
a random sweep's hyperparameters (lr log-uniform in [1e-3, 1e-1], momentum in [0, 0.95], weight_decay in [0, 1e-3];
one seed, as a sweep's runs share it), trained (a) one after another with train(), (b) with train_fused() as one
group; with W&B disabled and with offline logging; on 1 and 2 threads. Each cell is run --repeats times; the table
shows the median wall time of the K runs and the ratio (a)/(b). Also: the stacked optimizer's step vs one torch.optim
optimizer per member over views of the stacked parameters (the other way to give each member its own update).

The issue's benchmark (a 32-run sweep through the real agent and store at --fuse 1, 4, 8, 16, runs per hour) needs
the agent's --fuse; `agent_level()` below is where it goes (it raises until then), sharing `sweep_configs`.

Last line: JSON {"speedup": {"1": .., "4": .., "8": .., "16": ..}} for offline logging on 1 thread (how an agent's
workers train on this machine), with every cell under "cells".
Usage: python benchmarks/fused.py [--ks 1,4,8,16] [--threads 1,2] [--modes disabled,offline] [--repeats 3]
       [--epochs 3]
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


def sweep_configs(k: int, epochs: int, data_dir: str, seed: int = 0) -> list:
    from ignite_sweep.training.config import TrainConfig

    rng = random.Random(seed)
    return [TrainConfig.from_dict({"dataset": "digits", "model": "mlp", "epochs": epochs, "data_dir": data_dir,
                                   "lr": math.exp(rng.uniform(math.log(1e-3), math.log(1e-1))),
                                   "momentum": rng.uniform(0, 0.95), "weight_decay": rng.uniform(0, 1e-3)})
            for _ in range(k)]  # fmt: skip


def one_after_another(cfgs: list) -> tuple[float, list[dict]]:
    from ignite_sweep.training.train import train

    started = time.perf_counter()
    summaries = [train(cfg) for cfg in cfgs]
    return time.perf_counter() - started, summaries


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

    from ignite_sweep.training.fused import StackedOptimizer
    from ignite_sweep.training.models import MLP

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


def agent_level(ks: list[int], runs: int = 32) -> dict:
    """The issue's benchmark: a `runs`-run random sweep through the real agent and store at --fuse K, runs per
    hour side by side. Needs `ignite-sweep agent --fuse K` (the agent integration), which does not exist yet."""
    raise NotImplementedError("the agent-level benchmark needs `ignite-sweep agent --fuse K`")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ks", default="1,4,8,16")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--modes", default="disabled,offline")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    ks = [int(k) for k in args.ks.split(",")]
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
          f"{'acc alone':>9} {'acc fused':>9}", flush=True)  # fmt: skip
    for mode in args.modes.split(","):
        os.environ["WANDB_MODE"] = mode
        for threads in (int(t) for t in args.threads.split(",")):
            torch.set_num_threads(threads)
            for k in ks:
                cfgs = sweep_configs(k, args.epochs, data_dir)
                alone_s, fused_s, ratios = [], [], []
                for _ in range(args.repeats):  # interleaved: neighbours in time see the same load
                    a, alone = one_after_another(cfgs)
                    f, fused = together(cfgs)
                    alone_s.append(a)
                    fused_s.append(f)
                    ratios.append(a / f)
                best = {"alone": max(s.get("val/accuracy", 0.0) for s in alone),
                        "fused": max(s.get("val/accuracy", 0.0) for s in fused)}  # fmt: skip
                cell = {"mode": mode, "threads": threads, "k": k, "alone_s": statistics.median(alone_s),
                        "fused_s": statistics.median(fused_s), "speedup": statistics.median(ratios),
                        "speedups": [round(r, 3) for r in ratios], "best_acc": best}  # fmt: skip
                cells.append(cell)
                print(f"{mode:<9} {threads:>7} {k:>3} {cell['alone_s']:>9.2f} {cell['fused_s']:>9.2f} "
                      f"{cell['speedup']:>7.2f}x {best['alone']:>9.4f} {best['fused']:>9.4f}", flush=True)  # fmt: skip
    torch.set_num_threads(1)
    optim = {kind: optimizer_step_us(16, kind) for kind in ("sgd", "adam")}
    for kind, t in optim.items():
        print(f"optimizer step, 16 members, {kind}: stacked {t['stacked_us']:.0f} us, "
              f"one torch.optim per member {t['per_member_torch_optim_us']:.0f} us")  # fmt: skip
    headline = [c for c in cells if c["threads"] == 1 and c["mode"] == "offline"] or cells
    print(json.dumps({"speedup": {str(c["k"]): round(c["speedup"], 3) for c in headline},
                      "setting": f"{headline[0]['mode']} logging, {headline[0]['threads']} thread(s)",
                      "optimizer_step_us": optim, "cells": cells}))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
