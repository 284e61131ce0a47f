#!/usr/bin/env bash
# Short bridge-sampler runs on Funnel (d=10) and GMM40 (d=50): every sampler {dis, dbs, cmcd} x loss {rkl-r, lv,
# rkl-ld}, then tb as an extra, at a budget that fits a shared 2-core CPU machine (one thread per run). Each run uses
# the targets' default initialisation (prior std and, for CMCD, the Langevin step; see Density and
# diffloss.bridge.config.default_init_sigma) and is evaluated once, at the end, on EVAL_N fresh trajectories.
# Usage: [ITERS=.. BATCH=.. STEPS=.. EVAL_N=.. SEED=..] [TARGETS="funnel gmm40"] [LOSSES="rkl-ld rkl-r lv tb"]
#        [EXTRA="more bridge train options"] experiments/bridge_small_runs.sh OUTROOT
# (EXTRA, e.g. "--score-gate --init-std 20 --init-sigma 8 --lr 5e-3", applies to every run of the queue.)
# One worker: takes the next unclaimed run of the queue until none is left; start two workers to use both cores.
# A run is claimed by creating its directory; finished runs have metrics.json, CPU/wall seconds in time.txt.
# Summarize with: python experiments/bridge_small_table.py OUTROOT
set -u
root=$1
iters=${ITERS:-200} batch=${BATCH:-64} steps=${STEPS:-32} eval_n=${EVAL_N:-1000} seed=${SEED:-0}
targets=${TARGETS:-funnel gmm40} losses=${LOSSES:-rkl-ld rkl-r lv tb} extra=${EXTRA:-}
mkdir -p "$root"
queue=""
for loss in $losses; do
  for sampler in cmcd dis dbs; do
    for target in $targets; do queue="$queue $target:$sampler:$loss"; done
  done
done
for item in $queue; do
  IFS=: read -r target sampler loss <<< "$item"
  out="$root/${target}_${sampler}_${loss}"
  mkdir "$out" 2> /dev/null || continue
  OMP_NUM_THREADS=1 /usr/bin/time -f "%U %S %e" -o "$out/time.txt" python -m diffloss bridge train --target "$target" \
    --sampler "$sampler" --loss "$loss" --iters "$iters" --batch "$batch" --steps "$steps" --seed "$seed" \
    --eval-every 0 --eval-n "$eval_n" --quiet $extra --out "$out" > "$out.log" 2>&1 || echo "failed: $out" >> "$root/failures.txt"
done
