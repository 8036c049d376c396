"""``ensdef`` command line: a thin shell that parses arguments, calls the library and prints.

Every command takes ``--json`` for machine-readable output on stdout; logs go to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ensdef.config import ConfigError, to_plain

Handler = Callable[[argparse.Namespace], tuple[Any, int]]
ADDRESS_HELP = "Ray address (local: a new local Ray); default: a running cluster, else a new local one"
POOL_NAMES = ("target", "verifiers", "denoisers", "reformers", "tempnets", "rls", "baselines")  # ensdef.pools.Pool
COMMANDS: dict[str, Handler] = {}


def command(name: str) -> Callable[[Handler], Handler]:
    def deco(fn: Handler) -> Handler:
        COMMANDS[name] = fn
        return fn

    return deco


# --- data / models ----------------------------------------------------------------------------------
@command("data info")
def _data_info(a: argparse.Namespace) -> tuple[Any, int]:
    from ensdef.data import load_dataset

    return load_dataset(a.dataset, a.data_root, a.download).info(), 0


@command("models list")
def _models_list(a: argparse.Namespace) -> tuple[Any, int]:
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


# --- training -----------------------------------------------------------------------------------------
@command("train")
def _train(a: argparse.Namespace) -> tuple[Any, int]:
    from ensdef.data import load_dataset
    from ensdef.pools import Pool, train_pools
    from ensdef.presets import load_preset
    from ensdef.store import ArtifactStore

    preset = load_preset(a.preset)
    data = load_dataset(preset.dataset, a.data_root or preset.data_root, a.download)
    pools = list(Pool) if a.pool == "all" else [Pool(a.pool)]
    return train_pools(preset, data, ArtifactStore(a.store), pools, a.skip_existing), 0


# --- artifacts ----------------------------------------------------------------------------------------
@command("artifacts verify")
def _verify(a: argparse.Namespace) -> tuple[Any, int]:
    from ensdef.store import ArtifactStore

    store = ArtifactStore(a.store)
    res = [store.verify(n) for n in store.names()]
    return [{"name": r.name, "ok": r.ok, "message": r.message} for r in res], 0 if all(r.ok for r in res) else 1


@command("artifacts list")
def _list(a: argparse.Namespace) -> tuple[Any, int]:
    from ensdef.store import ArtifactStore

    store = ArtifactStore(a.store)
    return [to_plain(store.manifest(n)) for n in store.names()], 0


@command("artifacts import")
def _import(a: argparse.Namespace) -> tuple[Any, int]:
    from ensdef.importing import import_target

    m = import_target(a.store, a.file, preset=a.preset, name=a.name, architecture=a.architecture, data_root=a.data_root)
    return to_plain(m), 0


# --- MODEF ----------------------------------------------------------------------------------------------
@command("select")
def _select(a: argparse.Namespace) -> tuple[Any, int]:
    from ensdef.data import load_dataset
    from ensdef.presets import load_preset
    from ensdef.selection import run_selection
    from ensdef.store import ArtifactStore

    preset = load_preset(a.preset)
    data = load_dataset(preset.dataset, a.data_root or preset.data_root)
    sel = run_selection(ArtifactStore(a.store), preset, data.val)
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


@command("decide")
def _decide(a: argparse.Namespace) -> tuple[Any, int]:
    from ensdef.defenses.registry import build_defense
    from ensdef.images import read_images
    from ensdef.presets import load_preset
    from ensdef.rng import make_generator
    from ensdef.store import ArtifactStore

    defense = build_defense(a.defense, ArtifactStore(a.store), load_preset(a.preset))
    x = read_images(a.input)
    decisions = defense.decide(x, make_generator(a.seed))
    return [
        {
            "label": None if d.abstained else d.label,
            "flagged": d.flagged,
            "abstained": d.abstained,
            **({"diagnostics": dict(d.diagnostics)} if a.diagnostics else {}),
        }
        for d in decisions
    ], 0


@command("certify")
def _certify(a: argparse.Namespace) -> tuple[Any, int]:
    from ensdef.certify_run import certify_split
    from ensdef.data import load_dataset
    from ensdef.presets import load_preset
    from ensdef.store import ArtifactStore

    preset = load_preset(a.preset)
    data = load_dataset(preset.dataset, a.data_root or preset.data_root)
    c = preset.noisy_vote
    return certify_split(
        ArtifactStore(a.store),
        preset,
        data.test.subset(range(0, len(data.test), max(1, len(data.test) // a.count))[: a.count]),
        n0=a.n0 or c.n0,
        n=a.n or c.n,
        alpha=a.alpha or c.alpha,
        sigma=a.sigma or c.sigma,
        seed=a.seed,
        out=a.out,
        radii=a.radii,
    ), 0


@command("noisy-report")
def _noisy_report(a: argparse.Namespace) -> tuple[Any, int]:
    from ensdef.data import load_dataset
    from ensdef.noisy_report import summary
    from ensdef.presets import load_preset
    from ensdef.store import ArtifactStore

    preset = load_preset(a.preset)
    data = load_dataset(preset.dataset, a.data_root or preset.data_root)
    return summary(ArtifactStore(a.store), preset, data, a.seed), 0


@command("rls-compare")
def _rls_compare(a: argparse.Namespace) -> tuple[Any, int]:
    from ensdef.data import load_dataset
    from ensdef.presets import load_preset
    from ensdef.rls_compare import compare
    from ensdef.store import ArtifactStore

    preset = load_preset(a.preset)
    data = load_dataset(preset.dataset, a.data_root or preset.data_root)
    return compare(ArtifactStore(a.store), preset, data, a.name, a.seed), 0


# --- evaluation -----------------------------------------------------------------------------------------
@command("evaluate")
def _evaluate(a: argparse.Namespace) -> tuple[Any, int]:
    import dataclasses

    from ensdef import report
    from ensdef.data import load_dataset
    from ensdef.harness import Harness, Threat
    from ensdef.presets import load_preset
    from ensdef.store import ArtifactStore

    preset = load_preset(a.preset)
    data = load_dataset(preset.dataset, a.data_root or preset.data_root)
    changes = {
        k: v
        for k, v in {
            "defenses": _csv(a.defenses),
            "static_attacks": _csv(a.attacks),
            "per_class": a.per_class,
            "benign_n": a.benign_n,
            "seed": a.seed,
            "eot": a.eot,
            "adaptive_iter": a.adaptive_steps,
        }.items()
        if v is not None
    }
    cfg = dataclasses.replace(preset.evaluation, **changes)
    threats = tuple(Threat(t) for t in _csv(a.threats))
    harness = Harness(ArtifactStore(a.store), preset, data, cfg, threats, use_cache=not a.no_cache)
    rep = harness.run()
    paths = report.write(rep, a.out)
    failed = [c for c in rep.extra["sanity"] if not c["passed"] and c["severity"] == "fail"]
    out = {
        "out": {k: str(v) for k, v in paths.items()},
        "sanity": "FAIL" if failed else "PASS",
        "failed_checks": failed,
        "cache": rep.extra["cache"],
        "summary": report.summary(rep),
    }
    return out, 1 if failed and a.strict else 0


@command("serve")
def _serve(a: argparse.Namespace) -> tuple[Any, int]:
    """Hands off to the Ray layer (``deployments.launch``); the library itself never imports Ray."""
    import importlib
    import time

    launch = importlib.import_module("deployments.launch")
    settings_mod = importlib.import_module("deployments.settings")
    args: dict[str, Any] = {}
    http, grpc_port, proxies = {"host": a.host, "port": a.http_port}, a.grpc_port, "EveryNode"
    if a.config:
        cfg = importlib.import_module("deployments.config").load_serve_config(Path(a.config))
        args = cfg.settings.to_dict()
        http, grpc_port, proxies = {**http, **cfg.http}, cfg.grpc_port, cfg.proxy_location
    for key, value in (
        ("preset", a.preset),
        ("store", a.store),
        ("packing", a.packing),
        ("admin_token", a.admin_token),
    ):
        if value is not None:
            args[key] = value
    if a.defenses:
        args["defenses"] = list(_csv(a.defenses) or ())
    if a.detach and (a.address == "local" or not (a.address or os.environ.get("RAY_ADDRESS"))):
        raise ValueError(
            "--detach needs the Ray cluster to deploy onto: --address ADDR, or --address auto for the one "
            "`ray start --head` runs here (a Ray this command started would end with it)"
        )
    settings = settings_mod.ServeSettings.from_dict(args)
    servable, missing = launch.survey(settings)
    if missing and a.train_missing:
        launch.train_missing(settings, a.data_root)
        servable, missing = launch.survey(settings)
    if missing and (settings.defenses or not servable):
        raise FileNotFoundError(
            "missing artifacts (run with --train-missing, or `ensdef train`): "
            + "; ".join(f"{k}: {v}" for k, v in missing.items())
        )
    with contextlib.redirect_stdout(sys.stderr):  # Ray's start-up lines; stdout stays the result
        ingress = launch.IngressMode(a.ingress)
        env = (
            launch.direct_ingress_env(int(http["port"]), int(grpc_port))
            if ingress is launch.IngressMode.DIRECT
            else None
        )
        address = launch.connect(a.address, a.num_cpus, env)
        ep = launch.deploy(
            settings, http["host"], int(http["port"]), int(grpc_port), a.proxy_location or proxies, ingress
        )
    out = {**ep.to_json(), "not_served": missing}
    if a.detach:  # the application stays on the cluster after this process ends
        return {**out, "detached": True, "ray_address": address}, 0
    print(json.dumps(out, indent=2) if a.json else _render(out), flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        return {"stopped": True}, 0


def _ray_layer(a: argparse.Namespace, module: str) -> Any:
    """Connect to (or start) Ray and import a module of the Ray layer; the library never imports Ray."""
    import importlib

    importlib.import_module("deployments.launch").connect(a.address, a.num_cpus)
    return importlib.import_module(module)


def _tune_run(a: argparse.Namespace) -> Any:
    import importlib

    return importlib.import_module("tune.pools").TuneRun(a.storage, a.name, a.gpu_as, not a.no_resume)


@command("tune")
def _tune(a: argparse.Namespace) -> tuple[Any, int]:
    """Train pools as parallel Ray Tune trials (``--sweep``: an ASHA hyper-parameter search per member)."""
    from ensdef.pools import Pool
    from ensdef.presets import load_preset
    from ensdef.store import ArtifactStore

    preset, store = _with_data_root(load_preset(a.preset), a), ArtifactStore(a.store)
    with contextlib.redirect_stdout(sys.stderr):  # Tune's progress tables; stdout stays the result
        if a.sweep:
            if a.pool == "all":
                raise ConfigError("--sweep needs one --pool")
            return _ray_layer(a, "tune.sweeps").sweep_pool(preset, store, Pool(a.pool), _tune_run(a)), 0
        pools = list(Pool) if a.pool == "all" else [Pool(a.pool)]
        return _ray_layer(a, "tune.pools").tune_pools(preset, store, pools, _tune_run(a)), 0


@command("tune-teams")
def _tune_teams(a: argparse.Namespace) -> tuple[Any, int]:
    """MODEF team-selection sweep on Ray Tune; the winner becomes the store's ``teams-verifiers``."""
    from ensdef.presets import load_preset
    from ensdef.store import ArtifactStore

    preset = _with_data_root(load_preset(a.preset), a)
    with contextlib.redirect_stdout(sys.stderr):
        return _ray_layer(a, "tune.teams").tune_teams(preset, ArtifactStore(a.store), _tune_run(a)), 0


