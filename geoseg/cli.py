"""The `geoseg` command line. Every command validates its input first and fails in one line (exit 2)."""

from __future__ import annotations

import gc
import json
import signal
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from geoseg.errors import INSTALL_TORCH, GeoSegError, needs_torch
from geoseg.io.raster import atomic_path
from geoseg.polygons import DEFAULT_SIEVE
from geoseg.progress import Progress, ProgressMode

app = typer.Typer(
    name="geoseg",
    help="Segment georeferenced orthomosaics with U-Nets: train a model bundle, evaluate class maps.\n\n"
    "Typical session: `geoseg demo` (makes a survey, trains, evaluates), then `geoseg train config.yaml "
    "--out model/` on your own data and `geoseg evaluate prediction.tif labels.gpkg`.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


class Device(StrEnum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class Remedy(StrEnum):
    none = "none"
    mosaic_stats = "mosaic-stats"
    histogram = "histogram"


REMEDY_HELP = (
    "Map each band of the mosaic onto the training data before normalizing, for imagery from another "
    "camera, season or light (see `geoseg drift`). mosaic-stats: per-mosaic normalization, the mosaic's own "
    "mean and spread onto training's (exposure, white balance, contrast). histogram: histogram matching to "
    "the training histograms (also tone curves; but it also evens out real differences in scene content). "
    "Recorded in the outputs' GEOSEG_INPUT tag."
)
RemedyOption = Annotated[Remedy, typer.Option("--remedy", help=REMEDY_HELP)]
MinAreaOption = Annotated[
    float,
    typer.Option("--min-area", min=0, help="Drop polygons smaller than this (CRS units², m² for projected CRSs)."),
]
SieveOption = Annotated[
    int,
    typer.Option(
        "--sieve",
        min=0,
        help="Polygons only: merge regions smaller than this many pixels into their largest neighbour first "
        "(GDAL's sieve), so speckles do not each become a polygon. 0: one polygon per region. The class map "
        "and the areas are not changed.",
    ),
]
SimplifyOption = Annotated[
    float,
    typer.Option(min=0, help="Simplify polygons with this tolerance (CRS units); shared borders stay shared."),
]
ProgressOption = Annotated[
    ProgressMode,
    typer.Option(
        "--progress",
        help="bar: a progress bar on a terminal; json: one JSON object a line on stderr "
        "({'stage', 'done', 'total'}) for tools such as the QGIS plugin; none: quiet.",
    ),
]


@app.command()
def train(
    config: Annotated[Path, typer.Argument(help="Training config (YAML). See configs/default.yaml.")],
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Bundle folder to write. Default: <config stem>_model "
            "beside the config. Checkpoints and logs go to <out>.train/.",
        ),
    ] = None,
    max_steps: Annotated[
        int | None,
        typer.Option(
            "--max-steps",
            min=1,
            help="Stop after this many optimizer steps (a quick trial); validation runs at the end.",
        ),
    ] = None,
    device: Annotated[Device, typer.Option(help="auto uses a CUDA GPU when one is visible.")] = Device.auto,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue from <out>.train/checkpoints/last.ckpt after an interruption.")
    ] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing bundle at --out.")] = False,
    progress: ProgressOption = ProgressMode.bar,
) -> None:
    """Train a U-Net on orthomosaics and labels (raster or polygons) and write a model bundle.

    The bundle holds the network (smp save_pretrained), classes, bands, normalization, tile size and
    training statistics: everything `geoseg infer` needs. Per-class IoU/F1 print after each validation;
    the full log is <out>.train/logs/metrics.csv.
    """
    from geoseg.config import load_config

    cfg = load_config(config)  # before the slow import of torch and Lightning, so config errors show at once
    from geoseg.train import TrainingInterrupted
    from geoseg.train import train as run_training

    target = out or config.with_name(f"{config.stem}_model")
    reporter = Progress(progress)
    try:
        result = run_training(
            cfg,
            target,
            max_steps=max_steps,
            device=device.value,
            overwrite=overwrite,
            resume=resume,
            emit=reporter.message,
            progress_bar=progress == ProgressMode.bar,
            step_progress=reporter.stage("train") if progress == ProgressMode.json else None,
            refit_progress=reporter.stage("refit") if progress == ProgressMode.json else None,
        )
    except TrainingInterrupted as exc:
        typer.echo(f"geoseg: interrupted; {exc}", err=True)
        sys.exit(INTERRUPTED)
    reporter.message(f"bundle: {result.bundle}")
    if result.scores is not None:
        reporter.message(f"validation mIoU {result.scores.miou:.3f} after {result.steps} steps")


TtaOption = Annotated[
    bool | None,
    typer.Option(
        "--tta/--no-tta",
        help="Test-time augmentation: average each window's 8 flips and 90° rotations (8× the forward passes; "
        "the map still does not depend on block size). Default: the bundle's, i.e. its training recipe's.",
    ),
]


