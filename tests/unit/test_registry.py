"""The generic registry refuses a name twice and names the known ones on a miss; every registry of the
library is one."""

from __future__ import annotations

import pytest

from ensdef.attacks.catalog import ATTACKS
from ensdef.cli import commands
from ensdef.defenses.registry import DEFENSES
from ensdef.errors import EnsdefError, UnknownName
from ensdef.models import MODELS
from ensdef.presets.budgets import BUDGETS
from ensdef.registry import Registry


def test_a_name_registered_twice_is_refused() -> None:
    r: Registry[int] = Registry("thing")
    r.add("a", 1)
    with pytest.raises(ValueError, match="thing 'a' registered twice"):
        r.add("a", 2)
    assert r["a"] == 1 and list(r) == ["a"] and len(r) == 1


def test_an_unknown_name_lists_the_known_ones() -> None:
    r: Registry[int] = Registry("thing")
    r.add("a", 1)
    r.register("b")(2)
    with pytest.raises(UnknownName) as e:
        r["c"]
    assert str(e.value) == "unknown thing 'c'; known: a, b"
    assert isinstance(e.value, KeyError) and isinstance(e.value, EnsdefError)


@pytest.mark.parametrize("registry", [DEFENSES, MODELS, ATTACKS, BUDGETS, commands()], ids=repr)
def test_every_library_registry_is_a_registry(registry) -> None:
    assert isinstance(registry, Registry) and len(registry) > 0


def test_every_budget_has_an_art_builder_and_back() -> None:
    assert list(ATTACKS) == list(BUDGETS)
