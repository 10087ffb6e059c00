"""``python -m ignite_sweep.train`` and ``from ignite_sweep.train import train``: the built-in trainer, which lives
in ``ignite_sweep/training/train.py``. Sweeps registered with ``-m ignite_sweep.train`` in their command run here."""

from __future__ import annotations

import sys

from ignite_sweep.training.train import main, parse_args, train

__all__ = ["main", "parse_args", "train"]

if __name__ == "__main__":
    sys.exit(main())
