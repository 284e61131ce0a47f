"""``diffloss diagnose``: a model's loss per noise level against the optimal loss J*, on the same draws."""

from __future__ import annotations

from pathlib import Path

import click

from diffloss.cli.common import (
    compile_option,
    device_option,
    execution,
    parse_floats,
    precision_option,
    threads_option,
)
from diffloss.device import process_group
from diffloss.diagnose import diagnose
from diffloss.diagnose_output import (
    check_shape,
    diagnosis_labels,
    diagnosis_levels,
    diagnosis_report,
    diagnosis_table,
    plot_diagnosis,
    rows_csv,
)
from diffloss.errors import DifflossError
from diffloss.inference import execution_record
from diffloss.io import write_json_atomic, write_text_atomic
from diffloss.loader import load_diffusers, load_trained
from diffloss.train import train_data


@click.command("diagnose")
@click.option("--ckpt", default=None, help="A `diffloss train` run directory (its checkpoint.safetensors).")
@click.option("--diffusers", "diffusers_dir", default=None, help="A diffusers save_pretrained directory (UNet2DModel "
              "+ DDPMScheduler/EulerDiscreteScheduler config).")  # fmt: skip
@click.option("--data", required=True, help="The model's training data: built-in name, .npy/.npz or image folder.")
@click.option("--sigmas", default=None, help="Comma-separated noise-to-signal ratios s = σ/α.")
@click.option("--levels", type=int, default=None, help="K log-spaced s over [0.002, 80] ∩ the process's range [16].")
@click.option("--queries", type=int, default=1024, show_default=True, help="(x0, ε) draws, the same at every level.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the draws.")
@click.option("--batch", type=int, default=256, show_default=True, help="Model batch size.")
@click.option(
    "--conditional",
    is_flag=True,
    help="A class-conditional model: tell it each query's class and compare with the conditional J* (the "
    "posterior within the class). Uses DATA's labels (mnist, digits, image sub-folders) or --labels.",
)
@click.option("--labels", "labels_file", default=None, help=".npy/.npz of N integer labels of DATA (implies "
              "--conditional).")  # fmt: skip
@click.option("--raw", is_flag=True, help="--ckpt: the raw weights instead of the EMA weights.")
@click.option("--json", "json_out", required=True, type=click.Path(dir_okay=False), help="Write the JSON report here.")
@click.option("--csv", "csv_out", type=click.Path(dir_okay=False), default=None, help="Write a CSV table here.")
@click.option("--plot", "plot_out", type=click.Path(dir_okay=False), default=None, help="Write a PNG plot here.")
@device_option
@precision_option
@threads_option
@compile_option
@click.option("--quiet", is_flag=True, help="No progress bar and no table.")
def command(
    ckpt, diffusers_dir, data, sigmas, levels, queries, seed, batch, conditional, labels_file, raw, json_out,
    csv_out, plot_out, device, precision, threads, compile_net, quiet,
) -> None:  # fmt: skip
    """Compare a trained model's denoising loss with the optimal loss J* level by level.

    At each noise-to-signal ratio s = σ/α the model sees x_t = α·x0 + σ·ε for Q draws (x0 a row of DATA,
    ε ~ N(0, I)); the optimal x0-predictor is the posterior mean over all rows of DATA (float64 sums). Model and
    optimum use the *same* draws, so their difference has its own small standard error. Reported per level,
    as per-dimension MSE in x0 units and in the units of the model's target: the model's loss J_θ, the
    optimal loss J*, the reducible gap J_θ − J* (estimated by E||x̂0 − m||²/D: unbiased, non-negative,
    low-variance) and the gap ratio (J_θ − J*)/J_θ, plus one summary line. If the model's loss is below J*
    by more than 4 standard errors at some level (impossible for a correct comparison: a unit, target or
    timestep convention bug), a warning goes to stderr and the JSON's "warning" is set.

    DATA must be the model's training data in the model's units (built-in image sets are scaled to [-1, 1],
    as `diffloss train` and diffusers pipelines use them). --ckpt uses the EMA weights unless --raw.
    --diffusers models are evaluated at their discrete training steps nearest to the requested s.

    --conditional (a `diffloss train --conditional` run): the model is given each query's class label and the
    optimum is the posterior mean within that class, so J* is the conditional optimal loss (the same as
    `diffloss optimal-loss --conditional`) and the gap is the model's distance to the best class-aware denoiser.
    Without it a conditional model is diagnosed unconditionally (its null label) against the unconditional J*.

    Where it runs: the model on --device (auto: the GPU when CUDA is present, else every CPU core, --threads 0),
    under --precision (bf16 autocast or tf32 for the network; the comparison itself stays float64) and, with
    --compile, compiled by torch.compile. The draws and the optimal posterior means are computed on the CPU in
    float64 whatever the device, so J* does not depend on it. Under torchrun (torchrun --nproc-per-node K -m
    diffloss diagnose ...) each process takes a contiguous 1/K of the blocks of 256 queries, and process 0
    writes the same report a single process writes.

    Example: diffloss diagnose --ckpt runs/digits --data digits --levels 12 --json out/diag.json --plot out/diag.png

    Example: diffloss diagnose --ckpt runs/digits-cond --data digits --conditional --levels 12 --json out/cond.json
    """
    world, where = execution(device, precision, threads)
    if (ckpt is None) == (diffusers_dir is None):
        raise DifflossError("give exactly one of --ckpt DIR and --diffusers DIR")
    if queries < 2 or batch < 1:
        raise DifflossError(f"--queries must be >= 2 and --batch >= 1, got {queries} and {batch}")
    model = load_trained(ckpt, ema=not raw) if ckpt is not None else load_diffusers(diffusers_dir)
    lv = diagnosis_levels(model, parse_floats(sigmas, "--sigmas", positive=True) if sigmas else None, levels)
    ds = train_data(data, labels_file)
    check_shape(ds, model)
    labels = diagnosis_labels(ds, model, conditional or labels_file is not None)
    with process_group(world, where):
        d = diagnose(
            model, ds.x, lv, queries=queries, seed=seed, batch=batch, progress=not quiet and world.is_main,
            labels=labels, device=where, precision=precision, compile=compile_net, world=world,
        )  # fmt: skip
    if not world.is_main:
        return
    source = {
        "source": "ckpt" if ckpt is not None else "diffusers",
        "path": ckpt or diffusers_dir,
        "ema": not raw if ckpt is not None else None,
    }
    doc = diagnosis_report(d, model, ds, source=source, queries=queries, seed=seed,
                           execution=execution_record(where, precision, compile_net, world))  # fmt: skip
    write_json_atomic(json_out, doc)
    if csv_out:
        write_text_atomic(csv_out, rows_csv(doc["levels"]))
    if plot_out:
        title = f"{Path(source['path']).name} on {ds.name}: {model.target.name}, {model.process.name}"
        plot_diagnosis(d, title, plot_out)
    if doc["warning"]:
        click.echo(f"Warning: {doc['warning']}", err=True)
    if not quiet:
        click.echo(diagnosis_table(d, model.target.name))
        click.echo(d.summary())
