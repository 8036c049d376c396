"""Pools of members a preset asks for: plan each member, train it, write it to the artifact store.

``plan_pool`` turns a preset into :class:`MemberPlan` items (pure, cheap); ``train_member`` trains one
plan and returns its artifact. The CLI loops over plans in process; the Tune layer runs one plan per
trial. Both write the same manifests through the same store.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

from torch import nn

from ensdef.config import from_mapping, to_plain
from ensdef.data import Dataset, Split
from ensdef.errors import ConfigError, NotTrained
from ensdef.models import Kind, build, get_spec
from ensdef.models.inference import accuracy, reconstruction_mse
from ensdef.noise import NoiseKind, NoiseSpec
from ensdef.presets import Preset, TrainConfig
from ensdef.rng import make_generator, seeded
from ensdef.store import DET_LIST_ARTIFACT, TEAMS_ARTIFACT, ArtifactStore, Manifest
from ensdef.training.adversarial import worst_reconstruction_mse
from ensdef.training.loops import EpochHook, TrainResult, train_autoencoder, train_classifier
from ensdef.types import DataShare, GroupLossKind, Role

log = logging.getLogger(__name__)


class Pool(str, Enum):
    TARGET = "target"
    VERIFIERS = "verifiers"
    DENOISERS = "denoisers"
    REFORMERS = "reformers"
    TEMPNETS = "tempnets"
    RLS = "rls"
    BASELINES = "baselines"


@dataclass(frozen=True)
class DataSlice:
    """Member ``index`` (from 0) of ``count``: which training images it sees under ``share``."""

    index: int
    count: int
    share: DataShare

    def indices(self, n: int) -> list[int]:
        """Positions into a split of ``n`` images; slice ``i`` is every ``count``-th image from ``i``, so the
        slices are disjoint, cover the split and keep its class balance when the split is shuffled."""
        if self.share is DataShare.ALL:
            return list(range(n))
        own = self.share is DataShare.PARTITION
        return [i for i in range(n) if (i % self.count == self.index) == own]

    def apply(self, split: Split) -> Split:
        return split if self.share is DataShare.ALL else split.subset(self.indices(len(split)))


@dataclass(frozen=True)
class MemberPlan:
    """Everything needed to train one member; picklable, so a Tune trial can carry it."""

    name: str
    role: Role
    architecture: str
    train: TrainConfig
    noise: NoiseSpec | None = None  # autoencoders: the corruption trained against
    data: DataSlice | None = None  # None: the whole training split
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)
    source: str | None = None  # the store of the member ``extra["init"]`` names, when not the one trained into


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


TEMPNET_INIT = "tempnet-init"


def _tempnets(p: Preset) -> list[MemberPlan]:
    """The m temperature networks; with a warm start, :data:`TEMPNET_INIT` first, which each member starts from
    (its plan names the init and the init's training config, so a changed warm start retrains the members)."""
    t = p.tempnets
    out, start = [], {}
    if t.warm_start is not None:
        out.append(MemberPlan(TEMPNET_INIT, Role.INIT, t.architecture, t.warm_start))
        start = {"init": {"name": TEMPNET_INIT, "train": to_plain(t.warm_start)}}
    for l in range(1, t.count + 1):
        temp = t.base_temperature * l
        cfg = dataclasses.replace(t.train, temperature=temp, seed=t.train.seed + l)
        out.append(
            MemberPlan(
                f"tempnet-{l:02d}",
                Role.TEMPNET,
                t.architecture,
                cfg,
                data=None if t.data is DataShare.ALL else DataSlice(l - 1, t.count, t.data),
                extra={"temperature": temp, "index": l, **start},
            )
        )
    return out


def _rls(p: Preset) -> list[MemberPlan]:
    r = p.rls
    return [
        MemberPlan(
            f"rls-{b}",
            Role.RLS,
            f"rls_{b}",
            r.train,
            extra={"build_kwargs": {"m": r.m}, "k": r.k, "n": r.n, "loss": r.loss.value, "backbone": b},
        )
        for b in r.backbones
    ]


def _baselines(p: Preset) -> list[MemberPlan]:
    b = p.baselines
    cfg = TrainConfig(epochs=b.epochs, batch_size=b.batch_size, lr=b.lr, seed=b.seed)
    return [
        MemberPlan(f"baseline-{m}", Role.BASELINE, p.target.architecture, cfg, extra={"method": m, **to_plain(b)})
        for m in b.methods
    ]


PLANNERS: dict[Pool, Callable[[Preset], list[MemberPlan]]] = {
    Pool.TARGET: _target,
    Pool.VERIFIERS: _verifiers,
    Pool.DENOISERS: _denoisers,
    Pool.REFORMERS: _reformers,
    Pool.TEMPNETS: _tempnets,
    Pool.RLS: _rls,
    Pool.BASELINES: _baselines,
}


def _det_post(preset: Preset, data: Dataset, store: ArtifactStore, skip_existing: bool) -> dict[str, Any]:
    from ensdef.training.det import run_det_selection

    return run_det_selection(preset, data, store, [p.name for p in _reformers(preset)], skip_existing)


def _teams_post(preset: Preset, data: Dataset, store: ArtifactStore, skip_existing: bool) -> dict[str, Any]:
    """MODEF's team selection over the stored verifiers; with ``skip_existing`` a saved selection (a tuned one
    included) is kept while it names exactly the stored verifiers and was scored on the images the preset asks
    for (clean, or adversarial at the same budget)."""
    from ensdef.training.selection import run_selection, scored_on

    stored = sorted(m.name for m in store.by_role(Role.VERIFIER))
    if skip_existing and store.has_json(TEAMS_ARTIFACT):
        saved = store.load_json(TEAMS_ARTIFACT)
        same_images = saved.get("kappa_on") == scored_on(preset.modef).get("kappa_on")
        if sorted(saved.get("members", ())) == stored and same_images:
            return {"kept": TEAMS_ARTIFACT, "verifiers": stored}
    run_selection(store, preset, data.val)
    return {"selected": TEAMS_ARTIFACT, "verifiers": stored}


@dataclass(frozen=True)
class PostStep:
    """Work that needs a pool's trained members, and the JSON artifact it leaves in the store."""

    artifact: str
    run: Callable[[Preset, Dataset, ArtifactStore, bool], dict[str, Any]]


POST_STEPS: dict[Pool, PostStep] = {
    Pool.VERIFIERS: PostStep(TEAMS_ARTIFACT, _teams_post),
    Pool.REFORMERS: PostStep(DET_LIST_ARTIFACT, _det_post),
}
"""MODEF's team selection after the verifiers; DeT's cross-training and reformer-list selection after the
reformers."""


def plan_pool(preset: Preset, pool: Pool) -> list[MemberPlan]:
    plans = PLANNERS[pool](preset)
    if preset.finetune_from and pool is not Pool.BASELINES:  # ART trains the baselines from scratch
        return finetuned(plans, ArtifactStore(preset.finetune_from))
    return plans


def finetuned(plans: list[MemberPlan], source: ArtifactStore) -> list[MemberPlan]:
    """``plans`` with each member that ``source`` holds under its name (same architecture and build) starting
    from those weights: fine-tuning. The source member's sha256 joins the plan (and the manifest), so a store
    trained from other weights is trained again. Plans with a warm start of their own, and members ``source``
    does not hold, are left as they are; a ``source`` that holds no member at all is a :class:`ConfigError`."""
    if not source.names():  # a mistyped path must not train everything from scratch silently
        raise ConfigError(f"finetune_from: {source.root} holds no members")
    out = []
    for p in plans:
        if "init" in p.extra or not source.exists(p.name):
            out.append(p)
            continue
        m = source.manifest(p.name)
        if m.architecture != p.architecture or m.extra.get("build_kwargs", {}) != p.extra.get("build_kwargs", {}):
            out.append(p)
            continue
        init = {"name": p.name, "sha256": m.sha256}
        out.append(dataclasses.replace(p, extra={**p.extra, "init": init}, source=source.root))
    return out


def _fit_classifier(
    plan: MemberPlan, model: nn.Module, train: Split, data: Dataset, on_epoch: EpochHook | None = None
) -> tuple[nn.Module, dict, TrainResult]:
    res = train_classifier(model, train, data.val, plan.train, plan.name, on_epoch)
    return res.model, {**res.metrics, "test_accuracy": accuracy(res.model, data.test)}, res


def _fit_autoencoder(
    plan: MemberPlan, model: nn.Module, train: Split, data: Dataset, on_epoch: EpochHook | None = None
) -> tuple[nn.Module, dict, TrainResult]:
    assert plan.noise is not None, f"{plan.name}: autoencoders need a noise spec"
    res = train_autoencoder(model, train, data.val, plan.train, plan.noise, plan.name, on_epoch)
    metrics = {
        **res.metrics,
        "test_mse_clean": reconstruction_mse(res.model, data.test),
        "test_mse_noisy": reconstruction_mse(res.model, data.test, plan.noise, seed=1),
    }
    if plan.train.adversarial is not None:  # how far an attacker within the budget can push the output
        metrics["test_mse_worst"] = worst_reconstruction_mse(res.model, data.test.x, plan.train.adversarial.eps, seed=1)
    return res.model, metrics, res


def _fit_rls(
    plan: MemberPlan, model: nn.Module, train: Split, data: Dataset, on_epoch: EpochHook | None = None
) -> tuple[nn.Module, dict, TrainResult]:
    from ensdef.defenses.rls import RLSEnsemble
    from ensdef.training.rls import train_rls

    res = train_rls(
        model,
        train,
        data.val,
        plan.train,
        plan.extra["k"],
        GroupLossKind(plan.extra["loss"]),
        plan.extra["n"],
        plan.name,
        on_epoch,
    )
    ens = RLSEnsemble(res.model, plan.extra["n"])
    d = ens.decide(data.test.x, make_generator(0))
    acc = sum(x.label == int(t) for x, t in zip(d, data.test.y, strict=True)) / len(data.test)
    return res.model, {**res.metrics, "test_accuracy": acc, "test_interrater_agreement": ens.diversity(data.test)}, res


def _fit_baseline(
    plan: MemberPlan, model: nn.Module, train: Split, data: Dataset, on_epoch: EpochHook | None = None
) -> tuple[nn.Module, dict, TrainResult]:
    """ART's trainers run whole; ``on_epoch`` is called once at the end with the test accuracy."""
    from ensdef.presets import BaselineConfig
    from ensdef.training.baselines import BASELINES, Baseline

    cfg = from_mapping(BaselineConfig, {k: v for k, v in plan.extra.items() if k != "method"}, plan.name)
    res = BASELINES[Baseline(plan.extra["method"])](
        lambda: build(plan.architecture, data.shape, data.num_classes), train, data.num_classes, cfg
    )
    acc = accuracy(res.model, data.test)
    log.info("%s: test accuracy %.4f, %.0fs", plan.name, acc, res.seconds)
    if on_epoch is not None:
        on_epoch(cfg.epochs - 1, acc)
    return res.model, {"test_accuracy": acc}, TrainResult(res.model, {}, cfg.epochs, res.seconds)


Fitter = Callable[[MemberPlan, nn.Module, Split, Dataset, EpochHook | None], tuple[nn.Module, dict, TrainResult]]


def _fitter(plan: MemberPlan) -> Fitter:
    if plan.role is Role.RLS:
        return _fit_rls
    if plan.role is Role.BASELINE:
        return _fit_baseline
    return _fit_autoencoder if get_spec(plan.architecture).kind is Kind.AUTOENCODER else _fit_classifier


def starts_from(plan: MemberPlan) -> str | None:
    """The member of the same store ``plan`` is trained from (a warm start), or None when it starts from
    scratch or from another store (fine-tuning)."""
    init = plan.extra.get("init")
    return init["name"] if init and plan.source is None else None


def stages(plans: list[MemberPlan]) -> list[list[MemberPlan]]:
    """``plans`` in the order parallel trainers must respect: the members others start from, then the rest
    (one stage when none starts from another)."""
    first = {starts_from(p) for p in plans} - {None}
    out = [[p for p in plans if p.name in first], [p for p in plans if p.name not in first]]
    return [s for s in out if s]


def _warm_start(model: nn.Module, plan: MemberPlan, store: ArtifactStore) -> None:
    """Load the weights of the stored member ``plan`` starts from into ``model``, after checking that it was
    trained with the config the plan names; raises :class:`NotTrained` when it is missing or was not."""
    init = plan.extra["init"]
    name = init["name"]
    store = ArtifactStore(plan.source) if plan.source else store
    if not store.exists(name):
        raise NotTrained(f"{plan.name} starts from {name}, which is not in store {store.root}: train it first")
    m = store.manifest(name)
    if "sha256" in init and m.sha256 != init["sha256"]:
        raise NotTrained(f"{plan.name} starts from {name} in {store.root}, which changed since it was planned")
    if "train" in init and _stored_train(m) != from_mapping(TrainConfig, init["train"], f"{plan.name}.init"):
        raise NotTrained(f"{plan.name} starts from {name}, but the stored {name} was trained with another config")
    model.load_state_dict(store.load_model(name)[0].state_dict())  # the hash is checked on loading


def train_member(plan: MemberPlan, data: Dataset, store: ArtifactStore, on_epoch: EpochHook | None = None) -> Manifest:
    """Train one planned member on ``data`` and save it; returns the stored manifest with test metrics.
    ``on_epoch(epoch, validation score)`` follows training (Tune reports and early-stops through it). A plan
    that starts from another member (a warm start) loads that one from ``store`` first."""
    with seeded(plan.train.seed):
        model = build(plan.architecture, data.shape, data.num_classes, **plan.extra.get("build_kwargs", {}))
    if "init" in plan.extra:
        _warm_start(model, plan, store)
    train = plan.data.apply(data.train) if plan.data else data.train
    model, metrics, res = _fitter(plan)(plan, model, train, data, on_epoch)
    metrics.update(epochs=res.epochs_run, seconds=round(res.seconds, 2), train_size=len(train))
    return store.save_model(model, member_manifest(plan, data, metrics))


def member_manifest(plan: MemberPlan, data: Dataset, metrics: dict[str, Any]) -> Manifest:
    return Manifest(
        name=plan.name,
        role=plan.role,
        architecture=plan.architecture,
        dataset=data.name,
        input_shape=tuple(data.shape),
        num_classes=data.num_classes,
        sha256="",
        train_config=to_plain(plan.train),
        metrics=metrics,
        extra=manifest_extra(plan),
    )


def manifest_extra(plan: MemberPlan) -> dict[str, Any]:
    """The manifest's ``extra`` for ``plan``: its own extras plus its training-data slice when it has one, so a
    stored member records (and a resumed run can compare) which images it was trained on."""
    return {**plan.extra, **({"data": to_plain(plan.data)} if plan.data else {})}


def same_plan(m: Manifest, plan: MemberPlan) -> bool:
    """Whether stored manifest ``m`` was trained from ``plan`` (architecture, training config, extra, data slice)."""
    return (
        m.architecture == plan.architecture
        and _stored_train(m) == plan.train
        and json.loads(json.dumps(m.extra)) == json.loads(json.dumps(to_plain(manifest_extra(plan))))
    )


def _stored_train(m: Manifest) -> TrainConfig | None:
    """The manifest's training config with the defaults of fields added since it was stored (a new field's
    default keeps the old behaviour), or None when it does not parse."""
    try:
        return from_mapping(TrainConfig, m.train_config, f"{m.name}.train_config")
    except ConfigError:
        return None


def stored_as_planned(store: ArtifactStore, plan: MemberPlan) -> bool:
    """Whether ``store`` holds ``plan.name``, its files verify, and it was trained from ``plan``: an artifact of
    the same name trained with another preset (other epochs, seed, noise, data slice) is not kept."""
    return store.exists(plan.name) and store.verify(plan.name).ok and same_plan(store.manifest(plan.name), plan)


MemberDone = Callable[[MemberPlan, Manifest, bool], None]
"""Called after each member of a pool with its plan, its stored manifest and whether it was trained now (False:
kept from the store)."""


def train_pool(
    preset: Preset,
    data: Dataset,
    store: ArtifactStore,
    pool: Pool,
    skip_existing: bool = False,
    on_member: MemberDone | None = None,
) -> tuple[list[Manifest], dict[str, Any] | None]:
    """Train every member of ``pool`` (keeping, when ``skip_existing``, those stored from the same plan that
    verify), then its post step. Returns the stored manifests and what the post step did (None: none)."""
    out = []
    for plan in plan_pool(preset, pool):
        trained = not (skip_existing and stored_as_planned(store, plan))
        if not trained:
            m = store.manifest(plan.name)
            log.info("%s: already trained with this plan, skipped", plan.name)
        else:
            if skip_existing and store.exists(plan.name):
                log.info("%s: stored with another plan or failing verification, trained again", plan.name)
            m = train_member(plan, data, store)
        out.append(m)
        if on_member is not None:
            on_member(plan, m, trained)
    post = POST_STEPS[pool].run(preset, data, store, skip_existing) if pool in POST_STEPS else None
    return out, post


def train_pools(
    preset: Preset, data: Dataset, store: ArtifactStore, pools: list[Pool], skip_existing: bool = False
) -> dict[str, Any]:
    """:func:`train_pool` for each of ``pools`` in turn. Returns what was stored, with metrics."""
    out, post = [], {}
    for pool in pools:
        stored, done = train_pool(preset, data, store, pool, skip_existing)
        out += [
            {
                "name": m.name,
                "pool": pool.value,
                "role": m.role.value,
                "architecture": m.architecture,
                "metrics": m.metrics,
            }
            for m in stored
        ]
        if done is not None:
            post[pool.value] = done
    return {"store": store.root, "preset": preset.name, "artifacts": out, "post": post}
