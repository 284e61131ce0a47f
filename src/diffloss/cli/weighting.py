"""``diffloss weighting``: loss weights of published schemes for any target, as numbers or a plot."""

from __future__ import annotations

from typing import Any

import click

from diffloss.cli.common import parse_floats
from diffloss.config import parse_spec
from diffloss.density import density_from_spec
from diffloss.errors import DifflossError
from diffloss.io import write_json_atomic
from diffloss.process import PROCESSES, process_from_spec
from diffloss.target import TARGETS, get_target
from diffloss.weighting import WEIGHTINGS, Weighting, get_weighting, weighting_params
from diffloss.weighting_report import plot_schemes, weighting_table


def build_schemes(specs: tuple[str, ...], options: dict[str, Any]) -> list[Weighting]:
    """Schemes from ``name[:key=value,...]`` specs (each may be a comma list), with ``--gamma`` etc. applied to
    every scheme that has that parameter (a spec's own value wins)."""
    parsed = []
    for text in specs:
        for item in _split_specs(text):
            parsed.append(parse_spec(item))
    if not parsed:
        raise DifflossError("give at least one --scheme")
    for opt, value in options.items():
        if value is not None and not any(opt in weighting_params(name) for name, _ in parsed):
            names = ", ".join(name for name, _ in parsed)
            raise DifflossError(f"--{opt.replace('_', '-')} does not apply to scheme(s) {names}")
    schemes = []
    for name, params in parsed:
        own = weighting_params(name)
        extra = {k: v for k, v in options.items() if v is not None and k in own and k not in params}
        schemes.append(get_weighting(name, **params, **extra))
    return schemes


def _split_specs(text: str) -> list[str]:
    """``"p2:k=1,gamma=0.5,debiased"`` -> ["p2:k=1,gamma=0.5", "debiased"] (key=value items join the spec before)."""
    out: list[str] = []
    for item in (s.strip() for s in text.split(",")):
        if "=" in item and ":" not in item and out:
            out[-1] += "," + item
        elif item:
            out.append(item)
    return out


@click.command("weighting")
@click.option(
    "--scheme",
    "schemes",
    multiple=True,
    required=True,
    help=f"Weighting scheme NAME[:key=value,...]; repeat or give a comma list. One of: {', '.join(WEIGHTINGS)}.",
)
@click.option("--process", default="vp", show_default=True, help=f"Noise process: {', '.join(PROCESSES)}.")
@click.option(
    "--target",
    default="eps",
    show_default=True,
    help=f"Target whose per-dimension MSE is weighted: {', '.join(TARGETS)}.",
)
@click.option("--logsnr", default=None, help="Comma-separated log-SNRs λ = log(α²/σ²), e.g. --logsnr=-5,0,5.")
@click.option("--gamma", type=float, default=None, help="γ of min-snr (5), soft-min-snr (4), p2 (1).")
@click.option("--k", type=float, default=None, help="k of p2 (1).")
@click.option("--sigma-data", type=float, default=None, help="σ_data of edm (0.5).")
@click.option("--bias", type=float, default=None, help="b of sigmoid (0).")
@click.option("--on", default=None, help="Target on which constant puts weight 1 (x0).")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Write the weights as JSON (one scheme).")
@click.option("--plot", "plot_out", type=click.Path(dir_okay=False), help="Draw the schemes against λ (PNG, PDF).")
@click.option(
    "--density",
    default=None,
    help="Level density NAME[:key=value,...] (uniform-t, edm-lognormal, logit-normal, uniform-logsnr, or "
    "'default' for the process's own); adds the implied weight p(λ)·w(λ) to --plot and --json.",
)
@click.option("--range", "lam_range", default="-12,12", show_default=True, help="λ range of --plot (clipped).")
def command(schemes, process, target, logsnr, gamma, k, sigma_data, bias, on, json_out, plot_out, density, lam_range):
    """Print the loss weight of a scheme for a target at given log-SNRs, exactly the published formula.

    Each scheme is one function of λ on the x0 MSE, w_x0(λ); on the per-dimension MSE of target T its weight is
    w_x0 / factor_T with factor_T = MSE_T / MSE_x0 (SNR for eps, SNR+1 for v on VP, 1/t² for flow). So min-snr
    (γ=5) on v is min(SNR,5)/(SNR+1), debiased on the flow velocity is t(1-t). Nothing is normalized. Schemes:
    constant, snr, truncated-snr (max(SNR,1)), min-snr, soft-min-snr, p2, edm, debiased (1/√SNR on ε), sigmoid
    (VDM++). A log-SNR the process never reaches is refused with its range.

    --plot draws several schemes as x0-equivalent weights against λ and, with --density, Kingma & Gao's implied
    weight 2·p(λ)·w_ε(λ) per unit λ (normalized to unit area for comparison).

    Example: diffloss weighting --scheme min-snr --process vp --target v --logsnr=-5,0,5 --json w.json
    """
    proc, target = process_from_spec(process), get_target(target).name
    options = {"gamma": gamma, "k": k, "sigma_data": sigma_data, "bias": bias, "on": on}
    weightings = build_schemes(schemes, options)
    dens = density_from_spec(density, proc) if density else None
    if logsnr is None and not plot_out:
        raise DifflossError("give --logsnr=L1,L2,... (and/or --plot FILE)")
    if json_out and len(weightings) != 1:
        raise DifflossError("--json takes exactly one scheme; run once per scheme (--plot takes several)")
    if json_out and logsnr is None:
        raise DifflossError("--json needs --logsnr=L1,L2,...")
    tables = []
    if logsnr is not None:
        lams = parse_floats(logsnr, "--logsnr")
        tables = [weighting_table(w, proc, target, lams, dens) for w in weightings]
    if plot_out:
        bounds = parse_floats(lam_range, "--range")
        p_lo, p_hi = dens.support(proc) if dens else proc.logsnr_range()
        lo, hi = (max(bounds[0], p_lo), min(bounds[-1], p_hi)) if len(bounds) == 2 else (0.0, 0.0)
        if not lo < hi:
            raise DifflossError(
                f"--range: give LO,HI with LO < HI overlapping the log-SNR range [{p_lo:.4g}, {p_hi:.4g}] of the "
                f"process (and density); got {lam_range!r}"
            )
        plot_schemes(plot_out, weightings, proc, dens, (lo, hi))
    if json_out:
        write_json_atomic(json_out, tables[0])
    for table in tables:
        click.echo(f"{table['scheme']} ({table['formula']}) on target {table['target']}, process {proc}:")
        for lam, w in zip(table["logsnr"], table["weights"]):
            click.echo(f"  λ = {lam:>8.4g}   w = {w:.6g}")
    if plot_out:
        click.echo(f"wrote {plot_out}")
