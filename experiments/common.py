"""What every experiment script shares: a timestamped progress line and the command-line entry point."""

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
