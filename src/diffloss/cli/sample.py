"""``diffloss sample``: draw samples from a trained run."""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np

from diffloss.classes import class_labels
from diffloss.cli.common import compile_option, device_option, execution, precision_option, threads_option
from diffloss.errors import DifflossError
from diffloss.io import atomic_write
from diffloss.sample import SAMPLERS, STEP_SPACINGS, Churn


@click.command("sample")
@click.option("--ckpt", required=True, type=click.Path(), help="Run directory of `diffloss train` (or its checkpoint).")
@click.option(
    "-n", "--n", "n", type=int, default=64, show_default=True, help="Number of samples (write -n N under torchrun)."
)
@click.option("--steps", type=int, default=40, show_default=True, help="Sampler steps (heun/dpm2/edm: ~2 calls each).")
@click.option("--sampler", default="heun", show_default=True, help=f"One of: {', '.join(SAMPLERS)}.")
@click.option(
    "--spacing",
    default=None,
    help=f"Step levels: {', '.join(STEP_SPACINGS)}. Default: karras; respaced (the only one they take) for ddpm.",
)
@click.option("--eta", type=float, default=0.0, show_default=True, help="ddim only: 0 deterministic, 1 DDPM.")
@click.option("--s-churn", type=float, default=0.0, show_default=True, help="edm only: S_churn (0: Heun).")
@click.option("--s-tmin", type=float, default=0.0, show_default=True, help="edm only: churn only where s >= S_tmin.")
@click.option(
    "--s-tmax", type=float, default=float("inf"), show_default=True, help="edm only: churn only where s <= S_tmax."
)
@click.option("--s-noise", type=float, default=1.0, show_default=True, help="edm only: noise inflation S_noise.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of every random number (see below).")
@click.option(
    "--batch", type=int, default=256, show_default=True, help="Samples integrated at once (per process under torchrun)."
)
@click.option("--no-ema", is_flag=True, help="Use the raw weights instead of the EMA weights.")
@click.option(
    "--clip-x0",
    "clip_x0",
    type=float,
    default=None,
    help="Clamp every x0 estimate to [-C, C] (DDPM's clip_denoised; 1 for images in [-1, 1]). Default: off.",
)
@click.option(
    "--class",
    "class_spec",
    default=None,
    help="A class-conditional run: sample class C (0-based), or 'all' for N/K samples of each of the K classes "
    "in class order (the PNG grid has one row per class). Default: unconditional.",
)
@click.option(
    "--guidance",
    type=float,
    default=None,
    help="With --class: guidance weight W >= 0, D = D_uncond + W*(D_cond - D_uncond); 0 unconditional, "
    "1 conditional [1].",
)
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False), help="Output .npy file.")
@device_option
@precision_option
@threads_option
@compile_option
@click.option("--quiet", is_flag=True, help="No progress bar.")
def command(
    ckpt, n, steps, sampler, spacing, eta, s_churn, s_tmin, s_tmax, s_noise, seed, batch, no_ema, clip_x0, class_spec,
    guidance, out, device, precision, threads, compile_net, quiet,
) -> None:  # fmt: skip
    """Sample a trained denoiser and write OUT (.npy, shape (N, *sample shape), float32).

    Integrates the probability-flow ODE on the noise-to-signal axis s = sigma/alpha from s_max (80, or
    the process's maximum) to 0 over --steps step levels (--spacing; Karras rho = 7 by default), with the
    network's prediction turned into an x0 estimate (diffloss.sample). Samples are in the data's scaled units (images
    in [-1, 1]), in the original per-sample shape. For image data (C, H, W) with 1 or 3 channels a PNG grid
    is written next to OUT (same name, .png; images smaller than 32 pixels enlarged by pixel
    repetition). Deterministic given --seed; EMA weights unless --no-ema. --clip-x0 1 clamps the x0 estimate
    of every step to the image range (off by default: the clamped x0 predictor is no longer the model's).

    Samplers (diffloss.sample): euler, heun (EDM's Algorithm 1), dpm2, ddim (--eta), and the papers' stochastic
    ones. edm is EDM's Algorithm 2 (Karras et al. 2022): on steps with S_tmin <= s <= S_tmax, noise first raises s
    by the factor 1 + min(S_churn/steps, sqrt(2)-1) (times S_noise), then a Heun step follows. The defaults are
    Algorithm 2's neutral values: S_churn = 0 is exactly heun. EDM's ImageNet-64 settings: --s-churn 40 --s-tmin
    0.05 --s-tmax 50 --s-noise 1.003 (with --steps 256). ddpm is DDPM's ancestral sampler with the posterior
    variance beta tilde ("fixed small"; ddpm-large: beta, "fixed large") on the model's discrete T-step VP chain
    respaced to --steps evenly spaced steps (Nichol & Dhariwal); it needs a discrete VP process (vp or vp-cosine
    with discrete=True). As DDPM and guided-diffusion sample images: --sampler ddpm --clip-x0 1.

    A class-conditional run (`diffloss train --conditional`) samples class C with --class C, every class with
    --class all (the requested class of every sample also goes to OUT.labels.npy, for `diffloss eval
    --labels`), and unconditionally (its null label) without --class. --guidance W is classifier-free guidance
    in x0 space, D_W = D_uncond + W*(D_cond - D_uncond), for every sampler: W = 0 is the unconditional model,
    W = 1 (the default) the conditional one, W > 1 strengthens the class (Ho & Salimans' w is W - 1).

    Where it runs: --device auto (the default) samples on the GPU when CUDA is present, else on every CPU core
    (--threads 0). --precision bf16 runs the network under bfloat16 autocast (the sampler's state stays float32),
    tf32 lets a GPU's matmuls use TensorFloat-32; --compile compiles the network with torch.compile first. The
    random numbers are drawn on the CPU from --seed alone: the starting noise of all N samples from one torch
    generator, the per-step noise of a stochastic sampler from one stream per sample (numpy default_rng([seed,
    i]) for sample i). So a seed gives the same samples on a CPU, on a GPU, with any --batch and on any number of
    processes, up to floating-point rounding. Under torchrun (torchrun --nproc-per-node K -m diffloss sample ...)
    each of the K processes integrates a contiguous 1/K of the N samples (on its own GPU with CUDA; gloo on CPUs),
    and process 0 gathers them and writes OUT. Write the number of samples as -n N there: torchrun's own argument
    parser takes --n for an abbreviation of its options and stops.

    Example: diffloss sample --ckpt runs/digits --n 64 --steps 40 --sampler heun --seed 0 --out digits.npy

    Example: diffloss sample --ckpt runs/digits --n 64 --steps 64 --sampler edm --s-churn 40 --s-tmin 0.05
    --s-tmax 50 --s-noise 1.003 --out digits-edm.npy

    Example: diffloss sample --ckpt runs/ddpm --n 64 --steps 100 --sampler ddpm --clip-x0 1 --out ddpm.npy

    Example: diffloss sample --ckpt runs/mnist-cond --class all --n 100 --guidance 2 --out mnist-classes.npy

    Example (4 GPUs, bf16): torchrun --nproc-per-node 4 -m diffloss sample --ckpt runs/cifar -n 50000 --batch 500
    --precision bf16 --out cifar.npy
    """
    from diffloss.data.images import image_grid
    from diffloss.device import process_group
    from diffloss.loader import load_trained
    from diffloss.sample import sample_model

    world, where = execution(device, precision, threads)
    out_path = Path(out)
    if out_path.suffix != ".npy":
        raise DifflossError(f"--out must end in .npy, got {out!r}")
    if steps < 1:
        raise DifflossError(f"--steps must be >= 1, got {steps}")
    churn = Churn(s_churn=s_churn, s_tmin=s_tmin, s_tmax=s_tmax, s_noise=s_noise)
    if guidance is not None and class_spec is None:
        raise DifflossError("--guidance applies to class-conditional sampling: add --class C or --class all")
    if guidance is not None and not guidance >= 0:
        raise DifflossError(f"--guidance must be >= 0 (0 = unconditional, 1 = conditional), got {guidance}")
    model = load_trained(ckpt, ema=not no_ema)
    labels = None
    if class_spec is not None:
        if not model.num_classes:
            raise DifflossError(f"--ckpt {ckpt} was trained unconditionally (without --conditional): drop --class")
        labels = class_labels(class_spec, n, model.num_classes)
    with process_group(world, where):
        x = sample_model(
            model, n, steps=steps, sampler=sampler, seed=seed, spacing=spacing, eta=eta, batch=batch,
            progress=not quiet and world.is_main, clip=clip_x0, labels=labels,
            guidance=1.0 if guidance is None else guidance, churn=churn, device=where, precision=precision,
            compile=compile_net, world=world,
        ).numpy()  # fmt: skip
    if not world.is_main:
        return
    if not np.isfinite(x).all():
        raise DifflossError("the samples contain NaN or inf; the model may have diverged, try the EMA weights")
    atomic_write(out_path, lambda tmp: np.save(tmp, x))
    msg = f"wrote {n} samples of shape {tuple(model.shape)} to {out_path}"
    if labels is not None:  # what each sample was asked to be: `diffloss eval --labels` scores it
        labels_path = out_path.with_suffix(".labels.npy")
        atomic_write(labels_path, lambda tmp: np.save(tmp, labels.numpy().astype(np.int64)))
        msg += f", their classes to {labels_path}"
    if len(model.shape) == 3 and model.shape[0] in (1, 3):
        from PIL import Image

        png = out_path.with_suffix(".png")
        cols = n // model.num_classes if class_spec == "all" else None  # one row per class
        atomic_write(
            png,
            lambda tmp: Image.fromarray(image_grid(x, cols, scale=max(1, round(32 / model.shape[1])))).save(
                tmp, format="PNG"
            ),
        )
        msg += f" and a grid to {png}"
    click.echo(msg)
