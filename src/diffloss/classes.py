"""Class conditioning: the label convention, label dropout, classifier-free guidance and the ``--class`` spec.

Convention. A class-conditional model with K classes is called ``model(x_t, c, labels)`` with (B,) int64
``labels`` in 0 .. K; the extra label K is the *null* label, the unconditional token. ``model(x_t, c)`` (no
labels) is the unconditional prediction, the same as passing K for every row; an unconditional model
(K = 0) is only ever called ``model(x_t, c)``. Training replaces each label by K with probability p (label
dropout), so one network learns both the conditional and the unconditional denoiser.

Guidance, in x0 space: D_W = D_uncond + W * (D_cond - D_uncond). W = 0 is the unconditional prediction, W = 1
the conditional one, W > 1 extrapolates away from the unconditional prediction. This is EDM2's / Karras et
al.'s W; Ho & Salimans (2022) write (1 + w) * cond - w * uncond, so their w = W - 1.
"""

from __future__ import annotations

import numpy as np
import torch

from diffloss.errors import DifflossError


def num_classes_of(labels: np.ndarray | None, what: str) -> int:
    """K = largest label + 1 of a dataset's (N,) labels (classes 0 .. K - 1); ``what`` names the data in errors."""
    if labels is None or not len(labels):
        raise DifflossError(
            f"{what} has no class labels: use labelled data (mnist, digits, an image folder with one "
            "sub-folder per class) or give --labels FILE (.npy/.npz of N integers)"
        )
    if labels.min() < 0:
        raise DifflossError(f"{what}: class labels must be >= 0, got {int(labels.min())}")
    return int(labels.max()) + 1


def drop_labels(labels: torch.Tensor, p: float, null: int, generator: torch.Generator) -> torch.Tensor:
    """``labels`` (B,) with each entry replaced by ``null`` with probability ``p``, independently; draws B
    uniforms from ``generator`` (always, whatever ``p``, so the generator's stream does not depend on it)."""
    u = torch.rand(labels.shape, generator=generator, dtype=torch.float64, device=generator.device)
    return torch.where(u.to(labels.device) < p, torch.full_like(labels, null), labels)


def guide(d_uncond: torch.Tensor, d_cond: torch.Tensor, guidance: float) -> torch.Tensor:
    """D_W = D_uncond + W * (D_cond - D_uncond) (see the module docstring for W)."""
    return d_uncond + guidance * (d_cond - d_uncond)


def class_labels(spec: str, n: int, num_classes: int) -> torch.Tensor:
    """The (n,) int64 labels of ``--class``: ``C`` gives n samples of class C, ``all`` n / K samples of every class
    in class order (n must be a multiple of K)."""
    if spec == "all":
        if n % num_classes:
            raise DifflossError(
                f"--class all draws the same number of samples per class: give --n a multiple of {num_classes}"
            )
        return torch.arange(num_classes).repeat_interleave(n // num_classes)
    try:
        c = int(spec)
    except ValueError:
        raise DifflossError(f"--class: {spec!r} is neither a class index nor 'all'") from None
    if not 0 <= c < num_classes:
        raise DifflossError(f"--class {c} is out of range: the model has classes 0 .. {num_classes - 1}")
    return torch.full((n,), c, dtype=torch.long)
