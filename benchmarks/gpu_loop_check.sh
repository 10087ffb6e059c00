#!/usr/bin/env bash
# The training loop on a CUDA GPU (issue 15), one run, each step under its own time limit (what it printed is kept):
#  1. step_overhead.py --device cuda: us/iteration of train() against the plain loop on the same card, and
#     samples/s of the seed Net and the small CNN with and without AMP and compile;
#  2. the training tests on CUDA (device auto): the sync-counting test, compile, AMP, checkpoints;
#  3. throughput.py: the seed MNIST pipeline, ignite-sweep and the plain loop on MNIST-shaped data.
# Usage: bash benchmarks/gpu_loop_check.sh [output folder, default gpu-loop-check]
# PY: the Python (default .venv/bin/python, else python3). DEVICE=cpu: a dry run of the same steps here.
set -uo pipefail
cd "$(dirname "$0")/.."
OUTDIR=${1:-gpu-loop-check}
mkdir -p "$OUTDIR"
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # the package from this tree, installed or not
export WANDB_SILENT=true PYTHONUNBUFFERED=1 IGNITE_SWEEP_DATA="${IGNITE_SWEEP_DATA:-$(mktemp -d)}"
export WANDB_DIR="${WANDB_DIR:-$(mktemp -d)}"
{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  echo "cpus $(nproc)"
  "$PY" -c "import torch, ignite, wandb; print('torch', torch.__version__, 'ignite', ignite.__version__, 'wandb', wandb.__version__, 'cuda', torch.cuda.is_available())"
} 2>&1 | tee "$OUTDIR/machine.txt"
grep -q "^torch " "$OUTDIR/machine.txt" || { echo "torch, ignite or wandb missing: nothing measured"; exit 1; }
step() {  # step NAME SECONDS COMMAND...
  local name=$1 limit=$2
  shift 2
  echo "== $name (limit ${limit}s)"
  local start=$SECONDS
  timeout -k 10 "$limit" "$@" > "$OUTDIR/$name.txt" 2>&1  # -k: train() takes SIGTERM as "stop gracefully"
  echo "exit $? after $((SECONDS - start))s" >> "$OUTDIR/$name.txt"
  tail -4 "$OUTDIR/$name.txt"
}
step step_overhead 240 "$PY" benchmarks/step_overhead.py --device "${DEVICE:-cuda}" --epochs 10 --repeats 2 \
  --throughput --throughput-repeats 1
step tests 90 "$PY" -m pytest -q -p no:cacheprovider tests/test_train.py
step throughput 60 "$PY" benchmarks/throughput.py --rounds 2
