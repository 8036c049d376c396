"""Commands that measure: ``evaluate`` (the evaluation report), ``certify`` (randomized-smoothing
certificates), ``noisy-report`` and ``rls-compare`` (the temperature-ensemble and RLS studies)."""

from __future__ import annotations

import argparse
import dataclasses
from typing import TYPE_CHECKING, Any

from ensdef.cli.command import Command, Result, command, csv, data_args, device_arg, plugin, preset_store
from ensdef.registry import Registry

if TYPE_CHECKING:
    from ensdef.evaluation.harness import Harness

COMMANDS: Registry[Command] = Registry("command")


def _preset_data(a: argparse.Namespace) -> tuple[Any, Any, Any]:
    from ensdef.data import load_dataset
    from ensdef.presets import load_preset
    from ensdef.store import ArtifactStore

    preset = load_preset(a.preset)
    return preset, load_dataset(preset.dataset, a.data_root or preset.data_root), ArtifactStore(a.store)


def _device(a: argparse.Namespace) -> Any:
    from ensdef.models.inference import resolve_device

    return resolve_device(a.device)


def _seeded_args(p: argparse.ArgumentParser, with_preset: bool = True) -> None:
    if with_preset:
        preset_store(p)
    p.add_argument("--seed", type=int, default=0)
    device_arg(p)
    data_args(p)


def _certify_args(p: argparse.ArgumentParser) -> None:
    preset_store(p)
    p.add_argument(
        "--count", type=int, default=100, help="N test images, evenly spaced (the split is ordered by class)"
    )
    p.add_argument("--n", type=int, default=None, help="estimation samples (preset default)")
    p.add_argument("--n0", type=int, default=None, help="selection samples (preset default)")
    p.add_argument("--alpha", type=float, default=None)
    p.add_argument("--sigma", type=float, default=None)
    p.add_argument("--radii", type=float, nargs="+", default=[0.0, 0.25, 0.5, 1.0])
    p.add_argument("--out", default=None, help="folder for certify.json and certified_accuracy.png")
    _seeded_args(p, with_preset=False)


