from __future__ import annotations

import pytest
import torch

from ensdef.data import Dataset, DatasetNotFoundError, load_dataset, load_mnist5k, stratified_split


def test_mnist5k_splits(mnist5k: Dataset) -> None:
    assert (len(mnist5k.train), len(mnist5k.val), len(mnist5k.test)) == (3500, 500, 1000)
    assert mnist5k.shape == (1, 28, 28) and mnist5k.num_classes == 10
    for split, per_class in ((mnist5k.train, 350), (mnist5k.val, 50), (mnist5k.test, 100)):
        assert split.x.dtype == torch.float32 and split.y.dtype == torch.int64
        assert split.x.min() >= 0 and split.x.max() <= 1 and split.x.max() > 0.99
        assert torch.bincount(split.y, minlength=10).tolist() == [per_class] * 10


def test_mnist5k_is_deterministic_and_disjoint(mnist5k: Dataset) -> None:
    again = load_mnist5k()
    assert torch.equal(again.test.x, mnist5k.test.x) and torch.equal(again.train.y, mnist5k.train.y)
    flat = {tuple(r.tolist()) for r in (mnist5k.test.x.flatten(1) * 255).round().to(torch.uint8)}
    overlap = sum(tuple(r.tolist()) in flat for r in (mnist5k.train.x.flatten(1) * 255).round().to(torch.uint8))
    assert overlap <= 5, "train and test must not share images (a few MNIST duplicates are tolerated)"


def test_stratified_split_partitions_every_index() -> None:
    y = torch.arange(100).remainder(4).numpy()
    parts = stratified_split(y, (0.5, 0.25, 0.25), seed=3)
    together = sorted(i for p in parts for i in p.tolist())
    assert together == list(range(100))
    assert [len(p) for p in parts] == [48, 28, 24]  # per class of 25: round(12.5)=12, 19-12=7, 25-19=6


@pytest.mark.parametrize("name", ["cifar10", "mnist", "svhn"])
def test_missing_torchvision_folder_names_dataset_folder_and_flag(tmp_path, name: str) -> None:
    folder = tmp_path / "nothing-here"
    with pytest.raises(DatasetNotFoundError) as e:
        load_dataset(name, folder)
    msg = str(e.value)
    assert name in msg and str(folder) in msg and "--download" in msg


def test_unknown_dataset() -> None:
    with pytest.raises(KeyError, match="unknown dataset"):
        load_dataset("imagenet")
