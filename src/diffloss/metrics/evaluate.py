"""Sample quality of a sample set against reference data, with every convention recorded: FID and KID in a
project classifier's feature space for MNIST (28x28 and 14x14) and digits (8x8), Sinkhorn and MMD for any data
(``diffloss eval``)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from diffloss.data import Dataset, load_dataset
from diffloss.data.arrays import notice
from diffloss.device import World
from diffloss.errors import DifflossError, unknown_name
from diffloss.inference import execution_record
from diffloss.metrics.classifier import FEATURE_DIM, classifier_for, get_spec, sha256_file
from diffloss.metrics.distances import mmd, sinkhorn
from diffloss.metrics.fid import classifier_features, classify, fid, kid

if TYPE_CHECKING:
    import torch

METRICS = ("fid", "kid", "sinkhorn", "mmd")
EPSILON_FRACTION = 0.05


def feature_classifier(ref: Dataset) -> str | None:
    """The classifier whose features compare samples with ``ref`` (``classifier_for`` its shape): ``mnist`` for
    D = 784 (28x28), ``mnist14`` for D = 196 (14x14), ``digits`` for 8x8 images (the built-in digits or an 8x8
    image folder; a flat (N, 64) file is not taken for images); None: compare in the data's own coordinates."""
    return classifier_for(ref.shape)


def _subsample(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    return x if len(x) <= k else x[np.sort(rng.choice(len(x), k, replace=False))]


def choose_metrics(names: Sequence[str] | None, image: bool) -> list[str]:
    """``names`` checked against ``METRICS`` (None: all that apply); fid and kid only with a classifier."""
    if names is None:
        return list(METRICS) if image else ["sinkhorn", "mmd"]
    names = list(names)
    for m in names:
        if m not in METRICS:
            raise unknown_name("metric", m, METRICS)
    if not names:
        raise DifflossError("give at least one metric of fid,kid,sinkhorn,mmd")
    if not image and {"fid", "kid"} & set(names):
        raise DifflossError(
            "fid and kid need classifier features: a 28x28 or 14x14 MNIST (D = 784, 196) or 8x8 digits reference; "
            "use --metrics sinkhorn,mmd"
        )
    return names


def evaluate_samples(
    samples: Dataset,
    ref: Dataset,
    metrics: Sequence[str] | None = None,
    *,
    epsilon: float | None = None,
    max_points: int = 1000,
    kid_subset: int = 1000,
    seed: int = 0,
    labels: np.ndarray | None = None,
    device: torch.device | str = "cpu",
    precision: str = "fp32",
    compile: bool = False,
    world: World | None = None,
) -> dict:
    """Compare ``samples`` to ``ref`` with ``metrics`` (None: all that apply) and return a JSON-ready dict:
    ``n_samples``, ``n_ref``, ``dim``, ``feature_space`` and ``metrics`` = {name: {"value", units, conventions}}.

    MNIST-like and digits data are compared in the 128-d feature space of the matching classifier (see
    ``feature_classifier``), other data in its own coordinates. Sinkhorn and MMD use a seeded subsample of at
    most ``max_points`` rows a side; ``epsilon`` defaults to 0.05 * 2 tr Cov(ref features) (the mean squared
    distance between two reference points). KID uses 100 subsets of ``kid_subset`` rows. ``labels`` (N,), the
    class each sample was meant to be (class-conditional sampling), adds ``class_accuracy``: the fraction the
    reference's classifier assigns to that class, overall and per class (MNIST-like and digits data only).

    The classifier runs on ``device`` under ``precision``, compiled with ``compile`` (``diffloss.inference``; the
    metrics themselves are float64 on the host), recorded under ``execution``. ``world``: a torchrun group (every
    rank calls this); the rows of both sets are split over the ranks for the classifier, and every rank computes the
    metrics from all of them (the caller's rank 0 writes them).
    """
    if max_points < 2 or kid_subset < 2:
        raise DifflossError(f"max_points and kid_subset must be >= 2, got {max_points} and {kid_subset}")
    if epsilon is not None and not (epsilon > 0 and np.isfinite(epsilon)):
        raise DifflossError(f"Sinkhorn epsilon must be a finite number > 0, got {epsilon}")
    if samples.dim != ref.dim:
        raise DifflossError(
            f"samples have D = {samples.dim} (shape {samples.shape}) but the reference {ref.name} has D = {ref.dim} "
            f"(shape {ref.shape}); give samples of the reference's shape"
        )
    if samples.n < 2:
        raise DifflossError(f"need at least 2 samples, got {samples.n}")
    classifier = feature_classifier(ref)
    metrics = choose_metrics(metrics, classifier is not None)
    if classifier and float(samples.x.min()) >= 0.0:
        notice(f"{samples.name}: no value below 0, but image samples are compared in [-1, 1]; map [0, 1] by 2x - 1")
    execution = {"device": device, "precision": precision, "compile": compile, "world": world}
    if classifier:
        fx, fy = (classifier_features(d.x, classifier, **execution) for d in (samples, ref))
        sha = sha256_file(get_spec(classifier).asset)
        space = f"{classifier} classifier penultimate layer ({FEATURE_DIM}-d ReLU; weights sha256 {sha})"
        unit = "feature units"
    else:
        fx, fy = samples.x.astype(np.float64), ref.x.astype(np.float64)
        space, unit = f"data coordinates (D = {samples.dim})", "data units"
    out: dict = {"n_samples": samples.n, "n_ref": ref.n, "dim": samples.dim, "feature_space": space, "seed": seed}
    out["execution"] = execution_record(device, precision, compile, world)
    out["metrics"] = {}
    if labels is not None:
        out["metrics"]["class_accuracy"] = class_accuracy(samples.x, labels, classifier, **execution)
    rng = np.random.default_rng(seed)
    if "fid" in metrics:
        out["metrics"]["fid"] = {"value": fid(fx, fy), "units": f"squared {unit}"}
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
                "units": f"squared {unit}",
            }
        if "mmd" in metrics:
            r = mmd(px, py)
            out["metrics"]["mmd"] = {
                "value": r.mmd,
                "mmd2": r.mmd2,
                "bandwidth": r.bandwidth,
                "kernel": "RBF exp(-|a-b|^2 / (2 h^2)), h = median pairwise distance",
                "n_points": [len(px), len(py)],
                "units": f"value = sqrt(max(mmd2, 0)) in {unit}; mmd2 unbiased",
            }
    return out


