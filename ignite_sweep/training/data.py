"""Datasets as normalised tensors on the training device, and batches by index slicing.

Every dataset is loaded once, normalised once and moved to the device whole; an epoch is a shuffled
permutation sliced into batches. No per-sample transforms, no DataLoader workers: on small image datasets
this is where the speed comes from.

Registry: ``DATASETS`` maps a name to a factory ``factory(data_dir, download, seed) -> Dataset``.
A value ``package.module:factory`` names a user factory with the same signature; it may return a
``Dataset`` or a tuple ``(train_x, train_y, val_x, val_y)`` of tensors (x float NCHW, y int64 labels).
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ignite_sweep.errors import DataError

if TYPE_CHECKING:
    import torch


@dataclass
class Dataset:
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    num_classes: int

    @property
    def in_channels(self) -> int:
        return int(self.train_x.shape[1])

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.train_x.shape[2]), int(self.train_x.shape[3])

    def to(self, device: Any) -> Dataset:
        return Dataset(
            self.train_x.to(device),
            self.train_y.to(device),
            self.val_x.to(device),
            self.val_y.to(device),
            self.num_classes,
        )


class TensorBatches:
    """Re-iterable batches of (x, y) from device tensors; a new permutation every epoch when shuffling."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, shuffle: bool, seed: int = 0):
        import torch

        if len(x) != len(y):
            raise DataError(f"dataset: {len(x)} inputs but {len(y)} labels")
        self.x, self.y, self.batch_size, self.shuffle = x, y, batch_size, shuffle
        self._generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return (len(self.x) + self.batch_size - 1) // self.batch_size

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        import torch

        n = len(self.x)
        if not self.shuffle:
            for start in range(0, n, self.batch_size):
                yield self.x[start : start + self.batch_size], self.y[start : start + self.batch_size]
            return
        order = torch.randperm(n, generator=self._generator).to(self.x.device)
        for start in range(0, n, self.batch_size):
            index = order[start : start + self.batch_size]
            yield self.x[index], self.y[index]


def _normalise(x: torch.Tensor, mean: list[float], std: list[float]) -> torch.Tensor:
    import torch

    m = torch.tensor(mean, dtype=x.dtype).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=x.dtype).view(1, -1, 1, 1)
    return (x - m) / s


DIGITS_RECIPE = "digits-mnist-frame-shift9-v2"  # v2: normalised the same whatever the thread count
"""Names the preparation below; change it whenever the preparation changes, so old caches are not read."""


def load_digits(data_dir: str = "", download: bool = False, seed: int = 0) -> Dataset:
    """scikit-learn's bundled handwritten digits (1,797 8x8 images), laid out like MNIST.

    Each 8x8 image is upscaled to 20x20 and centred in a 28x28 frame, as MNIST digits are, so models
    built for MNIST apply unchanged. The 80/20 train/val split is fixed (seed 0) whatever the run's seed,
    so every run of a sweep is scored on the same validation images. The training images are augmented
    once with their eight one-pixel shifts in the 28x28 frame (9x the data: 12,942 images), a standard
    trick for so small a set.

    The prepared tensors are cached in ``data_dir`` (``<recipe>.pt``, 42 MB) when it is writable: a sweep's
    runs each start in a fresh process, and reading the cache (memory-mapped) takes milliseconds where
    preparing takes 0.1-0.6 s.
    """
    import torch

    cache = Path(data_dir).expanduser() / f"{DIGITS_RECIPE}.pt" if data_dir else None
    if cache is not None and cache.is_file():
        try:
            saved = torch.load(cache, mmap=True, weights_only=True)
            return Dataset(saved["train_x"], saved["train_y"], saved["val_x"], saved["val_y"], num_classes=10)
        except Exception:  # noqa: BLE001 - a damaged cache is rebuilt below
            pass
    dataset = _prepare_digits()
    if cache is not None:
        _save_atomically(cache, dataset)
    return dataset


def _save_atomically(path: Path, dataset: Dataset) -> None:
    """Write to a private temporary file, then rename: agents in parallel never read half a file."""
    import contextlib
    import os
    import secrets

    import torch

    tensors = {k: getattr(dataset, k) for k in ("train_x", "train_y", "val_x", "val_y")}
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "xb") as f:
            torch.save(tensors, f)
        os.replace(tmp, path)
    except OSError:  # a read-only data_dir or a full disk: every run prepares the data itself
        with contextlib.suppress(OSError):
            tmp.unlink()


def _prepare_digits() -> Dataset:
    import torch
    import torch.nn.functional as F
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    images = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    labels = torch.tensor(bunch.target, dtype=torch.int64)
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))
    n_val = len(images) // 5
    val_idx, train_idx = order[:n_val], order[n_val:]

    def to_mnist_frame(small: torch.Tensor) -> torch.Tensor:
        big = F.interpolate(small, size=(20, 20), mode="bilinear", align_corners=False)
        return F.pad(big, (4, 4, 4, 4))

    framed = to_mnist_frame(images[train_idx])
    padded = F.pad(framed, (1, 1, 1, 1))
    shifts = [padded[:, :, dy : dy + 28, dx : dx + 28] for dy in (0, 1, 2) for dx in (0, 1, 2)]
    train_x = torch.cat(shifts)
    train_y = labels[train_idx].repeat(len(shifts))
    val_x = to_mnist_frame(images[val_idx])
    # in float64 with numpy (one thread, pairwise sums): torch's float32 mean/std sum in an order that depends on the
    # thread count, and the data then differed by 2e-7 between a 1- and a 2-thread process, which a run amplifies
    # (val/loss 0.1124 against 0.1144 after one epoch of the same seeded run)
    pixels = train_x.double().numpy()
    mean, std = float(pixels.mean()), float(pixels.std(ddof=1))
    return Dataset(
        _normalise(train_x, [mean], [std]),
        train_y,
        _normalise(val_x, [mean], [std]),
        labels[val_idx],
        num_classes=10,
    )


