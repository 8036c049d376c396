"""Serve's own latency floor on this machine: what a request costs with no ensdef code in it.

A second application (``floor``, route prefix ``/floor``) beside the served one, on the same Ray and through the
same ingress mode: a bare FastAPI ingress replica that answers from the body alone (``/floor/bare``), the same
with one deployment-handle call to an echo replica (``/floor/hop``: the pool layout's ingress-to-member hop),
and with that replica batching through ``@serve.batch`` (``/floor/batched``; the wait of the member hosts
measured beside it, by default the shipped one). Bodies
are the size of a one-image request. :func:`floor_latency` gives the p50 and p99 of each at concurrency 1, so
the served defenses' latency can be read against what Serve itself costs for the same path.

With ``--store``, also Serve's throughput floor for one network: the same bare ingress reading a raw ``.npy``
body (no JSON, no base64, no validation, no guard) and calling a batching replica that runs the store's
``target`` (``/floor/forward``: ``@serve.batch``, torch threads, pass size and environment as the shipped
``deployments/serve.yaml`` gives the member hosts), loaded by ``--concurrency`` clients sending 64-image
requests, against the same network's forward in this process before Ray starts. It bounds what any ingress
code could reach with members kept apart on this machine.

Alone (a local Ray per ingress mode, one after the other):

    .venv/bin/python benchmarks/serve_floor.py [--modes haproxy,proxy,direct] [--env KEY=VALUE]
        [--store DIR [--seconds 8] [--rounds 3] [--concurrency 32]]
"""

# no `from __future__ import annotations`: FastAPI must see the real Request annotation

import argparse
import asyncio
import io
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
import numpy as np
import ray
import requests
import torch
from fastapi import FastAPI, Request
from ray import serve

from deployments.config import load_serve_config
from deployments.launch import deploy_proxies, ingress_targets, start_local
from deployments.modes import PORT_SPAN, IngressMode
from deployments.settings import MemberOptions, ServeSettings
from ensdef.data import load_dataset
from ensdef.presets import load_preset
from ensdef.store import ArtifactStore

APP, PREFIX = "floor", "/floor"
PATHS = ("bare", "hop", "batched")
SERVE_YAML = Path(__file__).resolve().parent.parent / "deployments" / "serve.yaml"


def shipped() -> ServeSettings:
    """The application args of the shipped small-machine config (``deployments/serve.yaml``)."""
    return load_serve_config(SERVE_YAML).settings


def images_per_second(step: Callable[[int], object], images: int, seconds: float) -> float:
    """``images`` per call of ``step(n)`` (n = 0, 1, ...) repeated for at least ``seconds`` after one warm-up
    call: the in-process rate the served ones are read against."""
    step(0)
    n, t = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - t) < seconds:
        step(n)
        n += 1
    return n * images / elapsed


BODY = b"0" * 4200  # a one-image request: base64 .npy of 28 x 28 float32 in JSON
floor_api = FastAPI()


@serve.deployment(ray_actor_options={"num_cpus": 0.1})
class Echo:
    async def run(self, body: bytes) -> int:
        return len(body)


@serve.deployment(ray_actor_options={"num_cpus": 0.1})
class BatchedEcho:
    def __init__(self, wait_s: float) -> None:
        self.run.set_batch_wait_timeout_s(wait_s)

    @serve.batch(max_batch_size=64)
    async def run(self, bodies: list[bytes]) -> list[int]:
        return [len(b) for b in bodies]


