"""Expected errors on the command line: one base class, a short message and exit 2; ``-v`` adds the traceback.
Presets are checked when they load: an unknown attack or attack parameter is an error that names it."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import yaml

from ensdef.cli import configure_logging, main
from ensdef.errors import ConfigError
from ensdef.presets import PRESET_DIR, load_preset


def test_an_expected_error_prints_its_message_and_the_traceback_only_with_v(capsys) -> None:
    assert main(["train", "--preset", "no-such-preset", "--store", "unused"]) == 2
    err = capsys.readouterr().err
    assert "ensdef: error: preset 'no-such-preset' not found" in err and "Traceback" not in err
    assert main(["-v", "train", "--preset", "no-such-preset", "--store", "unused"]) == 2
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "ConfigError" in err


@pytest.mark.parametrize("verbose", [False, True])
def test_art_logs_its_batches_only_with_v(verbose: bool) -> None:
    import art.attacks.evasion  # noqa: F401  (ART's import configures its own loggers; ours must hold)

    carlini, root = logging.getLogger("art.attacks.evasion.carlini"), logging.getLogger()
    before = logging.getLogger("art").level, root.level
    try:
        configure_logging(verbose)
        root.setLevel(logging.DEBUG)  # pytest owns the root logger (basicConfig does nothing here): open it
        assert carlini.isEnabledFor(logging.INFO) is verbose
        assert carlini.isEnabledFor(logging.WARNING)
    finally:
        logging.getLogger("art").setLevel(before[0])
        root.setLevel(before[1])


def _preset_with(tmp_path: Path, **evaluation: object) -> Path:
    data = yaml.safe_load((PRESET_DIR / "mnist5k.yaml").read_text())
    data["evaluation"].update(evaluation)
    p = tmp_path / "edited.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


@pytest.mark.parametrize(
    ("evaluation", "named"),
    [
        ({"budgets": {"pgd": {"max_iters": 40}}}, "'max_iters'"),
        ({"budgets": {"pgdd": {"max_iter": 40}}}, "'pgdd'"),
        ({"static_attacks": ["fgsm", "fgms"]}, "'fgms'"),
        ({"adaptive_attack": "apgd-ce"}, "'apgd-ce'"),
    ],
)
def test_unknown_attacks_and_budget_keys_fail_when_the_preset_loads(tmp_path: Path, evaluation, named) -> None:
    with pytest.raises(ConfigError, match=named):
        load_preset(_preset_with(tmp_path, **evaluation))


def test_the_shipped_presets_live_inside_the_package() -> None:
    import ensdef

    assert PRESET_DIR == Path(ensdef.__file__).parent / "presets"
    assert {p.stem for p in PRESET_DIR.glob("*.yaml")} >= {"mnist5k", "cifar10"}
    assert load_preset("mnist5k").name == "mnist5k"


def test_decide_reads_images_with_the_service_decoder(random_store, tmp_path: Path, capsys) -> None:
    """uint8 arrays are scaled by 1/255 as the service scales them; out-of-range floats are refused."""
    import json

    store, _ = random_store
    tiny = str(Path(__file__).resolve().parents[1] / "fixtures" / "tiny.yaml")
    img = (np.arange(28 * 28) % 256).astype(np.uint8).reshape(28, 28)
    np.save(tmp_path / "u8.npy", img)
    np.save(tmp_path / "f.npy", img.astype(np.float32) / 255.0)
    args = ["decide", "--defense", "target", "--store", str(store.root), "--preset", tiny, "--json", "--input"]
    assert main([*args, str(tmp_path / "u8.npy")]) == 0
    from_u8 = json.loads(capsys.readouterr().out)
    assert main([*args, str(tmp_path / "f.npy")]) == 0
    assert json.loads(capsys.readouterr().out) == from_u8
    np.save(tmp_path / "bad.npy", img.astype(np.float32))
    assert main([*args, str(tmp_path / "bad.npy")]) == 2
    assert json.loads(capsys.readouterr().out)["error"].startswith("pixel values must lie in [0, 1]")
