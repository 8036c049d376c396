"""The attack cascade: the expensive attacks only see the images every cheaper attack left standing.

AutoAttack runs its attacks in sequence and gives each the points the ones before it could not break (Croce
and Hein 2020, "Reliable evaluation of adversarial robustness with an ensemble of diverse parameter-free
attacks"): the worst case per image over the whole suite is the same as running every attack on every image,
at a fraction of the cost when the defense falls early. Here an image is broken once some cell within the
L-inf budget made the defense answer it with a wrong label, unflagged and not abstained; such an image can
lower neither headline further (robust: correct and answered; defended: correct or refused). Every other image,
flagged ones included, stays standing, so the defended rate is attacked as hard as the robust one.

A cascaded cell attacks the standing images only and, for the broken ones, carries the example that first
broke them; it is then scored on all ``N`` images like any cell, so its figure is the cumulative one
(AutoAttack's "robust accuracy after APGD-CE, after APGD-T, ...") and every entry of its ``per_image`` is a
real decision on a real example.
"""

from __future__ import annotations

import hashlib
from typing import Any, NamedTuple

import numpy as np
import torch

from ensdef.evaluation.worst_case import TOLERANCE


class Attacked(NamedTuple):
    """A scored cell and its adversarial examples ``x`` ``[N, C, H, W]``."""

    cell: dict[str, Any]
    x: torch.Tensor


class Cascade:
    """Which of the attack set's ``N`` images ``ref`` ``[N, C, H, W]`` are still standing at L-inf ``eps``,
    and the example that broke each of the others. ``enabled=False`` keeps every image standing (each
    attack on the whole set, as before the cascade)."""

    def __init__(self, ref: torch.Tensor, eps: float, enabled: bool = True) -> None:
        self.ref, self.eps, self.enabled = ref, eps, enabled
        self.broken = np.zeros(len(ref), dtype=bool)
        self.carried = ref.clone()

    def add(self, done: Attacked) -> None:
        """Record the images ``done`` broke within the budget (the first breaking example is kept)."""
        p = done.cell.get("per_image")
        if p is None:
            return
        within = np.asarray(p["linf"]) <= self.eps + TOLERANCE
        new = ~np.asarray(p["correct"], bool) & ~np.asarray(p["flagged"], bool) & within & ~self.broken
        if new.any():
            self.carried[torch.from_numpy(new)] = done.x[torch.from_numpy(new)].to(self.carried.dtype)
            self.broken |= new

    def standing(self) -> list[int]:
        """Indices of the images the next cascaded attack gets (every image when disabled)."""
        return list(range(len(self.ref))) if not self.enabled else np.flatnonzero(~self.broken).tolist()

    def digest(self) -> str:
        """A digest of the carried examples of the broken images (what a cascaded cell scores besides its own)."""
        h = hashlib.sha256(self.broken.tobytes())
        h.update(self.carried[torch.from_numpy(self.broken)].contiguous().numpy().tobytes())
        return h.hexdigest()[:16]

    def complete(self, standing: list[int], adv: torch.Tensor) -> torch.Tensor:
        """``[N, C, H, W]``: ``adv`` ``[len(standing), C, H, W]`` at the standing images, the carried
        examples elsewhere."""
        out = self.carried.clone()
        if standing:
            out[torch.tensor(standing)] = adv.to(out.dtype)
        return out
