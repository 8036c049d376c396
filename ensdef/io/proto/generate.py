"""Regenerate ``ensdef_pb2.py`` and ``ensdef_pb2_grpc.py`` from ``ensdef.proto`` with grpcio-tools
(``python -m ensdef.io.proto.generate [OUT_DIR]``); a test checks that the committed modules match."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from grpc_tools import protoc

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent.parent


def generate(out: Path = ROOT) -> list[Path]:
    """Write the modules under ``out/ensdef/io/proto/``; returns their paths."""
    (out / "ensdef" / "io" / "proto").mkdir(parents=True, exist_ok=True)
    grpc_include = Path(protoc.__file__).parent / "_proto"
    rc = protoc.main(
        [
            "protoc",
            f"-I{ROOT}",
            f"-I{grpc_include}",
            f"--python_out={out}",
            f"--grpc_python_out={out}",
            "ensdef/io/proto/ensdef.proto",
        ]
    )
    if rc != 0:
        raise RuntimeError(f"protoc failed with exit code {rc}")
    return [out / "ensdef" / "io" / "proto" / f for f in ("ensdef_pb2.py", "ensdef_pb2_grpc.py")]


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for p in generate(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT):
        logging.getLogger(__name__).info("wrote %s", p)
