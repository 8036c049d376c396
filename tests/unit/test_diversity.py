"""Kappa, interrater agreement and team ranking against independent computations."""

from __future__ import annotations

import itertools
import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import cohen_kappa_score

from ensdef.diversity.kappa import cohen_kappa, interrater_agreement, kappa_matrix, negative_mask, rank_teams

labels = st.lists(st.integers(0, 4), min_size=2, max_size=60)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_kappa_equals_sklearn(data) -> None:
    a = np.array(data.draw(labels))
    b = np.array(data.draw(st.lists(st.integers(0, 4), min_size=len(a), max_size=len(a))))
    ref = cohen_kappa_score(a, b)
    ours = cohen_kappa(a, b)
    if math.isnan(ref):  # sklearn: 0/0 when both raters use one identical class
        assert ours == 1.0
    else:
        assert abs(ours - ref) < 1e-9


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 10_000))
def test_kappa_matrix_uses_negative_examples(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 5, 80)
    preds = np.where(rng.random((4, 80)) < 0.7, y, rng.integers(0, 5, (4, 80)))
    neg = negative_mask(preds, y)
    assert neg.tolist() == [any(preds[m, i] != y[i] for m in range(4)) for i in range(80)]
    km = kappa_matrix(preds, y)
    for i, j in itertools.combinations(range(4), 2):
        ref = cohen_kappa_score(preds[i, neg], preds[j, neg])
        assert abs(km[i, j] - (1.0 if math.isnan(ref) else ref)) < 1e-9 and km[i, j] == km[j, i]


def test_interrater_agreement_hand_worked() -> None:
    # 3 members, 4 examples; correct counts l = [3, 2, 1, 0]; p = 6/12 = 0.5
    y = np.array([0, 0, 0, 0])
    preds = np.array([[0, 0, 0, 1], [0, 0, 1, 1], [0, 1, 1, 1]])
    # 1 - (1/3) * (0 + 2 + 2 + 0) / (4 * 2 * 0.25) = 1 - (4/3) / 2 = 1/3
    assert abs(interrater_agreement(preds, y) - 1 / 3) < 1e-12
    assert interrater_agreement(np.array([[0, 1, 0, 1]] * 3), np.array([0, 0, 0, 0])) == 1.0


def test_rank_teams_matches_brute_force() -> None:
    rng = np.random.default_rng(0)
    k = rng.random((7, 7))
    k = (k + k.T) / 2
    ranked = rank_teams(k, 3, 4, threshold=0.5)
    brute = sorted(
        (np.mean([k[i, j] for i, j in itertools.combinations(t, 2)]), t)
        for s in (3, 4)
        for t in itertools.combinations(range(7), s)
    )
    brute = [(v, t) for v, t in brute if v < 0.5]
    assert len(ranked) == len(brute)
    assert np.allclose(ranked.mean_kappa, [v for v, _ in brute])
    assert {ranked.team(i) for i in range(len(ranked))} == {t for _, t in brute}
    assert np.all(np.diff(ranked.mean_kappa) >= 0)


def test_team_selection_can_score_kappa_on_each_verifiers_pgd_examples(random_store, mnist5k, tmp_path) -> None:
    """``modef.kappa_eps``: the saved kappa matrix is the one of the verifiers' answers on PGD examples made
    on each verifier in turn (made here independently with ensdef's PGD; the selection uses ART's), and a
    resumed ``ensdef train`` selects again when the saved selection was scored on other images."""
    import shutil
    from dataclasses import replace

    import torch

    from ensdef.data import Dataset
    from ensdef.store import TEAMS_ARTIFACT, ArtifactStore
    from ensdef.training.adversarial import pgd_linf
    from ensdef.training.pools import POST_STEPS, Pool
    from ensdef.training.selection import run_selection
    from ensdef.types import Role

    src, preset = random_store
    store = ArtifactStore(tmp_path / "store")
    names = sorted(m.name for m in src.by_role(Role.VERIFIER))
    for n in names:
        shutil.copytree(f"{src.root}/{n}", f"{store.root}/{n}")
    val = mnist5k.val.subset(range(40))
    adv_preset = replace(preset, modef=replace(preset.modef, kappa_eps=0.3, kappa_steps=2, kappa_threshold=1.01))
    run_selection(store, adv_preset, val)
    saved = store.load_json(TEAMS_ARTIFACT)
    models = [store.load_model(n)[0] for n in names]
    xs = []
    for m in models:  # independently: ensdef's own PGD (tests/unit/test_adversarial_training.py checks it)
        loss = lambda z, m=m: torch.nn.functional.cross_entropy(m(z), val.y)  # noqa: E731
        xs.append(pgd_linf(loss, val.x, 0.3, 0.375, 2, torch.zeros_like(val.x)).numpy())
    x = torch.from_numpy(np.concatenate(xs))
    with torch.no_grad():
        preds = np.stack([m(x).argmax(1).numpy() for m in models])
    assert np.allclose(saved["kappa"], kappa_matrix(preds, np.tile(val.y.numpy(), len(models))), atol=1e-9)
    assert saved["kappa_on"] == {"eps": 0.3, "steps": 2}
    clean = Dataset("v", val, val, val, 10)  # the post step selects on ``data.val``
    POST_STEPS[Pool.VERIFIERS].run(replace(adv_preset, modef=preset.modef), clean, store, True)
    assert "kappa_on" not in store.load_json(TEAMS_ARTIFACT)  # clean images asked for: selected again
