"""``ensdef serve``, registered by this layer under the ``ensdef.commands`` entry-point group (the library
never imports Ray): connect to (or start) Ray, train what is missing when asked, deploy, print the endpoints."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from deployments.modes import SERVICE_ENV, IngressMode, mode_env
from ensdef.cli import render
from ensdef.cli.command import Command, Result, csv, data_args, ray_args
from ensdef.errors import ConfigError, NotTrained

log = logging.getLogger(__name__)


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
    p.add_argument("--metrics-port", type=int, default=None, help="Prometheus metrics of a Ray this command starts")
    p.add_argument("--train-missing", action="store_true", help="train the preset's missing artifacts first")
    p.add_argument(
        "--proxy-location", choices=["EveryNode", "HeadOnly"], default=None, help="HeadOnly: nodes share a machine"
    )
    p.add_argument("--detach", action="store_true", help="return after deploying (needs --address: an external Ray)")
    p.add_argument(
        "--ingress",
        choices=[m.value for m in IngressMode],
        default=None,
        help="haproxy: Serve's high-throughput mode, HAProxy in front of the ingress replicas; proxy: Serve's "
        "Python HTTP/gRPC proxies; direct: the ingress replicas listen themselves. A local Ray started here gets "
        "what the mode needs (default: haproxy); an external one must have been started with what `ensdef "
        "ray-env` prints (default: the mode it was started with)",
    )
    data_args(p)


def _serve(a: argparse.Namespace) -> Result:
    from deployments import launch, progressive
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
    ingress = IngressMode(a.ingress) if a.ingress else None  # None: the cluster's own mode
    started = ingress or IngressMode.HAPROXY  # what a Ray started here gets
    http_port = int(http["port"])
    target = progressive.Target(
        a.address,
        a.num_cpus,
        http["host"],
        http_port,
        int(grpc_port),
        a.proxy_location or proxies,
        ingress,
        started.env(http_port, int(grpc_port)),
        a.metrics_port,
    )
    if a.detach and target.starts_ray:
        raise ConfigError(
            "--detach needs the Ray cluster to deploy onto: --address ADDR, or --address auto for the one "
            "`ray start --head` runs here (a Ray this command started would end with it)"
        )
    settings = ServeSettings.from_dict(args)
    servable, missing = launch.survey(settings)
    job = progressive.plan_missing(settings, missing, a.data_root) if missing and a.train_missing else None
    if job is None and missing and (settings.defenses or not servable):
        raise NotTrained(
            "missing artifacts (run with --train-missing, or `ensdef train`): "
            + "; ".join(f"{k}: {v}" for k, v in missing.items())
        )
    trains = job is not None
    if job is not None and a.detach:  # nothing stays behind to train once this process returns
        log.info("%s", describe(job.steps, job.progress.factor))
        job.run()
        servable, job = launch.survey(settings)[0], None
    serving = progressive.Progressive(settings, target)
    try:
        with contextlib.redirect_stdout(sys.stderr):  # Ray's start-up lines; stdout stays the result
            ep = serving.run(servable, job)
    except KeyboardInterrupt:
        if not a.detach:
            serving.stop()
        raise
    if trains:
        missing = launch.survey(settings)[1]
    out = {**ep.to_json(), "not_served": missing}
    if a.detach:  # the application stays on the cluster after this process ends
        return {**out, "detached": True, "ray_address": ep.ray_address}, 0
    print(json.dumps(out, indent=2) if a.json else render(out), flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        serving.stop()  # a second Ctrl-C stops at once
        return {"stopped": True}, 0


SERVE = Command("serve", "deploy every defense behind HTTP and gRPC on Ray Serve", _serve_args, _serve)


def _ray_env_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ingress", choices=[m.value for m in IngressMode], default=IngressMode.HAPROXY.value)
    p.add_argument("--http-port", type=int, default=8000)
    p.add_argument("--grpc-port", type=int, default=9000)


def _ray_env(a: argparse.Namespace) -> Result:
    """``KEY=VALUE`` words for ``env $(ensdef ray-env) ray start ...``: the service's and the mode's."""
    return {**SERVICE_ENV, **mode_env(IngressMode(a.ingress), a.http_port, a.grpc_port)}, 0


RAY_ENV = Command(
    "ray-env",
    "the environment `ray start` needs for an ingress mode (env $(ensdef ray-env) ray start --head)",
    _ray_env_args,
    _ray_env,
)