@app.command()
def infer(
    mosaic: Annotated[Path, typer.Argument(help="Orthomosaic to segment (GeoTIFF, COG or VRT), any size.")],
    model: Annotated[
        Path,
        typer.Option("--model", help="Model bundle folder (or .zip) from `geoseg train`, or an ONNX model (.onnx)."),
    ],
    out_dir: Annotated[
        Path, typer.Option("--out-dir", help="Where <stem>_classes.tif, <stem>_polygons.gpkg and <stem>_areas.json go.")
    ] = Path("."),
    tile: Annotated[int | None, typer.Option(min=32, help="Window side in px. Default: the bundle's.")] = None,
    overlap: Annotated[
        int | None,
        typer.Option(
            min=0,
            help="Window overlap in px; overlapping windows are blended with smooth weights. Default: the bundle's.",
        ),
    ] = None,
    block_size: Annotated[
        int,
        typer.Option(
            "--block-size",
            min=64,
            help="Side of the blocks processed in parallel, rounded up to a whole number of window strides "
            "(tile - overlap). Each window runs once whatever the block size, and the result never changes with "
            "it; memory grows with it (about 4 bytes a pixel a class for each block in flight).",
        ),
    ] = 1024,
    batch_size: Annotated[
        int | None,
        typer.Option(
            "--batch-size",
            min=1,
            help="Windows per forward pass. Batches keep one shape (each block's last is "
            "padded), so results never depend on it. Default: 1 on the CPU (no padding wasted), 8 on a GPU.",
        ),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Blocks processed at once. On the CPU each block "
            "uses one core. Default: the number of cores, at most 8.",
        ),
    ] = None,
    scheduler: Annotated[
        str,
        typer.Option(
            help="sync, threads, processes, local (a Dask LocalCluster) or the "
            "address of a running Dask scheduler (tcp://host:8786)."
        ),
    ] = "threads",
    device: Annotated[Device, typer.Option(help="auto uses a CUDA GPU when one is visible.")] = Device.auto,
    precision: Annotated[
        str,
        typer.Option(
            help="auto: bf16 on GPUs (fp16 where bf16 is missing) and on CPUs with AMX, else fp32. Or fp32, bf16, fp16."
        ),
    ] = "auto",
    aoi: Annotated[
        Path | None,
        typer.Option(help="Polygon file (any CRS) limiting where to segment; outside it the class map is nodata."),
    ] = None,
    confidence: Annotated[
        bool,
        typer.Option(
            "--confidence",
            help="Also write <stem>_confidence.tif (percent, the blended probability of the chosen class).",
        ),
    ] = False,
    sieve: SieveOption = DEFAULT_SIEVE,
    min_area: MinAreaOption = 0.0,
    simplify: SimplifyOption = 0.0,
    remedy: RemedyOption = Remedy.none,
    tta: TtaOption = None,
    no_polygons: Annotated[bool, typer.Option("--no-polygons", help="Skip the GeoPackage.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace existing outputs.")] = False,
    progress: ProgressOption = ProgressMode.bar,
) -> None:
    """Segment a mosaic of any size: a class map on its exact grid, polygons and per-class areas.

    The mosaic is cut into blocks processed in parallel (Dask); each block runs the model over
    overlapping windows of the raster-wide grid and blends them, so there are no seams and the result
    does not depend on block size, worker count or scheduler. Nodata (value, alpha or mask) stays nodata.
    """
    from geoseg.infer.outputs import OutputPaths, finish_outputs
    from geoseg.infer.run import InferOptions, default_workers, segment_mosaic
    from geoseg.io.raster import ensure_writable

    paths = OutputPaths.for_stem(out_dir, mosaic.stem, polygons=not no_polygons, confidence=confidence)
    for path in (paths.polygons, paths.areas):
        if path is not None:
            ensure_writable(path, overwrite, instead="another --out-dir")
    reporter = Progress(progress)
    options = InferOptions(tile=tile, overlap=overlap, block_size=block_size, batch_size=batch_size,
                           workers=workers or default_workers(), scheduler=scheduler, device=device.value,
                           precision=precision, aoi=aoi, confidence=confidence,
                           remedy=remedy.value, tta=tta)  # fmt: skip
    result = segment_mosaic(mosaic, model, paths.classes, options, overwrite=overwrite,
                            confidence_path=paths.confidence, progress=reporter)  # fmt: skip
    if result.drift is not None:
        reporter.message(("warning: " if result.drift.drifted else "") + result.drift.verdict())
    tta_note = ", tta" if result.spec.tta else ""
    reporter.message(f"class map: {result.classes} ({result.spec.precision}, tile {result.spec.tile}, "
                     f"overlap {result.spec.overlap}{tta_note}, {result.blocks} blocks)")  # fmt: skip
    if result.confidence is not None:
        reporter.message(f"confidence: {result.confidence}")
    if paths.polygons is not None:
        reporter.update("polygons", 0, 1)
    finished = finish_outputs(paths, min_area=min_area, simplify=simplify, overwrite=overwrite, sieve=sieve,
                              polygon_workers=workers or default_workers())  # fmt: skip
    if paths.polygons is not None:
        reporter.update("polygons", 1, 1)
        reporter.message(
            f"polygons: {paths.polygons} ({finished.polygons:,}{sieved_note(finished.merged_pixels, sieve)})"
        )
    reporter.message(areas_table(finished.areas))
    reporter.message(f"areas: {paths.areas}")


