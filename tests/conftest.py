"""Shared fixtures: the embedded dataset (loaded once), a store of random-weight members for unit tests (every
pool of ``fixtures/tiny.yaml`` built untrained, in seconds), and a small trained store for integration tests."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import pytest
import torch

from ensdef.data import Dataset, load_mnist5k

torch.set_num_threads(2)
logging.getLogger("ensdef").setLevel(logging.WARNING)
FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="session")
def mnist5k() -> Dataset:
    return load_mnist5k()


def build_random_store(root: Path, data: Dataset):
    """Every member the tiny preset plans, built with its seed and stored untrained, plus a team selection
    (from random probabilities) and a DeT reformer list: what the defenses need, without training."""
    import numpy as np

    from ensdef.diversity.teams import select_teams
    from ensdef.models import build
    from ensdef.presets import load_preset
    from ensdef.rng import seeded
    from ensdef.store import DET_LIST_ARTIFACT, TEAMS_ARTIFACT, ArtifactStore
    from ensdef.training.pools import Pool, member_manifest, plan_pool
    from ensdef.types import Role

    preset = load_preset(FIXTURES / "tiny.yaml")
    store = ArtifactStore(root)
    for pool in Pool:
        for plan in plan_pool(preset, pool):
            with seeded(plan.train.seed):
                model = build(plan.architecture, data.shape, data.num_classes, **plan.extra.get("build_kwargs", {}))
            store.save_model(model.eval(), member_manifest(plan, data, {"random_weights": True}))
    verifiers = [m.name for m in store.by_role(Role.VERIFIER)]
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(data.num_classes), size=(len(verifiers), 60))
    c = preset.modef
    sel = select_teams(verifiers, probs, rng.integers(0, data.num_classes, 60), c.min_team, c.max_team, 1.01, c.policy)
    store.save_json(TEAMS_ARTIFACT, sel.to_json())
    reformers = [m.name for m in store.by_role(Role.REFORMER)]
    store.save_json(
        DET_LIST_ARTIFACT, {"preliminary": preset.det.preliminary, "list": reformers[: preset.det.list_size]}
    )
    return store, preset


@pytest.fixture(scope="session")
def random_store(tmp_path_factory: pytest.TempPathFactory, mnist5k: Dataset):
    """The tiny preset's every member with random weights (no training), for unit tests of plans and wiring."""
    return build_random_store(tmp_path_factory.mktemp("random-store"), mnist5k)


@pytest.fixture(scope="session")
def tiny_store(tmp_path_factory: pytest.TempPathFactory, mnist5k: Dataset):
    """A store with every pool of ``fixtures/tiny.yaml`` trained for one epoch, with the verifiers' team
    selection and DeT's reformer list (the pools' post steps)."""
    from ensdef.presets import load_preset
    from ensdef.store import ArtifactStore
    from ensdef.training.pools import Pool, train_pools

    preset = load_preset(FIXTURES / "tiny.yaml")
    store = ArtifactStore(tmp_path_factory.mktemp("tiny-store"))
    train_pools(preset, mnist5k, store, list(Pool))
    return store, preset


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _span_free(base: int, width: int) -> bool:
    import socket

    for port in range(base, base + width):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


def free_ports() -> tuple[int, int]:
    """HTTP and gRPC base ports whose spans of ``PORT_SPAN`` ports above them are free and apart (Serve's
    HAProxy and direct-ingress modes put replicas, HAProxy's own ports and the fallback proxy there)."""
    from deployments.modes import PORT_SPAN

    while True:
        http, grpc = free_port(), free_port()
        if abs(http - grpc) >= 2 * PORT_SPAN and http + PORT_SPAN < 65536 and grpc + PORT_SPAN < 65536:
            if _span_free(http, PORT_SPAN) and _span_free(grpc, PORT_SPAN):
                return http, grpc


@pytest.fixture(scope="session")
def ray_serve():
    """One local Ray (2 CPUs) and Serve in its shipped mode (HAProxy in front of the ingress replicas), shared
    by every integration test."""
    import ray
    from ray import serve

    from deployments.launch import IngressMode, deploy_proxies, start_local

    http, grpc = free_ports()
    ports = {"http": http, "grpc": grpc, "metrics": free_port()}
    ingress = IngressMode.HAPROXY
    # Ray holds a stopping ingress replica open 30 s so that load balancers can deregister it (every app
    # deletion or ingress redeploy waits that long); Serve's own HAProxy retries a refused connection, and the
    # tests delete an app after each module: 2 s here
    env = {**(ingress.env(http, grpc) or {}), "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "2"}
    start_local(2, ports["metrics"], env=env)
    deploy_proxies("127.0.0.1", ports["http"], ports["grpc"])
    yield {**ports, "ingress": ingress}
    serve.shutdown()
    ray.shutdown()


def tiny_settings(store_root: str, **overrides: object):
    """Serve settings for the tiny store on a small machine (fractional CPUs, a long deadline)."""
    from deployments.settings import ServeSettings

    base = {
        "preset": str(FIXTURES / "tiny.yaml"),
        "store": str(store_root),
        "members": {"num_cpus": 0.05},
        "router_num_cpus": 0.02,
        "ingress_num_cpus": 0.02,
        "deadline_s": 30.0,
    }
    return ServeSettings.from_dict({**base, **overrides})


@contextlib.contextmanager
def deployed(ports: dict[str, int], settings, timeout_s: float = 30.0, api_key: str = ""):
    """Deploy ``settings`` behind the session's proxies; yields (endpoints, gRPC client with ``api_key``);
    deletes the app after."""
    from ray import serve

    from deployments.launch import deploy
    from ensdef.io.client import EnsdefClient

    ep = deploy(settings, "127.0.0.1", ports["http"], ports["grpc"], ingress=ports["ingress"])
    client = EnsdefClient(ep.grpc, application=settings.application, timeout_s=timeout_s, api_key=api_key)
    try:
        yield ep, client
    finally:
        client.close()
        serve.delete(settings.application)


@contextlib.contextmanager
def serving_tiny(
    ports: dict[str, int], store_root: str, timeout_s: float = 30.0, api_key: str = "", **overrides: object
):
    """The tiny store deployed with :func:`tiny_settings` plus ``overrides``; yields (endpoints, client, settings)."""
    s = tiny_settings(store_root, **overrides)
    with deployed(ports, s, timeout_s, api_key) as (ep, client):
        yield ep, client, s
