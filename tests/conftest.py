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
