"""The in-memory dataset type every loader returns."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from diffloss.errors import DifflossError


@dataclass(frozen=True)
class Dataset:
    """N samples flattened to (N, D) float32 rows, with the per-sample ``shape`` kept for un-flattening.

    ``x`` holds the data exactly as the optimal loss and training see it (already scaled: images to
    [-1, 1]). ``labels`` is an (N,) int64 array or None. ``notes`` records what the loader did to the raw
    data (scaling, reshaping), for reports.
    """

    x: np.ndarray
    shape: tuple[int, ...]
    name: str
    labels: np.ndarray | None = None
    source_dtype: str = "float32"
    notes: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if self.x.ndim != 2 or self.x.shape[1] != int(np.prod(self.shape)):
            raise ValueError(f"Dataset.x must be (N, prod(shape)); got {self.x.shape} for shape {self.shape}")
        if self.labels is not None and len(self.labels) != len(self.x):
            raise DifflossError(
                f"{len(self.labels)} labels for {len(self.x)} rows of {self.name}; give exactly one label per row"
            )

    @property
    def n(self) -> int:
        return self.x.shape[0]

    @property
    def dim(self) -> int:
        return self.x.shape[1]

    def images(self) -> np.ndarray:
        """The data in its original per-sample shape, (N, *shape)."""
        return self.x.reshape(self.n, *self.shape)

    @cached_property
    def fingerprint(self) -> str:
        """A content hash (16 hex digits) of the scaled data, its shape and its labels: a cache key."""
        h = hashlib.sha256()
        h.update(repr((self.x.shape, self.shape)).encode())
        h.update(np.ascontiguousarray(self.x, dtype=np.float32).tobytes())
        if self.labels is not None:
            h.update(np.ascontiguousarray(self.labels, dtype=np.int64).tobytes())
        return h.hexdigest()[:16]

    @cached_property
    def variance(self) -> np.ndarray:
        """The per-dimension variance (D,) of the rows, float64, computed once."""
        return self.x.astype(np.float64).var(axis=0)

    def with_labels(self, labels: np.ndarray) -> Dataset:
        labels = np.asarray(labels)
        if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
            raise DifflossError(
                f"labels must be a 1-D integer array, got shape {labels.shape} and dtype {labels.dtype}"
            )
        return Dataset(self.x, self.shape, self.name, labels.astype(np.int64), self.source_dtype, self.notes)

    def subset(self, idx: np.ndarray | slice) -> Dataset:
        """Rows ``idx`` (labels follow)."""
        labels = None if self.labels is None else self.labels[idx]
        return Dataset(self.x[idx], self.shape, self.name, labels, self.source_dtype, self.notes)

    def info(self) -> dict:
        """Summary statistics (plain JSON types)."""
        var = self.variance
        out = {
            "name": self.name,
            "n": self.n,
            "shape": list(self.shape),
            "dim": self.dim,
            "source_dtype": self.source_dtype,
            "min": float(self.x.min()),
            "max": float(self.x.max()),
            "mean": float(self.x.mean(dtype=np.float64)),
            "variance_per_dim": float(var.mean()),
            "variance_total": float(var.sum()),
            "fingerprint": self.fingerprint,
            "labels": None,
            "notes": list(self.notes),
        }
        if self.labels is not None:
            classes, counts = np.unique(self.labels, return_counts=True)
            out["labels"] = {"n_classes": len(classes), "counts": {int(c): int(k) for c, k in zip(classes, counts)}}
        return out
