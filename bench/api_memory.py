"""Does `geoseg.segment` on a lazily built DataArray stay near the block working set? Peak RSS at 16384².

    python bench/api_memory.py [--chunk 1024] [--workers 2]

Two make_mosaic.py mosaics of 16384² side by side (the second with another seed, its origin one mosaic
further east) are opened with rioxarray (Dask-backed, ``--chunk`` px chunks), concatenated along x with
xarray and cropped to the middle 16384² (half of each). ``geoseg.segment`` with the cheap seeded model of
infer_scale.py (fp32) segments the crop into a GeoTIFF with ``to_raster(lock=...)``, on Dask's threaded
scheduler with ``--workers`` threads. The run is its own process under /usr/bin/time -v; it prints its
RSS once the libraries and the model are loaded, so the peak can be read as that plus the blocks in
flight.
"""

from __future__ import annotations

import argparse
import datetime as dt
import multiprocessing
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from infer_bench import ensure_mosaic, timed  # noqa: E402
from infer_scale import ENCODER, make_cheap_bundle  # noqa: E402

SIZE = 16384
RES = 0.05  # make_mosaic.py's default pixel size
ORIGIN_X = 500000.0  # and its default left edge


def segment_crop(west: Path, east: Path, bundle: Path, out: Path, chunk: int, workers: int) -> None:
    """The measured run: lazy open, concatenate, crop, segment, write."""
    import threading

    import dask
    import psutil
    import rioxarray
    import xarray as xr

    import geoseg

    model = geoseg.load_model(bundle, device="cpu")
    chunks = {"band": -1, "y": chunk, "x": chunk}
    pair = [rioxarray.open_rasterio(path, chunks=chunks, lock=False) for path in (west, east)]
    joined = xr.concat(pair, dim="x")
    crop = joined.isel(x=slice(SIZE // 2, SIZE // 2 + SIZE))
    classes = geoseg.segment(crop, model, precision="fp32")
    print(f"input: {crop.sizes['band']}×{crop.sizes['y']}×{crop.sizes['x']} {crop.dtype} "
          f"({crop.nbytes / 2**30:.2f} GiB), chunks {crop.data.chunksize}, "
          f"output chunks {classes.data.chunksize}, {classes.data.npartitions} chunks")  # fmt: skip
    print(f"RSS before compute (libraries, model, graph): {psutil.Process().memory_info().rss / 2**30:.2f} GiB")
    start = time.perf_counter()
    with dask.config.set(scheduler="threads", num_workers=workers):
        classes.rio.to_raster(out, tiled=True, compress="deflate", lock=threading.Lock(), recalc_transform=False)
    print(f"segment + write: {time.perf_counter() - start:.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chunk", type=int, default=1024)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out-dir", type=Path, default=ROOT / "bench" / "out")
    parser.add_argument("--run", nargs=4, metavar=("WEST", "EAST", "BUNDLE", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run:
        west, east, bundle, out = (Path(p) for p in args.run)
        segment_crop(west, east, bundle, out, args.chunk, args.workers)
        return
    out = args.out_dir
    out.mkdir(parents=True, exist_ok=True)
    west = ensure_mosaic(out / f"m{SIZE}.tif", SIZE)
    east = ensure_mosaic(out / f"m{SIZE}_east.tif", SIZE, "--seed", "1", "--origin-x", str(ORIGIN_X + SIZE * RES))
    bundle = make_cheap_bundle(out / "bundle_cheap")
    result = out / f"api_{SIZE}_classes.tif"
    seconds, rss, output = timed([
        sys.executable, str(Path(__file__).resolve()), "--chunk", str(args.chunk), "--workers", str(args.workers),
        "--run", str(west), str(east), str(bundle), str(result),
    ])  # fmt: skip
    print(f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC; {platform.machine()}, {multiprocessing.cpu_count()} CPUs; "
          f"{ENCODER} depth 3; chunk {args.chunk}; {args.workers} threads")  # fmt: skip
    print("\n".join(line for line in output.splitlines() if not line.startswith("\t")))
    print(f"| input | chunk | wall s | peak RSS GiB |\n|---|---|---|---|\n| {SIZE}² | {args.chunk} | {seconds:.1f} | "
          f"{rss:.2f} |")  # fmt: skip


if __name__ == "__main__":
    main()
