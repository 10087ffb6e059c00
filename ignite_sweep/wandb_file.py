"""Read what a wandb run logged, straight from its ``.wandb`` file (offline runs; a program sweep's final metrics),
and write one (``rewrite_run``: a copy for ``ignite-sweep sync`` with another sweep id).

The file is a LevelDB-style log: a 7-byte header (``:W&B``, magic, version), then 32 KiB blocks of
chunks, each with a 7-byte header (crc32 uint32, length uint16, type uint8: FULL, FIRST, MIDDLE, LAST); the crc is
``zlib.crc32`` of the type byte and the chunk's bytes; a block's last bytes, too few for a header, are zeros. A record
larger than what is left of its block is split: FIRST, MIDDLE..., LAST. Each reassembled record is a
``wandb.proto.wandb_internal_pb2.Record``.
"""

from __future__ import annotations

import json
import struct
import time
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

HEADER = 7
BLOCK = 32768
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4
FILE_HEADER = b":W&B\xe1\xbe\x00"  # ident, magic 0xBEE1 (little-endian), version 0


def payloads(data: bytes, name: object = "data", partial: bool = False) -> Iterator[bytes]:
    """Each record's bytes, reassembled from its chunks. A chunk cut off mid-write (a run still logging) raises,
    or with ``partial`` ends the records there."""
    if data[:4] != b":W&B":
        raise ValueError(f"{name}: not a .wandb file")
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
        if len(payload) < length:
            if partial:
                return
            raise ValueError(f"{name}: record cut off at byte {pos}")
        pos += HEADER + length
        pending = payload if kind in (FULL, FIRST) else pending + payload
        if kind in (FULL, LAST):
            yield pending
            pending = b""


def records(path: Path) -> Iterator[Any]:
    from wandb.proto import wandb_internal_pb2

    for payload in payloads(Path(path).read_bytes(), path):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(payload)
        yield record


def write_payloads(path: Path, items: Iterable[bytes], header: bytes = FILE_HEADER) -> None:
    """A .wandb file of these records' bytes, chunked into blocks as wandb writes them."""
    with open(path, "wb") as out:
        out.write(header)
        pos = len(header)
        for payload in items:
            first, rest = True, memoryview(payload)
            while True:
                left = BLOCK - pos % BLOCK
                if left < HEADER:  # no room for a chunk header: zeros to the block's end
                    out.write(b"\0" * left)
                    pos, left = pos + left, BLOCK
                chunk, rest = rest[: left - HEADER], rest[left - HEADER :]
                kind = (FULL if not rest else FIRST) if first else (LAST if not rest else MIDDLE)
                out.write(struct.pack("<IHB", zlib.crc32(chunk, zlib.crc32(bytes([kind]))), len(chunk), kind))
                out.write(chunk)
                pos += HEADER + len(chunk)
                first = False
                if not rest:
                    break


def write_records(path: Path, items: Iterable[Any]) -> None:
    write_payloads(path, (record.SerializeToString() for record in items))


def rewrite_run(path: Path, out: Path, sweep_id: str) -> int:
    """Copy the .wandb file ``path`` to ``out`` with ``sweep_id`` as the sweep of its run record(s) ("" for none),
    every other record byte for byte. A record cut off at the end (a run still logging) is left out. Returns the
    number of bytes of ``path`` read."""
    from wandb.proto import wandb_internal_pb2

    data = Path(path).read_bytes()

    def rewritten() -> Iterator[bytes]:
        for payload in payloads(data, path, partial=True):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(payload)
            if record.WhichOneof("record_type") == "run" and record.run.sweep_id != sweep_id:
                record.run.sweep_id = sweep_id
                payload = record.SerializeToString()
            yield payload

    write_payloads(out, rewritten(), header=data[:HEADER])
    return len(data)


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