def _torchvision(class_name: str, name: str, mean: list[float], std: list[float], files: str) -> Callable:
    def factory(data_dir: str, download: bool = True, seed: int = 0) -> Dataset:
        import torch
        import torchvision
        from filelock import FileLock

        cls = getattr(torchvision.datasets, class_name)
        root = Path(data_dir).expanduser()
        root.mkdir(parents=True, exist_ok=True)
        # One download at a time: parallel agents wait here instead of writing the same files at once.
        with FileLock(str(root / f".{name}.lock")):
            try:
                train = cls(str(root), train=True, download=False)
                val = cls(str(root), train=False, download=False)
            except RuntimeError as missing:
                where = root / (class_name if class_name != "CIFAR10" else "cifar-10-batches-py")
                if class_name != "CIFAR10":
                    where = where / "raw"
                if not download:
                    raise DataError(
                        f"dataset '{name}': not found in {where} and download is off; put {files} there"
                    ) from missing
                try:
                    train = cls(str(root), train=True, download=True)
                    val = cls(str(root), train=False, download=True)
                except Exception as failure:  # noqa: BLE001 - any network error ends the same way
                    reason = str(failure).splitlines()[0] if str(failure) else type(failure).__name__
                    raise DataError(
                        f"dataset '{name}': not found in {where} and the download failed ({reason}); put {files} there"
                    ) from failure

        def tensors(split: Any) -> tuple[torch.Tensor, torch.Tensor]:
            data = torch.as_tensor(split.data)
            x = data.unsqueeze(1) if data.dim() == 3 else data.permute(0, 3, 1, 2)
            y = torch.as_tensor(split.targets, dtype=torch.int64)
            return _normalise(x.float().div_(255.0), mean, std), y

        train_x, train_y = tensors(train)
        val_x, val_y = tensors(val)
        return Dataset(train_x, train_y, val_x, val_y, num_classes=len(train.classes))

    factory.__doc__ = f"torchvision's {class_name} from data_dir, downloaded under a file lock when absent."
    return factory


_MNIST_FILES = "train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte"

DATASETS: dict[str, Callable[..., Dataset]] = {
    "digits": load_digits,
    "mnist": _torchvision("MNIST", "mnist", [0.1307], [0.3081], _MNIST_FILES),
    "fashion-mnist": _torchvision("FashionMNIST", "fashion-mnist", [0.2860], [0.3530], _MNIST_FILES),
    "cifar10": _torchvision(
        "CIFAR10",
        "cifar10",
        [0.4914, 0.4822, 0.4465],
        [0.2470, 0.2435, 0.2616],
        "the extracted cifar-10-python.tar.gz (data_batch_1..5, test_batch, batches.meta)",
    ),
}


def import_factory(spec: str, kind: str) -> Callable[..., Any]:
    """Import 'package.module:factory'; errors name the hyperparameter."""
    module_name, _, attr = spec.partition(":")
    if os.getcwd() not in sys.path and "" not in sys.path:  # as `python -m` and `python train.py` from here would
        sys.path.append(os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise DataError(f"hyperparameter '{kind}': cannot import module '{module_name}' ({exc})") from exc
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise DataError(f"hyperparameter '{kind}': '{module_name}' has no callable '{attr}'")
    return factory


_CACHE: dict[tuple[str, str, int, str], Dataset] = {}


def load_dataset(name: str, data_dir: str, download: bool = True, seed: int = 0,
                 extra: dict[str, Any] | None = None) -> Dataset:  # fmt: skip
    """Build the named (or user) dataset on the CPU; callers move it to the device with ``.to()``.

    Results are kept for the life of the process (a run that is started twice in one process, as in
    tests and notebooks, loads once). The agent itself never loads data: it computes nothing before it
    forks a run, so the run's OpenMP thread pool starts clean.
    """
    import json

    extra = extra or {}
    key = (name, str(Path(data_dir).expanduser().resolve()), seed if ":" in name else 0,
           json.dumps(extra, sort_keys=True, default=str))  # fmt: skip
    if key not in _CACHE:
        _CACHE[key] = _build(name, data_dir, download, seed, extra)
    return _CACHE[key]


def _build(name: str, data_dir: str, download: bool, seed: int, extra: dict[str, Any]) -> Dataset:
    factory = import_factory(name, "dataset") if ":" in name else DATASETS[name]
    result = factory(data_dir=data_dir, download=download, seed=seed, **extra)
    if isinstance(result, Dataset):
        return result
    try:
        train_x, train_y, val_x, val_y = result
    except (TypeError, ValueError):
        raise DataError(
            f"hyperparameter 'dataset': '{name}' returned {type(result).__name__}, "
            "expected a Dataset or (train_x, train_y, val_x, val_y)"
        ) from None
    num_classes = int(max(int(train_y.max()), int(val_y.max())) + 1)
    return Dataset(train_x.float(), train_y.long(), val_x.float(), val_y.long(), num_classes)
