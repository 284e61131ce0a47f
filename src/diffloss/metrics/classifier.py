"""Small CNN classifiers that the project trains itself, for MNIST (28x28), MNIST 2x2 mean-pooled to 14x14
(``mnist14``) and scikit-learn's digits (8x8); their penultimate layer is the feature space of FID and KID (no
downloads, no Inception network).

Input convention: images in [-1, 1], shape (N, 1, S, S) with S = 28 (mnist), 14 (mnist14) or 8 (digits); rows
of S*S values are reshaped. Features: the 128-dimensional ReLU output before the last linear layer. Retrain
deterministically (one CPU thread) with

    python -m diffloss.metrics.classifier --data mnist --out src/diffloss/assets
    python -m diffloss.metrics.classifier --data mnist14 --out src/diffloss/assets
    python -m diffloss.metrics.classifier --data digits --out src/diffloss/assets

which write ``{data}_classifier.safetensors`` and ``{data}_classifier.json`` (command, seed, test accuracy,
sha256 of the weights).
"""

from __future__ import annotations

import hashlib
import json
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from importlib import resources
from pathlib import Path

import click
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from diffloss.data import Dataset
from diffloss.errors import DifflossError, unknown_name
from diffloss.inference import network_device
from diffloss.io import atomic_write, write_json_atomic

FEATURE_DIM = 128
DIGITS_TEST = 360  # digits: a seeded random 360 of the 1797 images are held out for the test accuracy


def mnist_splits(size: int = 28) -> tuple[Dataset, Dataset]:
    """MNIST train (50k) and test (10k) at ``size`` x ``size`` (see ``load_mnist``)."""
    from diffloss.data import load_mnist

    return load_mnist("train", size), load_mnist("test", size)


def digits_splits() -> tuple[Dataset, Dataset]:
    """scikit-learn's digits split by a fixed permutation (seed 0): 1437 train, 360 test images."""
    from diffloss.data import load_digits_dataset

    ds = load_digits_dataset()
    perm = np.random.default_rng(0).permutation(ds.n)
    return ds.subset(np.sort(perm[DIGITS_TEST:])), ds.subset(np.sort(perm[:DIGITS_TEST]))


@dataclass(frozen=True)
class ClassifierSpec:
    """What differs between the classifiers: image side, data splits, training length, and whether data of
    D = size^2 in any shape (a flat (N, 784) file for mnist) counts as its images (``flat``)."""

    name: str
    size: int
    splits: Callable[[], tuple[Dataset, Dataset]]
    epochs: int
    batch: int
    max_shift: int
    flat: bool

    @property
    def asset(self) -> Path:
        return Path(str(resources.files("diffloss") / "assets" / f"{self.name}_classifier.safetensors"))


CLASSIFIERS = {
    "mnist": ClassifierSpec("mnist", 28, mnist_splits, epochs=4, batch=128, max_shift=2, flat=True),
    "mnist14": ClassifierSpec("mnist14", 14, partial(mnist_splits, 14), epochs=12, batch=128, max_shift=1, flat=True),
    "digits": ClassifierSpec("digits", 8, digits_splits, epochs=60, batch=64, max_shift=1, flat=False),
}


def get_spec(name: str) -> ClassifierSpec:
    if name not in CLASSIFIERS:
        raise unknown_name("classifier", name, CLASSIFIERS)
    return CLASSIFIERS[name]


def classifier_for(shape: tuple[int, ...]) -> str | None:
    """The classifier for data of per-sample ``shape``: the one whose images are (1, S, S), or whose S^2 equals
    prod(shape) if it takes any shape of that size (``flat``); None if none does."""
    dim = int(np.prod(shape))
    for spec in CLASSIFIERS.values():
        if tuple(shape) == (1, spec.size, spec.size) or (spec.flat and dim == spec.size**2):
            return spec.name
    return None


