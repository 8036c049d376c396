"""The one loader of Serve config files: ``deployments/serve.yaml``, ``cluster/serve-cluster.yaml`` and the
``serveConfigV2`` embedded in ``cluster/rayservice.yaml`` all pass Ray's ``ServeDeploySchema`` and then our
``ServeSettings`` (the application's args)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from ray.serve.schema import ServeDeploySchema

from deployments.settings import ServeSettings
from ensdef.errors import ConfigError

IMPORT_PATH = "deployments.app:build_app"


@dataclass(frozen=True)
class ServeConfig:
    schema: ServeDeploySchema
    settings: ServeSettings
    http: dict[str, Any]
    grpc_port: int
    proxy_location: str


def load_serve_config(source: str | Path | dict[str, Any]) -> ServeConfig:
    """Parse a Serve config (a YAML file's path, or the mapping it holds). Raises ``ValueError`` naming what
    is wrong: Ray's schema errors, not exactly one ensdef application, or bad application args."""
    cfg = source if isinstance(source, dict) else yaml.safe_load(Path(source).read_text())
    schema = ServeDeploySchema.model_validate(cfg)
    apps = [a for a in schema.applications if a.import_path == IMPORT_PATH]
    if len(apps) != 1:
        raise ConfigError(f"expected one application with import_path {IMPORT_PATH}, found {len(apps)}")
    settings = ServeSettings.from_dict(apps[0].args)
    http = {k: v for k, v in (cfg.get("http_options") or {}).items() if k in ("host", "port")}
    grpc_port = int((cfg.get("grpc_options") or {}).get("port", 9000))
    return ServeConfig(schema, settings, http, grpc_port, str(cfg.get("proxy_location", "EveryNode")))
