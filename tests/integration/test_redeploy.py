"""Redeploying as ``ensdef serve --train-missing`` does after each trained pool: the hosts whose members did not
change keep their running replicas (stable versions, ``deployments.versions``), the ingress and the new pool's
host start, and every served defense answers."""

from __future__ import annotations

import pytest
import requests

pytestmark = [pytest.mark.integration, pytest.mark.slow]
IMAGE = {"images": [[[0.0] * 28] * 28]}


def _replicas(app: str) -> dict[str, list[str]]:
    from ray.serve.context import _get_global_client  # the details `serve status` prints

    deployments = _get_global_client().get_serve_details()["applications"][app]["deployments"]
    return {name: sorted(r["replica_id"] for r in d["replicas"]) for name, d in deployments.items()}


def test_a_redeploy_keeps_the_replicas_of_unchanged_hosts(ray_serve, random_store) -> None:
    from ray import serve

    from deployments.app import survey
    from deployments.launch import deploy
    from tests.conftest import tiny_settings

    store, _ = random_store
    s = tiny_settings(store.root, application="redeploy", packing="pool")
    members = survey(s)[0]
    url = f"http://127.0.0.1:{ray_serve['http']}/v1"
    try:
        deploy(s, "127.0.0.1", ray_serve["http"], ray_serve["grpc"], defenses={"target": members["target"]})
        before = _replicas(s.application)
        assert set(before) == {"pool-target", "Ingress"}

        both = {d: members[d] for d in ("target", "denoising")}
        deploy(s, "127.0.0.1", ray_serve["http"], ray_serve["grpc"], defenses=both)
        after = _replicas(s.application)
        assert after["pool-target"] == before["pool-target"]  # same members, same weights: kept running
        assert after["Ingress"] != before["Ingress"] and after["pool-denoiser"]  # new arguments, new host
        for d in both:
            answer = requests.post(f"{url}/{d}/classify", json=IMAGE, timeout=60)
            assert answer.status_code == 200 and len(answer.json()["answers"]) == 1
    finally:
        serve.delete(s.application)
