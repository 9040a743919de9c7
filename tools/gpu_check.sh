#!/usr/bin/env bash
# make gpu-check: the GPU paths of the book on one CUDA device, in at most 10 minutes.
#   1. sampling speed at 256^2, batched (benchmarks/sampling.py --device cuda) -> results/bench/sampling_cuda.json
#   2. training throughput at the paper's sizes with mixed precision (2-D 256^2 batch 64, 3-D 128^3 batch 4)
#      (benchmarks/training.py --device cuda --paper-sizes)                  -> results/bench/training_cuda.json
#   3. the gpu profile of notebooks 02 and 03, training bounded by notebooks/params/gpu-check.yaml
#      (python -m drdm.bookrun --profile gpu --overlay gpu-check)            -> results/gpu/, book/_executed/
# PY names the interpreter (default .venv/bin/python; `make gpu-check PY=python` in a conda env).
# Exit 2 without CUDA; 1 when a step fails or runs out of its time.
set -uo pipefail
PY=${PY:-.venv/bin/python}
BUDGET=${GPU_CHECK_BUDGET_S:-600}

"$PY" - <<'EOF' || exit 2
import sys
import torch
if not torch.cuda.is_available():
    why = ("this torch is a CPU-only build" if torch.version.cuda is None
           else f"torch {torch.__version__} (CUDA {torch.version.cuda}) finds no usable GPU or driver")
    sys.exit(f"gpu-check: CUDA is not available: {why}. Run it on a machine with an NVIDIA GPU, in an "
             "environment whose torch is a CUDA build (see book/running.md, 'GPU servers').")
print(f"gpu-check: {torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}")
EOF

start=$SECONDS
failed=()
step() {   # step NAME SECONDS COMMAND...: run with the smaller of its own limit and the time left
    local name=$1 limit=$2; shift 2
    local left=$((BUDGET - (SECONDS - start)))
    (( left < limit )) && limit=$left
    if (( limit <= 0 )); then
        echo "gpu-check: $name not run: the ${BUDGET} s budget is spent"; failed+=("$name"); return
    fi
    echo "gpu-check: $name (at most ${limit} s): $*"
    local t0=$SECONDS
    timeout --signal=INT --kill-after=10 "$limit" "$@"
    local rc=$?
    if (( rc == 0 )); then
        echo "gpu-check: $name done in $((SECONDS - t0)) s"
    else
        echo "gpu-check: $name FAILED (exit $rc$( ((rc == 124)) && echo ', out of time')) after $((SECONDS - t0)) s"
        failed+=("$name")
    fi
}

step sampling-benchmark 150 "$PY" benchmarks/sampling.py --device cuda --size 256
step training-benchmark 150 "$PY" benchmarks/training.py --device cuda --paper-sizes --min-time 5
step notebooks-02-03 300 "$PY" -m drdm.bookrun --profile gpu --overlay gpu-check --only 02_ --only 03_

echo "gpu-check: $((SECONDS - start)) s in all (budget ${BUDGET} s)"
if (( ${#failed[@]} )); then
    echo "gpu-check: FAILED: ${failed[*]}"
    exit 1
fi
echo "gpu-check: passed; results in results/bench/*_cuda.json and results/gpu/"
