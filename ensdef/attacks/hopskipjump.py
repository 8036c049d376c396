"""ART's HopSkipJump (Chen, Jordan and Wainwright 2020) with a replayable start: ART 1.20 draws the first
adversarial image of each input from an unseeded ``np.random.RandomState()``, so no two runs of a cell agreed."""

from __future__ import annotations

from typing import Any

import numpy as np
from art.attacks.evasion import HopSkipJump


class SeededHopSkipJump(HopSkipJump):
    """ART's HopSkipJump whose search for a first adversarial image draws from a ``RandomState`` seeded from
    numpy's global RNG when the attack is built (ART's draws from an unseeded one, so two runs of the same cell
    started from different images and ended apart). The search is ART's, up to ``init_size`` uniform images and
    the first that satisfies the attack refined by an L2 binary search toward the input, but its images are
    asked :data:`INIT_BATCH` at a time (ART asks one per query: a defense's per-call cost, 100 times per
    image)."""

    INIT_BATCH = 20

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._rng = np.random.RandomState(np.random.randint(2**31))

    def _init_sample(
        self,
        x: np.ndarray,
        y: int,
        y_p: int,
        init_pred: int,
        adv_init: np.ndarray,
        mask: np.ndarray | None,
        clip_min: float,
        clip_max: float,
    ) -> tuple[np.ndarray, int] | None:
        if self.targeted and y == y_p:  # nothing to do
            return None
        keep = y if self.targeted else y_p  # the label the search keeps (targeted) or leaves (untargeted)
        if adv_init is not None and (init_pred == y if self.targeted else init_pred != y_p):
            return adv_init.astype(np.float32), keep
        for start in range(0, self.init_size, self.INIT_BATCH):
            k = min(self.INIT_BATCH, self.init_size - start)
            imgs = self._rng.uniform(clip_min, clip_max, size=(k, *x.shape)).astype(x.dtype)
            if mask is not None:
                imgs = imgs * mask + x * (1 - mask)
            cls = np.argmax(self.estimator.predict(imgs, batch_size=self.batch_size), axis=1)
            hits = np.flatnonzero(cls == y if self.targeted else cls != y_p)
            if hits.size:
                img = self._binary_search(
                    current_sample=imgs[hits[0]],
                    original_sample=x,
                    target=keep,
                    norm=2,
                    clip_min=clip_min,
                    clip_max=clip_max,
                    threshold=0.001,
                )
                return img, keep
        return None
