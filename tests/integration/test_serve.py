"""The served defense graph on a real local Ray (2 CPUs) with Serve's HTTP and gRPC proxies, built from the
tiny trained store: answers equal the in-process Decisions, bad inputs get their errors, and a killed member
replica degrades the vote (or fails the request) and never yields an undegraded wrong answer."""

from __future__ import annotations

import base64
import io
import logging
import re
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import pytest
import requests
import torch

from ensdef.defenses.registry import build_defense
from ensdef.io.client import EnsdefClient
from ensdef.rng import make_generator

pytestmark = [pytest.mark.integration, pytest.mark.slow]
TOKEN = "test-admin-token"
log = logging.getLogger(__name__)


@pytest.fixture(scope="module")
def served(ray_serve, tiny_store):
    from tests.conftest import serving_tiny

    store, preset = tiny_store
    one_tempnet_each = {"unpacked": ["tempnet"]}  # one replica per temperature network, so that one can be killed
    limits = {"max_images": 32, "max_bytes": 200_000}
    with serving_tiny(ray_serve, store.root, packing="pool", admin_token=TOKEN, **one_tempnet_each, **limits) as (
        ep,
        client,
        _,
    ):
        yield ep, client, store, preset


def post(ep, defense: str, body: dict | bytes, token: str | None = TOKEN, kind: str = "application/json"):
    headers = {"Content-Type": kind, **({"X-Admin-Token": token} if token else {})}
    data = body if isinstance(body, bytes) else __import__("json").dumps(body)
    return requests.post(f"{ep.http}/v1/{defense}/classify", data=data, headers=headers, timeout=120)


def in_process(store, preset, defense: str, x: torch.Tensor, seed: int) -> list[dict]:
    return [d.to_json() for d in build_defense(defense, store, preset).decide(x, make_generator(seed))]


ANSWER_FIELDS = ("label", "flagged", "abstained", "degraded")


def assert_served_as_in_process(
    http: str,
    client: EnsdefClient,
    token: str,
    store,
    preset,
    defense: str,
    x: torch.Tensor,
    seed: int,
    api_key: str = "",
) -> None:
    """HTTP and gRPC answers for ``x`` with ``seed`` equal the in-process Decisions of ``defense``."""
    want = in_process(store, preset, defense, x, seed)
    r = requests.post(
        f"{http}/v1/{defense}/classify",
        json={"images": x.tolist(), "seed": seed},
        headers={"X-Admin-Token": token, **({"X-API-Key": api_key} if api_key else {})},
        timeout=120,
    )
    assert r.status_code == 200, r.text
    assert [{k: a[k] for k in ANSWER_FIELDS} for a in r.json()["answers"]] == want, defense
    assert [{k: a[k] for k in ANSWER_FIELDS} for a in client.classify(defense, x, token, seed)] == want, defense


def test_http_and_grpc_answers_equal_in_process_decisions(served, mnist5k) -> None:
    ep, client, store, preset = served
    x = mnist5k.test.x[::97][:6]
    assert len(ep.defenses) == 11
    for defense in ep.defenses:
        assert_served_as_in_process(ep.http, client, TOKEN, store, preset, defense, x, 11)
    assert client.defenses() == ep.defenses


def test_listing_health_openapi_and_diagnostics(served, mnist5k) -> None:
    ep, _, _, _ = served
    assert requests.get(f"{ep.http}/healthz", timeout=30).json()["status"] == "ok"
    listing = requests.get(f"{ep.http}/v1/defenses", timeout=30).json()
    assert listing["defenses"] == ep.defenses and listing["input"]["shape"] == [1, 28, 28]
    doc = requests.get(f"{ep.http}/openapi.json", timeout=30).json()
    route = doc["paths"]["/v1/{defense}/classify"]["post"]
    body = route["requestBody"]["content"]
    assert {"images", "npy", "seed"} <= set(body["application/json"]["schema"]["properties"])
    assert "images" in body["application/json"]["examples"]["lists"]["value"] and "image/png" in body
    assert {"200", "413", "422", "503"} <= set(route["responses"]) and "answers" in str(doc["components"])
    x = mnist5k.test.x[:2].tolist()
    plain = post(ep, "noisy-vote", {"images": x}, token=None).json()["answers"]
    assert all("diagnostics" not in a for a in plain)
    admin = post(ep, "noisy-vote", {"images": x}).json()["answers"]
    assert all(sum(a["diagnostics"]["votes"]) == 3 and "p_value" in a["diagnostics"] for a in admin)
    assert not any("logits" in str(a) for a in admin)


