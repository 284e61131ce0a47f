"""A results cache for optimal-loss curves, keyed by the data fingerprint and every setting that changes them.

Files live under ``$DIFFLOSS_CACHE`` (default ``~/.cache/diffloss``) in ``optimal_loss/<key>.json``; each
holds ``OptimalLossResult.to_dict()``. Settings that do not change the numbers (workers, chunking, memory,
process, target) are not part of the key: the curve is stored in x0 units and converted on the way out. The key
policy lives in one place, ``diffloss.optimal.estimate.optimal_loss``.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from diffloss.io import write_json_atomic
from diffloss.optimal.result import OptimalLossResult

CACHE_VERSION = 3  # 2: upper95 and data fields, one near-duplicate rule; 3: upper95 tightened by monotonicity


def cache_dir() -> Path:
    return Path(os.environ.get("DIFFLOSS_CACHE") or Path.home() / ".cache" / "diffloss") / "optimal_loss"


def cache_key(fingerprint: str, settings: dict[str, Any]) -> str:
    """A 24-hex-digit key for data ``fingerprint`` and JSON-serializable ``settings``."""
    text = json.dumps({"version": CACHE_VERSION, "data": fingerprint, **settings}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def load_cached(key: str) -> OptimalLossResult | None:
    """The cached result for ``key``, or None (also for an unreadable entry, which is then ignored)."""
    path = cache_dir() / f"{key}.json"
    try:
        return OptimalLossResult.from_dict(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def store_cached(key: str, result: OptimalLossResult) -> None:
    write_json_atomic(cache_dir() / f"{key}.json", result.to_dict())
