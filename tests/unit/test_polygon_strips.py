"""Polygonizing a class map strip by strip gives exactly the polygons of polygonizing it whole."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio.features
import shapely
from affine import Affine
from scipy import ndimage

from geoseg.polygon_strips import _noded_outlines, _union, feature_batches, region_polygons

TRANSFORM = Affine(0.5, 0, 500_000.25, 0, -0.5, 4_100_000.75)


def patchy_map(seed: int, height: int = 61, width: int = 47) -> np.ndarray:
    """Blobs of three classes with speckles, a nodata corner, a ring with a hole, and a comb whose teeth join
    only at its base (so pieces in a strip belong to one region only through a later strip)."""
    rng = np.random.default_rng(seed)
    classes = ndimage.zoom(rng.integers(0, 3, (height // 4 + 1, width // 4 + 1)), 4, order=0)[:height, :width]
    classes = classes.astype(np.uint8)
    speckle = rng.random(classes.shape) < 0.08
    classes[speckle] = rng.integers(0, 3, int(speckle.sum()))
    classes[:6, :9] = 255
    classes[10:30, 20:40] = 4
    classes[14:26, 24:36] = 1
    classes[35:50, 5:20] = 0
    classes[35:47, 6:19:3] = 5
    classes[47:50, 6:19] = 5
    return classes


def whole_map(classes: np.ndarray, connectivity: int) -> list[tuple[int, bytes]]:
    batches = list(feature_batches(rasterio.features.shapes(classes, transform=TRANSFORM, connectivity=connectivity),
                                   {255}))  # fmt: skip
    return canonical(np.concatenate([b for b, _ in batches]), np.concatenate([v for _, v in batches]))


def by_strips(classes: np.ndarray, rows: int, connectivity: int) -> list[tuple[int, bytes]]:
    strips = ((top, classes[top : top + rows]) for top in range(0, classes.shape[0], rows))
    batches = list(region_polygons(strips, classes.shape[0], TRANSFORM, connectivity, {255}))
    return canonical(np.concatenate([b for b, _ in batches]), np.concatenate([v for _, v in batches]))


def canonical(polygons: np.ndarray, ids: np.ndarray) -> list[tuple[int, bytes]]:
    """Comparable regions: repaired (GDAL's 8-connected outlines touch themselves), collinear vertices dropped
    (a union leaves one where a border crossed a strip edge), normalized."""
    shapes = shapely.normalize(shapely.simplify(shapely.make_valid(polygons), 0))
    return sorted(zip(ids.tolist(), shapely.to_wkb(shapes), strict=True))


@pytest.mark.parametrize("connectivity", [4, 8])
@pytest.mark.parametrize("rows", [1, 3, 7, 61])
@pytest.mark.parametrize("seed", [0, 1])
def test_strips_give_the_regions_of_the_whole_map(seed: int, rows: int, connectivity: int) -> None:
    classes = patchy_map(seed)
    assert by_strips(classes, rows, connectivity) == whole_map(classes, connectivity)


def test_a_region_crossing_every_strip_is_one_polygon_with_its_hole() -> None:
    classes = np.zeros((40, 30), dtype=np.uint8)
    classes[5:35, 5:25] = 1
    classes[12:28, 10:20] = 2  # the ring of class 1 around it crosses strips of 4 rows nine times
    batches = list(region_polygons(((t, classes[t : t + 4]) for t in range(0, 40, 4)), 40, Affine.identity(), 4, set()))
    polygons = np.concatenate([b for b, _ in batches])
    ids = np.concatenate([v for _, v in batches])
    assert sorted(ids.tolist()) == [0, 1, 2]
    ring = polygons[ids == 1][0]
    assert ring.geom_type == "Polygon" and len(ring.interiors) == 1
    assert ring.area == 30 * 20 - 16 * 10 and shapely.is_valid(ring)
    assert polygons[ids == 0][0].area == 40 * 30 - 30 * 20


def test_nodata_belongs_to_no_region_and_splits_none() -> None:
    classes = np.ones((12, 12), dtype=np.uint8)
    classes[:, 6] = 255  # a nodata column splits class 1 in two regions
    batches = list(region_polygons(((t, classes[t : t + 2]) for t in range(0, 12, 2)), 12, Affine.identity(), 4, {255}))
    polygons = np.concatenate([b for b, _ in batches])
    assert len(polygons) == 2 and sorted(shapely.area(polygons).tolist()) == [60.0, 72.0]


def test_a_strip_of_nodata_only_closes_the_regions_above_it() -> None:
    classes = np.ones((12, 12), dtype=np.uint8)
    classes[4:6] = 255  # strips of 2 rows: the third holds nothing
    batches = list(region_polygons(((t, classes[t : t + 2]) for t in range(0, 12, 2)), 12, Affine.identity(), 4, {255}))
    polygons = np.concatenate([b for b, _ in batches])
    assert sorted(shapely.area(polygons).tolist()) == [48.0, 72.0]


def test_pieces_meeting_on_a_strip_edge_are_noded_into_a_coverage() -> None:
    """A wide piece above a narrow one shares only part of the edge: the wide piece's outline gets the narrow
    one's corners on the edge, so GEOS's coverage union (no general overlay) joins them, holes and all."""
    above = shapely.box(0, 0, 6, 3).difference(shapely.box(1, 1, 2, 2))  # a piece with a hole, rows 0-3
    below = shapely.box(2, 3, 4, 5)  # rows 3-5, under part of it
    pieces = np.array([above, below], dtype=object)
    noded = _noded_outlines(pieces)
    assert shapely.get_num_coordinates(noded).tolist() == [7, 5]  # (2, 3) and (4, 3) added to the wide one
    joined = shapely.coverage_union_all(noded)  # raises on outlines that are not noded
    assert joined.equals(shapely.union_all([shapely.box(0, 0, 6, 3), below]))
    region = _union(list(pieces))
    assert region.area == 6 * 3 - 1 + 2 * 2 and len(region.interiors) == 1 and shapely.is_valid(region)
