"""Input validation of served requests: every bad input is refused with a message that names the problem."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
import torch
from PIL import Image

from ensdef.errors import InvalidInput
from ensdef.io.validation import Limits, from_image_file, from_raw, parse_json
from ensdef.types import Decision

LIM = Limits((1, 28, 28), max_images=4, max_bytes=100_000)


def npy(a: np.ndarray) -> str:
    buf = io.BytesIO()
    np.save(buf, a)
    return base64.b64encode(buf.getvalue()).decode()


def png(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


def test_good_inputs_in_every_encoding_agree() -> None:
    a = np.random.default_rng(0).random((2, 1, 28, 28)).astype(np.float32)
    lists = parse_json({"images": a.tolist()}, LIM)
    assert lists.dtype == torch.float32 and lists.shape == (2, 1, 28, 28)
    torch.testing.assert_close(parse_json({"npy": npy(a)}, LIM), lists)
    torch.testing.assert_close(from_raw(a.astype("<f4").tobytes(), [2, 1, 28, 28], "float32", LIM), lists)
    assert parse_json({"images": a[0, 0].tolist()}, LIM).shape == (1, 1, 28, 28)  # one [H, W] image
    u8 = (a[0, 0] * 255).astype(np.uint8)
    torch.testing.assert_close(from_image_file(png(u8), LIM)[0, 0], torch.from_numpy(u8 / 255.0).float())


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"images": np.zeros((1, 1, 28, 27)).tolist()}, r"shape \[1, 28, 28\], got \[1, 28, 27\]"),
        ({"images": np.zeros((1, 1, 1, 28, 28)).tolist()}, "rank 5"),
        ({"images": [[0.1, 0.2], [0.3]]}, "rectangular"),
        ({"images": "abc"}, "nested list"),
        ({"images": np.full((1, 1, 28, 28), 1.5).tolist()}, r"\[0, 1\]"),
        ({"images": np.full((1, 1, 28, 28), -0.1).tolist()}, r"\[0, 1\]"),
        ({"images": np.full((1, 1, 28, 28), np.nan).tolist()}, "NaN"),
        ({"images": np.full((1, 1, 28, 28), np.inf).tolist()}, "NaN or infinite"),
        ({"images": np.zeros((5, 1, 28, 28)).tolist()}, "5 images exceed the limit of 4"),
        ({"images": np.zeros((0, 1, 28, 28)).tolist()}, "no images"),
        ({"npy": npy(np.zeros((1, 1, 28, 28), np.int64))}, "dtype int64"),
        ({"npy": "%%%not base64"}, "base64"),
        ({"npy": npy(np.zeros((300, 1, 28, 28), np.float32))}, "exceeds the limit of 100000 bytes"),
        ({"images": [], "npy": ""}, "exactly one"),
        ([1, 2], "object"),
    ],
)
def test_bad_json_bodies_are_refused_with_a_message(body: object, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        parse_json(body, LIM)


def test_bad_raw_tensors_and_uploads_are_refused() -> None:
    ok = np.zeros((1, 1, 28, 28), np.float32).tobytes()
    with pytest.raises(InvalidInput, match="needs 3136 bytes, got 3135"):
        from_raw(ok[:-1], [1, 1, 28, 28], "float32", LIM)
    with pytest.raises(InvalidInput, match="dtype 'int8'"):
        from_raw(ok, [1, 1, 28, 28], "int8", LIM)
    with pytest.raises(InvalidInput, match="positive sizes"):
        from_raw(ok, [], "float32", LIM)
    with pytest.raises(InvalidInput, match="not a readable image"):
        from_image_file(b"GIF89a nonsense", LIM)
    with pytest.raises(InvalidInput, match="8 x 8 pixels; the service takes 28 x 28"):
        from_image_file(png(np.zeros((8, 8), np.uint8)), LIM)


def test_served_answer_hides_diagnostics_unless_asked() -> None:
    d = Decision(-1, True, {"votes": [3, 3]}, degraded=True)
    assert d.to_json() == {"label": None, "flagged": True, "abstained": True, "degraded": True}
    assert d.to_json(diagnostics=True)["diagnostics"] == {"votes": [3, 3]}
