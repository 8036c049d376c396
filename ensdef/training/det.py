"""DeT training: cross-training of reformer pairs (Algorithm 1) and reformer-list selection by accuracy
after reconstruction and measured transferability of C&W L2 examples between reformers."""

from __future__ import annotations

import copy
import itertools
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from art.attacks.evasion import CarliniL2Method, ProjectedGradientDescent
from torch import nn
from tqdm.auto import tqdm

from ensdef.attacks.art_classifier import art_classifier
from ensdef.config import to_plain
from ensdef.data import Dataset, Split
from ensdef.errors import ConfigError
from ensdef.models.inference import accuracy, resolve_device
from ensdef.presets import Preset, TrainConfig
from ensdef.rng import make_generator, randn_like, seeded
from ensdef.store import DET_LIST_ARTIFACT, ArtifactStore, Manifest, to_kwargs
from ensdef.training.adversarial import reconstruction_inputs
from ensdef.training.loops import optimizer

log = logging.getLogger(__name__)


def cross_train(pair: Sequence[nn.Module], train: Split, cfg: TrainConfig, noise: float) -> list[nn.Module]:
    """Algorithm 1 on copies of two trained reformers: ``R_b`` learns to clean ``R_a``'s reconstruction of
    a noisy input and vice versa, each step updating only the second reformer of the chain. With
    ``cfg.adversarial`` the first ``ceil(ratio * B)`` inputs of every step are instead examples within ``eps``
    of the images that ascend the chain's reconstruction error ``||R_b(R_a(x')) - x||^2`` (what an attacker
    who knows both does; :func:`~ensdef.training.adversarial.reconstruction_inputs`)."""
    device = resolve_device(cfg.device)
    r = [copy.deepcopy(m).to(device).train() for m in pair]
    for m in r:
        for p in m.parameters():
            p.requires_grad_(True)
    opts = [optimizer(m, cfg) for m in r]
    g, adv = make_generator(cfg.seed), cfg.adversarial
    with seeded(cfg.seed, device):
        for _ in tqdm(range(cfg.epochs), desc="cross-train", leave=False, disable=None):
            order = torch.randperm(len(train), generator=g)
            for i in range(0, len(order), cfg.batch_size):
                x = train.x[order[i : i + cfg.batch_size]].to(device)
                tempx = (x + noise * randn_like(x, g)).clamp(0, 1)
                for first, second in ((0, 1), (1, 0)):
                    inputs = tempx  # with adv: examples against the chain first -> second on the ratio share
                    if adv is not None:
                        inputs = reconstruction_inputs(nn.Sequential(r[first], r[second]), x, tempx, adv, g)
                    with torch.no_grad():
                        mid = r[first](inputs)
                    loss = F.mse_loss(r[second](mid), x)
                    opts[second].zero_grad(set_to_none=True)
                    loss.backward()
                    opts[second].step()
    return [m.eval().cpu() for m in r]


def _through(classifier: nn.Module, reformer: nn.Module, x: Split, num_classes: int):  # noqa: ANN202
    """ART view of ``classifier o reformer`` for inputs shaped like ``x``."""
    return art_classifier(nn.Sequential(reformer, classifier).eval(), tuple(x.x.shape[1:]), num_classes)


def cw_examples(
    classifier: nn.Module, reformer: nn.Module, x: Split, confidence: float, max_iter: int, num_classes: int = 10
) -> np.ndarray:
    """C&W L2 examples against ``classifier o reformer`` (untargeted)."""
    attack = CarliniL2Method(
        _through(classifier, reformer, x, num_classes),
        confidence=confidence,
        max_iter=max_iter,
        binary_search_steps=5,
        learning_rate=0.05,
        batch_size=len(x),
        verbose=False,
    )
    return attack.generate(x.x.numpy()).astype(np.float32)


def pgd_l2_examples(
    classifier: nn.Module, reformer: nn.Module, x: Split, eps: float, max_iter: int, num_classes: int = 10
) -> np.ndarray:
    """L2 PGD examples against ``classifier o reformer`` (untargeted, step 2.5 eps / iterations)."""
    attack = ProjectedGradientDescent(
        _through(classifier, reformer, x, num_classes),
        norm=2,
        eps=eps,
        eps_step=2.5 * eps / max_iter,
        max_iter=max_iter,
        batch_size=len(x),
        verbose=False,
    )
    return attack.generate(x.x.numpy()).astype(np.float32)


TRANSFER_ATTACKS = {"cw_l2": cw_examples, "pgd_l2": pgd_l2_examples}


def fooled(classifier: nn.Module, reformer: nn.Module, x_adv: np.ndarray, y: torch.Tensor) -> float:
    """Fraction of ``x_adv`` that ``classifier o reformer`` misclassifies."""
    with torch.no_grad():
        return float((classifier(reformer(torch.from_numpy(x_adv))).argmax(1) != y).float().mean())


def transfer_matrix(
    classifier: nn.Module,
    reformers: Sequence[nn.Module],
    x: Split,
    param: float,
    max_iter: int,
    attack: str = "cw_l2",
) -> np.ndarray:
    """``T[i, j]``: fraction of L2 examples (``attack``: C&W with confidence ``param``, or PGD with L2 budget
    ``param``) made through reformer i that also fool reformer j."""
    t = np.zeros((len(reformers), len(reformers)))
    for i, ri in enumerate(tqdm(reformers, desc="transferability", leave=False, disable=None)):
        adv = TRANSFER_ATTACKS[attack](classifier, ri, x, param, max_iter)
        for j, rj in enumerate(reformers):
            t[i, j] = fooled(classifier, rj, adv, x.y)
    return t


