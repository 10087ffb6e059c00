"""``ignite_sweep.data.Dataset``, the path the README documents for user dataset factories; the datasets live in
``ignite_sweep/training/data.py``."""

from __future__ import annotations

from ignite_sweep.training.data import Dataset

__all__ = ["Dataset"]
