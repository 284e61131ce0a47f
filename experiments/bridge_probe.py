"""Watch a short bridge-sampler run: ELBO, log Z_hat, ESS and the learned sigma / prior std every few iterations.

Used to diagnose the CMCD blow-up on German Credit (reports/bridge_small_runs.md). Evaluations use their own
generator (seed --eval-seed), so they do not change the training trajectory.
Usage: python experiments/bridge_probe.py --target german_credit --sampler cmcd --loss rkl-r --iters 200 --init-sigma 1
"""

from __future__ import annotations

import argparse
import time

import torch

from diffloss.bridge import BridgeRun, make_config


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", required=True)
    ap.add_argument("--sampler", required=True)
    ap.add_argument("--loss", default="rkl-r")
    ap.add_argument("--iters", type=int, default=200)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--lr", type=float, default=5e-3)
    ap.add_argument("--init-sigma", type=float, default=None, help="default: the target's CMCD step rule")
    ap.add_argument("--every", type=int, default=20)
    ap.add_argument("--eval-n", type=int, default=500)
    ap.add_argument("--eval-seed", type=int, default=7)
    a = ap.parse_args()
    torch.set_num_threads(1)
    cfg = make_config(a.target, a.sampler, steps=a.steps, init_sigma=a.init_sigma, loss=a.loss, iters=a.iters,
                      batch=a.batch, lr=a.lr, eval_every=0, eval_n=a.eval_n)  # fmt: skip
    run, start = BridgeRun(cfg), time.process_time()
    for i in range(a.iters + 1):
        if i % a.every == 0 or i == a.iters:
            m = run.evaluate(a.eval_n, a.eval_seed)
            sigma, std = run.model.log_sigma.exp(), run.model.prior_log_std.exp()
            print(f"iter {i} elbo {m['elbo']:.6g} log_z {m['log_z']:.6g} ess {m['ess']:.3g} "
                  f"sigma [{sigma.min():.3g}, {sigma.max():.3g}] prior std [{std.min():.3g}, {std.max():.3g}] "
                  f"cpu {time.process_time() - start:.0f}s", flush=True)  # fmt: skip
        if i < a.iters and not run.step()[1]:
            print(f"diverged at iteration {i + 1}")
            break


if __name__ == "__main__":
    main()
