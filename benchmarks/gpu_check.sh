#!/usr/bin/env bash
# The GPU checks of diffloss in one call, under 8 minutes on one GPU. Run on the GPU machine from the repo root,
# after benchmarks/gpu_wheels.sh has put the missing wheels in ./.whl here (carry .whl):
#
#   bash benchmarks/gpu_check.sh            # results to benchmarks/results/*_cuda.*, also copied to $OUT if set
#
# 1. pytest -m cuda: the CUDA-marked tests (they skip on a machine without CUDA);
# 2. benchmarks/optimal_loss.py --device cuda: the exact estimator against the device roofline (MNIST, a CIFAR-sized
#    synthetic array) and the ImageNet-64-sized J* curve -> optimal_loss_cuda.md;
# 3. benchmarks/train_throughput.py --device cuda: diffloss train vs a minimal loop -> train_throughput_cuda.md;
# 4. a 200-step bf16 MNIST training run -> train_bf16_cuda.md (samples/s, final loss).
# Each step has its own time limit; a failed step is recorded and the others still run; the exit status is the
# number of failed steps.
set -uo pipefail
cd "$(dirname "$0")/.."
if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
RESULTS=benchmarks/results
GPU=$(python3 -c "import torch; print(torch.cuda.get_device_name(0))") || { echo "no CUDA device"; exit 1; }
echo "GPU: $GPU; torch $(python3 -c 'import torch; print(torch.__version__)')"
failed=0
step() {  # step NAME SECONDS COMMAND...: run with a time limit, log to $RESULTS/NAME_cuda.log
  local name=$1 limit=$2
  shift 2
  echo "== $name (limit ${limit}s)"
  local t0=$SECONDS
  if timeout "$limit" "$@" 2>&1 | tee "$RESULTS/${name}_cuda.log"; then
    echo "== $name: ok in $((SECONDS - t0)) s"
  else
    echo "== $name: FAILED after $((SECONDS - t0)) s"
    failed=$((failed + 1))
  fi
}

step pytest 90 python3 -m pytest -m cuda -q -p no:cacheprovider tests
step optimal_loss 210 python3 benchmarks/optimal_loss.py --device cuda
step train_throughput 60 python3 benchmarks/train_throughput.py --device cuda --preset small --batch 128 \
  --rounds 3 --steps 20 --out "$RESULTS/train_throughput_cuda"
run=/tmp/gpu_check_bf16
rm -rf "$run"
step train_bf16 75 python3 -m diffloss train --data mnist --preset small --batch 128 --steps 200 --log-every 50 \
  --device cuda --precision bf16 --quiet --out "$run"
if [ -f "$run/metrics.jsonl" ]; then
  python3 - "$run/metrics.jsonl" "$RESULTS/train_bf16_cuda.md" "$GPU" <<'PY'
import json, sys
from pathlib import Path
lines = [json.loads(l) for l in Path(sys.argv[1]).read_text().splitlines() if '"loss"' in l]
rows = "\n".join(f"| {r['step']} | {r['loss']:.4f} | {r['samples_per_sec']:.0f} |" for r in lines)
Path(sys.argv[2]).write_text(
    f"# 200-step bf16 MNIST training on {sys.argv[3]}\n\n`diffloss train --data mnist --preset small --batch 128 "
    f"--steps 200 --device cuda --precision bf16` (benchmarks/gpu_check.sh)\n\n| step | loss | samples/s |\n"
    f"|---|---|---|\n{rows}\n"
)
PY
fi
[ -n "${OUT:-}" ] && cp "$RESULTS"/*_cuda.* "$OUT"/
echo "GPU checks on $GPU: $failed step(s) failed"
exit "$failed"
