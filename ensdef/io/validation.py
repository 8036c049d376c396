"""The one image decoder, for the service and the command line: every way an input can be wrong gets an
:class:`~ensdef.errors.InvalidInput` whose message says what was wrong (HTTP 4xx / gRPC INVALID_ARGUMENT, or
the CLI's error line), before any member sees it.

Accepted encodings: nested lists (JSON), base64 ``.npy``, raw tensor bytes with shape and dtype (gRPC), and
PNG (grayscale or RGB, 8 bit, scaled to [0, 1]). Output: float32 ``[B, C, H, W]`` in [0, 1].
"""

from __future__ import annotations

import base64
import binascii
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ensdef.errors import InvalidInput, TooLarge
from ensdef.io.bounded_json import loads_bounded
from ensdef.io.npy import MAX_RANK, read_npy

DTYPES = {"float32": np.float32, "float64": np.float64, "uint8": np.uint8}


@dataclass(frozen=True)
class Limits:
    """What one request may carry: image shape ``(C, H, W)``, at most ``max_images`` images and
    ``max_bytes`` bytes of payload."""

    shape: tuple[int, int, int]
    max_images: int = 64
    max_bytes: int = 8_000_000


def check_bytes(n: int, limits: Limits, factor: int = 1) -> None:
    """Refuse ``n`` bytes over ``factor`` times the limit (JSON numbers take about twice their binary size)."""
    if n > factor * limits.max_bytes:
        raise TooLarge(f"payload of {n} bytes exceeds the limit of {factor * limits.max_bytes} bytes")


def to_batch(a: np.ndarray, limits: Limits) -> torch.Tensor:
    """Validate an array of images ``[B, C, H, W]`` or one image ``[C, H, W]`` (``[H, W]`` when C = 1);
    uint8 is scaled by 1/255. Returns float32 ``[B, C, H, W]``."""
    if a.dtype == np.uint8:
        a = a.astype(np.float32) / 255.0
    elif a.dtype.kind != "f":
        raise InvalidInput(f"dtype {a.dtype} is not supported; send float32, float64 or uint8")
    c, h, w = limits.shape
    if a.ndim == 2 and c == 1:
        a = a[None]
    if a.ndim == 3:
        a = a[None]
    if a.ndim != 4:
        raise InvalidInput(f"expected images of shape [B, {c}, {h}, {w}] or [{c}, {h}, {w}], got rank {a.ndim}")
    if tuple(a.shape[1:]) != (c, h, w):
        raise InvalidInput(f"expected images of shape [{c}, {h}, {w}], got {list(a.shape[1:])}")
    if a.shape[0] == 0:
        raise InvalidInput("no images in the request")
    if a.shape[0] > limits.max_images:
        raise InvalidInput(f"{a.shape[0]} images exceed the limit of {limits.max_images} per request")
    if not np.isfinite(a).all():
        raise InvalidInput("images contain NaN or infinite values")
    if a.min() < 0 or a.max() > 1:
        raise InvalidInput(f"pixel values must lie in [0, 1]; got min {float(a.min()):g}, max {float(a.max()):g}")
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))


def from_lists(data: Any, limits: Limits) -> torch.Tensor:
    """Nested JSON lists of numbers."""
    if not isinstance(data, list):
        raise InvalidInput("'images' must be a nested list of numbers")
    if not data:
        raise InvalidInput("no images in the request")
    try:
        a = np.asarray(data, dtype=np.float64)
    except (ValueError, TypeError):
        raise InvalidInput("'images' is not a rectangular nested list of numbers") from None
    return to_batch(a, limits)


