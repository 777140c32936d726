#!/usr/bin/env bash
# Every benchmark on one device, results (JSON + Markdown) collected in one folder.
#   bench/run_all.sh [DEVICE=auto] [OUT=bench/results] [DATA_SOURCE]
# EPOCHS (method comparison, default 5) and RUNS (training-run folder) can be set in the environment.
set -uo pipefail
cd "$(dirname "$0")/.."
device=${1:-auto}
out=${2:-bench/results}
source_args=()
[ -n "${3:-}" ] && source_args=(--data-source "$3")
data_root=${DATA_ROOT:-data}
runs=${RUNS:-$(mktemp -d)}
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p "$out"
failed=0
step() { echo "== $*"; "$@" || { echo "!! failed: $*"; failed=1; }; }

step python3 bench/linkpred.py --device "$device" --out "$out"
step python3 bench/train_throughput.py --device "$device" --data-root "$data_root" "${source_args[@]}" --out "$out"
step python3 bench/evolution_overhead.py --device "$device" --data-root "$data_root" "${source_args[@]}" \
    --methods set rigl mest granet cht cht_iclr chts --out "$out"
step python3 bench/method_comparison.py --device "$device" --data-root "$data_root" "${source_args[@]}" \
    --epochs "${EPOCHS:-5}" --runs-dir "$runs" --out "$out"
exit $failed
