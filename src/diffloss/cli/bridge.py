"""``diffloss bridge``: train and evaluate diffusion bridge samplers (DIS, DBS, CMCD) on unnormalized targets."""

from __future__ import annotations

import click
from click.core import ParameterSource

from diffloss.bridge import (
    BRIDGE_SAMPLERS,
    SAMPLING_TARGETS,
    evaluate_checkpoint,
    make_config,
    train_bridge,
)
from diffloss.bridge.bench import DEFAULT_LOSSES, DEFAULT_TARGETS
from diffloss.bridge.bench.benchmark import run_benchmark
from diffloss.bridge.presets import TABLE_PRESETS, describe_preset, preset_options
from diffloss.cli.common import device_option, echo_json, parse_seeds
from diffloss.errors import DifflossError
from diffloss.io import write_json_atomic


def _widths(text: str) -> tuple[int, ...]:
    try:
        widths = tuple(int(w) for w in text.split(","))
    except ValueError:
        raise DifflossError(f"--hidden: {text!r} is not a list of layer widths like 64,64") from None
    if not widths or min(widths) < 1:
        raise DifflossError(f"--hidden: layer widths must be >= 1, got {text!r}")
    return widths


@click.group("bridge")
def command() -> None:
    """Diffusion bridge samplers for unnormalized densities (Sanokowski et al. 2025, arXiv 2506.10982).

    A sampler moves samples from a learned diagonal-Gaussian prior to the target in K Euler-Maruyama steps. R is the
    log Radon-Nikodym derivative of the forward path against the (unnormalized) backward path; ELBO = -mean R,
    log Z_hat = logsumexp(-R) - log B, ESS = normalized effective sample size of the weights exp(-R).

    Example: diffloss bridge train --target funnel --sampler cmcd --loss rkl-ld --iters 500 --out runs/funnel
    """


# train options that a preset sets (make_config names); given explicitly, they override it. --fixed-sigma sets
# learn_sigma.
PRESET_OPTIONS = (
    "steps",
    "iters",
    "batch",
    "lr",
    "lr_floor",
    "init_std",
    "init_sigma",
    "score_gate",
    "network",
    "dbs_networks",
    "annealed_gate",
    "separate_chains",
    "interpol_lr",
    "eval_every",
)


def _train_options(o: dict) -> dict:
    """The make_config options of ``bridge train``: with a preset, the preset's under the options given
    explicitly; without one, every option."""
    options = {name: o[name] for name in PRESET_OPTIONS} | {"learn_sigma": not o["fixed_sigma"]}
    if not o["preset"]:
        return options
    source = click.get_current_context().get_parameter_source
    given = {n for n in PRESET_OPTIONS if source(n) is not ParameterSource.DEFAULT}
    if source("fixed_sigma") is not ParameterSource.DEFAULT:
        given.add("learn_sigma")
    return preset_options(o["preset"], o["target"], o["sampler"], o["loss"], **{k: options[k] for k in given})


