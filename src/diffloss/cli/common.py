"""Option parsing shared by subcommands: number lists, output paths, JSON echo, the device options."""

from __future__ import annotations

import json
import math
from typing import Any

import click
import torch

from diffloss.device import PRECISIONS, World, check_precision, resolve_device, set_threads, world_from_env
from diffloss.errors import DifflossError
from diffloss.runs import parse_seeds  # noqa: F401  (the CLI's --seeds)


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


def echo_json(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=2))


def device_option(f):
    """``--device``: see ``diffloss.device.resolve_device``."""
    return click.option(
        "--device",
        default="auto",
        show_default=True,
        help="auto (CUDA when present), cpu, cuda or cuda:N (under torchrun, cuda is the rank's own GPU).",
    )(f)


def precision_option(f):
    """``--precision``: see ``diffloss.device``."""
    return click.option(
        "--precision",
        type=click.Choice(PRECISIONS),
        default="fp32",
        show_default=True,
        help="fp32; tf32 (CUDA matmuls in TensorFloat-32); bf16 (network under bfloat16 autocast, weights fp32).",
    )(f)


def threads_option(f):
    """``--threads``: see ``diffloss.device.set_threads``."""
    return click.option(
        "--threads", type=int, default=0, show_default=True, help="torch CPU threads; 0 = every core of this machine."
    )(f)


def compile_option(f):
    """``--compile``: ``torch.compile`` the network (``DiffusionModel.for_inference``)."""
    return click.option(
        "--compile",
        "compile_net",
        is_flag=True,
        help="torch.compile the network first (a one-off compilation of seconds to minutes; pays on long GPU runs).",
    )(f)


def execution(device: str, precision: str, threads: int) -> tuple[World, torch.device]:
    """This process's torchrun ``World`` and the checked ``--device``, after refusing a ``--precision`` the device
    cannot run and setting the CPU ``--threads``; raises ``DifflossError`` (one line) before anything is written."""
    world = world_from_env()
    where = resolve_device(device, world)
    check_precision(precision, where)
    set_threads(threads)
    return world, where
