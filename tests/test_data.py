from __future__ import annotations

import struct
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ignite_sweep.errors import DataError
from ignite_sweep.training.data import DIGITS_RECIPE, TensorBatches, load_dataset, load_digits


def write_idx(raw: Path, prefix: str, n: int, rng: np.random.Generator) -> np.ndarray:
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=n, dtype=np.uint8)
    raw.mkdir(parents=True, exist_ok=True)
    (raw / f"{prefix}-images-idx3-ubyte").write_bytes(struct.pack(">IIII", 0x803, n, 28, 28) + images.tobytes())
    (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 0x801, n) + labels.tobytes())
    return labels


def test_digits_is_mnist_shaped_with_a_fixed_split() -> None:
    a, b = load_digits(seed=0), load_digits(seed=7)
    assert a.train_x.shape[1:] == (1, 28, 28) and a.num_classes == 10
    assert len(a.val_x) == 1797 // 5 and len(a.train_x) == 9 * (1797 - 1797 // 5)
    assert torch.equal(a.val_y, b.val_y) and torch.equal(a.val_x, b.val_x)  # split ignores the run seed
    assert abs(float(a.train_x.mean())) < 1e-3 and abs(float(a.train_x.std()) - 1) < 1e-2


def test_digits_are_the_same_whatever_the_thread_count() -> None:
    """A seeded run must not depend on how many threads the process that prepared (and cached) the data had: the
    normalisation's mean and std summed in a thread-dependent order made the pixels differ by 2e-7, and one epoch of
    the same run then ended at val/loss 0.1124 or 0.1144."""
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = load_digits()
        torch.set_num_threads(2)
        two = load_digits()
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one.train_x, two.train_x) and torch.equal(one.val_x, two.val_x)


def test_digits_are_cached_in_data_dir_and_read_back_equal(tmp_path: Path) -> None:
    built = load_digits(str(tmp_path))
    cache = tmp_path / f"{DIGITS_RECIPE}.pt"
    assert cache.is_file() and [p.name for p in tmp_path.iterdir()] == [cache.name]  # no temporary file left
    cached = load_digits(str(tmp_path))
    for name in ("train_x", "train_y", "val_x", "val_y"):
        assert torch.equal(getattr(built, name), getattr(cached, name))
    assert cached.train_x.untyped_storage().data_ptr() != built.train_x.untyped_storage().data_ptr()  # read back


def test_a_damaged_digits_cache_is_rebuilt(tmp_path: Path) -> None:
    cache = tmp_path / f"{DIGITS_RECIPE}.pt"
    cache.write_bytes(b"not a torch file")
    data = load_digits(str(tmp_path))
    assert len(data.train_x) == 9 * (1797 - 1797 // 5)
    assert cache.stat().st_size > 1_000_000  # replaced by a good one


def test_digits_load_when_the_cache_cannot_be_written(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("data_dir points below a file, so nothing can be written there")
    data = load_digits(str(blocker / "data"))
    assert len(data.val_x) == 1797 // 5


@pytest.mark.parametrize(("name", "folder"), [("mnist", "MNIST"), ("fashion-mnist", "FashionMNIST")])
def test_torchvision_loaders_read_idx_files(tmp_path: Path, name: str, folder: str) -> None:
    rng = np.random.default_rng(0)
    train_labels = write_idx(tmp_path / folder / "raw", "train", 50, rng)
    val_labels = write_idx(tmp_path / folder / "raw", "t10k", 20, rng)
    data = load_dataset(name, str(tmp_path), download=False)
    assert data.train_x.shape == (50, 1, 28, 28) and data.val_x.shape == (20, 1, 28, 28)
    assert data.train_x.dtype == torch.float32 and data.num_classes == 10
    assert data.train_y.tolist() == train_labels.tolist() and data.val_y.tolist() == val_labels.tolist()


@pytest.mark.parametrize(("name", "where"), [("mnist", "MNIST/raw"), ("cifar10", "cifar-10-batches-py")])
def test_missing_dataset_says_where_to_put_the_files(tmp_path: Path, name: str, where: str) -> None:
    with pytest.raises(DataError) as info:
        load_dataset(name, str(tmp_path), download=False)
    message = str(info.value)
    assert "\n" not in message and f"dataset '{name}'" in message and str(tmp_path / where) in message


def test_batches_cover_every_sample_once_per_epoch() -> None:
    x = torch.arange(10).float().view(10, 1, 1, 1)
    y = torch.arange(10)
    batches = TensorBatches(x, y, batch_size=4, shuffle=True, seed=1)
    assert len(batches) == 3
    first = torch.cat([yb for _, yb in batches])
    second = torch.cat([yb for _, yb in batches])
    assert sorted(first.tolist()) == list(range(10)) == sorted(second.tolist())
    assert first.tolist() != second.tolist()  # reshuffled each epoch
    for xb, yb in batches:
        assert torch.equal(xb.view(-1).long(), yb)


def test_user_dataset_factory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "my_data.py").write_text(
        "import torch\n"
        "def load(data_dir, download, seed):\n"
        "    g = torch.Generator().manual_seed(seed)\n"
        "    return (torch.rand(30, 3, 16, 16, generator=g), torch.arange(30) % 4,\n"
        "            torch.rand(10, 3, 16, 16, generator=g), torch.arange(10) % 4)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    data = load_dataset("my_data:load", str(tmp_path))
    assert data.num_classes == 4 and data.in_channels == 3 and data.image_size == (16, 16)
    with pytest.raises(DataError, match="cannot import module 'no_such_module'"):
        load_dataset("no_such_module:load", str(tmp_path))
    sys.modules.pop("my_data", None)
