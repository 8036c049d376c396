"""The guard's parts without Ray: API keys, quotas, bounded client counts, stateful detection (against a
brute-force recomputation with scipy), calibration and benign streams."""

from __future__ import annotations

import hashlib
import time

import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist

from ensdef.errors import ConfigError
from ensdef.guard.calibration import calibrate, lowest_scores, threshold
from ensdef.guard.clients import OTHER, ClientCounts
from ensdef.guard.keys import ApiKeys, digest, new_key, presented_key
from ensdef.guard.quota import QuotaExceeded, Quotas, QuotaSpec
from ensdef.guard.stateful import ENCODERS, DetectorSpec, Encoding, StatefulDetector
from ensdef.guard.streams import StreamSpec, benign_stream


def test_keys_map_digests_to_clients_and_refuse_bad_configs() -> None:
    key, d = new_key()
    assert d == hashlib.sha256(key.encode()).hexdigest() == digest(key) and len(key) > 40
    keys = ApiKeys({"alice": d, "bob": digest("b" * 40).upper()})
    assert keys.enabled and not ApiKeys().enabled
    assert keys.client(key) == "alice" and keys.client("b" * 40) == "bob"
    assert keys.client(key + "x") is None and keys.client(None) is None and keys.client("clé\udcff") is None
    with pytest.raises(ConfigError, match="share one api key"):
        ApiKeys({"a": d, "b": d})
    with pytest.raises(ConfigError, match="64 hex"):
        ApiKeys({"a": key})
    with pytest.raises(ConfigError, match="client name"):
        ApiKeys({"a b": d})
    assert presented_key("Bearer  k1 ", None) == "k1" and presented_key("bearer k1", "k2") == "k2"
    assert presented_key("Basic xyz", None) is None and presented_key(None, None) is None


def test_quotas_count_requests_and_images_and_a_refusal_consumes_nothing() -> None:
    q = Quotas(QuotaSpec("3/minute", "10/minute"), {"big": QuotaSpec("100/minute", "")})
    q.admit("a", 4)
    q.admit("a", 4)
    with pytest.raises(QuotaExceeded, match="10 images") as e:
        q.admit("a", 4)  # 12 images > 10
    assert 58 <= e.value.retry_after_s <= 60  # the window's oldest hit, just now, frees up in a minute
    q.admit("a", 2)  # the refused request took nothing: 10 images, 3 requests
    with pytest.raises(QuotaExceeded, match="3 requests"):
        q.admit("a", 0)
    q.admit("b", 10)  # other clients are not affected
    for _ in range(20):
        q.admit("big", 64)  # an override without an image bound
    with pytest.raises(QuotaExceeded, match="in one request"):
        q.admit("c", 11)
    assert not Quotas(QuotaSpec()).enabled
    with pytest.raises(ConfigError, match="not a rate"):
        Quotas(QuotaSpec("lots"))


def test_quota_window_moves() -> None:
    q = Quotas(QuotaSpec("2/second"))
    q.admit("a", 1)
    q.admit("a", 1)
    with pytest.raises(QuotaExceeded) as e:
        q.admit("a", 1)
    assert e.value.retry_after_s == 1
    time.sleep(1.05)
    q.admit("a", 1)


def test_a_flood_of_names_neither_creates_series_nor_blinds_a_heavy_client() -> None:
    counts = ClientCounts(max_series=5, series_min_images=100, max_tracked=1000)
    g = np.random.default_rng(0)
    series: dict[str, int] = {}
    sent = 0
    for i in range(5000):
        name, n = counts.add(f"rand-{g.integers(1 << 60)}", 1)
        series[name] = series.get(name, 0) + n
        if i % 2:
            name, n = counts.add("attacker", 2)
            series[name] = series.get(name, 0) + n
            sent += 2
    assert set(series) == {OTHER, "attacker"} and counts.n_series == 1
    assert series["attacker"] == sent == counts.get("attacker").images  # exact, although it joined late
    # the one-query names, and the attacker's 49 sends of 2 images before the 50th reached 100
    assert series[OTHER] == 5000 + 98
    assert len(counts) == 1000  # bounded; the client with a series is never forgotten
    for i in range(10):  # at most max_series own series
        for _ in range(100):
            counts.add(f"heavy-{i}", 1)
    assert counts.n_series == 5 and counts.top(1)[0][0] == "attacker"