@command.command("train")
@click.option(
    "--target", required=True, help=f"Sampling target (unnormalized density): {', '.join(sorted(SAMPLING_TARGETS))}."
)
@click.option(
    "--sampler",
    default=None,
    help="dis (fixed noising backward), dbs (both learned), cmcd (annealed). [required; with --preset: cmcd]",
)
@click.option("--loss", default="rkl-ld", show_default=True, help="rkl-r | lv | rkl-ld | tb (learned log Z).")
@click.option(
    "--preset",
    type=click.Choice(list(TABLE_PRESETS)),
    default=None,
    help="paper: the reference's best run for (target, sampler, loss) (sebaleh87/dds_optim, Configs/Sweeps/"
    "BestRunsSweeps; table in diffloss.bridge.presets): K=128, 40k iterations, batch 2000 (LGCP 300), its lr with "
    "cosine decay to lr/10 in three optimizer chains, prior std, per-step noise, score gate, rKL-R with frozen "
    "diffusion. medium: the same with 200 iterations (evaluated every 25). Flags given explicitly override it; "
    "--dry-run prints it with the file of every value.",
)
@click.option("--dry-run", is_flag=True, help="Print the configuration (and the preset's sources) and exit.")
@click.option("--iters", default=1000, show_default=True, help="Optimization steps.")
@click.option("--batch", default=256, show_default=True, help="Trajectories per step (>= 2).")
@click.option("--steps", default=128, show_default=True, help="K, the Euler-Maruyama steps from t=0 to t=1.")
@click.option("--seed", default=0, show_default=True, help="Seed of the network initialisation and all sampling.")
@click.option("--lr", default=1e-3, show_default=True, help="RAdam learning rate (cosine decay, clip norm 1).")
@click.option(
    "--lr-floor", default=0.0, show_default=True, help="The cosine decay ends at lr-floor * lr (paper preset: 0.1)."
)
@click.option("--hidden", default="64,64", show_default=True, help="Hidden widths of the control MLP.")
@click.option(
    "--network",
    type=click.Choice(["mlp", "pis"]),
    default="mlp",
    show_default=True,
    help="Control network: mlp (sinusoidal time features + MLP) or pis (the reference's PISgradnet shape: Fourier "
    "time embedding, state MLP, time gate; --hidden = n_hidden x num_layers, equal widths; paper preset: pis).",
)
@click.option(
    "--dbs-networks",
    type=click.IntRange(1, 2),
    default=1,
    show_default=True,
    help="DBS: 1 network with 2d outputs for both drifts, or 2 separate forward and backward networks (paper preset).",
)
@click.option(
    "--annealed-gate/--target-gate",
    default=False,
    show_default=True,
    help="DIS/DBS with --score-gate: gate the annealed score (linear schedule) instead of the target score (paper "
    "preset for DBS); CMCD always gates its annealed score.",
)
@click.option(
    "--separate-chains/--one-chain",
    default=False,
    show_default=True,
    help="Three optimizer chains (network, SDE parameters, CMCD schedule at --interpol-lr), each clipped at 1 on its "
    "own, as the reference (paper preset); else one chain over all parameters.",
)
@click.option(
    "--interpol-lr", type=float, default=None, help="lr of CMCD's schedule chain (--separate-chains). [default: --lr]"
)
@click.option("--init-std", type=float, default=None, help="Initial prior std. [default: the target's suggestion]")
@click.option(
    "--init-sigma",
    type=float,
    default=None,
    help="Initial diffusion coefficient (per dimension). [default: 1; CMCD: sqrt(2 K s) for a target with a suggested"
    " Langevin step s (german_credit, gmm40), which keeps the Euler step stable]",
)
@click.option(
    "--fixed-sigma/--learn-sigma", default=False, show_default=True, help="Do not learn the diffusion coefficient."
)
@click.option(
    "--score-gate/--no-score-gate",
    default=False,
    show_default=True,
    help="Give the control network the score as an input gated by a learned function of time, c(t) * grad log p"
    " (target score for dis/dbs, annealed score for cmcd), as in the PIS/DIS/CMCD reference networks.",
)
@device_option
@click.option("--eval-every", default=100, show_default=True, help="Evaluate into DIR/metrics.jsonl every k steps.")
@click.option("--eval-n", default=2000, show_default=True, help="Fresh trajectories per evaluation.")
@click.option(
    "--ckpt-every",
    default=100,
    show_default=True,
    help="Also save the checkpoint every k steps (0: only at evaluations); a diverged run keeps the last one.",
)
@click.option("--out", "out", type=click.Path(file_okay=False), help="Run directory DIR (required unless --dry-run).")
@click.option("--resume", is_flag=True, help="Continue from DIR/checkpoint.safetensors if it exists.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def train_command(**o) -> None:
    """Train a bridge sampler and write DIR/metrics.json.

    DIR/metrics.json holds the final "elbo", "log_z" (log Z_hat), "log_z_error" (log Z_hat - log Z where log Z is
    known), "ess", "sinkhorn" (entropic OT cost with squared Euclidean cost; its eps in "sinkhorn_eps"), "mmd" (RBF,
    median heuristic), "emc" (entropic mode coverage, mixtures only), "iterations", "diverged_at" (null unless a
    non-finite loss, R or parameter, or an exploded ELBO, stopped the run; then the last good checkpoint is kept and
    evaluated), "divergence" (why) and "best" (the evaluation of the best-ELBO checkpoint, DIR/best.safetensors).
    ELBO and log Z_hat are in nats and come from the same fresh trajectories. DIR also gets config.json,
    metrics.jsonl (one evaluation every --eval-every steps, with sigma and the CMCD beta schedule) and
    checkpoint.safetensors (the last good state, checksummed; --resume continues it bit-identically on the same
    device).

    Example: diffloss bridge train --target gmm40 --sampler cmcd --loss rkl-ld --iters 2000 --batch 256 --steps 128
    --seed 0 --out runs/gmm40_cmcd

    Example: diffloss bridge train --preset paper --target seeds --loss lv --dry-run
    """
    if o["sampler"] is None:
        if not o["preset"]:
            raise DifflossError("--sampler is required (dis, dbs or cmcd) unless --preset is given")
        o["sampler"] = "cmcd"
    options = _train_options(o)
    cfg = make_config(
        o["target"],
        o["sampler"],
        hidden=_widths(o["hidden"]),
        loss=o["loss"],
        seed=o["seed"],
        eval_n=o["eval_n"],
        ckpt_every=o["ckpt_every"],
        **options,
    )
    if o["dry_run"]:
        if o["preset"]:
            click.echo(f"preset {o['preset']} for {o['target']} / {o['sampler']} / {o['loss']} (sebaleh87/dds_optim):")
            for line in describe_preset(o["preset"], o["target"], o["sampler"], o["loss"]):
                click.echo(f"  {line}")
        echo_json(cfg.to_dict())
        return
    if not o["out"]:
        raise DifflossError("--out is required (the run directory) unless --dry-run")
    echo_json(train_bridge(cfg, o["out"], resume=o["resume"], quiet=o["quiet"], device=o["device"]))


@command.command("eval")
@click.option("--ckpt", required=True, type=click.Path(file_okay=False), help="Run directory written by train.")
@click.option("--n", "n", default=2000, show_default=True, help="Fresh trajectories.")
@click.option("--seed", default=12345, show_default=True, help="Seed of the fresh trajectories.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Also write the result here.")
@click.option("--best", is_flag=True, help="Evaluate DIR/best.safetensors, the state of the best evaluated ELBO.")
def eval_command(ckpt: str, n: int, seed: int, json_out: str | None, best: bool) -> None:
    """Re-evaluate the last good checkpoint of a run (--best: its best-ELBO one) on N fresh trajectories (same
    metrics as train).

    Example: diffloss bridge eval --ckpt runs/funnel --n 5000
    """
    result = evaluate_checkpoint(ckpt, n, seed, best)
    if json_out:
        write_json_atomic(json_out, result)
    echo_json(result)


def _names(text: str, option: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise DifflossError(f"{option}: give a comma-separated list of names, got {text!r}")
    return names


@command.command("bench")
@click.option(
    "--preset", "preset_name", default="small", show_default=True, help="Budget: small | medium | paper | smoke."
)
@click.option("--targets", default=",".join(DEFAULT_TARGETS), show_default=True, help="Targets, in run order.")
@click.option("--samplers", default=",".join(BRIDGE_SAMPLERS), show_default=True, help="Samplers.")
@click.option(
    "--losses", default=",".join(DEFAULT_LOSSES), show_default=True, help="Bridge losses, some of the defaults."
)
@click.option("--seeds", default=None, help="Seeds, e.g. 0,1,2. [default: the preset's, 0,1,2]")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False), help="Root of the run directories.")
@click.option(
    "--report",
    type=click.Path(dir_okay=False),
    default=None,
    help="Markdown report. [default: DIR/bridge_benchmark.md]",
)
@click.option("--report-only", is_flag=True, help="Do not train; report the cells finished so far.")
@device_option
@click.option("--quiet", is_flag=True, help="No progress bar.")
def bench_command(**o) -> None:
    """Run the bridge-sampler benchmark grid (targets x samplers x losses x seeds) and write its report.

    Every cell is one `diffloss bridge train` run (same training function), in DIR/<target>/<sampler>/<loss>/seed<k>/.
    Resumable: cells with a metrics.json are skipped, an interrupted cell continues from its checkpoint, and DIR
    remembers its preset (another budget in the same DIR is refused). A run that hits a non-finite value stops there
    and its cell reports "diverged at <iteration>"; a cell whose training raises gets DIR/.../failed.json and is
    retried by the next run. Then the report: mean ± std over seeds of ELBO, log Z_hat (nats), ESS and, where the
    target has reference samples, Sinkhorn and MMD, beside reference ELBOs (each labelled with its source) and our log
    Z estimates; also a CSV and an ELBO plot beside the markdown. Cells not finished yet are marked "not run yet".
    Exit code 1 (after the report) when a cell failed.

    Presets: `small` fits a 2-core CPU machine (2000 iterations, batch 64, K=32; LGCP 1000 iterations of batch 16;
    5.88 CPU hours for the full grid, measured); `paper` is the reference's configuration of every cell (its best
    run per target, sampler and loss, as `bridge train --preset paper`; CMCD and DBS, rkl-ld, lv and rkl-r only:
    40k iterations, batch 2000, K=128) for a GPU machine (--device cuda), do not start it on this machine;
    `medium` is `paper` with 200 iterations, evaluated every 25 (`bridge train --preset medium`; 4-7 CPU
    minutes per Seeds run);
    `smoke` (2 iterations, batch 4, K=4) only checks the pipeline.

    Example: diffloss bridge bench --preset small --targets german_credit,seeds --out runs/bench
    --report reports/bridge_benchmark.md
    """
    seeds = parse_seeds(o["seeds"]) if o["seeds"] is not None else None
    targets, samplers, losses = (_names(o[k], f"--{k}") for k in ("targets", "samplers", "losses"))
    result = run_benchmark(
        o["preset_name"],
        targets,
        samplers,
        losses,
        o["out"],
        seeds=seeds,
        report=o["report"],
        report_only=o["report_only"],
        quiet=o["quiet"],
        device=o["device"],
    )
    echo_json(result.to_dict())
    if result.failed:
        raise click.ClickException(
            f"{len(result.failed)} of {result.cells} cells failed (see failed.json in their run directories)"
        )
