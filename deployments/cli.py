"""``ensdef serve``, registered by this layer under the ``ensdef.commands`` entry-point group (the library
never imports Ray): connect to (or start) Ray, train what is missing when asked, deploy, print the endpoints."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ensdef.cli import render
from ensdef.cli.command import Command, Result, csv, data_args, ray_args
from ensdef.errors import ConfigError, NotTrained

if TYPE_CHECKING:
    from ensdef.training.schedule import Step

log = logging.getLogger(__name__)
REDEPLOY_AFTER_S = 60.0  # a defense made servable waits for the next step when that one is shorter


def _serve_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default=None)
    p.add_argument("--store", default=None)
    p.add_argument("--config", help="a Serve config YAML (deployments/serve.yaml); flags override its args")
    p.add_argument("--defenses", help="comma-separated; default: every defense whose artifacts exist")
    p.add_argument(
        "--packing",
        choices=["none", "pool", "ingress"],
        default=None,
        help="none: one actor per model; pool: one per pool; ingress: every member in the ingress replica",
    )
    p.add_argument("--admin-token", default=None)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--http-port", type=int, default=8000)
    p.add_argument("--grpc-port", type=int, default=9000)
    ray_args(p)
    p.add_argument("--train-missing", action="store_true", help="train the preset's missing artifacts first")
    p.add_argument(
        "--proxy-location", choices=["EveryNode", "HeadOnly"], default=None, help="HeadOnly: nodes share a machine"
    )
    p.add_argument("--detach", action="store_true", help="return after deploying (needs --address: an external Ray)")
    p.add_argument(
        "--ingress",
        choices=["proxy", "direct"],
        default="proxy",
        help="proxy: Serve's HTTP/gRPC proxies; direct: the ingress replicas listen themselves (one hop less; "
        "a local Ray started here gets it, an external one needs RAY_SERVE_ENABLE_DIRECT_INGRESS=1)",
    )
    data_args(p)


def _serve(a: argparse.Namespace) -> Result:
    from deployments import launch
    from deployments.config import load_serve_config
    from deployments.settings import ServeSettings
    from ensdef.training.schedule import describe

    args: dict[str, Any] = {}
    http, grpc_port, proxies = {"host": a.host, "port": a.http_port}, a.grpc_port, "EveryNode"
    if a.config:
        cfg = load_serve_config(Path(a.config))
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
        args["defenses"] = list(csv(a.defenses) or ())
    if a.detach and (a.address == "local" or not (a.address or os.environ.get("RAY_ADDRESS"))):
        raise ConfigError(
            "--detach needs the Ray cluster to deploy onto: --address ADDR, or --address auto for the one "
            "`ray start --head` runs here (a Ray this command started would end with it)"
        )
    settings = ServeSettings.from_dict(args)
    servable, missing = launch.survey(settings)
    job = launch.plan_missing(settings, missing, a.data_root) if missing and a.train_missing else None
    if job is None and missing and (settings.defenses or not servable):
        raise NotTrained(
            "missing artifacts (run with --train-missing, or `ensdef train`): "
            + "; ".join(f"{k}: {v}" for k, v in missing.items())
        )
    if job is not None:
        log.info("%s", describe(job.steps, job.progress.factor))
    if job is not None and a.detach:  # nothing stays behind to train once this process returns
        job.run()
        servable, missing = launch.survey(settings)
        job = None
    ingress = launch.IngressMode(a.ingress)
    http_port, host = int(http["port"]), http["host"]
    env = launch.direct_ingress_env(http_port, int(grpc_port)) if ingress is launch.IngressMode.DIRECT else None
    live: dict[str, Any] = {}

    def go_live(defenses: dict[str, list[str]]) -> None:
        """Start Ray on the first call, then deploy (or redeploy) ``defenses``; print where they answer."""
        with contextlib.redirect_stdout(sys.stderr):  # Ray's start-up lines; stdout stays the result
            if "address" not in live:
                if a.address == "local" or not (a.address or os.environ.get("RAY_ADDRESS")):
                    launch.wait_for_ports(host, [http_port, int(grpc_port)])  # a Ray of ours will bind them
                live["address"] = launch.connect(a.address, a.num_cpus, env)
            ep = launch.deploy(
                settings, host, http_port, int(grpc_port), a.proxy_location or proxies, ingress, defenses
            )
        first = "endpoints" not in live
        live["endpoints"] = ep
        if first and job is not None:
            log.info("serving %s at %s and %s; the rest trains", ", ".join(ep.defenses), ep.http, ep.grpc)
        elif job is not None:
            log.info("now serving %s", ", ".join(ep.defenses))

    pending: set[str] = set()

    def after_step(step: Step) -> None:
        """Deploy what ``step`` made servable, unless the next step is short: then after that one (each
        deployment restarts the replicas, which costs CPU the training needs)."""
        assert job is not None
        pending.update(step.unlocks)
        rest = job.steps[job.steps.index(step) + 1 :]
        soon = bool(rest) and rest[0].cost * job.progress.factor < REDEPLOY_AFTER_S
        if pending and not (soon and "endpoints" in live):
            go_live(launch.survey(settings)[0])
            pending.clear()

    t0 = time.monotonic()
    if servable:
        go_live(servable)
    if job is not None:
        job.run(after_step)
        servable, missing = launch.survey(settings)
        log.info(
            "trained %d members in %.1f min; serving %s",
            sum(len(s.todo) for s in job.steps),
            (time.monotonic() - t0) / 60,
            ", ".join(sorted(servable)),
        )
    ep = live["endpoints"]
    out = {**ep.to_json(), "not_served": missing}
    if a.detach:  # the application stays on the cluster after this process ends
        return {**out, "detached": True, "ray_address": live["address"]}, 0
    print(json.dumps(out, indent=2) if a.json else render(out), flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        return {"stopped": True}, 0


SERVE = Command("serve", "deploy every defense behind HTTP and gRPC on Ray Serve", _serve_args, _serve)
