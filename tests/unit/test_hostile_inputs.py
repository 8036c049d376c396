"""Inputs built to break or exhaust a decoder (the kinds an outside fuzzing run found): each is refused with
an :class:`InvalidInput` whose message is short and carries no Python repr, before anything large is
allocated, and the decoders' memory stays bounded."""

from __future__ import annotations

import base64
import io
import json
import struct
import tracemalloc
import zlib

import numpy as np
import pytest

from ensdef.errors import InvalidInput
from ensdef.io.bounded_json import _STRING, loads_bounded, without_strings
from ensdef.io.npy import read_npy
from ensdef.io.validation import Limits, from_image_file, from_raw, parse_json_body

LIM = Limits((1, 28, 28), max_images=4, max_bytes=100_000)
REPR = ("<", "0x", "Traceback", "/", "object at")


def refused(fn, *args) -> str:  # noqa: ANN001
    with pytest.raises(InvalidInput) as e:
        fn(*args)
    msg = str(e.value)
    assert len(msg) < 200 and not any(r in msg for r in REPR), msg
    return msg


def npy_bytes(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


def npy_with_header(header: bytes) -> bytes:
    """A version 1.0 .npy whose header dict is ``header`` verbatim (padded as numpy pads it)."""
    pad = 64 - (10 + len(header) + 1) % 64
    h = header + b" " * pad + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(h)) + h


def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_declaring(w: int, h: int, extra: bytes = b"", idat: bytes | None = None) -> bytes:
    """A PNG header declaring ``w`` x ``h`` grey pixels; IDAT a few compressed rows (or ``idat``)."""
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    data = idat if idat is not None else zlib.compress(b"\0" * (w + 1) * 4)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + extra + chunk(b"IDAT", data) + chunk(b"IEND", b"")


def body(images: object) -> bytes:
    return json.dumps({"images": images}).encode()


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"[" * 5000 + b"]" * 5000, "nested 5000 deep"),
        (b'{"images": ' + b"[" * 100_000, "unbalanced"),
        (b'{"images": [' + b"1" * 400 + b"]}", "400 characters"),
        (b'{"images": [' + b"9" * 5000 + b"]}", "5000 characters"),
        (b'{"images": [' + b"1e" + b"0" * 300 + b"]}", "characters"),
        (b'{"images": [NaN]}', "NaN is not a valid pixel value"),
        (b'{"images": ' + b"[]," * 30_000 + b"[]}", "lists and objects"),
        (b'{"images": [' + b"0," * 60_000 + b"0]}", "values"),
        (b'{"images": [1, 2', "unbalanced"),
        (b'{"images": [1, 2]]}', "unbalanced"),
        (b'{"images" [1]}', "malformed JSON"),
        (b"\xff\xfe{}", "malformed JSON"),
        (b'{"images": "[[[["}', "nested list"),  # brackets inside strings do not count
    ],
)
def test_json_bodies_are_bounded_before_parsing(raw: bytes, message: str) -> None:
    assert message in refused(parse_json_body, raw, LIM)


