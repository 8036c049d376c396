"""MODEF Table V baselines, trained with ART: PGD adversarial training and defensive distillation of the
preset's target architecture. Both are single classifiers; the harness evaluates them like any defense."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

import numpy as np
import torch
from art.attacks.evasion import ProjectedGradientDescent
from art.defences.trainer import AdversarialTrainer
from art.defences.transformer.evasion import DefensiveDistillation
from torch import nn

from ensdef.attacks.art_classifier import art_classifier
from ensdef.data import Split
from ensdef.presets import BaselineConfig
from ensdef.rng import seeded

log = logging.getLogger(__name__)


class Baseline(str, Enum):
    ADV_TRAINING = "adv-training"
    DISTILLATION = "distillation"


class Tempered(nn.Module):
    """``softmax(model(x) / T)``: the probability outputs distillation trains on and against."""

    def __init__(self, model: nn.Module, temperature: float) -> None:
        super().__init__()
        self.model, self.temperature = model, temperature

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.model(x) / self.temperature, 1)


class SoftCrossEntropy(nn.Module):
    """Cross-entropy of probability outputs ``p`` ``[B, K]`` against soft labels ``q`` ``[B, K]``."""

    def forward(self, p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        return -(q * p.clamp_min(1e-12).log()).sum(1).mean()


@dataclass(frozen=True)
class BaselineResult:
    model: nn.Module
    seconds: float


def adversarial_training(
    build: Callable[[], nn.Module], train: Split, num_classes: int, cfg: BaselineConfig
) -> BaselineResult:
    """ART ``AdversarialTrainer`` with L-inf PGD at ``cfg.adv_eps``; half of every batch adversarial."""
    t0 = time.perf_counter()
    with seeded(cfg.seed):
        model = build()
        clf = art_classifier(model, tuple(train.x.shape[1:]), num_classes, lr=cfg.lr)
        pgd = ProjectedGradientDescent(
            clf, eps=cfg.adv_eps, eps_step=cfg.adv_eps_step, max_iter=cfg.adv_max_iter, verbose=False
        )
        trainer = AdversarialTrainer(clf, pgd, ratio=cfg.adv_ratio)
        trainer.fit(train.x.numpy(), train.y.numpy(), nb_epochs=cfg.epochs, batch_size=cfg.batch_size)
    return BaselineResult(model.eval(), time.perf_counter() - t0)


def distillation(build: Callable[[], nn.Module], train: Split, num_classes: int, cfg: BaselineConfig) -> BaselineResult:
    """Papernot et al. through ART ``DefensiveDistillation``: a teacher trained at temperature T labels the
    training set with ``softmax(z / T)``; a student of the same architecture is trained on those soft labels
    at T and deployed at T = 1 (its raw logits)."""
    t0 = time.perf_counter()
    shape, k, x = tuple(train.x.shape[1:]), num_classes, train.x.numpy()
    with seeded(cfg.seed):
        teacher, student = build(), build()
        t_clf = art_classifier(Tempered(teacher, cfg.temperature), shape, k, lr=cfg.lr, loss=SoftCrossEntropy())
        t_clf.fit(x, np.eye(k, dtype=np.float32)[train.y.numpy()], nb_epochs=cfg.epochs, batch_size=cfg.batch_size)
        s_clf = art_classifier(Tempered(student, cfg.temperature), shape, k, lr=cfg.lr, loss=SoftCrossEntropy())
        DefensiveDistillation(t_clf, batch_size=cfg.batch_size, nb_epochs=cfg.epochs)(x, s_clf)
    return BaselineResult(student.eval(), time.perf_counter() - t0)


BASELINES: dict[Baseline, Callable[[Callable[[], nn.Module], Split, int, BaselineConfig], BaselineResult]] = {
    Baseline.ADV_TRAINING: adversarial_training,
    Baseline.DISTILLATION: distillation,
}
