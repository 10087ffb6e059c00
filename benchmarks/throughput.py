"""Training throughput, three pipelines side by side on the same MNIST-shaped IDX files written here.

(a) seed:         Ignite's MNIST example pipeline: torchvision MNIST + ToTensor/Normalize + DataLoader
                  + create_supervised_trainer
(b) ignite_sweep: ignite_sweep.train.train() with all its handlers and W&B logging (offline)
(c) plain:        a bare PyTorch loop over the same device tensors ignite-sweep uses
and, to show what W&B logging itself costs, (b) again with WANDB_MODE=disabled.

Same Net, batch size 64, same number of epochs. The pipelines run back to back in each of --rounds rounds;
samples/s is each pipeline's best round, and each ratio is the median over rounds of the ratio measured
within a round (this 2-core machine is noisy, and neighbours in time see the same noise).
Last line: JSON with samples/s and the ratios.
Usage: python benchmarks/throughput.py [--train-size 12000] [--epochs 2] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import struct
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F


def write_mnist(root: Path, train_size: int, val_size: int) -> None:
    """Digit-like images (the bundled digits, upscaled and jittered) as MNIST IDX files."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(0)
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", train_size), ("t10k", val_size)):
        idx = rng.integers(0, len(digits.images), n)
        small = torch.tensor(digits.images[idx], dtype=torch.float32).unsqueeze(1)
        big = F.pad(F.interpolate(small, size=(20, 20), mode="bilinear"), (4, 4, 4, 4)) / 16 * 255
        images = big.clamp(0, 255).squeeze(1).numpy().astype(np.uint8)
        labels = digits.target[idx].astype(np.uint8)
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(struct.pack(">IIII", 0x803, n, 28, 28) + images.tobytes())
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 0x801, n) + labels.tobytes())


def seed_pipeline(root: Path, epochs: int, device: torch.device) -> float:
    from ignite.engine import Events, create_supervised_trainer
    from torch.utils.data import DataLoader
    from torchvision.datasets import MNIST
    from torchvision.transforms import Compose, Normalize, ToTensor

    from ignite_sweep.training.models import Net

    torch.manual_seed(0)
    dataset = MNIST(
        str(root),
        train=True,
        download=False,
        transform=Compose([ToTensor(), Normalize((0.1307,), (0.3081,))]),
    )
    loader = DataLoader(dataset, batch_size=64, shuffle=True)
    model = Net().to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.5)
    trainer = create_supervised_trainer(model, optimizer, F.nll_loss, device=device)
    times: list[float] = []
    trainer.add_event_handler(Events.EPOCH_STARTED, lambda _: times.append(time.perf_counter()))
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda _: times.append(time.perf_counter()))
    trainer.run(loader, max_epochs=epochs)
    return len(dataset) * epochs / sum(times[i + 1] - times[i] for i in range(0, len(times), 2))


def ignite_sweep_pipeline(root: Path, epochs: int, wandb_mode: str = "offline") -> float:
    import wandb

    from ignite_sweep.training.config import TrainConfig
    from ignite_sweep.training.train import train

    os.environ["WANDB_MODE"] = wandb_mode  # read when wandb sets up; its settings then stay until teardown
    cfg = TrainConfig.from_dict({"dataset": "mnist", "data_dir": str(root), "download": False, "epochs": epochs})
    try:
        return float(train(cfg)["samples_per_s"])
    finally:
        wandb.teardown()  # else every later pipeline runs in the first one's mode


def plain_pipeline(root: Path, epochs: int, device: torch.device) -> float:
    from ignite_sweep.training.data import TensorBatches, load_dataset
    from ignite_sweep.training.models import Net

    torch.manual_seed(0)
    data = load_dataset("mnist", str(root), download=False).to(device)
    model = Net().to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.5)
    batches = TensorBatches(data.train_x, data.train_y, 64, shuffle=True)
    start = time.perf_counter()
    for _ in range(epochs):
        model.train()
        for x, y in batches:
            optimizer.zero_grad()
            loss = F.nll_loss(model(x), y)
            loss.backward()
            optimizer.step()
        loss.item()  # wait for the device
    return len(data.train_x) * epochs / (time.perf_counter() - start)


def ratio(rounds: list[dict[str, float]], a: str, b: str) -> float:
    """Median over rounds of a/b measured in the same round (a noisy machine moves both together)."""
    return round(statistics.median(r[a] / r[b] for r in rounds), 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-size", type=int, default=12000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    os.environ.setdefault("WANDB_SILENT", "true")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        os.environ.setdefault("WANDB_DIR", tmp)
        write_mnist(root, args.train_size, 2000)
        print(
            f"device={device} threads={torch.get_num_threads()} train_size={args.train_size} epochs={args.epochs}",
            file=sys.stderr,
        )
        results = {"seed": 0.0, "ignite_sweep": 0.0, "plain": 0.0, "ignite_sweep_wandb_disabled": 0.0}
        rounds: list[dict[str, float]] = []
        for round_ in range(args.rounds):
            measured = {
                "seed": seed_pipeline(root, args.epochs, device),
                "ignite_sweep": ignite_sweep_pipeline(root, args.epochs),
                "plain": plain_pipeline(root, args.epochs, device),
                "ignite_sweep_wandb_disabled": ignite_sweep_pipeline(root, args.epochs, "disabled"),
            }
            print(
                f"round {round_ + 1}: " + ", ".join(f"{k}={v:.0f}" for k, v in measured.items()),
                file=sys.stderr,
            )
            results = {k: max(v, measured[k]) for k, v in results.items()}
            rounds.append(measured)
    for name, value in results.items():
        print(f"{name:>27}: {value:10.0f} samples/s", file=sys.stderr)
    print(
        json.dumps(
            {
                "samples_per_s": {k: round(v, 1) for k, v in results.items()},
                "vs_seed": ratio(rounds, "ignite_sweep", "seed"),
                "vs_plain": ratio(rounds, "ignite_sweep", "plain"),
                "vs_plain_wandb_disabled": ratio(rounds, "ignite_sweep_wandb_disabled", "plain"),
            }
        )
    )


if __name__ == "__main__":
    main()