def from_npy_base64(text: Any, limits: Limits) -> torch.Tensor:
    """A base64 string of a ``.npy`` file (``numpy.save``); archives, pickles and object arrays are refused."""
    if not isinstance(text, str):
        raise InvalidInput("'npy' must be a base64 string of a .npy file")
    check_bytes(len(text) * 3 // 4, limits)
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput("'npy' is not valid base64") from None
    return to_batch(read_npy(raw), limits)


def from_raw(data: bytes, shape: Sequence[int], dtype: str, limits: Limits) -> torch.Tensor:
    """Raw C-order little-endian bytes with their shape and dtype name (the gRPC request)."""
    check_bytes(len(data), limits)
    if dtype not in DTYPES:
        raise InvalidInput(f"dtype {dtype[:32]!r} is not supported; use one of {', '.join(DTYPES)}")
    dims = [int(s) for s in shape[: MAX_RANK + 1]]
    if not dims or len(shape) > MAX_RANK or min(dims) <= 0:
        raise InvalidInput(f"shape must list 1 to {MAX_RANK} positive sizes, got {len(shape)} sizes")
    dt = np.dtype(DTYPES[dtype]).newbyteorder("<")
    need = math.prod(dims) * dt.itemsize  # exact: sizes near 2**64 do not wrap
    if len(data) != need:
        raise InvalidInput(f"shape {dims} of {dtype} needs {need} bytes, got {len(data)}")
    return to_batch(np.frombuffer(data, dtype=dt).reshape(dims).astype(dt.newbyteorder("=")), limits)


def from_image_file(raw: bytes, limits: Limits) -> torch.Tensor:
    """One uploaded image file (PNG, JPEG, ...) converted to the service's channels; its declared size is
    checked against the service's before any pixel is decoded."""
    from PIL import Image

    check_bytes(len(raw), limits)
    _, h, w = limits.shape
    try:
        img = Image.open(io.BytesIO(raw))  # reads the header (and bounded text chunks) only
        size = img.size
        if size == (w, h):
            img.load()
    except Image.DecompressionBombError:
        raise InvalidInput("the image declares more pixels than the decoder's safety limit") from None
    except Exception:  # noqa: BLE001 (untrusted bytes: Pillow raises OSError, ValueError, SyntaxError, bombs...)
        raise InvalidInput("the upload is not a readable image") from None
    if size != (w, h):
        raise InvalidInput(f"an image of {size[0]} x {size[1]} pixels; the service takes {w} x {h}")
    c = limits.shape[0]
    a = np.asarray(img.convert("L" if c == 1 else "RGB"), dtype=np.uint8)
    return to_batch(a[None] if c == 1 else a.transpose(2, 0, 1), limits)


def parse_json_body(raw: bytes, limits: Limits) -> tuple[torch.Tensor, Any]:
    """Images and the optional ``seed`` of a JSON request body, parsed within bounds that a well-formed
    request of ``max_images`` images stays far below (:func:`~ensdef.io.bounded_json.loads_bounded`)."""
    c, h, w = limits.shape
    # four times what the largest allowed request needs: a request a little over the limit still gets the
    # precise message ("9 images exceed the limit of 8"), and nothing gets near a memory problem
    containers = 4 * (limits.max_images * (c * (h + 1) + 1) + 8)
    body = loads_bounded(raw, max_depth=6, max_containers=containers, max_values=4 * limits.max_images * c * h * w + 16)
    x = parse_json(body, limits)
    return x, body.get("seed")


def parse_json(body: Any, limits: Limits) -> torch.Tensor:
    """A JSON body ``{"images": nested lists}`` or ``{"npy": base64}``."""
    if not isinstance(body, dict):
        raise InvalidInput("the JSON body must be an object with 'images' or 'npy'")
    if ("images" in body) == ("npy" in body):
        raise InvalidInput("send exactly one of 'images' (nested lists) or 'npy' (base64 .npy)")
    return from_lists(body["images"], limits) if "images" in body else from_npy_base64(body["npy"], limits)


def read_images(path: str | Path, limits: Limits) -> torch.Tensor:
    """Images from a file, decoded as the service decodes them: ``.npy`` (:func:`to_batch`: float in [0, 1] or
    uint8 scaled by 1/255; ``[B, C, H, W]``, ``[C, H, W]`` or ``[H, W]``) or an image file (PNG, ...)."""
    p = Path(path)
    if not p.exists():
        raise InvalidInput(f"input file {str(path)!r} does not exist")
    raw = p.read_bytes()
    if p.suffix == ".npy":
        check_bytes(len(raw), limits)
        return to_batch(read_npy(raw, p.name), limits)
    return from_image_file(raw, limits)
