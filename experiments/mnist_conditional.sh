#!/usr/bin/env bash
# Class-conditional, EDM-preconditioned MNIST (issue 15, item 5): train, sample every class, FID-proxy and per-class
# accuracy. Usage: experiments/mnist_conditional.sh ROOT [STEP]
#   ROOT  run directory root (the run goes to ROOT/run; resumable: rerun the same command after a stop)
#   STEP  evaluate the checkpoint as it stands now, copied to ROOT/eval-STEP (the learning rate does not depend on
#         --steps, so checkpoint k is what a run with --steps k gives); default: train to the end first.
# Environment: W (guidance weights, default "1 1.5 2"), N (samples per evaluation, default 2000), SAMPLER (heun),
# STEPS (sampler steps, 20), SEED (sampling seed, 1), THREADS (torch threads, 1).
set -euo pipefail
ROOT=${1:?usage: $0 ROOT [STEP]}
STEP=${2:-}
W=${W:-"1 1.5 2"}; N=${N:-2000}; SAMPLER=${SAMPLER:-heun}; STEPS=${STEPS:-20}; SEED=${SEED:-1}; THREADS=${THREADS:-1}
RUN="$ROOT/run"
if [[ -z "$STEP" ]]; then
  RESUME=(); [[ -f "$RUN/checkpoint.safetensors" ]] && RESUME=(--resume)
  diffloss train --data mnist --process edm --conditional --label-dropout 0.1 --steps 6000 --batch 32 \
    --channels 32 --lr 1e-3 --warmup 200 --ema-decay 0.999 --ckpt-every 250 --seed 0 --threads "$THREADS" --quiet \
    --out "$RUN" "${RESUME[@]}"
  STEP=final
fi
EVAL="$ROOT/eval-$STEP"
mkdir -p "$EVAL"
cp "$RUN/checkpoint.safetensors" "$EVAL/checkpoint.safetensors"   # a snapshot: training may still be writing
for w in $W; do
  diffloss sample --ckpt "$EVAL/checkpoint.safetensors" --class all --guidance "$w" --n "$N" --steps "$STEPS" \
    --sampler "$SAMPLER" --seed "$SEED" --threads "$THREADS" --quiet --out "$EVAL/samples-w$w.npy"
  diffloss eval --samples "$EVAL/samples-w$w.npy" --labels "$EVAL/samples-w$w.labels.npy" --ref mnist:test \
    --json "$EVAL/eval-w$w.json"
  diffloss sample --ckpt "$EVAL/checkpoint.safetensors" --class all --guidance "$w" --n 100 --steps "$STEPS" \
    --sampler "$SAMPLER" --seed 0 --threads "$THREADS" --quiet --out "$EVAL/grid-w$w.npy"   # + grid-w$w.png
done
