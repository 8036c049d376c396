"""``packing: ingress``: every member in the ingress replica (no member actors), for the smallest machines.
Served answers (HTTP and gRPC) equal the in-process Decisions for every defense, and members that stay
``unpacked`` keep their own replicas and are called as usual."""

from __future__ import annotations

import pytest

from ensdef.client import EnsdefClient
from tests.test_serve import assert_served_as_in_process

pytestmark = [pytest.mark.integration, pytest.mark.slow]
TOKEN = "inline-token"


@pytest.fixture(scope="module")
def served_inline(ray_serve, tiny_store):
    from ray import serve

    from deployments.launch import deploy
    from deployments.settings import ServeSettings
    from tests.conftest import FIXTURES

    store, preset = tiny_store
    s = ServeSettings.from_dict(
        {
            "preset": str(FIXTURES / "tiny.yaml"),
            "store": str(store.root),
            "packing": "ingress",
            "unpacked": ["target"],  # one member keeps its own replica: both kinds of host in one app
            "members": {"num_cpus": 0.05, "threads": 2},
            "ingress_num_cpus": 0.05,
            "deadline_s": 30.0,
            "admin_token": TOKEN,
            "application": "ensdef-inline",
        }
    )
    ep = deploy(s, "127.0.0.1", ray_serve["http"], ray_serve["grpc"])
    client = EnsdefClient(ep.grpc, application=s.application, timeout_s=120)
    yield ep, client, store, preset, s.application
    client.close()
    serve.delete(s.application)


def test_ingress_packing_answers_equal_in_process_with_no_member_actors(served_inline, mnist5k) -> None:
    from ray import serve

    ep, client, store, preset, app = served_inline
    deployments = set(serve.status().applications[app].deployments)
    assert deployments == {"Ingress", "member-target"}, deployments
    x = mnist5k.test.x[::83][:5]
    for defense in ep.defenses:
        assert_served_as_in_process(ep.http, client, TOKEN, store, preset, defense, x, 3)
