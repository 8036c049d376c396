"""Training a preset's verifier pool with Ray Tune (one trial per member, ``tune.cpus_per_trial`` each)
against the sequential in-process loop (``ensdef train``) for the same members and epochs, in one run.

    .venv/bin/python benchmarks/tune_pool.py [--preset mnist5k] [--epochs 3] [--num-cpus N]

Both write to fresh temporary stores. The sequential loop gets every core (torch intra-op threads), Tune gets a
fresh local Ray with the same cores; the ratio is Tune's wall time over the loop's (goal: at most 0.7).
Ray's start-up is outside the timing, Tune's trial start-up (a worker process importing torch) inside.
``best_possible_ratio`` packs the trials' own training seconds perfectly into the concurrent slots with no
start-up at all: no scheduler can beat it on this machine. Where torch already spreads one model over the cores
well (1.69x on 2 cores for the mnist5k verifiers), it sits above 0.7.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import os
import sys
import tempfile
import time
from typing import Any

import torch

from ensdef.data import load_dataset
from ensdef.presets import load_preset
from ensdef.training.pools import Pool, plan_pool, train_pools


def member_seconds(store: Any) -> dict[str, float]:
    return {n: store.manifest(n).metrics["seconds"] for n in store.names()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="mnist5k")
    ap.add_argument("--epochs", type=int, default=3, help="epochs per member, in both runs")
    ap.add_argument("--num-cpus", type=int, default=os.cpu_count())
    ap.add_argument("--cpus-per-trial", type=float, default=None, help="default: the preset's tune.cpus_per_trial")
    a = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    p = load_preset(a.preset)
    train = dataclasses.replace(p.verifiers.train, epochs=a.epochs, patience=a.epochs)
    overrides = {k: {**v, "epochs": a.epochs, "patience": a.epochs} for k, v in p.verifiers.overrides.items()}
    preset = dataclasses.replace(p, verifiers=dataclasses.replace(p.verifiers, train=train, overrides=overrides))
    if a.cpus_per_trial:
        preset = dataclasses.replace(preset, tune=dataclasses.replace(preset.tune, cpus_per_trial=a.cpus_per_trial))
    members = [m.name for m in plan_pool(preset, Pool.VERIFIERS)]
    data = load_dataset(preset.dataset, preset.data_root)

    torch.set_num_threads(a.num_cpus)
    with tempfile.TemporaryDirectory() as d:
        from ensdef.store import ArtifactStore

        t0 = time.perf_counter()
        train_pools(preset, data, ArtifactStore(d), [Pool.VERIFIERS])
        sequential = time.perf_counter() - t0
        seq_each = member_seconds(ArtifactStore(d))

    import ray

    from tune.pools import TuneRun, tune_pools

    ray.init(address="local", num_cpus=a.num_cpus, log_to_driver=False)
    with tempfile.TemporaryDirectory() as d:
        from ensdef.store import ArtifactStore

        t0 = time.perf_counter()
        with contextlib.redirect_stdout(sys.stderr):  # Tune's progress tables
            tune_pools(preset, ArtifactStore(d), [Pool.VERIFIERS], TuneRun(resume=False))
        tuned = time.perf_counter() - t0
        tune_each = member_seconds(ArtifactStore(d))
    ray.shutdown()
    # the best any scheduler could do with these trials: perfectly packed into the concurrent slots, with no
    # start-up at all (the longest trial bounds it from below too)
    slots = max(1, int(a.num_cpus // preset.tune.cpus_per_trial))
    ideal = max(max(tune_each.values()), sum(tune_each.values()) / slots)
    print(
        json.dumps(
            {
                "preset": preset.name,
                "members": members,
                "epochs": a.epochs,
                "cpus": a.num_cpus,
                "cpus_per_trial": preset.tune.cpus_per_trial,
                "sequential_s": round(sequential, 1),
                "tune_s": round(tuned, 1),
                "ratio": round(tuned / sequential, 3),
                # training seconds per member (the loop's threads / one trial's): their sums show how much of
                # the parallel speed-up the cores allow, and the rest is trial start-up
                "member_seconds_sequential": seq_each,
                "member_seconds_tune": tune_each,
                "sum_sequential_s": round(sum(seq_each.values()), 1),
                "sum_tune_s": round(sum(tune_each.values()), 1),
                "concurrent_trials": slots,
                "ideal_parallel_s": round(ideal, 1),
                "best_possible_ratio": round(ideal / sequential, 3),
                "goal": "ratio <= 0.7",
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
