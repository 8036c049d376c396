"""A small gRPC client for a served ensdef (``ensdef.io.proto``): send tensors, get answers as dicts."""

from __future__ import annotations

import base64
import io
import json
from typing import Any

import grpc
import numpy as np
import torch

from ensdef.io.proto import ensdef_pb2, ensdef_pb2_grpc


class EnsdefClient:
    """``EnsdefClient("localhost:9000").classify("noisy-vote", x)`` with ``x`` ``[B, C, H, W]`` in [0, 1].

    Errors arrive as ``grpc.RpcError`` with ``INVALID_ARGUMENT`` (bad input or unknown defense),
    ``PERMISSION_DENIED`` (seed without the admin token), ``UNAVAILABLE`` (too few members answered),
    ``UNAUTHENTICATED`` (the service has API keys and ``api_key`` is not one) or ``RESOURCE_EXHAUSTED`` (over
    quota; trailing metadata ``retry-after``)."""

    def __init__(self, address: str, application: str = "ensdef", timeout_s: float = 30.0, api_key: str = "") -> None:
        self.channel = grpc.insecure_channel(address)
        self.stub = ensdef_pb2_grpc.EnsdefStub(self.channel)
        self.metadata: tuple[tuple[str, str], ...] = (("application", application),)
        if api_key:
            self.metadata += (("x-api-key", api_key),)
        self.timeout_s = timeout_s

    def classify(
        self, defense: str, x: torch.Tensor | np.ndarray, admin_token: str = "", seed: int | None = None
    ) -> list[dict[str, Any]]:
        """One answer per image: ``label`` (None when abstained), ``flagged``, ``abstained``, ``degraded``
        and, with the admin token, ``diagnostics``."""
        req = classify_request(defense, x, admin_token, seed)
        resp = self.stub.Classify(req, metadata=self.metadata, timeout=self.timeout_s)
        return [_answer(r) for r in resp.answers]

    def defenses(self) -> list[str]:
        resp = self.stub.ListDefenses(ensdef_pb2.ListDefensesRequest(), metadata=self.metadata, timeout=self.timeout_s)
        return list(resp.defenses)

    def close(self) -> None:
        self.channel.close()


def classify_request(
    defense: str, x: torch.Tensor | np.ndarray, admin_token: str = "", seed: int | None = None
) -> ensdef_pb2.ClassifyRequest:
    """The gRPC request for images ``x`` ``[B, C, H, W]``: little-endian tensor bytes with shape and dtype."""
    a = np.ascontiguousarray(x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else x)
    dtype = {np.dtype(np.float32): "float32", np.dtype(np.float64): "float64", np.dtype(np.uint8): "uint8"}
    return ensdef_pb2.ClassifyRequest(
        defense=defense,
        tensor=a.astype(a.dtype.newbyteorder("<")).tobytes(),
        shape=list(a.shape),
        dtype=dtype.get(a.dtype, str(a.dtype)),
        admin_token=admin_token,
        seed=seed,
    )


def npy_body(x: torch.Tensor | np.ndarray, seed: int | None = None) -> dict[str, Any]:
    """The HTTP JSON body ``{"npy": base64 .npy}`` for ``x`` ``[B, C, H, W]``: the compact encoding (a 32-image
    MNIST batch is 134 KB against 510 KB of nested lists, and parses without a float-by-float loop)."""
    a = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(a), allow_pickle=False)
    body: dict[str, Any] = {"npy": base64.b64encode(buf.getvalue()).decode("ascii")}
    if seed is not None:
        body["seed"] = seed
    return body


def _answer(r: ensdef_pb2.Answer) -> dict[str, Any]:
    out: dict[str, Any] = {
        "label": r.label if r.HasField("label") else None,
        "flagged": r.flagged,
        "abstained": r.abstained,
        "degraded": r.degraded,
    }
    if r.diagnostics_json:
        out["diagnostics"] = json.loads(r.diagnostics_json)
    return out
