"""Synthetic field survey for the demo and the tests: a small UAV orthomosaic of biological soil crust.

The scene mimics 1 cm imagery of a crusted dryland soil (Colorado Plateau-like, EPSG:32612): blobby
patches of bare soil, cyanobacterial crust, lichen and moss, each with its own colour and texture,
under smooth illumination, with the defects real orthomosaics have: a wavy nodata collar along one or
two edges, a blown-out sun-glare patch and a motion-blurred patch. Labels come as a raster on the same
grid and as polygons, so both label paths of the toolkit can be exercised.

Everything is drawn from ``numpy.random.SeedSequence(seed)``: the same seed gives byte-identical rasters.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import rasterio
import rasterio.features
from rasterio.crs import CRS
from rasterio.transform import Affine, from_origin
from scipy import ndimage
from shapely.geometry import shape

CLASSES: dict[int, tuple[str, str]] = {
    1: ("bare soil", "#c4a67e"),
    2: ("cyanobacterial crust", "#6e5c48"),
    3: ("lichen", "#b4bc9c"),
    4: ("moss", "#48602a"),
}

CRS_EPSG = 32612
PIXEL_SIZE = 0.01  # metres: 1 cm ground sampling distance
ORIGIN = (600_000.0, 4_250_000.0)  # upper-left corner, UTM zone 12N (south-eastern Utah)
MIN_POLYGON_PIXELS = 50
MIN_SIZE = 128

IMAGE_NAME = "survey_ortho.tif"
LABELS_NAME = "survey_labels.tif"
VECTOR_NAME = "survey_labels.gpkg"
VECTOR_LAYER = "labels"

Box = tuple[int, int, int, int]  # row0, row1, col0, col1 (half-open pixel ranges)

# Per class (in CLASSES order): mean RGB, and the competition bias that sets its share of the scene.
_BASE_RGB = np.array(
    [[192, 166, 128], [118, 99, 80], [172, 180, 150], [68, 90, 44]],
    dtype=np.float32,
)
_CLASS_BIAS = np.array([0.35, 0.45, -0.15, 0.05], dtype=np.float32)
# Patch-shape octaves: (sigma in pixels, weight). Large sigmas make zones, small ones ragged borders.
_PATCH_OCTAVES = ((56.0, 1.0), (22.0, 0.8), (9.0, 0.35), (3.0, 0.12))


@dataclass(frozen=True)
class SurveyFiles:
    """Paths of the generated survey and where its deliberate defects are (pixel boxes)."""

    image: Path
    labels: Path
    labels_vector: Path
    overexposed_box: Box
    blurred_box: Box


def make_survey(out_dir: Path, size: int = 1024, seed: int = 0) -> SurveyFiles:
    """Write a synthetic biocrust survey (image, label raster, label polygons) into ``out_dir``."""
    if size < MIN_SIZE:
        raise ValueError(f"size must be at least {MIN_SIZE} pixels, got {size}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rngs = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(5)]
    grid = (size, size)

    labels = _class_labels(rngs[0], grid)
    image = _render_classes(rngs[1], labels)
    image *= _illumination(rngs[2], grid)[None]
    overexposed_box, blurred_box = _defect_boxes(rngs[3], size)
    _blur_box(image, blurred_box, sigma=float(rngs[3].uniform(4.0, 6.0)))
    _add_glare_halo(image, overexposed_box)
    pixels = np.clip(np.rint(image), 1, 255).astype(np.uint8)
    _saturate_box(pixels, overexposed_box)

    collar = _nodata_collar(rngs[4], grid)
    pixels[:, collar] = 0
    labels[collar] = 0

    transform = from_origin(ORIGIN[0], ORIGIN[1], PIXEL_SIZE, PIXEL_SIZE)
    files = SurveyFiles(
        image=out_dir / IMAGE_NAME,
        labels=out_dir / LABELS_NAME,
        labels_vector=out_dir / VECTOR_NAME,
        overexposed_box=overexposed_box,
        blurred_box=blurred_box,
    )
    _write_image(files.image, pixels, transform)
    _write_labels(files.labels, labels, transform)
    _write_label_polygons(files.labels_vector, labels, transform)
    return files


# --- noise ---------------------------------------------------------------------------------------


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Gaussian-filtered white noise, zero mean and unit variance, float32.

    Wide kernels are filtered on a coarser grid (at least 4 coarse pixels per sigma) and upsampled
    bilinearly: the field is smooth at that scale anyway, and it keeps size=2048 fast.
    """
    factor = max(1, int(sigma // 4))
    small = (shape[0] // factor + 4, shape[1] // factor + 4)
    field = ndimage.gaussian_filter(rng.standard_normal(small, dtype=np.float32), sigma / factor, mode="wrap")
    if factor > 1:
        field = ndimage.zoom(field, factor, order=1)
    field = field[: shape[0], : shape[1]]
    field -= field.mean()
    field /= max(float(field.std()), 1e-6)
    return field


def _multi_octave(
    rng: np.random.Generator, shape: tuple[int, int], octaves: tuple[tuple[float, float], ...]
) -> np.ndarray:
    """Weighted sum of smooth noise fields, one per (sigma, weight) octave."""
    field = np.zeros(shape, dtype=np.float32)
    for sigma, weight in octaves:
        field += weight * _smooth_noise(rng, shape, sigma)
    return field


# --- scene ---------------------------------------------------------------------------------------


def _class_labels(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Blobby class patches: each class has a noise 'fitness' field and the fittest wins the pixel.

    This is a Voronoi diagram in noise space, so patches are coherent, of mixed sizes (a few cm to a
    few dm) and interlock like crust mosaics do. Specks too small to polygonize are sieved away so the
    raster and the vector labels describe the same patches.
    """
    fitness = np.stack([_multi_octave(rng, shape, _PATCH_OCTAVES) + bias for bias in _CLASS_BIAS.tolist()])
    labels = (np.argmax(fitness, axis=0) + 1).astype(np.uint8)
    return rasterio.features.sieve(labels, size=MIN_POLYGON_PIXELS, connectivity=4)


def _render_classes(rng: np.random.Generator, labels: np.ndarray) -> np.ndarray:
    """RGB float32 (3, h, w) rendering of the class map, each class with its own colour and texture."""
    shape = labels.shape
    # Slightly soft class weights, so patch borders are not razor-sharp pixel staircases.
    weights = np.stack([ndimage.gaussian_filter((labels == c).astype(np.float32), 0.8) for c in CLASSES])
    soil, cyano, lichen, moss = weights
    image = np.einsum("khw,kc->chw", weights, _BASE_RGB)

    # Relief: a height field per class, shaded by a low sun from the north-west.
    # Pinnacles: a rough field with flattened lows and peaked highs (heavy right tail).
    pinnacles = np.maximum(_multi_octave(rng, shape, ((3.0, 1.0), (1.5, 0.5))) + 0.3, 0.0) ** 1.5
    pinnacles -= pinnacles.mean()
    clumps = _multi_octave(rng, shape, ((1.3, 1.0), (3.0, 0.4)))
    height = (
        soil * 0.8 * _smooth_noise(rng, shape, 4.0)
        + cyano * 6.0 * pinnacles
        + lichen * 1.5 * _smooth_noise(rng, shape, 2.0)
        + moss * 3.0 * clumps
    )
    image *= _hillshade(height)[None]

    # Cyanobacterial crust: darker in the troughs between pinnacles.
    image *= (1.0 + 0.12 * cyano * np.clip(pinnacles, -1.5, 1.5))[None]
    # Moss: brighter, greener tips on the clumps.
    image += (moss * np.clip(clumps, 0, None))[None] * np.array([7, 12, 3], np.float32)[:, None, None]
    _paint_lichen_speckles(rng, image, lichen)
    _paint_soil_pebbles(rng, image, soil)

    # Fine grain everywhere, stronger on rough surfaces; and slow colour drift within patches.
    grain_amp = soil * 7.0 + cyano * 9.0 + lichen * 7.0 + moss * 8.0
    grain = grain_amp * ndimage.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), 0.5) * 2.2
    image += grain[None]
    # Mostly brightness, a little warm/cool shift: real soil colour drifts along one axis, not three.
    drift = _smooth_noise(rng, shape, 18.0)
    warmth = _smooth_noise(rng, shape, 30.0)
    image += (6.0 * drift)[None] + (2.5 * warmth)[None] * np.array([1, 0, -1], np.float32)[:, None, None]
    image *= (1.0 + 0.06 * _smooth_noise(rng, shape, 10.0))[None]
    return image


def _hillshade(height: np.ndarray) -> np.ndarray:
    """Multiplicative shading of a height field lit from the north-west (1.0 on flat ground)."""
    d_row, d_col = np.gradient(height)
    return np.clip(1.0 - 0.09 * (d_row + d_col), 0.55, 1.45).astype(np.float32)


def _paint_lichen_speckles(rng: np.random.Generator, image: np.ndarray, lichen: np.ndarray) -> None:
    """Orange (Fulgensia/Caloplaca-like) and whitish (Psora-like) speckles on the lichen patches."""
    orange = _speckles(rng, lichen.shape, sigma=1.2, quantile=0.93) * lichen
    white = _speckles(rng, lichen.shape, sigma=1.0, quantile=0.95) * lichen
    _blend_towards(image, orange, (214, 136, 58))
    _blend_towards(image, white, (232, 232, 218))


def _paint_soil_pebbles(rng: np.random.Generator, image: np.ndarray, soil: np.ndarray) -> None:
    """Sparse small light and dark grains on bare soil."""
    light = _speckles(rng, soil.shape, sigma=1.5, quantile=0.985) * soil
    dark = _speckles(rng, soil.shape, sigma=1.2, quantile=0.985) * soil
    _blend_towards(image, light, (228, 212, 188))
    _blend_towards(image, dark, (120, 104, 88))


def _speckles(rng: np.random.Generator, shape: tuple[int, int], sigma: float, quantile: float) -> np.ndarray:
    """Soft 0..1 mask of the top ``1 - quantile`` of a fine noise field: small round dots."""
    field = _smooth_noise(rng, shape, sigma)
    threshold = float(np.quantile(field[::4, ::4], quantile))
    return np.clip((field - threshold) * 2.5, 0.0, 1.0)


def _blend_towards(image: np.ndarray, alpha: np.ndarray, rgb: tuple[int, int, int]) -> None:
    """In place: image = (1 - alpha) * image + alpha * rgb."""
    target = np.array(rgb, dtype=np.float32)[:, None, None]
    image += alpha[None] * (target - image)


def _illumination(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Smooth multiplicative illumination: a gentle gradient plus cloud-shadow-scale undulation."""
    rows = np.linspace(-1.0, 1.0, shape[0], dtype=np.float32)[:, None]
    cols = np.linspace(-1.0, 1.0, shape[1], dtype=np.float32)[None, :]
    angle = rng.uniform(0, 2 * np.pi)
    gradient = np.float32(np.cos(angle)) * rows + np.float32(np.sin(angle)) * cols
    undulation = _smooth_noise(rng, shape, max(shape) / 5)
    return (1.0 + 0.05 * gradient + 0.05 * undulation).astype(np.float32)


# --- defects -------------------------------------------------------------------------------------


def _defect_boxes(rng: np.random.Generator, size: int) -> tuple[Box, Box]:
    """Place the glare and blur boxes in two different quadrants, clear of the nodata collar."""
    margin = int(0.08 * size)
    half = (size - 2 * margin) // 2
    quadrants = rng.permutation(4)[:2]
    boxes = []
    for quadrant, (lo, hi) in zip(quadrants.tolist(), ((0.06, 0.10), (0.13, 0.18)), strict=True):
        height = int(rng.uniform(lo, hi) * size)
        width = int(rng.uniform(lo, hi) * size)
        row0 = margin + (quadrant // 2) * half + int(rng.integers(0, half - height + 1))
        col0 = margin + (quadrant % 2) * half + int(rng.integers(0, half - width + 1))
        boxes.append((row0, row0 + height, col0, col0 + width))
    return boxes[0], boxes[1]


def _blur_box(image: np.ndarray, box: Box, sigma: float) -> None:
    """In place: gaussian-blur the pixels of ``box`` (what a motion-blurred frame leaves in a mosaic)."""
    row0, row1, col0, col1 = box
    pad = int(np.ceil(4 * sigma))
    r0, c0 = max(row0 - pad, 0), max(col0 - pad, 0)
    window = image[:, r0 : row1 + pad, c0 : col1 + pad]
    blurred = ndimage.gaussian_filter(window, (0, sigma, sigma))
    image[:, row0:row1, col0:col1] = blurred[:, row0 - r0 : row1 - r0, col0 - c0 : col1 - c0]


def _add_glare_halo(image: np.ndarray, box: Box) -> None:
    """In place: brighten the surroundings of the glare box, fading with distance (specular bloom)."""
    row0, row1, col0, col1 = box
    rows = np.arange(image.shape[1], dtype=np.float32)[:, None]
    cols = np.arange(image.shape[2], dtype=np.float32)[None, :]
    d_row = np.maximum(np.maximum(row0 - rows, rows - (row1 - 1)), 0)
    d_col = np.maximum(np.maximum(col0 - cols, cols - (col1 - 1)), 0)
    distance = np.sqrt(d_row**2 + d_col**2)
    reach = 0.25 * max(row1 - row0, col1 - col0)
    image *= (1.0 + 0.35 * np.exp(-distance / reach))[None]


def _saturate_box(pixels: np.ndarray, box: Box) -> None:
    """In place: clip every band of ``box`` to 255 (blown-out sun glint)."""
    row0, row1, col0, col1 = box
    pixels[:, row0:row1, col0:col1] = 255


def _nodata_collar(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Boolean mask of a wavy nodata collar along one or two edges, like an orthomosaic's ragged edge."""
    size = max(shape)
    mask = np.zeros(shape, dtype=bool)
    n_edges = int(rng.integers(1, 3))
    for edge in rng.permutation(4)[:n_edges].tolist():
        along = shape[1] if edge in (0, 1) else shape[0]
        width = _collar_width(rng, along, size)
        depth = np.arange(shape[0] if edge in (0, 1) else shape[1])
        # edge 0: top, 1: bottom, 2: left, 3: right; depth counts pixels inward from that edge.
        inward = depth[:, None] < width[None, :]
        if edge == 0:
            mask |= inward
        elif edge == 1:
            mask |= inward[::-1]
        elif edge == 2:
            mask |= inward.T
        else:
            mask |= inward.T[:, ::-1]
    return mask


def _collar_width(rng: np.random.Generator, length: int, size: int) -> np.ndarray:
    """Collar width (pixels) along an edge: 3-6% of the image, with long waves and small jags."""
    base = rng.uniform(0.03, 0.06) * size
    waves = ndimage.gaussian_filter1d(rng.standard_normal(length + 200), length / 12, mode="wrap")[100:-100]
    waves *= 0.012 * size / max(float(np.abs(waves).max()), 1e-6)
    jags = ndimage.gaussian_filter1d(rng.standard_normal(length), 1.5) * 3.0
    return np.clip(base + waves + jags, 0.02 * size, 0.07 * size)


# --- writing -------------------------------------------------------------------------------------


def _geotiff_profile(size: int, count: int, transform: Affine) -> dict:
    """Common GeoTIFF creation options: tiled 256 (when the image is large enough), deflate."""
    profile: dict = {
        "driver": "GTiff",
        "width": size,
        "height": size,
        "count": count,
        "dtype": "uint8",
        "crs": CRS.from_epsg(CRS_EPSG),
        "transform": transform,
        "compress": "deflate",
    }
    if size >= 256:
        profile.update(tiled=True, blockxsize=256, blockysize=256)
    return profile


def _write_image(path: Path, pixels: np.ndarray, transform: Affine) -> None:
    profile = _geotiff_profile(pixels.shape[1], 3, transform)
    profile.update(nodata=0, photometric="RGB", interleave="pixel")
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(pixels)
        dst.descriptions = ("red", "green", "blue")


def _write_labels(path: Path, labels: np.ndarray, transform: Affine) -> None:
    """Label raster: 1..4 classes, 0 unlabeled. Deliberately no nodata: 0 is a value, not a hole."""
    profile = _geotiff_profile(labels.shape[0], 1, transform)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(labels, 1)
        dst.write_colormap(1, _colormap())
        dst.set_band_description(1, "class")
        dst.update_tags(1, **{f"class_{value}": name for value, (name, _) in CLASSES.items()})


def _colormap() -> dict[int, tuple[int, int, int, int]]:
    colours = {0: (0, 0, 0, 0)}
    for value, (_, hex_colour) in CLASSES.items():
        rgb = bytes.fromhex(hex_colour.lstrip("#"))
        colours[value] = (rgb[0], rgb[1], rgb[2], 255)
    return colours


def _write_label_polygons(path: Path, labels: np.ndarray, transform: Affine) -> None:
    """Polygonize the labels (4-connected) and write them as a GeoPackage, dropping specks."""
    min_area = MIN_POLYGON_PIXELS * abs(transform.a * transform.e)
    geometries, values = [], []
    for geometry, value in rasterio.features.shapes(labels, mask=labels > 0, connectivity=4, transform=transform):
        polygon = shape(geometry)
        if polygon.area >= min_area:
            geometries.append(polygon)
            values.append(int(value))
    frame = gpd.GeoDataFrame(
        {
            "class": np.array(values, dtype=np.int32),
            "name": [CLASSES[v][0] for v in values],
        },
        geometry=geometries,
        crs=f"EPSG:{CRS_EPSG}",
    )
    path.unlink(missing_ok=True)
    frame.to_file(path, layer=VECTOR_LAYER, driver="GPKG")
