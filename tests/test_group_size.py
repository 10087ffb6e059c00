"""The agent's fused group size (execution/group_size.py): K as asked, halved after a group ran out of device memory,
and bounded by the GPU's free memory (read with a real nvidia-smi process: here a script on PATH that answers as
nvidia-smi does) once a group measured what a member needs."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from conftest import cuda_available

from ignite_sweep.execution.group_size import GIB, GroupSize, free_gpu_memory, physical_gpu


def calls(folder: Path) -> list[str]:
    return (folder / "calls").read_text().splitlines() if (folder / "calls").exists() else []


def test_free_memory_is_read_with_nvidia_smi_for_the_gpu_and_none_when_it_cannot_say(
    nvidia_smi: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (nvidia_smi / "answer").write_text("8192\n")
    assert free_gpu_memory("3") == 8 * GIB
    assert calls(nvidia_smi) == ["--query-gpu=memory.free --format=csv,noheader,nounits -i 3"]
    for answer, code in (("8192", "9"), ("[N/A]", "0"), ("", "0")):
        (nvidia_smi / "answer").write_text(answer)
        (nvidia_smi / "code").write_text(code)
        assert free_gpu_memory("3") is None, (answer, code)
    monkeypatch.setenv("PATH", str(nvidia_smi / "empty"))
    assert free_gpu_memory("0") is None
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,GPU-5a1")
    assert (physical_gpu(0), physical_gpu(1)) == ("2", "GPU-5a1")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert physical_gpu(1) == "1"


def test_the_group_size_follows_free_memory_once_measured_and_halves_after_running_out(nvidia_smi: Path) -> None:
    said: list[str] = []
    size = GroupSize(16, said.append)
    assert size.next() == 16 and not calls(nvidia_smi)  # nothing measured yet: K as asked, no reading
    size.ended({"status": "finished"})  # a run on the CPU (or alone) measures nothing
    assert size.next() == 16 and not calls(nvidia_smi)
    # a group measured 1 GiB per member above 2 GiB of data: 8 GiB free holds (8 - 2 - 1 headroom) / 1.25 = 4
    size.ended({"fused_memory": {"device_index": 0, "members": 16, "base_bytes": 2 * GIB, "per_member_bytes": GIB}})
    (nvidia_smi / "answer").write_text("8192\n")
    assert size.next() == 4
    assert said == ["--fuse 16: GPU 0 has 8.0 GiB free, room for 4 runs of 1.00 GiB each (as measured): a group of 4"]
    assert size.next() == 4 and len(said) == 1  # the same bound: said once
    (nvidia_smi / "answer").write_text("2048\n")  # another run took the GPU: one member still trains (alone)
    assert size.next() == 1
    assert said[-1].endswith("2.0 GiB free, room for 1 run of 1.00 GiB each (as measured): one run at a time")
    (nvidia_smi / "answer").write_text("81920\n")
    assert size.next() == 16 and len(said) == 2  # room again: K as asked
    size.ended({"fused_out_of_memory": 16})
    assert size.fuse == 8
    assert said[-1] == "--fuse: a group of 16 ran out of device memory; groups of at most 8 from now on"
    assert size.next() == 8
    (nvidia_smi / "code").write_text("1")  # nvidia-smi fails: K as it stands, said once
    assert size.next() == 8 and size.next() == 8
    assert said[-1] == ("--fuse 8: nvidia-smi cannot say how much memory GPU 0 has free: groups are not bounded by it "
                        "(a group that runs out of memory halves them)")  # fmt: skip
    assert said.count(said[-1]) == 1
    assert len(calls(nvidia_smi)) == 7 and all(c.endswith("-i 0") for c in calls(nvidia_smi))


@pytest.mark.skipif(not cuda_available(), reason="a fused group measures its device memory on CUDA only")
def test_a_fused_group_on_cuda_measures_what_a_member_needs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from ignite_sweep.training.config import TrainConfig
    from ignite_sweep.training.fused import train_fused

    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # a disabled run's folder: not /tmp
    base = {"dataset": "digits", "model": "mlp", "epochs": 1, "device": "cuda"}
    summaries = train_fused([TrainConfig.from_dict({**base, "lr": lr}) for lr in (0.01, 0.02, 0.03)])
    measured = [s["fused_memory"] for s in summaries]
    assert all(m["members"] == 3 and m["base_bytes"] > 0 for m in measured), measured
    params = 784 * 256 + 256 * 256 + 256 * 10  # the MLP's weights (digits are upscaled to 28x28)
    # at its peak a member holds at least its float32 weights and their gradients (measured on an H200: 2.51 MB a
    # member, 2.33 times its weights, in a process that had trained before; more where cuBLAS allocates its workspace)
    assert all(m["per_member_bytes"] > 2 * 4 * params for m in measured), measured
