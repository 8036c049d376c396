"""Function trainables: one pool member per trial, trained by ``ensdef.training.pools.train_member`` into the shared
artifact store (the same manifest and loader as the in-process trainer).

Every epoch reports ``score`` (validation score, higher is better) so schedulers can stop trials; the last
report carries a Tune checkpoint holding the stored manifest. A member already in the store with the same
training plan is reported as ``skipped`` instead of being trained again.
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path
from typing import Any

import ray
from ray import tune

from ensdef.config import to_plain
from ensdef.data import Dataset, load_dataset
from ensdef.presets import Preset
from ensdef.store import ArtifactStore, Manifest
from ensdef.training.pools import MemberPlan, stored_as_planned, train_member
from tune.resources import use_trial_cpus

log = logging.getLogger(__name__)


def _report_final(m: Manifest, skipped: bool) -> None:
    metrics = {k: v for k, v in m.metrics.items() if isinstance(v, int | float)}
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "manifest.json").write_text(json.dumps(to_plain(m), indent=1))
        tune.report(
            {
                **metrics,
                "member": m.name,
                "skipped": skipped,
                "sha256": m.sha256,
                "done": True,
                "node_id": ray.get_runtime_context().get_node_id(),  # where the trial ran (multi-node spread)
            },
            checkpoint=tune.Checkpoint.from_directory(d),
        )


def train_member_trial(
    config: dict[str, Any], *, plans: dict[str, MemberPlan], preset: Preset, store: str, data: Dataset | None = None
) -> None:
    """Tune trial for ``plans[config["member"]]``: train it into ``store`` unless it is there already.
    ``data``: the preset's dataset, shipped once through the object store (``tune.with_parameters``) instead of
    parsed again by every trial; None loads it here."""
    use_trial_cpus()
    plan, st = plans[config["member"]], ArtifactStore(store)
    if stored_as_planned(st, plan):
        log.info("%s: already trained with this plan, skipped", plan.name)
        _report_final(st.manifest(plan.name), skipped=True)
        return
    if data is None:
        data = load_dataset(preset.dataset, preset.data_root)

    def on_epoch(epoch: int, score: float) -> None:
        tune.report({"score": score, "epoch": epoch, "member": plan.name, "done": False})

    _report_final(train_member(plan, data, st, on_epoch), skipped=False)
