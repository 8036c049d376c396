"""The adaptive cells of the evaluation harness: attacks through the whole defense at the full budget (PGD
with EOT and the detector-aware objective, its doubled-iteration check and epsilon curve, APGD with
cross-entropy and targeted DLR, ARC on randomized defenses, Square on the defense's scores, HopSkipJump and
Square on its decisions),
Liang and Samavi (2021)'s superimposition,
Lee et al. (2021)'s multi-sample attack on RLS, and the attack-failure indicators. A mixin of
:class:`~ensdef.evaluation.harness.Harness`, whose caching and scoring it uses."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from ensdef.attacks.adaptive import adaptive_examples, apgd_examples
from ensdef.attacks.arc import arc, surrogate_draws
from ensdef.attacks.art_classifier import art_classifier
from ensdef.attacks.cache import module_digest
from ensdef.attacks.catalog import attack_params, run_attack
from ensdef.attacks.decisions import DecisionAttack
from ensdef.attacks.eot import EOTSurrogate
from ensdef.attacks.multi_sample import MeanOfNetworks
from ensdef.attacks.superimpose import fooled_mask, superimpose
from ensdef.defenses.base import Defense
from ensdef.defenses.rls import RLSEnsemble
from ensdef.evaluation.cascade import Attacked, Cascade
from ensdef.evaluation.indicators import indicators
from ensdef.rng import make_generator


class AdaptiveCells:
    """Adaptive cells for one defense; ``self`` is the :class:`~ensdef.evaluation.harness.Harness`."""

    cfg: Any
    data: Any
    ref: Any
    k: int
    device: torch.device
    cache: Any
    indicators: dict[str, list[dict[str, Any]]]

    def _adaptive_cell(self, name: str, defense: Defense, eps: float, iters: int) -> Attacked:
        """Adaptive attack at ``eps`` with ``iters`` steps of size 2.5 * eps_max / adaptive_iter (fixed, so
        that doubling the iterations can only search further)."""
        c = self.cfg.for_defense(name)
        step = 2.5 * c.eps_curve[-1] / c.adaptive_iter
        params = attack_params(
            c.adaptive_attack, self.budget(c.adaptive_attack, eps=eps, eps_step=step, max_iter=iters)
        )
        objective = "worst of detector-aware and untargeted" if defense.can_flag else "untargeted"
        parts = self._key(defense=name, attack=c.adaptive_attack, params=params, eot=c.eot, objective=objective)

        def gen() -> np.ndarray:
            x, y = self.ref.x, self.ref.y
            return adaptive_examples(defense, x, y, c.adaptive_attack, params, c.eot, c.seed, self.k)[0]

        extra = {"eps": eps, "max_iter": iters, "objective": objective, "eot": c.eot if defense.randomized else 0}
        return self.attacked(name, defense, "adaptive", parts, self.examples("adaptive", parts, gen), extra)

    def adaptive(self, name: str, defense: Defense, put: Callable[[str, Attacked], None], cascade: Cascade) -> None:
        """Every adaptive cell of ``name``, each handed to ``put`` (row key, cell) in order: first the cells
        that attack every image (PGD, its doubled-iteration check and epsilon curve, Square on scores,
        superimposition, the multi-sample attack), then the cascade (APGD-CE, targeted APGD-DLR, ARC on
        randomized defenses, Square and HopSkipJump on decisions) on the images still standing
        (:mod:`ensdef.evaluation.cascade`)."""
        c = self.cfg.for_defense(name)
        eps = c.eps_curve[-1]
        put(f"adaptive/{c.adaptive_attack}", self._adaptive_cell(name, defense, eps, c.adaptive_iter))
        put(f"adaptive/{c.adaptive_attack}-2x", self._adaptive_cell(name, defense, eps, 2 * c.adaptive_iter))
        for e in c.eps_curve[:-1]:
            put(f"adaptive/{c.adaptive_attack}@{e:g}", self._adaptive_cell(name, defense, e, c.adaptive_iter))
        put(f"adaptive/{c.blackbox_attack}", self.blackbox(name, defense))
        try:
            members = defense.members(make_generator(c.seed))
        except NotImplementedError:
            members = []
        if len(members) > 1:
            for k in c.superimpose:
                put(f"adaptive/superimpose-{k}", self.superimposition(name, defense, members, k))
        if isinstance(defense, RLSEnsemble):
            for n in c.rls_samples:
                put(f"adaptive/rls-{n}-sampled", self.multi_sample(name, defense, n))
        put("adaptive/apgd-ce", self.apgd_cell(name, defense, "cross_entropy", 0, cascade))
        put(
            "adaptive/apgd-dlr-targeted",
            self.apgd_cell(name, defense, "difference_logits_ratio", c.apgd_targets, cascade),
        )
        if defense.randomized and c.arc_draws > 1:
            put("adaptive/arc", self.arc_cell(name, defense, cascade))
        if c.blackbox_iter > 0:
            put("adaptive/square-decisions", self.decision_cell(name, defense, "square", cascade))
        if c.decision_iter > 0:
            put("adaptive/hopskipjump-decisions", self.decision_cell(name, defense, "hopskipjump", cascade))
        self.indicators[name] = self.failure_indicators(name, defense)

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

    def apgd_cell(self, name: str, defense: Defense, loss: str, targets: int, cascade: Cascade) -> Attacked:
        """APGD (cross-entropy, or targeted DLR at ``targets`` wrong classes) through the EOT surrogate at the
        full budget, ``apgd_iter`` steps and ``apgd_restarts`` random restarts, on the images ``cascade``
        left standing; for a defense that flags or abstains, also through its detector-aware surrogate (the
        worse for the defense per image)."""
        c = self.cfg.for_defense(name)
        more = {"eps": c.eps_curve[-1], "max_iter": c.apgd_iter, "restarts": c.apgd_restarts}
        params = attack_params("apgd", self.budget("apgd", **more))
        aware = defense.can_flag
        parts = self._key(
            defense=name, attack="apgd", params=params, loss=loss, targets=targets, eot=c.eot, detector_aware=aware
        )

        def attack(x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
            return apgd_examples(
                defense, x, y, loss=loss, overrides=params, eot=c.eot, seed=c.seed, targets=targets, num_classes=self.k
            )[0]

        extra = {"loss": loss, "targets": targets, **more, "eot": c.eot if defense.randomized else 0}
        extra["detector_aware"] = aware
        return self.cascaded(name, defense, f"apgd-{loss}-{targets}", parts, cascade, attack, extra)

    def arc_cell(self, name: str, defense: Defense, cascade: Cascade) -> Attacked:
        """ARC (:mod:`ensdef.attacks.arc`) on ``arc_draws`` fixed draws of a randomized defense's surrogate as
        equally likely members, ``arc_iter`` sweeps of step eps / 4, on the images ``cascade`` left standing."""
        c = self.cfg.for_defense(name)
        eps = c.eps_curve[-1]
        more = {"eps": eps, "draws": c.arc_draws, "sweeps": c.arc_iter, "step_size": eps / 4, "classes": 1}
        parts = self._key(defense=name, attack="arc", **more)

        def run(x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
            members, joint = surrogate_draws(defense, c.arc_draws, c.seed + 29)
            alpha = torch.full((c.arc_draws,), 1.0 / c.arc_draws)
            x, y = x.to(self.device), y.to(self.device)
            adv = arc(members, alpha, x, y, eps, more["step_size"], more["sweeps"], classes=1, joint=joint)
            return adv.cpu().numpy().astype(np.float32)

        return self.cascaded(name, defense, "arc", parts, cascade, run, {"attack": "arc", **more})

    def blackbox(self, name: str, defense: Defense) -> Attacked:
        """ART's Square attack on the defense's output scores (one random draw per query)."""
        c = self.cfg.for_defense(name)
        params = attack_params(
            c.blackbox_attack, self.budget(c.blackbox_attack, eps=c.eps_curve[-1], max_iter=c.blackbox_iter)
        )
        parts = self._key(defense=name, attack=c.blackbox_attack, params=params)

        def gen() -> np.ndarray:
            clf = art_classifier(EOTSurrogate(defense, 1, c.seed), self.data.shape, self.k)
            return run_attack(c.blackbox_attack, clf, self.ref.x.numpy(), self.ref.y.numpy(), params)

        adv = self.examples("blackbox", parts, gen)
        return self.attacked(name, defense, "blackbox", parts, adv, {"attack": c.blackbox_attack})

    def decision_cell(self, name: str, defense: Defense, attack: str, cascade: Cascade) -> Attacked:
        """A query-only attacker on the defense's decisions (labels, refusals as the true label), as a client
        of the service sees them, projected onto the budget, on the images ``cascade`` left standing:
        HopSkipJump (``decision_iter`` iterations of ``decision_evals`` queries) or Square (``blackbox_iter``
        queries per image)."""
        c = self.cfg.for_defense(name)
        if attack == "hopskipjump":
            more = {"max_iter": c.decision_iter, "max_eval": c.decision_evals}
            more["init_eval"] = max(1, min(100, c.decision_evals // 2))
        else:
            more = {"max_iter": c.blackbox_iter}
        params = attack_params(attack, self.budget(attack, **more))
        eps = c.eps_curve[-1]
        parts = self._key(defense=name, attack=attack, params=params, eps=eps)

        def run(x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
            return DecisionAttack(eps, params, c.seed, self.k, attack)(defense, x, y)[0]

        extra = {"attack": attack, "sees": "decisions", **params}
        return self.cascaded(name, defense, f"decisions-{attack}", parts, cascade, run, extra)

    def superimposition(self, name: str, defense: Defense, members: list, k: int) -> Attacked:
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

        def combined() -> dict[str, torch.Tensor]:  # cached: a rerun reads it instead of re-running the members
            runs = [one(m) for m in pool]
            fooled = fooled_mask(pool, [r["x"] for r in runs], self.ref.y)
            x_si = superimpose(self.ref.x.numpy(), [r["x"].numpy() for r in runs], fooled, k)
            return {"x": torch.from_numpy(x_si), "seconds": sum(r["seconds"] for r in runs)}

        parts = {**base, "k": k}
        adv = self.cache.tensors("superimposed", parts, combined)
        return self.attacked(name, defense, f"superimpose-{k}", parts, adv, {"members": len(pool), "k": k})

    def multi_sample(self, name: str, defense: RLSEnsemble, n: int) -> Attacked:
        c = self.cfg.for_defense(name)
        params = attack_params(c.graybox_attack, self.budget(c.graybox_attack))
        parts = self._key(defense=name, attack=c.graybox_attack, params=params, sampled=n)

        def gen() -> np.ndarray:
            nets = defense.sampled_networks(n, make_generator(c.seed + n))
            clf = art_classifier(MeanOfNetworks(nets), self.data.shape, self.k)
            return run_attack(c.graybox_attack, clf, self.ref.x.numpy(), self.ref.y.numpy(), params)

        adv = self.examples("multisample", parts, gen)
        return self.attacked(name, defense, f"rls-{n}-sampled", parts, adv, {"sampled": n})