@app.command()
def drift(
    mosaic: Annotated[Path, typer.Argument(help="Orthomosaic to check (GeoTIFF, COG or VRT), any size.")],
    model: Annotated[Path, typer.Option("--model", help="Model bundle folder (or .zip), or an ONNX model (.onnx).")],
    json_out: Annotated[
        Path | None,
        typer.Option(
            "--json",
            help="Write the details here: per band the distances, means, spreads and both "
            "histograms; the low-confidence share; the verdict.",
        ),
    ] = None,
    plot: Annotated[
        Path | None, typer.Option("--plot", help="Write a PNG of each band's training and mosaic histograms here.")
    ] = None,
    remedy: Annotated[
        Remedy,
        typer.Option(
            "--remedy",
            help="Measure the model's confidence on the mosaic as `geoseg infer --remedy` "
            "would feed it, to see whether a remedy helps. The band distances are the mosaic's as it is.",
        ),
    ] = Remedy.none,
    threshold: Annotated[
        float,
        typer.Option(
            "--threshold",
            min=0.0,
            max=1.0,
            help="A pixel is low-confidence when its top class probability is below this.",
        ),
    ] = 0.5,
    no_model: Annotated[
        bool, typer.Option("--no-model", help="Compare the bands only; do not run the model on sample windows.")
    ] = False,
    device: Annotated[Device, typer.Option(help="auto uses a CUDA GPU when one is visible.")] = Device.auto,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace existing --json and --plot files.")] = False,
) -> None:
    """Is this mosaic out of the model's training distribution? One verdict line, details on request.

    Each band is compared with the bundle's training histogram: the Wasserstein-1 distance (how far, on
    average, pixel values must move to turn one distribution into the other) in training standard
    deviations, the mean shift and the spread ratio, from a decimated read (seconds on any mosaic). The
    model also runs on a sample of windows (at most ~4 Mpx) to measure the share of low-confidence
    pixels. Drift is reported beyond 1.0 sd or a spread ×1.5 (×1/1.5), or when the model is unsure on
    15 points more of the pixels than on its training imagery (bundles trained by this version record
    that share; models are often overconfident on shifted imagery, so the bands decide first). For
    scale: two neighbouring aerial tiles from one survey lie 0.8 sd apart, mostly from different land
    cover. Bundles without histograms are compared by mean and spread. Exit code 0 whatever the
    verdict; the JSON's "drifted" says it for scripts.
    """
    from geoseg.device import resolve_device
    from geoseg.drift.check import check_drift
    from geoseg.io.raster import ensure_writable, read_info
    from geoseg.model.bundle import load_bundle

    for path in (json_out, plot):
        if path is not None:
            ensure_writable(path, overwrite)
    read_info(mosaic)  # a wrong path fails before the model loads
    bundle = load_bundle(model, device=resolve_device(device.value))
    report = check_drift(mosaic, bundle, remedy=remedy.value, threshold=threshold, run_model=not no_model)
    typer.echo(report.verdict())
    if json_out is not None:
        document = {"mosaic": str(mosaic), "bundle": str(model), "remedy": remedy.value, **report.to_json()}
        with atomic_path(json_out) as tmp:
            tmp.write_text(json.dumps(document, indent=2, allow_nan=False) + "\n")
        typer.echo(f"details: {json_out}")
    if plot is not None:
        from geoseg.drift.plot import write_drift_plot

        write_drift_plot(report, plot, f"{mosaic.name} against {model.name}")
        typer.echo(f"plot: {plot}")


