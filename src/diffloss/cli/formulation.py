"""``diffloss formulation``: the unified formulation as a table (alpha, sigma, lambda, t, loss factors)."""

from __future__ import annotations

import click

from diffloss.cli.common import parse_floats
from diffloss.errors import DifflossError
from diffloss.formulation import formulation_table
from diffloss.io import write_json_atomic
from diffloss.levels import log_spaced
from diffloss.process import PROCESSES, get_process
from diffloss.target import TARGETS


@click.command("formulation")
@click.option(
    "--process", "process", default="vp", show_default=True, type=click.Choice(sorted(PROCESSES)), help="Noise process."
)
@click.option("--sigmas", default=None, help="Comma-separated noise-to-signal ratios s = sigma/alpha.")
@click.option("--levels", default=9, show_default=True, help="Without --sigmas: this many log-spaced s in [0.002, 80].")
@click.option(
    "--precond",
    default="none",
    show_default=True,
    help="edm: add EDM's preconditioning coefficients c_skip, c_out, c_in, c_noise at each level.",
)
@click.option("--sigma-data", type=float, default=0.5, show_default=True, help="Data scale sd of --precond edm.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Write the table as JSON here.")
def command(
    process: str, sigmas: str | None, levels: int, precond: str, sigma_data: float, json_out: str | None
) -> None:
    """Print how a noise process and the prediction targets relate at given noise levels.

    For each noise-to-signal ratio s = sigma/alpha: log-SNR lambda = -2 log s, the process time t, alpha(t),
    sigma(t), and for every target (x0, eps, v, score, flow) the factor that turns a per-dimension x0 MSE into
    that target's MSE: (c_x - c_eps*alpha/sigma)^2. E.g. MSE_eps = SNR * MSE_x0.

    With --precond edm, also EDM's preconditioning at --sigma-data sd (Karras et al. 2022, Table 1; the
    denoiser is D = c_skip*x~ + c_out*F(c_in*x~; c_noise) with x~ = x_t/alpha): c_skip = sd^2/(s^2+sd^2),
    c_out = s*sd/sqrt(s^2+sd^2), c_in = 1/sqrt(s^2+sd^2), c_noise = ln(s)/4.

    A level outside the range the process reaches (VP-linear stops at s ~ 150, VE/EDM at s = 80) is
    refused with that range.

    Example: diffloss formulation --process vp-cosine --sigmas 0.01,0.1,1,10

    Example: diffloss formulation --process edm --precond edm --sigma-data 0.5 --sigmas 0.1,1,10 --json f.json
    """
    if sigma_data <= 0:
        raise DifflossError(f"--sigma-data must be > 0, got {sigma_data}")
    s = parse_floats(sigmas, "--sigmas", positive=True) if sigmas else log_spaced(levels)
    rows = formulation_table(process, s, precond, sigma_data)
    if json_out:
        write_json_atomic(json_out, {"process": get_process(process).to_dict(), "levels": rows})
    extra = ["c_skip", "c_out", "c_in", "c_noise"] if precond == "edm" else []
    header = ["s", "lambda", "t", "alpha", "sigma", *TARGETS, *extra]
    click.echo(f"process {get_process(process)}; factors are target MSE / x0 MSE")
    click.echo("".join(f"{h:>12}" for h in header))
    for r in rows:
        vals = [r["nsr"], r["logsnr"], r["t"], r["alpha"], r["sigma"], *(r[f"factor_{n}"] for n in TARGETS)]
        click.echo("".join(f"{v:>12.4g}" for v in [*vals, *(r[k] for k in extra)]))
