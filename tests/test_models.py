from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ignite_sweep.errors import ConfigError
from ignite_sweep.training.models import MODELS, build_model


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize(("channels", "size"), [(1, (28, 28)), (3, (32, 32))])
def test_models_emit_log_probabilities(name: str, channels: int, size: tuple[int, int]) -> None:
    model = build_model(name, channels, size, num_classes=7, dropout=0.1).eval()
    out = model(torch.randn(5, channels, *size))
    assert out.shape == (5, 7)
    assert torch.allclose(out.exp().sum(dim=1), torch.ones(5), atol=1e-5)


def test_user_model_factory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "my_models.py").write_text(
        "import torch\n"
        "def tiny(in_channels, image_size, num_classes, dropout):\n"
        "    return torch.nn.Sequential(torch.nn.Flatten(),\n"
        "        torch.nn.Linear(in_channels * image_size[0] * image_size[1], num_classes),\n"
        "        torch.nn.LogSoftmax(dim=-1))\n"
        "def wrong(**kwargs):\n"
        "    return 3\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    model = build_model("my_models:tiny", 1, (28, 28), 10, 0.0)
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    with pytest.raises(ConfigError, match="not an nn.Module"):
        build_model("my_models:wrong", 1, (28, 28), 10, 0.0)
