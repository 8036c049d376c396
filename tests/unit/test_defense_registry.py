"""Every registered defense, assembled from a store of random-weight members (the tiny preset untrained),
decides reproducibly and its surrogate gives input gradients."""

from __future__ import annotations

import pytest
import torch

from ensdef.defenses.registry import DEFENSES, build_defense
from ensdef.rng import make_generator


@pytest.mark.parametrize("name", sorted(DEFENSES))
def test_defense_decides_and_gives_gradients(random_store, mnist5k, name: str) -> None:
    store, preset = random_store
    defense = build_defense(name, store, preset)
    x = mnist5k.test.x[::100][:6]
    first = defense.decide(x, make_generator(4))
    assert len(first) == 6 and first == defense.decide(x, make_generator(4))
    assert all(-1 <= d.label < 10 and isinstance(d.flagged, bool) for d in first)
    xg = x.clone().requires_grad_(True)
    for g in (None, make_generator(1)):
        out = defense.surrogate(xg, g)
        assert out.shape == (6, 10) and torch.isfinite(out).all()
        (grad,) = torch.autograd.grad(out[torch.arange(6), mnist5k.test.y[::100][:6]].sum(), xg)
        assert torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_missing_artifacts_are_named(tmp_path) -> None:
    from ensdef.presets import load_preset
    from ensdef.store import ArtifactStore

    for name in DEFENSES:
        with pytest.raises(FileNotFoundError, match=str(tmp_path)):
            build_defense(name, ArtifactStore(tmp_path), load_preset("mnist5k"))
    with pytest.raises(KeyError, match="unknown defense"):
        build_defense("magic", ArtifactStore(tmp_path), load_preset("mnist5k"))


@pytest.mark.parametrize("name", sorted(DEFENSES))
def test_batched_eot_draws_equal_the_loop(name: str, random_store, mnist5k) -> None:
    """``surrogate_many`` / ``voters_many`` share work across EOT draws; they must equal one call per draw."""
    from ensdef.rng import make_generator

    store, preset = random_store
    d = build_defense(name, store, preset)
    x = mnist5k.test.x[::200][:3]
    gens = lambda: [make_generator(s) for s in (5, 6, 7)]  # noqa: E731
    many = d.surrogate_many(x, gens())
    loop = torch.stack([d.surrogate(x, g) for g in gens()])
    torch.testing.assert_close(many, loop, rtol=1e-4, atol=1e-5)
    for a, b in zip(d.voters_many(x, gens()), [d.voters(x, g) for g in gens()], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
