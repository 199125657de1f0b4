"""The pipeline's ceiling: `geoseg infer` with the network swapped for a 1×1 convolution (issue 13).

    python bench/pipeline_ceiling.py --size 4096 --workers 2

What is left when the network costs (almost) nothing is the pipeline: reading and decoding, normalizing,
cutting windows into batches, softmax, blending and fixed-point accumulation, assembling and writing,
overviews, then polygons and areas. In one process, side by side, each of
the first two run ``--repeat`` times (default 3), interleaved, and reported as medians with every run listed:

1. **I/O floor**: rasterio reads the mosaic in 1024² blocks and writes a tiled, deflate-compressed uint8
   raster of its size with overviews (what any tool must do), on one GDAL thread as issue 13 defines it,
   and again with GDAL's threads for compression and overviews, as geoseg's class map writer uses them;
2. **ceiling run**: `segment_mosaic` (class map only) with the bundle's network replaced in the worker
   cache by a 1×1 convolution of the same input and output channels, `--workers W` threads, timed;
3. **polygons**: `vectorize_class_map` on the ceiling run's class map, timed, with the default sieve
   (regions under 9 px merged into a neighbour) and with `--sieve 0` (one polygon per region), against
   the class map's own seconds (issue 13: the polygon stage should take no longer than segmentation);
4. **profiled run**: the same on the synchronous scheduler under cProfile, and the polygons and areas
   after it, split into stages by the functions that do each stage (cumulative times; cProfile slows
   Python-heavy stages more than NumPy/GDAL-heavy ones, so read the shares as an upper bound for Python).

With ``--memory-sizes 4096 16384`` it then runs the default outputs (class map, sieved polygons, areas)
for each size in a fresh process, polygons with ``--workers`` processes as `geoseg infer` does, and
reports its peak memory (issue 13: within 1.2× from 4096² to 16384²), alone and with its polygon workers
(the process tree's resident memory, sampled every 100 ms).

Prints a markdown table for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import platform
import pstats
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from infer_bench import ensure_mosaic, make_bundle  # noqa: E402


class PointwiseNet:
    """Built lazily so importing this file does not import torch."""

    @staticmethod
    def make(in_channels: int, classes: int):
        import torch

        class Pointwise(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.conv = torch.nn.Conv2d(in_channels, classes, 1)

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                return self.conv(x)

        return Pointwise().eval()


def swap_network(bundle: Path) -> None:
    """Load the bundle into the worker cache as geoseg's workers do, then replace its network."""
    import torch

    from geoseg.infer.block import cached_bundle
    from geoseg.model.bundle import bundle_version

    held = cached_bundle(str(bundle.resolve()), "cpu", bundle_version(bundle))
    held.model = PointwiseNet.make(len(held.meta.bands), len(held.meta.classes)).to(memory_format=torch.channels_last)


