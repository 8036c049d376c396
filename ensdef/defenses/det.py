"""DeT (Li et al. 2019): Gaussian noise, a preliminary reformer, random samples in the hypercube around its output,
a list of reformers reconstructing every sample, and a two-level majority vote.

``x' = clip(x + sigma N)``, ``x'' = R_0(x')``, samples ``x''_i = clip(x'' + eps N)`` for ``i < n``; every
reformer ``R_j`` of the list reconstructs every sample, the classifier labels them; a plurality per reformer,
then a plurality over reformers, ties broken by the generator.

The attack surrogate averages the classifier's log-probabilities over reformers and hypercube samples. One draw
of it takes ``surrogate_samples`` samples (default 1, not ``n``): the mean is linear, so an EOT over S draws of one
sample estimates the same expectation over the noise as S draws of ``n`` samples at about a tenth of the cost
(each draw still runs the preliminary reformer once).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ensdef.defenses.base import Defense, bpda_clip, log_probs, plurality
from ensdef.defenses.plans import Job, Op, Plan, decisions, present, required
from ensdef.rng import randn_like


def two_level_vote(labels: torch.Tensor, num_classes: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``labels`` ``[R, n, B]`` -> ``(final [B], per_reformer [R, B])``; pure, ties broken with ``g``."""
    per = torch.stack([plurality(labels[r], num_classes, g)[0] for r in range(labels.shape[0])])
    return plurality(per, num_classes, g)[0], per


class DeTDefense(Defense):
    name = "det"
    can_flag = False

    def __init__(
        self,
        classifier: nn.Module,
        preliminary: nn.Module,
        reformers: Sequence[nn.Module],
        sigma: float = 0.1,
        eps: float = 0.1,
        samples: int = 10,
        num_classes: int = 10,
        names: tuple[str, str, Sequence[str]] | None = None,
        surrogate_samples: int = 1,
    ) -> None:
        """``names``: (classifier, preliminary reformer, reformer list) as the jobs call them;
        ``surrogate_samples``: hypercube samples per draw of the attack surrogate (module docstring)."""
        if samples < 1 or surrogate_samples < 1:
            raise ValueError(f"samples and surrogate_samples must be >= 1, got {samples} and {surrogate_samples}")
        self.classifier, self.preliminary, self.reformers = classifier, preliminary, list(reformers)
        self.sigma, self.eps, self.samples, self.num_classes = sigma, eps, samples, num_classes
        self.surrogate_samples = surrogate_samples
        c, p, rs = names or ("classifier", "preliminary", [f"reformer-{i}" for i in range(len(self.reformers))])
        self.classifier_name, self.preliminary_name, self.reformer_names = c, p, list(rs)

    def noised(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """``clip(x + sigma N)``, the preliminary reformer's input."""
        return bpda_clip(x + self.sigma * randn_like(x, g))

    def around(self, x2: torch.Tensor, g: torch.Generator, samples: int) -> torch.Tensor:
        """``[n, B, C, H, W]``: ``n`` samples ``clip(x2 + eps N)`` in the hypercube around ``x2``."""
        rep = x2.unsqueeze(0).expand(samples, *x2.shape)
        return bpda_clip(rep + self.eps * randn_like(rep, g))

    def hypercube(self, x: torch.Tensor, g: torch.Generator, samples: int) -> torch.Tensor:
        """``[n, B, C, H, W]``: noise, preliminary reformer, then ``n`` samples around its output."""
        return self.around(self.preliminary(self.noised(x, g)), g, samples)

    def plan(self, x: torch.Tensor, g: torch.Generator, quorum: float = 0.5) -> Plan:
        """Stages: preliminary reformer, every reformer of the list on the samples, the classifier on each
        reformer's reconstructions. The classifier and the preliminary reformer have no stand-in."""
        (x2,) = yield [Job(self.preliminary_name, Op.TRANSFORM, self.noised(x, g))]
        cube = self.around(required(x2, self.preliminary_name), g, self.samples).flatten(0, 1)  # [n * B, C, H, W]
        reformed = yield [Job(r, Op.TRANSFORM, cube) for r in self.reformer_names]
        idx, missing = present(reformed, quorum, "reformers")
        labels = yield [Job(self.classifier_name, Op.LABELS, reformed[i]) for i in idx]
        labels = [required(lab, self.classifier_name).view(self.samples, len(x)) for lab in labels]
        final, per = two_level_vote(torch.stack(labels), self.num_classes, g)
        return decisions(final, None, missing, lambda i: {"per_reformer": per[:, i].tolist()})

    def named_members(self) -> dict[str, nn.Module]:
        return {
            self.classifier_name: self.classifier,
            self.preliminary_name: self.preliminary,
            **dict(zip(self.reformer_names, self.reformers, strict=True)),
        }

    def surrogate(self, x: torch.Tensor, g: torch.Generator | None = None) -> torch.Tensor:
        """Mean over reformers (and, with ``g``, over ``surrogate_samples`` hypercube samples) of the classifier's
        log-probabilities. Clipping is differentiated as the identity (BPDA); with ``g=None`` no noise is drawn."""
        cube = self.preliminary(x).unsqueeze(0) if g is None else self.hypercube(x, g, self.surrogate_samples)
        flat = cube.flatten(0, 1)
        out = torch.stack([log_probs(self.classifier, r(flat)) for r in self.reformers]).mean(0)
        return out.view(cube.shape[0], len(x), -1).mean(0)

    def surrogate_many(self, x: torch.Tensor, gs: Sequence[torch.Generator]) -> torch.Tensor:
        """Each draw's hypercube, then one pass per reformer over all draws: equal to the loop."""
        n = self.surrogate_samples
        cubes = torch.stack([self.hypercube(x, g, n) for g in gs])  # [S, n, B, C, H, W]
        flat = cubes.flatten(0, 2)
        out = torch.stack([log_probs(self.classifier, r(flat)) for r in self.reformers]).mean(0)
        return out.view(len(gs), n, len(x), -1).mean(1)

    def members(self, g: torch.Generator | None = None) -> list[nn.Module]:
        """classifier o R_j for every reformer of the list."""
        return [nn.Sequential(r, self.classifier) for r in self.reformers]
