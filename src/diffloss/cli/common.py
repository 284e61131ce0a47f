"""Option parsing shared by subcommands: number lists, output paths, JSON echo."""

from __future__ import annotations

import json
import math
from typing import Any

import click

from diffloss.errors import DifflossError


def parse_floats(text: str, option: str, *, positive: bool = False) -> list[float]:
    """A comma-separated list of finite floats (``"0.1,1,10"``); ``positive`` also requires > 0."""
    out = []
    for item in (s.strip() for s in text.split(",")):
        try:
            v = float(item)
        except ValueError:
            raise DifflossError(
                f"{option}: {item!r} is not a number; give a comma-separated list like 0.1,1,10"
            ) from None
        if not math.isfinite(v):
            raise DifflossError(f"{option}: {item!r} is not finite; give finite numbers")
        if positive and v <= 0:
            raise DifflossError(f"{option}: {item!r} must be > 0")
        out.append(v)
    if not out:
        raise DifflossError(f"{option}: give at least one value")
    return out


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


def echo_json(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=2))
