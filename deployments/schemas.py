"""The HTTP API's request and response models, for the OpenAPI document (``/docs``, ``/openapi.json``).

The classify route reads its body itself (streamed, bounded, scanned before parsing: ``deployments.ingress``),
so these pydantic models describe the wire format and give examples; they are not the parser."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class ClassifyBody(BaseModel):
    """Exactly one of ``images`` and ``npy``."""

    images: list[Any] | None = Field(
        None, description="nested lists [B, C, H, W] (or [C, H, W], [H, W] for one image), values in [0, 1]"
    )
    npy: str | None = Field(None, description="base64 of a .npy file: float32, float64 or uint8 (scaled by 1/255)")
    seed: int | None = Field(None, ge=0, lt=2**63, description="replay a request's randomness (admin token only)")


class Answer(BaseModel):
    label: int | None = Field(description="the class; null when the defense abstained")
    flagged: bool = Field(description="the defense believes the input is adversarial")
    abstained: bool
    degraded: bool = Field(description="some members did not answer; the vote went on without them")
    diagnostics: dict[str, Any] | None = Field(None, description="votes, team, p-value (admin token only)")


class ClassifyResponse(BaseModel):
    defense: str
    answers: list[Answer]


class Problem(BaseModel):
    detail: str = Field(description="what was wrong, in one line")


EXAMPLE = {"images": [[[0.0] * 4] * 4]}  # shape only: the service's own size is in GET /v1/defenses


def classify_openapi() -> dict[str, Any]:
    """``openapi_extra`` for the classify route: the JSON body's schema and example, and image uploads."""
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": ClassifyBody.model_json_schema(),
                    "examples": {
                        "lists": {"summary": "nested lists (here 4 x 4; use the listed input shape)", "value": EXAMPLE},
                        "npy": {"summary": "base64 .npy", "value": {"npy": "k05VTVBZAQB2AHsnZGVzY3InOiAn..."}},
                    },
                },
                "image/png": {"schema": {"type": "string", "format": "binary"}},
            },
        }
    }


ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": Problem, "description": text}
    for code, text in {
        403: "a seed or diagnostics without the admin token",
        404: "unknown defense",
        408: "the body did not arrive in time",
        411: "no Content-Length (chunked uploads are refused)",
        413: "payload over the byte or image limit",
        415: "unsupported content type",
        422: "malformed or invalid input (shape, dtype, range, NaN)",
        429: "too many concurrent requests from this address",
        503: "below quorum, still training, overloaded or shutting down (Retry-After)",
    }.items()
}