def _npy(a: np.ndarray) -> str:
    buf = io.BytesIO()
    np.save(buf, a)
    return base64.b64encode(buf.getvalue()).decode()


@pytest.mark.parametrize(
    ("defense", "body", "kind", "token", "status", "message"),
    [
        ("target", {"images": np.zeros((1, 1, 28, 27)).tolist()}, "application/json", None, 422, "28, 27"),
        ("target", {"images": np.zeros((1, 1, 1, 28, 28)).tolist()}, "application/json", None, 422, "rank 5"),
        ("target", {"npy": _npy(np.zeros((1, 1, 28, 28), np.int64))}, "application/json", None, 422, "dtype int64"),
        ("target", {"images": np.full((1, 1, 28, 28), 2.0).tolist()}, "application/json", None, 422, "[0, 1]"),
        ("target", b'{"images": [[[NaN]]]}', "application/json", None, 422, "NaN"),
        ("target", {"npy": _npy(np.full((1, 1, 28, 28), np.nan, np.float32))}, "application/json", None, 422, "NaN"),
        ("target", {"images": np.zeros((33, 1, 28, 28)).tolist()}, "application/json", None, 422, "limit of 32"),
        ("target", {"npy": _npy(np.zeros((80, 1, 28, 28), np.float32))}, "application/json", None, 413, "bytes"),
        ("magic", {"images": np.zeros((1, 1, 28, 28)).tolist()}, "application/json", None, 404, "unknown defense"),
        ("target", b'{"images": [1, 2', "application/json", None, 422, "malformed JSON"),
        ("target", b"definitely not a png", "image/png", None, 422, "not a readable image"),
        ("target", b"x", "text/csv", None, 415, "content type"),
        ("target", {"images": np.zeros((1, 1, 28, 28)).tolist(), "seed": 3}, "application/json", None, 403, "admin"),
    ],
)
def test_bad_http_input_gets_a_4xx_with_a_message(served, defense, body, kind, token, status, message) -> None:
    ep = served[0]
    r = post(ep, defense, body, token=token, kind=kind)
    assert r.status_code == status, r.text
    assert message in r.json()["detail"]


def _npz() -> str:
    buf = io.BytesIO()
    np.savez(buf, a=np.zeros((1, 28, 28), np.float32))
    return base64.b64encode(buf.getvalue()).decode()


def test_hostile_http_requests_get_a_4xx_without_reprs(served, mnist5k) -> None:
    """Inputs an outside fuzzing run found 500s with: each is a 4xx with a short message, none carries a
    repr, path or traceback, and the service answers normally afterwards."""
    from tests.unit.test_hostile_inputs import REPR, chunk, png_declaring

    ep = served[0]
    ok = {"images": mnist5k.test.x[:1].tolist()}
    url = f"{ep.http}/v1/target/classify"
    js = {"Content-Type": "application/json"}
    big_body = (b"[" * 65536 for _ in range(8))  # chunked: no Content-Length (refused before it is read)
    ztxt = chunk(b"zTXt", b"k\0\0" + __import__("zlib").compress(b"a" * 20_000_000))
    cases = [
        (requests.post, {"data": b'{"images": ' + b"[" * 5000 + b"]" * 5000 + b"}", "headers": js}, 422),
        (requests.post, {"data": b'{"images": [' + b"9" * 5000 + b"]}", "headers": js}, 422),
        (requests.post, {"data": b'{"images": [' + b"1" * 400 + b"]}", "headers": js}, 422),
        (requests.post, {"data": __import__("json").dumps({"npy": _npz()}), "headers": js}, 422),
        (requests.post, {"data": png_declaring(13_000, 13_000), "headers": {"Content-Type": "image/png"}}, 422),
        (requests.post, {"data": png_declaring(20_000, 20_000), "headers": {"Content-Type": "image/png"}}, 422),
        (requests.post, {"data": png_declaring(28, 28, extra=ztxt), "headers": {"Content-Type": "image/png"}}, 422),
        (requests.post, {"data": big_body, "headers": js}, 411),
        (requests.post, {"json": ok, "headers": {"X-Admin-Token": "t\u00e9st\u00ff"}}, 200),
        (requests.post, {"json": ok, "headers": {"X-Client-Id": "cli\u00e9nt\u00ff" * 20}}, 200),
    ]
    for send, kwargs, status in cases:
        r = send(url, timeout=60, **kwargs)
        assert r.status_code == status, (r.status_code, r.text[:300])
        if status >= 400:
            detail = r.json()["detail"]
            assert len(detail) < 200 and not any(bad in detail for bad in REPR), detail
    assert requests.get(f"{ep.http}/healthz", timeout=30).status_code == 200