class ConvNet(nn.Module):
    """conv5(16)-pool-conv5(32)-pool-fc(128)-fc(10) for (N, 1, size, size) images; the 2x2 max-poolings floor
    (14 -> 7 -> 3), so fc1 sees 32 (size // 4)^2 values. ``features`` is the 128-d ReLU layer."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size
        self.conv1 = nn.Conv2d(1, 16, 5, padding=2)
        self.conv2 = nn.Conv2d(16, 32, 5, padding=2)
        self.fc1 = nn.Linear(32 * (size // 4) ** 2, FEATURE_DIM)
        self.fc2 = nn.Linear(FEATURE_DIM, 10)
        self.dropout = nn.Dropout(0.3)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 1, size, size) images in [-1, 1] -> (N, 128) penultimate features."""
        h = F.max_pool2d(F.relu(self.conv1(x)), 2)
        h = F.max_pool2d(F.relu(self.conv2(h)), 2)
        return F.relu(self.fc1(h.flatten(1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits (N, 10)."""
        return self.fc2(self.dropout(self.features(x)))


def as_images(x: np.ndarray | torch.Tensor, size: int) -> torch.Tensor:
    """(N, size*size) or (N, 1, size, size) -> float32 tensor (N, 1, size, size); anything else is refused."""
    x = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x, dtype=torch.float32)
    if x.ndim == 2 and x.shape[1] == size * size:
        x = x.reshape(-1, 1, size, size)
    if x.ndim != 4 or tuple(x.shape[1:]) != (1, size, size):
        raise DifflossError(
            f"images for this classifier must be (N, 1, {size}, {size}) or (N, {size * size}), got {tuple(x.shape)}"
        )
    return x


@torch.no_grad()
def run_batches(network: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, device: torch.device,
                batch: int = 1000) -> torch.Tensor:  # fmt: skip
    """``network`` (already on ``device``) over (N, 1, S, S) ``images`` in batches, the results concatenated on the
    device as float32; the images travel there without the host waiting. No images give an empty (0, F) result
    (one empty batch runs), as a torchrun rank with no rows needs."""
    parts = [network(images[i : i + batch].to(device, non_blocking=True)) for i in range(0, max(len(images), 1), batch)]
    return torch.cat(parts).float()


def apply(model: ConvNet, x: np.ndarray | torch.Tensor, *, what: str = "features", batch: int = 1000) -> np.ndarray:
    """Run ``model`` in eval mode, where it is, over images ``x`` in batches; ``what`` = "features" (N, 128) or
    "logits"."""
    model.eval()
    fn = model.features if what == "features" else model
    return run_batches(fn, as_images(x, model.size), network_device(model), batch).cpu().numpy()


def accuracy(model: ConvNet, x: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of images whose arg-max logit equals the label."""
    return float((apply(model, x, what="logits").argmax(1) == labels).mean())


def _shift(x: torch.Tensor, gen: torch.Generator, max_shift: int) -> torch.Tensor:
    """Translate each (N, 1, S, S) image by a random integer offset in [-max_shift, max_shift]^2, filling with -1."""
    n, size = len(x), x.shape[-1]
    pad = F.pad(x, (max_shift,) * 4, value=-1.0)
    dx, dy = torch.randint(0, 2 * max_shift + 1, (2, n), generator=gen)
    rows = (dy[:, None] + torch.arange(size)[None]).reshape(n, 1, size, 1).expand(n, 1, size, size + 2 * max_shift)
    cols = (dx[:, None] + torch.arange(size)[None]).reshape(n, 1, 1, size).expand(n, 1, size, size)
    return pad.gather(2, rows).gather(3, cols)


def train_classifier(
    spec: ClassifierSpec, x: np.ndarray, labels: np.ndarray, *, epochs: int, seed: int, lr: float = 2e-3
) -> ConvNet:
    """Train a ``ConvNet`` with AdamW, a one-cycle (warm-up, then cosine decay) learning rate and random shifts
    of up to ``spec.max_shift`` pixels; deterministic for a given seed, data and thread count."""
    from tqdm import tqdm

    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = ConvNet(spec.size)
    batch = spec.batch
    xs, ys = as_images(x, spec.size), torch.as_tensor(labels, dtype=torch.long)
    steps = epochs * (len(xs) // batch)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    one_cycle = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    model.train()
    bar = tqdm(total=steps, desc=f"train {spec.name} classifier", file=sys.stderr, mininterval=5)
    for _ in range(epochs):
        perm = torch.randperm(len(xs), generator=gen)
        for i in range(len(xs) // batch):
            idx = perm[i * batch : (i + 1) * batch]
            loss = F.cross_entropy(model(_shift(xs[idx], gen, spec.max_shift)), ys[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            one_cycle.step()
            bar.update()
            bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
    bar.close()
    return model.eval()


def sha256_file(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def load_classifier(name: str = "mnist", path: str | Path | None = None) -> ConvNet:
    """The committed classifier ``name`` (or the weights at ``path``), in eval mode."""
    from safetensors.torch import load_file

    spec = get_spec(name)
    path = spec.asset if path is None else Path(path)
    if not path.exists():
        raise DifflossError(
            f"classifier weights {path} not found; retrain with `python -m diffloss.metrics.classifier --data {name}`"
        )
    model = ConvNet(spec.size)
    model.load_state_dict(load_file(str(path)))
    return model.eval()


@click.command()
@click.option("--data", default="mnist", show_default=True, type=click.Choice(sorted(CLASSIFIERS)), help="Which one.")
@click.option("--out", type=click.Path(file_okay=False), required=True, help="Directory for the weights and JSON.")
@click.option(
    "--epochs",
    default=None,
    type=click.IntRange(min=1),
    help="Passes over the training images. [default: 4 mnist, 12 mnist14, 60 digits]",
)
@click.option("--seed", default=0, show_default=True, help="Seed of initialization, shuffling and shifts.")
def main(data: str, out: str, epochs: int | None, seed: int) -> None:
    """Retrain a feature classifier on one CPU thread and report its test accuracy: mnist trains on MNIST train
    (50k) and tests on MNIST test (10k), mnist14 the same at 14x14 (2x2 mean pooling); digits trains on 1437
    of scikit-learn's 1797 digits and tests on the other 360 (a fixed seeded split). Writes
    OUT/DATA_classifier.safetensors and OUT/DATA_classifier.json.

    Example: python -m diffloss.metrics.classifier --data mnist --out src/diffloss/assets
    """
    from safetensors.torch import save_file

    spec = get_spec(data)
    epochs = spec.epochs if epochs is None else epochs
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    tr, te = spec.splits()
    t0 = time.perf_counter()
    model = train_classifier(spec, tr.x, tr.labels, epochs=epochs, seed=seed)
    seconds = time.perf_counter() - t0
    acc = accuracy(model, te.x, te.labels)
    weights = Path(out) / spec.asset.name
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    atomic_write(weights, lambda tmp: save_file(state, tmp))
    record = {
        "command": f"python -m diffloss.metrics.classifier --data {data} --out {out} --epochs {epochs} --seed {seed}",
        "data": data,
        "seed": seed,
        "epochs": epochs,
        "train_data": f"{tr.name} ({tr.n} images)",
        "test_data": f"{te.name} ({te.n} images)",
        "test_accuracy": acc,
        "sha256": sha256_file(weights),
        "feature_dim": FEATURE_DIM,
        "input": f"images in [-1, 1], shape (N, 1, {spec.size}, {spec.size})",
        "train_seconds": round(seconds, 1),
        "torch": torch.__version__,
        "platform": platform.platform(),
    }
    write_json_atomic(weights.with_suffix(".json"), record)
    click.echo(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
