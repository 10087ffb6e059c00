"""Model registry: a name -> ``factory(in_channels, image_size, num_classes, dropout) -> nn.Module``.

Every model returns log-probabilities (``log_softmax``), trained with ``nll_loss`` as in Ignite's MNIST
example. A value ``package.module:factory`` names a user factory with the same keyword arguments.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


class Net(nn.Module):
    """Ignite's MNIST example network: conv-conv-fc-fc with dropout. Any input channels and size."""

    def __init__(
        self,
        in_channels: int = 1,
        image_size: tuple[int, int] = (28, 28),
        num_classes: int = 10,
        dropout: float = 0.5,
    ):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 10, kernel_size=5)
        self.conv2 = nn.Conv2d(10, 20, kernel_size=5)
        self.conv2_drop = nn.Dropout2d(dropout)
        h, w = image_size
        flat = 20 * (((h - 4) // 2 - 4) // 2) * (((w - 4) // 2 - 4) // 2)
        self.fc1 = nn.Linear(flat, 50)
        self.fc2 = nn.Linear(50, num_classes)
        self.dropout = dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(F.max_pool2d(self.conv1(x), 2))
        x = F.relu(F.max_pool2d(self.conv2_drop(self.conv2(x)), 2))
        x = x.flatten(1)
        x = F.relu(self.fc1(x))
        x = F.dropout(x, p=self.dropout, training=self.training)
        return F.log_softmax(self.fc2(x), dim=-1)


class MLP(nn.Module):
    """Two hidden layers over the flattened image."""

    def __init__(
        self,
        in_channels: int = 1,
        image_size: tuple[int, int] = (28, 28),
        num_classes: int = 10,
        dropout: float = 0.5,
        hidden: int = 256,
    ):
        super().__init__()
        inputs = in_channels * image_size[0] * image_size[1]
        self.layers = nn.Sequential(
            nn.Flatten(),
            nn.Linear(inputs, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.log_softmax(self.layers(x), dim=-1)


class SmallCNN(nn.Module):
    """Three conv-bn-relu blocks with pooling and a linear head: a reasonable CIFAR-10 baseline."""

    def __init__(
        self,
        in_channels: int = 3,
        image_size: tuple[int, int] = (32, 32),
        num_classes: int = 10,
        dropout: float = 0.5,
    ):
        super().__init__()

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(cin, cout, 3, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
                nn.Conv2d(cout, cout, 3, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            )

        self.features = nn.Sequential(block(in_channels, 32), block(32, 64), block(64, 128))
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(128, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.log_softmax(self.head(self.features(x)), dim=-1)


MODELS: dict[str, Callable[..., nn.Module]] = {"net": Net, "mlp": MLP, "cnn": SmallCNN}


def build_model(
    name: str, in_channels: int, image_size: tuple[int, int], num_classes: int, dropout: float,
    extra: dict[str, Any] | None = None,
) -> nn.Module:  # fmt: skip
    from ignite_sweep.errors import ConfigError
    from ignite_sweep.training.data import import_factory

    factory = import_factory(name, "model") if ":" in name else MODELS[name]
    model = factory(in_channels=in_channels, image_size=image_size, num_classes=num_classes, dropout=dropout,
                    **(extra or {}))  # fmt: skip
    if not isinstance(model, nn.Module):
        raise ConfigError(f"hyperparameter 'model': '{name}' returned {type(model).__name__}, not an nn.Module")
    return model
