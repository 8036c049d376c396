"""``ensdef serve``: connect to a running Ray (or start a local one), make sure the preset's artifacts exist
(train the missing ones, or say which are missing), deploy every defense, and report the endpoints."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import ray
from ray import serve
from ray.serve.config import gRPCOptions

from deployments.app import absolute, application, served_defenses, survey  # noqa: F401  (survey: for ensdef serve)
from deployments.modes import DIRECT_INGRESS_FLAG, HAPROXY_FLAG, PORT_SPAN, SERVICE_ENV, IngressMode  # noqa: F401
from deployments.settings import ServeSettings
from ensdef.errors import ConfigError

log = logging.getLogger(__name__)
SERVICER = "ensdef.io.proto.ensdef_pb2_grpc.add_EnsdefServicer_to_server"
# Serve's 5 s proxy readiness check fails on a busy 2-core machine; a local Ray inherits these.
SMALL_MACHINE_ENV = {"RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S": "60", "RAY_SERVE_PROXY_HEALTH_CHECK_TIMEOUT_S": "60"}


def start_local(
    num_cpus: float | None = None,
    metrics_port: int | None = None,
    object_store_mb: int | None = None,
    env: Mapping[str, str] | None = None,
) -> None:
    """A new local Ray with Serve timeouts that hold on small, busy machines; Prometheus metrics on
    ``metrics_port`` (Ray picks one when None); an object store of ``object_store_mb`` (Ray's default: 30% of
    memory). ``env`` (:meth:`IngressMode.env`) is the environment of every Ray process started here (and
    not left in this process's own afterwards)."""
    for k, v in {**SMALL_MACHINE_ENV, **SERVICE_ENV}.items():
        os.environ.setdefault(k, v)
    extra: dict[str, int] = {"_metrics_export_port": metrics_port} if metrics_port else {}
    if object_store_mb:
        extra["object_store_memory"] = object_store_mb * 2**20
    env = dict(env or {})
    before = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        ray.init(address="local", num_cpus=num_cpus, log_to_driver=False, **extra)  # never a stale `ray start` one
    finally:  # Ray's processes have it; later subprocesses of this one (another Ray, a CLI) must not
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@dataclass(frozen=True)
class Endpoints:
    """Where the deployed application answers: ``http`` (a base URL) and ``grpc`` (``host:port``); with direct
    ingress, one per ingress replica in ``http_all`` and ``grpc_all`` (``http`` and ``grpc`` are the first)."""

    http: str
    grpc: str
    defenses: list[str]
    ray_address: str
    ingress: IngressMode = IngressMode.PROXY
    http_all: list[str] = field(default_factory=list)
    grpc_all: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "http": self.http,
            "grpc": self.grpc,
            "defenses": self.defenses,
            "ray_address": self.ray_address,
            "ingress": self.ingress.value,
            **({"http_all": self.http_all, "grpc_all": self.grpc_all} if len(self.http_all) > 1 else {}),
        }


def wait_for_ports(host: str, ports: Iterable[int], timeout_s: float = 20.0) -> None:
    """Wait until every port can be bound on ``host`` (a Ray that a stopped ``ensdef serve`` started lets go
    of its ports a few seconds after that process ends); raise :class:`ConfigError` naming the port after
    ``timeout_s``."""
    import socket

    deadline = time.monotonic() + timeout_s
    for port in ports:
        while True:
            with socket.socket() as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    sock.bind((host, port))
                    break
                except OSError:
                    if time.monotonic() >= deadline:
                        raise ConfigError(
                            f"port {port} on {host} is in use (another ensdef serve?); stop it or choose "
                            "--http-port / --grpc-port"
                        ) from None
            log.info("port %d is still in use; waiting for it", port)
            time.sleep(1.0)


def connect(
    address: str | None,
    num_cpus: float | None = None,
    env: Mapping[str, str] | None = None,
    metrics_port: int | None = None,
) -> str:
    """Join the Ray cluster at ``address`` (or the one ``ray start`` left running); start a local one, with
    ``env`` in its processes' environment and Prometheus metrics on ``metrics_port``, when none is reachable or
    ``address`` is ``local``. Returns the address."""
    if not ray.is_initialized() and address == "local":
        start_local(num_cpus, metrics_port, env=env)
    elif not ray.is_initialized():
        try:
            ray.init(address=address or "auto", log_to_driver=False)
        except ConnectionError:
            if address:
                raise
            log.info("no running Ray found; starting a local one")
            start_local(num_cpus, metrics_port, env=env)
    return ray.get_runtime_context().gcs_address


