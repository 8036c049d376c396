"""Read query images from files: ``.npy`` arrays or PNG images, returned as ``[B, C, H, W]`` in [0, 1]."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError


class ImageFormatError(ValueError):
    """The bytes are not an image or array ensdef can read."""


def array_to_batch(a: np.ndarray) -> torch.Tensor:
    """Accept ``[H, W]``, ``[C, H, W]`` or ``[B, C, H, W]``; values must be finite and in [0, 1]."""
    if a.dtype.kind not in "fiu":
        raise ImageFormatError(f"array dtype {a.dtype} is not numeric")
    a = a.astype(np.float32)
    if a.ndim == 2:
        a = a[None, None]
    elif a.ndim == 3:
        a = a[None]
    elif a.ndim != 4:
        raise ImageFormatError(f"array has rank {a.ndim}; expected [H,W], [C,H,W] or [B,C,H,W]")
    if not np.isfinite(a).all():
        raise ImageFormatError("array contains NaN or inf")
    if a.size and (a.min() < 0 or a.max() > 1):
        raise ImageFormatError(f"pixel values must lie in [0, 1], found [{a.min():g}, {a.max():g}]")
    return torch.from_numpy(np.ascontiguousarray(a))


def png_to_batch(data: bytes, channels: int = 1) -> torch.Tensor:
    """Decode PNG bytes to ``[1, channels, H, W]`` in [0, 1]."""
    try:
        img = Image.open(io.BytesIO(data))
        img.load()
    except (UnidentifiedImageError, OSError) as e:
        raise ImageFormatError(f"not a readable image: {e}") from None
    img = img.convert("L" if channels == 1 else "RGB")
    a = np.asarray(img, dtype=np.float32) / 255.0
    a = a[None] if a.ndim == 2 else a.transpose(2, 0, 1)
    return torch.from_numpy(np.ascontiguousarray(a[None]))


def read_images(path: str | Path, channels: int = 1) -> torch.Tensor:
    p = Path(path)
    if p.suffix == ".npy":
        return array_to_batch(np.load(p, allow_pickle=False))
    return png_to_batch(p.read_bytes(), channels)
