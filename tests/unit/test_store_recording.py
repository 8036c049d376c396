"""The store records what a block loads (the evaluation cache keys each defense on its own artifacts)."""

from __future__ import annotations

from ensdef.defenses.registry import build_defense


def test_recording_names_what_a_defense_is_built_from(random_store) -> None:
    store, preset = random_store
    with store.recording() as used:
        build_defense("noisy-vote", store, preset)
    assert used and all(n.startswith("tempnet-") for n in used)
    assert all(used[n] == store.manifest(n).sha256 for n in used)
    with store.recording() as used:
        build_defense("verification", store, preset)
    assert "target" in used and "teams-verifiers" in used and any(n.startswith("verifier-") for n in used)
    with store.recording() as outer:
        store.load_model("target")
    assert set(outer) == {"target"}
