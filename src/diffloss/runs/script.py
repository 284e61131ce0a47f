"""The plumbing of an experiment script: a progress line, the entry point, and the ``--seeds`` option."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import NoReturn

from diffloss.errors import DifflossError


def log(msg: str) -> None:
    """One progress line on stderr, prefixed by the wall-clock time."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def run_cli(main: Callable[[], int]) -> NoReturn:
    """Exit with ``main()``'s status; a ``DifflossError`` becomes a one-line ``Error:`` and exit status 2."""
    try:
        sys.exit(main())
    except DifflossError as e:
        print(f"Error: {e}", file=sys.stderr)
        sys.exit(2)


def parse_seeds(text: str, option: str = "--seeds") -> list[int]:
    """A comma-separated list of distinct non-negative integer seeds (``"0,1,2"``), in the order given."""
    items = [s.strip() for s in text.split(",") if s.strip()]
    if not items:
        raise DifflossError(f"{option}: give a comma-separated list of seeds like 0,1,2, got {text!r}")
    try:
        seeds = [int(s) for s in items]
    except ValueError:
        raise DifflossError(f"{option}: {text!r} is not a list of integers like 0,1,2") from None
    if len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise DifflossError(f"{option}: give distinct non-negative integers, got {text!r}")
    return seeds
