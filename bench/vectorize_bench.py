"""Class map → GeoPackage: geoseg.polygons.vectorize_class_map against the in-memory recipe, side by side.

    python bench/vectorize_bench.py --size 16384

The class map is make_mosaic.py's label raster (4 smooth classes, uint8, nodata 255). Each way runs in
its own process under /usr/bin/time -v:

- geoseg: `vectorize_class_map` (rasterio.features.shapes on the dataset band, batched shapely
  construction, GeoPackage via pyogrio);
- in memory: read the whole array, `features.shapes(array)`, `shapely.geometry.shape` per polygon,
  `GeoDataFrame.to_file`: what a script usually does.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED_BENCH = ROOT.parent / "shared" / "bench"

IN_MEMORY = """
import sys, geopandas as gpd, rasterio, shapely.geometry
from rasterio import features
with rasterio.open(sys.argv[1]) as ds:
    array, transform, crs = ds.read(1), ds.transform, ds.crs
shapes = features.shapes(array, mask=array != 255, transform=transform)
records = [(shapely.geometry.shape(g), int(v)) for g, v in shapes]
frame = gpd.GeoDataFrame({"class_id": [v for _, v in records]}, geometry=[g for g, _ in records], crs=crs)
frame["area"] = frame.geometry.area
frame.to_file(sys.argv[2], driver="GPKG")
print(len(frame))
"""

GEOSEG = """
import sys
from pathlib import Path
from geoseg.polygons import vectorize_class_map
print(vectorize_class_map(Path(sys.argv[1]), Path(sys.argv[2]), overwrite=True).n_polygons)
"""


def timed(code: str, *args: str) -> tuple[float, float, str]:
    start = time.perf_counter()
    run = subprocess.run(["/usr/bin/time", "-v", sys.executable, "-c", code, *args], capture_output=True, text=True,
                         check=False, cwd=ROOT)  # fmt: skip
    seconds = time.perf_counter() - start
    if run.returncode != 0:
        sys.exit(run.stderr[-2000:])
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", run.stderr).group(1)) / 2**20
    return seconds, rss, run.stdout.strip().splitlines()[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=16384)
    parser.add_argument("--out-dir", type=Path, default=ROOT / "bench" / "out")
    args = parser.parse_args()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    mosaic, labels = args.out_dir / f"vm{args.size}.tif", args.out_dir / f"vl{args.size}.tif"
    if not labels.exists():
        subprocess.run([sys.executable, str(SHARED_BENCH / "make_mosaic.py"), str(mosaic), "--size", str(args.size),
                        "--labels", str(labels)], check=True)  # fmt: skip
    rows = {
        "geoseg vectorize_class_map": timed(GEOSEG, str(labels), str(args.out_dir / "v_geoseg.gpkg")),
        "in-memory shapes + geopandas": timed(IN_MEMORY, str(labels), str(args.out_dir / "v_memory.gpkg")),
    }
    print(f"\n{args.size}² class map\n| way | wall s | peak RSS GiB | polygons |\n|---|---|---|---|")
    for name, (seconds, rss, count) in rows.items():
        print(f"| {name} | {seconds:.1f} | {rss:.2f} | {count} |")


if __name__ == "__main__":
    main()
