"""Evaluation harness: every defense under static, gray-box and adaptive attacks, cell by cell.

A cell is one (defense, threat, attack) score. Adversarial examples and scored cells are cached in the
artifact store keyed by settings and model hashes (:mod:`ensdef.attacks.cache`), so an interrupted run
resumes where it stopped and a second run only reads. Threats:

- ``static``: the attack set is made against the undefended target and transferred (MODEF / DeT setting);
- ``graybox``: made on one member of the defense (:mod:`ensdef.attacks.graybox`);
- ``adaptive``: through the whole defense (:mod:`ensdef.attacks.adaptive`, EOT and detector-aware), with
  the iteration-doubling check, an epsilon curve, a black-box Square attack on the defense's scores (the
  gradient-masking check), Liang and Samavi (2021)'s superimposition and Lee et al. (2021)'s multi-sample attack.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import numpy as np
import torch
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from ensdef.attacks.art_classifier import art_classifier
from ensdef.attacks.cache import AttackCache, cache_key
from ensdef.attacks.catalog import attack_params, run_attack
from ensdef.attacks.graybox import graybox_examples
from ensdef.config import to_plain
from ensdef.data import Dataset, Split, load_dataset
from ensdef.defenses.base import Defense
from ensdef.defenses.registry import DEFENSES, build_defense, load_target
from ensdef.errors import ConfigError
from ensdef.evaluation.adaptive_cells import AdaptiveCells
from ensdef.evaluation.cascade import Attacked, Cascade
from ensdef.evaluation.sanity import indicator_checks, run_checks
from ensdef.evaluation.scoring import attack_set_indices, score, scored_cell
from ensdef.evaluation.tables import kappa_table, transfer_table
from ensdef.evaluation.worst_case import paired, worst_case
from ensdef.presets import EvalConfig, Preset
from ensdef.store import ArtifactStore
from ensdef.types import Role

log = logging.getLogger(__name__)


SETTINGS_ADDED: dict[str, Any] = {"adversarial": None, "kappa_eps": 0.0, "kappa_steps": 10}
"""Preset fields added since cached cells were first keyed, with the default that keeps the old behaviour:
left out of the key while at that default, so that adding a field does not recompute every stored cell."""


def defense_settings(preset: Preset) -> dict[str, Any]:
    """The preset's settings a defense can be built from (every section but the evaluation's, Tune's and the
    names): with the artifacts' digests they key a defense's cached cells, so that a changed noise level, team
    policy or sample count recomputes its cells instead of reading another defense's."""
    plain = {
        k: v
        for k, v in to_plain(preset).items()
        if k not in ("name", "evaluation", "tune", "data_root", "finetune_from")
    }
    return _without_added_defaults(plain)


def _without_added_defaults(v: Any) -> Any:
    if isinstance(v, dict):
        return {
            k: _without_added_defaults(x) for k, x in v.items() if not (k in SETTINGS_ADDED and x == SETTINGS_ADDED[k])
        }
    if isinstance(v, list):
        return [_without_added_defaults(x) for x in v]
    return v


CELL_FORMAT = 3  # cached cells of an older format are made again (2: one draw per batch in verification, modef, rls)


class Threat(str, Enum):
    STATIC = "static"
    GRAYBOX = "graybox"
    ADAPTIVE = "adaptive"


def distortion(x: np.ndarray, adv: np.ndarray) -> dict[str, float]:
    """Mean L-inf, L2 and L0 (fraction of changed pixels) of ``adv - x`` over the rows."""
    d = (adv - x).reshape(len(x), -1)
    return {
        "linf": float(np.abs(d).max(1).mean()),
        "l2": float(np.linalg.norm(d, axis=1).mean()),
        "l0": float((np.abs(d) > 1e-6).mean(1).mean()),
    }


@dataclass
class Report:
    """``rows[defense][cell]`` -> scores; ``attacks`` describes the static set; ``extra`` matrices, checks."""

    config: dict[str, Any]
    rows: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    attacks: dict[str, dict[str, Any]] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"config": self.config, "rows": self.rows, "attacks": self.attacks, **self.extra}


@dataclass(frozen=True)
class DefenseResult:
    """One defense's row of cells and what the report needs beside it (computed wherever the row ran)."""

    name: str
    row: dict[str, dict[str, Any]]
    fingerprint: str  # digest of the artifacts the defense is built from (its cache key)
    randomized: bool
    indicators: list[dict[str, Any]]


