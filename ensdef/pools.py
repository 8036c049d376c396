"""Pools of members a preset asks for: plan each member, train it, write it to the artifact store.

``plan_pool`` turns a preset into :class:`MemberPlan` items (pure, cheap); ``train_member`` trains one
plan and returns its artifact. The CLI loops over plans in process; the Tune layer runs one plan per
trial. Both write the same manifests through the same store.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

from ensdef.config import to_plain
from ensdef.data import Dataset, Split
from ensdef.models import build, get_spec
from ensdef.noise import NoiseKind, NoiseSpec
from ensdef.presets import Preset, TrainConfig
from ensdef.rng import seeded
from ensdef.store import ArtifactStore, Manifest
from ensdef.train import accuracy, reconstruction_mse, train_autoencoder, train_classifier
from ensdef.types import Role

log = logging.getLogger(__name__)


class Pool(str, Enum):
    TARGET = "target"
    VERIFIERS = "verifiers"
    DENOISERS = "denoisers"
    REFORMERS = "reformers"
    TEMPNETS = "tempnets"


@dataclass(frozen=True)
class MemberPlan:
    """Everything needed to train one member; picklable, so a Tune trial can carry it."""

    name: str
    role: Role
    architecture: str
    train: TrainConfig
    noise: NoiseSpec | None = None  # autoencoders: the corruption trained against
    partition: tuple[int, int] | None = None  # (index, count): train on that disjoint slice only
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)


def _target(p: Preset) -> list[MemberPlan]:
    return [MemberPlan("target", Role.TARGET, p.target.architecture, p.target.train)]


def _verifiers(p: Preset) -> list[MemberPlan]:
    v = p.verifiers
    return [MemberPlan(f"verifier-{a}", Role.VERIFIER, a, v.train_for(a)) for a in v.architectures]


def _denoisers(p: Preset) -> list[MemberPlan]:
    out = []
    for m in p.denoisers.members:
        spec = NoiseSpec(m.noise, m.level)
        out.append(
            MemberPlan(
                f"denoiser-{m.architecture}-{spec.tag}",
                Role.DENOISER,
                m.architecture,
                p.denoisers.train,
                noise=spec,
                extra={"noise": to_plain(spec)},
            )
        )
    return out


def _reformers(p: Preset) -> list[MemberPlan]:
    spec = NoiseSpec(NoiseKind.GAUSSIAN, p.reformers.noise_sigma)
    return [
        MemberPlan(f"reformer-{a}", Role.REFORMER, a, p.reformers.train, noise=spec, extra={"noise": to_plain(spec)})
        for a in p.reformers.architectures
    ]


def _tempnets(p: Preset) -> list[MemberPlan]:
    t = p.tempnets
    out = []
    for l in range(1, t.count + 1):
        temp = t.base_temperature * l
        cfg = dataclasses.replace(t.train, temperature=temp, seed=t.train.seed + l)
        out.append(
            MemberPlan(
                f"tempnet-{l:02d}",
                Role.TEMPNET,
                t.architecture,
                cfg,
                partition=(l - 1, t.count) if t.partition else None,
                extra={"temperature": temp, "index": l},
            )
        )
    return out


PLANNERS: dict[Pool, Callable[[Preset], list[MemberPlan]]] = {
    Pool.TARGET: _target,
    Pool.VERIFIERS: _verifiers,
    Pool.DENOISERS: _denoisers,
    Pool.REFORMERS: _reformers,
    Pool.TEMPNETS: _tempnets,
}


def plan_pool(preset: Preset, pool: Pool) -> list[MemberPlan]:
    return PLANNERS[pool](preset)


def _partition(split: Split, index: int, count: int) -> Split:
    return split.subset(list(range(index, len(split), count)))


def train_member(plan: MemberPlan, data: Dataset, store: ArtifactStore) -> Manifest:
    """Train one planned member on ``data`` and save it; returns the stored manifest with test metrics."""
    shape = data.shape
    with seeded(plan.train.seed):
        model = build(plan.architecture, shape, data.num_classes)
    train = _partition(data.train, *plan.partition) if plan.partition else data.train
    if get_spec(plan.architecture).kind.value == "autoencoder":
        assert plan.noise is not None, f"{plan.name}: autoencoders need a noise spec"
        res = train_autoencoder(model, train, data.val, plan.train, plan.noise, desc=plan.name)
        metrics = {
            **res.metrics,
            "test_mse_clean": reconstruction_mse(res.model, data.test),
            "test_mse_noisy": reconstruction_mse(res.model, data.test, plan.noise, seed=1),
        }
    else:
        res = train_classifier(model, train, data.val, plan.train, desc=plan.name)
        metrics = {**res.metrics, "test_accuracy": accuracy(res.model, data.test)}
    metrics.update(epochs=res.epochs_run, seconds=round(res.seconds, 2), train_size=len(train))
    manifest = Manifest(
        name=plan.name,
        role=plan.role,
        architecture=plan.architecture,
        dataset=data.name,
        input_shape=tuple(shape),
        num_classes=data.num_classes,
        sha256="",
        train_config=to_plain(plan.train),
        metrics=metrics,
        extra=dict(plan.extra),
    )
    return store.save_model(res.model, manifest)
