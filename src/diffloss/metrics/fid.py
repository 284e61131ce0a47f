"""FID and KID between two sets of feature vectors, and features from the project's own classifiers.

Feature arrays are (N, F). The Frechet distance is in squared feature units; KID is the unbiased MMD^2 with
the cubic polynomial kernel k(a, b) = (a.b / F + 1)^3 of Binkowski et al. (2018), averaged over random
subsets (reported as mean and standard deviation over subsets, not divided by anything).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np
import torch

from diffloss.device import World
from diffloss.errors import DifflossError
from diffloss.inference import Network, prepare_network
from diffloss.metrics.classifier import as_images, get_spec, load_classifier, run_batches
from diffloss.shards import gather_rows, rank_rows


def _features(f: np.ndarray, name: str) -> np.ndarray:
    f = np.asarray(f, dtype=np.float64)
    if f.ndim != 2 or len(f) < 2:
        raise DifflossError(f"{name}: features must be (N, F) with N >= 2, got shape {f.shape}")
    if not np.isfinite(f).all():
        raise DifflossError(f"{name}: features contain NaN or inf (non-finite inputs?); check the samples")
    return f


def gaussian_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (F,) and unbiased covariance (F, F) of (N, F) features, in float64."""
    f = _features(features, "features")
    return f.mean(0), np.cov(f, rowvar=False)


def _sqrt_psd(a: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric positive semi-definite matrix (eigenvalues clipped at 0)."""
    w, v = np.linalg.eigh((a + a.T) / 2)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance(mu1: np.ndarray, cov1: np.ndarray, mu2: np.ndarray, cov2: np.ndarray) -> float:
    """||mu1 - mu2||^2 + tr(C1) + tr(C2) - 2 tr((C1^1/2 C2 C1^1/2)^1/2), the squared 2-Wasserstein distance
    between N(mu1, C1) and N(mu2, C2). Both square roots are taken by symmetric eigendecompositions, so the
    trace term is real and stable even for singular covariances (no complex parts to discard)."""
    s1 = _sqrt_psd(cov1)
    cross = np.linalg.eigvalsh(s1 @ cov2 @ s1)
    tr_sqrt = float(np.sqrt(np.clip(cross, 0.0, None)).sum())
    d = float(((mu1 - mu2) ** 2).sum()) + float(np.trace(cov1) + np.trace(cov2)) - 2.0 * tr_sqrt
    return max(d, 0.0)


def fid(features_x: np.ndarray, features_y: np.ndarray) -> float:
    """Frechet distance between Gaussians fitted to two (N, F) feature sets."""
    return frechet_distance(*gaussian_stats(features_x), *gaussian_stats(features_y))


@dataclass(frozen=True)
class KIDResult:
    mean: float
    std: float
    subset_size: int
    subsets: int


def polynomial_mmd2(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 between (m, F) and (n, F) with k(a, b) = (a.b / F + 1)^3 (diagonals excluded)."""
    d = x.shape[1]
    kxx, kyy, kxy = ((a @ b.T / d + 1.0) ** 3 for a, b in ((x, x), (y, y), (x, y)))
    m, n = len(x), len(y)
    return float(
        (kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1)) - 2 * kxy.mean()
    )


def kid(
    features_x: np.ndarray, features_y: np.ndarray, *, subset_size: int = 1000, subsets: int = 100, seed: int = 0
) -> KIDResult:
    """Kernel Inception Distance: ``subsets`` times, draw ``subset_size`` rows (without replacement) from each
    side and take the unbiased polynomial-kernel MMD^2; report the mean and standard deviation over subsets.
    ``subset_size`` is capped at the smaller set's size."""
    x, y = _features(features_x, "features_x"), _features(features_y, "features_y")
    if x.shape[1] != y.shape[1]:
        raise DifflossError(f"feature dimensions differ: {x.shape[1]} vs {y.shape[1]}")
    if subsets < 1:
        raise DifflossError(f"KID needs at least one subset, got {subsets}")
    m = min(subset_size, len(x), len(y))
    rng = np.random.default_rng(seed)
    vals = [
        polynomial_mmd2(x[rng.choice(len(x), m, replace=False)], y[rng.choice(len(y), m, replace=False)])
        for _ in range(subsets)
    ]
    return KIDResult(float(np.mean(vals)), float(np.std(vals)), m, subsets)


@cache
def _network(name: str, what: str, device: torch.device, precision: str, compile: bool) -> Network:
    """The committed classifier ``name``'s features (``what`` = "features") or logits, ready on ``device``."""
    model = load_classifier(name).to(device)
    return prepare_network(model.features if what == "features" else model, device, precision, compile)


def classifier_outputs(
    images: np.ndarray,
    classifier: str = "mnist",
    what: str = "features",
    *,
    device: torch.device | str = "cpu",
    precision: str = "fp32",
    compile: bool = False,
    world: World | None = None,
) -> np.ndarray:
    """A committed classifier's penultimate features (N, 128) or logits (N, 10), float32, for images in [-1, 1]
    (``mnist``: (N, 1, 28, 28) or (N, 784); ``mnist14``: (N, 1, 14, 14) or (N, 196); ``digits``: (N, 1, 8, 8) or
    (N, 64)), computed on ``device`` under
    ``precision`` (``diffloss.inference``). ``world``: a torchrun group (every rank calls this); each rank computes
    its ``rank_rows`` and every rank returns all N."""
    world, device = world or World(), torch.device(device)
    rows = rank_rows(len(images), world)
    net = _network(classifier, what, device, precision, compile)
    local = run_batches(net, as_images(images[rows.start : rows.stop], get_spec(classifier).size), device)
    return gather_rows(local, world).cpu().numpy()


def classifier_features(images: np.ndarray, classifier: str = "mnist", **execution) -> np.ndarray:
    """Penultimate features (N, 128) of a committed classifier; ``execution``: see ``classifier_outputs``."""
    return classifier_outputs(images, classifier, "features", **execution)


def classify(images: np.ndarray, classifier: str = "mnist", **execution) -> np.ndarray:
    """Predicted classes (N,) of a committed classifier (arg-max logit), as in ``classifier_outputs``."""
    return classifier_outputs(images, classifier, "logits", **execution).argmax(1)
