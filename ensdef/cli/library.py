"""Commands over data, models, pools and the store: ``data info``, ``models list``, ``train``, ``artifacts
verify|list|import``, ``keys new`` (API keys of the service), ``select`` (MODEF teams) and ``decide`` (one
defense in process)."""

from __future__ import annotations

import argparse
import dataclasses

from ensdef.cli.command import Command, Result, command, data_args, device_arg, finetune_arg, preset_store
from ensdef.config import to_plain
from ensdef.errors import ConfigError
from ensdef.registry import Registry

COMMANDS: Registry[Command] = Registry("command")
POOL_NAMES = ("target", "verifiers", "denoisers", "reformers", "tempnets", "rls", "baselines")  # training.pools.Pool


def _dataset_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", default="mnist5k")
    data_args(p)


@command(COMMANDS, "data info", "split sizes, shape, classes", _dataset_args)
def _data_info(a: argparse.Namespace) -> Result:
    from ensdef.data import load_dataset

    return load_dataset(a.dataset, a.data_root, a.download).info(), 0


@command(COMMANDS, "models list", "registered architectures", lambda p: None)
def _models_list(a: argparse.Namespace) -> Result:
    from ensdef.models import MODELS

    return [
        {
            "name": s.name,
            "kind": s.kind.value,
            "roles": [r.value for r in s.roles],
            "input_shapes": [list(x) for x in s.input_shapes],
            "description": s.description,
        }
        for s in MODELS.values()
    ], 0


def _train_args(p: argparse.ArgumentParser) -> None:
    preset_store(p)
    p.add_argument("--pool", default="all", choices=["all", *POOL_NAMES])
    p.add_argument("--skip-existing", action="store_true", help="keep members that verify and match the plan")
    finetune_arg(p)
    data_args(p)


@command(COMMANDS, "train", "train a preset's pools into an artifact store", _train_args)
def _train(a: argparse.Namespace) -> Result:
    from ensdef.data import load_dataset
    from ensdef.presets import load_preset
    from ensdef.store import ArtifactStore
    from ensdef.training.pools import Pool, train_pools

    preset = load_preset(a.preset)
    if a.finetune_from:
        preset = dataclasses.replace(preset, finetune_from=a.finetune_from)
    data = load_dataset(preset.dataset, a.data_root or preset.data_root, a.download)
    pools = list(Pool) if a.pool == "all" else [Pool(a.pool)]
    return train_pools(preset, data, ArtifactStore(a.store), pools, a.skip_existing), 0


def _store_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--store", required=True)


@command(COMMANDS, "artifacts verify", "check every artifact's hash", _store_arg)
def _verify(a: argparse.Namespace) -> Result:
    from ensdef.store import ArtifactStore

    store = ArtifactStore(a.store)
    res = [store.verify(n) for n in store.names()]
    return [{"name": r.name, "ok": r.ok, "message": r.message} for r in res], 0 if all(r.ok for r in res) else 1


def _key_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("client", help="the client name the key maps to (1 to 64 of [A-Za-z0-9_.-])")


@command(COMMANDS, "keys new", "a fresh API key for `ensdef serve` and the line of its digest", _key_args)
def _keys_new(a: argparse.Namespace) -> Result:
    from ensdef.guard.keys import ApiKeys, new_key

    key, digest = new_key()
    ApiKeys({a.client: digest})  # the name is checked as the service will check it
    return {"client": a.client, "key": key, "serve_config": {"guard": {"api_keys": {a.client: digest}}}}, 0


@command(COMMANDS, "artifacts list", "print manifests", _store_arg)
def _list(a: argparse.Namespace) -> Result:
    from ensdef.store import ArtifactStore

    store = ArtifactStore(a.store)
    return [to_plain(store.manifest(n)) for n in store.names()], 0


def _copy_args(p: argparse.ArgumentParser) -> None:
    preset_store(p)
    p.add_argument("--from", dest="source", required=True, help="the store to copy from")
    p.add_argument("names", nargs="*", help="artifacts to copy (models or JSON artifacts)")
    p.add_argument("--pool", action="append", default=[], choices=POOL_NAMES, help="every member of a preset's pool")


