from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from ensdef.config import from_mapping, to_plain
from ensdef.errors import ConfigError
from ensdef.evaluation.harness import defense_settings
from ensdef.noise import NoiseKind
from ensdef.presets import PRESET_DIR, AdversarialConfig, Preset, TrainConfig, load_preset, merged
from ensdef.types import Optim


@pytest.mark.parametrize("name", sorted(p.stem for p in PRESET_DIR.glob("*.yaml")))
def test_shipped_presets_load_and_round_trip(name: str) -> None:
    p = load_preset(name)
    assert isinstance(p, Preset) and p.name == name
    assert from_mapping(Preset, to_plain(p)) == p
    assert all(isinstance(m.noise, NoiseKind) for m in p.denoisers.members)


def test_mnist5k_preset_has_the_pools_the_issue_asks_for() -> None:
    p = load_preset("mnist5k")
    assert p.target.architecture == "cw7"
    assert len(set(p.verifiers.architectures)) >= 8
    assert len({m.noise for m in p.denoisers.members}) >= 3
    assert len(set(p.reformers.architectures)) == 3
    assert p.tempnets.count == 10 and p.tempnets.train.noise_sigma == p.noisy_vote.sigma == 0.5
    assert p.rls.train.optimizer is Optim.SGD and (p.rls.m, p.rls.k, p.rls.n) == (2, 3, 10)


def test_unknown_key_is_rejected_with_its_name(tmp_path: Path) -> None:
    data = yaml.safe_load((PRESET_DIR / "mnist5k.yaml").read_text())
    data["verifiers"]["train"]["learning_rate"] = 0.1
    f = tmp_path / "bad.yaml"
    f.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match="unknown key 'learning_rate'.*") as e:
        load_preset(f)
    assert "verifiers.train" in str(e.value)


def test_bad_enum_and_type_and_override_keys(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="'rmsprop' is not one of adam, sgd"):
        from_mapping(TrainConfig, {"optimizer": "rmsprop"})
    with pytest.raises(ConfigError, match="expected an integer"):
        from_mapping(TrainConfig, {"epochs": "ten"})
    data = yaml.safe_load((PRESET_DIR / "mnist5k.yaml").read_text())
    data["verifiers"]["overrides"] = {"mlp": {"epoch": 3}}
    f = tmp_path / "bad.yaml"
    f.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match="verifiers.overrides.mlp: unknown key 'epoch'"):
        load_preset(f)


def test_missing_preset_lists_known_ones() -> None:
    with pytest.raises(ConfigError, match="known presets: .*mnist5k"):
        load_preset("imagenet-huge")


def test_a_preset_lays_its_keys_over_its_base() -> None:
    base = {"a": {"x": 1, "y": [1, 2]}, "b": 3}
    assert merged(base, {"a": {"y": [9]}, "c": 4}) == {"a": {"x": 1, "y": [9]}, "b": 3, "c": 4}
    assert base == {"a": {"x": 1, "y": [1, 2]}, "b": 3}  # the base is not changed
    quick, full = load_preset("mnist5k-quick"), load_preset("mnist5k")
    assert quick.name == "mnist5k-quick" and quick.target == full.target and quick.evaluation == full.evaluation
    assert quick.verifiers.train.epochs < full.verifiers.train.epochs
    assert quick.verifiers.train.lr == full.verifiers.train.lr  # merged key by key, not replaced
    assert set(quick.verifiers.architectures) < set(full.verifiers.architectures)
    # the quick warm start is the long recipe's member training, shortened; the long members start from scratch
    start, long = quick.tempnets.warm_start, full.tempnets.train
    assert start is not None and full.tempnets.warm_start is None and start.epochs < long.epochs
    assert replace(start, epochs=long.epochs, patience=long.patience) == long


def test_base_presets_may_not_form_a_cycle(tmp_path) -> None:
    (tmp_path / "a.yaml").write_text("base: b.yaml\nname: a\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\nname: b\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_preset(tmp_path / "a.yaml")


@pytest.mark.parametrize(
    ("cuts", "message"),
    [
        ({"modef": {"max_iter": 5}}, "'max_iter' cannot be set per defense"),
        ({"modef": {"apgd_iter": -1}}, r"apgd_iter: expected a non-negative integer, got -1"),
        ({"modef": {"apgd_iter": "ten"}}, "expected a non-negative integer"),
        ({"modef": 5}, "expected a mapping"),
    ],
)
def test_per_defense_budget_cuts_are_checked(tmp_path: Path, cuts: dict, message: str) -> None:
    f = tmp_path / "cut.yaml"
    f.write_text(yaml.safe_dump({"base": "mnist5k", "evaluation": {"per_defense": cuts}}))
    with pytest.raises(ConfigError, match=message):
        load_preset(f)


def test_per_defense_cuts_apply_to_their_defense_only(tmp_path: Path) -> None:
    f = tmp_path / "cut.yaml"
    f.write_text(yaml.safe_dump({"base": "mnist5k", "evaluation": {"per_defense": {"modef": {"apgd_targets": 1}}}}))
    e = load_preset(f).evaluation
    assert e.for_defense("modef").apgd_targets == 1 and e.for_defense("modef").apgd_iter == e.apgd_iter
    assert e.for_defense("verification") is e and e.apgd_targets == 3  # a defense without a cut


def test_cached_cells_key_on_the_defense_settings_not_on_the_evaluations() -> None:
    p = load_preset("mnist5k")
    same = replace(p, name="copy", evaluation=replace(p.evaluation, per_class=3))
    assert defense_settings(same) == defense_settings(p)
    for changed in (
        replace(p, det=replace(p.det, sigma=0.2)),
        replace(p, noisy_vote=replace(p.noisy_vote, sigma=0.25)),
        replace(p, modef=replace(p.modef, max_team=4)),
        replace(p, rls=replace(p.rls, n=5)),
        replace(p, target=replace(p.target, train=replace(p.target.train, adversarial=AdversarialConfig()))),
    ):
        assert defense_settings(changed) != defense_settings(p)
    # a field added since cells were first cached stays out of the key at its default: old cells still read
    assert "adversarial" not in json.dumps(defense_settings(p))
    assert defense_settings(p)["target"]["train"] == {
        k: v for k, v in to_plain(p.target.train).items() if k != "adversarial"
    }
