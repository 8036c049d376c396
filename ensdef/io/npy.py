"""``.npy`` bytes read without trusting them: the header is parsed with numpy's own reader (bounded size,
literal values only), the dtype must be one the service takes, and the declared shape is checked with exact
integer arithmetic against the bytes that follow before a single array byte is allocated. Archives
(``.npz``), pickles and object arrays are refused."""

from __future__ import annotations

import io
import math

import numpy as np
from numpy.lib import format as npy_format

from ensdef.errors import InvalidInput

MAX_HEADER = 1024
MAX_RANK = 4


def read_npy(raw: bytes, what: str = "'npy'") -> np.ndarray:
    """The array in ``raw`` (a ``.npy`` file); :class:`InvalidInput` names
    what is wrong (``what``: how the message calls the input)."""
    f = io.BytesIO(raw)
    try:
        version = npy_format.read_magic(f)
        read = {(1, 0): npy_format.read_array_header_1_0, (2, 0): npy_format.read_array_header_2_0}.get(version)
        if read is None:
            raise InvalidInput(f"{what}: .npy format version {version} is not supported")
        shape, fortran, dtype = read(f, max_header_size=MAX_HEADER)
    except InvalidInput:
        raise
    except Exception:  # noqa: BLE001 (any bytes may follow the magic: numpy raises ValueError, SyntaxError, ...)
        raise InvalidInput(f"{what} is not a .npy file (an unreadable header)") from None
    if dtype.hasobject or dtype.kind not in "fu" or dtype.fields is not None or dtype.subdtype is not None:
        raise InvalidInput(f"{what}: dtype {dtype.name} is not supported; send float32, float64 or uint8")
    if len(shape) > MAX_RANK:
        raise InvalidInput(f"{what}: rank {len(shape)} is above {MAX_RANK}")
    need = math.prod(int(s) for s in shape) * dtype.itemsize  # exact: no wrap-around
    have = len(raw) - f.tell()
    if need != have:
        raise InvalidInput(f"{what}: the header declares shape {list(shape)} ({need} bytes), the file holds {have}")
    a = np.frombuffer(raw, dtype=dtype, count=need // dtype.itemsize, offset=f.tell())
    return a.reshape(shape, order="F" if fortran else "C").copy()  # writable, at most the payload's size
