"""``diffloss eval``: sample quality against reference data, without downloads (FID, KID, Sinkhorn, MMD)."""

from __future__ import annotations

import click
import numpy as np

from diffloss.data import Dataset, load_dataset
from diffloss.errors import DifflossError, unknown_name
from diffloss.io import write_json_atomic

METRICS = ("fid", "kid", "sinkhorn", "mmd")
MNIST_DIM = 28 * 28
EPSILON_FRACTION = 0.05


def _subsample(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    return x if len(x) <= k else x[np.sort(rng.choice(len(x), k, replace=False))]


def _parse_metrics(text: str | None, image: bool) -> list[str]:
    if text is None:
        return ["fid", "kid", "sinkhorn", "mmd"] if image else ["sinkhorn", "mmd"]
    names = [m.strip() for m in text.split(",") if m.strip()]
    for m in names:
        if m not in METRICS:
            raise unknown_name("metric", m, METRICS)
    if not names:
        raise DifflossError("--metrics: give at least one of fid,kid,sinkhorn,mmd")
    if not image and {"fid", "kid"} & set(names):
        raise DifflossError(
            "fid and kid need 28x28 MNIST-like data (D = 784) for the classifier features; use --metrics sinkhorn,mmd"
        )
    return names


def evaluate(
    samples: Dataset,
    ref: Dataset,
    metrics: list[str],
    *,
    epsilon: float | None,
    max_points: int,
    kid_subset: int,
    seed: int,
) -> dict:
    """Compare ``samples`` to ``ref``; see ``diffloss eval --help`` for the conventions of each metric."""
    from diffloss.metrics.classifier import FEATURE_DIM, asset_path, sha256_file
    from diffloss.metrics.distances import mmd, sinkhorn
    from diffloss.metrics.fid import fid, kid, mnist_features

    if samples.dim != ref.dim:
        raise DifflossError(
            f"samples have D = {samples.dim} (shape {samples.shape}) but the reference {ref.name} has D = {ref.dim} "
            f"(shape {ref.shape}); give samples of the reference's shape"
        )
    if samples.n < 2:
        raise DifflossError(f"need at least 2 samples, got {samples.n}")
    image = samples.dim == MNIST_DIM
    if image:
        fx = mnist_features(samples.x)
        fy = mnist_features(ref.x)
        space = f"MNIST classifier penultimate layer ({FEATURE_DIM}-d ReLU; weights sha256 {sha256_file(asset_path())})"
    else:
        fx, fy = samples.x.astype(np.float64), ref.x.astype(np.float64)
        space = f"data coordinates (D = {samples.dim})"
    out: dict = {"n_samples": samples.n, "n_ref": ref.n, "dim": samples.dim, "feature_space": space, "metrics": {}}
    rng = np.random.default_rng(seed)
    if "fid" in metrics:
        out["metrics"]["fid"] = {"value": fid(fx, fy), "units": "squared feature units"}
    if "kid" in metrics:
        k = kid(fx, fy, subset_size=kid_subset, seed=seed)
        out["metrics"]["kid"] = {
            "value": k.mean,
            "std": k.std,
            "subset_size": k.subset_size,
            "subsets": k.subsets,
            "kernel": "(a.b/F + 1)^3",
            "units": "value = mean unbiased MMD^2 over subsets (not x1000)",
        }
    if {"sinkhorn", "mmd"} & set(metrics):
        px, py = _subsample(fx, max_points, rng), _subsample(fy, max_points, rng)
        if "sinkhorn" in metrics:
            # 2 tr Cov(ref) = E||y - y'||^2: the typical squared distance the cost is measured against
            eps = epsilon if epsilon is not None else EPSILON_FRACTION * 2 * float(fy.var(0).sum())
            out["metrics"]["sinkhorn"] = {
                "value": sinkhorn(px, py, epsilon=eps),
                "epsilon": eps,
                "epsilon_rule": "given" if epsilon is not None else f"{EPSILON_FRACTION} * 2 tr Cov(ref)",
                "kind": "debiased Sinkhorn divergence S_eps = OT_eps(x,y) - (OT_eps(x,x) + OT_eps(y,y))/2",
                "cost": "squared Euclidean",
                "n_points": [len(px), len(py)],
                "units": "squared feature units",
            }
        if "mmd" in metrics:
            r = mmd(px, py)
            out["metrics"]["mmd"] = {
                "value": r.mmd,
                "mmd2": r.mmd2,
                "bandwidth": r.bandwidth,
                "kernel": "RBF exp(-|a-b|^2 / (2 h^2)), h = median pairwise distance",
                "n_points": [len(px), len(py)],
                "units": "value = sqrt(max(mmd2, 0)) in feature units; mmd2 unbiased",
            }
    return out


@click.command("eval")
@click.option("--samples", "samples_path", required=True, help="Samples: .npy/.npz (N, 1, 28, 28), (N, 784) or (N, D).")
@click.option("--ref", required=True, help="Reference data: mnist, mnist:test, digits, gmm, ... or a .npy/.npz file.")
@click.option(
    "--metrics", default=None, help="Comma-separated subset of fid,kid,sinkhorn,mmd. [default: all that apply]"
)
@click.option(
    "--epsilon",
    type=float,
    default=None,
    help="Sinkhorn epsilon (squared feature units). [default: 0.05 * 2 tr Cov(ref)]",
)
@click.option(
    "--max-points", default=1000, show_default=True, help="Sinkhorn and MMD use at most this many points a side."
)
@click.option("--kid-subset", default=1000, show_default=True, help="KID subset size (100 subsets).")
@click.option("--seed", default=0, show_default=True, help="Seed of the subsampling and the KID subsets.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), required=True, help="Write the results here.")
@click.option("--quiet", is_flag=True, help="Print nothing on success.")
def command(
    samples_path: str,
    ref: str,
    metrics: str | None,
    epsilon: float | None,
    max_points: int,
    kid_subset: int,
    seed: int,
    json_out: str,
    quiet: bool,
) -> None:
    """Measure how close SAMPLES are to REF, with no downloaded network.

    Samples are floats in [-1, 1] (uint8 files are mapped to [-1, 1]). For 28x28 data (MNIST; D = 784) all
    metrics are computed in the 128-d penultimate feature space of the project's own MNIST classifier
    (committed weights, >= 99% test accuracy): FID (Frechet distance of fitted Gaussians, squared feature
    units), KID (unbiased MMD^2, cubic polynomial kernel, mean and std over 100 subsets; not scaled by 1000),
    Sinkhorn and MMD. For other data (digits, toy sets, any (N, D) array) only Sinkhorn and MMD apply, in the
    data's own coordinates.

    Sinkhorn is the debiased Sinkhorn divergence with squared-Euclidean cost (squared units, no square root)
    at the given epsilon; MMD uses the RBF kernel with the median-heuristic bandwidth and reports the unbiased
    MMD^2 and sqrt(max(MMD^2, 0)). Both use a seeded subsample of at most --max-points points a side.
    The JSON records every convention, the sample counts and the feature space.

    Example: diffloss eval --samples samples.npy --ref mnist:test --json eval.json
    """
    s, r = load_dataset(samples_path), load_dataset(ref)
    if max_points < 2 or kid_subset < 2:
        raise DifflossError("--max-points and --kid-subset must be >= 2")
    if epsilon is not None and not (epsilon > 0 and np.isfinite(epsilon)):
        raise DifflossError(f"--epsilon must be a finite number > 0, got {epsilon}")
    names = _parse_metrics(metrics, s.dim == MNIST_DIM and r.dim == MNIST_DIM)
    result = {"samples": samples_path, "ref": r.name} | evaluate(
        s, r, names, epsilon=epsilon, max_points=max_points, kid_subset=kid_subset, seed=seed
    )
    write_json_atomic(json_out, result)
    if not quiet:
        for name, m in result["metrics"].items():
            click.echo(f"{name:>9}  {m['value']:.6g}")
