#!/usr/bin/env bash
# For a machine with GPUs: a quickstart-style sweep on MNIST-shaped data written here (no download),
# fanned out with --gpus all --per-gpu 1, 2 and 4; then fused runs (the seed's Net, fp32: amp is not fused) at
# --fuse 1, 4, 8 and 16 against --per-gpu 4. Prints runs/minute per setting and mean GPU utilisation.
# Usage: bash benchmarks/gpu_check.sh [runs per setting, default 8] [runs per fused setting, default 16]
#        PARTS=fused FUSES="4 16" FUSED_PER_GPU= bash benchmarks/gpu_check.sh ...   (defaults: PARTS="per-gpu fused",
#        FUSES="1 4 8 16", FUSED_PER_GPU=4: the fused sweep at --per-gpu 4 too; empty skips it)
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-8}
FUSE_RUNS=${2:-16}
PARTS=${PARTS:-per-gpu fused}
PY=${PY:-.venv/bin/python}
command -v "$PY" >/dev/null || { make install >/dev/null; PY=.venv/bin/python; }  # PY=python3 on a device machine
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
measure() {  # measure NAME SWEEP_FILE AGENT_OPTIONS...: one sweep through the agent, one JSON line
  local name=$1 file=$2; shift 2
  export IGNITE_SWEEP_DIR="$WORK/store-$name"
  ID=$("$PY" -m ignite_sweep create "$file" --backend local 2>/dev/null | tail -1)
  nvidia-smi --query-gpu=utilization.gpu --format=csv,noheader,nounits -lms 500 > "$WORK/util-$name.txt" &
  SMI=$!
  START=$(date +%s.%N)
  "$PY" -m ignite_sweep agent "$ID" "$@" > "$WORK/pool-$name.log" 2>&1 || true
  END=$(date +%s.%N)
  kill $SMI 2>/dev/null || true
  "$PY" -m ignite_sweep status "$ID" --json > "$WORK/status-$name.json" || true
  "$PY" - "$name" "$START" "$END" "$WORK/status-$name.json" "$WORK/util-$name.txt" <<'PYEOF' | tee "$WORK/result-$name.json" || true
import json, sys
name, start, end, status, util = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), sys.argv[4], sys.argv[5]
runs = json.load(open(status))["runs"]
finished = sum(r["state"] == "finished" for r in runs)
measured = [(r.get("summary") or {}).get("fused_memory") for r in runs]  # what a member needs (the agent's bound)
per_member = [m["per_member_bytes"] for m in measured if m]
values = [float(v) for v in open(util).read().split() if v.replace(".", "").isdigit()]
print(json.dumps({"setting": name, "runs_finished": finished, "wall_s": round(end - start, 1),
                  "runs_per_min": round(finished / ((end - start) / 60), 2),
                  "gpu_util_mean_pct": round(sum(values) / len(values), 1) if values else None,
                  "fused_mib_per_member": round(max(per_member) / 2**20, 1) if per_member else None}))
PYEOF
  tail -1 "$WORK/pool-$name.log"
  # a setting where no run finished: say why here (the device machine and its folders go back after the lease)
  grep -q '"runs_finished": [1-9]' "$WORK/result-$name.json" 2>/dev/null || tail -25 "$WORK/pool-$name.log"
  return 0
}
if [[ " $PARTS " == *" per-gpu "* ]]; then
  for K in 1 2 4; do
    measure "per-gpu-$K" "$WORK/sweep.yaml" --gpus all --per-gpu "$K" --stagger 1
  done
fi
[[ " $PARTS " == *" fused "* ]] || exit 0
sed -e '/amp:/d' -e "s/run_cap: $RUNS/run_cap: $FUSE_RUNS/" -e 's/batch_size: {values: \[128, 256\]}/batch_size: {value: 128}/' \
  "$WORK/sweep.yaml" > "$WORK/fused.yaml"
for F in ${FUSES:-1 4 8 16}; do
  measure "fuse-$F" "$WORK/fused.yaml" --gpus all --fuse "$F"
done
P=${FUSED_PER_GPU-4}
[ -z "$P" ] || measure "fused-sweep-per-gpu-$P" "$WORK/fused.yaml" --gpus all --per-gpu "$P" --stagger 1
