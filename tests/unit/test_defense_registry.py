"""Every registered defense, assembled from a store of random-weight members (the tiny preset untrained),
decides reproducibly and its surrogate gives input gradients."""

from __future__ import annotations

import pytest
import torch

from ensdef.defenses.plans import Job, noisy_input, run_local
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


@pytest.mark.parametrize("name", sorted(DEFENSES))
def test_copies_in_one_batch_are_drawn_as_separate_requests(name: str, random_store, mnist5k) -> None:
    """30 copies of one image in one call get independent draws: their answers are distributed as those of 30
    separate calls (chi-square homogeneity, scipy), and are not all equal where separate calls differ."""
    from scipy.stats import chi2_contingency

    store, preset = random_store
    d = build_defense(name, store, preset)

    def outcome(dd) -> tuple:
        return (dd.label, dd.flagged, dd.abstained)

    def separate(x: torch.Tensor) -> list[tuple]:
        return [outcome(d.decide(x[None], make_generator(100 + s))[0]) for s in range(30)]

    noise = torch.rand((8, *mnist5k.test.x.shape[1:]), generator=make_generator(0))
    candidates = torch.cat([mnist5k.test.x[:8], noise])  # digits, and noise images on which random members waver
    x = max(candidates, key=lambda c: len(set(separate(c))))  # the image whose answers vary most across calls
    apart = separate(x)
    copies = x.expand(30, *x.shape).contiguous()
    together = [outcome(dd) for dd in d.decide(copies, make_generator(7))]
    if not d.randomized:
        assert set(together) == set(apart) and len(set(apart)) == 1, name
        return
    if len(set(apart)) == 1:  # random members answer alike on every image: the copies' draws still differ
        called: list[Job] = []
        out = run_local(d.plan(copies, make_generator(7)), d.named_members(), lambda j: called.append(j) or False)
        draws = {repr(dd.diagnostics) for dd in out}  # the team or sampled networks each copy got
        seen = [noisy_input(j) for j in called if len(j.x) == 30]  # what each member computes on, noise included
        assert len(draws) > 1 or any(not torch.equal(v[0], v[1]) for v in seen), name
        return
    assert len(set(together)) > 1, f"{name}: 30 copies in one call share one draw"
    kinds = sorted(set(apart) | set(together), key=str)
    table = [[apart.count(k) for k in kinds], [together.count(k) for k in kinds]]
    assert chi2_contingency(table).pvalue > 0.001, (name, table)
