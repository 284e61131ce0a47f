"""Sanity numbers for the download-free sample-quality metrics (the README's and the closing note's numbers).

MNIST at 28x28 (``mnist``) and 2x2 mean-pooled to 14x14 (``mnist14``), each in its own classifier's feature
space: FID and KID between two disjoint random halves of the test set (5000 each), between half A plus Gaussian
pixel noise of std s (images in [-1, 1], not clipped) and half B, between half A blurred by a Gaussian of std
b pixels (at the data's resolution) and half B, between two disjoint random halves of the train set (25000
each), and between 10000 train images and the test set. ``monotone`` records whether FID increases strictly
along each ladder. Digits (8x8): FID and KID in the digits classifier's feature space, and the debiased
Sinkhorn divergence and the RBF MMD in pixel coordinates, between two disjoint halves (898 / 899 images) with
noise added to one half.

Run: PYTHONPATH=src python experiments/metrics_sanity.py [--json reports/metrics_sanity.json]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from scipy.ndimage import gaussian_filter

from diffloss.data import load_dataset
from diffloss.data.builtin import MNIST_SIZES
from diffloss.io import write_json_atomic
from diffloss.metrics.distances import mmd, sinkhorn
from diffloss.metrics.fid import classifier_features, fid, kid

NOISE = (0.0, 0.05, 0.1, 0.2, 0.5, 1.0)
BLUR = (0.5, 1.0, 1.5, 2.0)


def halves(x: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    perm = np.random.default_rng(seed).permutation(len(x))
    return x[perm[: len(x) // 2]], x[perm[len(x) // 2 :]]


def noisy(x: np.ndarray, s: float, seed: int = 1) -> np.ndarray:
    return x + np.float32(s) * np.random.default_rng(seed).standard_normal(x.shape, dtype=np.float32)


def blurred(x: np.ndarray, side: int, b: float) -> np.ndarray:
    """(N, side*side) rows, each image blurred by a Gaussian of std ``b`` pixels (edges: nearest pixel)."""
    im = gaussian_filter(x.reshape(-1, side, side), sigma=(0, b, b), mode="nearest")
    return im.reshape(len(x), -1)


def compare(label: str, fx: np.ndarray, fy: np.ndarray, noise: float = 0.0, blur: float = 0.0) -> dict:
    """FID and KID (mean and std over 100 subsets of 1000) of two feature sets, printed and returned as a row."""
    k = kid(fx, fy)
    row = {"compare": label, "noise": noise, "blur": blur, "fid": fid(fx, fy), "kid": k.mean, "kid_std": k.std}
    print(f"{label:<48} FID {row['fid']:10.4f}  KID {k.mean:9.4f} +- {k.std:.4f}", flush=True)
    return row


def mnist_rows(name: str) -> list[dict]:
    """The rows for the MNIST built-in ``name`` (mnist or mnist14), in the classifier of the same name."""
    test, side = load_dataset(f"{name}:test").x, MNIST_SIZES[name]

    def features(x: np.ndarray) -> np.ndarray:
        return classifier_features(x, name)

    a, b = halves(test)
    fb = features(b)
    rows = [
        compare(f"{name} test half A + noise {s} vs test half B", features(noisy(a, s)), fb, noise=s) for s in NOISE
    ]
    rows += [
        compare(f"{name} test half A blurred {s} px vs test half B", features(blurred(a, side, s)), fb, blur=s)
        for s in BLUR
    ]
    train = load_dataset(f"{name}:train").x
    ta, tb = halves(train)
    rows.append(compare(f"{name} train half A vs train half B (25000 each)", features(ta), features(tb)))
    rows.append(compare(f"{name} train[:10000] vs test (10000)", features(train[:10000]), features(test)))
    return rows


def monotone(rows: list[dict]) -> dict:
    """Whether FID increases strictly along the noise ladder (from noise 0) and the blur ladder (from blur 0)."""
    ladder = [r for r in rows if r["compare"].endswith("vs test half B")]
    noise = [r["fid"] for r in ladder if r["blur"] == 0]
    blur = [ladder[0]["fid"]] + [r["fid"] for r in ladder if r["blur"] > 0]
    return {k: all(x < y for x, y in zip(v, v[1:])) for k, v in (("noise", noise), ("blur", blur))}


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
    out: dict = {name: mnist_rows(name) for name in MNIST_SIZES}
    out["digits"] = digits_rows(args.epsilon)
    out["monotone"] = {name: monotone(out[name]) for name in MNIST_SIZES}
    print(f"FID increases along the ladders: {out['monotone']}", flush=True)
    if args.json:
        write_json_atomic(args.json, out)


if __name__ == "__main__":
    main()
