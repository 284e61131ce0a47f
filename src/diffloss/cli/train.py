"""``diffloss train``: train a denoiser with a chosen process, target, weighting and level density."""

from __future__ import annotations

import sys

import click

from diffloss.classes import num_classes_of
from diffloss.cli.common import compile_option, device_option, precision_option, threads_option
from diffloss.cli.common import execution as execution_of
from diffloss.models import PRESETS, backbone_config
from diffloss.objective import build_objective
from diffloss.precond import check_precond, default_recipe
from diffloss.process import PROCESSES, process_from_spec
from diffloss.train import Execution, TrainConfig, train, train_data


@click.command("train")
@click.option("--data", required=True, help="Built-in name (digits, mnist, gmm, ...), .npy/.npz file or image folder.")
@click.option(
    "--process",
    default="vp-cosine",
    show_default=True,
    help=f"Noise process, NAME[:key=value,...]: {', '.join(sorted(PROCESSES))} (e.g. vp:discrete=true, DDPM's "
    "T = 1000 chain, which the ddpm sampler needs).",
)
@click.option(
    "--target", default=None, help="Prediction target: x0, eps, v, score, flow. Default: eps (x0 with --process edm)."
)
@click.option(
    "--weighting",
    default=None,
    help="Loss weight on the target's MSE, NAME[:key=value,...] (e.g. min-snr:gamma=5, debiased, edm, optimal), "
    "defined in x0 units. Default: constant:on=TARGET, the plain MSE of the target (edm with --process edm).",
)
@click.option(
    "--density",
    default="default",
    show_default=True,
    help="Level density, NAME[:key=value,...] (uniform-t, edm-lognormal, logit-normal, uniform-logsnr, optimal); "
    "'default' is the process's usual one (edm-lognormal for edm, uniform-t otherwise).",
)
@click.option(
    "--precond",
    default=None,
    help="Network preconditioning: none (the network predicts its raw target) or edm (Karras et al. 2022: "
    "D = c_skip*x~ + c_out*F(c_in*x~; c_noise), F trained on its effective target). Default: edm with --process "
    "edm, else none.",
)
@click.option(
    "--optimal-loss",
    "optimal_loss",
    type=click.Path(dir_okay=False),
    default=None,
    help="J* of DATA: a `diffloss optimal-loss --json` report. Used by the optimal weighting/density (default for "
    "those: computed at training start by the exact estimator, 32 levels, cached) and, with any objective, to log "
    "loss_floor and reducible_loss.",
)
@click.option("--steps", type=int, required=True, help="Total optimizer updates (with --resume: the new total).")
@click.option("--batch", type=int, default=64, show_default=True, help="Batch size (at most the number of samples).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of initialization, data order and noise.")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False), help="Output directory.")
@click.option("--resume", is_flag=True, help="Continue from OUT/checkpoint.safetensors (same config required).")
@click.option("--overwrite", is_flag=True, help="Replace the outputs of an earlier run in OUT.")
@click.option(
    "--backbone",
    default="auto",
    show_default=True,
    help="unet (diffusers UNet2DModel), mlp, or auto: the UNet for (C, H, W) images, else the MLP.",
)
@click.option("--preset", default="tiny", show_default=True, help=f"UNet size preset: {', '.join(PRESETS)}.")
@click.option("--channels", type=int, default=None, help="UNet base width (multiple of 8; default: the preset's).")
@click.option("--width", type=int, default=256, show_default=True, help="MLP hidden width.")
@click.option("--depth", type=int, default=3, show_default=True, help="MLP residual blocks.")
@click.option("--lr", type=float, default=2e-4, show_default=True, help="AdamW peak learning rate.")
@click.option("--warmup", type=int, default=200, show_default=True, help="Linear learning-rate warm-up (updates).")
@click.option("--weight-decay", type=float, default=0.0, show_default=True, help="AdamW weight decay.")
@click.option("--ema-decay", type=float, default=0.999, show_default=True, help="EMA decay (capped early on).")
@click.option("--grad-clip", type=float, default=1.0, show_default=True, help="Gradient-norm clip (0 = off).")
@click.option(
    "--sigma-data",
    type=float,
    default=0.5,
    show_default=True,
    help="Data scale sigma_data of c_in, of --precond edm and of the default EDM weight of --process edm.",
)
@click.option("--ckpt-every", type=int, default=500, show_default=True, help="Checkpoint interval (updates).")
@click.option("--log-every", type=int, default=25, show_default=True, help="metrics.jsonl interval (updates).")
@click.option("--eval-every", type=int, default=0, show_default=True, help="EMA eval-loss interval (0 = off).")
@threads_option
@device_option
@precision_option
@compile_option
@click.option(
    "--conditional",
    is_flag=True,
    help="Class-conditional training on DATA's labels (mnist, digits, image sub-folders, or --labels), for "
    "classifier-free guidance at sampling.",
)
@click.option(
    "--labels", "labels_file", default=None, help=".npy/.npz of N integer labels of DATA (implies --conditional)."
)
@click.option(
    "--label-dropout",
    type=float,
    default=None,
    help="--conditional: probability in [0, 1) that a sample's label is replaced by the null label [0.1].",
)
@click.option("--quiet", is_flag=True, help="No progress bar.")
def command(
    data, process, target, weighting, density, precond, optimal_loss, steps, batch, seed, out, resume, overwrite,
    backbone, preset, channels, width, depth, lr, warmup, weight_decay, ema_decay, grad_clip, sigma_data, ckpt_every,
    log_every, eval_every, conditional, labels_file, label_dropout, threads, device, precision, compile_net, quiet,
) -> None:  # fmt: skip
    """Train a denoiser on DATA and write OUT/{config.json, metrics.jsonl, checkpoint.safetensors}.

    Each update draws a batch (shuffled epochs), noise levels from --density and noise, forms
    x_t = alpha*x0 + sigma*eps and minimizes the mean over the batch of w(lambda) * (per-dimension MSE of the
    --target prediction), w given by --weighting for that target. The network is conditioned on
    c_noise = ln(s)/4, s = sigma/alpha, and sees c_in*x~ with x~ = x_t/alpha (EDM-style; see
    diffloss.models.Denoiser). AdamW with linear warm-up, gradient-norm clipping and an EMA copy of the weights
    (used by `diffloss sample`).

    --precond edm (Karras et al. 2022, Table 1, for every process) makes the network F of
    D = c_skip*x~ + c_out*F(c_in*x~; c_noise); the model's output is the --target prediction that D implies, so the
    logged loss is still w * (target MSE) = w_x0 * (x0 MSE of D) = w_x0 * c_out^2 * (MSE of F against its
    effective target (x0 - c_skip*x~)/c_out). --process edm trains with EDM's full recipe unless told otherwise:
    --precond edm, --target x0, --weighting edm (1/c_out^2 in x0 units) and --density edm-lognormal, i.e. exactly
    EDM's loss. config.json records the resolved choices.

    metrics.jsonl gets a line every --log-every updates: step, loss, loss per log-SNR bucket, lr, grad_norm,
    time (s), samples_per_sec; when J* of DATA is known (--optimal-loss, or the optimal weighting/density) also
    loss_floor, the lowest mean loss this objective allows on DATA, and reducible_loss = loss - loss_floor.
    The same --seed gives the same numbers; a run killed and continued with
    --resume ends with exactly the weights of an uninterrupted run. --resume may raise --steps; any other
    changed option is refused with the list of differing keys.

    The optimal-loss-based objective of Xu et al. 2025 (`--weighting optimal --density optimal`): weight
    a*min(1/J*, w_max) plus a Gaussian bump in ln s below s*, and levels drawn in proportion to the weighted
    gap w*(J_theta - J*) between the model's tracked per-level loss and the optimal loss J* of DATA
    (parameters: diffloss.optimal_weight, diffloss.density.OptimalDensity). J* comes from --optimal-loss or is
    computed once (exact estimator, cached by the data fingerprint).

    Class conditioning (--conditional): the network also gets a learned embedding of the class label, one
    extra null label (= number of classes) being the unconditional token; each sample's label becomes the null
    label with probability --label-dropout (drawn from the noise generator, so runs stay reproducible), so one
    network learns the conditional and the unconditional denoiser that `diffloss sample --class C --guidance W`
    combines.

    Devices (--device, --precision, --threads, --compile): see diffloss.device. A bit-exact --resume needs the same
    device and thread count as the interrupted run; a checkpoint still loads on any device (GPU-trained runs resume
    or sample on a CPU).

    Data-parallel training: torchrun --nproc-per-node N -m diffloss train ... runs N processes (gloo on CPU, NCCL
    on CUDA, each rank on its own GPU); --batch is the global batch, split evenly over the ranks (it must divide),
    and the N processes make the same updates as one process with the same --batch. Rank 0 writes OUT. --resume
    needs the same N. Multi-node: torchrun --nnodes M --node-rank R --rdzv-endpoint HOST:PORT --nproc-per-node N.

    Example: diffloss train --data digits --process vp-cosine --target eps --steps 3000 --batch 64 --seed 0
    --out runs/digits

    Example: diffloss train --data digits --weighting optimal --density optimal:buckets=16 --steps 3000
    --out runs/digits-optimal

    Example (EDM's recipe): diffloss train --data digits --process edm --steps 3000 --out runs/digits-edm

    Example (flow matching, SD3 time density, preconditioned): diffloss train --data digits --process flow
    --target flow --density logit-normal --precond edm --steps 3000 --out runs/digits-fm

    Example (class-conditional, for guidance): diffloss train --data mnist --conditional --label-dropout 0.1
    --steps 6000 --out runs/mnist-cond
    """
    from diffloss.device import process_group, set_matmul_precision

    world, where = execution_of(device, precision, threads)
    run_on = Execution(where, precision, compile_net, world)
    set_matmul_precision(precision)
    proc = process_from_spec(process)
    recipe = default_recipe(proc.name, sigma_data)
    target = recipe["target"] if target is None else target
    weighting = recipe["weighting"] if weighting is None else weighting
    precond = check_precond(recipe["precond"] if precond is None else precond)
    ds = train_data(data, labels_file)
    conditional = conditional or labels_file is not None
    num_classes = num_classes_of(ds.labels, repr(data)) if conditional else 0  # checked before any J* is computed
    label_dropout = (0.1 if conditional else 0.0) if label_dropout is None else label_dropout
    objective = build_objective(
        target, weighting, density, proc, ds, optimal_loss=optimal_loss,
        label_dropout=label_dropout if conditional else None, progress=not quiet,
    )  # fmt: skip
    cfg = TrainConfig(
        data=data,
        process=proc.to_dict(),
        target=objective.target.name,
        weighting=objective.weighting.to_dict(),
        density=objective.density.to_dict(),
        backbone=backbone_config(backbone, ds.shape, preset, channels, width, depth),
        steps=steps,
        batch=batch,
        seed=seed,
        lr=lr,
        warmup=warmup,
        weight_decay=weight_decay,
        ema_decay=ema_decay,
        grad_clip=grad_clip,
        sigma_data=sigma_data,
        precond=precond,
        ckpt_every=ckpt_every,
        log_every=log_every,
        eval_every=eval_every,
        conditional=conditional,
        labels=labels_file,
        num_classes=num_classes,
        label_dropout=label_dropout,
    )
    from tqdm import tqdm

    bar = tqdm(total=steps, file=sys.stderr, disable=quiet or not world.is_main, unit="step", dynamic_ncols=True)

    def progress(run, loss: float | None) -> None:
        if loss is not None:
            bar.set_postfix(loss=f"{loss:.4g}", refresh=False)
        bar.update(run.step - bar.n)

    try:
        with process_group(world, where):
            run = train(
                cfg, out, resume=resume, overwrite=overwrite, progress=progress, data=ds, jstar=objective.jstar,
                execution=run_on,
            )  # fmt: skip
    finally:
        bar.close()
    if world.is_main:
        click.echo(f"trained {run.step} steps; checkpoint in {out}/checkpoint.safetensors")
