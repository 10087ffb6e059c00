"""The layout's rule (DESIGN.md, "Layout as it grows"), checked on the import graph: training knows nothing of
stores or backends; execution starts, watches and stops runs but does not decide what runs next; backends decide
and record but do not show; the store records. Function-level imports count as much as top-level ones."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import ignite_sweep

PACKAGE = Path(ignite_sweep.__file__).parent

FORBIDDEN = {  # importer folder -> the folders (or modules) it must not import
    "training": ("backends", "store", "execution", "report", "cli", "sweepfile", "engine"),
    "execution": ("backends", "store", "report", "cli", "sweepfile", "engine"),
    "backends": ("report", "cli"),
    "store": ("backends", "execution", "report", "cli", "training"),
    "report": ("cli", "execution"),
    "search": ("backends", "execution", "report", "cli", "training", "store"),
}


def imports_of(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return {m.removeprefix("ignite_sweep.") for m in found if m.startswith("ignite_sweep.")}


def test_the_folders_exist_and_no_module_imports_across_the_rule() -> None:
    for folder in FORBIDDEN:
        assert (PACKAGE / folder / "__init__.py").is_file(), folder
    crossings = []
    for folder, banned in FORBIDDEN.items():
        for path in sorted((PACKAGE / folder).rglob("*.py")):
            for module in imports_of(path):
                if any(module == b or module.startswith(b + ".") for b in banned):
                    crossings.append(f"{path.relative_to(PACKAGE)} imports ignite_sweep.{module}")
    assert crossings == []


def test_the_checker_sees_a_crossing(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from ignite_sweep.backends.local import LocalBackend\n")
    assert imports_of(module) == {"backends.local"}


def test_registered_names_match_the_registries_without_importing_torch() -> None:
    from ignite_sweep.training.config import DATASET_NAMES, MODEL_NAMES
    from ignite_sweep.training.data import DATASETS
    from ignite_sweep.training.models import MODELS

    assert (DATASET_NAMES, MODEL_NAMES) == (tuple(DATASETS), tuple(MODELS))


def test_create_imports_neither_torch_nor_ignite_nor_the_report(tmp_path: Path) -> None:
    """Checking a model or dataset name needs a list of names, not torch; recording runs needs no report."""
    code = (
        "import sys\nfrom ignite_sweep.cli import run\n"
        "assert run(['create', 'sweeps/quickstart.yaml', '--backend', 'local']) == 0\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'ignite')"
        " or m.startswith('ignite_sweep.report')))\n"
    )
    root = PACKAGE.parent
    env = {"IGNITE_SWEEP_DIR": str(tmp_path), "WANDB_MODE": "offline", "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "[]"


@pytest.mark.parametrize(
    ("old", "name"),
    [("ignite_sweep.train", "train"), ("ignite_sweep.data", "Dataset"), ("ignite_sweep", "TrainConfig")],
)
def test_documented_import_paths_still_work(old: str, name: str) -> None:
    module = __import__(old, fromlist=[name])
    assert callable(getattr(module, name))