RowRunner = Callable[[Sequence[str]], list[DefenseResult]]
"""Computes the rows of the named defenses, in that order (in this process, or as Ray tasks: ``tasks/``)."""


@dataclass(frozen=True)
class HarnessSpec:
    """Everything a process needs to build the same :class:`Harness` (picklable: sent to Ray workers)."""

    store: str
    preset: Preset
    cfg: EvalConfig
    threats: tuple[Threat, ...]
    use_cache: bool = True
    device: str = "cpu"
    # torch's and numpy's CPU threads while computing a row (None: the worker's own; cpu_threads). Float sums
    # depend on how a pass is split over threads, so rows equal bit for bit across processes only at one count
    # (ensdef evaluate --torch-threads sets it for the driver and its tasks alike)
    threads: int | None = None

    def build(self) -> Harness:
        data = load_dataset(self.preset.dataset, self.preset.data_root)
        return Harness(
            ArtifactStore(self.store), self.preset, data, self.cfg, self.threats, self.use_cache, self.device
        )


@contextmanager
def cpu_threads(n: int | None) -> Iterator[None]:
    """Inside the block, torch's CPU threads and the BLAS / OpenMP pools numpy calls into (threadpoolctl) are
    ``n`` (None: unchanged). Both matter: the attacks' float sums run in torch, ART's decision-based attacks
    (HopSkipJump's gradient estimates, its binary searches) in numpy, and a process's pools differ by default
    (Ray sizes a worker's to its CPUs)."""
    if n is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        with threadpool_limits(limits=n):
            yield
    finally:
        torch.set_num_threads(before)


def defense_result(spec: HarnessSpec, name: str) -> DefenseResult:
    """Build the harness from ``spec`` and compute defense ``name``'s row (a Ray task's body). The static set
    is read from the store's cache when the driver made it first."""
    with cpu_threads(spec.threads):
        h = spec.build()
        return h.evaluate_defense(name, h.static_set() if Threat.STATIC in h.threats else {})


