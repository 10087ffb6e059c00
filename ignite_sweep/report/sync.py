"""Take a local sweep to W&B: a W&B sweep of its own, and ``wandb sync`` of its runs' offline folders into it.

A local sweep's runs name its local id as their W&B sweep (``WANDB_SWEEP_ID``, as under ``wandb agent``), and W&B
answers a run of a sweep it does not know with "sweep <id> not found": the run is not uploaded. So ``sync``:

1. registers the sweep on W&B (UpsertSweep, as ``create --backend wandb``) at its first sync to an entity/project,
   remembers it in the store and reuses it after (a new one only if W&B no longer has it);
2. copies each run folder to upload into a staging folder (hard links below ``files/``), its .wandb file rewritten
   with the W&B sweep as the run's sweep, and runs the real ``wandb sync`` on the copies. If W&B refuses the sweep,
   the copies name no sweep: the runs arrive grouped under the sweep's name and tagged ``local-sweep-<id>``, as
   they were logged, and one warning says so;
3. uploads a run file once: after its upload, wandb's own marker ``<file>.wandb.synced`` is written beside the
   original (plain ``wandb sync`` then skips it, ``wandb clean`` may remove it), holding the file's size and where
   it went (entity/project/W&B sweep). A file is uploaded again only if it grew since (its run was still logging)
   or goes somewhere else;
4. sets the W&B sweep FINISHED once the local sweep has ended (finished, stopped, canceled): no W&B agent gets
   runs from it.

``--dry-run`` contacts no server and registers nothing: it gives the ``wandb sync`` command over the original
folders that hold a file not uploaded yet (to wherever it went).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ignite_sweep.backends.local import LocalBackend, short_id
from ignite_sweep.errors import BackendError, ConfigError

ENDED = ("finished", "stopped", "canceled")


def run_dirs(backend: LocalBackend, sweep_id: str) -> list[Path]:
    """The offline run folders of a local sweep's runs that got as far as starting wandb, oldest first.

    A retry that resumed a checkpoint logged to its predecessor's W&B run id in a folder of its own: both
    folders are given, and ``wandb sync`` uploads folders of one run id in order of start, as one run."""
    found: dict[Path, None] = {}
    wandb_root = Path(os.environ.get("WANDB_DIR", ".")) / "wandb"
    for row in backend.store.runs(short_id(sweep_id)):
        if row["run_dir"] and Path(row["run_dir"]).is_dir():
            found[Path(row["run_dir"]).resolve()] = None
        for match in sorted(wandb_root.glob(f"offline-run-*-{row['wandb_id']}")):  # a crashed run's, too
            found[match.resolve()] = None
    return sorted(found, key=lambda d: d.name)


def sync_command(project: str, entity: str | None, folders: list[Path]) -> list[str]:
    # wandb >= 0.30 syncs offline run folders given as paths (--include-offline was removed)
    command = [sys.executable, "-m", "wandb", "sync", "--project", project]
    return command + (["--entity", entity] if entity else []) + [str(d) for d in folders]


def _marker(file: Path) -> Path:
    return file.with_name(file.name + ".synced")


def _uploaded(file: Path, to: str | None) -> bool:
    """Uploaded by an earlier sync as it is now, to ``to`` (None: to anywhere)."""
    try:
        done = json.loads(_marker(file).read_text())
        return done["bytes"] == file.stat().st_size and to in (None, done["to"])
    except (OSError, ValueError, KeyError, TypeError):  # no marker, or wandb's own (empty): not ours
        return False


def _stage(run_dir: Path, copy: Path, files: list[Path], sweep: str) -> dict[Path, tuple[Path, int]]:
    """A copy of ``run_dir`` that ``wandb sync`` reads and writes without touching the original: {staged .wandb
    file: (its original, the bytes of it copied)}."""
    from ignite_sweep.wandb_file import rewrite_run

    top = run_dir / "files"

    def place(src: str, dst: str) -> None:
        try:
            if Path(src).parent != top:  # files/ itself: wandb sync writes config.yaml, ... there; copies
                return os.link(src, dst)
        except OSError:  # another file system
            pass
        shutil.copy2(src, dst)

    if top.is_dir():
        shutil.copytree(top, copy / "files", symlinks=True, copy_function=place)
    copy.mkdir(parents=True, exist_ok=True)
    return {copy / f.name: (f, rewrite_run(f, copy / f.name, sweep_id=sweep)) for f in files}


def _wandb_sweep(backend: LocalBackend, sid: str, config: dict[str, Any], entity: str,
                 project: str) -> tuple[str | None, str, str]:  # fmt: skip
    """(the W&B sweep's name or None, its state, why none): the one remembered for entity/project if W&B still has
    it, else a new one registered and remembered."""
    import wandb
    from wandb.apis.public.sweeps import _get_sweep_state

    from ignite_sweep.backends.wandb import _first_line, _upsert
    from ignite_sweep.sweepfile import SCHEDULER_KEPT

    known = backend.store.wandb_sweep(sid, entity, project)
    try:
        if known:
            try:
                api = wandb.Api(overrides={"entity": entity, "project": project})
                return known, str(_get_sweep_state(api, known, entity=entity, project=project)).upper(), ""
            except (TypeError, KeyError):  # the answer's sweep is null: deleted on W&B
                pass
            except Exception as exc:  # noqa: BLE001 - the network, say: not a refusal; upload nothing now
                raise BackendError(f"W&B: cannot read sweep {entity}/{project}/{known}: {_first_line(exc)}; "
                                   "nothing uploaded, run sync again") from None  # fmt: skip
        scheduler = config.get("scheduler")
        if isinstance(scheduler, dict):  # a custom sweep's source text stays here: W&B's schema knows no such keys
            config = {**config, "scheduler": {k: v for k, v in scheduler.items() if k not in SCHEDULER_KEPT}}
        name, _warnings = _upsert(config, project, entity)  # the config was checked by the same schema at create
    except BackendError:
        raise
    except Exception as exc:  # noqa: BLE001 - CommError and friends: refused, or unreachable
        return None, "", _first_line(exc)
    if not name:
        return None, "", "no sweep name in W&B's answer"
    backend.store.set_wandb_sweep(sid, entity, project, name)
    return name, "RUNNING", ""


def _finish(sweep: str, state: str, entity: str, project: str) -> None:
    """The W&B sweep of an ended local sweep: FINISHED (optional: a refusal changes nothing uploaded)."""
    if state not in ("RUNNING", "PAUSED", "PENDING"):
        return
    import wandb
    from wandb.apis.public.sweeps import _set_sweep_state

    try:
        _set_sweep_state(wandb.Api(), sweep, "FINISHED", entity=entity, project=project)
    except Exception:  # noqa: BLE001 - "already finished", a refusal, the network: the runs are there
        pass


def _upload(dirs: list[Path], project: str, entity: str, sweep: str, to: str) -> tuple[list[str], int]:
    """``wandb sync`` of staged copies of the run files not uploaded to ``to`` yet: (the command, folders uploaded)."""
    try:
        staging = Path(tempfile.mkdtemp(prefix=".ignite-sweep-sync-", dir=dirs[0].parent))  # beside: hard links
    except OSError:  # a folder we may not write to: the system's temporary folder (copies, not links)
        staging = Path(tempfile.mkdtemp(prefix="ignite-sweep-sync-"))
    try:
        staged: dict[Path, tuple[Path, int]] = {}
        folders = []
        for i, run_dir in enumerate(dirs):
            files = [f for f in sorted(run_dir.glob("*.wandb")) if not _uploaded(f, to)]
            if files:
                folders.append(staging / f"{i:04d}" / run_dir.name)  # the name as logged: wandb sync reads it
                staged.update(_stage(run_dir, folders[-1], files, sweep))
        if not folders:
            return [], 0
        command = sync_command(project, entity, folders)
        loud = {**os.environ, "WANDB_SILENT": "false"}  # its errors, to say why a file was not uploaded
        result = subprocess.run(command, capture_output=True, text=True, env=loud)
        failed = []
        for copy, (original, size) in staged.items():
            if _marker(copy).exists():  # wandb's own: this file was uploaded
                _marker(original).write_text(json.dumps({"bytes": size, "to": to}) + "\n")
            else:
                failed.append(original)
        if result.returncode != 0 or failed:
            lines = (result.stderr + result.stdout).splitlines()
            why = next((ln for ln in lines if "ERROR" in ln), lines[-1] if lines else "no output")
            raise BackendError(f"wandb sync (exit {result.returncode}) uploaded {len(staged) - len(failed)} of "
                               f"{len(staged)} run files; {why.strip()}")  # fmt: skip
        return command, len(folders)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def sync(sweep_id: str, project: str | None = None, entity: str | None = None, dry_run: bool = False,
         echo: Callable[[str], None] | None = None) -> list[str]:  # fmt: skip
    """Upload a local sweep's runs to W&B as the runs of a W&B sweep; the ``wandb sync`` command it ran (with
    ``dry_run``: would run), [] when every run file was uploaded before. Progress and the warning go to ``echo``."""
    say = echo or (lambda line: print(line, file=sys.stderr))
    if not sweep_id.startswith("local/"):
        raise ConfigError(
            f"sweep id '{sweep_id}': sync uploads local sweeps (local/<id>); W&B sweeps are there already"
        )
    backend, sid = LocalBackend(), short_id(sweep_id)
    local = backend.sweep(sweep_id)
    dirs = run_dirs(backend, sweep_id)
    if not dirs:
        raise BackendError(
            f"sweep '{sweep_id}' has no offline run folders to upload (WANDB_DIR={os.environ.get('WANDB_DIR', '.')})"
        )
    project = project or (backend.store.sweep(sid) or {}).get("project") or "ignite-sweep"
    entity = entity or local.config.get("entity")
    if dry_run:
        pending = [d for d in dirs if not all(_uploaded(f, None) for f in d.glob("*.wandb"))]
        return sync_command(project, entity, pending) if pending else []

    from ignite_sweep.backends.wandb import preflight

    preflight()  # no login, no server: one line now, not wandb's retries
    if not entity:
        import wandb

        entity = wandb.Api().default_entity
        if not entity:
            raise BackendError("W&B: no entity known; pass --entity or run `wandb login`")
    sweep, state, why = _wandb_sweep(backend, sid, local.config, entity, project)
    if sweep is None:
        say(f"warning: W&B refused a sweep for {sweep_id} ({why}): runs go to {entity}/{project} grouped as "
            f"'{local.name}' and tagged local-sweep-{sid}, not as the runs of a W&B sweep")  # fmt: skip
    to = f"{entity}/{project}/{sweep or ''}"
    command, uploaded = _upload(dirs, project, entity, sweep or "", to)
    where = f"W&B sweep {to}" if sweep else f"{entity}/{project}"
    say(f"{where}: {uploaded} run folders uploaded, {len(dirs) - uploaded} uploaded before" if uploaded
        else f"{where}: nothing new to upload ({len(dirs)} run folders uploaded before)")  # fmt: skip
    if sweep and local.state in ENDED:
        _finish(sweep, state, entity, project)
    return command
