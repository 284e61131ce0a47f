#!/usr/bin/env bash
# Short bridge-sampler runs at a budget that fits a shared 2-core CPU machine: 500 iterations, batch 128,
# K = 64 steps, seed 0, one thread, final evaluation on 2000 fresh trajectories. GMM40 starts with diffusion
# coefficient sigma = 8 (--init-sigma; the CMCD Langevin step sigma^2/(2K) = 0.5 on unit-variance components),
# Funnel with the default sigma = 1.
# Usage: experiments/bridge_small_runs.sh OUTROOT   -- one worker: takes the next unclaimed run of the queue
# (priority order: the required CMCD x {rKL-LD, rKL-R, LV} and DIS x rKL-R first) until none is left. Start two
# workers to use both cores. A run is claimed by creating its directory; finished runs have metrics.json.
# Summarize with: python experiments/bridge_small_table.py OUTROOT
set -u
root=$1
mkdir -p "$root"
queue="funnel:cmcd:rkl-ld gmm40:cmcd:rkl-ld funnel:cmcd:rkl-r funnel:cmcd:lv funnel:dis:rkl-r
gmm40:cmcd:rkl-r gmm40:cmcd:lv gmm40:dis:rkl-r funnel:dbs:rkl-ld funnel:dis:rkl-ld funnel:cmcd:tb
funnel:dis:lv funnel:dbs:rkl-r funnel:dbs:lv gmm40:dbs:rkl-ld gmm40:dis:rkl-ld gmm40:cmcd:tb gmm40:dis:lv
funnel:dis:tb funnel:dbs:tb gmm40:dbs:rkl-r gmm40:dbs:lv gmm40:dis:tb gmm40:dbs:tb"
for item in $queue; do
  IFS=: read -r target sampler loss <<< "$item"
  out="$root/${target}_${sampler}_${loss}"
  mkdir "$out" 2> /dev/null || continue
  sigma=1
  [ "$target" = gmm40 ] && sigma=8
  OMP_NUM_THREADS=1 python -m diffloss bridge train --target "$target" --sampler "$sampler" --loss "$loss" \
    --init-sigma "$sigma" --iters 500 --batch 128 --steps 64 --seed 0 --eval-every 0 --eval-n 2000 --quiet --out "$out" \
    > "$out.log" 2>&1 || echo "failed: $out" >> "$root/failures.txt"
done
