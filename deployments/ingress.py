"""Ingress: HTTP (FastAPI through ``@serve.ingress``) and gRPC (Serve's gRPC proxy calls ``Classify`` and
``ListDefenses`` on this deployment). Parses and validates, routes the request (itself, when packed, or
through the defense's router deployment), answers. Every bad
input is a 4xx / INVALID_ARGUMENT with a message; below quorum is 503 / UNAVAILABLE.

The client is the owner of the request's API key when keys are configured (``Authorization: Bearer`` or
``X-API-Key``; gRPC metadata ``authorization`` / ``x-api-key``), else what it declares (``X-Client-Id`` / gRPC
metadata ``client-id``, else the peer address). Its quota, counts and stateful detection are the guard's
(:mod:`deployments.guard`).
"""

# no `from __future__ import annotations`: FastAPI must see the real Request annotation
import asyncio
import collections
import hashlib
import json
import logging
import os
import secrets
import time
from dataclasses import replace
from typing import Any

import grpc
import torch
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from ray import serve
from ray.serve.grpc_util import RayServegRPCContext
from ray.serve.handle import DeploymentHandle
from ray.serve.metrics import Counter

from deployments.drain import Draining, DrainWatch
from deployments.guard import Guard, Refused, Unauthenticated
from deployments.router import Routing, Verdict
from deployments.schemas import ERRORS, ClassifyResponse, classify_openapi
from deployments.settings import GuardSettings
from ensdef.errors import EnsdefError, InvalidInput, RetryLater, TooLarge
from ensdef.guard.keys import presented_key
from ensdef.guard.quota import QuotaExceeded
from ensdef.io.proto import ensdef_pb2
from ensdef.io.validation import Limits, check_bytes, from_image_file, from_raw, parse_json_body
from ensdef.store import ArtifactStore
from ensdef.training.schedule import TRAINING_PROGRESS, training_view

log = logging.getLogger(__name__)
app = FastAPI(
    title="ensdef",
    description="Image classification behind ensemble defenses against adversarial examples.",
    version="1",
)
IMAGE_TYPES = ("image/png", "image/jpeg", "image/bmp", "image/gif", "application/octet-stream")


class Unknown(LookupError):
    pass


class Training(RetryLater):
    """The defense is not served yet: its members are still training (``retry_after_s``: the estimate)."""


PROGRESS_TTL_S = 1.0  # the training progress is read from the store at most once a second


def client_label(raw: str) -> str:
    """A metrics tag for a client id: printable ASCII up to 64 characters kept, anything else hashed."""
    if raw and len(raw) <= 64 and raw.isascii() and raw.isprintable():
        return raw
    return "sha256:" + hashlib.sha256(raw.encode("utf-8", "replace")).hexdigest()[:16] if raw else "unknown"


def client_address(peer: str, forwarded: str | None, proxies: frozenset[str]) -> str:
    """The client's address: the last entry of ``X-Forwarded-For`` (``forwarded``) when ``peer`` is one of
    ``proxies`` (HAProxy appends the peer it saw; earlier entries are the client's own claim), else ``peer``.
    ``peer`` may be a gRPC peer string (``ipv4:1.2.3.4:5678``, ``ipv6:[::1]:5678``)."""
    host = peer
    if peer.startswith(("ipv4:", "ipv6:")):
        host = peer[5:].rsplit(":", 1)[0].strip("[]")
    if forwarded and host in proxies:
        last = forwarded.rsplit(",", 1)[-1].strip()
        if last:
            return last
    return peer


def proxy_addresses() -> frozenset[str]:
    """Where Serve's HAProxy connects from (this node's loopback and address) when the cluster runs in its
    high-throughput mode; empty otherwise (Serve's Python proxy passes the client's address itself)."""
    if os.environ.get("RAY_SERVE_ENABLE_HA_PROXY") != "1":
        return frozenset()
    import ray

    return frozenset({"127.0.0.1", "::1", ray.util.get_node_ip_address()})


class LengthRequired(ValueError):
    """A body without a declared length (HTTP 411)."""


class SlowBody(TimeoutError):
    """The request body did not fully arrive within the ingress's ``body_timeout_s`` (HTTP 408)."""


