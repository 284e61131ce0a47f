"""Sanity numbers for the download-free sample-quality metrics (the README's and the closing note's numbers).

MNIST: FID and KID in the project classifier's feature space between two disjoint random halves of mnist:test
(5000 each), between half A plus Gaussian pixel noise of std s (images in [-1, 1], not clipped) and half B,
and between 10000 mnist:train images and mnist:test. Digits (8x8): FID and KID in the digits classifier's
feature space, and the debiased Sinkhorn divergence and the RBF MMD in pixel coordinates, between two disjoint
halves (898 / 899 images) with noise added to one half.

Run: PYTHONPATH=src python experiments/metrics_sanity.py [--json reports/metrics_sanity.json]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from diffloss.data import load_dataset, load_mnist
from diffloss.io import write_json_atomic
from diffloss.metrics.distances import mmd, sinkhorn
from diffloss.metrics.fid import classifier_features, fid, kid

NOISE = (0.0, 0.05, 0.1, 0.2, 0.5, 1.0)


def halves(x: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    perm = np.random.default_rng(seed).permutation(len(x))
    return x[perm[: len(x) // 2]], x[perm[len(x) // 2 :]]


def noisy(x: np.ndarray, s: float, seed: int = 1) -> np.ndarray:
    return x + np.float32(s) * np.random.default_rng(seed).standard_normal(x.shape, dtype=np.float32)


def mnist_rows() -> list[dict]:
    a, b = halves(load_mnist("test").x)
    fb = classifier_features(b)
    rows = []
    for s in NOISE:
        fa = classifier_features(noisy(a, s))
        k = kid(fa, fb)
        rows.append(
            {"compare": f"test half A + noise {s} vs test half B", "noise": s, "fid": fid(fa, fb)}
            | {"kid": k.mean, "kid_std": k.std}
        )
        print(f"MNIST noise {s:<5} FID {rows[-1]['fid']:10.4f}  KID {k.mean:9.4f} +- {k.std:.4f}", flush=True)
    ft, fte = classifier_features(load_mnist("train").x[:10000]), classifier_features(load_mnist("test").x)
    k = kid(ft, fte)
    rows.append(
        {"compare": "train[:10000] vs test (10000)", "noise": 0.0, "fid": fid(ft, fte), "kid": k.mean, "kid_std": k.std}
    )
    print(f"MNIST train[:10k] vs test FID {rows[-1]['fid']:.4f}  KID {k.mean:.4f} +- {k.std:.4f}", flush=True)
    return rows


def digits_rows(epsilon: float) -> list[dict]:
    a, b = halves(load_dataset("digits").x)
    rows = []
    for s in NOISE:
        x = noisy(a, s)
        r = mmd(x, b)
        fx, fb = classifier_features(x, "digits"), classifier_features(b, "digits")
        k = kid(fx, fb, subset_size=500)
        rows.append(
            {
                "compare": f"digits half A + noise {s} vs half B",
                "noise": s,
                "fid": fid(fx, fb),
                "kid": k.mean,
                "kid_std": k.std,
                "sinkhorn": sinkhorn(x, b, epsilon=epsilon),
                "epsilon": epsilon,
                "mmd": r.mmd,
                "mmd2": r.mmd2,
                "bandwidth": r.bandwidth,
            }
        )
        print(
            f"digits noise {s:<5} FID {rows[-1]['fid']:9.4f}  KID {k.mean:8.4f} +- {k.std:.4f}  "
            f"Sinkhorn {rows[-1]['sinkhorn']:9.4f}  MMD {r.mmd:.4f} (h {r.bandwidth:.3f})",
            flush=True,
        )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", help="also write the numbers here")
    ap.add_argument("--epsilon", type=float, default=1.0, help="Sinkhorn epsilon for digits (squared pixel units)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    out = {"mnist": mnist_rows(), "digits": digits_rows(args.epsilon)}
    if args.json:
        write_json_atomic(args.json, out)


if __name__ == "__main__":
    main()
