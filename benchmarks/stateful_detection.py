"""Stateful detection against real query-based attack clients over HTTP, and its false-positive rate on benign
clients (``docs/serving.md``, "Clients, quotas and detection").

* attacks: ART's HopSkipJump (label-only, through ``BlackBoxClassifier``) and Square (L-inf 0.3, through
  ``BlackBoxClassifierNeuralNetwork``), each ``--runs`` times on a different test image, as their own client;
  their predict function posts the queries to the served defense (``--defense``) in requests of at most 64
  images. Reported per run: the query (the client's image count, as the service counts it) at which it was first
  detected, read from the admin endpoint ``/v1/admin/clients``; the goal is detection within 1,000 queries in at
  least 9 of 10 runs;
* benign clients: ``--benign-clients`` streams of ``--benign-queries`` test images in random order with repeats
  and lightly changed copies (:func:`ensdef.guard.streams.benign_stream`; the threshold is calibrated on the
  training split), each sent in requests of 1 to 64 images; reported: the clients flagged, with a 95% exact
  interval; the goal is at most 0.1%.

The service runs with detection action ``log`` (answers unchanged), so each attack runs its full budget.

    .venv/bin/python benchmarks/stateful_detection.py --store DIR [--preset mnist5k-quick] [--defense target]
        [--runs 10] [--budget 1000] [--benign-clients 1000] [--benign-queries 200]
"""

from __future__ import annotations

import argparse
import json
import logging
import time

import numpy as np
import requests
import torch
from art.attacks.evasion import HopSkipJump, SquareAttack
from art.estimators.classification.blackbox import BlackBoxClassifier, BlackBoxClassifierNeuralNetwork
from scipy.stats import binomtest
from tqdm import tqdm

from deployments.launch import deploy, start_local
from deployments.settings import ServeSettings
from ensdef.data import load_dataset
from ensdef.guard.streams import benign_stream
from ensdef.io.client import npy_body
from ensdef.presets import load_preset

TOKEN = "bench-admin"


class Endpoint:
    """Posts images to the served defense as one client; counts its queries."""

    def __init__(self, url: str, client: str, classes: int) -> None:
        self.url, self.client, self.classes, self.queries = url, client, classes, 0
        self.session = requests.Session()

    def labels(self, x: np.ndarray) -> np.ndarray:
        out = []
        for i in range(0, len(x), 64):
            chunk = x[i : i + 64].astype(np.float32)
            r = self.session.post(self.url, json=npy_body(chunk), headers={"X-Client-Id": self.client}, timeout=120)
            r.raise_for_status()
            out += [-1 if a["label"] is None else a["label"] for a in r.json()["answers"]]
            self.queries += len(chunk)
        return np.asarray(out)

    def one_hot(self, x: np.ndarray) -> np.ndarray:
        labels = self.labels(x)
        out = np.zeros((len(labels), self.classes), np.float32)
        out[labels >= 0, labels[labels >= 0]] = 1.0  # an abstention answers no class
        return out


def attack(kind: str, ep: Endpoint, x: np.ndarray, budget: int, shape: tuple[int, ...], classes: int) -> None:
    if kind == "hopskipjump":
        bb = BlackBoxClassifier(ep.one_hot, shape, classes, clip_values=(0.0, 1.0))
        HopSkipJump(bb, norm=2, max_iter=50, max_eval=1000, init_eval=100, verbose=False).generate(x)
    else:
        bb = BlackBoxClassifierNeuralNetwork(ep.one_hot, shape, classes, clip_values=(0.0, 1.0))
        SquareAttack(bb, norm=np.inf, eps=0.3, max_iter=budget, nb_restarts=1, verbose=False).generate(x)


class Budget(Exception):
    pass