def _own_processes() -> set[Path]:
    """``/proc/PID`` of every process descended from this one: this test session's Ray (another session on the
    machine, such as a second pytest worker's, is not counted)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
        except (OSError, IndexError, ValueError):
            continue
    out, todo = set(), [__import__("os").getpid()]
    while todo:
        for c in children.get(todo.pop(), []):
            out.add(Path("/proc") / str(c))
            todo.append(c)
    return out


def _stack_rss() -> int:
    """Resident bytes of the served stack: every Serve replica of the application and the proxies."""
    total = 0
    for proc in _own_processes():
        try:
            cmd = (proc / "cmdline").read_bytes()
            if cmd.startswith((b"ray::ServeReplica:ensdef:", b"ray::ProxyActor")):
                rss = next(line for line in (proc / "status").read_text().splitlines() if line.startswith("VmRSS:"))
                total += int(rss.split()[1]) * 1024
        except (OSError, StopIteration):
            continue
    return total


def _replica_restarts() -> tuple[int, int]:
    """(dead replica actors, restarts) of the application, from Ray's state API."""
    from ray.util.state import list_actors

    actors = [a for a in list_actors(detail=True, limit=10_000) if a.class_name.startswith("ServeReplica:ensdef")]
    return sum(a.state == "DEAD" for a in actors), sum(a.num_restarts or 0 for a in actors)


def test_fuzzing_gets_no_5xx_no_leaks_no_restarts_and_bounded_memory(served) -> None:
    """10,000 generated HTTP requests and 1,000 gRPC calls (``tests/integration/fuzzing.py``; seeded): no 5xx,
    no INTERNAL / UNKNOWN, no repr, path or traceback in any body or detail, no replica restarted, and the
    stack's resident memory grows by less than 10% from after a warm-up to the end."""
    import random

    from ensdef.io.proto import ensdef_pb2
    from tests.integration.fuzzing import LEAKS, grpc_case, http_case

    ep, client, _, _ = served
    restarts = _replica_restarts()
    rng = random.Random(2026)
    http_cases = [http_case(rng, ep.defenses) for _ in range(10_000)]
    grpc_cases = [grpc_case(rng, ep.defenses, ensdef_pb2.ClassifyRequest) for _ in range(1_000)]
    sessions = {}

    def send(i: int) -> tuple[int, int, str]:
        c = http_cases[i]
        s = sessions.setdefault(__import__("threading").get_ident(), requests.Session())
        r = s.request(c.method, ep.http + c.path, data=c.body, headers=c.headers, timeout=120)
        return i, r.status_code, r.text

    raw = client.channel.unary_unary("/ensdef.Ensdef/Classify")

    took: dict[str, list[float]] = {}

    def call(i: int) -> tuple[int, str, str]:
        req, who = grpc_cases[i]
        meta = (*client.metadata, ("client-id", who))
        t = time.monotonic()
        try:
            if isinstance(req, bytes):
                raw(req, metadata=meta, timeout=120)
            else:
                client.stub.Classify(req, metadata=meta, timeout=120)
            code, detail = "OK", ""
        except grpc.RpcError as e:
            code, detail = e.code().name, e.details() or ""
        took.setdefault(code, []).append(time.monotonic() - t)
        return i, code, detail

    with ThreadPoolExecutor(8) as pool:
        warm = list(pool.map(send, range(500)))
        before = _stack_rss()
        t0 = time.monotonic()
        answers = warm + list(pool.map(send, range(500, len(http_cases))))
        t1 = time.monotonic()
        calls = list(pool.map(call, range(len(grpc_cases))))
        seconds = time.monotonic() - t0
    log.info(
        "HTTP %.0f s, gRPC %.0f s; gRPC seconds per code (mean, max): %s",
        t1 - t0,
        time.monotonic() - t1,
        {k: (round(sum(v) / len(v), 3), round(max(v), 2)) for k, v in took.items()},
    )
    after = _stack_rss()
    statuses = Counter(code for _, code, _ in answers)
    codes = Counter(code for _, code, _ in calls)
    log.info(
        "fuzzing: HTTP %s; gRPC %s; %.0f s; stack RSS %.0f -> %.0f MB",
        dict(statuses),
        dict(codes),
        seconds,
        before / 2**20,
        after / 2**20,
    )
    failed = [(i, code, text[:200]) for i, code, text in answers if code >= 500]
    assert not failed, failed[:5]
    assert statuses[200] >= 500 and len(statuses) >= 5, statuses  # the mix reached answers and many refusals
    assert not {"INTERNAL", "UNKNOWN", "DEADLINE_EXCEEDED"} & set(codes), [c for c in calls if c[1] != "OK"][:5]
    assert codes["OK"] >= 10 and codes["INVALID_ARGUMENT"] >= 300, codes  # bytes that are no protobuf: UNIMPLEMENTED
    leaks = [(i, text[:200]) for i, _, text in answers + calls if any(leak in text for leak in LEAKS)]
    assert not leaks, leaks[:5]
    assert _replica_restarts() == restarts
    assert after < 1.10 * before, (before, after)


