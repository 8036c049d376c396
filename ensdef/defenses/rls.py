"""Random layer sampling defense (Lee, Lee, Kim and Ro 2021): N sampled networks per request, probabilities
averaged. Training (group optimisation) is :mod:`ensdef.training.rls`."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ensdef.data import Split
from ensdef.defenses.base import Defense
from ensdef.defenses.plans import Job, Op, PerInputDraws, Plan, decisions, present, stacked
from ensdef.diversity.kappa import interrater_agreement
from ensdef.models.rls import RLSNet, sample_paths
from ensdef.rng import make_generator


def sampled_probs(net: RLSNet, x: torch.Tensor, paths: torch.Tensor) -> torch.Tensor:
    """``[N, B, K]`` softmax outputs of the sampled networks ``paths`` ``[N, L]`` (shared prefixes run once)."""
    return net.forward_paths(x, paths).softmax(2)


class RLSEnsemble(PerInputDraws, Defense):
    name = "rls"
    can_flag = False

    def __init__(self, net: RLSNet, n: int = 10, member: str = "rls", mu: torch.Tensor | None = None) -> None:
        """``mu`` ``[L, M]``: the sampling distribution (default ``net.mu``); a weight-free description passes
        it with a stand-in for ``net``."""
        self.net, self.n, self.member = net.eval(), n, member
        self.mu = (net.mu if mu is None else mu).detach().cpu()

    def paths(self, k: int, g: torch.Generator) -> torch.Tensor:
        """``[k, L]`` sampled networks, drawn from ``mu`` with ``g``."""
        return sample_paths(self.mu, k, g)

    @torch.no_grad()
    def sampled_labels(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """``[N, B]`` labels of N sampled networks (for the interrater-agreement score)."""
        return sampled_probs(self.net, x, self.paths(self.n, g)).argmax(2)

    def plan_one_draw(self, x: torch.Tensor, g: torch.Generator, quorum: float = 0.5) -> Plan:
        """One stage: N sampled networks shared by every row of ``x`` (one job each, all on the RLS member);
        probabilities averaged."""
        paths = self.paths(self.n, g).tolist()
        res = yield [Job(self.member, Op.PATH_PROBS, x, path=tuple(p)) for p in paths]
        idx, missing = present(res, quorum, "sampled networks")
        label = stacked(res, idx).mean(0).argmax(1)
        return decisions(label, None, missing, lambda i: {"paths": [paths[j] for j in idx]})

    def named_members(self) -> dict[str, nn.Module]:
        return {self.member: self.net}

    def surrogate(self, x: torch.Tensor, g: torch.Generator | None = None) -> torch.Tensor:
        if g is None:
            return self.net(x)
        return sampled_probs(self.net, x, self.paths(self.n, g)).mean(0).clamp_min(1e-12).log()

    def surrogate_many(self, x: torch.Tensor, gs: Sequence[torch.Generator]) -> torch.Tensor:
        """Each draw's N paths; every distinct path runs once (there are at most M^L of them)."""
        paths = [self.paths(self.n, g) for g in gs]
        uniq, inv = torch.unique(torch.cat(paths), dim=0, return_inverse=True)
        probs = sampled_probs(self.net, x, uniq)[inv].view(len(gs), self.n, len(x), -1)
        return probs.mean(1).clamp_min(1e-12).log()

    def sampled_networks(self, n: int, g: torch.Generator) -> list[nn.Module]:
        """``n`` exported sampled networks drawn with ``g`` (what an attacker can fix and attack)."""
        return [self.net.export(p) for p in self.paths(n, g)]

    def members(self, g: torch.Generator | None = None) -> list[nn.Module]:
        """With ``g``: N sampled networks; without: the M sub-models' own paths."""
        if g is not None:
            return self.sampled_networks(self.n, g)
        return [self.net.export([m] * self.net.num_units) for m in range(self.net.num_submodels)]

    def diversity(self, split: Split, seed: int = 0) -> float:
        """Interrater agreement of the N sampled networks' predictions on ``split`` (lower = more diverse)."""
        return interrater_agreement(self.sampled_labels(split.x, make_generator(seed)).numpy(), split.y.numpy())
