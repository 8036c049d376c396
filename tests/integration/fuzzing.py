"""Seeded generators of hostile requests for the fuzz test: malformed and amplifying JSON, `.npy` payloads with
mutated headers, dtypes and shapes, archives and pickles, PNG files mutated or declaring huge sizes, odd content
types, header values of any byte, unknown paths and methods; and gRPC requests with any shape, dtype, tensor size
and token, or bytes that are no protobuf at all. A few well-formed requests are mixed in. Every generator draws
only from the ``random.Random`` it is given, so a failing request can be replayed from its seed and index."""

from __future__ import annotations

import base64
import io
import json
import random
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

CONTENT_TYPES = [
    "application/json",
    "image/png",
    "application/octet-stream",
    "image/jpeg",
    "text/csv",
    "",
    "application/json; charset=latin-1",
    "multipart/form-data; boundary=x",
    "image/png; x=\u00ff",
]
DTYPES = ["<f4", "<f8", "|u1", "<i8", ">f4", "<c8", "|O", "<f2", "|b1", "<U3", "|V8", "<M8[s]"]
LEAKS = ("object at 0x", "Traceback", 'File "', "site-packages", ".py:", "ray::")  # what no body may carry


@dataclass
class HttpCase:
    method: str
    path: str
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


def _npy(shape: tuple, dtype: str, payload: bytes) -> bytes:
    header = repr({"descr": dtype, "fortran_order": False, "shape": shape}).encode("latin-1")
    header += b" " * (63 - (len(header) + 10) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + payload


def _png(w: int, h: int, rows: bytes | None = None) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    idat = zlib.compress(rows if rows is not None else b"\0" * (min(w, 64) + 1) * min(h, 8))
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def _number(r: random.Random) -> str:
    return r.choice(
        [
            str(r.random()),
            str(r.randint(-(10**6), 10**6)),
            "9" * r.randint(20, 6000),
            "-" + "1" * r.randint(300, 900),
            "1e" + str(r.randint(300, 99999)),
            "NaN",
            "-Infinity",
            "0." + "0" * r.randint(100, 5000) + "1",
        ]
    )


def _json_value(r: random.Random, depth: int = 0) -> str:
    k = r.random()
    if depth > 4 or k < 0.35:
        return r.choice([_number(r), '"' + "x" * r.randint(0, 50) + '"', "true", "null", '"\\ud800"'])
    if k < 0.8:
        return "[" + ",".join(_json_value(r, depth + 1) for _ in range(r.randint(0, 30 >> 2 * depth))) + "]"
    keys = ["images", "npy", "seed", "x" * r.randint(1, 9), "__proto__"]
    return "{" + ",".join(f'"{r.choice(keys)}":{_json_value(r, depth + 1)}' for _ in range(r.randint(0, 4))) + "}"


def _image_lists(r: random.Random) -> object:
    shape = r.choice([(1, 1, 28, 28), (1, 28, 28), (2, 1, 28, 28), (1, 1, 28, 27), (33, 1, 28, 28), (1, 3, 28, 28)])
    a = np.asarray(np.random.default_rng(r.randrange(2**32)).random(shape), np.float32)
    if r.random() < 0.3:
        a.flat[r.randrange(a.size)] = r.choice([2.0, -1.0, float("inf")])
    return a.tolist()


def _json_body(r: random.Random) -> tuple[bytes, bool]:
    """A body, and whether it may be well formed (then it goes to a cheap defense: answering costs time)."""
    k = r.randrange(8)
    if k == 0:  # deep or unbalanced nesting
        n = r.choice([100, 5000, 100_000])
        return ('{"images": ' + "[" * n + "]" * r.choice([n, n - 1, 0]) + "}").encode(), False
    if k == 1:  # numbers too long to convert, or that overflow
        return ('{"images": [' + ",".join(_number(r) for _ in range(r.randint(1, 5))) + "]}").encode(), False
    if k == 2:
        return _json_value(r).encode(), False
    if k == 3:  # .npy with any dtype and shape, as base64 (or not)
        shape = tuple(r.choice([1, 28, 0, -1, 2**31, 2**62, 2**64 - 1]) for _ in range(r.randint(0, 6)))
        raw = _npy(shape, r.choice(DTYPES), r.randbytes(r.randint(0, 4000)))
        npy = base64.b64encode(raw).decode() if r.random() < 0.9 else raw.decode("latin-1")
        return json.dumps({"npy": npy}).encode(), False
    if k == 4:  # a valid .npy, mutated; an archive; a pickle
        a = np.zeros((1, 1, 28, 28), np.float32)
        buf = io.BytesIO()
        choice = r.randrange(3)
        if choice == 0:
            np.save(buf, a)
            raw = bytearray(buf.getvalue())
            for _ in range(r.randint(1, 6)):
                raw[r.randrange(min(len(raw), 128))] = r.randrange(256)
        elif choice == 1:
            np.savez(buf, a=a)
            raw = bytearray(buf.getvalue())
        else:
            np.save(buf, np.array([{"a": 1}], dtype=object), allow_pickle=True)
            raw = bytearray(buf.getvalue())
        return json.dumps({"npy": base64.b64encode(bytes(raw)).decode()}).encode(), False
    if k == 5:  # well-formed or nearly (shape, range, count), with a seed of any kind
        body: dict[str, object] = {"images": _image_lists(r)}
        if r.random() < 0.3:
            body["seed"] = r.choice([1, -1, 2**70, "1", None, True, 1.5])
        return json.dumps(body).encode(), True
    if k == 6:
        return r.randbytes(r.randint(0, 2000)), False
    return ('{"images": [' + "[" * 20 + "0" + "]" * 20).encode(), False  # truncated


def _png_body(r: random.Random) -> bytes:
    k = r.randrange(5)
    if k == 0:
        return _png(r.choice([28, 13_000, 20_000, 2**31 - 1, 0]), r.choice([28, 13_000, 65_535, 1]))
    if k == 1:  # a readable image, mutated
        raw = bytearray(_png(28, 28, b"\0" * 29 * 28))
        for _ in range(r.randint(1, 8)):
            raw[r.randrange(len(raw))] = r.randrange(256)
        return bytes(raw)
    if k == 2:
        return _png(28, 28, b"\0" * 29 * 28)[: r.randint(0, 60)]
    if k == 3:
        return _png(28, 28, b"\0" * 29 * 28)
    return b"\x89PNG\r\n\x1a\n" + r.randbytes(r.randint(0, 3000))


def _header_value(r: random.Random) -> str:
    return "".join(chr(r.choice([r.randint(33, 126), r.randint(0xA1, 0xFF)])) for _ in range(r.randint(0, 80)))


def http_case(r: random.Random, defenses: list[str], cheap: str = "target") -> HttpCase:
    """One request to any of ``defenses``; the few that may be well formed go to ``cheap`` (answering costs)."""
    defense = r.choice(defenses)
    if r.random() < 0.03:
        ok = np.random.default_rng(r.randrange(2**32)).random((r.randint(1, 2), 1, 28, 28)).tolist()
        body = json.dumps({"images": ok}).encode()
        return HttpCase("POST", f"/v1/{cheap}/classify", body, {"Content-Type": "application/json"})
    if r.random() < 0.08:
        path = r.choice(
            [f"/v1/{'x' * r.randint(1, 300)}/classify", "/v1/%2e%2e/classify", "/v1//classify", "/admin", "/v1"]
        )
        return HttpCase(r.choice(["GET", "POST", "PUT", "DELETE"]), path, r.randbytes(r.randint(0, 50)))
    kind = r.choice(CONTENT_TYPES)
    body, maybe_valid = (_png_body(r), True) if kind.startswith("image/") or "octet" in kind else _json_body(r)
    defense = cheap if maybe_valid else defense
    headers = {"Content-Type": kind}
    if r.random() < 0.3:
        headers["X-Admin-Token"] = _header_value(r)
    if r.random() < 0.3:
        headers["X-Client-Id"] = _header_value(r)
    method = "POST" if r.random() < 0.95 else r.choice(["GET", "PUT", "PATCH"])
    return HttpCase(method, f"/v1/{defense}/classify", body, headers)


def grpc_case(
    r: random.Random, defenses: list[str], make: Callable[..., object], cheap: str = "target"
) -> tuple[object | bytes, str]:
    """``(request, client id)``: a ClassifyRequest built with ``make`` from any field values, or raw bytes
    that are no protobuf message (one in ten)."""
    client = "".join(chr(r.randint(33, 126)) for _ in range(r.randint(1, 40)))
    if r.random() < 0.1:
        return r.randbytes(r.randint(1, 300)), client
    ndim = r.choice([0, 1, 3, 4, 4, 4, 5, 70])
    shape = [r.choice([1, 1, 28, 28, 0, -1, 2**32, 2**63 - 1, -(2**63), 33]) for _ in range(ndim)]
    defense = r.choice([*defenses, "", "x" * 300, "t\u00e9st", "../target"])
    if r.random() < 0.4:  # well formed but for dtype or size: to a cheap defense (answering costs)
        shape, defense = [r.randint(1, 2), 1, 28, 28], cheap
    n = int(np.prod(shape, dtype=object)) if shape else 0  # exact: no wrap-around
    size = n * 4 if 0 < n * 4 < 200_000 and r.random() < 0.7 else r.randint(0, 5000)
    tensor = np.random.default_rng(r.randrange(2**32)).random(size // 4, dtype=np.float32).tobytes()[:size]
    fields = {
        "defense": defense,
        "tensor": tensor if r.random() < 0.8 else r.randbytes(size),
        "shape": shape,
        "dtype": r.choice(["float32", "float32", "float64", "uint8", "int64", "", "object", "\u00ff"]),
    }
    if r.random() < 0.2:
        fields["admin_token"] = _header_value(r)
    if r.random() < 0.2:
        fields["seed"] = r.choice([0, 1, -1, 2**63 - 1])
    return make(**fields), client
