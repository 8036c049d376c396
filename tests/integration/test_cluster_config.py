"""Cluster configs without a cluster: the launcher YAML passes Ray's own schema, the RayService embeds the
cluster Serve config verbatim and both load through the same loader as the local config, and placement
options (fractional GPUs, worker pinning) reach the actor options."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from deployments.config import load_serve_config
from deployments.settings import Packing

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = ROOT / "cluster"


def test_launcher_yaml_passes_rays_schema_and_a_typo_does_not() -> None:
    import jsonschema
    from ray.autoscaler._private.util import prepare_config, validate_config

    cfg = yaml.safe_load((CLUSTER / "ray-cluster.yaml").read_text())
    validate_config(prepare_config(copy.deepcopy(cfg)))
    assert cfg["available_node_types"]["gpu_worker"]["resources"] == {"worker": 1}
    assert all(isinstance(c, str) for c in cfg["head_start_ray_commands"] + cfg["worker_start_ray_commands"])
    bad = copy.deepcopy(cfg)
    bad["available_node_types"]["head"]["nod_config"] = {}
    with pytest.raises(jsonschema.ValidationError, match="nod_config"):
        validate_config(prepare_config(bad))


def test_rayservice_embeds_the_cluster_serve_config_and_it_loads() -> None:
    service = yaml.safe_load((CLUSTER / "rayservice.yaml").read_text())
    assert service["kind"] == "RayService" and service["spec"]["rayClusterConfig"]["rayVersion"] == "2.60.0"
    embedded = yaml.safe_load(service["spec"]["serveConfigV2"])
    assert embedded == yaml.safe_load((CLUSTER / "serve-cluster.yaml").read_text())
    cfg = load_serve_config(embedded)
    s = cfg.settings
    assert s.packing is Packing.NONE  # one actor per model
    opt = s.options_for("tempnet-01", "tempnet").actor_options()
    assert opt == {"num_cpus": 0.5, "num_gpus": 0.1, "resources": {"worker": 0.001}}
    assert s.options_for("denoiser-x", "denoiser").actor_options()["num_gpus"] == 0.2
    assert s.options_for("tempnet-01", "tempnet").actor_options("gpu_slot") == {
        "num_cpus": 0.5,
        "num_gpus": 0.0,
        "resources": {"worker": 0.001, "gpu_slot": 0.1},
    }
    groups = service["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    assert groups[0]["rayStartParams"]["resources"] == '"{\\"worker\\": 1}"'


def test_local_and_cluster_serve_configs_differ_only_in_placement() -> None:
    local = load_serve_config(ROOT / "deployments" / "serve.yaml").settings.to_dict()
    cluster = load_serve_config(CLUSTER / "serve-cluster.yaml").settings.to_dict()
    placement = {"packing", "members", "overrides", "router_num_cpus", "ingress_num_cpus", "preset", "store"}
    assert {k for k in local if local[k] != cluster[k]} <= placement


def test_loader_names_what_is_wrong() -> None:
    cfg = yaml.safe_load((ROOT / "deployments" / "serve.yaml").read_text())
    wrong_path = copy.deepcopy(cfg)
    wrong_path["applications"][0]["import_path"] = "elsewhere:app"
    with pytest.raises(ValueError, match="deployments.app:build_app"):
        load_serve_config(wrong_path)
    wrong_args = copy.deepcopy(cfg)
    wrong_args["applications"][0]["args"]["packnig"] = "none"
    with pytest.raises(ValueError, match="packnig"):
        load_serve_config(wrong_args)
