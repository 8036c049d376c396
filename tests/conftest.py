"""Shared fixtures: the embedded dataset (loaded once) and a small trained store for integration tests."""

from __future__ import annotations

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


@pytest.fixture(scope="session")
def tiny_store(tmp_path_factory: pytest.TempPathFactory, mnist5k: Dataset):
    """A store with every pool of ``fixtures/tiny.yaml`` trained for one epoch and a team selection."""
    from ensdef.pools import Pool, train_pools
    from ensdef.presets import load_preset
    from ensdef.selection import run_selection
    from ensdef.store import ArtifactStore

    preset = load_preset(FIXTURES / "tiny.yaml")
    store = ArtifactStore(tmp_path_factory.mktemp("tiny-store"))
    train_pools(preset, mnist5k, store, list(Pool))
    run_selection(store, preset, mnist5k.val)
    return store, preset


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def ray_serve():
    """One local Ray (2 CPUs) and Serve with HTTP and gRPC proxies, shared by every integration test."""
    import ray
    from ray import serve

    from deployments.launch import deploy_proxies, start_local

    ports = {"http": free_port(), "grpc": free_port(), "metrics": free_port()}
    start_local(2, ports["metrics"])
    deploy_proxies("127.0.0.1", ports["http"], ports["grpc"])
    yield ports
    serve.shutdown()
    ray.shutdown()