def test_bounded_json_matches_the_standard_parser_on_good_bodies() -> None:
    a = np.random.default_rng(0).random((4, 1, 28, 28))
    raw = json.dumps({"images": a.tolist(), "seed": 12345678901234567, "s": "[{,"}).encode()
    assert loads_bounded(raw, 6, 10_000, 10_000) == json.loads(raw)
    x, seed = parse_json_body(raw, LIM)
    assert x.shape == (4, 1, 28, 28) and seed == 12345678901234567 and isinstance(seed, int)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (npy_with_header(b"{'descr': '<f4', 'fortran_order': False, 'shape': (100000, 1000000, 1000), }"), "holds 0"),
        (npy_with_header(b"{'descr': '<f4', 'fortran_order': False, 'shape': (2**62, 4, 1, 1), }"), "header"),
        (npy_with_header(b"{'descr': '<f4', 'fortran_order': False, 'shape': (%s), }" % (b"1, " * 70)), "rank 70"),
        (npy_with_header(b"{'descr': '|O', 'fortran_order': False, 'shape': (1,), }"), "dtype object"),
        (npy_with_header(b"{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (1,), }"), "dtype"),
        (npy_with_header(b"{'descr': '<f4', 'fortran_order': False, 'shape': (1,), 'x': __import__('os')}"), "header"),
        (npy_with_header(b"\xff\xfe\x00 garbage"), "header"),
        (npy_with_header(b"{'descr': '<f4', 'fortran_order': 'yes', 'shape': (1,)}"), "header"),
        (b"\x93NUMPY\x09\x00\x10\x00" + b" " * 16, "version"),
        (b"PK\x03\x04 a zip archive", "not a .npy file"),
        (npy_bytes(np.zeros((1, 28, 28), np.float32))[:-1], "holds 3135"),
    ],
)
def test_npy_headers_are_checked_before_allocating(raw: bytes, message: str) -> None:
    assert message in refused(read_npy, raw)


def test_npz_archive_in_the_npy_field_is_refused() -> None:
    buf = io.BytesIO()
    np.savez(buf, a=np.zeros((1, 28, 28), np.float32))
    raw = json.dumps({"npy": base64.b64encode(buf.getvalue()).decode()}).encode()
    assert "not a .npy file" in refused(parse_json_body, raw, LIM)


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        ([2**32, 2**32, 1, 1], "needs 73786976294838206464 bytes, got 0"),  # the product wraps to 0 in int64
        ([2**63 - 1, 1, 28, 28], "needs 28924494707576576930752 bytes"),
        ([1] * 65, "1 to 4 positive sizes, got 65"),
        ([1, -1, 28, 28], "positive sizes"),
    ],
)
def test_raw_tensor_shapes_use_exact_arithmetic(shape: list[int], message: str) -> None:
    assert message in refused(from_raw, b"", shape, "float32", LIM)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (png_declaring(20_000, 20_000), "safety limit"),
        (png_declaring(13_000, 13_000), "13000 x 13000 pixels"),
        (png_declaring(28, 28, idat=b"not zlib"), "not a readable image"),
        (png_declaring(28, 28, extra=chunk(b"zTXt", b"k\0\0" + zlib.compress(b"a" * 20_000_000))), "readable"),
        (png_declaring(28, 28, extra=chunk(b"iCCP", b"p\0\0" + zlib.compress(b"a" * 20_000_000))), "readable"),
        (b"\x89PNG\r\n\x1a\n" + b"\0" * 40, "not a readable image"),
    ],
)
def test_image_uploads_are_checked_before_decoding(raw: bytes, message: str) -> None:
    tracemalloc.start()
    try:
        assert message in refused(from_image_file, raw, Limits((1, 28, 28), 4, 10_000_000))
        assert tracemalloc.get_traced_memory()[1] < 50_000_000  # never decoded the declared pixels
    finally:
        tracemalloc.stop()


def test_string_removal_fast_path_equals_the_regex() -> None:
    """Splitting at quotes (no backslash, few quotes) removes exactly what the string-literal regex removes,
    on random bodies with and without escapes, odd quote counts and more quotes than the fast path takes."""
    rng = np.random.default_rng(0)
    alphabet = np.frombuffer(b'[]{},:a1 "\\', np.uint8)  # the backslash last: left out of half the bodies
    for _ in range(3000):
        size = int(rng.integers(0, 60)) if rng.random() < 0.9 else int(rng.integers(100, 400))
        raw = alphabet[rng.integers(0, len(alphabet) - (rng.random() < 0.5), size)].tobytes()
        assert without_strings(raw) == _STRING.sub(b'""', raw), raw
    payload = json.dumps({"npy": base64.b64encode(npy_bytes(np.zeros((4, 1, 28, 28), np.float32))).decode()})
    assert without_strings(payload.encode()) == b'{"": ""}'
