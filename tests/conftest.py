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
