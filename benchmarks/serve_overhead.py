"""Served against in-process, per defense, measured side by side in one run on one machine.

* throughput: HTTP at concurrency 32 (``--images-per-request`` images per request, 1 by default; Serve
  batches concurrent requests inside the member replicas) against the in-process batched ``decide`` of 32
  images;
* latency: HTTP p50 / p99 at concurrency 1 against in-process single-image ``decide``;
* peak memory (PSS) of the whole stack (every Ray process plus this driver), sampled throughout.

Goal on the 2-core machine: served throughput at least half of in-process; whole stack under 8 GB.

    .venv/bin/python benchmarks/serve_overhead.py --store DIR [--preset mnist5k] [--packing pool]
        [--defenses a,b] [--requests 128] [--images-per-request 1]
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
    ap.add_argument("--images-per-request", type=int, default=1)
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
        batch = x[: a.concurrency]
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
        "members": {"num_cpus": 0.1},
        "deadline_s": 120.0,
        "defenses": sorted(inproc),
    }
    s = ServeSettings.from_dict(args)
    t0 = time.perf_counter()
    ep = deploy(s, http_port=8123, grpc_port=9123)
    deploy_s = time.perf_counter() - t0
    rows = []
    for name in ep.defenses:
        inproc_tput, lat_in = inproc[name]
        url = f"{ep.http}/v1/{name}/classify"

        def one(i: int, url: str = url, k: int = 1) -> float:
            t = time.perf_counter()
            j = (i * k) % (len(x) - k)
            r = requests.post(url, json={"images": x[j : j + k].tolist()}, timeout=120)
            r.raise_for_status()
            return time.perf_counter() - t

        for i in range(5):
            one(i)  # warm up the path
        lat_http = [one(i) for i in range(30)]
        t = time.perf_counter()
        with ThreadPoolExecutor(a.concurrency) as pool:
            list(pool.map(lambda i: one(i, k=a.images_per_request), range(a.requests)))
        http_tput = a.requests * a.images_per_request / (time.perf_counter() - t)
        rows.append(
            {
                "defense": name,
                "inprocess_images_per_s": round(inproc_tput, 1),
                "http_images_per_s": round(http_tput, 1),
                "throughput_ratio": round(http_tput / inproc_tput, 3),
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