def clients(http: str) -> dict[str, dict]:
    r = requests.get(f"{http}/v1/admin/clients?top=10000", headers={"X-Admin-Token": TOKEN}, timeout=60)
    return {c["client"]: c for c in r.json()["clients"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--store", required=True)
    p.add_argument("--preset", default="mnist5k-quick")
    p.add_argument("--defense", default="target")
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--budget", type=int, default=1000, help="queries per attack run")
    p.add_argument("--benign-clients", type=int, default=1000)
    p.add_argument("--benign-queries", type=int, default=200)
    p.add_argument("--port", type=int, default=8300)
    a = p.parse_args()
    logging.basicConfig(level=logging.INFO)
    preset = load_preset(a.preset)
    data = load_dataset(preset.dataset, preset.data_root)
    shape, classes = tuple(data.test.x.shape[1:]), int(data.test.y.max()) + 1
    start_local(2)
    s = ServeSettings.from_dict(
        {
            "preset": a.preset,
            "store": a.store,
            "defenses": [a.defense],
            "admin_token": TOKEN,
            "members": {"num_cpus": 0.1, "threads": 2},
            "guard": {"detection": {"action": "log"}, "max_tracked_clients": 100_000},
        }
    )
    t0 = time.monotonic()
    ep = deploy(s, "127.0.0.1", a.port, a.port + 1)
    url = f"{ep.http}/v1/{a.defense}/classify"
    report: dict[str, object] = {"deploy_s": round(time.monotonic() - t0, 1), "defense": a.defense}
    for kind in ("hopskipjump", "square"):
        runs = []
        for r in tqdm(range(a.runs), desc=kind):
            name = f"{kind}-{r}"
            client = Endpoint(url, name, classes)
            capped = _Capped(client, a.budget)
            t = time.monotonic()
            try:
                attack(kind, capped, data.test.x[r : r + 1].numpy(), a.budget, shape, classes)
            except Budget:
                pass
            seen = clients(ep.http)[name]
            runs.append(
                {
                    "queries": seen["images"],
                    "first_detection": seen["first_detection_query"],
                    "detections": seen["detections"],
                    "seconds": round(time.monotonic() - t, 1),
                }
            )
        within = [x["first_detection"] is not None and x["first_detection"] <= 1000 for x in runs]
        firsts = [x["first_detection"] for x in runs if x["first_detection"] is not None]
        report[kind] = {
            "detected_within_1000": f"{sum(within)} of {len(runs)}",
            "median_first_detection": float(np.median(firsts)) if firsts else None,
            "runs": runs,
        }
    print(json.dumps(report, indent=2), flush=True)
    g = torch.Generator().manual_seed(2026)
    flagged = 0
    t = time.monotonic()
    for c in tqdm(range(a.benign_clients), desc="benign"):
        client = Endpoint(url, f"benign-{c}", classes)
        stream = benign_stream(data.test.x, a.benign_queries, g).numpy()
        i = 0
        while i < len(stream):
            n = int(torch.randint(1, 65, (1,), generator=g))
            client.labels(stream[i : i + n])
            i += n
    seen = clients(ep.http)
    flagged = sum(seen[f"benign-{c}"]["detections"] > 0 for c in range(a.benign_clients))
    ci = binomtest(flagged, a.benign_clients).proportion_ci(method="exact")
    report["benign"] = {
        "flagged": f"{flagged} of {a.benign_clients}",
        "rate_95ci": [round(ci.low, 5), round(ci.high, 5)],
        "queries_each": a.benign_queries,
        "seconds": round(time.monotonic() - t, 1),
    }
    print(json.dumps(report["benign"], indent=2))


class _Capped:
    """The endpoint, raising :class:`Budget` once ``budget`` queries have been sent (the attack stops there)."""

    def __init__(self, ep: Endpoint, budget: int) -> None:
        self.ep, self.budget = ep, budget

    def one_hot(self, x: np.ndarray) -> np.ndarray:
        if self.ep.queries >= self.budget:
            raise Budget
        return self.ep.one_hot(x)


if __name__ == "__main__":
    main()
