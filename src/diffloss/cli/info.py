"""``diffloss info``: what a dataset looks like to diffloss."""

from __future__ import annotations

import click

from diffloss.cli.common import echo_json
from diffloss.data import load_dataset
from diffloss.io import write_json_atomic


@click.command("info")
@click.argument("data")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Also write the summary as JSON here.")
@click.option("--print-json", is_flag=True, help="Print JSON instead of the table.")
def command(data: str, json_out: str | None, print_json: bool) -> None:
    """Summarize DATA as diffloss sees it (after scaling).

    DATA is a built-in name (mnist, mnist:test, digits, gmm, moons, rings), a .npy/.npz array of shape
    (N, ...) (uint8 = images, mapped to [-1, 1]; floats used as they are), or an image folder.

    Prints N, the per-sample shape, the source dtype, the value range, the per-dimension variance (mean over
    dimensions of each dimension's variance: the limit of the optimal x0-loss as the noise grows) and a
    content fingerprint used to cache results.

    Example: diffloss info mnist --json mnist_info.json
    """
    info = load_dataset(data).info()
    if json_out:
        write_json_atomic(json_out, info)
    if print_json:
        echo_json(info)
        return
    rows = [
        ("dataset", info["name"]),
        ("samples (N)", info["n"]),
        ("shape", "x".join(map(str, info["shape"])) + f"  (D = {info['dim']})"),
        ("source dtype", info["source_dtype"]),
        ("value range", f"[{info['min']:.4g}, {info['max']:.4g}]  mean {info['mean']:.4g}"),
        ("variance per dim", f"{info['variance_per_dim']:.6g}  (total {info['variance_total']:.6g})"),
        ("labels", "none" if info["labels"] is None else f"{info['labels']['n_classes']} classes"),
        ("fingerprint", info["fingerprint"]),
    ]
    rows += [("note", n) for n in info["notes"]]
    for k, v in rows:
        click.echo(f"{k:>17}  {v}")
