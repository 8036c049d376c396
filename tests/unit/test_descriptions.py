"""Weight-free descriptions (``describe_defense``): built from manifests and JSON artifacts only, they plan
exactly as the built defense does and refuse to compute."""

from __future__ import annotations

import pytest

from ensdef.defenses.plans import run_local
from ensdef.defenses.registry import DEFENSES, build_defense, describe_defense
from ensdef.rng import make_generator
from ensdef.types import Role


@pytest.mark.parametrize("name", sorted(DEFENSES))
def test_a_description_plans_as_the_built_defense(name: str, random_store, mnist5k, monkeypatch) -> None:
    store, preset = random_store
    built = build_defense(name, store, preset)
    x = mnist5k.test.x[::150][:3]
    with monkeypatch.context() as m:  # describing must read no weight file
        m.setattr(store, "load_model", lambda *a, **k: pytest.fail("a description loaded weights"))
        desc = describe_defense(name, store, preset)
    assert set(desc.members) == set(built.named_members())
    assert all(isinstance(r, Role) and store.manifest(n).role is r for n, r in desc.members.items())
    want = built.decide(x, make_generator(11))
    assert run_local(desc.defense.plan(x, make_generator(11)), built.named_members()) == want
    assert desc.to_json()["members"] == {n: r.value for n, r in sorted(desc.members.items())}


def test_a_description_refuses_to_compute(random_store, mnist5k) -> None:
    store, preset = random_store
    desc = describe_defense("target", store, preset)
    with pytest.raises(RuntimeError, match="no weights"):
        desc.defense.decide(mnist5k.test.x[:2], make_generator(0))
