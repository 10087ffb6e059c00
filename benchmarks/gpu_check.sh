#!/usr/bin/env bash
# For a machine with GPUs: a quickstart-style sweep on MNIST-shaped data written here (no download),
# fanned out with --gpus all --per-gpu 1, 2 and 4. Prints runs/minute per setting and mean GPU utilisation.
# Usage: bash benchmarks/gpu_check.sh [runs per setting, default 8]
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-8}
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || { make install >/dev/null; PY=.venv/bin/python; }
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
export WANDB_MODE=offline WANDB_SILENT=true WANDB_DIR="$WORK" IGNITE_SWEEP_DATA="$WORK/data"
nvidia-smi --query-gpu=index,name,memory.total --format=csv,noheader
"$PY" - "$WORK/data" <<'PYEOF'
import sys
sys.path.insert(0, "benchmarks")
from pathlib import Path
from throughput import write_mnist
write_mnist(Path(sys.argv[1]), 60000, 10000)
PYEOF
cat > "$WORK/sweep.yaml" <<YAML
method: random
metric: {name: val/accuracy, goal: maximize}
run_cap: $RUNS
parameters:
  dataset: {value: mnist}
  download: {value: false}
  epochs: {value: 2}
  batch_size: {values: [128, 256]}
  val_batch_size: {value: 2000}
  amp: {value: true}
  lr: {distribution: log_uniform_values, min: 0.001, max: 0.1}
  momentum: {distribution: uniform, min: 0.5, max: 0.95}
YAML
for K in 1 2 4; do
  export IGNITE_SWEEP_DIR="$WORK/store-$K"
  ID=$("$PY" -m ignite_sweep create "$WORK/sweep.yaml" --backend local 2>/dev/null | tail -1)
  nvidia-smi --query-gpu=utilization.gpu --format=csv,noheader,nounits -lms 500 > "$WORK/util-$K.txt" &
  SMI=$!
  START=$(date +%s.%N)
  "$PY" -m ignite_sweep agent "$ID" --gpus all --per-gpu "$K" --stagger 1 > "$WORK/pool-$K.log" 2>&1 || true
  END=$(date +%s.%N)
  kill $SMI 2>/dev/null || true
  FINISHED=$("$PY" -m ignite_sweep status "$ID" --json | "$PY" -c 'import json,sys; print(sum(r["state"]=="finished" for r in json.load(sys.stdin)["runs"]))')
  "$PY" - "$K" "$START" "$END" "$FINISHED" "$WORK/util-$K.txt" <<'PYEOF'
import json, sys
k, start, end, finished, util = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
values = [float(v) for v in open(util).read().split() if v.replace(".", "").isdigit()]
print(json.dumps({"per_gpu": int(k), "runs_finished": finished, "wall_s": round(end - start, 1),
                  "runs_per_min": round(finished / ((end - start) / 60), 2),
                  "gpu_util_mean_pct": round(sum(values) / len(values), 1) if values else None}))
PYEOF
  tail -1 "$WORK/pool-$K.log"
done