def io_floor(mosaic: Path, out: Path, threads: str = "1") -> float:
    """Read in 1024² blocks, write tiled deflate uint8 with overviews; ``threads``: GDAL's for compression and
    overviews ("1", as issue 13 defines the floor, or "ALL_CPUS", as geoseg's class map writer uses)."""
    import numpy as np
    import rasterio
    from rasterio.enums import Resampling
    from rasterio.windows import Window

    start = time.perf_counter()
    with rasterio.Env(GDAL_NUM_THREADS=threads), rasterio.open(mosaic) as src:
        profile = {"driver": "GTiff", "width": src.width, "height": src.height, "count": 1, "dtype": "uint8",
                   "crs": src.crs, "transform": src.transform, "tiled": True, "blockxsize": 256, "blockysize": 256,
                   "compress": "deflate", "num_threads": threads}  # fmt: skip
        with rasterio.open(out, "w", **profile) as dst:
            for row in range(0, src.height, 1024):
                for col in range(0, src.width, 1024):
                    window = Window(col, row, min(1024, src.width - col), min(1024, src.height - row))
                    data = src.read(window=window)
                    dst.write(data[0].astype(np.uint8), 1, window=window)
            factors = [f for f in (2, 4, 8, 16, 32, 64, 128) if min(src.width, src.height) // f >= 64]
            dst.build_overviews(factors, Resampling.mode)
    return time.perf_counter() - start


def segment(mosaic: Path, bundle: Path, out: Path, scheduler: str, workers: int) -> float:
    from geoseg.infer.run import InferOptions, segment_mosaic
    from geoseg.progress import Progress, ProgressMode

    options = InferOptions(scheduler=scheduler, workers=workers, precision="fp32", tta=False)
    start = time.perf_counter()
    segment_mosaic(mosaic, bundle, out, options, overwrite=True, progress=Progress(ProgressMode.none))
    return time.perf_counter() - start


def stage_seconds(profile: cProfile.Profile) -> dict[str, float]:
    """Seconds per stage: the cumulative time of the function that does each stage.

    Under Dask's synchronous scheduler, Python 3.12's cProfile records the block functions' callees but not
    ``block_contribution`` itself (its frames have no recorded callers), so blending and the fixed-point
    accumulation, which happen inline there, fall into the last row with planning and imports.
    """
    stats = pstats.Stats(profile).stats  # type: ignore[attr-defined]

    def total(suffix: str, name: str) -> float:
        return sum(v[3] for (file, _, fn), v in stats.items() if file.endswith(suffix) and fn == name)

    windows = total("model/forward.py", "_torch_outputs")
    network = total("pipeline_ceiling.py", "forward")
    return {
        "read + decode": total("infer/parallel.py", "read"),
        "normalize": total("data/preprocess.py", "apply"),
        "network (1×1 conv)": network,
        "batch, softmax, weighting and rounding (network side)": windows - network,
        "assemble + write blocks": total("infer/run.py", "add"),
        "overviews": total("io/classmap.py", "_overviews"),
        "polygons": total("polygons.py", "vectorize_class_map"),
        "areas": total("polygons.py", "class_areas"),
    }


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return f"{line.split(':', 1)[1].strip()} ({os.cpu_count()} cores)"
    return platform.processor()


class TreeMemory:
    """Peak resident memory of this process and all its descendants together, sampled every 100 ms.

    ``ru_maxrss`` cannot tell a spawned worker's own memory: Linux carries the parent's resident size at the
    fork into the child's maximum across the exec, so each polygon worker would look as large as its parent.
    """

    def __init__(self) -> None:
        import threading

        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return self.peak / 2**30

    def _sample(self) -> None:
        while not self._stop.wait(0.1):
            self.peak = max(self.peak, _tree_rss(os.getpid()))


def _tree_rss(root: int) -> int:
    """Bytes resident in ``root`` and its descendants, from /proc."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    tree, frontier = {root}, [root]
    while frontier:
        children = [pid for pid, ppid in parents.items() if ppid in frontier and pid not in tree]
        tree.update(children)
        frontier = children
    total = 0
    for pid in tree:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        total += next((int(line.split()[1]) * 1024 for line in status.splitlines() if line.startswith("VmRSS:")), 0)
    return total


def default_outputs(size: int, workers: int, out: Path) -> dict:
    """Class map, sieved polygons and areas of a ``size``² mosaic in this process: seconds and peak RSS."""
    from geoseg.polygons import class_areas, vectorize_class_map

    mosaic = ensure_mosaic(out / f"mosaic_{size}.tif", size)
    bundle = make_bundle(out / "bundle_resnet18", "resnet18")
    swap_network(bundle)
    classes = out / f"classes_{size}.tif"
    tree = TreeMemory()
    seconds = segment(mosaic, bundle, classes, "threads", workers)
    start = time.perf_counter()
    made = vectorize_class_map(classes, out / f"polygons_{size}.gpkg", overwrite=True, workers=workers)  # as the CLI
    class_areas(classes)
    polygons = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # KiB -> GiB
    # the sampler can miss the main process's short peaks, which ru_maxrss holds: the tree's peak is at least that
    return {"size": size, "class_map_s": seconds, "polygons_s": polygons, "polygons": made.n_polygons, "peak_gib": peak,
            "tree_peak_gib": max(tree.stop(), peak)}  # fmt: skip


def memory_rows(sizes: list[int], workers: int, out: Path) -> None:
    print("\nDefault outputs (class map, polygons with the default sieve, areas), each size in a fresh process:\n")
    print("| mosaic | class map s | polygons + areas s | polygons | peak RSS GiB | × first "
          "| with polygon workers (sampled; ≥ main) GiB | × first |\n|---|---|---|---|---|---|---|---|")  # fmt: skip
    first = first_tree = None
    for size in sizes:
        command = [sys.executable, __file__, "--child", str(size), "--workers", str(workers), "--out-dir", str(out)]
        row = json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout.splitlines()[-1])
        first, first_tree = first or row["peak_gib"], first_tree or row["tree_peak_gib"]
        print(f"| {size}² | {row['class_map_s']:.1f} | {row['polygons_s']:.1f} | {row['polygons']:,} | "
              f"{row['peak_gib']:.2f} | {row['peak_gib'] / first:.2f} | {row['tree_peak_gib']:.2f} | "
              f"{row['tree_peak_gib'] / first_tree:.2f} |")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out-dir", type=Path, default=ROOT / "bench" / "out" / "pipeline")
    parser.add_argument("--memory-sizes", type=int, nargs="*", default=[])
    parser.add_argument("--repeat", type=int, default=3, help="runs of the floors and the ceiling; medians reported")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    import torch

    if args.child:
        torch.set_num_threads(1)
        print(json.dumps(default_outputs(args.child, args.workers, args.out_dir)))
        return

    torch.set_num_threads(1)
    out = args.out_dir
    out.mkdir(parents=True, exist_ok=True)
    mosaic = ensure_mosaic(out / f"mosaic_{args.size}.tif", args.size)
    bundle = make_bundle(out / "bundle_resnet18", "resnet18")
    swap_network(bundle)
    pixels = args.size * args.size / 1e6

    import geoseg.infer.run  # noqa: F401  imported before the clock starts, as the floor's rasterio is

    runs: dict[str, list[float]] = {"floor": [], "threaded": [], "ceiling": []}
    for _ in range(args.repeat):  # interleaved, so a slow spell of the machine hits all three alike
        runs["floor"].append(io_floor(mosaic, out / "floor.tif"))
        runs["threaded"].append(io_floor(mosaic, out / "floor_threaded.tif", threads="ALL_CPUS"))
        runs["ceiling"].append(segment(mosaic, bundle, out / "classes.tif", "threads", args.workers))
    floor, threaded_floor, ceiling = (statistics.median(runs[k]) for k in ("floor", "threaded", "ceiling"))

    from geoseg.polygons import DEFAULT_SIEVE, class_areas, vectorize_class_map

    polygon_rows = []
    for sieve in (DEFAULT_SIEVE, 0):
        start = time.perf_counter()
        made = vectorize_class_map(
            out / "classes.tif", out / f"polygons_sieve{sieve}.gpkg", overwrite=True, sieve=sieve
        )
        polygon_rows.append((sieve, time.perf_counter() - start, made))

    profile = cProfile.Profile()
    start = time.perf_counter()
    profile.enable()
    segment(mosaic, bundle, out / "classes_profiled.tif", "sync", 1)
    vectorize_class_map(out / "classes_profiled.tif", out / "polygons.gpkg", overwrite=True)
    class_areas(out / "classes_profiled.tif")
    profile.disable()
    profiled = time.perf_counter() - start
    stages = stage_seconds(profile)

    print(f"{args.size}² uint8 RGB mosaic ({pixels:.1f} Mpx), {cpu_name()}, torch {torch.__version__}, "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}\n")  # fmt: skip
    print(f"Medians of {args.repeat} interleaved runs; every run's seconds, first to last: "
          + "; ".join(f"{k} " + ", ".join(f"{v:.2f}" for v in runs[k]) for k in runs) + "\n")  # fmt: skip
    print("| run | seconds | Mpx/s | Mpx/s per worker | × I/O floor |\n|---|---|---|---|---|")
    print(f"| I/O floor (read 1024² blocks, write tiled deflate uint8 + overviews) | {floor:.1f} | "
          f"{pixels / floor:.2f} | – | 1.00 |")  # fmt: skip
    print(f"| the same with GDAL's threads for compression and overviews (as geoseg writes) | {threaded_floor:.1f} | "
          f"{pixels / threaded_floor:.2f} | – | {threaded_floor / floor:.2f} |")  # fmt: skip
    print(f"| `geoseg infer` class map, 1×1-conv network, threads × {args.workers} | {ceiling:.1f} | "
          f"{pixels / ceiling:.2f} | {pixels / ceiling / args.workers:.2f} | {ceiling / floor:.2f} |\n")  # fmt: skip
    print(f"Polygons of that class map ({pixels:.1f} Mpx, against its {ceiling:.1f} s):\n")
    print("| polygons | seconds | × class map | polygons written | pixels merged |\n|---|---|---|---|---|")
    for sieve, seconds, made in polygon_rows:
        label = f"default, `--sieve {sieve}`" if sieve else "`--sieve 0` (one per region)"
        print(f"| {label} | {seconds:.1f} | {seconds / ceiling:.2f} | {made.n_polygons:,} | {made.merged_pixels:,} |")
    print(f"\nProfiled (synchronous, one worker, cProfile; class map then polygons and areas): {profiled:.1f} s\n")
    print("| stage | seconds | share |\n|---|---|---|")
    accounted = 0.0
    for stage, seconds in stages.items():
        accounted += seconds
        print(f"| {stage} | {seconds:.1f} | {100 * seconds / profiled:.0f} % |")
    print(f"| accumulating windows, planning, drift check, imports, scheduling | {profiled - accounted:.1f} | "
          f"{100 * (profiled - accounted) / profiled:.0f} % |")  # fmt: skip
    if args.memory_sizes:
        memory_rows(args.memory_sizes, args.workers, out)


if __name__ == "__main__":
    main()