def test_single_oversized_requests_are_refused_with_little_memory(served) -> None:
    """A 1 GB gRPC tensor, a 1 GB chunked HTTP body and a PNG declaring 13,000 x 13,000 pixels are refused while
    the stack's resident memory (sampled every 20 ms) grows by less than 100 MB each."""
    import threading

    from ensdef.io.proto import ensdef_pb2
    from tests.unit.test_hostile_inputs import png_declaring

    ep, client, _, _ = served
    n = 342_392  # images of 28 x 28 float32: 1.07 GB
    big = bytes(n * 28 * 28 * 4)

    def peak_growth(send) -> tuple[int, object]:  # noqa: ANN001
        base, peak, done = _stack_rss(), [0], threading.Event()

        def sample() -> None:
            while not done.is_set():
                peak[0] = max(peak[0], _stack_rss())
                done.wait(0.02)

        t = threading.Thread(target=sample)
        t.start()
        try:
            out = send()
            time.sleep(0.5)
        finally:
            done.set()
            t.join()
        return max(peak[0], _stack_rss()) - base, out

    def grpc_big() -> str:
        req = ensdef_pb2.ClassifyRequest(defense="target", tensor=big, shape=[n, 1, 28, 28], dtype="float32")
        try:
            client.stub.Classify(req, metadata=client.metadata, timeout=120)
            return "OK"
        except grpc.RpcError as e:
            return e.code().name

    def http_big() -> str:
        chunks = (bytes(2**16) for _ in range(2**14))  # 1 GiB, chunked: no Content-Length
        try:
            r = requests.post(
                f"{ep.http}/v1/target/classify", data=chunks, timeout=120, headers={"Content-Type": "application/json"}
            )
            return str(r.status_code)
        except requests.ConnectionError:  # the service answered 411 and closed while the client still sent
            return "closed"

    def png_big() -> str:
        r = requests.post(
            f"{ep.http}/v1/target/classify",
            data=png_declaring(13_000, 13_000),
            timeout=60,
            headers={"Content-Type": "image/png"},
        )
        return str(r.status_code)

    for name, send, refused in (
        ("grpc 1 GB", grpc_big, {"RESOURCE_EXHAUSTED", "INVALID_ARGUMENT"}),
        ("http 1 GB chunked", http_big, {"411", "closed"}),
        ("png 13000^2", png_big, {"422"}),
    ):
        grew, out = peak_growth(send)
        log.info("%s: %s, stack grew by %.1f MB at most", name, out, grew / 2**20)
        assert out in refused, (name, out)
        assert grew < 100 * 2**20, (name, grew / 2**20)
    assert requests.get(f"{ep.http}/healthz", timeout=30).status_code == 200


