"""Checkpoints: one safetensors file of named tensors plus JSON metadata, written atomically and checksummed.

The file's metadata holds ``{"diffloss": JSON}`` where the JSON carries the caller's ``meta`` and a SHA-256
of every tensor (names sorted, dtype, shape and bytes), so a truncated or corrupted file is refused on load
instead of silently resuming from garbage.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch

from diffloss.errors import DifflossError
from diffloss.io import atomic_write

FORMAT = 1


def tensor_digest(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 over the tensors in name order: name, dtype, shape, then the raw bytes."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def save_checkpoint(path: str | os.PathLike, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> Path:
    """Write ``tensors`` (contiguous CPU copies) and JSON-serializable ``meta`` to ``path`` atomically."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}
    header = {"format": FORMAT, "sha256": tensor_digest(tensors), "meta": meta}
    text = json.dumps(header, allow_nan=False)
    return atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata={"diffloss": text}))


def load_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors, meta) from a file written by ``save_checkpoint``; a one-line ``DifflossError`` if the file
    is missing, truncated, corrupted or not a diffloss checkpoint."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise DifflossError(f"checkpoint {str(path)!r} does not exist; train first or check the path")
    bad = f"checkpoint {str(path)!r} is truncated or corrupt"
    try:
        with safe_open(str(path), framework="pt") as f:
            text = (f.metadata() or {}).get("diffloss")
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
    except Exception as e:  # safetensors raises its own error types (and OSError) for malformed files
        raise DifflossError(f"{bad} ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    if text is None:
        raise DifflossError(f"{path} is a safetensors file but not a diffloss checkpoint (no 'diffloss' metadata)")
    try:
        header = json.loads(text)
        digest, meta, fmt = header["sha256"], header["meta"], header["format"]
    except (ValueError, KeyError, TypeError):
        raise DifflossError(f"{bad} (unreadable metadata)") from None
    if fmt != FORMAT:
        raise DifflossError(f"checkpoint {str(path)!r} has format {fmt}; this diffloss reads format {FORMAT}")
    if tensor_digest(tensors) != digest:
        raise DifflossError(f"{bad} (checksum mismatch)")
    return tensors, meta
