"""Per-iteration overhead of the training loop: microseconds per training iteration, side by side in one run.

Rows (same model, same device tensors, batch 64 on the bundled digits, one CPU thread unless --threads):
  plain           a bare PyTorch loop
  plain_wandb     the same loop logging what train() logs every 10 iterations (loss, lr and gradient norm, one
                  wandb.log, W&B offline): what W&B's own SDK costs, for any loop. Not the histograms train() adds
                  to every 10th of these rows: they count against train() (its val rows come outside the timing)
  ignite          Ignite's create_supervised_trainer, no handlers
  train_disabled  ignite-sweep's train(), W&B disabled
  train_offline   ignite-sweep's train(), W&B offline, default logging
  train_quiet     ignite-sweep's train(), W&B offline, log_interval 100000
for a trivial model (Flatten + Linear, as a user factory `model: module:fn`) and the seed's Net. Each row is the
best of --repeats runs of --epochs epochs (time inside the training epochs: evaluation excluded). Last line JSON:
{"us_per_iter": {...}, "full_vs_plain": train_offline / plain for the trivial model, "full_vs_plain_wandb":
train_offline / plain_wandb (ignite-sweep's share alone), ...}.
Usage: python benchmarks/step_overhead.py [--epochs 20] [--repeats 3] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch


def tiny(in_channels: int, image_size: tuple[int, int], num_classes: int, dropout: float) -> torch.nn.Module:
    """The trivial model: Flatten + Linear, log-probabilities out (the built-in nll loss)."""
    features = in_channels * image_size[0] * image_size[1]
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(features, num_classes), torch.nn.LogSoftmax(1))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def data(device: torch.device) -> Any:
    from ignite_sweep.training.data import TensorBatches, load_dataset

    loaded = load_dataset("digits", os.environ.get("IGNITE_SWEEP_DATA", "data"), False, 0).to(device)
    return loaded, TensorBatches(loaded.train_x, loaded.train_y, 64, shuffle=True, seed=0)


def build(model_name: str, loaded: Any, device: torch.device) -> torch.nn.Module:
    from ignite_sweep.training.models import build_model

    return build_model(model_name, loaded.in_channels, loaded.image_size, loaded.num_classes, 0.5).to(device)


def plain(model_name: str, epochs: int, device: torch.device, run: Any = None, log_interval: int = 10) -> float:
    """The bare loop; with a W&B ``run``, also logging train/loss, lr and grad_norm every ``log_interval``."""
    loaded, batches = data(device)
    model = build(model_name, loaded, device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.5)
    sync(device)
    start, n = time.perf_counter(), 0
    for _ in range(epochs):
        for x, y in batches:
            optimizer.zero_grad()
            loss = torch.nn.functional.nll_loss(model(x), y)
            loss.backward()
            optimizer.step()
            n += 1
            if run is not None and n % log_interval == 0:
                norm = torch.nn.utils.get_total_norm([p.grad for p in model.parameters()])
                loss_value, norm_value = torch.stack([loss.detach(), norm]).tolist()
                lr = optimizer.param_groups[0]["lr"]
                run.log({"train/loss": loss_value, "train/lr": lr, "train/grad_norm": norm_value}, step=n)
    sync(device)
    return (time.perf_counter() - start) / n * 1e6


def plain_wandb(model_name: str, epochs: int, device: torch.device, log_interval: int = 10) -> float:
    import wandb

    os.environ["WANDB_MODE"] = "offline"
    run = wandb.init(project="step-overhead")
    try:
        return plain(model_name, epochs, device, run, log_interval)
    finally:
        run.finish()
        wandb.teardown()


def ignite(model_name: str, epochs: int, device: torch.device) -> float:
    from ignite.engine import create_supervised_trainer

    loaded, batches = data(device)
    model = build(model_name, loaded, device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.5)
    trainer = create_supervised_trainer(model, optimizer, torch.nn.functional.nll_loss, device=device)
    sync(device)
    start = time.perf_counter()
    trainer.run(batches, max_epochs=epochs)
    sync(device)
    return (time.perf_counter() - start) / trainer.state.iteration * 1e6


def full(model_name: str, epochs: int, device: torch.device, mode: str, log_interval: int = 10,
         **options: Any) -> float:  # fmt: skip
    return run_train(model_name, epochs, device, mode, log_interval, **options)["us_per_iter"]


def run_train(model_name: str, epochs: int, device: torch.device, mode: str, log_interval: int = 10,
              **options: Any) -> dict[str, float]:  # fmt: skip
    import wandb

    from ignite_sweep.training.config import TrainConfig
    from ignite_sweep.training.train import train

    os.environ["WANDB_MODE"] = mode  # read when wandb sets up; its settings then stay until teardown
    cfg = TrainConfig.from_dict({"dataset": "digits", "model": model_name, "epochs": epochs, "lr": 0.01,
                                 "log_interval": log_interval, "device": device.type, "download": False,
                                 **options})  # fmt: skip
    try:
        summary = train(cfg)
    finally:
        wandb.teardown()  # else the next row runs in this row's mode: an "offline" row after a disabled one
    return {"us_per_iter": summary["train_time_s"] / summary["iterations"] * 1e6,
            "samples_per_s": summary["samples_per_s"]}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--models", default="tiny,net", help="which rows: tiny, net or both (default)")
    parser.add_argument("--log-interval", type=int, default=None,
                        help="iterations between W&B logs, in the plain loop's W&B row and train()'s rows "
                             "(default: the hyperparameter's default)")
    parser.add_argument("--throughput", action=argparse.BooleanOptionalAction, default=None,
                        help="also samples/s of net and cnn with and without amp and compile (default: on CUDA)")
    parser.add_argument("--throughput-repeats", type=int, default=2,
                        help="runs per throughput setting, after one to compile and warm up (best is kept)")
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    torch.set_num_threads(args.threads)
    os.environ.setdefault("WANDB_DIR", tempfile.mkdtemp(prefix="step-overhead-"))
    os.environ["WANDB_SILENT"] = "true"
    device = torch.device(args.device)
    from ignite_sweep.training.config import TrainConfig

    every = args.log_interval or TrainConfig.log_interval
    rows = {
        "plain": lambda m: plain(m, args.epochs, device),
        "plain_wandb": lambda m: plain_wandb(m, args.epochs, device, every),
        "ignite": lambda m: ignite(m, args.epochs, device),
        "train_disabled": lambda m: full(m, args.epochs, device, "disabled", every),
        "train_offline": lambda m: full(m, args.epochs, device, "offline", every),
        "train_quiet": lambda m: full(m, args.epochs, device, "offline", log_interval=100000),
    }
    results: dict[str, dict[str, float]] = {}
    chosen = args.models.split(",")
    for model_name, label in (("step_overhead:tiny", "tiny"), ("net", "net")):
        if label not in chosen:
            continue
        best = {name: float("inf") for name in rows}
        for _ in range(args.repeats):  # rows interleaved: each round sees the same machine
            for name, measure in rows.items():
                best[name] = min(best[name], measure(model_name))
        results[label] = {k: round(v, 1) for k, v in best.items()}
        print(f"{label:>5}: " + "  ".join(f"{k} {v:7.1f} us" for k, v in results[label].items()), flush=True)
    throughput: dict[str, float] = {}
    if args.throughput if args.throughput is not None else device.type == "cuda":
        for model_name in ("net", "cnn"):
            for amp in (False, True):
                for compiled in (False, True):
                    key = f"{model_name}{'+amp' if amp else ''}{'+compile' if compiled else ''}"
                    run_train(model_name, 1, device, "offline", amp=amp, compile=compiled)  # compile, warm up
                    runs = [run_train(model_name, args.epochs, device, "offline", amp=amp, compile=compiled)
                            for _ in range(args.throughput_repeats)]  # fmt: skip
                    best = max(r["samples_per_s"] for r in runs)
                    throughput[key] = round(best, 1)
                    print(f"{key:>18}: {best:10.1f} samples/s", flush=True)
    ratios = {}
    for label, prefix in (("tiny", ""), ("net", "net_")):
        if label in results:
            rows_of = results[label]
            ratios.update({f"{prefix}full_vs_plain": round(rows_of["train_offline"] / rows_of["plain"], 3),
                           f"{prefix}full_vs_plain_wandb": round(rows_of["train_offline"] / rows_of["plain_wandb"], 3),
                           f"{prefix}disabled_vs_plain": round(rows_of["train_disabled"] / rows_of["plain"], 3),
                           f"{prefix}ignite_vs_plain": round(rows_of["ignite"] / rows_of["plain"], 3)})  # fmt: skip
    print(json.dumps({"us_per_iter": results, "device": args.device, "log_interval": every,
                      "samples_per_s": throughput, **ratios}))


if __name__ == "__main__":
    main()
