"""Serve's own latency floor on this machine: what a request costs with no ensdef code in it.

A second application (``floor``, route prefix ``/floor``) beside the served one, on the same Ray and through the
same ingress mode: a bare FastAPI ingress replica that answers from the body alone (``/floor/bare``), the same
with one deployment-handle call to an echo replica (``/floor/hop``: the pool layout's ingress-to-member hop),
and with that replica batching through ``@serve.batch`` (``/floor/batched``; the wait of the member hosts
measured beside it, by default the shipped one). Bodies
are the size of a one-image request. :func:`floor_latency` gives the p50 and p99 of each at concurrency 1, so
the served defenses' latency can be read against what Serve itself costs for the same path.

Alone (a local Ray per ingress mode, one after the other):

    .venv/bin/python benchmarks/serve_floor.py [--modes haproxy,proxy,direct] [--env KEY=VALUE]
"""

# no `from __future__ import annotations`: FastAPI must see the real Request annotation

import argparse
import json
import statistics
import time

import ray
import requests
from fastapi import FastAPI, Request
from ray import serve

from deployments.launch import deploy_proxies, ingress_targets, start_local
from deployments.modes import PORT_SPAN, IngressMode
from deployments.settings import MemberOptions

APP, PREFIX = "floor", "/floor"
PATHS = ("bare", "hop", "batched")
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
@serve.ingress(floor_api)
class Floor:
    def __init__(self, echo: object, batched: object) -> None:
        self.echo, self.batched = echo, batched

    @floor_api.post("/bare")
    async def bare(self, request: Request) -> dict[str, int]:
        return {"n": len(await request.body())}

    @floor_api.post("/hop")
    async def hop(self, request: Request) -> dict[str, int]:
        return {"n": await self.echo.run.remote(await request.body())}

    @floor_api.post("/batched")
    async def batched_hop(self, request: Request) -> dict[str, int]:
        return {"n": await self.batched.run.remote(await request.body())}


def deploy_floor(ingress: IngressMode, http_base: str, batch_wait_s: float) -> str:
    """Deploy the floor application on the running Serve (its batching echo waits ``batch_wait_s`` for more
    calls); its base URL (with direct ingress, its own replica's port on the host of ``http_base``)."""
    serve.run(Floor.bind(Echo.bind(), BatchedEcho.bind(batch_wait_s)), name=APP, route_prefix=PREFIX, blocking=False)
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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--modes", default=",".join(m.value for m in IngressMode))
    ap.add_argument("--requests", type=int, default=200, help="requests per path")
    ap.add_argument(
        "--batch-wait-s", type=float, default=MemberOptions.batch_wait_timeout_s, help="the batching echo's wait"
    )
    ap.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", help="Ray's environment (repeatable)")
    a = ap.parse_args()
    extra = dict(kv.split("=", 1) for kv in a.env)
    report = {}
    for n, mode in enumerate(IngressMode(m) for m in a.modes.split(",")):
        http_port, grpc_port = 8123 + 200 * n, 9323 + 200 * n
        start_local(2, env={**(mode.env(http_port, grpc_port) or {}), **extra})
        try:
            shift = PORT_SPAN if mode is IngressMode.DIRECT else 0
            deploy_proxies("127.0.0.1", http_port + shift, grpc_port + shift)
            report[mode.value] = floor_latency(
                deploy_floor(mode, f"http://127.0.0.1:{http_port}", a.batch_wait_s), a.requests
            )
        finally:
            serve.shutdown()
            ray.shutdown()
    print(json.dumps({"env": extra, "batch_wait_s": a.batch_wait_s, "floor": report}, indent=2))


if __name__ == "__main__":
    main()
