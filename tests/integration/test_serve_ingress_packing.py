"""``packing: ingress``: every member in the ingress replica (no member actors), for the smallest machines.
Served answers (HTTP and gRPC) equal the in-process Decisions for every defense, and members that stay
``unpacked`` keep their own replicas and are called as usual."""

from __future__ import annotations

import pytest

from tests.integration.test_serve import assert_served_as_in_process

pytestmark = [pytest.mark.integration, pytest.mark.slow]
TOKEN = "inline-token"


@pytest.fixture(scope="module")
def served_inline(ray_serve, tiny_store):
    from tests.conftest import serving_tiny

    store, preset = tiny_store
    both_kinds = {"unpacked": ["target"]}  # one member keeps its own replica: both kinds of host in one app
    packed = {"packing": "ingress", "members": {"num_cpus": 0.05, "threads": 2}, "ingress_num_cpus": 0.05}
    with serving_tiny(
        ray_serve, store.root, 120, admin_token=TOKEN, application="ensdef-inline", **both_kinds, **packed
    ) as (ep, client, s):
        yield ep, client, store, preset, s.application


def test_ingress_packing_answers_equal_in_process_with_no_member_actors(served_inline, mnist5k) -> None:
    from ray import serve

    ep, client, store, preset, app = served_inline
    deployments = set(serve.status().applications[app].deployments)
    assert deployments == {"Ingress", "member-target"}, deployments
    x = mnist5k.test.x[::83][:5]
    for defense in ep.defenses:
        assert_served_as_in_process(ep.http, client, TOKEN, store, preset, defense, x, 3)
