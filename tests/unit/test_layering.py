"""The package's import structure: floors that only import downwards, no cycles, and light workers.

The floors are the README's layout section ("Development"); a new module gets a floor there and here.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "geoseg"

# A module may import from its own floor or lower ones (top-level imports; imports inside functions are
# deferred on purpose and not counted).
FLOORS: dict[str, int] = {
    "_version": 0, "errors": 0, "memory": 0,
    "config": 1, "device": 1, "progress": 1, "metrics": 1, "tta": 1, "recipe": 1,
    "io": 2,
    "data": 3, "adaptation": 3,
    "model": 4,
    "drift": 5, "training": 5, "polygons": 5, "polygon_strips": 5, "polygon_workers": 5, "boundary": 5,
    "infer": 6,
    "evaluate": 7, "change_maps": 7, "landscape_metrics": 7, "train": 7, "quality": 7, "api": 7, "batch": 7,
    "demo_data": 7, "assess": 7,
    "cli": 8, "demo": 8, "__main__": 8, "__init__": 8,
}  # fmt: skip


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports_at_load(path: Path, modules: set[str]) -> set[str]:
    found: set[str] = set()
    for statement in ast.parse(path.read_text()).body:
        if isinstance(statement, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            continue
        if isinstance(statement, ast.If) and "TYPE_CHECKING" in ast.unparse(statement.test):
            continue
        for node in ast.walk(statement):
            if isinstance(node, ast.Import):
                found |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module)
                found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found & modules


def _graph() -> dict[str, set[str]]:
    paths = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: _imports_at_load(path, set(paths)) - {name} for name, path in paths.items()}


def _floor(module: str) -> int:
    parts = module.split(".")
    key = parts[1] if len(parts) > 1 else "__init__"
    assert key in FLOORS, f"{module} has no floor: add it to FLOORS and to the README's layout section"
    return FLOORS[key]


def test_every_import_goes_to_the_same_floor_or_lower() -> None:
    upward = [(m, d) for m, deps in _graph().items() for d in deps if _floor(d) > _floor(m)]
    assert not upward, f"imports from a lower floor to a higher one: {sorted(upward)}"


def test_no_import_cycle() -> None:
    graph = _graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(module: str, path: list[str]) -> list[str] | None:
        state[module] = 1
        for dep in sorted(graph[module]):
            if state.get(dep) == 1:
                return [*path[path.index(dep) :], dep] if dep in path else [module, dep]
            if dep not in state and (cycle := visit(dep, [*path, dep])):
                return cycle
        state[module] = 2
        return None

    for module in sorted(graph):
        if module not in state:
            cycle = visit(module, [module])
            assert cycle is None, f"import cycle: {' -> '.join(cycle)}"


def test_inference_workers_import_no_torchgeo_pandas_or_training_stack() -> None:
    """What a Dask worker imports to segment blocks stays lean: no torchgeo, pandas, geopandas, Lightning."""
    heavy = ("torchgeo", "pandas", "geopandas", "lightning", "matplotlib")
    script = (
        "import sys, geoseg.infer.block, geoseg.infer.parallel, geoseg.infer.run; "
        f"print(' '.join(m for m in {heavy!r} if m in sys.modules))"
    )
    loaded = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout.split()
    assert "torchgeo" not in loaded and "lightning" not in loaded and "matplotlib" not in loaded, loaded
    loaded_by_blocks = subprocess.run(
        [sys.executable, "-c", script.replace(", geoseg.infer.run", "")], capture_output=True, text=True, check=True
    ).stdout.split()
    assert loaded_by_blocks == [], loaded_by_blocks
