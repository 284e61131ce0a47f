"""Data loading: arrays, image folders, built-in MNIST/digits/toy sets. Every loader returns a ``Dataset``
with rows flattened to (N, D) float32, the per-sample shape, optional labels and a content fingerprint."""

from __future__ import annotations

from pathlib import Path

from diffloss.data.arrays import array_to_dataset, load_array_file, load_labels_file
from diffloss.data.builtin import BUILTINS, load_digits_dataset, load_mnist, toy_gmm, toy_moons, toy_rings
from diffloss.data.dataset import Dataset
from diffloss.data.images import load_image_folder
from diffloss.errors import DifflossError

__all__ = [
    "BUILTINS",
    "Dataset",
    "array_to_dataset",
    "load_array_file",
    "load_dataset",
    "load_digits_dataset",
    "load_image_folder",
    "load_labels_file",
    "load_mnist",
    "toy_gmm",
    "toy_moons",
    "toy_rings",
]


def load_dataset(spec: str, *, image_mode: str | None = None, image_size: tuple[int, int] | None = None) -> Dataset:
    """Resolve a data spec: a built-in name (``mnist``, ``mnist:test``, ``mnist14``, ``mnist14:test``,
    ``digits``, ``gmm``, ``moons``, ``rings``), a ``.npy``/``.npz`` file (``file.npz:key`` picks an array), or an
    image folder."""
    if spec in BUILTINS:
        return BUILTINS[spec]()
    path, key = spec.rsplit(":", 1) if ".npz:" in spec else (spec, None)
    p = Path(path)
    if p.is_dir():
        return load_image_folder(p, mode=image_mode, size=image_size)
    if p.exists() or p.suffix in (".npy", ".npz") or "/" in spec:
        return load_array_file(p, key)
    raise DifflossError(
        f"unknown dataset {spec!r}: not a built-in name ({', '.join(BUILTINS)}) and no such file or folder"
    )