class Harness(AdaptiveCells):
    """Runs the cells of a preset's evaluation against a store. ``threats`` selects the threat models; the
    adaptive cells are :class:`~ensdef.evaluation.adaptive_cells.AdaptiveCells`."""

    def __init__(
        self,
        store: ArtifactStore,
        preset: Preset,
        data: Dataset,
        cfg: EvalConfig | None = None,
        threats: tuple[Threat, ...] = tuple(Threat),
        use_cache: bool = True,
        device: torch.device | str = "cpu",
    ) -> None:
        """``device``: where every member computes (inputs follow the members)."""
        self.device = torch.device(device)
        self.store, self.preset, self.data = store, preset, data
        self.cfg = cfg or preset.evaluation
        if unknown := sorted(set(self.cfg.per_defense) - set(DEFENSES)):
            raise ConfigError(f"evaluation.per_defense names unknown defenses {unknown}; known: {sorted(DEFENSES)}")
        self.threats, self.cache = threats, AttackCache(store, use_cache)
        self.fingerprints: dict[str, str] = {}  # defense -> digest of the artifacts it is built from
        self.k = data.num_classes
        target = load_target(store, self.device)
        self.target_sha = store.manifest("target").sha256
        self.idx = attack_set_indices(target, data.test, self.cfg.per_class, self.k)
        self.ref: Split = data.test.subset(self.idx)
        self.target_clf = art_classifier(target, data.shape, self.k)
        self.randomized: dict[str, bool] = {}
        self.indicators: dict[str, list[dict[str, Any]]] = {}  # defense -> attack-failure indicators

    # --- helpers ---------------------------------------------------------------------------------------
    def budget(self, attack: str, **more: Any) -> dict[str, Any]:
        return {**self.cfg.budgets.get(attack, {}), **more}

    def _key(self, defense: str = "", **parts: Any) -> dict[str, Any]:
        """Cache key parts: the defense's artifact digest, the attack set, the seed and ``parts``."""
        fp = self.fingerprints.get(defense, self.target_sha)
        return {
            "defense": defense,
            "artifacts": fp,
            "idx": self.idx,
            "seed": self.cfg.seed,
            "cells": CELL_FORMAT,
            **parts,
        }

    def examples(self, kind: str, parts: dict[str, Any], make: Callable[[], np.ndarray]) -> dict[str, torch.Tensor]:
        """Cached adversarial examples ``{"x": [N, C, H, W], "seconds": []}`` made by ``make``."""

        def run() -> dict[str, torch.Tensor]:
            t0 = time.perf_counter()
            adv = make()
            return {"x": torch.from_numpy(adv), "seconds": torch.tensor(time.perf_counter() - t0)}

        return self.cache.tensors(kind, parts, run)

    def cell(self, defense: Defense, adv: dict[str, torch.Tensor], extra: dict[str, Any]) -> dict:
        x_adv = adv["x"]
        return {
            **scored_cell(defense, x_adv, self.ref.y, self.ref.x, self.cfg.seed + 1),
            **distortion(self.ref.x.numpy(), x_adv.numpy()),
            "attack_seconds": round(float(adv["seconds"]), 2),
            **extra,
        }

    def cached_cell(self, defense_name: str, cell: str, parts: dict[str, Any], make: Callable[[], dict]) -> dict:
        return self.cache.result("cell", {**self._key(defense=defense_name), **parts, "cell": cell}, make)

    def attacked(
        self,
        name: str,
        defense: Defense,
        cell: str,
        parts: dict[str, Any],
        adv: dict[str, torch.Tensor],
        extra: dict[str, Any],
    ) -> Attacked:
        """Cell ``cell`` of defense ``name``: the examples ``adv`` (``{"x", "seconds"}``) scored (cached)."""
        return Attacked(self.cached_cell(name, cell, parts, lambda: self.cell(defense, adv, extra)), adv["x"])

    def cascaded(
        self,
        name: str,
        defense: Defense,
        cell: str,
        parts: dict[str, Any],
        cascade: Cascade,
        attack: Callable[[torch.Tensor, torch.Tensor], np.ndarray],
        extra: dict[str, Any],
    ) -> Attacked:
        """Cell ``cell`` of the cascade (:mod:`ensdef.evaluation.cascade`): ``attack(x, y)`` ``[M, C, H, W]`` on
        the images still standing only, the carried examples elsewhere. The examples are cached under the
        standing set, the scored cell also under the carried examples' digest (another earlier cell can break
        the same images with other examples)."""
        idx = cascade.standing()
        parts = {**parts, "standing": idx}

        def gen() -> np.ndarray:
            if not idx:
                return np.empty((0, *self.ref.x.shape[1:]), dtype=np.float32)
            return attack(self.ref.x[idx], self.ref.y[idx])

        sub = self.examples(cell, parts, gen)
        adv = {"x": cascade.complete(idx, sub["x"]), "seconds": sub["seconds"]}
        scored = {**parts, "carried": cascade.digest()}
        return self.attacked(name, defense, cell, scored, adv, {**extra, "attacked": len(idx)})

    # --- static ----------------------------------------------------------------------------------------
    def static_set(self) -> dict[str, dict[str, torch.Tensor]]:
        out = {}
        for name in tqdm(self.cfg.static_attacks, desc="static attacks on the target", disable=None):
            params = attack_params(name, self.budget(name))
            parts = {"attack": name, "params": params, "target": self.target_sha, "idx": self.idx}
            out[name] = self.examples(
                "static",
                parts,
                lambda n=name, p=params: run_attack(n, self.target_clf, self.ref.x.numpy(), self.ref.y.numpy(), p),
            )
        return out

    # --- per defense -----------------------------------------------------------------------------------
    def defense_row(self, name: str, static: dict[str, dict[str, torch.Tensor]]) -> dict[str, dict[str, Any]]:
        c = self.cfg
        with self.store.recording() as used:
            defense = build_defense(name, self.store, self.preset, self.device)
        self.fingerprints[name] = cache_key({"artifacts": used, "settings": defense_settings(self.preset)})
        self.randomized[name] = defense.randomized
        row: dict[str, dict[str, Any]] = {}
        n = min(c.benign_n, len(self.data.test))
        bx, by = self.data.test.x[:n], self.data.test.y[:n]
        row["benign"] = self.cached_cell(name, "benign", {"n": n}, lambda: score(defense, bx, by, c.seed).as_dict())
        cascade = Cascade(self.ref.x, c.eps_curve[-1], c.cascade)

        def put(key: str, done: Attacked) -> None:
            row[key] = done.cell
            cascade.add(done)

        if Threat.STATIC in self.threats:
            for a, adv in static.items():
                put(f"static/{a}", self.attacked(name, defense, f"static/{a}", {}, adv, {}))
        if Threat.GRAYBOX in self.threats:
            put(f"graybox/{c.graybox_attack}", self.graybox(name, defense))
        if Threat.ADAPTIVE in self.threats:
            self.adaptive(name, defense, put, cascade)
        return row

    def graybox(self, name: str, defense: Defense) -> Attacked:
        c = self.cfg
        params = attack_params(c.graybox_attack, self.budget(c.graybox_attack))
        parts = self._key(defense=name, attack=c.graybox_attack, params=params)
        adv = self.examples(
            "graybox",
            parts,
            lambda: graybox_examples(defense, self.ref.x, self.ref.y, c.graybox_attack, params, c.seed, self.k)[0],
        )
        return self.attacked(name, defense, "graybox", parts, adv, {"attack": c.graybox_attack})

    def evaluate_defense(self, name: str, static: dict[str, dict[str, torch.Tensor]]) -> DefenseResult:
        row = self.defense_row(name, static)
        return DefenseResult(name, row, self.fingerprints[name], self.randomized[name], self.indicators.get(name, []))

    # --- whole run -------------------------------------------------------------------------------------
    def run(self, defenses: list[str] | None = None, runner: RowRunner | None = None) -> Report:
        """Every cell of ``defenses`` (default: the config's); ``runner`` computes the rows elsewhere (the same
        figures for the same seeds: every cell depends on its own seeds only), else they run here in order."""
        c = self.cfg
        names = list(defenses or c.defenses)
        report = Report(
            config={
                "preset": self.preset.name,
                "threats": [t.value for t in self.threats],
                "n_attack_set": len(self.ref),
                "target_sha256": self.target_sha,
                "evaluation": _plain(c),
            }
        )
        static = self.static_set() if Threat.STATIC in self.threats else {}
        for a, adv in static.items():
            x_adv = adv["x"].numpy()
            fooled = float((self.target_clf.predict(x_adv).argmax(1) != self.ref.y.numpy()).mean())
            report.attacks[a] = {
                "seconds": round(float(adv["seconds"]), 2),
                "target_asr": fooled,
                **distortion(self.ref.x.numpy(), x_adv),
                "n": len(self.ref),
                "params": attack_params(a, self.budget(a)),
            }
        if runner is None:
            results = []
            for name in tqdm(names, desc="defenses", disable=None):
                t0 = time.perf_counter()
                results.append(self.evaluate_defense(name, static))
                log.info("%s: %d cells in %.0fs", name, len(results[-1].row), time.perf_counter() - t0)
        else:
            results = runner(names)
        for r in results:
            report.rows[r.name] = r.row
            self.fingerprints[r.name], self.randomized[r.name] = r.fingerprint, r.randomized
            if r.indicators:
                self.indicators[r.name] = r.indicators
        if Threat.ADAPTIVE in self.threats:
            report.extra["unbounded"] = self.unbounded_target()
        worst = {d: worst_case(row, c.eps_curve[-1]) for d, row in report.rows.items()}
        report.extra["worst_case"] = worst
        report.extra["paired"] = paired(worst)
        if self.store.by_role(Role.VERIFIER):  # MODEF's tables need the verifier pool
            report.extra["kappa"] = kappa_table(self.store, self.data.test)
            report.extra["transfer"] = transfer_table(
                self.store, self.ref, c.graybox_attack, self.budget(c.graybox_attack), self.cache, self.k
            )
        checks = run_checks(
            report.rows,
            self.randomized,
            c.adaptive_attack,
            c.blackbox_attack,
            report.extra.get("unbounded"),
            worst,
            self.data.name,
            robust_target=self.store.manifest("target").train_config.get("adversarial") is not None,
        )
        checks += indicator_checks(self.indicators, c.adaptive_attack)
        report.extra["indicators"] = self.indicators
        report.extra["sanity"] = [ch.as_dict() for ch in checks]
        report.extra["cache"] = {"hits": self.cache.hits, "misses": self.cache.misses}
        report.extra["artifacts"] = self.fingerprints
        return report

    def unbounded_target(self) -> dict[str, Any]:
        """PGD with eps 1 on the undefended target: must reach every image."""
        params = attack_params("pgd", {"eps": 1.0, "eps_step": 0.1, "max_iter": 20})
        adv = self.examples(
            "unbounded",
            self._key(target=self.target_sha, params=params),
            lambda: run_attack("pgd", self.target_clf, self.ref.x.numpy(), self.ref.y.numpy(), params),
        )
        return {
            "accuracy": float((self.target_clf.predict(adv["x"].numpy()).argmax(1) == self.ref.y.numpy()).mean()),
            **params,
        }


def _plain(cfg: EvalConfig) -> dict[str, Any]:
    from ensdef.config import to_plain

    return to_plain(cfg)