def test_held_partial_connections_do_not_starve_the_service(served, mnist5k) -> None:
    """300 connections that send headers and part of a body and then wait: each address gets at most
    ``max_client_requests`` slots (429 beyond), a held body times out (408), and another client is answered
    within a second throughout."""
    import http.client
    import socket
    from urllib.parse import urlsplit

    ep = served[0]
    host, port = urlsplit(ep.http).hostname, urlsplit(ep.http).port
    head = b"POST /v1/target/classify HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    held = []
    for _ in range(300):
        sock = socket.create_connection((host, port), timeout=30)
        sock.sendall(head + b'Content-Length: 100000\r\n\r\n{"images": [')
        held.append(sock)
    try:
        time.sleep(1.0)
        body = __import__("json").dumps({"images": mnist5k.test.x[:1].tolist()})
        for method, path, data in [("GET", "/healthz", None), ("POST", "/v1/target/classify", body)]:
            conn = http.client.HTTPConnection(host, port, timeout=10, source_address=("127.0.0.2", 0))
            t0 = time.monotonic()
            conn.request(method, path, body=data, headers={"Content-Type": "application/json"})
            r = conn.getresponse()
            assert r.status == 200 and time.monotonic() - t0 < 1.0, (path, r.status, time.monotonic() - t0)
            conn.close()
        statuses = []
        for sock in held:
            statuses.append(sock.recv(64).split(b" ")[1])  # 429 at once, or 408 once the body times out
        assert set(statuses) <= {b"408", b"429"} and b"408" in statuses and b"429" in statuses, set(statuses)
    finally:
        for sock in held:
            sock.close()


def test_png_upload_and_bad_grpc_input(served, mnist5k) -> None:
    from PIL import Image

    ep, client, store, preset = served
    img = (mnist5k.test.x[0, 0].numpy() * 255).round().astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    r = post(ep, "target", buf.getvalue(), token=None, kind="image/png")
    assert r.status_code == 200 and r.json()["answers"][0]["label"] in range(10)
    bad = [
        ("target", np.zeros((1, 1, 28, 27), np.float32), "28, 27"),
        ("target", np.full((1, 1, 28, 28), np.inf, np.float32), "NaN or infinite"),
        ("target", np.zeros((1, 1, 28, 28), np.int16), "dtype"),
        ("target", np.zeros((33, 1, 28, 28), np.float32), "limit of 32"),
        ("magic", np.zeros((1, 1, 28, 28), np.float32), "unknown defense"),
    ]
    for defense, a, message in bad:
        with pytest.raises(grpc.RpcError) as e:
            client.classify(defense, a)
        assert e.value.code() is grpc.StatusCode.INVALID_ARGUMENT and message in e.value.details()
    from ensdef.io.proto import ensdef_pb2

    raw = [  # (shape, tensor bytes, admin token): a product that wraps to 0, too many dimensions, a huge size
        ([2**32, 2**32, 1, 1], b"", ""),
        ([1] * 70, b"\0\0\0\0", ""),
        ([2**63 - 1, 1, 28, 28], b"", ""),
        ([1, 1, 28, 28], bytes(3136), "t\u00e9st"),  # a non-ASCII admin token is simply not the admin's
    ]
    for shape, data, token in raw:
        req = ensdef_pb2.ClassifyRequest(defense="target", tensor=data, shape=shape, dtype="float32")
        req.admin_token = token
        try:
            client.stub.Classify(req, metadata=client.metadata, timeout=60)
            assert token, shape  # only the well-formed request may be answered
        except grpc.RpcError as e:
            assert e.code() is grpc.StatusCode.INVALID_ARGUMENT, (shape, e.code(), e.details()[:300])
            assert "Traceback" not in e.details() and len(e.details()) < 200
    with pytest.raises(grpc.RpcError) as e:
        client.classify("target", np.zeros((1, 1, 28, 28), np.float32), seed=1)
    assert e.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert requests.get(f"{ep.http}/healthz", timeout=30).status_code == 200  # nothing crashed


