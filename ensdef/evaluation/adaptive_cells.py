"""The adaptive cells of the evaluation harness: attacks through the whole defense at the full budget (PGD
with EOT and the detector-aware objective, its doubled-iteration check and epsilon curve, APGD with
cross-entropy and targeted DLR, Square on the defense's scores, HopSkipJump and Square on its decisions),
Liang and Samavi (2021)'s superimposition,
Lee et al. (2021)'s multi-sample attack on RLS, and the attack-failure indicators. A mixin of
:class:`~ensdef.evaluation.harness.Harness`, whose caching and scoring it uses."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from ensdef.attacks.adaptive import adaptive_examples, apgd_examples
from ensdef.attacks.art_classifier import art_classifier
from ensdef.attacks.cache import module_digest
from ensdef.attacks.catalog import attack_params, run_attack
from ensdef.attacks.decisions import DecisionAttack
from ensdef.attacks.eot import EOTSurrogate
from ensdef.attacks.multi_sample import MeanOfNetworks
from ensdef.attacks.superimpose import fooled_mask, superimpose
from ensdef.defenses.base import Defense
from ensdef.defenses.rls import RLSEnsemble
from ensdef.evaluation.indicators import indicators
from ensdef.rng import make_generator


class AdaptiveCells:
    """Adaptive cells for one defense; ``self`` is the :class:`~ensdef.evaluation.harness.Harness`."""

    cfg: Any
    data: Any
    ref: Any
    k: int
    cache: Any
    indicators: dict[str, list[dict[str, Any]]]

    def _adaptive_cell(self, name: str, defense: Defense, eps: float, iters: int) -> dict[str, Any]:
        """Adaptive attack at ``eps`` with ``iters`` steps of size 2.5 * eps_max / adaptive_iter (fixed, so
        that doubling the iterations can only search further)."""
        c = self.cfg.for_defense(name)
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
        c = self.cfg.for_defense(name)
        eps = c.eps_curve[-1]
        out = {f"adaptive/{c.adaptive_attack}": self._adaptive_cell(name, defense, eps, c.adaptive_iter)}
        out[f"adaptive/{c.adaptive_attack}-2x"] = self._adaptive_cell(name, defense, eps, 2 * c.adaptive_iter)
        for e in c.eps_curve[:-1]:
            out[f"adaptive/{c.adaptive_attack}@{e:g}"] = self._adaptive_cell(name, defense, e, c.adaptive_iter)
        out["adaptive/apgd-ce"] = self.apgd_cell(name, defense, "cross_entropy", 0)
        out["adaptive/apgd-dlr-targeted"] = self.apgd_cell(name, defense, "difference_logits_ratio", c.apgd_targets)
        out[f"adaptive/{c.blackbox_attack}"] = self.blackbox(name, defense)
        if c.decision_iter > 0:
            out["adaptive/hopskipjump-decisions"] = self.decision_cell(name, defense, "hopskipjump")
        if c.blackbox_iter > 0:
            out["adaptive/square-decisions"] = self.decision_cell(name, defense, "square")
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
        self.indicators[name] = self.failure_indicators(name, defense)
        return out

    def failure_indicators(self, name: str, defense: Defense) -> list[dict[str, Any]]:
        """Attack-failure indicators of the adaptive attack's surrogate at the full budget (cached)."""
        c = self.cfg.for_defense(name)
        samples = c.eot if defense.randomized else 0
        parts = {"eps": c.eps_curve[-1], "steps": c.adaptive_iter, "eot": samples}

        def make() -> dict[str, Any]:
            sur = EOTSurrogate(defense, samples, c.seed + 13)
            found = indicators(
                sur, self.ref.x, self.ref.y, c.eps_curve[-1], c.adaptive_iter, make_generator(c.seed + 17)
            )
            return {"indicators": [i.as_dict() for i in found]}

        return self.cached_cell(name, "indicators", parts, make)["indicators"]

    def apgd_cell(self, name: str, defense: Defense, loss: str, targets: int) -> dict[str, Any]:
        """APGD (cross-entropy, or targeted DLR at ``targets`` wrong classes) through the EOT surrogate at the
        full budget, ``apgd_iter`` steps and ``apgd_restarts`` random restarts; for a defense that flags or
        abstains, also through its detector-aware surrogate (the worse for the defense per image)."""
        c = self.cfg.for_defense(name)
        more = {"eps": c.eps_curve[-1], "max_iter": c.apgd_iter, "restarts": c.apgd_restarts}
        params = attack_params("apgd", self.budget("apgd", **more))
        aware = defense.can_flag
        parts = self._key(
            defense=name, attack="apgd", params=params, loss=loss, targets=targets, eot=c.eot, detector_aware=aware
        )
        info: dict[str, Any] = {}

        def gen() -> np.ndarray:
            adv, what = apgd_examples(
                defense,
                self.ref.x,
                self.ref.y,
                loss=loss,
                overrides=params,
                eot=c.eot,
                seed=c.seed,
                targets=targets,
                num_classes=self.k,
            )
            info.update(what)
            return adv

        def make() -> dict:
            extra = {"loss": loss, "targets": targets, **more, "eot": c.eot if defense.randomized else 0}
            extra["detector_aware"] = aware
            return self.cell(defense, f"apgd-{loss}", self.examples("apgd", parts, gen), extra)

        return self.cached_cell(name, f"apgd-{loss}-{targets}", parts, make)

    def blackbox(self, name: str, defense: Defense) -> dict[str, Any]:
        """ART's Square attack on the defense's output scores (one random draw per query)."""
        c = self.cfg.for_defense(name)
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

    def decision_cell(self, name: str, defense: Defense, attack: str) -> dict[str, Any]:
        """A query-only attacker on the defense's decisions (labels, refusals as the true label), as a client
        of the service sees them, projected onto the budget: HopSkipJump (``decision_iter`` iterations of
        ``decision_evals`` queries) or Square (``blackbox_iter`` queries per image)."""
        c = self.cfg.for_defense(name)
        if attack == "hopskipjump":
            more = {"max_iter": c.decision_iter, "max_eval": c.decision_evals}
            more["init_eval"] = max(1, min(100, c.decision_evals // 2))
        else:
            more = {"max_iter": c.blackbox_iter}
        params = attack_params(attack, self.budget(attack, **more))
        eps = c.eps_curve[-1]
        parts = self._key(defense=name, attack=attack, params=params, eps=eps)

        def make() -> dict:
            def gen() -> np.ndarray:
                return DecisionAttack(eps, params, c.seed, self.k, attack)(defense, self.ref.x, self.ref.y)[0]

            adv = self.examples("decisions", parts, gen)
            return self.cell(defense, "decisions", adv, {"attack": attack, "sees": "decisions", **params})

        return self.cached_cell(name, f"decisions-{attack}", parts, make)

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
        c = self.cfg.for_defense(name)
        params = attack_params(c.graybox_attack, self.budget(c.graybox_attack))
        parts = self._key(defense=name, attack=c.graybox_attack, params=params, sampled=n)

        def make() -> dict:
            def gen() -> np.ndarray:
                nets = defense.sampled_networks(n, make_generator(c.seed + n))
                clf = art_classifier(MeanOfNetworks(nets), self.data.shape, self.k)
                return run_attack(c.graybox_attack, clf, self.ref.x.numpy(), self.ref.y.numpy(), params)

            return self.cell(defense, f"rls-{n}", self.examples("multisample", parts, gen), {"sampled": n})

        return self.cached_cell(name, f"rls-{n}-sampled", parts, make)
