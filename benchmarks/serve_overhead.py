"""Served against in-process, per defense, measured side by side in one run on one machine.

* throughput: HTTP (and, with ``--grpc``, gRPC) at concurrency 32 with ``--images-per-request`` images per
  request (32 by default; Serve batches concurrent requests inside the member replicas) against the
  in-process batched ``decide`` of batches of the same size (at least 32 images); HTTP bodies are base64
  ``.npy`` (``--wire json`` sends nested lists), each client thread keeps its connection alive;
* latency: HTTP p50 / p99 at concurrency 1 against in-process single-image ``decide``;
* peak memory (PSS) of the whole stack (every Ray process plus this driver), sampled throughout.

Goal on the 2-core machine: served throughput at least half of in-process; whole stack under 8 GB.

    .venv/bin/python benchmarks/serve_overhead.py --store DIR [--preset mnist5k] [--packing pool]
        [--defenses a,b] [--requests 128] [--images-per-request 32] [--wire npy|json] [--grpc]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests
import torch

from deployments.launch import deploy, start_local
from deployments.settings import ServeSettings
from ensdef.client import EnsdefClient, npy_body
from ensdef.data import load_dataset
from ensdef.defenses.registry import DEFENSES, build_defense
from ensdef.presets import load_preset
from ensdef.rng import make_generator
from ensdef.store import ArtifactStore


class PeakMemory(threading.Thread):
    """Samples the summed proportional set size (PSS: shared pages such as torch's libraries split between the
    processes that map them, so the sum is the stack's real footprint) of this process and every Ray
    process on the machine."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak, self.stop, self.top = 0, threading.Event(), []

    @staticmethod
    def stack_pss() -> list[tuple[int, str]]:
        """``(PSS bytes, command)`` for every process of the stack."""
        out = []
        for proc in Path("/proc").glob("[0-9]*"):
            try:
                cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ")
                if proc.name == str(os.getpid()) or any(
                    k in cmd for k in (b"ray::", b"/ray/", b"raylet", b"gcs_server")
                ):
                    pss = [ln for ln in (proc / "smaps_rollup").read_text().splitlines() if ln.startswith("Pss:")]
                    out.append((int(pss[0].split()[1]) * 1024 if pss else 0, cmd.decode(errors="replace")[:60]))
            except OSError:
                continue
        return out

    def run(self) -> None:
        while not self.stop.is_set():
            procs = self.stack_pss()
            if sum(p for p, _ in procs) > self.peak:
                self.peak, self.top = sum(p for p, _ in procs), sorted(procs, reverse=True)[:5]
            self.stop.wait(0.5)


def pct(xs: list[float], q: float) -> float:
    return sorted(xs)[min(len(xs) - 1, int(q * len(xs)))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--store", required=True)
    ap.add_argument("--preset", default="mnist5k")
    ap.add_argument("--packing", default="pool", choices=["pool", "none"])
    ap.add_argument("--defenses", default=None)
    ap.add_argument("--requests", type=int, default=128)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--images-per-request", type=int, default=32)
    ap.add_argument("--wire", default="npy", choices=["npy", "json"], help="HTTP body encoding")
    ap.add_argument("--grpc", action="store_true", help="also measure gRPC throughput")
    ap.add_argument("--max-pass-images", type=int, default=256, help="member hosts' images per forward pass")
    ap.add_argument(
        "--mmap-threshold", type=int, default=0, help="replicas' MALLOC_MMAP_THRESHOLD_ (0: glibc's dynamic one)"
    )
    ap.add_argument("--member-threads", type=int, default=0, help="member hosts' torch threads (0: Ray's default)")
    ap.add_argument("--object-store-mb", type=int, default=1024, help="object store of the local Ray")
    a = ap.parse_args()
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
        batch = x[: max(a.images_per_request, 32)]
        d.decide(batch, make_generator(0))  # warm up
        reps = max(1, a.requests // a.concurrency)
        t = time.perf_counter()
        for r in range(reps):
            d.decide(batch, make_generator(r))
        tput = reps * len(batch) / (time.perf_counter() - t)
        lat = []
        for i in range(30):
            t = time.perf_counter()
            d.decide(x[i : i + 1], make_generator(i))
            lat.append(time.perf_counter() - t)
        inproc[name] = (tput, lat)
    start_local(2, object_store_mb=a.object_store_mb)
    # a generous deadline: the benchmark measures throughput, not how the deadline sheds load
    args = {
        "store": a.store,
        "preset": a.preset,
        "packing": a.packing,
        "members": {"num_cpus": 0.1, "max_pass_images": a.max_pass_images, "threads": a.member_threads},
        "deadline_s": 120.0,
        "max_images": max(64, a.images_per_request),  # the ingress refuses larger requests
        "env_vars": {"MALLOC_MMAP_THRESHOLD_": str(a.mmap_threshold)} if a.mmap_threshold else {},
        "defenses": sorted(inproc),
    }
    s = ServeSettings.from_dict(args)
    t0 = time.perf_counter()
    ep = deploy(s, http_port=8123, grpc_port=9123)
    deploy_s = time.perf_counter() - t0
    rows = []
    local = threading.local()  # one keep-alive session per client thread
    grpc_client = EnsdefClient(ep.grpc, timeout_s=120) if a.grpc else None

    def images(i: int, k: int) -> torch.Tensor:
        j = (i * k) % (len(x) - k)
        return x[j : j + k]

    def throughput(call: object, k: int) -> float:
        t = time.perf_counter()
        with ThreadPoolExecutor(a.concurrency) as pool:
            list(pool.map(lambda i: call(i, k), range(a.requests)))  # type: ignore[operator]
        return a.requests * k / (time.perf_counter() - t)

    for name in ep.defenses:
        inproc_tput, lat_in = inproc[name]
        url = f"{ep.http}/v1/{name}/classify"

        def one(i: int, k: int, url: str = url) -> float:
            if not hasattr(local, "session"):
                local.session = requests.Session()
            xs = images(i, k)
            body = npy_body(xs) if a.wire == "npy" else {"images": xs.tolist()}
            t = time.perf_counter()
            r = local.session.post(url, json=body, timeout=120)
            r.raise_for_status()
            return time.perf_counter() - t

        def one_grpc(i: int, k: int, name: str = name) -> None:
            assert grpc_client is not None
            grpc_client.classify(name, images(i, k))

        for i in range(5):
            one(i, 1)  # warm up the path
        lat_http = [one(i, 1) for i in range(30)]
        http_tput = throughput(one, a.images_per_request)
        grpc_tput = throughput(one_grpc, a.images_per_request) if grpc_client else None
        rows.append(
            {
                "defense": name,
                "inprocess_images_per_s": round(inproc_tput, 1),
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
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    mem.stop.set()
    mem.join()
    print(
        json.dumps(
            {
                "packing": a.packing,
                "concurrency": a.concurrency,
                "images_per_request": a.images_per_request,
                "inprocess_batch": max(a.images_per_request, 32),
                "wire": a.wire,
                "max_pass_images": a.max_pass_images,
                "member_threads": a.member_threads,
                "replica_env": s.env_vars,
                "member_num_cpus": 0.1,
                "deploy_seconds": round(deploy_s, 1),
                "peak_stack_memory_gb": round(mem.peak / 2**30, 2),
                "object_store_mb": a.object_store_mb,
                "largest_at_peak": [(round(p / 2**20), c) for p, c in mem.top],
                "defenses": rows,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
