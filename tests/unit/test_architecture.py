"""The layout holds: the import graph of ``ensdef/``, ``deployments/`` and ``tune/`` (read from the source with
``ast``, lazy imports included) has no cycle, the library never imports Ray or the Ray layers, no module
imports from a layer above its own, and the top level of ``ensdef/`` stays small."""

from __future__ import annotations

import ast
import importlib
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import ensdef

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("ensdef", "deployments", "tune", "tasks")
# lowest first; a module may import its own layer and the ones below (docs/architecture.md draws them)
LAYERS: list[tuple[str, ...]] = [
    ("ensdef", "ensdef.types", "ensdef.errors", "ensdef.registry", "ensdef.rng", "ensdef.config"),
    ("ensdef.noise", "ensdef.data", "ensdef.presets"),
    ("ensdef.models",),
    ("ensdef.store",),
    ("ensdef.diversity", "ensdef.io"),
    ("ensdef.defenses",),
    ("ensdef.attacks",),
    ("ensdef.evaluation",),
    ("ensdef.training",),
    ("ensdef.studies",),
    ("ensdef.cli", "ensdef.__main__"),
    ("deployments",),
    ("tune", "tasks"),  # tune uses deployments.launch to connect to Ray
]


def modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            rel = path.relative_to(ROOT).with_suffix("")
            parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
            out[".".join(parts)] = path
    return out


def imports(mods: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the project modules it imports (``from a import b`` names module ``a.b`` when it is one)."""
    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        pkg = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(pkg.split(".")[: len(pkg.split(".")) - node.level + 1] + ([base] if base else []))
                found.add(base)
                found |= {f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in mods}
        graph[name] = found
    return graph


def layer(module: str) -> int:
    best, idx = "", -1
    for i, names in enumerate(LAYERS):
        for n in names:
            if (module == n or module.startswith(n + ".")) and len(n) > len(best):
                best, idx = n, i
    return idx


MODS = modules()
GRAPH = imports(MODS)


def test_every_project_module_has_a_layer() -> None:
    assert [m for m in MODS if layer(m) < 0] == []


def test_the_library_never_imports_ray_or_the_ray_layers() -> None:
    bad = {
        m: sorted(i for i in deps if i.split(".")[0] in ("ray", "deployments", "tune", "tasks"))
        for m, deps in GRAPH.items()
        if m.split(".")[0] == "ensdef"
    }
    assert {m: d for m, d in bad.items() if d} == {}


def test_no_module_imports_from_a_layer_above_its_own() -> None:
    up = [
        f"{m} (layer {layer(m)}) imports {d} (layer {layer(d)})"
        for m, deps in GRAPH.items()
        for d in deps
        if d in MODS and layer(d) > layer(m)
    ]
    assert up == []


def test_the_import_graph_has_no_cycle() -> None:
    edges = {m: {d for d in deps if d in MODS and d != m} for m, deps in GRAPH.items()}
    # a package's __init__ re-exporting its own submodules is not a cycle of the design
    edges = {m: {d for d in ds if not d.startswith(m + ".")} for m, ds in edges.items()}
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for d in sorted(edges[m]):
            if state.get(d) == 1:
                cycles.append(stack[stack.index(d) :] + [d])
            elif d not in state:
                visit(d)
        stack.pop()
        state[m] = 2

    for m in sorted(edges):
        if m not in state:
            visit(m)
    assert cycles == []


def test_the_top_level_of_the_library_stays_small() -> None:
    top = sorted(p.stem for p in (ROOT / "ensdef").glob("*.py") if p.stem not in ("__init__", "__main__"))
    assert len(top) <= 12, top


def test_every_subpackage_says_what_lives_there() -> None:
    missing = [
        p.parent.name
        for p in (ROOT / "ensdef").glob("*/__init__.py")
        if not ast.get_docstring(ast.parse(p.read_text()))
    ]
    assert missing == []


def test_importing_every_library_module_starts_no_ray() -> None:
    """Every module of ``ensdef`` (walked with pkgutil, not a hand-picked list) imports without ``ray``."""
    names = [m.name for m in pkgutil.walk_packages(ensdef.__path__, "ensdef.") if not m.name.endswith("__main__")]
    assert len(names) > 40
    code = f"import importlib, sys\nfor n in {names!r}: importlib.import_module(n)\nassert 'ray' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


@pytest.mark.parametrize("name", ["ensdef.cli", "ensdef.defenses.registry", "ensdef.evaluation.harness"])
def test_library_entry_modules_import(name: str) -> None:
    assert importlib.import_module(name) is not None
