"""The plumbing of an experiment script: a progress line, the entry point, the options every experiment has, and
the ``--seeds`` option."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
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


def parse_seeds(text: str, option: str = "--seeds", allowed: Iterable[int] | None = None) -> list[int]:
    """A comma-separated list of distinct non-negative integer seeds (``"0,1,2"``), in the order given; with
    ``allowed`` (a preset's seeds) each must be one of them."""
    items = [s.strip() for s in text.split(",") if s.strip()]
    if not items:
        raise DifflossError(f"{option}: give a comma-separated list of seeds like 0,1,2, got {text!r}")
    try:
        seeds = [int(s) for s in items]
    except ValueError:
        raise DifflossError(f"{option}: {text!r} is not a list of integers like 0,1,2") from None
    if len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise DifflossError(f"{option}: give distinct non-negative integers, got {text!r}")
    if allowed is not None:
        allowed = list(allowed)
        if not set(seeds) <= set(allowed):
            raise DifflossError(f"{option}: give some of the preset's seeds {allowed}, got {text!r}")
    return seeds


def experiment_parser(
    doc: str,
    name: str,
    presets: Iterable[str],
    reports: Path,
    *,
    runs_option: str = "--root",
    preset_default: str | None = None,
) -> argparse.ArgumentParser:
    """A parser (described by the first paragraph of ``doc``) with the options of every experiment script:
    ``--preset`` (required unless ``preset_default``), the directory of the runs (``runs_option``), ``--report``
    (default: ``report_path``), ``--report-only`` and ``--threads``. The script adds its own options."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument(
        "--preset",
        choices=sorted(presets),
        required=preset_default is None,
        default=preset_default,
        help="experiment size (see the docstring)",
    )
    ap.add_argument(runs_option, type=Path, required=True, help="directory of the runs (outside the repo)")
    ap.add_argument("--report", type=Path, default=None, help=f"markdown report (default {reports}/{name}[_PRESET].md)")
    ap.add_argument("--report-only", action="store_true", help="only regenerate the report from the finished runs")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (keep it fixed across resumes)")
    ap.add_argument(
        "--device",
        default=None,
        help="where runs train, sample and diagnose: cpu, cuda, cuda:N or auto (CUDA when present); default cpu, "
        "and auto for --preset gpu (a run resumes bit for bit only on the device it started on)",
    )
    return ap


def parse_experiment_args(ap: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse ``argv`` with an ``experiment_parser``, fix torch's CPU threads to ``--threads`` (a run's numbers may
    depend on the thread count, so keep it fixed across resumes) and resolve ``--device`` to a ``torch.device``
    (``diffloss.device.resolve_device``: a device this machine lacks is a one-line error); without ``--device``, the
    CPU, or ``auto`` for the preset named ``gpu``, so a CPU preset's runs never move to a GPU unasked."""
    args = ap.parse_args(argv)
    import torch

    from diffloss.device import resolve_device

    torch.set_num_threads(args.threads)
    args.device = resolve_device(args.device or ("auto" if getattr(args, "preset", None) == "gpu" else "cpu"))
    return args


def report_path(args: argparse.Namespace, reports: Path, name: str, main_preset: str = "digits") -> Path:
    """``--report``, or ``reports/NAME.md`` for the main preset and ``reports/NAME_PRESET.md`` for the others."""
    return args.report or reports / f"{name}{'' if args.preset == main_preset else '_' + args.preset}.md"
