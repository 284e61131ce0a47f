"""A small CNN MNIST classifier that the project trains itself; its penultimate layer is the feature space
of FID and KID on MNIST (no downloads, no Inception network).

Input convention: images in [-1, 1], shape (N, 1, 28, 28) (rows of 784 are reshaped). Features: the
128-dimensional ReLU output before the last linear layer. Retrain it deterministically with

    python -m diffloss.metrics.classifier --out src/diffloss/assets

which writes ``mnist_classifier.safetensors`` and ``mnist_classifier.json`` (command, seed, test accuracy,
sha256 of the weights).
"""

from __future__ import annotations

import hashlib
import json
import platform
import sys
import time
from importlib import resources
from pathlib import Path

import click
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from diffloss.errors import DifflossError
from diffloss.io import atomic_write, write_json_atomic

WEIGHTS = "mnist_classifier.safetensors"
FEATURE_DIM = 128


class MnistNet(nn.Module):
    """conv5(16)-pool-conv5(32)-pool-fc(128)-fc(10); ``features`` is the 128-d ReLU layer."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 5, padding=2)
        self.conv2 = nn.Conv2d(16, 32, 5, padding=2)
        self.fc1 = nn.Linear(32 * 7 * 7, FEATURE_DIM)
        self.fc2 = nn.Linear(FEATURE_DIM, 10)
        self.dropout = nn.Dropout(0.3)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 1, 28, 28) images in [-1, 1] -> (N, 128) penultimate features."""
        h = F.max_pool2d(F.relu(self.conv1(x)), 2)
        h = F.max_pool2d(F.relu(self.conv2(h)), 2)
        return F.relu(self.fc1(h.flatten(1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits (N, 10)."""
        return self.fc2(self.dropout(self.features(x)))


def as_images(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    """(N, 784) or (N, 1, 28, 28) -> float32 tensor (N, 1, 28, 28); anything else is refused."""
    x = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x, dtype=torch.float32)
    if x.ndim == 2 and x.shape[1] == 784:
        x = x.reshape(-1, 1, 28, 28)
    if x.ndim != 4 or tuple(x.shape[1:]) != (1, 28, 28):
        raise DifflossError(f"MNIST images must be (N, 1, 28, 28) or (N, 784), got {tuple(x.shape)}")
    return x


@torch.no_grad()
def apply(model: MnistNet, x: np.ndarray | torch.Tensor, *, what: str = "features", batch: int = 1000) -> np.ndarray:
    """Run ``model`` in eval mode over images ``x`` in batches; ``what`` = "features" (N, 128) or "logits"."""
    model.eval()
    x = as_images(x)
    fn = model.features if what == "features" else model
    return torch.cat([fn(x[i : i + batch]) for i in range(0, len(x), batch)]).numpy()


def accuracy(model: MnistNet, x: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of images whose arg-max logit equals the label."""
    return float((apply(model, x, what="logits").argmax(1) == labels).mean())


def _shift(x: torch.Tensor, gen: torch.Generator, max_shift: int = 2) -> torch.Tensor:
    """Translate each image by a random integer offset in [-max_shift, max_shift]^2, filling with -1."""
    n = len(x)
    pad = F.pad(x, (max_shift,) * 4, value=-1.0)
    dx, dy = torch.randint(0, 2 * max_shift + 1, (2, n), generator=gen)
    rows = (dy[:, None] + torch.arange(28)[None]).reshape(n, 1, 28, 1).expand(n, 1, 28, 28 + 2 * max_shift)
    cols = (dx[:, None] + torch.arange(28)[None]).reshape(n, 1, 1, 28).expand(n, 1, 28, 28)
    return pad.gather(2, rows).gather(3, cols)


def train(x: np.ndarray, labels: np.ndarray, *, epochs: int, seed: int, batch: int = 128, lr: float = 2e-3) -> MnistNet:
    """Train ``MnistNet`` with AdamW, a cosine learning-rate decay and random 2-pixel shifts; deterministic
    for a given seed, data and thread count (one thread is used)."""
    from tqdm import tqdm

    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = MnistNet()
    xs, ys = as_images(x), torch.as_tensor(labels, dtype=torch.long)
    steps = epochs * (len(xs) // batch)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    model.train()
    bar = tqdm(total=steps, desc="train classifier", file=sys.stderr, mininterval=5)
    for _ in range(epochs):
        perm = torch.randperm(len(xs), generator=gen)
        for i in range(len(xs) // batch):
            idx = perm[i * batch : (i + 1) * batch]
            loss = F.cross_entropy(model(_shift(xs[idx], gen)), ys[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            bar.update()
            bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
    bar.close()
    return model.eval()


def sha256_file(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def asset_path() -> Path:
    return Path(str(resources.files("diffloss") / "assets" / WEIGHTS))


def load_classifier(path: str | Path | None = None) -> MnistNet:
    """The committed classifier (or the weights at ``path``), in eval mode."""
    from safetensors.torch import load_file

    path = asset_path() if path is None else Path(path)
    if not path.exists():
        raise DifflossError(
            f"classifier weights {path} not found; retrain with `python -m diffloss.metrics.classifier`"
        )
    model = MnistNet()
    model.load_state_dict(load_file(str(path)))
    return model.eval()


@click.command()
@click.option("--out", type=click.Path(file_okay=False), required=True, help="Directory for the weights and JSON.")
@click.option("--epochs", default=4, show_default=True, help="Passes over MNIST train (50k).")
@click.option("--seed", default=0, show_default=True, help="Seed of initialization, shuffling and shifts.")
def main(out: str, epochs: int, seed: int) -> None:
    """Retrain the MNIST feature classifier on MNIST train (50k, one CPU thread) and report its accuracy on
    MNIST test (10k). Writes OUT/mnist_classifier.safetensors and OUT/mnist_classifier.json.

    Example: python -m diffloss.metrics.classifier --out src/diffloss/assets
    """
    from safetensors.torch import save_file

    from diffloss.data import load_mnist

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    tr, te = load_mnist("train"), load_mnist("test")
    t0 = time.perf_counter()
    model = train(tr.x, tr.labels, epochs=epochs, seed=seed)
    seconds = time.perf_counter() - t0
    acc = accuracy(model, te.x, te.labels)
    weights = Path(out) / WEIGHTS
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    atomic_write(weights, lambda tmp: save_file(state, tmp))
    record = {
        "command": f"python -m diffloss.metrics.classifier --out {out} --epochs {epochs} --seed {seed}",
        "seed": seed,
        "epochs": epochs,
        "train_data": f"{tr.name} ({tr.n} images)",
        "test_data": f"{te.name} ({te.n} images)",
        "test_accuracy": acc,
        "sha256": sha256_file(weights),
        "feature_dim": FEATURE_DIM,
        "input": "images in [-1, 1], shape (N, 1, 28, 28)",
        "train_seconds": round(seconds, 1),
        "torch": torch.__version__,
        "platform": platform.platform(),
    }
    write_json_atomic(weights.with_suffix(".json"), record)
    click.echo(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
