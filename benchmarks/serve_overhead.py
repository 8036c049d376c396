"""Served against in-process, per defense, measured side by side in one run on one machine.

* throughput: HTTP (and, with ``--grpc``, gRPC) at concurrency 32 with ``--images-per-request`` images per
  request (64 by default, the service's ``max_images``; member hosts batch concurrent requests), sustained for
  ``--seconds``, against the in-process batched ``decide`` of batches of the same size (at least 32 images),
  also sustained for ``--seconds``. In-process is measured twice, on the quiet machine before Ray starts and
  again right after the defense's served runs, and the faster of the two is the reference (the ratio can
  only err low). HTTP bodies are base64 ``.npy`` (``--wire json`` sends nested lists) and gRPC requests
  tensor bytes, encoded before the clock starts and sent by asyncio clients on one event loop (aiohttp over
  keep-alive connections, ``grpc.aio`` on one channel), the cheapest load generator Python offers: on two
  cores every cycle the clients spend is taken from the service;
* the member hosts' threads and environment default to ``deployments/serve.yaml`` (the small-machine config);
* latency: HTTP p50 / p99 at concurrency 1 against in-process single-image ``decide``;
* layouts side by side in one run (``--layouts``, ``INGRESS/PACKING`` pairs): by default the shipped one
  (``haproxy/pool``: Serve's high-throughput mode, HAProxy in front of the ingress replicas, one replica per
  pool), Serve's Python proxies with the same packing (``proxy/pool``), and every member inside the ingress
  replica reached directly (``direct/ingress``). Each layout gets its own local Ray (the ingress mode is fixed
  when Ray starts), one after the other;
* Serve's own floor in each layout's ingress mode (``serve_floor.py``: a bare ingress, one handle hop, one
  batched hop, at concurrency 1, no ensdef code), beside the defenses' latency (``--no-floor`` skips it);
* peak memory (PSS) of the whole served stack (every Ray process), read whenever its resident size grows,
  overall and while each defense is measured; this driver's own peak apart.

Goal on the 2-core machine, shipped layout: served throughput at least 0.8 of in-process over HTTP and gRPC,
p50 within 5 ms of in-process for single-network defenses; whole stack under 8 GB.

    .venv/bin/python benchmarks/serve_overhead.py --store DIR [--preset mnist5k]
        [--layouts haproxy/pool,proxy/pool,direct/ingress] [--defenses a,b] [--requests 64]
        [--images-per-request 64] [--wire npy|json] [--grpc] [--seconds 5] [--member-threads N]
        [--env KEY=VALUE] [--host-calls 2] [--member-replicas 1]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import statistics
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path

import aiohttp
import grpc
import ray
import requests
import torch
from ray import serve
from serve_floor import deploy_floor, floor_latency, images_per_second, shipped

from deployments.launch import deploy, start_local
from deployments.modes import IngressMode
from deployments.settings import Packing, ServeSettings
from ensdef.data import load_dataset
from ensdef.defenses.base import Defense
from ensdef.defenses.registry import DEFENSES, build_defense
from ensdef.io.client import classify_request, npy_body
from ensdef.io.proto import ensdef_pb2_grpc
from ensdef.presets import load_preset
from ensdef.rng import make_generator
from ensdef.store import ArtifactStore

BODIES = 64  # distinct request bodies per request size, cycled
JSON = {"Content-Type": "application/json"}


RAY_PROCESS = (b"ray::", b"/ray/", b"raylet", b"gcs_server", b"haproxy")
PAGE = os.sysconf("SC_PAGE_SIZE")


class PeakMemory(threading.Thread):
    """Samples the summed proportional set size (PSS: shared pages such as torch's libraries split between the
    processes that map them, so the sum is the stack's real footprint) of every Ray process on the machine: the
    served stack. This driver (load generator, and the in-process copy of every defense) is sampled apart.

    PSS is read only when the summed resident size of the stack and this driver (cheap: ``statm``) grows
    past its largest so far in the phase (by 1%, checked every 0.5 s): reading ``smaps_rollup`` of every Ray
    process costs about 80 ms of CPU, which once a second took 8% of a core from the service being measured.
    The stack's memory grows by loading models and batches, which raises both sizes together, so the PSS peak
    is read where the resident size peaks."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak, self.driver_peak, self.stop, self.top = 0, 0, threading.Event(), []
        self.phase, self.phases = "start", {}  # phase name -> (stack peak bytes, its largest processes)

    @staticmethod
    def ray_processes() -> list[tuple[Path, bytes, bool]]:
        """``(/proc entry, command line, is this driver)`` of every Ray process and this driver."""
        out = []
        for proc in Path("/proc").glob("[0-9]*"):
            try:
                cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ")
            except OSError:
                continue
            me = proc.name == str(os.getpid())
            if me or any(k in cmd for k in RAY_PROCESS):
                out.append((proc, cmd, me))
        return out

    @staticmethod
    def rss(procs: list[tuple[Path, bytes, bool]]) -> int:
        total = 0
        for proc, _, _ in procs:
            try:
                total += int((proc / "statm").read_text().split()[1]) * PAGE
            except (OSError, IndexError, ValueError):
                continue
        return total

    @staticmethod
    def pss(procs: list[tuple[Path, bytes, bool]]) -> tuple[list[tuple[int, str]], int]:
        """``(PSS bytes, command)`` for every Ray process, and this driver's PSS."""
        out, driver = [], 0
        for proc, cmd, me in procs:
            try:
                rollup = (proc / "smaps_rollup").read_text().splitlines()
            except OSError:
                continue
            kb = [int(ln.split()[1]) for ln in rollup if ln.startswith("Pss:")]
            if me:
                driver = kb[0] * 1024 if kb else 0
            else:
                out.append((kb[0] * 1024 if kb else 0, cmd.decode(errors="replace")[:60]))
        return out, driver

    def run(self) -> None:
        phase, rss_peak = None, 0
        while not self.stop.is_set():
            if self.phase != phase:
                phase, rss_peak = self.phase, 0  # every phase gets its own peak
            procs = self.ray_processes()
            rss = self.rss(procs)
            if rss > 1.01 * rss_peak:
                rss_peak = rss
                stack, driver = self.pss(procs)
                total, top = sum(p for p, _ in stack), sorted(stack, reverse=True)[:3]
                self.driver_peak = max(self.driver_peak, driver)
                if total > self.peak:
                    self.peak, self.top = total, sorted(stack, reverse=True)[:5]
                if total > self.phases.get(phase, (0,))[0]:
                    self.phases[phase] = (total, top)
            self.stop.wait(0.5)


def inprocess_throughput(d: Defense, batch: torch.Tensor, seconds: float) -> float:
    """Images per second of ``d.decide`` on ``batch`` repeated for at least ``seconds`` (after a warm-up)."""
    return images_per_second(lambda n: d.decide(batch, make_generator(n)), len(batch), seconds)


def pct(xs: list[float], q: float) -> float:
    return sorted(xs)[min(len(xs) - 1, int(q * len(xs)))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--store", required=True)
    ap.add_argument("--preset", default="mnist5k")
    ap.add_argument(
        "--layouts",
        default="haproxy/pool,proxy/pool,direct/ingress",
        help="comma list of INGRESS/PACKING, measured one after the other (ingress: "
        + "|".join(m.value for m in IngressMode)
        + "; packing: "
        + "|".join(m.value for m in Packing)
        + ")",
    )
    ap.add_argument("--defenses", default=None)
    ap.add_argument("--requests", type=int, default=64, help="at least this many requests per throughput run")
    ap.add_argument("--seconds", type=float, default=5.0, help="at least this long per throughput measurement")
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--images-per-request", type=int, default=64, help="default: the service's max_images")
    ap.add_argument("--wire", default="npy", choices=["npy", "json"], help="HTTP body encoding")
    ap.add_argument("--grpc", action="store_true", help="also measure gRPC throughput")
    ap.add_argument("--max-pass-images", type=int, default=None, help="images per member pass (default: serve.yaml's)")
    ap.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an environment variable of every replica (repeatable); default: deployments/serve.yaml's env_vars",
    )
    ap.add_argument(
        "--batch-wait-s",
        type=float,
        default=None,
        help="member hosts' @serve.batch wait for more calls (default: serve.yaml's)",
    )
    ap.add_argument("--host-calls", type=int, default=2, help="outstanding calls per member host (coalescing)")
    ap.add_argument("--member-replicas", type=int, default=1, help="replicas of every member host")
    ap.add_argument(
        "--member-threads", type=int, default=None, help="member hosts' torch threads (default: serve.yaml's)"
    )
    ap.add_argument("--no-floor", action="store_true", help="skip Serve's latency floor (serve_floor.py)")
    ap.add_argument("--object-store-mb", type=int, default=1024, help="object store of the local Ray")
    a = ap.parse_args()
    small = shipped()  # the small-machine config
    if a.member_threads is None:
        a.member_threads = small.members.threads
    if a.batch_wait_s is None:
        a.batch_wait_s = small.members.batch_wait_timeout_s
    if a.max_pass_images is None:
        a.max_pass_images = small.members.max_pass_images
    env = dict(kv.split("=", 1) for kv in a.env) if a.env else dict(small.env_vars)
    torch.set_num_threads(2)
    mem = PeakMemory()
    mem.start()
    store, preset = ArtifactStore(a.store), load_preset(a.preset)
    x = load_dataset(preset.dataset).test.x
    names = a.defenses.split(",") if a.defenses else None
    inproc = {}  # measured first, on the quiet machine, before Ray starts
    for name in names or list(DEFENSES):
        try:
            d = build_defense(name, store, preset)
        except FileNotFoundError:
            continue
        tput = inprocess_throughput(d, x[: max(a.images_per_request, 32)], a.seconds)
        lat = []
        for i in range(30):
            t = time.perf_counter()
            d.decide(x[i : i + 1], make_generator(i))
            lat.append(time.perf_counter() - t)
        inproc[name] = (d, tput, lat)
    layouts = [(IngressMode(i), Packing(p)) for i, p in (lay.split("/") for lay in a.layouts.split(","))]
    report = {}
    for n, (ingress, packing) in enumerate(layouts):
        http_port, grpc_port = 8123 + 200 * n, 9323 + 200 * n  # each layout its own ports: none to wait for
        start_local(2, object_store_mb=a.object_store_mb, env=ingress.env(http_port, grpc_port))
        try:
            report[f"{ingress.value}/{packing.value}"] = serve_layout(
                a, ingress, packing, env, inproc, x, mem, http_port, grpc_port
            )
        finally:
            serve.shutdown()
            ray.shutdown()
    mem.stop.set()
    mem.join()
    ratios = {
        name: {
            lay: {k: r[k] for k in ("throughput_ratio", "grpc_ratio", "http_p50_ms") if k in r}
            for lay, out in report.items()
            for r in out["defenses"]
            if r["defense"] == name
        }
        for name in inproc
    }
    print(
        json.dumps(
            {
                "concurrency": a.concurrency,
                "seconds_per_throughput": a.seconds,
                "images_per_request": a.images_per_request,
                "inprocess_batch": max(a.images_per_request, 32),
                "wire": a.wire,
                "max_pass_images": a.max_pass_images,
                "member_threads": a.member_threads,
                "member_replicas": a.member_replicas,
                "batch_wait_s": a.batch_wait_s,
                "host_calls": a.host_calls,
                "replica_env": env,
                "member_num_cpus": 0.1,
                "object_store_mb": a.object_store_mb,
                "peak_stack_memory_gb": round(mem.peak / 2**30, 2),
                "peak_driver_memory_gb": round(mem.driver_peak / 2**30, 2),
                "largest_at_peak": [(round(p / 2**20), c) for p, c in mem.top],
                "inprocess_p50_ms": {k: round(1e3 * statistics.median(v[2]), 2) for k, v in inproc.items()},
                "ratios": ratios,
                "serve_floor_p50_ms": {
                    lay: {path: f["p50_ms"] for path, f in out["serve_floor"].items()}
                    for lay, out in report.items()
                    if "serve_floor" in out
                },
                "layouts": report,
            },
            indent=2,
        )
    )


def serve_layout(
    a: argparse.Namespace,
    ingress: IngressMode,
    packing: Packing,
    env: dict[str, str],
    inproc: dict[str, tuple[Defense, float, list[float]]],
    x: torch.Tensor,
    mem: PeakMemory,
    http_port: int,
    grpc_port: int,
) -> dict:
    """Deploy the defenses of ``inproc`` in one layout on the running Ray and measure each against its
    in-process figures (the reference is updated with every re-measurement: the best one so far)."""
    # a generous deadline: the benchmark measures throughput, not how the deadline sheds load
    args = {
        "store": a.store,
        "preset": a.preset,
        "packing": packing.value,
        "members": {
            "num_cpus": 0.1,
            "max_pass_images": a.max_pass_images,
            "batch_wait_timeout_s": a.batch_wait_s,
            "threads": a.member_threads,
            "num_replicas": a.member_replicas,
        },
        "deadline_s": 120.0,
        "host_calls": a.host_calls,
        "max_images": max(64, a.images_per_request),  # the ingress refuses larger requests
        "env_vars": env,
        "defenses": sorted(inproc),
    }
    s = ServeSettings.from_dict(args)
    t0 = time.perf_counter()
    ep = deploy(s, http_port=http_port, grpc_port=grpc_port, ingress=ingress)
    deploy_s = time.perf_counter() - t0
    rows = []
    local = threading.local()  # one keep-alive session per client thread

    def images(i: int, k: int) -> torch.Tensor:
        j = (i * k) % (len(x) - k)
        return x[j : j + k]

    bodies: dict[tuple[int, int], bytes] = {}  # encoded once: the client's encoding is not the service's cost

    def body(i: int, k: int) -> bytes:
        key = (i % BODIES, k)
        if key not in bodies:
            xs = images(*key)
            bodies[key] = json.dumps(npy_body(xs) if a.wire == "npy" else {"images": xs.tolist()}).encode()
        return bodies[key]

    async def sustained(send: Callable[[int], Awaitable[object]]) -> int:
        """Requests answered by ``a.concurrency`` asyncio clients calling ``send(i)`` back to back for
        ``a.seconds`` (at least ``a.requests`` requests in all) on one event loop: 32 client threads would
        fight over the GIL and take CPU the service needs."""
        counter = itertools.count()
        end = time.perf_counter() + a.seconds

        async def client() -> int:
            done = 0
            while (i := next(counter)) < a.requests or time.perf_counter() < end:
                await send(i)
                done += 1
            return done

        return sum(await asyncio.gather(*(client() for _ in range(a.concurrency))))

    def images_per_s(k: int, run: Callable[[], Coroutine[object, object, int]]) -> float:
        """Images per second of ``k``-image requests, counted until the last answer."""
        t = time.perf_counter()
        n = asyncio.run(run())
        return n * k / (time.perf_counter() - t)

    def http_throughput(url: str, k: int) -> float:
        """HTTP through aiohttp over keep-alive connections, bodies encoded before the clock starts."""

        async def run() -> int:
            conn = aiohttp.TCPConnector(limit=a.concurrency)
            async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=120)) as session:

                async def send(i: int) -> None:
                    async with session.post(url, data=body(i, k), headers=JSON) as r:
                        r.raise_for_status()
                        await r.read()

                return await sustained(send)

        for i in range(BODIES):
            body(i, k)
        return images_per_s(k, run)

    def grpc_throughput(address: str, defense: str, k: int) -> float:
        """gRPC through ``grpc.aio`` on one channel, requests encoded before the clock starts."""
        reqs = [classify_request(defense, images(i, k)) for i in range(BODIES)]
        meta = (("application", s.application),)

        async def run() -> int:
            async with grpc.aio.insecure_channel(address) as channel:
                stub = ensdef_pb2_grpc.EnsdefStub(channel)
                return await sustained(lambda i: stub.Classify(reqs[i % BODIES], metadata=meta, timeout=120))

        return images_per_s(k, run)

    for name in ep.defenses:
        d, inproc_before, lat_in = inproc[name]
        url = f"{ep.http}/v1/{name}/classify"

        def one(i: int, k: int, url: str = url) -> float:
            if not hasattr(local, "session"):
                local.session = requests.Session()
            t = time.perf_counter()
            r = local.session.post(url, data=body(i, k), headers=JSON, timeout=120)
            r.raise_for_status()
            return time.perf_counter() - t

        mem.phase = f"{ingress.value}/{packing.value}/{name}"
        for i in range(5):
            one(i, 1)  # warm up the path
        lat_http = [one(i, 1) for i in range(30)]
        http_tput = http_throughput(url, a.images_per_request)
        grpc_tput = grpc_throughput(ep.grpc, name, a.images_per_request) if a.grpc else None
        inproc_after = inprocess_throughput(d, x[: max(a.images_per_request, 32)], a.seconds)
        inproc_tput = max(inproc_before, inproc_after)
        inproc[name] = (d, inproc_tput, lat_in)  # the best so far: the next layout's reference
        rows.append(
            {
                "defense": name,
                "inprocess_images_per_s": round(inproc_tput, 1),
                "inprocess_before_after": [round(inproc_before, 1), round(inproc_after, 1)],
                "http_images_per_s": round(http_tput, 1),
                "throughput_ratio": round(http_tput / inproc_tput, 3),
                **(
                    {"grpc_images_per_s": round(grpc_tput, 1), "grpc_ratio": round(grpc_tput / inproc_tput, 3)}
                    if grpc_tput
                    else {}
                ),
                "inprocess_p50_ms": round(1e3 * statistics.median(lat_in), 2),
                "http_p50_ms": round(1e3 * statistics.median(lat_http), 2),
                "http_p99_ms": round(1e3 * pct(lat_http, 0.99), 2),
                "p50_ratio": round(statistics.median(lat_http) / statistics.median(lat_in), 2),
                "stack_memory_gb": round(mem.phases.get(mem.phase, (0,))[0] / 2**30, 2),
                "largest_mb": [(round(p / 2**20), c[:45]) for p, c in mem.phases.get(mem.phase, (0, []))[1]],
            }
        )
        print(json.dumps({"layout": f"{ingress.value}/{packing.value}", **rows[-1]}), flush=True)
    floor = {} if a.no_floor else {"serve_floor": floor_latency(deploy_floor(ingress, ep.http, a.batch_wait_s))}
    return {"deploy_seconds": round(deploy_s, 1), **floor, "defenses": rows}


if __name__ == "__main__":
    main()
