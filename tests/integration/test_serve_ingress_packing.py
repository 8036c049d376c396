"""``packing: ingress``: every member in the ingress replica (no member actors), for the smallest machines.
Served answers (HTTP and gRPC) equal the in-process Decisions for every defense, and members that stay
``unpacked`` keep their own replicas and are called as usual.

The same application runs with API keys and per-client quotas, so the guard is tested as served: 401 without a
valid key, 429 with ``Retry-After`` over quota while other clients are answered, counts that follow the key and
never a header, and stateful detection of a query-based attack stream."""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
import requests
import torch

from ensdef.guard.keys import digest
from tests.integration.test_serve import assert_served_as_in_process

pytestmark = [pytest.mark.integration, pytest.mark.slow]
TOKEN = "inline-token"
CLIENTS = ("alice", "carol", "dave", "erin")
KEYS = {name: f"ensdef_test-key-of-{name}-{uuid.UUID(int=i)}" for i, name in enumerate(CLIENTS)}
GUARD = {
    "api_keys": {name: digest(key) for name, key in KEYS.items()},
    "quota_overrides": {"carol": {"requests": "3/minute"}},
    "max_client_series": 2,
    "series_min_images": 10,
    "detection": {"action": "log"},  # answers stay exact (compared with in-process); actions: unit tests
}


@pytest.fixture(scope="module")
def served_inline(ray_serve, tiny_store):
    from tests.conftest import serving_tiny

    store, preset = tiny_store
    both_kinds = {"unpacked": ["target"]}  # one member keeps its own replica: both kinds of host in one app
    packed = {"packing": "ingress", "members": {"num_cpus": 0.05, "threads": 2}, "ingress_num_cpus": 0.05}
    with serving_tiny(
        ray_serve,
        store.root,
        120,
        KEYS["alice"],
        admin_token=TOKEN,
        application="ensdef-inline",
        guard=GUARD,
        **both_kinds,
        **packed,
    ) as (ep, client, s):
        yield ep, client, store, preset, s.application


def test_ingress_packing_answers_equal_in_process_with_no_member_actors(served_inline, mnist5k) -> None:
    from ray import serve

    ep, client, store, preset, app = served_inline
    deployments = set(serve.status().applications[app].deployments)
    assert deployments == {"Ingress", "member-target"}, deployments
    x = mnist5k.test.x[::83][:5]
    for defense in ep.defenses:
        assert_served_as_in_process(ep.http, client, TOKEN, store, preset, defense, x, 3, KEYS["alice"])


def classify(ep, key: str | None, x: torch.Tensor, **headers: str) -> requests.Response:
    h = {"X-API-Key": key} if key else {}
    return requests.post(
        f"{ep.http}/v1/target/classify", json={"images": x.tolist()}, headers={**h, **headers}, timeout=60
    )


def admin_clients(ep) -> dict[str, dict]:
    r = requests.get(f"{ep.http}/v1/admin/clients?top=100", headers={"X-Admin-Token": TOKEN}, timeout=30)
    assert r.status_code == 200, r.text
    return {c["client"]: c for c in r.json()["clients"]}


def test_keys_quotas_and_counts_follow_the_key(served_inline, mnist5k) -> None:
    from ensdef.io.client import EnsdefClient

    ep, client, _, _, app = served_inline
    x = mnist5k.test.x[:2]
    for key in (None, "", KEYS["alice"] + "x", "ensdef_made-up"):
        r = classify(ep, key, x)
        assert r.status_code == 401 and r.headers["WWW-Authenticate"] == "Bearer", r.text
        assert r.json() == {
            "detail": "a valid API key is required (header 'Authorization: Bearer <key>' or 'X-API-Key')"
        }
    assert classify(ep, None, x, Authorization=f"Bearer {KEYS['alice']}").status_code == 200
    for key in ("", "wrong"):
        with pytest.raises(grpc.RpcError) as e:
            EnsdefClient(ep.grpc, app, api_key=key).classify("target", x)
        assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert requests.get(f"{ep.http}/v1/admin/clients", timeout=30).status_code == 403

    before = admin_clients(ep).get("alice", {"images": 0, "requests": 0})
    # carol's quota is 3 requests a minute: the rest are refused fast, while alice's are answered alongside
    with ThreadPoolExecutor(8) as pool:
        carol = list(pool.map(lambda _: classify(ep, KEYS["carol"], x), range(24)))
        t0 = time.monotonic()
        alice = list(pool.map(lambda i: classify(ep, KEYS["alice"], x, **{"X-Client-Id": f"rand-{i}"}), range(40)))
        alice_s = time.monotonic() - t0
    assert sorted(r.status_code for r in carol) == [200] * 3 + [429] * 21
    refused = next(r for r in carol if r.status_code == 429)
    # the window frees up a minute after carol's first answered request, a few seconds ago
    assert 30 <= int(refused.headers["Retry-After"]) <= 60 and "quota of 3 requests per minute" in refused.text
    assert [r.status_code for r in alice] == [200] * 40 and alice_s < 30
    with pytest.raises(grpc.RpcError) as e:
        EnsdefClient(ep.grpc, app, api_key=KEYS["carol"]).classify("target", x)
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert 10 <= int(dict(e.value.trailing_metadata())["retry-after"]) <= 60
    # counts are the key's, never the declared id's: 40 random ids added nothing but alice's own count
    after = admin_clients(ep)
    assert after["alice"]["images"] - before["images"] == 80 and after["alice"]["requests"] - before["requests"] == 40
    assert not any(name.startswith("rand-") for name in after)
    assert after["carol"]["requests"] == 3 and {c["series"] for c in after.values()} <= {
        "alice",
        "carol",
        "dave",
        "other",
    }


def test_a_query_attack_stream_is_detected_and_a_benign_one_is_not(served_inline, mnist5k) -> None:
    """Dave probes around one image with tiny random changes (a gradient estimate's queries), 8 per request;
    erin sends distinct test images. Only dave is detected, within his first 64 queries. (Alice, who sent the
    same few images again and again in the tests above, is detected too: the action here only logs.)"""
    ep, _, _, _, _ = served_inline
    g = torch.Generator().manual_seed(0)
    base = mnist5k.test.x[7:8]
    for _ in range(8):
        probes = (base + 0.01 * torch.randn(8, 1, 28, 28, generator=g)).clamp(0, 1)
        assert classify(ep, KEYS["dave"], probes).status_code == 200
    benign = mnist5k.test.x[100:164]
    for i in range(0, 64, 8):
        assert classify(ep, KEYS["erin"], benign[i : i + 8]).status_code == 200
    seen = admin_clients(ep)
    assert seen["dave"]["detections"] >= 1 and seen["dave"]["first_detection_query"] <= 64
    assert seen["erin"]["detections"] == 0 and seen["erin"]["images"] == 64
    assert seen["alice"]["detections"] >= 1
