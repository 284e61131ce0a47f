"""Loading and validating numeric arrays (``.npy`` / ``.npz``, never with pickle)."""

from __future__ import annotations

import sys
import zipfile
from pathlib import Path

import numpy as np

from diffloss.data.dataset import Dataset
from diffloss.errors import DifflossError

DATA_KEYS = ("x", "X", "data", "images", "arr_0")
LABEL_KEYS = ("y", "Y", "labels", "label", "targets")


def notice(msg: str) -> None:
    """A one-line note on stderr about something the loader decided for the user."""
    print(f"notice: {msg}", file=sys.stderr)


def scale_uint8(x: np.ndarray) -> np.ndarray:
    """uint8 images (0..255) to float32 in [-1, 1] (computed in float64, then rounded once)."""
    return (x.astype(np.float64) / 127.5 - 1.0).astype(np.float32)


def array_to_dataset(arr: np.ndarray, name: str, labels: np.ndarray | None = None) -> Dataset:
    """Validate a raw (N, ...) array and turn it into a Dataset.

    uint8 arrays are images and map to [-1, 1]; other numeric arrays are used as they are (as float32).
    A 1-D array of length N is read as N scalars, i.e. shape (N, 1), with a notice. Refused, with a one-line
    error: non-numeric dtypes, zero rows, a 0-D array, NaN or inf.
    """
    arr = np.asarray(arr)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise DifflossError(f"{name}: dtype {arr.dtype} is not numeric; save the data as a float or uint8 array")
    if np.issubdtype(arr.dtype, np.complexfloating):
        raise DifflossError(f"{name}: complex data is not supported; save real and imaginary parts as features")
    if arr.ndim == 0:
        raise DifflossError(f"{name}: a scalar is not a dataset; save an array of shape (N, ...)")
    if arr.shape[0] == 0:
        raise DifflossError(f"{name}: the array has zero rows; give at least one sample")
    if arr.ndim == 1:
        notice(f"{name}: 1-D array of length {arr.shape[0]} read as {arr.shape[0]} scalar samples, shape (N, 1)")
        arr = arr[:, None]
    notes = []
    if arr.dtype == np.uint8:
        x = scale_uint8(arr)
        notes.append("uint8 images mapped to [-1, 1] as x / 127.5 - 1")
    else:
        if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
            bad = np.argwhere(~np.isfinite(arr))[0]
            raise DifflossError(
                f"{name}: contains NaN or inf (first at index {tuple(int(i) for i in bad)}); "
                "remove or impute those rows"
            )
        x = arr.astype(np.float32)
        if not np.isfinite(x).all():
            raise DifflossError(f"{name}: values overflow float32; rescale the data")
    shape = tuple(int(s) for s in arr.shape[1:])
    return Dataset(np.ascontiguousarray(x.reshape(len(x), -1)), shape, name, labels, str(arr.dtype), tuple(notes))


def _pick(npz: np.lib.npyio.NpzFile, keys: tuple[str, ...]) -> str | None:
    return next((k for k in keys if k in npz.files), None)


def load_array_file(path: str | Path, key: str | None = None) -> Dataset:
    """Load ``.npy`` or ``.npz`` (``allow_pickle=False``). For ``.npz``, the data key is ``key`` if given,
    else the only array, else the first of x/X/data/images/arr_0; labels come from y/Y/labels if present."""
    path = Path(path)
    if not path.exists():
        raise DifflossError(f"data file {str(path)!r} does not exist; check the path")
    if path.suffix not in (".npy", ".npz"):
        raise DifflossError(
            f"{path}: unsupported file type {path.suffix!r}; give a .npy or .npz array or an image folder"
        )
    with open(path, "rb") as f:
        magic = f.read(6)
    if magic != b"\x93NUMPY" and not magic.startswith(b"PK"):
        raise DifflossError(f"{path}: not a .npy/.npz file (bad header); save the array with np.save or np.savez")
    try:
        loaded = np.load(path, allow_pickle=False)
    except ValueError as e:
        if "allow_pickle" in str(e) or "pickle" in str(e).lower():
            raise DifflossError(
                f"{path}: the array needs pickle to load (object dtype), which diffloss refuses for safety; "
                "re-save it as a plain numeric array with np.save/np.savez"
            ) from None
        raise DifflossError(f"{path}: not a valid numpy file ({e})") from None
    except (OSError, EOFError, zipfile.BadZipFile) as e:
        raise DifflossError(f"{path}: could not read the file ({e}); is it a complete .npy/.npz?") from None
    if isinstance(loaded, np.ndarray):
        return array_to_dataset(loaded, path.name)
    with loaded as npz:
        files = list(npz.files)
        if not files:
            raise DifflossError(f"{path}: the .npz holds no arrays")
        data_key = key or (files[0] if len(files) == 1 else _pick(npz, DATA_KEYS))
        if data_key is None or data_key not in files:
            raise DifflossError(
                f"{path}: cannot tell which array is the data (keys: {', '.join(files)}); "
                f"name it as {path}:KEY or store it under 'x'"
            )
        try:
            arr = npz[data_key]
            label_key = _pick(npz, LABEL_KEYS) if len(files) > 1 else None
            labels = npz[label_key] if label_key is not None else None
        except ValueError:
            raise DifflossError(
                f"{path}: the arrays need pickle to load (object dtype), which diffloss refuses for safety; "
                "re-save them as plain numeric arrays"
            ) from None
    ds = array_to_dataset(arr, path.name)
    if labels is not None:
        ds = ds.with_labels(
            labels.reshape(-1).astype(np.int64) if labels.ndim == 2 and labels.shape[1] == 1 else labels
        )
    return ds


def load_labels_file(path: str | Path) -> np.ndarray:
    """A 1-D integer label array from ``.npy`` / ``.npz`` (first label key, else the only array)."""
    path = Path(path)
    if not path.exists():
        raise DifflossError(f"labels file {str(path)!r} does not exist; check the path")
    try:
        loaded = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        raise DifflossError(f"{path}: could not read labels ({e}); give a plain integer .npy array") from None
    if not isinstance(loaded, np.ndarray):
        with loaded as npz:
            k = _pick(npz, LABEL_KEYS) or (npz.files[0] if len(npz.files) == 1 else None)
            if k is None:
                raise DifflossError(f"{path}: no labels array found (keys: {', '.join(npz.files)}); store it as 'y'")
            loaded = npz[k]
    labels = np.asarray(loaded).reshape(-1) if np.asarray(loaded).ndim == 2 and loaded.shape[1] == 1 else loaded
    if labels.ndim != 1 or not (np.issubdtype(labels.dtype, np.integer) or np.issubdtype(labels.dtype, np.floating)):
        raise DifflossError(
            f"{path}: labels must be a 1-D integer array, got shape {labels.shape}, dtype {labels.dtype}"
        )
    if np.issubdtype(labels.dtype, np.floating):
        if not np.all(np.isfinite(labels)) or not np.all(labels == np.round(labels)):
            raise DifflossError(f"{path}: labels must be whole numbers (class ids)")
    return labels.astype(np.int64)