async def read_body(request: Request, limit: int, timeout_s: float) -> bytes:
    """The body, read in chunks and refused (413) as soon as it passes ``limit`` bytes (chunked uploads
    declare no length, so the declared one cannot be trusted alone); :class:`SlowBody` when it has not fully
    arrived within ``timeout_s``."""
    chunks, n = [], 0

    async def read() -> None:
        nonlocal n
        async for chunk in request.stream():
            n += len(chunk)
            if n > limit:
                raise TooLarge(f"payload over the limit of {limit} bytes")
            chunks.append(chunk)

    try:
        await asyncio.wait_for(read(), timeout_s)
    except TimeoutError:
        raise SlowBody(f"the request body did not arrive within {timeout_s:g} s") from None
    return b"".join(chunks)


def _replica_name() -> str:
    try:
        return str(serve.get_replica_context().replica_id)
    except Exception:  # outside a replica (tests of the class)
        return f"ingress-{id(object())}"


def _flagged(v: Verdict) -> Verdict:
    """Every answer flagged (its label kept): the client is under a detection's ``flag`` cooldown."""
    return Verdict([replace(d, flagged=True) for d in v.decisions], v.unavailable)


def _fail(ctx: RayServegRPCContext, code: grpc.StatusCode, details: str) -> ensdef_pb2.ClassifyResponse:
    ctx.set_code(code)
    ctx.set_details(details)
    return ensdef_pb2.ClassifyResponse()