def test_copies_in_one_request_are_drawn_as_separate_requests(served, mnist5k) -> None:
    """30 copies of one image in one request to each randomized defense get independent draws: their answers are
    distributed as those of 30 separate requests (chi-square homogeneity), not one shared answer. The image is
    one whose answer varies across draws in process: a point where the answer changes on the segment between
    two digits of different classes. DeT and the noisy vote of the one-epoch tiny store answer one label on every
    image (their per-element noise is checked per copy in the unit tests); the draws that were shared per
    request (teams, sampled networks) must vary here."""
    from scipy.stats import chi2_contingency

    ep, _, store, preset = served
    randomized = [d for d in ep.defenses if build_defense(d, store, preset).randomized]
    assert {"verification", "modef", "modef-1tm", "modef-mtm", "rls", "det", "noisy-vote"} == set(randomized)
    x, y = mnist5k.test.x, mnist5k.test.y
    first = [x[int((y == k).nonzero()[0])] for k in range(10)]

    def answers(r: requests.Response) -> list[tuple]:
        assert r.status_code == 200, r.text
        return [(a["label"], a["flagged"], a["abstained"]) for a in r.json()["answers"]]

    for defense in randomized:
        d = build_defense(defense, store, preset)

        def outcome(c: torch.Tensor, seed: int, d=d) -> tuple:  # noqa: ANN001
            o = d.decide(c[None], make_generator(seed))[0]
            return (None if o.abstained else o.label, o.flagged, o.abstained)

        def boundary(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:  # bisection on seed 0's answer
            lo, hi, at_a = 0.0, 1.0, outcome(a, 0)
            for _ in range(14):
                mid = (lo + hi) / 2
                lo, hi = (mid, hi) if outcome(a * (1 - mid) + b * mid, 0) == at_a else (lo, mid)
            return a * (1 - hi) + b * hi

        def spread(c: torch.Tensor) -> int:  # how often the second most common answer comes, over 30 draws
            counts = sorted(Counter(outcome(c, s) for s in range(30)).values())
            return counts[-2] if len(counts) > 1 else 0

        c = max([boundary(first[k], first[k + 5]) for k in range(5)], key=spread)
        varies = spread(c) >= 6
        assert varies or defense in ("det", "noisy-vote"), f"{defense}: no image whose answer varies across draws"
        apart = [answers(post(ep, defense, {"npy": _npy(c[None].numpy())}, token=None))[0] for _ in range(30)]
        together = answers(post(ep, defense, {"npy": _npy(c.expand(30, *c.shape).numpy())}, token=None))
        kinds = sorted(set(apart) | set(together), key=str)
        table = [[apart.count(k) for k in kinds], [together.count(k) for k in kinds]]
        if varies:
            assert len(set(together)) > 1, f"{defense}: 30 copies in one request share one draw"
            assert chi2_contingency(table).pvalue > 0.001, (defense, table)
        else:
            assert len(kinds) == 1, (defense, table)


def test_killed_member_degrades_or_fails_never_wrong_and_recovers(served, mnist5k) -> None:
    import ray

    ep, _, store, preset = served
    x = mnist5k.test.x[::131][:4]
    want = {s: in_process(store, preset, "noisy-vote", x, s) for s in range(24)}
    [victim] = [a for a in alive_actors(ep) if "member-tempnet-02" in (a.name or "")]

    def ask(seed: int) -> tuple[int, int, list[dict]]:
        r = post(ep, "noisy-vote", {"images": x.tolist(), "seed": seed})
        return seed, r.status_code, r.json().get("answers", []) if r.status_code == 200 else []

    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(ask, s) for s in range(24)]
        time.sleep(0.3)
        ray.kill(ray.get_actor(victim.name, namespace="serve"), no_restart=True)
        outcomes = [f.result() for f in futures]
    degraded = 0
    for seed, status, answers in outcomes:
        assert status in (200, 503), status
        for a, w in zip(answers, want[seed], strict=True):
            if a["degraded"]:
                degraded += 1
            else:  # a full vote must be exactly the in-process decision
                assert {k: a[k] for k in w} == w
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:  # Serve replaces the replica; full votes resume
        seed, status, answers = ask(5)
        if status == 200 and not any(a["degraded"] for a in answers):
            assert [{k: a[k] for k in w} for a, w in zip(answers, want[5], strict=True)] == want[5]
            break
        time.sleep(2)
    else:
        pytest.fail("full votes did not resume within 240 s of the kill")
    # Whether a request meets the dead replica (degraded or 503) or waits for its replacement (full vote) depends
    # on timing; the degraded path itself is pinned by test_plans and test_cluster. Here: never wrong.
    log.info(
        "after the member kill: %d degraded answers, %d of 24 requests 503",
        degraded,
        sum(status == 503 for _, status, _ in outcomes),
    )


SERVER_FAILURES = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.CANCELLED,
    grpc.StatusCode.ABORTED,
}


def alive_actors(ep) -> list:
    from ray.util.state import list_actors

    return list_actors(ep.ray_address, filters=[("state", "=", "ALIVE")], limit=1000)  # this test's Ray