@command(COMMANDS, "artifacts copy", "copy artifacts from another store (hashes checked)", _copy_args)
def _copy(a: argparse.Namespace) -> Result:
    from ensdef.presets import load_preset
    from ensdef.store import ArtifactStore
    from ensdef.training.pools import POST_STEPS, Pool, plan_pool

    names = list(a.names)
    if a.pool:
        preset = load_preset(a.preset)
        for pool in map(Pool, a.pool):
            names += [p.name for p in plan_pool(preset, pool)]
            names += [POST_STEPS[pool].artifact] if pool in POST_STEPS else []
    if not names:
        raise ConfigError("name the artifacts to copy, or --pool")
    store, source = ArtifactStore(a.store), ArtifactStore(a.source)
    copied = [c for n in names for c in store.copy_from(source, n)]
    return [{"name": n, "kind": "model" if store.exists(n) else "json"} for n in dict.fromkeys(copied)], 0


def _import_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--store", required=True)
    p.add_argument("file", help="TorchScript file, or a state_dict file with --architecture")
    p.add_argument("--architecture", default=None, help="registered architecture of a state_dict")
    p.add_argument("--preset", default="mnist5k", help="dataset, shape and test split come from here")
    p.add_argument("--name", default="target")
    data_args(p)


@command(COMMANDS, "artifacts import", "import your own target classifier", _import_args)
def _import(a: argparse.Namespace) -> Result:
    from ensdef.training.importing import import_target

    m = import_target(a.store, a.file, preset=a.preset, name=a.name, architecture=a.architecture, data_root=a.data_root)
    return to_plain(m), 0


def _select_args(p: argparse.ArgumentParser) -> None:
    preset_store(p)
    p.add_argument("--top", type=int, default=10, help="how many ranked teams to print")
    device_arg(p)
    data_args(p)


@command(COMMANDS, "select", "kappa matrix and kappa-ranked verifier teams (MODEF)", _select_args)
def _select(a: argparse.Namespace) -> Result:
    from ensdef.data import load_dataset
    from ensdef.models.inference import resolve_device
    from ensdef.presets import load_preset
    from ensdef.store import ArtifactStore
    from ensdef.training.selection import run_selection

    preset = load_preset(a.preset)
    data = load_dataset(preset.dataset, a.data_root or preset.data_root)
    sel = run_selection(ArtifactStore(a.store), preset, data.val, resolve_device(a.device))
    return {
        "members": list(sel.members),
        "kappa": [list(r) for r in sel.kappa],
        "threshold": sel.threshold,
        "ranked_count": len(sel.ranked),
        "all_count": len(sel.all_teams),
        "ranked_top": [
            {"team": [sel.members[i] for i in t], "mean_kappa": k}
            for t, k in list(zip(sel.ranked, sel.ranked_kappa, strict=True))[: a.top]
        ],
        "best_kappa_team": [sel.members[i] for i in sel.best],
        "best_kappa_val_accuracy": sel.best_accuracy,
        "policy": sel.policy.value,
    }, 0


def _decide_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--defense", required=True)
    preset_store(p)
    p.add_argument(
        "--input", required=True, help=".npy ([B,C,H,W], [C,H,W] or [H,W]; float in [0, 1] or uint8) or .png"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--diagnostics", action="store_true", help="include votes / team / p-value")
    device_arg(p)


@command(COMMANDS, "decide", "run a defense in process on images", _decide_args)
def _decide(a: argparse.Namespace) -> Result:
    from ensdef.defenses.registry import build_defense
    from ensdef.io.validation import Limits, read_images
    from ensdef.models.inference import resolve_device
    from ensdef.presets import load_preset
    from ensdef.rng import make_generator
    from ensdef.store import ArtifactStore

    store = ArtifactStore(a.store)
    shape = tuple(store.manifest("target").input_shape)
    defense = build_defense(a.defense, store, load_preset(a.preset), resolve_device(a.device))
    x = read_images(a.input, Limits(shape, max_images=1_000_000, max_bytes=2**40))  # type: ignore[arg-type]
    return [d.to_json(a.diagnostics) for d in defense.decide(x, make_generator(a.seed))], 0
