"""What `geoseg batch INPUT...` means: files, folders, globs and text files that list paths.

Folders are searched recursively for rasters. A list file holds one path, folder or glob a line
(blank lines and lines starting with # are skipped), relative to the list file's folder. A path that
does not exist is kept: the batch records it as failed and goes on with the others.
"""

from __future__ import annotations

import glob
from collections.abc import Iterable, Sequence
from pathlib import Path

from geoseg.errors import InputError

RASTER_SUFFIXES = (".tif", ".tiff", ".vrt", ".img", ".jp2")
LIST_SUFFIXES = (".txt", ".lst", ".list")


def expand_inputs(items: Sequence[str | Path], out_dir: Path | None = None) -> list[Path]:
    """The mosaics named by ``items``, in the order given, each once; never a file inside ``out_dir``
    (an output folder inside a survey folder would otherwise feed last run's class maps back in)."""
    found: list[Path] = []
    for item in items:
        found.extend(_expand(str(item), Path.cwd(), allow_lists=True))
    outputs = out_dir.resolve() if out_dir is not None else None
    unique = [
        path
        for path in dict.fromkeys(path.absolute() for path in found)
        if outputs is None or outputs not in path.resolve().parents
    ]
    if not unique:
        raise InputError("no mosaics found in the inputs given; name files, folders, globs or a list file")
    return unique


def output_stems(paths: Sequence[Path]) -> dict[Path, str]:
    """A distinct output name per mosaic: its file stem, or, where stems clash (ODM writes
    odm_orthophoto.tif in every project), the folders that tell them apart joined with "__"."""
    stems = [path.stem for path in paths]
    names: dict[Path, str] = {}
    for path, stem in zip(paths, stems, strict=True):
        if stems.count(stem) == 1:
            names[path] = stem
            continue
        clashing = [p for p, s in zip(paths, stems, strict=True) if s == stem]
        depth = 1
        while len({_tail(p, depth) for p in clashing}) < len(clashing) and depth < len(path.parts):
            depth += 1
        names[path] = _tail(path, depth)
    return names


def _tail(path: Path, depth: int) -> str:
    parts = [*path.parent.parts[-depth:], path.stem] if depth else [path.stem]
    return "__".join(part.strip("/") or "root" for part in parts)


def _expand(item: str, base: Path, allow_lists: bool) -> Iterable[Path]:
    path = Path(item).expanduser()
    if not path.is_absolute():
        path = base / path
    if glob.has_magic(item):
        matches = sorted(Path(m) for m in glob.glob(str(path), recursive=True))
        rasters = [m for m in matches if m.is_file()]
        if not rasters:
            raise InputError(f"the pattern {item!r} matches no file")
        return rasters
    if path.is_dir():
        rasters = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in RASTER_SUFFIXES)
        if not rasters:
            raise InputError(f"holds no rasters ({', '.join(RASTER_SUFFIXES)})", path)
        return rasters
    if allow_lists and path.suffix.lower() in LIST_SUFFIXES and path.is_file():
        return _read_list(path)
    return [path]


def _read_list(path: Path) -> list[Path]:
    out: list[Path] = []
    for line in path.read_text().splitlines():
        entry = line.strip()
        if entry and not entry.startswith("#"):
            out.extend(_expand(entry, path.parent, allow_lists=False))
    if not out:
        raise InputError("lists no mosaics", path)
    return out