def test_killed_ingress_replica_fails_cleanly_and_is_replaced(served, mnist5k) -> None:
    """The ingress replica (HTTP and gRPC entry, the inline vote) dies under load: every request either gets
    the exact in-process answer or an error status, none hangs, and Serve's replacement answers both protocols
    exactly as before."""
    import ray

    ep, client, store, preset = served
    x = mnist5k.test.x[::173][:3]
    want = {s: in_process(store, preset, "noisy-vote", x, s) for s in range(16)}
    [victim] = [a for a in alive_actors(ep) if "#Ingress#" in (a.name or "")]

    def ask_http(seed: int) -> tuple[int, list[dict]]:
        try:
            r = post(ep, "noisy-vote", {"images": x.tolist(), "seed": seed})
        except (requests.exceptions.ChunkedEncodingError, requests.exceptions.ConnectionError):
            return 599, []  # the replica died mid-response: the proxy breaks the connection (a truncated body)
        return r.status_code, r.json()["answers"] if r.status_code == 200 else []

    def ask_grpc(seed: int) -> tuple[int, list[dict]]:
        try:
            return 200, client.classify("noisy-vote", x, TOKEN, seed)
        except grpc.RpcError as e:  # a server-side failure, not a rejected input and not a client timeout (a hang)
            assert e.code() in SERVER_FAILURES, (e.code(), e.details())
            return 503, []

    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(ask_http if s % 2 else ask_grpc, s) for s in range(16)]
        time.sleep(0.3)
        ray.kill(ray.get_actor(victim.name, namespace="serve"), no_restart=True)
        outcomes = [(s, *f.result()) for s, f in enumerate(futures)]
    log.info("around the ingress kill: statuses %s", sorted(status for _, status, _ in outcomes))
    for seed, status, answers in outcomes:
        assert status == 200 or status >= 500, (seed, status)
        if status == 200:  # answered by the old replica before the kill or by its replacement: exact
            assert [{k: a[k] for k in ANSWER_FIELDS} for a in answers] == want[seed], seed

    def replaced() -> bool:  # a live ingress replica other than the victim, answering both protocols
        live = [a.name for a in alive_actors(ep) if "#Ingress#" in (a.name or "")]
        return live not in ([], [victim.name]) and healthy(ep, client)

    deadline, ok = time.monotonic() + 240, False
    while time.monotonic() < deadline and not (ok := replaced()):
        time.sleep(2)
    assert ok, "the ingress was not replaced within 240 s of the kill"
    assert_served_as_in_process(ep.http, client, TOKEN, store, preset, "noisy-vote", x, 7)


def healthy(ep, client: EnsdefClient) -> bool:
    """Both protocols reach a live ingress replica."""
    try:
        return requests.get(f"{ep.http}/healthz", timeout=10).status_code == 200 and client.defenses() == ep.defenses
    except (requests.RequestException, grpc.RpcError):
        return False


def test_metrics_reach_rays_prometheus_endpoint(served, ray_serve, mnist5k) -> None:
    ep = served[0]
    post(ep, "noisy-vote", {"images": mnist5k.test.x[:2].tolist()}, token=None, kind="application/json")
    # Ray exports metrics every few seconds; other tests' defenses may have been exported already, so wait for
    # exactly what is asserted: this defense's request counter and the client and member-batch series.
    wanted = re.compile(r'^\w*ensdef_requests\w*\{[^}]*defense="noisy-vote"', re.MULTILINE)
    deadline, text = time.monotonic() + 90, ""
    while time.monotonic() < deadline:
        text = requests.get(f"http://127.0.0.1:{ray_serve['metrics']}/metrics", timeout=30).text
        if wanted.search(text) and "ensdef_client_queries" in text and "ensdef_member_batch_size" in text:
            break
        time.sleep(3)
    assert wanted.search(text), "no ensdef_requests series for defense noisy-vote was exported"
    assert "ensdef_client_queries" in text and "ensdef_member_batch_size" in text
    # the Grafana dashboard's names are Ray's export names: every ensdef series exported so far is one of them
    from tests.unit.test_dashboard import defined_metrics, exported_names

    exported = set(re.findall(r"^(\w*ensdef_\w+)\{", text, re.MULTILINE))
    assert {
        "ray_ensdef_requests_total",
        "ray_ensdef_client_queries_total",
        "ray_ensdef_member_batch_size_bucket",
    } <= exported
    assert exported <= set(exported_names(defined_metrics())), exported - set(exported_names(defined_metrics()))
