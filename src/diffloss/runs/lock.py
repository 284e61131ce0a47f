"""A lock against two processes working on one run directory at once.

The lock is an exclusive ``fcntl.flock`` on the open file ``DIR/.lock``, held for as long as the run holds the
directory. The operating system releases it when its process ends, however it ends, so a lock left by a killed run
is simply taken over: staleness needs no guessing from pids. The file holds the owner's pid, for the error message
only. A held lock makes ``acquire`` raise ``CellLocked``, a one-line ``DifflossError``. POSIX only; locks are
per host (``flock`` is not reliable across a network file system).

The owner removes the file on release while still holding the lock; a process that locked the old file meanwhile
sees that the path no longer names the file it locked and tries again, so one path never has two holders.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from diffloss.errors import DifflossError

LOCK_FILE = ".lock"
_ATTEMPTS = 100  # lockings lost to a release's removal in a row before giving up (each is a rare race)

_held: dict[Path, int] = {}  # lock path -> the open descriptor holding its flock


class CellLocked(DifflossError):
    """Another process (or this one, through another ``acquire``) holds the run directory."""


def _holder(lock: Path) -> int | None:
    """The pid in the lock file, None when it is empty or unreadable (its owner has not written it yet)."""
    try:
        return int(lock.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _same_file(fd: int, lock: Path) -> bool:
    """Whether ``lock`` still names the file open at ``fd`` (not removed, nor replaced, by a releasing owner)."""
    try:
        here = os.stat(lock)
    except FileNotFoundError:
        return False
    there = os.fstat(fd)
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


def acquire(directory: str | os.PathLike) -> Path:
    """Take ``directory/.lock`` for this process (the directory is created) until ``release``; returns its path.

    Raises ``CellLocked`` when it is held, by another process or by this one; a lock file left by a process that
    died is taken over."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    lock = directory / LOCK_FILE
    for _ in range(_ATTEMPTS):
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            pid = _holder(lock)
            owner = f"process {pid}" if pid is not None else "another process"
            raise CellLocked(f"{directory} is being run by {owner}; wait for it or stop it") from None
        except BaseException:
            os.close(fd)
            raise
        if not _same_file(fd, lock):  # its owner removed it between our open and our flock: lock the new one
            os.close(fd)
            continue
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        _held[lock] = fd
        return lock
    raise CellLocked(f"{directory}: the lock kept changing hands; try again")


def release(lock: Path) -> None:
    """Give up a lock taken by ``acquire``: its file is removed (while still locked), then the lock dropped."""
    fd = _held.pop(lock, None)
    if fd is None:
        return
    try:
        if _same_file(fd, lock):
            lock.unlink(missing_ok=True)
    finally:
        os.close(fd)  # drops the flock


@contextmanager
def cell_lock(directory: str | os.PathLike) -> Iterator[Path]:
    """Hold ``directory/.lock`` for the ``with`` block (see ``acquire``); it is released and removed on the way
    out."""
    lock = acquire(directory)
    try:
        yield lock
    finally:
        release(lock)