def deploy_proxies(host: str, http_port: int, grpc_port: int, proxy_location: str = "EveryNode") -> None:
    """Start Serve with its HTTP and gRPC proxies (no-op options if Serve already runs). ``HeadOnly`` when
    several nodes share one machine (their proxies would want the same ports)."""
    serve.start(
        proxy_location=proxy_location,
        http_options={"host": host, "port": http_port},
        grpc_options=gRPCOptions(port=grpc_port, grpc_servicer_functions=[SERVICER]),
    )


def deploy(
    s: ServeSettings,
    host: str = "127.0.0.1",
    http_port: int = 8000,
    grpc_port: int = 9000,
    proxy_location: str = "EveryNode",
    ingress: IngressMode | None = None,
    defenses: dict[str, list[str]] | None = None,
) -> Endpoints:
    """Start Serve and deploy the application (replacing one of the same name). Clients connect on
    ``http_port`` and ``grpc_port`` to HAProxy, or to Serve's proxies, or with ``ingress`` direct to the
    ingress replicas there (Serve keeps a proxy as the fallback for an application without running replicas:
    it gets the ports :data:`PORT_SPAN` above). ``defenses`` (defense -> member names, from :func:`survey`)
    skips a second survey of the store. ``ingress`` None: the mode the cluster was started with. Raises when
    HAProxy or direct ingress is asked of a cluster that was not started with it."""
    if ingress is None:
        ingress = cluster_mode()
    if ingress is IngressMode.HAPROXY and ray.get(_environ.remote(HAPROXY_FLAG)) != "1":
        raise ConfigError(
            f"ingress haproxy asked, but the Ray cluster was not started with {HAPROXY_FLAG}=1 "
            "(start it with the environment `ensdef ray-env` prints), or use ingress proxy"
        )
    shift = PORT_SPAN if ingress is IngressMode.DIRECT else 0
    deploy_proxies(host, http_port + shift, grpc_port + shift, proxy_location)
    t0 = time.perf_counter()
    s = absolute(s)
    defenses = defenses or served_defenses(s)  # surveyed once: the app and the printed endpoints agree
    serve.run(application(s, defenses), name=s.application, route_prefix="/", blocking=False)
    log.info("deployed %s in %.1fs", s.application, time.perf_counter() - t0)
    address = ray.get_runtime_context().gcs_address
    if ingress is IngressMode.HAPROXY:  # HAProxy balances over the replicas on the clients' ports
        return Endpoints(f"http://{host}:{http_port}", f"{host}:{grpc_port}", sorted(defenses), address, ingress)
    direct = ingress_targets(s.application, 60.0 if ingress is IngressMode.DIRECT else 0.0)
    if direct is None and ingress is IngressMode.DIRECT:
        raise ConfigError(
            f"direct ingress asked, but the Ray cluster serves through proxies: start it with "
            f"{DIRECT_INGRESS_FLAG}=1 (`ensdef ray-env --ingress direct`), or use ingress proxy"
        )
    if direct is None:
        return Endpoints(f"http://{host}:{http_port}", f"{host}:{grpc_port}", sorted(defenses), address)
    http_all = [f"http://{host}:{p}" for p in direct["HTTP"]]
    grpc_all = [f"{host}:{p}" for p in direct["gRPC"]]
    return Endpoints(http_all[0], grpc_all[0], sorted(defenses), address, IngressMode.DIRECT, http_all, grpc_all)


@ray.remote(num_cpus=0)
def _environ(name: str) -> str | None:
    """``name`` in the environment of the cluster's worker processes (what Serve's actors see)."""
    return os.environ.get(name)


def cluster_mode() -> IngressMode:
    """The ingress mode the connected Ray cluster was started with (:func:`deployments.modes.mode_env`)."""
    if ray.get(_environ.remote(HAPROXY_FLAG)) == "1":
        return IngressMode.HAPROXY
    return IngressMode.DIRECT if ray.get(_environ.remote(DIRECT_INGRESS_FLAG)) == "1" else IngressMode.PROXY


def ingress_targets(app: str, timeout_s: float = 0.0) -> dict[str, list[int]] | None:
    """Protocol (``HTTP``, ``gRPC``) -> ports of ``app``'s ingress replicas when the cluster runs Serve's direct
    ingress; None when clients go through Serve's proxies (whose target groups name no application). Polls up
    to ``timeout_s`` for the replicas' ports."""
    from ray.serve.context import _get_global_client  # Serve's own client; `serve status` reads the same details

    deadline = time.monotonic() + timeout_s
    while True:
        groups = _get_global_client().get_serve_details().get("target_groups", [])
        ours = {g["protocol"]: sorted(t["port"] for t in g["targets"]) for g in groups if g["app_name"] == app}
        if ours.get("HTTP") and ours.get("gRPC"):
            return ours
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.5)