def brute_scores(history: list[np.ndarray], e: np.ndarray, k: int) -> np.ndarray:
    """Reference: for each row, the mean of the k smallest distances to everything sent before it."""
    out = []
    for i, row in enumerate(e):
        past = np.concatenate([*history, e[:i]]) if history or i else np.zeros((0, e.shape[1]))
        if len(past) < k:
            out.append(np.inf)
            continue
        out.append(np.sort(cdist(row[None], past)[0])[:k].mean())
    return np.asarray(out)


@pytest.mark.parametrize("encoding", list(Encoding))
def test_detector_scores_are_knn_means_over_the_clients_memory(encoding: Encoding) -> None:
    spec = DetectorSpec(k=5, memory=40, ttl_s=100.0, encoding=encoding)
    det = StatefulDetector(spec, threshold=-np.inf)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(100, 1, 8, 8, generator=g)
    enc = ENCODERS[encoding](x.numpy())
    sent: list[np.ndarray] = []
    for lo, hi in ((0, 3), (3, 30), (30, 64), (64, 100)):
        got = det.observe("c", x[lo:hi], now=1.0).scores
        want = brute_scores([np.concatenate(sent)[-spec.memory :]] if sent else [], enc[lo:hi], spec.k)
        np.testing.assert_allclose(got, want, rtol=2e-3, atol=2e-3)  # the memory is float16
        sent.append(enc[lo:hi])
    assert det.client("c").queries == 100 and det.client("other") is None


@pytest.mark.parametrize("shape", [(3, 1, 28, 28), (2, 3, 9, 7)])
def test_pooled_encoding_is_torchs_average_pooling(shape: tuple[int, int, int, int]) -> None:
    x = torch.rand(*shape, generator=torch.Generator().manual_seed(1))
    want = torch.nn.functional.avg_pool2d(x, 2).flatten(1).numpy()  # drops an odd last row or column too
    np.testing.assert_allclose(ENCODERS[Encoding.POOLED](x.numpy()), want, rtol=1e-6, atol=1e-7)


def test_detection_clears_memory_counts_and_forgets_old_queries_and_clients() -> None:
    spec = DetectorSpec(k=3, memory=100, ttl_s=10.0, max_clients=2)
    x = torch.zeros(1, 1, 4, 4)
    det = StatefulDetector(spec, threshold=0.5)
    obs = det.observe("a", x.repeat(9, 1, 1, 1), now=0.0)
    # images 4 and 8 (1-based) each have three identical earlier ones since the last clearing
    assert obs.detected.tolist() == [False, False, False, True, False, False, False, True, False]
    assert obs.state.detections == 2 and obs.state.first_detection == 4
    later = det.observe("a", x.repeat(3, 1, 1, 1), now=11.0)  # the one image remembered has expired
    assert not later.detected.any() and np.isinf(later.scores).all()
    det.observe("b", x, now=12.0)
    det.observe("c", x, now=12.0)  # max_clients 2: the least recently seen ("a") is forgotten
    assert det.client("a") is None and len(det) == 2


def test_threshold_is_a_margin_under_the_benign_quantile() -> None:
    lows = np.array([5.0, 1.0, 3.0, 2.0, 4.0])
    assert threshold(np.sort(lows), 0.0, 0.5) == 0.5
    assert threshold(np.sort(lows), 0.5, 1.0) == np.sort(lows)[2]
    with pytest.raises(ValueError):
        threshold(lows, 1.0, 0.5)


def test_benign_streams_and_calibration(mnist5k) -> None:
    g = torch.Generator().manual_seed(0)
    s = benign_stream(mnist5k.train.x, 300, g, StreamSpec(repeat=0.2, augment=0.2))
    assert s.shape == (300, 1, 28, 28) and 0 <= s.min() and s.max() <= 1
    flat = s.flatten(1)
    repeats = sum(bool((flat[:i] == flat[i]).all(1).any()) for i in range(1, 300))
    assert 30 <= repeats <= 90  # about 20% resent unchanged
    spec = DetectorSpec(k=20, memory=300)
    lows = lowest_scores(spec, [s])
    assert lows.shape == (1,) and np.isfinite(lows).all()
    t = calibrate(spec, mnist5k.train.x, torch.Generator().manual_seed(1), clients=4, queries=200)
    again = calibrate(spec, mnist5k.train.x, torch.Generator().manual_seed(1), clients=4, queries=200)
    assert t == again and 0 < t < lows[0]


