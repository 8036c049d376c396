"""What the guard costs per request (``docs/serving.md``, "Clients, quotas and detection"), in one run:

* in process, per request of ``--images`` images: validation (decoding and checking the ``.npy`` JSON body),
  the quota check (both windows), and stateful detection with the client's memory full (``memory`` queries);
* served throughput through the shipped ingress mode (HAProxy; HTTP, concurrency 32, ``--images`` images per
  request, ``--seconds`` sustained) of the same defense with the guard as shipped plus an API key and a quota
  that never binds, against the guard off (no keys, no quota, detection off); the two applications are
  deployed one after the other on the same local Ray,
  each measured ``--runs`` times, alternating.

    .venv/bin/python benchmarks/guard_overhead.py --store DIR [--preset mnist5k-quick] [--defense target]
        [--images 64] [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import time

import aiohttp
from ray import serve

from deployments.launch import deploy, start_local
from deployments.modes import IngressMode
from deployments.settings import ServeSettings
from ensdef.data import load_dataset
from ensdef.guard.keys import new_key
from ensdef.guard.quota import Quotas, QuotaSpec
from ensdef.guard.stateful import DetectorSpec, StatefulDetector
from ensdef.io.client import npy_body
from ensdef.io.validation import Limits, parse_json_body
from ensdef.presets import load_preset


def per_call_ms(f, n: int = 200) -> float:
    f()
    t = time.perf_counter()
    for _ in range(n):
        f()
    return 1e3 * (time.perf_counter() - t) / n


def served(url: str, bodies: list[bytes], headers: dict[str, str], images: int, seconds: float) -> float:
    """Images per second at concurrency 32."""

    async def run() -> int:
        counter, end = itertools.count(), time.perf_counter() + seconds
        conn = aiohttp.TCPConnector(limit=32)
        async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=120)) as session:

            async def client() -> int:
                done = 0
                while time.perf_counter() < end:
                    async with session.post(url, data=bodies[next(counter) % len(bodies)], headers=headers) as r:
                        r.raise_for_status()
                        await r.read()
                    done += 1
                return done

            return sum(await asyncio.gather(*(client() for _ in range(32))))

    t = time.perf_counter()
    n = asyncio.run(run())
    return n * images / (time.perf_counter() - t)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--store", required=True)
    p.add_argument("--preset", default="mnist5k-quick")
    p.add_argument("--defense", default="target")
    p.add_argument("--images", type=int, default=64)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--port", type=int, default=8400)
    p.add_argument("--runs", type=int, default=2, help="alternating measurements of each application")
    a = p.parse_args()
    preset = load_preset(a.preset)
    data = load_dataset(preset.dataset, preset.data_root)
    x = data.test.x
    bodies = [json.dumps(npy_body(x[i * a.images : (i + 1) * a.images])).encode() for i in range(8)]
    limits = Limits(tuple(x.shape[1:]), max(64, a.images))
    quotas = Quotas(QuotaSpec("1000000/minute", "100000000/minute"))
    spec = DetectorSpec()
    det = StatefulDetector(spec, threshold=-1.0)
    for i in range(0, spec.memory, a.images):
        det.observe("c", x[i : i + a.images], 0.0)
    batch = x[: a.images]
    report: dict[str, object] = {
        "in_process_ms_per_request": {
            "validation": round(per_call_ms(lambda: parse_json_body(bodies[0], limits)), 3),
            "quota": round(per_call_ms(lambda: quotas.admit("c", a.images)), 3),
            "detection": round(per_call_ms(lambda: det.observe("c", batch, 0.0)), 3),
        }
    }
    key, digest = new_key()
    guards = {
        "guard on": (
            {"api_keys": {"bench": digest}, "quota": {"requests": "1000000/minute", "images": "100000000/minute"}},
            {"Content-Type": "application/json", "X-API-Key": key},
        ),
        "guard off": ({"detection": {"action": "off"}}, {"Content-Type": "application/json"}),
    }
    start_local(2, env=IngressMode.HAPROXY.env(a.port, a.port + 200))  # the shipped ingress mode
    runs: dict[str, list[float]] = {k: [] for k in guards}
    for _ in range(a.runs):
        for name, (guard, headers) in guards.items():
            s = ServeSettings.from_dict(
                {
                    "preset": a.preset,
                    "store": a.store,
                    "defenses": [a.defense],
                    "members": {"num_cpus": 0.1, "threads": 2},
                    "guard": guard,
                }
            )
            ep = deploy(s, "127.0.0.1", a.port, a.port + 200, ingress=IngressMode.HAPROXY)
            url = f"{ep.http}/v1/{a.defense}/classify"
            served(url, bodies, headers, a.images, 2.0)  # warm-up
            runs[name].append(round(served(url, bodies, headers, a.images, a.seconds), 1))
            serve.delete(s.application)
    on, off = max(runs["guard on"]), max(runs["guard off"])
    report["served_images_per_s"] = runs
    report["ratio_on_to_off"] = round(on / off, 3)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
