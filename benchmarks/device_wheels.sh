#!/usr/bin/env bash
# Wheels for a GPU machine lent through the device tool (no network there; its python3 3.12 has torch, numpy 2,
# scikit-learn, scipy, typer, rich, pyyaml, requests, protobuf...): what ignite-sweep needs and it lacks, at the
# versions this .venv runs (wandb and its OpenTelemetry, pydantic, pytorch-ignite, sweeps and jsonschema,
# SQLAlchemy, and protobuf at this .venv's version), downloaded here into .whl/ (git-ignored through
# .git/info/exclude), about 40 MB. sweeps is installed without its numpy<2 pin: the machine's numpy 2 stays.
# There, before benchmarks/gpu_check.sh (the device tool's run, carry [".whl"]):
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
#     .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD PY=python3 && bash benchmarks/gpu_check.sh
# Usage: bash benchmarks/device_wheels.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
mkdir -p .whl
"$PY" - <<'PYEOF' > .whl/wanted.txt
import importlib.metadata as md, re
# on the device image already (KINDS.md's package list, 2026-11): not carried
there = {re.sub(r"[-_.]+", "-", n) for n in """absl-py anyio attrs certifi charset-normalizer click filelock fsspec
    h11 httpcore httpx idna jinja2 joblib markupsafe numpy packaging pandas pillow psutil pygments pyyaml regex
    requests rich scikit-learn scipy setuptools six threadpoolctl torch torchvision tqdm typer typing-extensions
    urllib3 xxhash zipp networkx sympy triton""".split()}
def norm(name): return re.sub(r"[-_.]+", "-", name).lower()
seen, todo = {"protobuf": md.version("protobuf")}, ["wandb", "pytorch-ignite", "sweeps", "sqlalchemy"]
while todo:
    name = norm(todo.pop())
    if name in seen or name in there:
        continue
    dist = md.distribution(name)
    seen[name] = dist.version
    todo += [re.split(r"[ ;<>=!~\[(]", r, maxsplit=1)[0] for r in dist.requires or [] if "extra ==" not in r]
print("\n".join(f"{n}=={v}" for n, v in sorted(seen.items())))
PYEOF
while read -r wanted; do
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform manylinux_2_34_x86_64 \
    --platform manylinux_2_31_x86_64 --platform manylinux_2_24_x86_64 -d .whl "$wanted"
done < .whl/wanted.txt
ls .whl/*.whl | wc -l
du -sh .whl