@serve.deployment
@serve.ingress(app)
class Ingress:
    def __init__(
        self,
        routers: dict[str, DeploymentHandle],
        inline: dict[str, Any] | None,
        shape: list[int],
        max_images: int,
        max_bytes: int,
        admin_token: str,
        store: str | None = None,
        body_timeout_s: float = 5.0,
        max_client_requests: int = 64,
        guard: GuardSettings | None = None,
    ) -> None:
        """``routers``: defense -> router deployment; ``inline``: :class:`Routing` arguments for the defenses this
        replica routes itself (packed); ``store``: where a training run started by ``ensdef serve
        --train-missing`` reports the defenses still training; ``guard``: keys, quotas and detection (its
        detection threshold already calibrated)."""
        self.routers = routers
        self.local = Routing(**inline) if inline else None
        self.served = sorted(set(routers) | set(self.local.defenses if self.local else ()))
        self.limits = Limits((int(shape[0]), int(shape[1]), int(shape[2])), max_images, max_bytes)
        self.admin_token = admin_token
        self.body_timeout_s, self.max_client_requests = body_timeout_s, max_client_requests
        self.inflight: collections.Counter[str] = collections.Counter()  # HTTP requests per client address
        self.proxies = proxy_addresses()
        self.store = ArtifactStore(store) if store else None
        self._progress: tuple[float, dict[str, dict[str, Any]]] = (-PROGRESS_TTL_S, {})
        self.guard = Guard(guard or GuardSettings())
        self.bad = Counter("ensdef_bad_requests", description="refused requests", tag_keys=("reason",))
        self.watch = DrainWatch(_replica_name())

    # --- shared -----------------------------------------------------------------------------------------
    def _admin(self, token: str | None) -> bool:
        """Constant-time comparison of bytes (any header value: latin-1 from HTTP, UTF-8 from gRPC)."""
        if not (self.admin_token and token):
            return False
        return secrets.compare_digest(token.encode("utf-8", "replace"), self.admin_token.encode("utf-8"))

    def _peer(self, request: Request) -> str:
        return client_address(
            request.client.host if request.client else "", request.headers.get("x-forwarded-for"), self.proxies
        )

    def _seed(self, seed: Any, admin: bool) -> int:
        """Fresh randomness per request; a caller-chosen seed would let an attacker fix it (admin only)."""
        if seed is None:
            return secrets.randbits(62)
        if not admin:
            raise PermissionError("'seed' needs the admin token")
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
            raise InvalidInput("'seed' must be a non-negative integer below 2**63")
        return seed

    def training(self) -> dict[str, dict[str, Any]]:
        """Defenses not served yet whose members are training (state, members done and total, retry after)."""
        now = time.monotonic()
        if self.store is None or now - self._progress[0] < PROGRESS_TTL_S:
            return self._progress[1]
        try:
            payload = self.store.load_json(TRAINING_PROGRESS) if self.store.has_json(TRAINING_PROGRESS) else {}
            view = {d: v for d, v in training_view(payload).items() if d not in self.served}
        except (EnsdefError, OSError, ValueError):  # mid-write (hash mismatch) or unreadable: the last view
            view = self._progress[1]
        self._progress = (now, view)
        return view

    async def _decide(self, defense: str, x: torch.Tensor, seed: int, client: str) -> Verdict:
        """Route to the defense after the guard has admitted the request; answers to a client under a
        ``flag`` detection's cooldown come back flagged."""
        if defense not in self.served:
            t = self.training().get(defense)
            if t is not None and t["state"] == "deploying":
                raise Training(f"{defense} is trained and being deployed", t["retry_after_s"])
            if t is not None:
                raise Training(
                    f"{defense} is {t['state']}: {t['members_done']} of {t['members_total']} members trained, "
                    f"about {t['retry_after_s']} s left",
                    t["retry_after_s"],
                )
            raise Unknown(f"unknown defense {defense!r}; served: {', '.join(self.served)}")
        flag = await self.guard.admit(client, x)
        await self.watch.admit()
        try:
            if self.local and defense in self.local.defenses:
                verdict = await self.local.classify(defense, x, seed)
            else:
                verdict = await self.routers[defense].classify.remote(defense, x, seed)
        finally:
            self.watch.done()
        return _flagged(verdict) if flag else verdict

    # --- HTTP -------------------------------------------------------------------------------------------
    @app.get("/healthz")
    def healthz(self) -> JSONResponse:
        """200 while serving; 503 while draining for shutdown (load balancers stop sending)."""
        status = "draining" if self.watch.draining else "ok"
        body = {"status": status, "defenses": self.served, "training": sorted(self.training())}
        return JSONResponse(body, status_code=503 if self.watch.draining else 200)

    @app.get("/v1/defenses")
    def defenses(self) -> dict[str, Any]:
        """Served defenses, and (while ``ensdef serve --train-missing`` trains) those still training."""
        c, h, w = self.limits.shape
        return {
            "defenses": self.served,
            "states": {**{d: {"state": "serving"} for d in self.served}, **self.training()},
            "input": {"shape": [c, h, w], "range": [0, 1], "max_images": self.limits.max_images},
        }

    @app.get("/v1/admin/clients")
    def clients(self, request: Request, top: int = 50) -> JSONResponse:
        """Operators (``X-Admin-Token``): the ``top`` clients by images, with their counts, metrics series
        and detections."""
        if not self._admin(request.headers.get("x-admin-token")):
            raise HTTPException(403, "needs the admin token")
        return JSONResponse({"clients": self.guard.clients(max(1, min(top, 10_000)))})

    @app.post(
        "/v1/{defense}/classify",
        response_model=ClassifyResponse,
        responses=ERRORS,
        openapi_extra=classify_openapi(),
    )
    async def classify(self, defense: str, request: Request) -> JSONResponse:
        """Body: JSON ``{"images": nested lists}`` or ``{"npy": base64 .npy}`` (optional ``"seed"``, admin
        only), or one image file (``Content-Type: image/png``). Header ``X-Admin-Token`` adds diagnostics.
        At most ``max_client_requests`` at once per client address (429 above)."""
        peer = self._peer(request)
        if self.inflight[peer] >= self.max_client_requests:
            self.bad.inc(1, tags={"reason": "client_concurrency"})
            raise HTTPException(429, "too many concurrent requests from this address", headers={"Retry-After": "1"})
        self.inflight[peer] += 1
        try:
            return await self._classify(defense, request)
        finally:
            self.inflight[peer] -= 1
            if not self.inflight[peer]:
                del self.inflight[peer]

    async def _classify(self, defense: str, request: Request) -> JSONResponse:
        admin = self._admin(request.headers.get("x-admin-token"))
        h = request.headers
        try:
            key = presented_key(h.get("authorization"), h.get("x-api-key"))
            client = self.guard.identify(key, client_label(h.get("x-client-id") or self._peer(request)))
            declared = request.headers.get("content-length", "")
            if not declared.isdigit():  # Serve's proxy buffers a body as fast as it arrives: refuse before any
                raise LengthRequired("send the body with a Content-Length header; chunked uploads are refused")
            check_bytes(int(declared), self.limits, 2)  # refused before the body is read
            raw = await read_body(request, 2 * self.limits.max_bytes, self.body_timeout_s)
            kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
            if kind in IMAGE_TYPES:
                x, seed = from_image_file(raw, self.limits), None
            elif kind in ("application/json", ""):
                x, seed = parse_json_body(raw, self.limits)
            else:
                raise HTTPException(415, f"unsupported content type {kind[:40]!r}; send JSON or an image file")
            verdict = await self._decide(defense, x, self._seed(seed, admin), client)
        except InvalidInput as e:
            self.bad.inc(1, tags={"reason": "too_large" if isinstance(e, TooLarge) else "invalid"})
            raise HTTPException(413 if isinstance(e, TooLarge) else 422, str(e)) from None
        except PermissionError as e:
            raise HTTPException(403, str(e)) from None
        except Unauthenticated as e:
            self.bad.inc(1, tags={"reason": "unauthenticated"})
            raise HTTPException(401, str(e), headers={"WWW-Authenticate": "Bearer"}) from None
        except QuotaExceeded as e:
            raise HTTPException(429, str(e), headers={"Retry-After": str(e.retry_after_s)}) from None
        except Refused as e:
            raise HTTPException(403, str(e), headers={"Retry-After": str(e.retry_after_s)}) from None
        except SlowBody as e:
            raise HTTPException(408, str(e)) from None
        except LengthRequired as e:
            raise HTTPException(411, str(e), headers={"Connection": "close"}) from None
        except Unknown as e:
            raise HTTPException(404, str(e)) from None
        except Training as e:
            raise HTTPException(503, str(e), headers={"Retry-After": str(e.retry_after_s)}) from None
        except Draining as e:  # the connection is closed too: a client's next request finds the port closed
            raise HTTPException(503, str(e), headers={"Retry-After": "5", "Connection": "close"}) from None
        if verdict.unavailable:
            raise HTTPException(503, f"{defense}: {verdict.unavailable}")
        return JSONResponse({"defense": defense, "answers": [d.to_json(admin) for d in verdict.decisions]})

    # --- gRPC -------------------------------------------------------------------------------------------
    async def Classify(  # noqa: N802  (the RPC's name)
        self, request: ensdef_pb2.ClassifyRequest, grpc_context: RayServegRPCContext
    ) -> ensdef_pb2.ClassifyResponse:
        admin = self._admin(request.admin_token)
        meta = dict(grpc_context.invocation_metadata())
        try:
            key = presented_key(meta.get("authorization"), meta.get("x-api-key"))
            peer = client_address(grpc_context.peer(), meta.get("x-forwarded-for"), self.proxies)
            client = self.guard.identify(key, client_label(str(meta.get("client-id") or peer)))
            x = from_raw(request.tensor, list(request.shape), request.dtype, self.limits)
            seed = self._seed(request.seed if request.HasField("seed") else None, admin)
            verdict = await self._decide(request.defense, x, seed, client)
        except InvalidInput as e:
            self.bad.inc(1, tags={"reason": "invalid"})
            return _fail(grpc_context, grpc.StatusCode.INVALID_ARGUMENT, str(e))
        except Unauthenticated as e:
            self.bad.inc(1, tags={"reason": "unauthenticated"})
            return _fail(grpc_context, grpc.StatusCode.UNAUTHENTICATED, str(e))
        except (QuotaExceeded, Refused) as e:
            grpc_context.set_trailing_metadata([("retry-after", str(e.retry_after_s))])
            code = grpc.StatusCode.PERMISSION_DENIED if isinstance(e, Refused) else grpc.StatusCode.RESOURCE_EXHAUSTED
            return _fail(grpc_context, code, str(e))
        except PermissionError as e:
            return _fail(grpc_context, grpc.StatusCode.PERMISSION_DENIED, str(e))
        except Unknown as e:
            return _fail(grpc_context, grpc.StatusCode.INVALID_ARGUMENT, str(e))
        except (Training, Draining) as e:
            return _fail(grpc_context, grpc.StatusCode.UNAVAILABLE, str(e))
        except Exception:  # a bug: logged here with its traceback, never sent to the client
            log.exception("Classify failed")
            return _fail(grpc_context, grpc.StatusCode.INTERNAL, "internal error; the service logged it")
        if verdict.unavailable:
            return _fail(grpc_context, grpc.StatusCode.UNAVAILABLE, f"{request.defense}: {verdict.unavailable}")
        answers = []
        for d in verdict.decisions:
            a = ensdef_pb2.Answer(flagged=d.flagged, abstained=d.abstained, degraded=d.degraded)
            if not d.abstained:
                a.label = d.label
            if admin:
                a.diagnostics_json = json.dumps(dict(d.diagnostics))
            answers.append(a)
        return ensdef_pb2.ClassifyResponse(defense=request.defense, answers=answers)

    async def ListDefenses(  # noqa: N802
        self, request: ensdef_pb2.ListDefensesRequest, grpc_context: RayServegRPCContext
    ) -> ensdef_pb2.ListDefensesResponse:
        return ensdef_pb2.ListDefensesResponse(defenses=self.served)
