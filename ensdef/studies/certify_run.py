"""Certify a slice of a split with the stored noisy-vote ensemble; table and plot of certified accuracy."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ensdef.data import Split
from ensdef.defenses.noisy_vote import NoisyVoteEnsemble
from ensdef.defenses.registry import load_role
from ensdef.evaluation.certify import certified_accuracy, certify
from ensdef.evaluation.plots import curve
from ensdef.presets import Preset
from ensdef.rng import make_generator
from ensdef.store import ArtifactStore
from ensdef.types import ABSTAIN, Role

log = logging.getLogger(__name__)


def certify_split(
    store: ArtifactStore,
    preset: Preset,
    split: Split,
    n0: int,
    n: int,
    alpha: float,
    sigma: float,
    seed: int,
    out: str | None,
    radii: list[float],
    device: torch.device | str = "cpu",
) -> dict[str, Any]:
    members = load_role(store, Role.TEMPNET, torch.device(device))[1]
    ens = NoisyVoteEnsemble(members, sigma, None)
    g = make_generator(seed)
    t0 = time.perf_counter()
    certs = [
        certify(ens.base_vote, split.x[i], sigma, n0, n, alpha, ens.num_classes, g, preset.noisy_vote.batch_size)
        for i in tqdm(range(len(split)), desc="certify", leave=False, disable=None)
    ]
    y = split.y.numpy()
    table = certified_accuracy(certs, y, radii)
    result = {
        "settings": {
            "sigma": sigma,
            "n0": n0,
            "n": n,
            "alpha": alpha,
            "seed": seed,
            "count": len(split),
            "members": len(members),
        },
        "certified_accuracy": {f"{r:g}": v for r, v in table.items()},
        "abstain_rate": float(np.mean([c.label == ABSTAIN for c in certs])),
        "seconds": round(time.perf_counter() - t0, 1),
        "certificates": [
            {"label": c.label, "radius": c.radius, "p_value": c.p_value, "p_a_lower": c.p_a_lower, "true": int(t)}
            for c, t in zip(certs, y, strict=True)
        ],
    }
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "certify.json").write_text(json.dumps(result, indent=2))
        fine = list(np.linspace(0, max(radii), 41))
        acc = certified_accuracy(certs, y, fine)
        result["plot"] = str(
            curve(
                Path(out) / "certified_accuracy.png",
                {f"sigma={sigma:g}": (fine, list(acc.values()))},
                "L2 radius",
                "certified accuracy",
                f"noisy-vote ensemble, m={len(members)}",
            )
        )
    return result