@serve.deployment(ray_actor_options={"num_cpus": 0.1})
class Forward:
    """A member with no ensdef code: ``model``'s labels for batched calls, in passes of ``pass_images``."""

    def __init__(self, model: torch.nn.Module, threads: int, pass_images: int) -> None:
        torch.set_num_threads(threads)
        self.model, self.pass_images = model.eval(), pass_images

    @serve.batch(max_batch_size=64, batch_wait_timeout_s=0.0)
    async def run(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        with torch.inference_mode():
            y = torch.cat([self.model(c).argmax(1) for c in torch.cat(xs).split(self.pass_images)])
        return list(y.split([len(x) for x in xs]))


@serve.deployment(ray_actor_options={"num_cpus": 0.1})
@serve.ingress(floor_api)
class Floor:
    def __init__(self, echo: object, batched: object, forward: object | None = None) -> None:
        self.echo, self.batched, self.forward = echo, batched, forward

    @floor_api.post("/bare")
    async def bare(self, request: Request) -> dict[str, int]:
        return {"n": len(await request.body())}

    @floor_api.post("/hop")
    async def hop(self, request: Request) -> dict[str, int]:
        return {"n": await self.echo.run.remote(await request.body())}

    @floor_api.post("/batched")
    async def batched_hop(self, request: Request) -> dict[str, int]:
        return {"n": await self.batched.run.remote(await request.body())}

    @floor_api.post("/forward")
    async def forward_hop(self, request: Request) -> dict[str, list[int]]:
        x = torch.from_numpy(np.load(io.BytesIO(await request.body()), allow_pickle=False))
        return {"labels": (await self.forward.run.remote(x)).tolist()}  # type: ignore[union-attr]


def deploy_floor(
    ingress: IngressMode, http_base: str, batch_wait_s: float, forward: torch.nn.Module | None = None
) -> str:
    """Deploy the floor application on the running Serve (its batching echo waits ``batch_wait_s`` for more
    calls; with ``forward``, ``/floor/forward`` runs that network as the shipped member hosts would); its base
    URL (with direct ingress, its own replica's port on the host of ``http_base``)."""
    fwd = None
    if forward is not None:
        s = shipped()
        fwd = Forward.options(ray_actor_options={"num_cpus": 0.1, "runtime_env": {"env_vars": s.env_vars}})
        fwd = fwd.bind(forward, s.members.threads, s.members.max_pass_images)
    serve.run(
        Floor.bind(Echo.bind(), BatchedEcho.bind(batch_wait_s), fwd), name=APP, route_prefix=PREFIX, blocking=False
    )
    deadline = time.monotonic() + 120
    while serve.status().applications[APP].status != "RUNNING":
        if time.monotonic() > deadline:
            raise TimeoutError("the floor application did not start in 120 s")
        time.sleep(0.5)
    if ingress is IngressMode.DIRECT:
        ports = ingress_targets(APP, 60.0)
        if ports is None:
            raise RuntimeError("direct ingress: no port for the floor application")
        return f"{http_base.rsplit(':', 1)[0]}:{ports['HTTP'][0]}{PREFIX}"
    return http_base + PREFIX


def floor_latency(base: str, requests_per_path: int = 100) -> dict[str, dict[str, float]]:
    """Per path: p50 and p99 in ms of ``requests_per_path`` one-image-sized requests at concurrency 1 (after
    ten to warm up), over one keep-alive connection."""
    out = {}
    with requests.Session() as s:
        for path in PATHS:
            url = f"{base}/{path}"
            for _ in range(10):
                s.post(url, data=BODY, timeout=30).raise_for_status()
            lat = []
            for _ in range(requests_per_path):
                t = time.perf_counter()
                s.post(url, data=BODY, timeout=30).raise_for_status()
                lat.append(time.perf_counter() - t)
            lat.sort()
            out[path] = {
                "p50_ms": round(1e3 * statistics.median(lat), 2),
                "p99_ms": round(1e3 * lat[min(len(lat) - 1, int(0.99 * len(lat)))], 2),
            }
    return out


def npy(x: torch.Tensor) -> bytes:
    buf = io.BytesIO()
    np.save(buf, x.numpy())
    return buf.getvalue()


def forward_throughput(url: str, x: torch.Tensor, seconds: float, concurrency: int, k: int = 64) -> float:
    """Images per second of ``k``-image raw ``.npy`` requests (windows of ``x``, encoded before the clock) from
    ``concurrency`` asyncio clients over keep-alive connections for ``seconds``, counted until the last
    answer; every answer is checked to hold ``k`` labels."""
    bodies = [npy(x[j : j + k]) for j in range(0, len(x) - k + 1, k)]

    async def run() -> int:
        end, sent = time.perf_counter() + seconds, 0
        conn = aiohttp.TCPConnector(limit=concurrency)
        async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=120)) as session:

            async def client() -> int:
                nonlocal sent
                done = 0
                while time.perf_counter() < end:
                    sent += 1
                    async with session.post(url, data=bodies[sent % len(bodies)]) as r:
                        r.raise_for_status()
                        if len((await r.json())["labels"]) != k:
                            raise RuntimeError("an answer without one label per image")
                    done += 1
                return done

            return sum(await asyncio.gather(*(client() for _ in range(concurrency))))

    t = time.perf_counter()
    n = asyncio.run(run())
    return n * k / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--modes", default=",".join(m.value for m in IngressMode))
    ap.add_argument("--requests", type=int, default=200, help="requests per path")
    ap.add_argument(
        "--batch-wait-s", type=float, default=MemberOptions.batch_wait_timeout_s, help="the batching echo's wait"
    )
    ap.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", help="Ray's environment (repeatable)")
    ap.add_argument("--store", default=None, help="also the throughput floor, with this store's target")
    ap.add_argument("--preset", default="mnist5k", help="whose test images the throughput floor sends")
    ap.add_argument("--seconds", type=float, default=8.0, help="per throughput round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--concurrency", type=int, default=32)
    a = ap.parse_args()
    extra = dict(kv.split("=", 1) for kv in a.env)
    model, x, inproc = None, torch.empty(0), 0.0
    if a.store:
        torch.set_num_threads(shipped().members.threads)  # as the member hosts compute
        model = ArtifactStore(a.store).load_model("target")[0]
        x = load_dataset(load_preset(a.preset).dataset).test.x
        with torch.inference_mode():  # quiet: before Ray starts
            inproc = max(images_per_second(lambda _: model(x[:64]).argmax(1), 64, a.seconds / 2) for _ in range(2))
    report, tput = {}, {}
    for n, mode in enumerate(IngressMode(m) for m in a.modes.split(",")):
        http_port, grpc_port = 8123 + 200 * n, 9323 + 200 * n
        start_local(2, env={**(mode.env(http_port, grpc_port) or {}), **extra})
        try:
            shift = PORT_SPAN if mode is IngressMode.DIRECT else 0
            deploy_proxies("127.0.0.1", http_port + shift, grpc_port + shift)
            base = deploy_floor(mode, f"http://127.0.0.1:{http_port}", a.batch_wait_s, model)
            report[mode.value] = floor_latency(base, a.requests)
            if model is not None:
                forward_throughput(f"{base}/forward", x, 2.0, a.concurrency)  # warm-up
                rounds = [forward_throughput(f"{base}/forward", x, a.seconds, a.concurrency) for _ in range(a.rounds)]
                tput[mode.value] = {
                    "images_per_s": [round(r) for r in rounds],
                    "best_ratio": round(max(rounds) / inproc, 3),
                }
        finally:
            serve.shutdown()
            ray.shutdown()
    out = {"env": extra, "batch_wait_s": a.batch_wait_s, "floor": report}
    if model is not None:
        out["throughput_floor"] = {"inprocess_images_per_s": round(inproc), "concurrency": a.concurrency, **tput}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
