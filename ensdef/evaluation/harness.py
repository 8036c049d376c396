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
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ensdef.attacks.adaptive import adaptive_examples
from ensdef.attacks.art_classifier import art_classifier
from ensdef.attacks.cache import AttackCache, cache_key, module_digest
from ensdef.attacks.catalog import attack_params, run_attack
from ensdef.attacks.eot import EOTSurrogate
from ensdef.attacks.graybox import graybox_examples
from ensdef.attacks.multi_sample import MeanOfNetworks
from ensdef.attacks.superimpose import fooled_mask, superimpose
from ensdef.data import Dataset, Split
from ensdef.defenses.base import Defense
from ensdef.defenses.registry import build_defense, load_target
from ensdef.defenses.rls import RLSEnsemble
from ensdef.evaluation.sanity import run_checks
from ensdef.evaluation.scoring import attack_set_indices, score
from ensdef.evaluation.tables import kappa_table, transfer_table
from ensdef.presets import EvalConfig, Preset
from ensdef.rng import make_generator
from ensdef.store import ArtifactStore

log = logging.getLogger(__name__)


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


class Harness:
    """Runs the cells of a preset's evaluation against a store. ``threats`` selects the threat models."""

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
        self.threats, self.cache = threats, AttackCache(store, use_cache)
        self.fingerprints: dict[str, str] = {}  # defense -> digest of the artifacts it is built from
        self.k = data.num_classes
        target = load_target(store, self.device)
        self.target_sha = store.manifest("target").sha256
        self.idx = attack_set_indices(target, data.test, self.cfg.per_class, self.k)
        self.ref: Split = data.test.subset(self.idx)
        self.target_clf = art_classifier(target, data.shape, self.k)
        self.randomized: dict[str, bool] = {}

    # --- helpers ---------------------------------------------------------------------------------------
    def budget(self, attack: str, **more: Any) -> dict[str, Any]:
        return {**self.cfg.budgets.get(attack, {}), **more}

    def _key(self, defense: str = "", **parts: Any) -> dict[str, Any]:
        """Cache key parts: the defense's artifact digest, the attack set, the seed and ``parts``."""
        fp = self.fingerprints.get(defense, self.target_sha)
        return {"defense": defense, "artifacts": fp, "idx": self.idx, "seed": self.cfg.seed, **parts}

    def examples(self, kind: str, parts: dict[str, Any], make: Callable[[], np.ndarray]) -> dict[str, torch.Tensor]:
        """Cached adversarial examples ``{"x": [N, C, H, W], "seconds": []}`` made by ``make``."""

        def run() -> dict[str, torch.Tensor]:
            t0 = time.perf_counter()
            adv = make()
            return {"x": torch.from_numpy(adv), "seconds": torch.tensor(time.perf_counter() - t0)}

        return self.cache.tensors(kind, parts, run)

    def cell(self, defense: Defense, name: str, adv: dict[str, torch.Tensor], extra: dict[str, Any]) -> dict:
        x_adv = adv["x"]
        return {
            **score(defense, x_adv, self.ref.y, self.cfg.seed + 1).as_dict(),
            **distortion(self.ref.x.numpy(), x_adv.numpy()),
            "attack_seconds": round(float(adv["seconds"]), 2),
            **extra,
        }

    def cached_cell(self, defense_name: str, cell: str, parts: dict[str, Any], make: Callable[[], dict]) -> dict:
        return self.cache.result("cell", {**self._key(defense=defense_name), **parts, "cell": cell}, make)

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
        self.fingerprints[name] = cache_key(used)
        self.randomized[name] = defense.randomized
        row: dict[str, dict[str, Any]] = {}
        n = min(c.benign_n, len(self.data.test))
        bx, by = self.data.test.x[:n], self.data.test.y[:n]
        row["benign"] = self.cached_cell(name, "benign", {"n": n}, lambda: score(defense, bx, by, c.seed).as_dict())
        if Threat.STATIC in self.threats:
            for a, adv in static.items():
                row[f"static/{a}"] = self.cached_cell(
                    name, f"static/{a}", {}, lambda a=a, adv=adv: self.cell(defense, a, adv, {})
                )
        if Threat.GRAYBOX in self.threats:
            row.update(self.graybox(name, defense))
        if Threat.ADAPTIVE in self.threats:
            row.update(self.adaptive(name, defense))
        return row

    def graybox(self, name: str, defense: Defense) -> dict[str, dict[str, Any]]:
        c = self.cfg
        params = attack_params(c.graybox_attack, self.budget(c.graybox_attack))
        parts = self._key(defense=name, attack=c.graybox_attack, params=params)

        def make() -> dict:
            adv = self.examples(
                "graybox",
                parts,
                lambda: graybox_examples(defense, self.ref.x, self.ref.y, c.graybox_attack, params, c.seed, self.k)[0],
            )
            return self.cell(defense, "graybox", adv, {"attack": c.graybox_attack})

        return {f"graybox/{c.graybox_attack}": self.cached_cell(name, "graybox", parts, make)}

    def _adaptive_cell(self, name: str, defense: Defense, eps: float, iters: int) -> dict[str, Any]:
        """Adaptive attack at ``eps`` with ``iters`` steps of size 2.5 * eps_max / adaptive_iter (fixed, so
        that doubling the iterations can only search further)."""
        c = self.cfg
        step = 2.5 * c.eps_curve[-1] / c.adaptive_iter
        params = attack_params(
            c.adaptive_attack, self.budget(c.adaptive_attack, eps=eps, eps_step=step, max_iter=iters)
        )
        objective = "worst of detector-aware and untargeted" if defense.can_flag else "untargeted"
        parts = self._key(defense=name, attack=c.adaptive_attack, params=params, eot=c.eot, objective=objective)
        info: dict[str, Any] = {}

        def gen() -> np.ndarray:
            adv, what = adaptive_examples(
                defense, self.ref.x, self.ref.y, c.adaptive_attack, params, c.eot, c.seed, self.k
            )
            info.update(what)
            return adv

        def make() -> dict:
            adv = self.examples("adaptive", parts, gen)
            return self.cell(
                defense,
                "adaptive",
                adv,
                {"eps": eps, "max_iter": iters, "objective": objective, "eot": c.eot if defense.randomized else 0},
            )

        return self.cached_cell(name, "adaptive", parts, make)

    def adaptive(self, name: str, defense: Defense) -> dict[str, dict[str, Any]]:
        c = self.cfg
        eps = c.eps_curve[-1]
        out = {f"adaptive/{c.adaptive_attack}": self._adaptive_cell(name, defense, eps, c.adaptive_iter)}
        out[f"adaptive/{c.adaptive_attack}-2x"] = self._adaptive_cell(name, defense, eps, 2 * c.adaptive_iter)
        for e in c.eps_curve[:-1]:
            out[f"adaptive/{c.adaptive_attack}@{e:g}"] = self._adaptive_cell(name, defense, e, c.adaptive_iter)
        out[f"adaptive/{c.blackbox_attack}"] = self.blackbox(name, defense)
        try:
            members = defense.members(make_generator(c.seed))
        except NotImplementedError:
            members = []
        if len(members) > 1:
            for k in c.superimpose:
                out[f"adaptive/superimpose-{k}"] = self.superimposition(name, defense, members, k)
        if isinstance(defense, RLSEnsemble):
            for n in c.rls_samples:
                out[f"adaptive/rls-{n}-sampled"] = self.multi_sample(name, defense, n)
        return out

    def blackbox(self, name: str, defense: Defense) -> dict[str, Any]:
        """ART's Square attack on the defense's output scores (one random draw per query)."""
        c = self.cfg
        params = attack_params(
            c.blackbox_attack, self.budget(c.blackbox_attack, eps=c.eps_curve[-1], max_iter=c.blackbox_iter)
        )
        parts = self._key(defense=name, attack=c.blackbox_attack, params=params)

        def make() -> dict:
            def gen() -> np.ndarray:
                clf = art_classifier(EOTSurrogate(defense, 1, c.seed), self.data.shape, self.k)
                return run_attack(c.blackbox_attack, clf, self.ref.x.numpy(), self.ref.y.numpy(), params)

            return self.cell(defense, "blackbox", self.examples("blackbox", parts, gen), {"attack": c.blackbox_attack})

        return self.cached_cell(name, "blackbox", parts, make)

    def superimposition(self, name: str, defense: Defense, members: list, k: int) -> dict[str, Any]:
        """DeepFool on each of (at most) 5 members, the k smallest successful perturbations superimposed."""
        pool = members[:5]
        params = attack_params("deepfool", self.budget("deepfool"))
        base = self._key(defense=name, attack="deepfool", params=params, pool=len(pool))

        def one(m: torch.nn.Module) -> dict[str, torch.Tensor]:  # cached per member: shared by defenses and k
            def run() -> dict[str, torch.Tensor]:
                t0 = time.perf_counter()
                clf = art_classifier(m.eval(), self.data.shape, self.k)
                adv = run_attack("deepfool", clf, self.ref.x.numpy(), self.ref.y.numpy(), params)
                return {"x": torch.from_numpy(adv), "seconds": torch.tensor(time.perf_counter() - t0)}

            key = {"member": module_digest(m), "params": params, "idx": self.idx}
            return self.cache.tensors("member-deepfool", key, run)

        def make() -> dict:
            runs = [one(m) for m in pool]
            fooled = fooled_mask(pool, [r["x"] for r in runs], self.ref.y)
            x_si = superimpose(self.ref.x.numpy(), [r["x"].numpy() for r in runs], fooled, k)
            adv = {"x": torch.from_numpy(x_si), "seconds": sum(r["seconds"] for r in runs)}
            return self.cell(defense, f"superimpose-{k}", adv, {"members": len(pool), "k": k})

        return self.cached_cell(name, f"superimpose-{k}", {**base, "k": k}, make)

    def multi_sample(self, name: str, defense: RLSEnsemble, n: int) -> dict[str, Any]:
        c = self.cfg
        params = attack_params(c.graybox_attack, self.budget(c.graybox_attack))
        parts = self._key(defense=name, attack=c.graybox_attack, params=params, sampled=n)

        def make() -> dict:
            def gen() -> np.ndarray:
                nets = defense.sampled_networks(n, make_generator(c.seed + n))
                clf = art_classifier(MeanOfNetworks(nets), self.data.shape, self.k)
                return run_attack(c.graybox_attack, clf, self.ref.x.numpy(), self.ref.y.numpy(), params)

            return self.cell(defense, f"rls-{n}", self.examples("multisample", parts, gen), {"sampled": n})

        return self.cached_cell(name, f"rls-{n}-sampled", parts, make)

    # --- whole run -------------------------------------------------------------------------------------
    def run(self, defenses: list[str] | None = None) -> Report:
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
        for name in tqdm(names, desc="defenses", disable=None):
            t0 = time.perf_counter()
            report.rows[name] = self.defense_row(name, static)
            log.info("%s: %d cells in %.0fs", name, len(report.rows[name]), time.perf_counter() - t0)
        if Threat.ADAPTIVE in self.threats:
            report.extra["unbounded"] = self.unbounded_target()
        report.extra["kappa"] = kappa_table(self.store, self.data.test)
        report.extra["transfer"] = transfer_table(
            self.store, self.ref, c.graybox_attack, self.budget(c.graybox_attack), self.cache, self.k
        )
        checks = run_checks(
            report.rows, self.randomized, c.adaptive_attack, c.blackbox_attack, report.extra.get("unbounded")
        )
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
