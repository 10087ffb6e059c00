"""ignite-sweep's live-metrics hook for program sweeps; on the PYTHONPATH of a run's program only.

Python imports ``sitecustomize`` at start-up. This one, when ``IGNITE_SWEEP_METRICS_FILE`` is set, waits for
wandb's run module to be imported and wraps ``Run.log`` (which ``wandb.log`` and Ignite's ``WandBLogger`` call):
each call appends its numeric values as one JSON line to that file, then logs as usual. The agent reads the file
while the program trains, so the sweep sees every evaluation as it happens (an offline run's ``.wandb`` file is
written only at its end). Nothing here may break the program: any failure of the hook is silent. Then the
``sitecustomize`` this one shadows (a distribution's own, if any) runs as it would have.
"""

import os
import sys


def _numbers(data):
    """The scalar values of one ``log`` call: numbers, and numpy/torch scalars (their ``.item()``)."""
    out = {}
    for key, value in data.items():
        if not isinstance(key, str) or isinstance(value, bool):
            continue
        if not isinstance(value, (int, float)):
            item = getattr(value, "item", None)
            try:
                value = item() if callable(item) else None  # raises for arrays of more than one element
            except Exception:  # noqa: BLE001
                continue
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[key] = value
    return out


def _send(path, run_id, data, step):
    import json
    import math

    values = {k: (v if not isinstance(v, float) or math.isfinite(v) else repr(v)) for k, v in _numbers(data).items()}
    if not values:
        return
    line = json.dumps({"run": run_id, "step": step, "pid": os.getpid(), "metrics": values}) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())  # one write per line: O_APPEND keeps lines whole across processes
    finally:
        os.close(fd)


def _patch(module, path):
    import functools

    run_class = getattr(module, "Run", None)
    original = getattr(run_class, "log", None)
    if original is None or getattr(original, "_ignite_sweep", False):
        return

    @functools.wraps(original)
    def log(self, data, *args, **kwargs):
        result = original(self, data, *args, **kwargs)  # first: a call wandb refuses raises, and is not recorded
        try:
            step = kwargs.get("step", args[0] if args else None)
            last = self.__dict__.get("_ignite_sweep_step")
            if isinstance(step, int) and last is not None and step < last:
                return result  # wandb drops a step lower than its current one ("must be monotonically increasing")
            if isinstance(step, int):
                self.__dict__["_ignite_sweep_step"] = step
            if isinstance(data, dict):
                _send(path, getattr(self, "id", None), data, step)
        except Exception:  # noqa: BLE001 - the program's logging must go on
            pass
        return result

    log._ignite_sweep = True
    run_class.log = log


def _install(path):
    import importlib.machinery

    target = "wandb.sdk.wandb_run"

    class Finder:  # a plain finder: importlib.abc would import typing into every process at start-up
        @staticmethod
        def find_spec(name, import_path, target_module=None):
            if name != target:
                return None
            try:
                spec = importlib.machinery.PathFinder.find_spec(name, import_path)
                loader = getattr(spec, "loader", None)
                if loader is None or not hasattr(loader, "exec_module"):
                    return spec
                execute = loader.exec_module

                def exec_module(module):
                    execute(module)
                    try:
                        _patch(module, path)
                    except Exception:  # noqa: BLE001
                        pass

                loader.exec_module = exec_module
                return spec
            except Exception:  # noqa: BLE001 - let the normal import machinery find it
                return None

    sys.meta_path.insert(0, Finder())


def _chain():
    """Run the sitecustomize this file shadows, as Python would have without it."""
    import importlib.machinery
    import importlib.util

    here = os.path.dirname(os.path.abspath(__file__))
    rest = [p for p in sys.path if os.path.abspath(p or ".") != here]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", rest)
    if spec is not None and spec.loader is not None:
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)


def install_in_process(path):
    """For a user function forked from the agent: wandb may be imported already, so wrap ``Run.log`` now."""
    module = sys.modules.get("wandb.sdk.wandb_run")
    if module is not None:
        _patch(module, path)
    else:
        _install(path)


if __name__ == "sitecustomize":  # Python's start-up import, not the agent loading this file for a function
    if os.environ.get("IGNITE_SWEEP_METRICS_FILE"):
        try:
            _install(os.environ["IGNITE_SWEEP_METRICS_FILE"])
        except Exception:  # noqa: BLE001
            pass
    _chain()
