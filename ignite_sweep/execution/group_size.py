"""How many runs an agent claims for its next fused group (``--fuse K``), decided before each claim.

- K as asked, until a group says otherwise.
- A group that ran out of device memory (its members then trained alone): groups of at most half its size from then
  on.
- On a GPU, once a group has measured what one member needs (its members' summaries carry ``fused_memory``: the
  device's memory in use before the group was stacked, and the peak above it per member), the memory free on that
  GPU, read just before each claim, bounds K: other runs on the same GPU (``--per-gpu``, another user) count. The
  agent reads it with nvidia-smi: the agent forks its runs, so it must not initialise CUDA itself.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from typing import Any

GIB = 1 << 30
HEADROOM = 1 << 30
"""Bytes a group needs beyond what torch allocates for it: its process's CUDA context and the allocator's slack."""
MARGIN = 1.25
"""Each member is counted 25% larger than measured (the caching allocator rounds and fragments)."""


def physical_gpu(device_index: int) -> str:
    """The GPU nvidia-smi knows as the one a process saw as ``cuda:device_index`` (``CUDA_VISIBLE_DEVICES`` maps
    them; its entries are indices or UUIDs, both of which nvidia-smi's ``-i`` takes)."""
    visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    return visible[device_index] if device_index < len(visible) else str(device_index)


def free_gpu_memory(gpu: str) -> int | None:
    """Bytes free on ``gpu`` now (nvidia-smi), or None where it cannot say (no nvidia-smi, an error, no number)."""
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        result = subprocess.run(["nvidia-smi", "--query-gpu=memory.free", "--format=csv,noheader,nounits", "-i", gpu],
                                capture_output=True, text=True, timeout=30)  # fmt: skip
        return int(result.stdout.split()[0]) * (1 << 20) if result.returncode == 0 else None  # MiB
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


def members_that_fit(free: int, memory: dict[str, Any]) -> int:
    """How many members a group can hold in ``free`` bytes, by what a group measured (``fused_memory``); at least
    one (a run alone is what it would be unfused)."""
    per_member = float(memory["per_member_bytes"]) * MARGIN
    room = free - float(memory["base_bytes"]) - HEADROOM
    return max(1, int(room // per_member)) if per_member > 0 else 1 << 30


class GroupSize:
    """The agent's K: ``next()`` before each claim, ``ended(summary)`` for each run that ended."""

    def __init__(self, fuse: int, say: Callable[[str], None]) -> None:
        self.fuse, self.say = fuse, say
        self.memory: dict[str, Any] | None = None  # the last measure a group on a GPU made
        self._bounded: int | None = None  # the size the free memory last held the group to (said once)
        self._unread = False  # nvidia-smi could not say (said once)

    def next(self) -> int:
        if self.fuse <= 1 or self.memory is None:
            return self.fuse
        gpu = physical_gpu(int(self.memory.get("device_index") or 0))
        free = free_gpu_memory(gpu)
        if free is None:
            if not self._unread:  # said once: MIG instances or a driver nvidia-smi cannot query, say
                self._unread = True
                self.say(f"--fuse {self.fuse}: nvidia-smi cannot say how much memory GPU {gpu} has free: groups are "
                         "not bounded by it (a group that runs out of memory halves them)")  # fmt: skip
            return self.fuse
        size = min(self.fuse, members_that_fit(free, self.memory))
        bounded = size if size < self.fuse else None
        if bounded is not None and bounded != self._bounded:
            room = f"room for {size} runs" if size > 1 else "room for 1 run"
            group = f"a group of {size}" if size > 1 else "one run at a time"
            self.say(f"--fuse {self.fuse}: GPU {gpu} has {free / GIB:.1f} GiB free, {room} of "
                     f"{self.memory['per_member_bytes'] / GIB:.2f} GiB each (as measured): {group}")  # fmt: skip
        self._bounded = bounded
        return size

    def ended(self, summary: dict[str, Any]) -> None:
        too_big = summary.get("fused_out_of_memory")  # it then trained alone
        if too_big and too_big // 2 < self.fuse:  # the device holds fewer: smaller groups from now on
            self.fuse = max(1, too_big // 2)
            self.say(f"--fuse: a group of {too_big} ran out of device memory; groups of at most {self.fuse} "
                     "from now on")  # fmt: skip
        if summary.get("fused_memory"):
            self.memory = summary["fused_memory"]