@app.command(
    epilog="Exit codes: 0 all mosaics done; 2 bad input (nothing run); 3 finished, but some mosaics "
    "failed (named in the summary and the manifest); 130 interrupted (rerun with --resume)."
)
def batch(
    inputs: Annotated[
        list[str],
        typer.Argument(
            help="Mosaics: files, folders (searched recursively for .tif/.tiff/.vrt/.img/.jp2), globs in quotes "
            "('survey/**/*.tif') or text files listing one path a line.",
            show_default=False,
        ),
    ],
    model: Annotated[
        Path, typer.Option("--model", "-m", help="Model bundle folder (or .zip), or an ONNX model (.onnx).")
    ],
    out_dir: Annotated[
        Path,
        typer.Option(
            "--out-dir",
            "-o",
            help="Folder for every mosaic's outputs (named as `geoseg infer` names them), the manifest "
            "geoseg_batch.json and the survey report.",
        ),
    ],
    scheduler: Annotated[
        str | None,
        typer.Option(
            help="A running Dask scheduler: its address (tcp://host:8786, tls://…) or its scheduler file. "
            "Default: a local cluster on this machine. Workers must see the same paths (shared storage) "
            "and have geoseg installed.",
        ),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(min=1, help="Worker processes of the local cluster (one core each). Default: the cores, ≤ 8."),
    ] = None,
    gpus: Annotated[
        str | None,
        typer.Option(
            help="all or N: a local cluster of one worker per GPU instead, each seeing only its own GPU "
            "(CUDA_VISIBLE_DEVICES), in the order CUDA_VISIBLE_DEVICES lists them. For several machines, "
            "start a cluster with a GPU per worker and pass --scheduler (README).",
        ),
    ] = None,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="Continue an earlier batch in --out-dir: mosaics finished with the same input file and bundle "
            "are skipped, the rest (failed, interrupted, changed) run again.",
        ),
    ] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Run every mosaic again, replacing outputs.")] = False,
    tile: Annotated[int | None, typer.Option(min=32, help="Window side in px. Default: the bundle's.")] = None,
    overlap: Annotated[int | None, typer.Option(min=0, help="Window overlap in px. Default: the bundle's.")] = None,
    block_size: Annotated[
        int,
        typer.Option(
            "--block-size",
            min=64,
            help="Side of the blocks sent to workers, rounded up to whole window strides. Results never depend on it.",
        ),
    ] = 1024,
    batch_size: Annotated[
        int | None, typer.Option("--batch-size", min=1, help="Windows per forward pass. Default: 1 CPU, 8 GPU.")
    ] = None,
    device: Annotated[
        Device, typer.Option(help="auto uses CUDA when this machine sees a GPU; on a GPU cluster pass cuda.")
    ] = Device.auto,
    precision: Annotated[str, typer.Option(help="auto, fp32, bf16 or fp16, as for `geoseg infer`.")] = "auto",
    confidence: Annotated[bool, typer.Option("--confidence", help="Also write <stem>_confidence.tif.")] = False,
    no_polygons: Annotated[bool, typer.Option("--no-polygons", help="Skip the per-mosaic GeoPackages.")] = False,
    sieve: SieveOption = DEFAULT_SIEVE,
    min_area: MinAreaOption = 0.0,
    simplify: SimplifyOption = 0.0,
    merge_polygons: Annotated[
        bool,
        typer.Option(
            "--merge-polygons",
            help="Also write survey_polygons.gpkg: every mosaic's polygons with a `mosaic` field (CRS of the first).",
        ),
    ] = False,
    remedy: RemedyOption = Remedy.none,
    tta: TtaOption = None,
    tls_ca_file: Annotated[Path | None, typer.Option("--tls-ca-file", help="CA certificate of a TLS cluster.")] = None,
    tls_cert: Annotated[Path | None, typer.Option("--tls-cert", help="Client certificate for a TLS cluster.")] = None,
    tls_key: Annotated[Path | None, typer.Option("--tls-key", help="Client private key for a TLS cluster.")] = None,
    progress: ProgressOption = ProgressMode.bar,
) -> None:
    """Segment a whole survey on a Dask cluster: every mosaic's outputs, a manifest and a survey report.

    Blocks of all mosaics share the cluster, so one huge mosaic and many small ones both keep every
    worker busy. Each finished mosaic is recorded in DIR/geoseg_batch.json; a failing mosaic is
    recorded with its reason and the others go on; a worker that dies has its blocks rerun elsewhere.
    The survey report (survey_report.csv and .json) gives the area per class of each mosaic and in total.
    """
    from geoseg.batch.run import BatchOptions, print_summary, run_batch
    from geoseg.device import gpu_ids
    from geoseg.errors import ConfigError
    from geoseg.infer.cluster import ClusterOptions
    from geoseg.infer.run import InferOptions, default_workers

    if scheduler is not None and workers is not None:
        raise ConfigError("--workers sizes the local cluster; with --scheduler the cluster's own workers run")
    if gpus is not None and (scheduler is not None or workers is not None or device is Device.cpu):
        given = "--scheduler" if scheduler is not None else "--workers" if workers is not None else "--device cpu"
        raise ConfigError(f"--gpus starts a local cluster of one worker per GPU; leave out {given}")
    if resume and overwrite:
        raise ConfigError("--resume keeps finished mosaics and --overwrite redoes them; choose one")
    infer_options = InferOptions(tile=tile, overlap=overlap, block_size=block_size, batch_size=batch_size,
                                 device=device.value, precision=precision, confidence=confidence,
                                 remedy=remedy.value, tta=tta)  # fmt: skip
    cluster = ClusterOptions(scheduler=scheduler, workers=workers or default_workers(), tls_ca_file=tls_ca_file,
                             tls_cert=tls_cert, tls_key=tls_key, gpus=gpu_ids(gpus) if gpus else ())  # fmt: skip
    options = BatchOptions(infer=infer_options, cluster=cluster, polygons=not no_polygons, sieve=sieve,
                           min_area=min_area, simplify=simplify, merge_polygons=merge_polygons, resume=resume,
                           overwrite=overwrite)  # fmt: skip
    summary = run_batch(inputs, model, out_dir, options, Progress(progress))
    print_summary(summary)
    if summary.exit_code:
        raise typer.Exit(summary.exit_code)


def areas_table(areas: dict) -> str:
    rows = [f"{'class':<24} {'pixels':>12} {'area':>14} {'share':>7}"]
    for c in areas["classes"]:
        area = f"{c['area_m2']:,.1f} m²" if c.get("area_m2") is not None else f"{c['area']:,.1f}"
        rows.append(f"{c['name']:<24} {c['pixels']:>12,} {area:>14} {c['percent']:>6.1f}%")
    return "\n".join(rows)


