"""``diffloss eval``: sample quality against reference data, without downloads (FID, KID, Sinkhorn, MMD)."""

from __future__ import annotations

import click

from diffloss.cli.common import compile_option, device_option, execution, precision_option, threads_option
from diffloss.data import load_dataset, load_labels_file
from diffloss.device import process_group
from diffloss.io import write_json_atomic


@click.command("eval")
@click.option(
    "--samples",
    "samples_path",
    required=True,
    help="Samples: .npy/.npz of the reference's shape, (N, 784), (N, 196) or (N, 64) rows allowed.",
)
@click.option("--ref", required=True, help="Reference data: mnist:test, mnist14:test, digits, gmm, ... or a .npy/.npz.")
@click.option(
    "--metrics", default=None, help="Comma-separated subset of fid,kid,sinkhorn,mmd. [default: all that apply]"
)
@click.option(
    "--epsilon",
    type=float,
    default=None,
    help="Sinkhorn epsilon, in squared units of the compared space. [default: 0.05 * 2 tr Cov(ref)]",
)
@click.option(
    "--max-points", default=1000, show_default=True, help="Sinkhorn and MMD use at most this many points a side."
)
@click.option("--kid-subset", default=1000, show_default=True, help="KID subset size (100 subsets).")
@click.option("--seed", default=0, show_default=True, help="Seed of the subsampling and the KID subsets.")
@click.option(
    "--labels",
    "labels_file",
    default=None,
    help="The intended class of every sample (.npy; `diffloss sample --class` writes OUT.labels.npy): adds "
    "class_accuracy, the fraction the reference's classifier assigns to it.",
)
@click.option("--json", "json_out", type=click.Path(dir_okay=False), required=True, help="Write the results here.")
@device_option
@precision_option
@threads_option
@compile_option
@click.option("--quiet", is_flag=True, help="Print nothing on success.")
def command(
    samples_path: str,
    ref: str,
    metrics: str | None,
    epsilon: float | None,
    max_points: int,
    kid_subset: int,
    seed: int,
    labels_file: str | None,
    json_out: str,
    device: str,
    precision: str,
    threads: int,
    compile_net: bool,
    quiet: bool,
) -> None:
    """Measure how close SAMPLES are to REF, with no downloaded network.

    Samples are floats in [-1, 1] (uint8 files are mapped to [-1, 1]). Against an MNIST-like reference (28x28,
    D = 784; or 14x14, D = 196, such as mnist14:test) or the 8x8 digits (REF digits or an 8x8 image folder),
    all metrics are computed in the 128-d penultimate feature space of the project's own classifier for that
    data (committed weights; test accuracy 99.3% on MNIST test, 99.1% on MNIST test at 14x14, 99.2% on 360
    held-out digits): FID (Frechet distance of fitted Gaussians, squared
    feature units), KID (unbiased MMD^2, cubic polynomial kernel, mean and std over 100 subsets; not scaled by
    1000), Sinkhorn and MMD. For other data (toy sets, any (N, D) array) only Sinkhorn and MMD apply, in the
    data's own coordinates.

    Sinkhorn is the debiased Sinkhorn divergence with squared-Euclidean cost (squared units, no square root)
    at the given epsilon; MMD uses the RBF kernel with the median-heuristic bandwidth and reports the unbiased
    MMD^2 and sqrt(max(MMD^2, 0)). Both use a seeded subsample of at most --max-points points a side.
    The JSON records every convention, the sample counts and the feature space.

    Where it runs: the feature classifier on --device (auto: the GPU when CUDA is present, else every CPU core,
    --threads 0), under --precision (bf16 autocast changes the features in their third significant digit; fp32 is
    the default and the reference) and, with --compile, compiled by torch.compile; the metrics are float64 on the
    CPU. The JSON's "execution" records device, precision, compile and the process count. Under torchrun
    (torchrun --nproc-per-node K -m diffloss eval ...) each process extracts the features of a contiguous 1/K of
    the samples and of the reference, and process 0 writes the JSON, the same as a single process's.

    Example: diffloss eval --samples samples.npy --ref mnist:test --json eval.json

    Example (class-conditional samples): diffloss eval --samples s.npy --labels s.labels.npy --ref mnist:test
    --json eval.json
    """
    from diffloss.metrics.evaluate import evaluate_samples

    world, where = execution(device, precision, threads)
    s, r = load_dataset(samples_path), load_dataset(ref)
    labels = None if labels_file is None else load_labels_file(labels_file)
    names = None if metrics is None else [m.strip() for m in metrics.split(",") if m.strip()]
    with process_group(world, where):
        result = {"samples": samples_path, "ref": r.name} | evaluate_samples(
            s, r, names, epsilon=epsilon, max_points=max_points, kid_subset=kid_subset, seed=seed, labels=labels,
            device=where, precision=precision, compile=compile_net, world=world,
        )  # fmt: skip
    if not world.is_main:
        return
    write_json_atomic(json_out, result)
    if not quiet:
        for name, m in result["metrics"].items():
            click.echo(f"{name:>9}  {m['value']:.6g}")