@command(COMMANDS, "certify", "randomized-smoothing certificates of the noisy-vote ensemble", _certify_args)
def _certify(a: argparse.Namespace) -> Result:
    from ensdef.studies.certify_run import certify_split

    preset, data, store = _preset_data(a)
    c = preset.noisy_vote
    return certify_split(
        store,
        preset,
        data.test.subset(range(0, len(data.test), max(1, len(data.test) // a.count))[: a.count]),
        n0=a.n0 or c.n0,
        n=a.n or c.n,
        alpha=a.alpha or c.alpha,
        sigma=a.sigma or c.sigma,
        seed=a.seed,
        out=a.out,
        radii=a.radii,
        device=_device(a),
    ), 0


@command(COMMANDS, "noisy-report", "noisy-vote accuracy figures (Liang and Samavi 2021)", _seeded_args)
def _noisy_report(a: argparse.Namespace) -> Result:
    from ensdef.studies.noisy_report import summary

    preset, data, store = _preset_data(a)
    return summary(store, preset, data, a.seed, _device(a)), 0


def _rls_args(p: argparse.ArgumentParser) -> None:
    preset_store(p)
    p.add_argument("--name", default="rls-vgg")
    p.add_argument("--seed", type=int, default=0)
    data_args(p)


@command(COMMANDS, "rls-compare", "RLS against a single sub-model and dropout (Lee et al. 2021)", _rls_args)
def _rls_compare(a: argparse.Namespace) -> Result:
    from ensdef.studies.rls_compare import compare

    preset, data, store = _preset_data(a)
    return compare(store, preset, data, a.name, a.seed), 0


def _evaluate_args(p: argparse.ArgumentParser) -> None:
    preset_store(p)
    p.add_argument("--out", default=None, help="folder for report.json, report.md and the PNG plots (required)")
    p.add_argument(
        "--estimate",
        action="store_true",
        help="time each defense's passes and print the estimated minutes of its adaptive cells; attack nothing",
    )
    p.add_argument("--defenses", default=None, help="comma list (default: the preset's evaluation.defenses)")
    p.add_argument("--attacks", default=None, help="static attack set (default: the preset's)")
    p.add_argument("--threats", default="static,graybox,adaptive", help="comma list of static, graybox, adaptive")
    p.add_argument("--per-class", type=int, default=None, help="attacked images per class (MODEF: 10)")
    p.add_argument("--benign-n", type=int, default=None, help="benign test images")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--eot", type=int, default=None, help="EOT samples per gradient step (adaptive)")
    p.add_argument("--adaptive-steps", type=int, default=None, help="steps of the adaptive attack")
    p.add_argument("--no-cache", action="store_true", help="recompute every cell (and write no cache)")
    p.add_argument("--strict", action="store_true", help="exit 1 when a sanity check fails or an indicator fires")
    p.add_argument("--workers", type=int, default=None, help="defense rows as Ray tasks on a new local Ray, N at once")
    p.add_argument("--address", default=None, help="defense rows as Ray tasks on the Ray cluster at ADDR")
    p.add_argument("--task-cpus", type=float, default=1.0, help="CPUs per Ray task (with --workers or --address)")
    p.add_argument(
        "--torch-threads",
        type=int,
        default=None,
        help="torch and numpy (BLAS) CPU threads here and in every Ray task (figures equal bit for bit across "
        "processes only at one thread count; default: each process's own)",
    )
    p.add_argument("--task-gpus", type=float, default=0.0, help="GPUs per Ray task (members then run on CUDA)")
    device_arg(p)
    data_args(p)


def _estimates(harness: Harness, names: list[str], as_json: bool) -> dict[str, Any] | str:
    """``ensdef evaluate --estimate``: each defense's estimated adaptive minutes, a table unless ``--json``."""
    from ensdef.evaluation.costs import estimate_rows

    h = harness
    rows = estimate_rows(h.store, h.preset, h.cfg, h.ref.x, h.ref.y, names, h.device)
    total = sum(r["seconds"] for r in rows.values())
    if as_json:
        return {"images": len(h.ref.x), "defenses": rows, "total_seconds": round(total, 1)}
    lines = [f"adaptive cells on {len(h.ref.x)} images, estimated (an upper bound; docs/evaluation.md):"]
    for name, r in rows.items():
        t = r["passes"]
        lines.append(
            f"  {name:14s} {r['seconds'] / 60:7.1f} min   gradient step {t['gradient']:.2f} s, "
            f"decisions on the set {t['decide_set']:.2f} s, on one image {t['decide_one'] * 1000:.0f} ms"
        )
    lines.append(f"  {'total':14s} {total / 60:7.1f} min")
    return "\n".join(lines)


@command(COMMANDS, "evaluate", "static, gray-box and adaptive evaluation with a report", _evaluate_args)
def _evaluate(a: argparse.Namespace) -> Result:
    from ensdef.config import ConfigError
    from ensdef.evaluation import report
    from ensdef.evaluation.harness import Harness, HarnessSpec, Threat, cpu_threads
    from ensdef.presets.budgets import check_attacks

    preset, data, store = _preset_data(a)
    changes = {
        k: v
        for k, v in {
            "defenses": csv(a.defenses),
            "static_attacks": csv(a.attacks),
            "per_class": a.per_class,
            "benign_n": a.benign_n,
            "seed": a.seed,
            "eot": a.eot,
            "adaptive_iter": a.adaptive_steps,
        }.items()
        if v is not None
    }
    cfg = dataclasses.replace(preset.evaluation, **changes)
    check_attacks(cfg.static_attacks, {}, "--attacks")
    try:
        threats = tuple(Threat(t) for t in csv(a.threats) or ())
    except ValueError:
        raise ConfigError(f"--threats {a.threats!r}: choose from {', '.join(t.value for t in Threat)}") from None
    if a.out is None and not a.estimate:
        raise ConfigError("evaluate needs --out DIR (or --estimate, which writes nothing)")
    with cpu_threads(a.torch_threads or None):
        harness = Harness(store, preset, data, cfg, threats, use_cache=not a.no_cache, device=_device(a))
        if a.estimate:
            return _estimates(harness, csv(a.defenses) or list(cfg.defenses), a.json), 0
        runner = None
        if a.workers or a.address:
            spec = HarnessSpec(store.root, preset, cfg, threats, not a.no_cache, str(_device(a)), a.torch_threads)
            runner = plugin("ensdef.runners", "ray")(spec, a.address, a.workers, a.task_cpus, a.task_gpus)
        rep = harness.run(runner=runner)
    paths = report.write(rep, a.out)
    failed = [c for c in rep.extra["sanity"] if not c["passed"] and c["severity"] == "fail"]
    fired = [c for c in rep.extra["sanity"] if not c["passed"] and c["name"].startswith("indicator:")]
    out = {
        "out": {k: str(v) for k, v in paths.items()},
        "sanity": "FAIL" if failed else "PASS",
        "failed_checks": failed,
        "indicators_fired": fired,
        "cache": rep.extra["cache"],
        "summary": report.summary(rep),
    }
    return out, 1 if (failed or fired) and a.strict else 0