@app.command()
def evaluate(
    prediction: Annotated[Path, typer.Argument(help="Class map GeoTIFF (one band of class ids, nodata 255).")],
    labels: Annotated[
        Path,
        typer.Argument(
            help="Reference labels: a raster of class values, or polygons (GPKG/GeoJSON/Shapefile) with --label-field."
        ),
    ],
    label_field: Annotated[
        str | None, typer.Option("--label-field", help="Attribute holding the class value, for vector labels.")
    ] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the scores as JSON here.")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing --json file.")] = False,
) -> None:
    """Confusion matrix, per-class IoU, F1, precision and recall, and mIoU of a class map.

    Only pixels labelled in LABELS and valid in PREDICTION count. Label rasters on another grid are
    resampled (nearest) onto the prediction's grid; polygons in another CRS are reprojected.
    """
    from geoseg.evaluate import evaluate as run_evaluation
    from geoseg.io.raster import ensure_writable

    if json_out is not None:
        ensure_writable(json_out, overwrite)
    result = run_evaluation(prediction, labels, label_field=label_field)
    typer.echo(result.table())
    if json_out is not None:
        with atomic_path(json_out) as tmp:
            tmp.write_text(json.dumps(result.to_json(), indent=2) + "\n")
        typer.echo(f"scores: {json_out}")


@app.command()
def vectorize(
    class_map: Annotated[Path, typer.Argument(help="Class map GeoTIFF (one band of class ids, nodata 255).")],
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help="Polygons to write: .gpkg, .geojson or .parquet. Default: <class map stem>_polygons.gpkg here.",
        ),
    ] = None,
    model: Annotated[
        Path | None,
        typer.Option("--model", "-m", help="Take class names from this bundle. Default: the class map's own table."),
    ] = None,
    sieve: SieveOption = DEFAULT_SIEVE,
    min_area: MinAreaOption = 0.0,
    simplify: SimplifyOption = 0.0,
    connectivity: Annotated[
        int, typer.Option(help="4: pixels touching by an edge form a region; 8: corners count too.")
    ] = 4,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing output.")] = False,
    progress: ProgressOption = ProgressMode.bar,
) -> None:
    """Polygons from a class map: one polygon per connected region of a class, with class_id, class_name, area.

    The polygons keep the class map's CRS; simplification keeps borders between classes shared (no gaps).
    """
    from geoseg.infer.run import default_workers
    from geoseg.polygons import vectorize_class_map

    classes = bundle_classes(model)
    reporter = Progress(progress)
    # One step with no inner progress: a bar would only flash, so only programs (json) hear of it.
    stage = reporter.stage("polygons") if progress == ProgressMode.json else lambda done, total: None
    stage(0, 1)
    target = out or Path(f"{class_map.stem}_polygons.gpkg")
    result = vectorize_class_map(class_map, target, classes, min_area=min_area, simplify=simplify,
                                 connectivity=connectivity, overwrite=overwrite, sieve=sieve,
                                 workers=default_workers())  # fmt: skip
    stage(1, 1)
    dropped = f", {result.dropped:,} under --min-area dropped" if result.dropped else ""
    reporter.message(
        f"polygons: {result.path} ({result.n_polygons:,}{dropped}{sieved_note(result.merged_pixels, sieve)})"
    )


@app.command()
def change(
    maps: Annotated[
        list[Path],
        typer.Argument(help="Two or more class maps (GeoTIFFs of class ids, nodata 255), earliest first; any grids."),
    ],
    out_dir: Annotated[Path, typer.Option("--out-dir", help="Where the tables, change maps and charts go.")] = Path(
        "change"
    ),
    model: Annotated[
        Path | None,
        typer.Option("--model", "-m", help="Take class names from this bundle. Default: the maps' own tables."),
    ] = None,
    aoi: Annotated[
        Path | None,
        typer.Option("--aoi", help="Count only pixels whose centre lies in these polygons (any CRS), e.g. a plot."),
    ] = None,
    grid: Annotated[
        Path | None,
        typer.Option("--grid", help="Compare on this raster's grid (CRS, pixels) instead of the earlier map's."),
    ] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace earlier outputs in --out-dir.")] = False,
) -> None:
    """What changed between surveys: transition matrices, change maps and, for a series, cover over time.

    Each later map is resampled onto the one before's grid with nearest neighbour, and only pixels valid in
    both count. For two maps, writes DIR/transitions.csv (from, to, pixels, m², ha), DIR/transitions.json
    (the matrix, and per class: cover before and after, gain, loss, net change, persistence), DIR/change.tif
    (code from_id × 256 + to_id, names in its GEOSEG_TRANSITIONS tag; colours: unchanged grey, a change in
    the new class's colour) and DIR/change.png (cover per class, transition heat map). For three or more,
    each consecutive pair's files go into DIR/1-2, DIR/2-3, …, and DIR/cover.csv and DIR/cover.png give
    each class's cover at each date (over that map's valid pixels).
    Classes are matched by id; names come from --model, else the maps' tables, which must agree.

    Example: geoseg change plot3_2023.tif plot3_2024.tif plot3_2025.tif --out-dir plot3_change
    """
    from geoseg.change_maps import compare_series

    classes = bundle_classes(model)
    series = compare_series(maps, out_dir, classes=classes, overwrite=overwrite, aoi=aoi, grid=grid)
    for index, result in enumerate(series.pairs):
        if len(series.pairs) > 1:
            typer.echo(f"{index + 1} → {index + 2}: {maps[index].name} → {maps[index + 1].name}")
        unit = "m²" if result.pixel_area_m2 else "px"
        factor = result.pixel_area_m2 or 1.0
        typer.echo(f"{'class':24} {'before %':>9} {'after %':>9} {'gain ' + unit:>14} {'loss ' + unit:>14} "
                   f"{'net ' + unit:>14}")  # fmt: skip
        for row in result.summary():
            amounts = " ".join(f"{row[key] * factor:14,.1f}" for key in ("gain_px", "loss_px", "net_px"))
            typer.echo(f"{row['name'][:24]:24} {row['before_percent']:9.1f} {row['after_percent']:9.1f} {amounts}")
        typer.echo(f"outputs: {', '.join(str(p) for p in result.outputs.values())}")
    if series.outputs:
        typer.echo(f"cover over time: {', '.join(str(p) for p in series.outputs.values())}")


