"""Images in and out: image folders as datasets (``load_image_folder``), sample arrays as one grid (``image_grid``).

An image folder is every PNG/JPEG/BMP/GIF/WebP file below a directory, sorted by path. If the images sit in
sub-folders, the sub-folder names become integer labels (sorted name order), as in torchvision's ImageFolder.
All images must have one size unless ``size`` resizes them.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from diffloss.data.arrays import scale_uint8
from diffloss.data.dataset import Dataset
from diffloss.errors import DifflossError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def load_image_folder(root: str | Path, mode: str | None = None, size: tuple[int, int] | None = None) -> Dataset:
    """Load images as (N, C, H, W) scaled to [-1, 1]. ``mode`` is "L" (grayscale) or "RGB"; by default
    grayscale if every image is, else RGB. ``size`` = (height, width) resizes with bicubic filtering."""
    from PIL import Image, UnidentifiedImageError

    root = Path(root)
    if not root.is_dir():
        raise DifflossError(f"image folder {str(root)!r} does not exist; check the path")
    if mode not in (None, "L", "RGB"):
        raise DifflossError(f"image mode must be 'L' or 'RGB', got {mode!r}")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise DifflossError(f"{root}: no images found (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
    classes = sorted({p.parent.relative_to(root).as_posix() for p in files})
    labels = (
        None if classes == ["."] else np.array([classes.index(p.parent.relative_to(root).as_posix()) for p in files])
    )
    imgs = []
    for p in files:
        try:
            with Image.open(p) as im:
                im.load()
                imgs.append(im.copy())
        except (UnidentifiedImageError, OSError) as e:
            raise DifflossError(f"{p}: not a readable image ({e})") from None
    if mode is None:
        mode = "L" if all(im.mode in ("L", "1", "I;16", "I") for im in imgs) else "RGB"
    arrays = []
    for p, im in zip(files, imgs):
        im = im.convert(mode)
        if size is not None:
            im = im.resize((size[1], size[0]), Image.Resampling.BICUBIC)
        a = np.asarray(im, dtype=np.uint8)
        arrays.append(a[None] if a.ndim == 2 else a.transpose(2, 0, 1))
        if arrays[-1].shape != arrays[0].shape:
            raise DifflossError(
                f"{p}: size {arrays[-1].shape[1:]} differs from {arrays[0].shape[1:]} of {files[0].name}; "
                "pass a resize (--image-size H,W) to make them equal"
            )
    stack = np.stack(arrays)
    x = scale_uint8(stack.reshape(len(stack), -1))
    notes = (f"{len(files)} images, mode {mode}, uint8 mapped to [-1, 1] as x / 127.5 - 1",)
    return Dataset(x, tuple(stack.shape[1:]), root.name, labels, "uint8", notes)


def image_grid(x: np.ndarray, cols: int | None = None, pad: int = 1, scale: int = 1) -> np.ndarray:
    """(N, C, H, W) images in [-1, 1] to one uint8 grid (H', W') for C = 1 or (H', W', 3) for C = 3.

    Values are clipped to [-1, 1] and mapped to 0..255; ``cols`` defaults to ceil(sqrt(N)); cells are separated
    by ``pad`` black pixels; ``scale`` enlarges the finished grid by pixel repetition (nearest neighbour)."""
    n, c, h, w = x.shape
    if c not in (1, 3):
        raise DifflossError(f"an image grid needs 1 or 3 channels, got {c}")
    cols = cols or math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    img = np.round((np.clip(x, -1, 1) + 1) * 127.5).astype(np.uint8).transpose(0, 2, 3, 1)
    grid = np.zeros((rows * (h + pad) + pad, cols * (w + pad) + pad, c), dtype=np.uint8)
    for i in range(n):
        r, q = divmod(i, cols)
        grid[pad + r * (h + pad) : pad + r * (h + pad) + h, pad + q * (w + pad) : pad + q * (w + pad) + w] = img[i]
    grid = grid.repeat(scale, axis=0).repeat(scale, axis=1)
    return grid[..., 0] if c == 1 else grid
