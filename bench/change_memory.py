"""Peak memory of `geoseg change` on two large class maps, against the size of one strip (issue 16).

    python bench/change_memory.py --size 16384

Writes two SIZE² class maps strip by strip (blobs of three classes; the later one on a grid shifted by
half a pixel, so it is warped), then runs `geoseg change` under /usr/bin/time -v and reports its wall
time and peak RSS beside what one 512-row strip of the work holds: the two uint8 strips, the uint16 codes
and change-map strip, the validity masks, and the int64 bincount of 65,536 entries. A streaming
implementation's peak is the interpreter and libraries plus a few strips, whatever SIZE is.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import from_origin
from rasterio.windows import Window

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from geoseg.change_maps import ROWS_PER_STRIP  # noqa: E402


def write_map(path: Path, size: int, seed: int, shift: float) -> Path:
    """A class map of SIZE² px (0.5 m) with 16 px blobs of classes 1-3, written 512 rows at a time."""
    from geoseg.config import DEFAULT_COLORS, ClassSpec
    from geoseg.io.classmap import class_map_profile
    from geoseg.io.raster import GridSpec

    if path.exists():
        return path
    grid = GridSpec(rasterio.crs.CRS.from_epsg(32633), from_origin(500_000 + shift, 5_000_000, 0.5, 0.5), size, size)
    rng = np.random.default_rng(seed)
    specs = [ClassSpec(str(i), i, name, DEFAULT_COLORS[i]) for i, name in ((1, "soil"), (2, "crust"), (3, "moss"))]
    profile = class_map_profile(grid)
    with rasterio.open(path, "w", **profile) as out:
        for row in range(0, size, 512):
            height = min(512, size - row)
            blobs = rng.integers(1, 4, (-(-height // 16), size // 16), dtype=np.uint8)
            out.write(
                np.kron(blobs, np.ones((16, 16), np.uint8))[:height, :size], 1, window=Window(0, row, size, height)
            )
        import json

        out.update_tags(GEOSEG_CLASSES=json.dumps([{"id": c.id, "name": c.name, "color": c.color} for c in specs]))
    return path


def timed_change(before: Path, after: Path, out: Path) -> tuple[float, int]:
    """Wall seconds and peak RSS (bytes) of `geoseg change BEFORE AFTER` in its own process."""
    command = ["/usr/bin/time", "-v", sys.executable, "-m", "geoseg", "change", str(before), str(after),
               "--out-dir", str(out), "--overwrite"]  # fmt: skip
    start = time.perf_counter()
    run = subprocess.run(command, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if run.returncode != 0:
        sys.exit(run.stderr[-2000:])
    return seconds, int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", run.stderr).group(1)) * 1024


def strip_bytes(size: int) -> int:
    pixels = ROWS_PER_STRIP * size
    return pixels * (1 + 1 + 2 + 2 + 1 + 1) + 65536 * 8  # two uint8 reads, codes, output, two masks, counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=16384)
    parser.add_argument("--out-dir", type=Path, default=ROOT / "bench" / "out" / "change_memory")
    args = parser.parse_args()
    folder = args.out_dir
    folder.mkdir(parents=True, exist_ok=True)
    before = write_map(folder / f"before_{args.size}.tif", args.size, 0, 0.0)
    after = write_map(folder / f"after_{args.size}.tif", args.size, 1, 0.25)
    seconds, peak = timed_change(before, after, folder / "out")
    small = [write_map(folder / f"{name}_256.tif", 256, seed, shift) for name, seed, shift in
             (("before", 0, 0.0), ("after", 1, 0.25))]  # fmt: skip
    _, fixed = timed_change(*small, folder / "out_256")
    gib = 2**30
    print(f"two {args.size}² class maps ({args.size**2 / 1e6:.0f} Mpx each, the later warped), "
          f"{os.cpu_count()} cores, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")  # fmt: skip
    print("| what | value |\n|---|---|")
    print(f"| `geoseg change` wall | {seconds:.1f} s ({args.size**2 / 1e6 / seconds:.1f} Mpx/s) |")
    print(f"| peak RSS | {peak / gib:.2f} GiB |")
    print(f"| peak RSS on two 256² maps (interpreter, libraries, fixed costs) | {fixed / gib:.2f} GiB |")
    print(f"| one {ROWS_PER_STRIP}-row strip of the work | {strip_bytes(args.size) / gib:.3f} GiB |")
    print(f"| the two maps, were they held whole (uint8) | {2 * args.size**2 / gib:.2f} GiB |")


if __name__ == "__main__":
    main()