class LandscapeLevel(StrEnum):
    class_ = "class"
    landscape = "landscape"
    patch = "patch"


@app.command()
def landscape(
    class_map: Annotated[Path, typer.Argument(help="A class map (GeoTIFF of class ids, nodata 255), projected CRS.")],
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="CSV or JSON file for the metrics. Default: <map stem>_landscape.csv here."),
    ] = None,
    level: Annotated[
        LandscapeLevel,
        typer.Option("--level", help="class: a row per class; landscape: one row; patch: a row per patch."),
    ] = LandscapeLevel.class_,
    by: Annotated[
        Path | None,
        typer.Option("--by", help="Polygons of plots or zones (any CRS): the metrics for each zone on its own."),
    ] = None,
    zone_field: Annotated[
        str | None, typer.Option("--zone-field", help="The attribute of --by that names each zone.")
    ] = None,
    aoi: Annotated[
        Path | None, typer.Option("--aoi", help="Measure only inside these polygons (any CRS), e.g. the plot.")
    ] = None,
    model: Annotated[
        Path | None,
        typer.Option("--model", "-m", help="Take class names from this bundle. Default: the map's own table."),
    ] = None,
    edges_png: Annotated[
        Path | None,
        typer.Option("--edges-png", help="Also draw the map with its class edges coloured convex/concave (PNG)."),
    ] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing --out.")] = False,
) -> None:
    """FRAGSTATS-style landscape metrics of a class map, computed by pylandstats.

    Class level: cover (proportion_of_landscape, %), number_of_patches, area_mn (mean patch area, ha),
    edge_density (m/ha), landscape_shape_index and largest_patch_index (%). Landscape level adds
    shannon_diversity_index. Patch level: area (ha), perimeter (m), perimeter_area_ratio, shape_index,
    fractal_dimension. Patches are 8-connected (FRAGSTATS' default). Nodata (255) is outside the landscape.
    Class rows also give convex_edge_share and concave_edge_share: how much of each class's boundary bulges
    out or curves in (turning of more than 5° over 10 px of edge each way; see the README).

    Example: geoseg landscape plot3_2025_classes.tif --by plots.gpkg --zone-field plot -o plot_metrics.csv
    """
    from geoseg.io.raster import ensure_writable
    from geoseg.landscape_metrics import UNITS, check_output, landscape_metrics, write_edges_figure, write_metrics

    target = out or Path(f"{class_map.stem}_landscape.csv")
    check_output(target, overwrite)  # before the work, not after it
    if edges_png is not None:
        ensure_writable(edges_png, overwrite)
    classes = bundle_classes(model)
    rows = landscape_metrics(class_map, level.value, classes, by, zone_field, aoi)
    if level != LandscapeLevel.patch:
        metrics = [k for k in rows[0] if k in UNITS]
        label = "zone" if by is not None else ""
        header = ([f"{label:12}"] if by else []) + [f"{'class':20}"] + [f"{m[:18]:>18}" for m in metrics]
        typer.echo(" ".join(header))
        for row in rows:
            cells = ([f"{str(row['zone'])[:12]:12}"] if by else []) + [f"{str(row['class'] or '(all)')[:20]:20}"]
            typer.echo(" ".join(cells + [f"{row[m]:18.6g}" for m in metrics]))
    write_metrics(rows, target, overwrite)
    typer.echo(f"metrics: {target} ({len(rows)} rows)")
    if edges_png is not None:
        typer.echo(f"edges: {write_edges_figure(class_map, edges_png, classes, overwrite)}")


def sieved_note(merged_pixels: int, sieve: int) -> str:
    return f"; {merged_pixels:,} px of regions under {sieve} px merged into a neighbour" if merged_pixels else ""


def bundle_classes(model: Path | None) -> list | None:
    """The classes of ``--model``, read from its geoseg.json only (torch is imported only when one is given)."""
    if model is None:
        return None
    from geoseg.model.bundle import read_bundle_meta

    return read_bundle_meta(model).classes


class ExportFormat(StrEnum):
    onnx = "onnx"