def _with_data_root(preset: Any, a: argparse.Namespace) -> Any:
    import dataclasses

    return dataclasses.replace(preset, data_root=a.data_root) if a.data_root else preset


def _csv(value: str | None) -> tuple[str, ...] | None:
    return None if value is None else tuple(v for v in value.split(",") if v)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ensdef", description=__doc__)
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="cmd", required=True)

    def common(sp: argparse.ArgumentParser) -> argparse.ArgumentParser:
        sp.add_argument("--json", action="store_true", help="machine-readable output")
        return sp

    def data_args(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--data-root", default=None, help="folder with torchvision dataset files")
        sp.add_argument("--download", action="store_true", help="allow torchvision to download missing files")

    data = sub.add_parser("data", help="datasets").add_subparsers(dest="sub", required=True)
    di = common(data.add_parser("info", help="split sizes, shape, classes"))
    di.add_argument("--dataset", default="mnist5k")
    data_args(di)

    models = sub.add_parser("models", help="model zoo").add_subparsers(dest="sub", required=True)
    common(models.add_parser("list", help="registered architectures"))

    tr = common(sub.add_parser("train", help="train a preset's pools into an artifact store"))
    tr.add_argument("--preset", default="mnist5k")
    tr.add_argument(
        "--pool",
        default="all",
        choices=["all", *POOL_NAMES],
    )
    tr.add_argument("--store", required=True)
    tr.add_argument("--skip-existing", action="store_true", help="keep artifacts that exist and verify")
    data_args(tr)

    art = sub.add_parser("artifacts", help="artifact store").add_subparsers(dest="sub", required=True)
    common(art.add_parser("verify", help="check every artifact's hash")).add_argument("--store", required=True)
    common(art.add_parser("list", help="print manifests")).add_argument("--store", required=True)
    im = common(art.add_parser("import", help="import your own target classifier"))
    im.add_argument("--store", required=True)
    im.add_argument("file", help="TorchScript file, or a state_dict file with --architecture")
    im.add_argument("--architecture", default=None, help="registered architecture of a state_dict")
    im.add_argument("--preset", default="mnist5k", help="dataset, shape and test split come from here")
    im.add_argument("--name", default="target")
    data_args(im)

    se = common(sub.add_parser("select", help="kappa matrix and kappa-ranked verifier teams (MODEF)"))
    se.add_argument("--preset", default="mnist5k")
    se.add_argument("--store", required=True)
    se.add_argument("--top", type=int, default=10, help="how many ranked teams to print")
    data_args(se)

    de = common(sub.add_parser("decide", help="run a defense in process on images"))
    de.add_argument("--defense", required=True)
    de.add_argument("--store", required=True)
    de.add_argument("--preset", default="mnist5k")
    de.add_argument("--input", required=True, help=".npy ([B,C,H,W], [C,H,W] or [H,W] in [0, 1]) or .png")
    de.add_argument("--seed", type=int, default=0)
    de.add_argument("--diagnostics", action="store_true", help="include votes / team / p-value")

    ce = common(sub.add_parser("certify", help="randomized-smoothing certificates of the noisy-vote ensemble"))
    ce.add_argument("--preset", default="mnist5k")
    ce.add_argument("--store", required=True)
    ce.add_argument(
        "--count", type=int, default=100, help="N test images, evenly spaced (the split is ordered by class)"
    )
    ce.add_argument("--n", type=int, default=None, help="estimation samples (preset default)")
    ce.add_argument("--n0", type=int, default=None, help="selection samples (preset default)")
    ce.add_argument("--alpha", type=float, default=None)
    ce.add_argument("--sigma", type=float, default=None)
    ce.add_argument("--radii", type=float, nargs="+", default=[0.0, 0.25, 0.5, 1.0])
    ce.add_argument("--out", default=None, help="folder for certify.json and certified_accuracy.png")
    ce.add_argument("--seed", type=int, default=0)
    data_args(ce)

    nr = common(sub.add_parser("noisy-report", help="noisy-vote accuracy figures (seed 003)"))
    nr.add_argument("--preset", default="mnist5k")
    nr.add_argument("--store", required=True)
    nr.add_argument("--seed", type=int, default=0)
    data_args(nr)

    rc = common(sub.add_parser("rls-compare", help="RLS against a single sub-model and dropout (seed 001)"))
    rc.add_argument("--preset", default="mnist5k")
    rc.add_argument("--store", required=True)
    rc.add_argument("--name", default="rls-vgg")
    rc.add_argument("--seed", type=int, default=0)
    data_args(rc)

    ev = common(sub.add_parser("evaluate", help="static, gray-box and adaptive evaluation with a report"))
    ev.add_argument("--preset", default="mnist5k")
    ev.add_argument("--store", required=True)
    ev.add_argument("--out", required=True, help="folder for report.json, report.md and the PNG plots")
    ev.add_argument("--defenses", default=None, help="comma list (default: the preset's evaluation.defenses)")
    ev.add_argument("--attacks", default=None, help="static attack set (default: the preset's)")
    ev.add_argument("--threats", default="static,graybox,adaptive", help="comma list of static, graybox, adaptive")
    ev.add_argument("--per-class", type=int, default=None, help="attacked images per class (MODEF: 10)")
    ev.add_argument("--benign-n", type=int, default=None, help="benign test images")
    ev.add_argument("--seed", type=int, default=None)
    ev.add_argument("--eot", type=int, default=None, help="EOT samples per gradient step (adaptive)")
    ev.add_argument("--adaptive-steps", type=int, default=None, help="steps of the adaptive attack")
    ev.add_argument("--no-cache", action="store_true", help="recompute every cell (and write no cache)")
    ev.add_argument("--strict", action="store_true", help="exit 1 when a sanity check fails")
    data_args(ev)

    for cmd, text in (
        ("tune", "train pools as parallel Ray Tune trials (resumable; --sweep for ASHA searches)"),
        ("tune-teams", "MODEF team-selection sweep on Ray Tune; saves the winning kappa-ranked list"),
    ):
        tu = common(sub.add_parser(cmd, help=text))
        tu.add_argument("--preset", default="mnist5k")
        tu.add_argument("--store", required=True)
        if cmd == "tune":
            tu.add_argument("--pool", default="all", choices=["all", *(p for p in POOL_NAMES)])
            tu.add_argument("--sweep", action="store_true", help="ASHA search over the preset's tune.sweeps[pool]")
        tu.add_argument("--storage", default=None, help="Tune storage path or URI (default: <store>/_tune)")
        tu.add_argument("--name", default=None, help="experiment name (default: derived from the plans)")
        tu.add_argument("--no-resume", action="store_true", help="start afresh instead of restoring")
        tu.add_argument("--gpu-as", default=None, help="request this custom resource instead of GPUs")
        tu.add_argument("--address", help=ADDRESS_HELP)
        tu.add_argument("--num-cpus", type=float, default=None, help="CPUs of a new local Ray")
        tu.add_argument("--data-root", default=None, help="folder with torchvision dataset files")

    sv = common(sub.add_parser("serve", help="deploy every defense behind HTTP and gRPC on Ray Serve"))
    sv.add_argument("--preset", default=None)
    sv.add_argument("--store", default=None)
    sv.add_argument("--config", help="a Serve config YAML (deployments/serve.yaml); flags override its args")
    sv.add_argument("--defenses", help="comma-separated; default: every defense whose artifacts exist")
    sv.add_argument(
        "--packing",
        choices=["none", "pool", "ingress"],
        default=None,
        help="none: one actor per model; pool: one per pool; ingress: every member in the ingress replica",
    )
    sv.add_argument("--admin-token", default=None)
    sv.add_argument("--host", default="127.0.0.1")
    sv.add_argument("--http-port", type=int, default=8000)
    sv.add_argument("--grpc-port", type=int, default=9000)
    sv.add_argument("--address", help=ADDRESS_HELP)
    sv.add_argument("--num-cpus", type=float, default=None, help="CPUs of a new local Ray")
    sv.add_argument("--train-missing", action="store_true", help="train the preset's missing artifacts first")
    sv.add_argument(
        "--proxy-location", choices=["EveryNode", "HeadOnly"], default=None, help="HeadOnly: nodes share a machine"
    )
    sv.add_argument("--detach", action="store_true", help="return after deploying (needs --address: an external Ray)")
    sv.add_argument(
        "--ingress",
        choices=["proxy", "direct"],
        default="proxy",
        help="proxy: Serve's HTTP/gRPC proxies; direct: the ingress replicas listen themselves (one hop less; "
        "a local Ray started here gets it, an external one needs RAY_SERVE_ENABLE_DIRECT_INGRESS=1)",
    )
    data_args(sv)
    return p


def _render(result: Any) -> str:
    if isinstance(result, list):
        return "\n".join(_render(r) for r in result)
    if isinstance(result, dict):
        return "  ".join(f"{k}={json.dumps(v) if isinstance(v, dict | list) else v}" for k, v in result.items())
    return str(result)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    key = f"{args.cmd} {args.sub}" if getattr(args, "sub", None) else args.cmd
    try:
        result, code = COMMANDS[key](args)
    except (ConfigError, FileNotFoundError, KeyError, ValueError, RuntimeError, ConnectionError) as e:
        msg = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
        if getattr(args, "json", False):
            print(json.dumps({"error": msg, "type": type(e).__name__}))
        else:
            print(f"ensdef: error: {msg}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2) if args.json else _render(result))
    return code


if __name__ == "__main__":
    sys.exit(main())
