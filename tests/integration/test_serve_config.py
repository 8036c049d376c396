"""The Serve config and gRPC stubs without starting Ray: the YAML passes Ray's own schema and our settings
parser, the committed gRPC modules equal a fresh generation, and packing decides the member layout."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from deployments.settings import Packing, ServeSettings

ROOT = Path(__file__).resolve().parents[2]


def test_serve_yaml_passes_rays_schema_and_our_settings() -> None:
    from ray.serve.schema import ServeDeploySchema

    cfg = yaml.safe_load((ROOT / "deployments" / "serve.yaml").read_text())
    schema = ServeDeploySchema.model_validate(cfg)
    [app] = schema.applications
    assert app.import_path == "deployments.app:build_app"
    s = ServeSettings.from_dict(app.args)
    assert s.packing is Packing.POOL and s.members.num_cpus == 0.1
    assert (
        "ensdef.io.proto.ensdef_pb2_grpc.add_EnsdefServicer_to_server" in cfg["grpc_options"]["grpc_servicer_functions"]
    )


def test_settings_refuse_unknown_keys_and_bad_values() -> None:
    with pytest.raises(ValueError, match="unknown serve settings"):
        ServeSettings.from_dict({"stroe": "x"})
    with pytest.raises(ValueError, match="unknown member options"):
        ServeSettings.from_dict({"members": {"gpus": 1}})
    with pytest.raises(ValueError, match="quorum"):
        ServeSettings.from_dict({"quorum": 1.5})
    with pytest.raises(ValueError, match="host_calls"):
        ServeSettings.from_dict({"host_calls": 0})
    with pytest.raises(ValueError):
        ServeSettings.from_dict({"packing": "tight"})
    s = ServeSettings.from_dict({"overrides": {"tempnet": {"num_gpus": 0.1, "resources": {"gpu_node": 0.01}}}})
    assert s.options_for("tempnet-01", "tempnet").actor_options() == {
        "num_cpus": 0.1,
        "num_gpus": 0.1,
        "resources": {"gpu_node": 0.01},
    }
    assert s.options_for("tempnet-01", "tempnet").actor_options("gpu_slot") == {
        "num_cpus": 0.1,
        "num_gpus": 0.0,
        "resources": {"gpu_node": 0.01, "gpu_slot": 0.1},
    }
    assert s.options_for("verifier-mlp", "verifier").actor_options("gpu_slot") == {"num_cpus": 0.1, "num_gpus": 0.0}
    assert ServeSettings.from_dict(s.to_dict()) == s


def test_replicas_get_the_settings_environment() -> None:
    from deployments.app import _control, _with_env

    assert ServeSettings().env_vars == {}  # glibc's own allocator behaviour unless asked
    env = ServeSettings.from_dict({"env_vars": {"MALLOC_MMAP_THRESHOLD_": "4194304"}}).env_vars
    assert _with_env({"num_cpus": 0.1}, env) == {"num_cpus": 0.1, "runtime_env": {"env_vars": env}}
    assert _control(0.05, {"head": 0.01}, env)["runtime_env"] == {"env_vars": env}
    assert _control(0.05, {"head": 0.01}, {}) == {"num_cpus": 0.05, "resources": {"head": 0.01}}


def test_committed_grpc_modules_equal_a_fresh_generation(tmp_path) -> None:
    from ensdef.io.proto.generate import generate

    for fresh in generate(tmp_path):
        committed = ROOT / "ensdef" / "io" / "proto" / fresh.name
        assert fresh.read_text() == committed.read_text(), (
            f"{fresh.name} is stale: run python -m ensdef.io.proto.generate"
        )


def test_packing_decides_the_layout(tiny_store) -> None:
    from deployments.app import layout, served_defenses

    store, _ = tiny_store
    base = {"store": str(store.root), "preset": str(ROOT / "tests" / "fixtures" / "tiny.yaml")}
    members = {m for ms in served_defenses(ServeSettings.from_dict(base)).values() for m in ms}
    pooled = layout(ServeSettings.from_dict(base), members)
    assert set(pooled) == {
        "pool-target",
        "pool-verifier",
        "pool-denoiser",
        "pool-reformer",
        "pool-tempnet",
        "pool-rls",
        "pool-baseline",
    }
    alone = layout(ServeSettings.from_dict({**base, "packing": "none"}), members)
    assert len(alone) == len(members) and all(len(v) == 1 for v in alone.values())
    mixed = layout(ServeSettings.from_dict({**base, "unpacked": ["tempnet"]}), members)
    assert "pool-tempnet" not in mixed and "member-tempnet-01" in mixed and "pool-verifier" in mixed
    inline = layout(ServeSettings.from_dict({**base, "packing": "ingress", "unpacked": ["target"]}), members)
    assert set(inline) == {"ingress", "member-target"} and sorted(inline["ingress"]) == sorted(members - {"target"})


def test_direct_ingress_env_gives_each_protocol_its_own_port_range() -> None:
    from deployments.modes import direct_ingress_env

    env = direct_ingress_env(8000, 9000)
    assert env["RAY_SERVE_ENABLE_DIRECT_INGRESS"] == "1"
    assert (env["RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT"], env["RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT"]) == (
        "8000",
        "8099",
    )
    assert env["RAY_SERVE_DIRECT_INGRESS_MIN_GRPC_PORT"] == "9000"
    with pytest.raises(ValueError, match="apart"):
        direct_ingress_env(8000, 8150)  # the HTTP range and its fallback proxy would reach the gRPC range


def test_haproxy_env_keeps_every_port_and_file_of_a_service_to_its_own() -> None:
    """Two services on one machine (8000/9000 and 8300/9300) share no port and no HAProxy file; every port
    of a service lies in the span above its own HTTP or gRPC port, and HAProxy's own are not the clients'."""
    from deployments.modes import PORT_SPAN, IngressMode, haproxy_env

    def ports(env: dict[str, str]) -> set[int]:
        single = [k for k in env if k.endswith("_PORT") and "DIRECT_INGRESS" not in k]
        ranges = [("HTTP", "HTTP"), ("GRPC", "GRPC")]
        out = {int(env[k]) for k in single}
        for lo, hi in ranges:
            a, b = (
                int(env[f"RAY_SERVE_DIRECT_INGRESS_MIN_{lo}_PORT"]),
                int(env[f"RAY_SERVE_DIRECT_INGRESS_MAX_{hi}_PORT"]),
            )
            assert a <= b
            assert not out & set(range(a, b + 1))
            out |= set(range(a, b + 1))
        return out

    one, two = haproxy_env(8000, 9000), haproxy_env(8300, 9300)
    assert one["RAY_SERVE_ENABLE_HA_PROXY"] == "1" and IngressMode.HAPROXY.env(8000, 9000) == one
    p1, p2 = ports(one), ports(two)
    assert not p1 & p2 and not {8000, 9000} & p1
    assert p1 <= set(range(8001, 8000 + PORT_SPAN)) | set(range(9001, 9000 + PORT_SPAN))
    files = [k for k in one if k.endswith(("_LOC", "_PATH", "_BASE", "_FILE")) and "BINARY" not in k]  # programs
    assert len(files) == 5 and not {one[k] for k in files} & {two[k] for k in files}
    assert int(one["RAY_SERVE_HAPROXY_NBTHREAD"]) >= 1 and IngressMode.PROXY.env(8000, 9000) is None
    with pytest.raises(ValueError, match="apart"):
        haproxy_env(8000, 8150)


def test_haproxy_runs_with_option_forwardfor_and_ray_env_prints_the_mode(tmp_path) -> None:
    """The wrapper Serve runs as HAProxy adds ``option forwardfor`` to the defaults of the configuration it is
    given (once, however often it runs), and real HAProxy accepts the result; ``ensdef ray-env`` prints the
    same environment a local Ray gets."""
    import subprocess
    import sys

    from deployments.modes import FORWARDFOR, SERVICE_ENV, haproxy_binary, haproxy_env

    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(
        "global\n    maxconn 16\ndefaults\n    mode http\n    timeout connect 1s\n    timeout client 1s\n"
        "    timeout server 1s\nfrontend f\n    bind 127.0.0.1:18080\n    default_backend b\n"
        "backend b\n    server s 127.0.0.1:1\n"
    )
    env = {**os.environ, **haproxy_env(8000, 9000, str(tmp_path))}
    assert env["RAY_SERVE_HAPROXY_BINARY_PATH"] == FORWARDFOR and env["ENSDEF_HAPROXY_BINARY"] == haproxy_binary()
    for _ in range(2):
        done = subprocess.run([FORWARDFOR, "-c", "-f", str(cfg)], env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
    lines = cfg.read_text().splitlines()
    assert lines.count("    option forwardfor") == 1 and lines[lines.index("defaults") + 1] == "    option forwardfor"
    out = subprocess.run(
        [sys.executable, "-m", "ensdef", "ray-env", "--http-port", "8000", "--grpc-port", "9000"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    printed = dict(w.split("=", 1) for w in out)
    assert printed == {**SERVICE_ENV, **haproxy_env(8000, 9000)}


def test_an_ingress_that_packs_members_asks_for_their_gpu_share(tiny_store) -> None:
    from deployments.app import application, ingress_options, served_defenses

    store, _ = tiny_store
    base = {"store": str(store.root), "preset": str(ROOT / "tests" / "fixtures" / "tiny.yaml")}
    gpu = {"members": {"num_cpus": 0.5, "num_gpus": 0.25}, "control_resources": {"head": 0.01}}
    packed = ServeSettings.from_dict({**base, **gpu, "packing": "ingress"})
    assert ingress_options(packed, True) == {"num_cpus": 0.05, "num_gpus": 0.25, "resources": {"head": 0.01}}
    assert ingress_options(packed, False) == {"num_cpus": 0.05, "resources": {"head": 0.01}}
    slot = ServeSettings.from_dict({**base, **gpu, "packing": "ingress", "gpu_as": "gpu_slot"})
    assert ingress_options(slot, True) == {
        "num_cpus": 0.05,
        "num_gpus": 0.0,
        "resources": {"head": 0.01, "gpu_slot": 0.25},
    }
    # the application's ingress deployment carries them; with member hosts (packing: pool) it stays a control actor
    app = application(packed, served_defenses(packed))
    assert app._bound_deployment.ray_actor_options["num_gpus"] == 0.25
    pool = ServeSettings.from_dict({**base, **gpu, "packing": "pool"})
    assert "num_gpus" not in application(pool, served_defenses(pool))._bound_deployment.ray_actor_options