def select_list(accuracies: Sequence[float], transfer: np.ndarray, size: int, min_accuracy: float) -> list[int]:
    """Among reformers reaching ``min_accuracy``, the ``size``-subset with the lowest mean off-diagonal
    transferability (ties: higher mean accuracy)."""
    ok = [i for i, a in enumerate(accuracies) if a >= min_accuracy]
    if len(ok) < size:
        raise ConfigError(f"only {len(ok)} reformers reach accuracy {min_accuracy:.3f}; the list needs {size}")

    def cost(s: tuple[int, ...]) -> tuple[float, float]:
        off = [transfer[i, j] for i in s for j in s if i != j]
        return float(np.mean(off)), -float(np.mean([accuracies[i] for i in s]))

    return list(min(itertools.combinations(ok, size), key=cost))


def reconstructed_accuracy(classifier: nn.Module, reformer: nn.Module, split: Split) -> float:
    return accuracy(nn.Sequential(reformer, classifier), split)


def cross_trained_as_planned(store: ArtifactStore, name: str, cross: TrainConfig) -> bool:
    """A stored cross-trained reformer verifies, was trained with ``cross`` and from its base's current
    weights (a retrained base or a changed ``det.cross_train`` makes it stale)."""
    if not (store.exists(name) and store.verify(name).ok):
        return False
    m = store.manifest(name)
    base = m.extra.get("base", "")
    return (
        m.train_config.get("cross_train") == to_plain(cross)
        and store.exists(base)
        and m.extra.get("base_sha256") == store.manifest(base).sha256
    )


def run_det_selection(
    preset: Preset, data: Dataset, store: ArtifactStore, base_names: list[str], skip_existing: bool = False
) -> dict[str, Any]:
    """Cross-train every pair of the stored base reformers, then choose the reformer list. Saves the
    retrained reformers and the ``det-reformer-list`` JSON artifact (with the transferability matrix)."""
    cfg = preset.det
    clf = store.load_model("target")[0]
    base = [store.load_model(n)[0] for n in base_names]
    names, models = list(base_names), list(base)
    pairs = []
    for i, j in itertools.combinations(range(len(base)), 2):
        pair_names = [f"{base_names[a]}~{base_names[b].removeprefix('reformer-')}" for a, b in ((i, j), (j, i))]
        if skip_existing and all(cross_trained_as_planned(store, n, cfg.cross_train) for n in pair_names):
            names += pair_names
            models += [store.load_model(n)[0] for n in pair_names]
            pairs.append((i, j, len(names) - 2, len(names) - 1))
            continue
        ri, rj = cross_train([base[i], base[j]], data.train, cfg.cross_train, preset.reformers.noise_sigma)
        for (a, b), model in (((i, j), ri), ((j, i), rj)):
            name = f"{base_names[a]}~{base_names[b].removeprefix('reformer-')}"
            src = store.manifest(base_names[a])
            store.save_model(
                model,
                Manifest(
                    **{
                        **to_kwargs(src),
                        "name": name,
                        "sha256": "",
                        "code_version": "",
                        "created": "",
                        "train_config": {"cross_train": to_plain(cfg.cross_train), "base": to_plain(src.train_config)},
                        "extra": {
                            **src.extra,
                            "base": base_names[a],
                            "base_sha256": src.sha256,
                            "cross_trained_with": base_names[b],
                        },
                        "metrics": {"val_accuracy_through": reconstructed_accuracy(clf, model, data.val)},
                    }
                ),
            )
            names.append(name)
            models.append(model)
        pairs.append((i, j, len(names) - 2, len(names) - 1))
    accs = [reconstructed_accuracy(clf, m, data.val) for m in models]
    ref = data.val.subset(range(cfg.attack_images))
    param = cfg.cw_confidence if cfg.transfer_attack == "cw_l2" else cfg.l2_eps
    transfer = transfer_matrix(clf, models, ref, param, cfg.cw_max_iter, cfg.transfer_attack)
    floor = accuracy(clf, data.val) - cfg.max_accuracy_drop
    chosen = select_list(accs, transfer, cfg.list_size, floor)
    result = {
        "candidates": names,
        "val_accuracy_through": accs,
        "transfer": transfer.tolist(),
        "min_accuracy": floor,
        "list": [names[i] for i in chosen],
        "preliminary": cfg.preliminary,
        "pairs": [
            {
                "pair": [names[i], names[j]],
                "before": [transfer[i, j], transfer[j, i]],
                "after": [transfer[a, b], transfer[b, a]],
                "retrained": [names[a], names[b]],
            }
            for i, j, a, b in pairs
        ],
        "attack": {
            "name": cfg.transfer_attack,
            "confidence": cfg.cw_confidence,
            "l2_eps": cfg.l2_eps,
            "max_iter": cfg.cw_max_iter,
            "images": len(ref),
        },
    }
    store.save_json(DET_LIST_ARTIFACT, result)
    log.info("DeT reformer list: %s", result["list"])
    return result
