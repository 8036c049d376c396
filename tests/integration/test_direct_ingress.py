"""Serve's direct ingress (``ensdef serve --ingress direct``): clients connect to the ingress replica itself on
the HTTP and gRPC ports asked for (no proxy hop), and get the same answers and the same input errors as
through Serve's proxies. The open-mode client counts are checked here too (the cheapest path for 5,000
requests): random client ids get no metrics series of their own, and a steady client's count stays exact.

Direct ingress is fixed when Ray starts, so the service runs in a subprocess with its own local Ray
(``--address local``); the test session's Ray is untouched."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import grpc
import numpy as np
import pytest
import requests

from cluster.local import LOCAL_ENV
from ensdef.io.client import EnsdefClient, npy_body
from tests.conftest import FIXTURES, free_port, free_ports
from tests.integration.test_serve import assert_served_as_in_process

pytestmark = [pytest.mark.integration, pytest.mark.slow]
TOKEN = "direct-token"


@pytest.fixture(scope="module")
def direct(tiny_store):
    store, preset = tiny_store
    http, grpc_port = free_ports()
    cmd = [sys.executable, "-m", "ensdef", "serve", "--preset", str(FIXTURES / "tiny.yaml"), "--store", store.root]
    cmd += ["--defenses", "target,noisy-vote", "--ingress", "direct", "--address", "local", "--num-cpus", "2"]
    cmd += ["--http-port", str(http), "--grpc-port", str(grpc_port), "--admin-token", TOKEN, "--json"]
    metrics = free_port()
    cmd += ["--metrics-port", str(metrics)]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env={**os.environ, **LOCAL_ENV}
    )
    lines, deadline = [], time.monotonic() + 400
    while time.monotonic() < deadline and proc.poll() is None:  # the endpoints, then it serves until SIGINT
        lines.append(proc.stdout.readline())
        if lines[-1].startswith("}"):
            break
    assert proc.poll() is None, f"ensdef serve exited: {''.join(lines)[-2000:]}"
    ep = json.loads("".join(lines))
    ep["metrics"] = metrics
    yield ep, (http, grpc_port), store, preset
    proc.send_signal(signal.SIGINT)  # ends the service and the local Ray it started
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()


def test_direct_ingress_answers_like_in_process_on_the_ports_asked_for(direct, mnist5k) -> None:
    ep, (http, grpc_port), store, preset = direct
    assert ep["ingress"] == "direct"
    assert ep["http"] == f"http://127.0.0.1:{http}" and ep["grpc"] == f"127.0.0.1:{grpc_port}"
    x = mnist5k.test.x[::89][:5]
    client = EnsdefClient(ep["grpc"], timeout_s=120)
    try:
        for defense in ("target", "noisy-vote"):
            assert_served_as_in_process(ep["http"], client, TOKEN, store, preset, defense, x, 5)
        assert client.defenses() == sorted(["target", "noisy-vote"])
        bad = np.full((1, 1, 28, 28), np.nan, np.float32)
        r = requests.post(f"{ep['http']}/v1/target/classify", json=npy_body(bad), timeout=60)
        assert r.status_code == 422 and "NaN" in r.text, r.text
        with pytest.raises(grpc.RpcError) as e:
            client.classify("target", bad)
        assert e.value.code() is grpc.StatusCode.INVALID_ARGUMENT and "NaN" in e.value.details()
    finally:
        client.close()


def test_random_client_ids_get_bounded_series_and_a_steady_clients_count_stays_exact(direct, mnist5k) -> None:
    """Open mode (no keys): 5,000 requests under random client ids, a steady client's 100 among them. The
    shipped settings give at most 50 clients a series of their own (``max_client_series``), once they have sent
    100 images (``series_min_images``): the random ids send one image each and share ``other``; the steady
    client gets its own series, and its count is exact."""
    import re
    from collections import Counter
    from concurrent.futures import ThreadPoolExecutor

    from ensdef.io.proto import ensdef_pb2

    ep, _, _, _ = direct
    client = EnsdefClient(ep["grpc"], timeout_s=60)
    x = mnist5k.test.x[:1].numpy()
    req = ensdef_pb2.ClassifyRequest(defense="target", tensor=x.tobytes(), shape=list(x.shape), dtype="float32")
    steady = f"steady-{time.monotonic_ns()}"

    def call(i: int) -> str:
        who = steady if i % 50 == 0 else f"random-{i}-{time.monotonic_ns()}"
        client.stub.Classify(req, metadata=(*client.metadata, ("client-id", who)), timeout=60)
        return who

    try:
        with ThreadPoolExecutor(8) as pool:
            sent = Counter(pool.map(call, range(5_000)))
    finally:
        client.close()
    assert sent[steady] == 100 and len(sent) == 4_901
    r = requests.get(f"{ep['http']}/v1/admin/clients?top=1000", headers={"X-Admin-Token": TOKEN}, timeout=30)
    seen = {c["client"]: c for c in r.json()["clients"]}
    assert seen[steady]["images"] == 100 and seen[steady]["requests"] == 100 and seen[steady]["series"] == steady
    assert sum(c["series"] != "other" for c in seen.values()) == 1
    series = re.compile(r'^\w*ensdef_client_queries\w*\{[^}]*client="([^"]*)"', re.MULTILINE)
    deadline, names = time.monotonic() + 60, set()
    while time.monotonic() < deadline and steady not in names:
        time.sleep(2)
        names = set(series.findall(requests.get(f"http://127.0.0.1:{ep['metrics']}/metrics", timeout=30).text))
    assert steady in names and "other" in names, names
    assert len(names) <= 50 + 1 and not any(n.startswith("random-") for n in names), sorted(names)[:60]