@app.command()
def export(
    model: Annotated[Path, typer.Argument(help="Model bundle folder (or .zip) from `geoseg train`.")],
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="The file to write (.onnx). Default: <bundle name>.onnx here."),
    ] = None,
    format: Annotated[
        ExportFormat, typer.Option("--format", help="onnx: ONNX Runtime, Deepness (QGIS) and `geoseg infer`.")
    ] = ExportFormat.onnx,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing file.")] = False,
) -> None:
    """Export a model bundle as one ONNX file, for Deepness in QGIS, ONNX Runtime, or `geoseg infer --model`.

    The graph takes the mosaic's own band values as float32 (uint8 0-255, uint16 counts, floats: the
    bundle's normalization is inside it), N × bands × tile × tile with the bundle's window size and any N,
    and gives per-class probabilities N × classes × tile × tile. Its metadata holds what Deepness reads
    (model_type, class_names, resolution in cm/px, tile size, overlap in %) and the whole geoseg.json.
    Needs `pip install 'geoseg[onnx]'`.
    """
    from geoseg.model.bundle import load_bundle
    from geoseg.model.onnx_export import export_onnx

    target = out or Path(f"{model.resolve().name.removesuffix('.zip')}.onnx")
    if target.exists() and not overwrite:
        from geoseg.errors import OutputExistsError

        raise OutputExistsError("exists; pass --overwrite to replace it", target)
    bundle = load_bundle(model)
    path = export_onnx(bundle, target, overwrite=overwrite)
    typer.echo(f"ONNX model: {path} ({len(bundle.meta.bands)} band(s) in, {len(bundle.meta.classes)} classes out, "
               f"{bundle.meta.tile_size} px windows)")  # fmt: skip


@app.command()
def suggest(
    mosaic: Annotated[Path, typer.Argument(help="Orthomosaic the model segments (GeoTIFF, COG or VRT).")],
    model: Annotated[Path, typer.Option("--model", help="Model bundle folder (or .zip), or an ONNX model (.onnx).")],
    count: Annotated[int, typer.Option("-n", "--count", help="How many windows to suggest.")] = 20,
    out: Annotated[
        Path | None,
        typer.Option("-o", "--out", help="GeoPackage to write (layer to_label). Default: <mosaic stem>_to_label.gpkg."),
    ] = None,
    labels: Annotated[
        list[Path] | None,
        typer.Option(
            "--labels",
            help="Labels you already have (polygons, lines or a label raster; repeat for several): no window "
            "holds a labelled pixel.",
        ),
    ] = None,
    label_values: Annotated[
        str | None,
        typer.Option(
            "--label-values",
            help="Label rasters: the values that are labels, comma-separated (e.g. 0,1 where 0 is background but "
            "tagged nodata). Default: every value but the file's nodata and 255.",
        ),
    ] = None,
    mask: Annotated[
        Path | None,
        typer.Option(
            "--mask",
            help="Areas no window may touch: polygons, or a raster where every value but 0 is excluded (the output "
            "of `geoseg quality-mask`).",
        ),
    ] = None,
    size: Annotated[
        str | None,
        typer.Option(
            "--size",
            help="Window side: pixels (256) or metres (40m), rounded up to even px. Default: the model's tile size.",
        ),
    ] = None,
    strategy: Annotated[
        str,
        typer.Option(
            "--strategy",
            help="uncertainty: the windows the model is least sure of; random: qualifying windows at random (a "
            "baseline; the model does not run).",
        ),
    ] = "uncertainty",
    seed: Annotated[int, typer.Option("--seed", help="Seeds the window grid's offset and the order of ties.")] = 0,
    tta: TtaOption = None,
    device: Annotated[Device, typer.Option(help="auto uses a CUDA GPU when one is visible.")] = Device.auto,
    workers: Annotated[
        int | None, typer.Option(min=1, help="Blocks segmented at once. Default: the cores, at most 8.")
    ] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing output.")] = False,
    progress: ProgressOption = ProgressMode.bar,
) -> None:
    """Where to label next: the N windows whose labels would teach the model most, as polygons to label in QGIS.

    The model segments the mosaic (as `geoseg infer --confidence`); each candidate window's score is the mean
    of 1 - the blended probability of its pixels' chosen class (higher: less sure). Candidates sit half a
    window apart from a seeded offset; a window qualifies only when none of its pixels is nodata, masked or
    already labelled. The best are taken in order of score, at least one window's width apart (closer, down to
    not overlapping, only when too few are that far apart). Attributes: rank (1 = label first), score.
    Then: label those windows, add them to the training labels and train again (README: "Where to label next").
    """
    from geoseg.assess.suggest import SuggestOptions, write_suggestions
    from geoseg.assess.suggest import suggest as choose
    from geoseg.infer.run import default_workers
    from geoseg.io.raster import ensure_writable

    target = out or Path(f"{mosaic.stem}_to_label.gpkg")
    ensure_writable(target, overwrite)
    options = SuggestOptions(count=count, size=size, labels=tuple(labels or ()),
                             label_values=parse_label_values(label_values), mask=mask, strategy=strategy, seed=seed,
                             tta=tta, device=device.value, workers=workers or default_workers())  # fmt: skip
    reporter = Progress(progress)
    result = choose(mosaic, model, options, reporter)
    write_suggestions(result, target)
    shortfall = f" (only {len(result.frame)} of {count} qualify)" if len(result.frame) < count else ""
    reporter.message(f"{len(result.frame)} windows of {result.window} px{shortfall}, from {result.candidates:,} "
                     f"candidates, at least {result.spacing} px apart: {target}")  # fmt: skip
    for row in result.frame.head(5).itertuples():
        score = "" if row.score != row.score else f" score {row.score:.3f}"
        reporter.message(f"  rank {row.rank}:{score} at row {row.row}, col {row.col}")


