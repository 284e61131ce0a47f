"""A lock against two processes working on one run directory at once.

The lock is the file ``DIR/.lock`` created with ``O_CREAT | O_EXCL`` (atomic on a local file system) and holding
the pid of its owner. A lock whose pid is no longer alive (a killed run) is stale and taken over; a live one makes
``cell_lock`` raise ``CellLocked``, a one-line ``DifflossError``. Locks are per host: a pid names a process here.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from diffloss.errors import DifflossError

LOCK_FILE = ".lock"


class CellLocked(DifflossError):
    """Another live process holds the run directory."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def _holder(lock: Path) -> int | None:
    """The pid in the lock file, None when it is empty or unreadable (a writer killed between create and write)."""
    try:
        return int(lock.read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return None


def acquire(directory: str | os.PathLike) -> Path:
    """Take ``directory/.lock`` for this process (the directory is created); returns the lock's path.

    Raises ``CellLocked`` when a live process (this one included) holds it; a lock of a dead pid is taken over."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    lock = directory / LOCK_FILE
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            pid = _holder(lock)
            if pid is not None and _alive(pid):
                raise CellLocked(f"{directory} is being run by process {pid}; wait for it or stop it") from None
            lock.unlink(missing_ok=True)  # stale: its process is gone
            continue
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(str(os.getpid()))
        return lock
    raise CellLocked(f"{directory}: another process took the lock at the same moment; try again")


@contextmanager
def cell_lock(directory: str | os.PathLike) -> Iterator[Path]:
    """Hold ``directory/.lock`` for the ``with`` block (see ``acquire``); it is removed on the way out."""
    lock = acquire(directory)
    try:
        yield lock
    finally:
        lock.unlink(missing_ok=True)
