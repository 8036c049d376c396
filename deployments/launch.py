"""``ensdef serve``: connect to a running Ray (or start a local one), make sure the preset's artifacts exist
(train the missing ones, or say which are missing), deploy every defense, and report the endpoints."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import Any

import ray
from ray import serve
from ray.serve.config import gRPCOptions

from deployments.app import absolute, application, served_defenses, survey  # noqa: F401  (survey: for ensdef serve)
from deployments.settings import ServeSettings
from ensdef.defenses.registry import TEAMS_ARTIFACT
from ensdef.presets import load_preset
from ensdef.store import ArtifactStore

log = logging.getLogger(__name__)
SERVICER = "ensdef.proto.ensdef_pb2_grpc.add_EnsdefServicer_to_server"
# Serve's 5 s proxy readiness check fails on a busy 2-core machine; a local Ray inherits these.
SMALL_MACHINE_ENV = {"RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S": "60", "RAY_SERVE_PROXY_HEALTH_CHECK_TIMEOUT_S": "60"}


def start_local(
    num_cpus: float | None = None, metrics_port: int | None = None, object_store_mb: int | None = None
) -> None:
    """A new local Ray with Serve timeouts that hold on small, busy machines; Prometheus metrics on
    ``metrics_port`` (Ray picks one when None); an object store of ``object_store_mb`` (Ray's default: 30% of
    memory)."""
    for k, v in SMALL_MACHINE_ENV.items():
        os.environ.setdefault(k, v)
    extra: dict[str, int] = {"_metrics_export_port": metrics_port} if metrics_port else {}
    if object_store_mb:
        extra["object_store_memory"] = object_store_mb * 2**20
    ray.init(address="local", num_cpus=num_cpus, log_to_driver=False, **extra)  # never a stale `ray start` one


@dataclass(frozen=True)
class Endpoints:
    http: str
    grpc: str
    defenses: list[str]
    ray_address: str

    def to_json(self) -> dict[str, Any]:
        return {"http": self.http, "grpc": self.grpc, "defenses": self.defenses, "ray_address": self.ray_address}


def train_missing(s: ServeSettings, data_root: str | None = None) -> None:
    """Train every pool of the preset that is not in the store yet, then the team selection."""
    from ensdef.data import load_dataset
    from ensdef.pools import Pool, train_pools
    from ensdef.selection import run_selection

    preset, store = load_preset(s.preset), ArtifactStore(s.store)
    data = load_dataset(preset.dataset, data_root or preset.data_root)
    train_pools(preset, data, store, list(Pool), skip_existing=True)
    if not store.has_json(TEAMS_ARTIFACT):
        run_selection(store, preset, data.val)


def connect(address: str | None, num_cpus: float | None = None) -> str:
    """Join the Ray cluster at ``address`` (or the one ``ray start`` left running); start a local one when none
    is reachable. Returns the address."""
    if not ray.is_initialized():
        try:
            ray.init(address=address or "auto", log_to_driver=False)
        except ConnectionError:
            if address:
                raise
            log.info("no running Ray found; starting a local one")
            start_local(num_cpus)
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
) -> Endpoints:
    """Start Serve's HTTP and gRPC proxies and deploy the application (replacing one of the same name)."""
    deploy_proxies(host, http_port, grpc_port, proxy_location)
    t0 = time.perf_counter()
    s = absolute(s)
    defenses = served_defenses(s)  # built once: the app and the printed endpoints use the same answer
    serve.run(application(s, defenses), name=s.application, route_prefix="/", blocking=False)
    log.info("deployed %s in %.1fs", s.application, time.perf_counter() - t0)
    return Endpoints(
        f"http://{host}:{http_port}", f"{host}:{grpc_port}", sorted(defenses), ray.get_runtime_context().gcs_address
    )
