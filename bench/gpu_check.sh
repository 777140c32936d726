#!/usr/bin/env bash
# Every GPU check of the project in one call, sized for under 10 minutes on one H100/H200:
#   1. the CUDA tests: sparse storage against masked (one step, rewiring), grouped runs against single runs,
#      and CH scores (every scorer on CUDA, dense products included) against the slow reference;
#   2. bench/train_throughput.py: FC, 1%-masked and 1%-sparse MLP, samples/s;
#   3. bench/grid_throughput.py: 30 runs in one group against the same runs one after another;
#   4. bench/grid_throughput.py --paper-budget: the Fashion-MNIST dim-1 row on the full training set,
#      extrapolated to 100 epochs from the epochs measured;
#   5. bench/cnn_throughput.py --quick: the four backbones, dense head against CHT head;
#   6. table7: the NeurIPS 2025 Table 7 grid (config/neurips2025_mlp.yaml: 9 methods × 3 seeds, dim 2, protocol
#      neurips2025) of each dataset as one group on the full training set, 2 epochs, extrapolated to 100 epochs.
# Steps 1-5 fit one call of under 10 minutes; table7 needs a second call:
#   bench/gpu_check.sh                 # steps 1-5
#   bench/gpu_check.sh table7          # step 6 (or name any steps: bench/gpu_check.sh tests table7)
# Table 7's MNIST and EMNIST rows run when their files are in $CHT_GPU_DATA/mnist and $CHT_GPU_DATA/emnist.
# Needs the Fashion-MNIST .gz files in $CHT_GPU_DATA (default .gpu-data/) and, where the machine lacks
# them, wheels of jsonschema and powerlaw in .whl/ (installed into /tmp/site). Prints each step's table;
# the JSON and Markdown of every benchmark and every log go into one archive, $OUT/gpu_results.tgz
# (default bench/results/gpu_results.tgz). Exits non-zero when any step failed.
set -uo pipefail
cd "$(dirname "$0")/.."
data=${CHT_GPU_DATA:-.gpu-data}
out=${OUT:-bench/results}
work=$(mktemp -d)
mkdir -p "$out"
export PYTHONUNBUFFERED=1
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl \
        && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
# The tests read Fashion-MNIST where Debian's dataset-fashion-mnist puts it.
if [ -w /usr/share ] || [ "$(id -u)" = 0 ]; then
    mkdir -p /usr/share/datasets/fashion-mnist && cp -n "$data"/*.gz /usr/share/datasets/fashion-mnist/ 2>/dev/null
fi

status=0
selected=${*:-tests train_throughput grid_throughput grid_paper_budget cnn_throughput}
step() {  # step NAME SECONDS COMMAND...: run with a time limit, log to the archive, show the tail
    local name=$1 limit=$2 started=$SECONDS rc
    shift 2
    case " $selected " in *" ${name%%_[a-z]*} "*|*" $name "*) ;; *) return 0 ;; esac
    echo "== $name"
    timeout "$limit" "$@" >"$work/$name.log" 2>&1
    rc=$?
    tail -n 30 "$work/$name.log"
    echo "== $name: exit $rc after $((SECONDS - started)) s"
    [ "$rc" = 0 ] || status=1
}

nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem --format=csv | tee "$work/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())" | tee -a "$work/gpu.txt"

paper_methods="fc static set rigl mest granet cht cht_iclr chts chtss"
step tests 100 python3 -m pytest -q -p no:cacheprovider -k "cuda" tests/test_sparse_storages.py tests/test_grouped.py \
    tests/test_topology_scores.py
step train_throughput 60 python3 bench/train_throughput.py --device cuda --steps 50 --threads 1 \
    --densities 0.01 --data-root "$work/data" --data-source "$data" --out "$work"
step grid_throughput 170 python3 bench/grid_throughput.py --device cuda --methods $paper_methods --runs 30 \
    --max-train-samples 6000 --epochs 3 --data-root "$work/data" --data-source "$data" --out "$work"
step grid_paper_budget 140 python3 bench/grid_throughput.py --device cuda --methods $paper_methods --runs 30 \
    --epochs 2 --paper-budget --skip-sequential --data-root "$work/data" --data-source "$data" --out "$work"
step cnn_throughput 100 python3 bench/cnn_throughput.py --device cuda --quick --dataset fashion_mnist \
    --data-root "$work/data" --data-source "$data" --out "$work"

for dataset in fashion_mnist mnist emnist; do  # each dataset's 27 runs as one group (1-2 GiB of GPU memory)
    source=$data; [ "$dataset" = fashion_mnist ] || source=$data/$dataset
    if ! ls "$source"/*.gz >/dev/null 2>&1; then
        case " $selected " in *" table7 "*) echo "== table7_$dataset: skipped, no files in $source" ;; esac
        continue
    fi
    step "table7_$dataset" 180 python3 bench/grid_throughput.py --device cuda --config config/neurips2025_mlp.yaml \
        --dataset "$dataset" --runs 27 --epochs 2 --paper-budget --skip-sequential --data-root "$work/data" \
        --data-source "$source" --out "$work"
done

tar czf "$out/gpu_results.tgz" -C "$work" --exclude data .
echo "archive: $out/gpu_results.tgz"
exit $status