def parse_label_values(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise typer.BadParameter(f"--label-values takes whole numbers separated by commas, not {text!r}") from None


@app.command("quality-mask")
def quality_mask(
    mosaic: Annotated[Path, typer.Argument(help="Orthomosaic GeoTIFF/VRT.")],
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Mask GeoTIFF to write. Default: <mosaic stem>_quality.tif in the current folder."),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config", help="Take bands, scaling and thresholds from this training config (data.quality_mask)."
        ),
    ] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing mask.")] = False,
    progress: ProgressOption = ProgressMode.bar,
) -> None:
    """Write the quality mask training would use: 0 ok, 1 overexposed, 2 underexposed, 3 blurred, 255 nodata.

    Open it in QGIS over the mosaic to tune data.quality_mask thresholds before training.
    """
    from geoseg.quality import write_quality_mask

    target = out or Path(f"{mosaic.stem}_quality.tif")
    path, counts = write_quality_mask(mosaic, target, config, overwrite, Progress(progress))
    total = max(sum(counts.values()), 1)
    summary = ", ".join(f"{name} {100 * n / total:.1f}%" for name, n in counts.items())
    typer.echo(f"quality mask: {path} ({summary})")


@app.command()
def demo(
    out_dir: Annotated[Path, typer.Option("--out-dir", help="Folder for the survey, bundle and report.")] = Path(
        "demo_output"
    ),
    size: Annotated[int, typer.Option(min=256, max=8192, help="Side of the generated mosaic in pixels.")] = 1024,
    max_steps: Annotated[int, typer.Option("--max-steps", min=1, help="Training steps.")] = 60,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace earlier demo outputs.")] = False,
) -> None:
    """Generate a biocrust survey (soil, cyanobacteria, lichen, moss), train briefly, evaluate, report."""
    from geoseg.demo import run_demo

    run_demo(out_dir, size=size, max_steps=max_steps, overwrite=overwrite, emit=typer.echo)


INTERRUPTED = 130  # the shell's code for a run stopped by SIGINT


def _terminated(signum: int, frame: object) -> None:
    """SIGTERM (timeout, SLURM's time limit, container runtimes) stops a run the way Ctrl-C does."""
    raise KeyboardInterrupt


def main() -> None:
    """Entry point: user errors become one line and exit code 2; bugs keep their traceback (exit 1)."""
    try:
        _run()
    finally:
        # The interpreter's last garbage collection walks every object the libraries made at import (torch's
        # compiler stack, sympy): 0.4 s of every command's exit. Frozen, they are left to the process's end.
        gc.freeze()


def _run() -> None:
    signal.signal(signal.SIGTERM, _terminated)
    try:
        # Not standalone, typer turns Ctrl-C (KeyboardInterrupt) and `typer.Exit(n)` into a returned code n.
        code = app(standalone_mode=False)
    except GeoSegError as exc:
        typer.echo(f"geoseg: error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        code = INTERRUPTED
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        sys.exit(1)
    except ModuleNotFoundError as exc:
        if not needs_torch(exc):
            raise
        typer.echo(f"geoseg: error: this needs PyTorch, which this install lacks (no module {exc.name!r}): "
                   f"{INSTALL_TORCH}; ONNX models run without it (geoseg infer MOSAIC --model model.onnx)",
                   err=True)  # fmt: skip
        sys.exit(2)
    except Exception as exc:
        if not raised_while_interrupted(exc):
            _usage_error_or_raise(exc)
        code = INTERRUPTED
    if code == INTERRUPTED:
        typer.echo("geoseg: interrupted; outputs not completed were not written", err=True)
    sys.exit(code if isinstance(code, int) else 0)


def raised_while_interrupted(exc: BaseException) -> bool:
    """Whether ``exc`` came from clean-up on the way out of Ctrl-C or SIGTERM: a KeyboardInterrupt is in its
    context chain. A library's own exit code can fail when the interrupt lands inside it (rasterio's GDAL
    environment stack, seen under load); the run was still interrupted, and the outputs' clean-up still ran."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, KeyboardInterrupt):
            return True
        seen.add(id(exc))
        exc = exc.__context__
    return False


def _usage_error_or_raise(exc: Exception) -> None:
    """A missing or invalid option is bad input: one line and click's exit code (2). Anything else is a bug."""
    if not isinstance(exc, _click_exceptions()):
        raise exc
    if type(exc).__name__ == "NoArgsIsHelpError":  # a bare `geoseg`: the help, as click does
        exc.show()
    else:
        ctx = getattr(exc, "ctx", None)
        hint = f"; see `{ctx.command_path if ctx is not None else 'geoseg'} --help`"
        typer.echo(f"geoseg: error: {' '.join(exc.format_message().split()).rstrip('.')}{hint}", err=True)
    sys.exit(exc.exit_code)  # 2 for usage errors


def _click_exceptions() -> tuple[type[Exception], ...]:
    """Click's exception base: typer >= 0.2x raises its vendored copy (typer.TyperException), older ones click's."""
    types: list[type[Exception]] = [t for t in (getattr(typer, "TyperException", None),) if t is not None]
    try:
        import click
    except ImportError:
        return tuple(types)
    return (*types, click.ClickException)


if __name__ == "__main__":
    main()