def class_accuracy(x: np.ndarray, labels: np.ndarray, classifier: str | None, **execution) -> dict:
    """The fraction of samples ``x`` that ``classifier`` assigns to their intended ``labels``, overall
    (``value``) and per class (``per_class``, with counts); ``execution``: see ``classify``."""
    labels = np.asarray(labels)
    if classifier is None:
        raise DifflossError("class accuracy needs a reference with a classifier (MNIST-like or digits data)")
    if labels.shape != (len(x),):
        raise DifflossError(f"{len(labels)} labels for {len(x)} samples; give one intended class per sample")
    hit = classify(x, classifier, **execution) == labels
    classes = np.unique(labels)
    per = {str(int(c)): {"value": float(hit[labels == c].mean()), "n": int((labels == c).sum())} for c in classes}
    return {"value": float(hit.mean()), "per_class": per, "min_per_class": min(v["value"] for v in per.values()),
            "classifier": classifier, "units": "fraction of samples classified as their intended class"}  # fmt: skip


SAMPLE_SEED = 12345
"""Starting noise of ``CheckpointEvaluator``'s samples: every checkpoint is compared on the same noise."""


class CheckpointEvaluator:
    """FID and KID of a ``diffloss train`` checkpoint's samples against a reference set, in the feature space of
    the reference's classifier (``feature_classifier``); the reference features are computed once."""

    def __init__(self, ref: str, device: str | None = None) -> None:
        self.device = device  # where the samples are drawn (``sample_model``'s device; None: the model's)
        data = load_dataset(ref)
        self.classifier = feature_classifier(data)
        if self.classifier is None:
            raise DifflossError(f"reference {ref!r} has no feature classifier; use digits or an MNIST reference")
        self.ref_features = classifier_features(data.images(), self.classifier)

    def __call__(self, ckpt, n: int, sampler: str, steps: int, **sampling) -> dict:
        """``{"fid", "kid", "kid_std", "n_samples", "seconds"}`` of ``n`` samples (seed ``SAMPLE_SEED``) with
        ``sampler`` at ``steps`` steps from the checkpoint's EMA weights; metrics None (JSON null) for non-finite
        samples (a diverged model); ``seconds`` of wall time. ``sampling``: further ``sample_model`` keywords
        (``clip``, ``eta``, ...); a class-conditional model samples the classes in turn (row i is class i mod C,
        guidance 1: the conditional model), every class n // C or n // C + 1 times."""
        import torch

        from diffloss.loader import load_trained
        from diffloss.sample import sample_model

        start = time.perf_counter()
        model = load_trained(ckpt)
        if model.num_classes and "labels" not in sampling:
            sampling["labels"] = torch.arange(n) % model.num_classes
        x = sample_model(model, n, steps=steps, sampler=sampler, seed=SAMPLE_SEED, device=self.device, **sampling)
        x = x.numpy()
        out = {"fid": None, "kid": None, "kid_std": None}
        if np.isfinite(x).all():
            feats = classifier_features(np.clip(x, -1, 1), self.classifier)
            k = kid(feats, self.ref_features, subset_size=min(n, len(self.ref_features), 1000))
            out = {"fid": fid(feats, self.ref_features), "kid": k.mean, "kid_std": k.std}
        return out | {"n_samples": n, "seconds": time.perf_counter() - start}
