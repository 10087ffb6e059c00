"""Read what a wandb run logged, straight from its ``.wandb`` file (offline runs; a program sweep's final metrics).

The file is a LevelDB-style log: a 7-byte header (``:W&B``, magic, version), then 32 KiB blocks of
chunks, each with a 7-byte header (crc32 uint32, length uint16, type uint8: FULL, FIRST, MIDDLE, LAST).
Each reassembled record is a ``wandb.proto.wandb_internal_pb2.Record``.
"""

from __future__ import annotations

import json
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HEADER = 7
BLOCK = 32768
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: Path) -> Iterator[Any]:
    from wandb.proto import wandb_internal_pb2

    data = Path(path).read_bytes()
    if data[:4] != b":W&B":
        raise ValueError(f"{path}: not a .wandb file")
    pos, pending = HEADER, b""
    while pos + HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        if left < HEADER:  # block trailer
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + HEADER])
        if kind == 0 and length == 0:
            break
        payload = data[pos + HEADER : pos + HEADER + length]
        pos += HEADER + length
        if kind == FULL:
            pending = payload
        elif kind == FIRST:
            pending = payload
            continue
        elif kind == MIDDLE:
            pending += payload
            continue
        else:
            pending += payload
        record = wandb_internal_pb2.Record()
        record.ParseFromString(pending)
        pending = b""
        yield record


def read_run(path: Path, partial: bool = False) -> tuple[list[dict[str, Any]], dict[str, Any], int | None]:
    """(history rows, summary, exit code or None) in one pass. With ``partial``, a half-written tail (a run
    still logging) ends the read with what came before it; without, it raises."""
    rows: list[dict[str, Any]] = []
    result: dict[str, Any] = {}
    exit_code = None
    try:
        for record in records(path):
            kind = record.WhichOneof("record_type")
            if kind == "history":
                rows.append({(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in record.history.item})
            elif kind == "summary":
                for item in record.summary.update:
                    result[item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
            elif kind == "exit":
                exit_code = record.exit.exit_code
    except Exception:  # noqa: BLE001 - the protobuf decoder on a record cut off mid-write
        if not partial:
            raise
    return rows, result, exit_code


def history(path: Path) -> list[dict[str, Any]]:
    """Every history row as {key: value}; the step is under '_step'."""
    return read_run(path)[0]


def summary(path: Path) -> dict[str, Any]:
    return read_run(path)[1]


def config(path: Path) -> dict[str, Any]:
    """The run's config as the server would hold it: the run record's, then every later update."""
    result: dict[str, Any] = {}
    for record in records(path):
        kind = record.WhichOneof("record_type")
        if kind in ("run", "config"):
            for item in (record.run.config if kind == "run" else record.config).update:
                result[item.key] = json.loads(item.value_json)
    return result


def run_file(run_dir: Path, timeout_s: float = 20.0) -> Path:
    """The run's .wandb file, once wandb's service has written it to the end (its exit record)."""
    deadline = time.monotonic() + timeout_s
    while True:
        files = list(Path(run_dir).glob("*.wandb"))
        if len(files) == 1:
            try:
                if any(r.WhichOneof("record_type") == "exit" for r in records(files[0])):
                    return files[0]
            except Exception:  # noqa: BLE001 - a half-written tail: read again
                pass
        if time.monotonic() > deadline:
            raise FileNotFoundError(f"{run_dir}: no complete .wandb file ({len(files)} found)")
        time.sleep(0.2)