# --- the ingress's guard (deployments.guard): plain Python, Ray's metrics are only recorded -------------------
def _guard(**settings: object):
    from deployments.guard import Guard
    from deployments.settings import GuardSettings

    return Guard(GuardSettings.from_dict(settings))


def test_guard_identifies_by_key_when_keys_are_configured() -> None:
    from deployments.guard import Unauthenticated

    key, d = new_key()
    keyed = _guard(api_keys={"alice": d})
    assert keyed.identify(key, "whoever-i-say") == "alice"
    for wrong in (None, "", key[:-1], "Bearer " + key):
        with pytest.raises(Unauthenticated, match="API key"):
            keyed.identify(wrong, "alice")
    assert _guard().identify(None, "declared") == "declared"


def test_guard_quota_refuses_one_client_and_not_another() -> None:
    import asyncio

    g = _guard(quota={"requests": "2/minute"}, quota_overrides={"vip": {"requests": "100/minute"}})
    x = torch.rand(3, 1, 28, 28)

    async def run() -> None:
        await g.admit("a", x)
        await g.admit("a", x)
        with pytest.raises(QuotaExceeded) as e:
            await g.admit("a", x)
        assert 58 <= e.value.retry_after_s <= 60
        for _ in range(10):
            await g.admit("vip", x)

    asyncio.run(run())
    assert g.counts.get("a").requests == 2 and g.counts.get("vip").images == 30


@pytest.mark.parametrize("action", ["log", "flag", "throttle", "refuse", "off"])
def test_every_detection_action_does_what_it_says(action: str) -> None:
    import asyncio

    from deployments.guard import Refused

    g = _guard(detection={"action": action, "k": 3, "threshold": 0.5, "cooldown_s": 60, "throttle_s": 0.2})
    same = torch.zeros(1, 1, 28, 28)
    other = torch.rand(1, 1, 28, 28, generator=torch.Generator().manual_seed(0))

    async def run() -> list[object]:
        out = []
        for _ in range(4):  # the 4th has three identical queries before it: detected
            t0 = time.monotonic()
            try:
                out.append(await g.admit("a", same))
            except Refused as e:
                out.append(("refused", e.retry_after_s))
            out.append(round(time.monotonic() - t0, 1))
        out.append(await g.admit("b", other))  # another client is untouched
        return out

    got = asyncio.run(run())
    first = [False, 0.0, False, 0.0, False, 0.0]
    want = {
        "off": [*first, False, 0.0, False],
        "log": [*first, False, 0.0, False],
        "flag": [*first, True, 0.0, False],
        "throttle": [*first, False, 0.2, False],
        "refuse": [*first, ("refused", 61), 0.0, False],
    }[action]
    assert got == want
    seen = g.clients(5)
    assert [c["client"] for c in seen] == ["a", "b"] and seen[0]["images"] == 4
    assert seen[0]["detections"] == (0 if action == "off" else 1)
    assert seen[0]["first_detection_query"] == (None if action == "off" else 4)


def test_client_address_takes_haproxys_entry_and_only_from_haproxy() -> None:
    """Behind HAProxy the ingress's peer is HAProxy: the client is the last X-Forwarded-For entry (the one
    HAProxy appended); what a client writes there itself, or sends from elsewhere, is not believed."""
    from deployments.ingress import client_address

    proxies = frozenset({"127.0.0.1", "10.0.0.5"})
    assert client_address("127.0.0.1", "127.0.0.2", proxies) == "127.0.0.2"
    assert client_address("10.0.0.5", "6.6.6.6, 192.168.1.9", proxies) == "192.168.1.9"  # a forged first entry
    assert client_address("ipv4:127.0.0.1:40312", "192.168.1.9", proxies) == "192.168.1.9"  # gRPC peer form
    assert client_address("ipv6:[::1]:40312", "192.168.1.9", frozenset({"::1"})) == "192.168.1.9"
    assert client_address("192.168.1.9", "6.6.6.6", proxies) == "192.168.1.9"  # not through HAProxy
    assert client_address("127.0.0.1", "6.6.6.6", frozenset()) == "127.0.0.1"  # Serve's Python proxy mode
    assert client_address("127.0.0.1", None, proxies) == "127.0.0.1" == client_address("127.0.0.1", " ", proxies)
