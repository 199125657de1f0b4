"""A class map's region polygons, polygonized strip by strip, with the regions that cross strip edges joined.

GDAL's polygonize (``rasterio.features.shapes``) gathers every polygon of the array it is given in an in-memory
layer before yielding the first, so polygonizing a 16384² map at once held 0.6 GB (bench/RESULTS.md, issue 13).
Here each strip of full rows is polygonized alone, in pixel coordinates (exact integers), and a region cut by a
strip edge leaves one piece in each strip it reaches. Which pieces belong together is read off the edge itself:
a piece's exterior ring runs along its strip's edge over exactly the pixels it owns there, so the two pixel rows
either side of an edge say which pieces touch (same class, sharing a pixel edge; or a corner, with
8-connectivity). A region is finished, and its pieces unioned into one polygon, once no piece of it reaches the
newest strip's lower edge. Memory is then one strip's polygons plus the regions still open, whatever the map's
size; a map that fits in one strip gives exactly GDAL's polygons of the whole map.

Coordinates go from pixels to the map's CRS with the arithmetic GDAL itself uses, ``(c + col·a) + row·b``, so a
region within one strip gets bit-identical coordinates to polygonizing the map in one piece.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import rasterio.features
import shapely
from affine import Affine
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components


@dataclass(frozen=True)
class PolygonizedStrip:
    """A strip of full rows, polygonized: what joining needs of it (its pieces and its two edge rows)."""

    top: int  # its first row in the map
    height: int
    first_row: np.ndarray
    last_row: np.ndarray
    pieces: np.ndarray  # GDAL's polygons of the strip, pixel coordinates
    classes: np.ndarray  # their class ids
    merged: int = 0  # pixels the sieve changed before polygonizing, where it ran


def polygonized(top: int, rows: np.ndarray, connectivity: int, skip: set[int], merged: int = 0) -> PolygonizedStrip:
    """One strip (first row ``top``) polygonized, ``skip`` values (nodata) left out."""
    pieces, classes = strip_pieces(top, rows, connectivity, skip)
    return PolygonizedStrip(top, rows.shape[0], rows[0].copy(), rows[-1].copy(), pieces, classes, merged)


def region_polygons(
    strips: Iterable[tuple[int, np.ndarray]], height: int, transform: Affine, connectivity: int, skip: set[int]
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(polygons in the CRS, their class ids) of finished regions, a batch per strip of ``strips``.

    ``strips`` yields (first row, rows) of the class map, top to bottom, full width, ``height`` rows in all.
    Pixels whose value is in ``skip`` (nodata) belong to no region.
    """
    polygonized_strips = (polygonized(top, rows, connectivity, skip) for top, rows in strips)
    return joined_regions(polygonized_strips, height, transform, connectivity)


def joined_regions(
    strips: Iterable[PolygonizedStrip], height: int, transform: Affine, connectivity: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``region_polygons`` from strips already polygonized (in this process or in workers), top to bottom."""
    joiner = _Joiner(height, connectivity)
    for strip in strips:
        done, done_classes = joiner.add(strip)
        if done:
            yield to_crs(np.asarray(done, dtype=object), transform), np.asarray(done_classes, dtype=np.int64)
    done, done_classes = joiner.finish()
    if done:
        yield to_crs(np.asarray(done, dtype=object), transform), np.asarray(done_classes, dtype=np.int64)


def strip_pieces(top: int, rows: np.ndarray, connectivity: int, skip: set[int]) -> tuple[np.ndarray, np.ndarray]:
    """GDAL's polygons of one strip (first row ``top``) in pixel coordinates, and their class ids."""
    valid = ~np.isin(rows, list(skip)) if skip else None
    features = rasterio.features.shapes(rows, mask=valid, connectivity=connectivity,
                                        transform=Affine(1, 0, 0, 0, 1, top))  # fmt: skip
    batches = list(feature_batches(features, set()))
    if not batches:
        return np.empty(0, dtype=object), np.empty(0, dtype=np.int64)
    return np.concatenate([b for b, _ in batches]), np.concatenate([v for _, v in batches])


def to_crs(polygons: np.ndarray, transform: Affine) -> np.ndarray:
    """Pixel-coordinate geometries in ``transform``'s CRS, with GDAL's own arithmetic (bit-identical to it)."""
    t = transform

    def apply(coords: np.ndarray) -> np.ndarray:
        col, row = coords[:, 0], coords[:, 1]
        return np.column_stack(((t.c + col * t.a) + row * t.b, (t.f + col * t.d) + row * t.e))

    return shapely.transform(polygons, apply)


def feature_batches(features: Iterator[tuple[dict, float]], skip: set[int], size: int = 50_000,
                    max_points: int = 1 << 20) -> Iterator[tuple[np.ndarray, np.ndarray]]:  # fmt: skip
    """GDAL's GeoJSON-like polygons as shapely arrays, ``skip`` values left out, in batches of ``size`` polygons
    or ``max_points`` vertices, whichever comes first.

    Builds the polygons from one coordinate array per batch (5x faster than ``shapely.geometry.shape``
    one by one). The vertex cap bounds the batch's Python floats (about 100 bytes a vertex): a speckled map's
    background polygon alone can have millions of vertices.
    """
    points: list = []
    ring_sizes: list[int] = []
    ring_owner: list[int] = []
    values: list[int] = []
    for geojson, value in features:
        value = int(value)
        if value in skip:
            continue
        for ring in geojson["coordinates"]:
            points.extend(ring)
            ring_sizes.append(len(ring))
            ring_owner.append(len(values))
        values.append(value)
        if len(values) >= size or len(points) >= max_points:
            yield _polygons(points, ring_sizes, ring_owner), np.asarray(values, dtype=np.int64)
            points, ring_sizes, ring_owner, values = [], [], [], []
    if values:
        yield _polygons(points, ring_sizes, ring_owner), np.asarray(values, dtype=np.int64)


def _polygons(points: list, ring_sizes: list[int], ring_owner: list[int]) -> np.ndarray:
    """Polygons from flat coordinates: per polygon, its first ring is the shell and the others are holes."""
    coords = np.asarray(points, dtype=np.float64)
    rings = shapely.linearrings(coords, indices=np.repeat(np.arange(len(ring_sizes)), ring_sizes))
    return shapely.polygons(rings, indices=np.asarray(ring_owner))


def edge_owners(pieces: np.ndarray, line: int, width: int, upper: bool) -> np.ndarray:
    """For each pixel along the horizontal pixel edge ``line``, the index of the piece that owns the pixel on the
    strip's side of it (below the edge if ``upper``, else above), -1 where none (nodata).

    A piece owns an edge pixel exactly where its exterior ring runs along the edge: the strip ends there, so the
    ring bounds the piece's own pixel (a hole, bounded by the piece on all sides, never reaches it).
    """
    owners = np.full(width, -1, dtype=np.int64)
    if not len(pieces):
        return owners
    bounds = shapely.bounds(pieces)
    touching = np.flatnonzero(bounds[:, 1] == line if upper else bounds[:, 3] == line)
    if not len(touching):
        return owners
    coords, ring = shapely.get_coordinates(shapely.get_exterior_ring(pieces[touching]), return_index=True)
    along = (ring[:-1] == ring[1:]) & (coords[:-1, 1] == line) & (coords[1:, 1] == line)
    starts = np.minimum(coords[:-1, 0], coords[1:, 0])[along].astype(np.int64)
    stops = np.maximum(coords[:-1, 0], coords[1:, 0])[along].astype(np.int64)
    lengths = stops - starts
    first = np.repeat(starts - np.concatenate(([0], np.cumsum(lengths)[:-1])), lengths)
    owners[first + np.arange(int(lengths.sum()))] = np.repeat(touching[ring[:-1][along]], lengths)
    return owners


def touching_pairs(above: np.ndarray, above_classes: np.ndarray, below: np.ndarray, below_classes: np.ndarray,
                   connectivity: int) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Unique (owner above, owner below) pairs of same-class pixels that touch across an edge.

    Pixels touch across the edge when one is right below the other, or, with 8-connectivity, diagonally below.
    """
    shifts = (0, 1, -1) if connectivity == 8 else (0,)
    found_above, found_below = [], []
    width = len(above)
    for shift in shifts:  # below pixel x + shift touches above pixel x
        a = slice(max(0, -shift), width - max(0, shift))
        b = slice(max(0, shift), width - max(0, -shift))
        ok = (above[a] >= 0) & (below[b] >= 0) & (above_classes[a] == below_classes[b])
        found_above.append(above[a][ok])
        found_below.append(below[b][ok])
    pairs = np.unique(np.stack([np.concatenate(found_above), np.concatenate(found_below)]), axis=1)
    return pairs[0], pairs[1]


class _Joiner:
    """Regions still open at the last strip's lower edge, as lists of pieces, and which pixel there is whose."""

    def __init__(self, height: int, connectivity: int) -> None:
        self.height = height
        self.connectivity = connectivity
        self.pieces: dict[int, list] = {}  # open region id -> its pieces so far
        self.classes: dict[int, int] = {}
        self.edge_region = np.empty(0, dtype=np.int64)  # per pixel of the last strip's last row: region id or -1
        self.edge_classes = np.empty(0)
        self.next_id = 0

    def add(self, strip: PolygonizedStrip) -> tuple[list, list]:
        """Take a strip's pieces; return the regions this strip finished (polygons, class ids)."""
        top, pieces, classes = strip.top, strip.pieces, strip.classes
        width = len(strip.first_row)
        bottom = top + strip.height
        done: list = []
        done_classes: list[int] = []
        region_of = np.full(len(pieces), -1, dtype=np.int64)
        joined: set[int] = set()
        if self.pieces:
            above, below = touching_pairs(self.edge_region, self.edge_classes, edge_owners(pieces, top, width, True),
                                          strip.first_row, self.connectivity)  # fmt: skip
            joined = self._join(above, below, pieces, classes, region_of)
        for region in [r for r in self.pieces if r not in joined]:  # nothing in this strip continues them
            done.append(_union(self.pieces.pop(region)))
            done_classes.append(self.classes.pop(region))

        reaches_down = np.zeros(len(pieces), dtype=bool)
        lower = edge_owners(pieces, bottom, width, False) if bottom < self.height else np.full(width, -1)
        reaches_down[lower[lower >= 0]] = True
        alone = np.flatnonzero((region_of < 0) & ~reaches_down)
        done.extend(pieces[alone])
        done_classes.extend(classes[alone].tolist())
        for piece in np.flatnonzero((region_of < 0) & reaches_down):
            region_of[piece] = self._open([pieces[piece]], int(classes[piece]))
        still_open = set(region_of[reaches_down & (region_of >= 0)].tolist())
        for region in sorted(joined - still_open):
            done.append(_union(self.pieces.pop(region)))
            done_classes.append(self.classes.pop(region))
        self.edge_region = np.full(width, -1, dtype=np.int64)
        self.edge_region[lower >= 0] = region_of[lower[lower >= 0]]
        self.edge_classes = strip.last_row
        return done, done_classes

    def finish(self) -> tuple[list, list]:
        """The regions still open once the last strip is in."""
        regions = list(self.pieces)
        return [_union(self.pieces.pop(r)) for r in regions], [self.classes.pop(r) for r in regions]

    def _join(self, above: np.ndarray, below: np.ndarray, pieces: np.ndarray, classes: np.ndarray,
              region_of: np.ndarray) -> set[int]:  # fmt: skip
        """Merge open regions and this strip's pieces that touch into new regions; return the new regions' ids."""
        if not len(above):
            return set()
        regions, region_index = np.unique(above, return_inverse=True)
        local, local_index = np.unique(below, return_inverse=True)
        n = len(regions) + len(local)
        graph = coo_matrix((np.ones(len(above)), (region_index, len(regions) + local_index)), shape=(n, n))
        _, component = connected_components(graph, directed=False)
        order = np.argsort(component, kind="stable")
        new: set[int] = set()
        for members in np.split(order, np.flatnonzero(np.diff(component[order])) + 1):
            old = regions[members[members < len(regions)]]
            mine = local[members[members >= len(regions)] - len(regions)]
            merged = [p for r in old for p in self.pieces.pop(int(r))] + list(pieces[mine])
            cls = self.classes.pop(int(old[0]))
            for r in old[1:]:
                self.classes.pop(int(r))
            region = self._open(merged, cls)
            region_of[mine] = region
            new.add(region)
        return new

    def _open(self, pieces: list, cls: int) -> int:
        region = self.next_id
        self.next_id += 1
        self.pieces[region] = pieces
        self.classes[region] = cls
        return region


def _union(pieces: list) -> shapely.Geometry:
    """One region from its pieces.

    A piece's holes lie inside its strip, away from the strip's edges, so no other piece covers them: the region
    is the union of the pieces' outlines with every piece's holes cut out. Unioning the outlines alone is far
    cheaper than unioning whole pieces, which for a background region means thousands of holes per strip.
    """
    if len(pieces) == 1:
        return pieces[0]
    pieces = np.asarray(pieces, dtype=object)
    outline = _outline_union(pieces)
    if outline.geom_type != "Polygon":  # parts touching at a corner (8-connectivity): which holes go where
        return shapely.union_all(pieces)
    rings, owner = shapely.get_rings(pieces, return_index=True)
    holes = rings[np.concatenate(([False], owner[1:] == owner[:-1]))]  # each piece's first ring is its exterior
    return shapely.polygons(outline.exterior, holes=np.concatenate((shapely.get_rings(outline)[1:], holes)))


def _outline_union(pieces: np.ndarray) -> shapely.Geometry:
    """The union of the pieces' outlines.

    The pieces tile the region without overlapping and meet only along strip edges, so once each outline has a
    vertex wherever another's lies on a shared edge (``_noded_outlines``) they form a coverage, and GEOS's
    coverage union only has to drop the edges they share: 1.5 s against 5.9 s of general overlay for the 760
    regions that cross strip edges in a 16384² speckled map (bench/RESULTS.md, issue 13). The area of a union
    without overlaps is the sum of the parts': where it is not (a coverage this reasoning missed), or GEOS
    refuses the input, the general union is used.
    """
    outlines = _noded_outlines(pieces)
    try:
        outline = shapely.coverage_union_all(outlines)
    except shapely.errors.GEOSException:
        outline = None
    if outline is None or abs(outline.area - float(shapely.area(outlines).sum())) > 0.5:
        outline = shapely.union_all(shapely.polygons(shapely.get_exterior_ring(pieces)))
    return outline


def _noded_outlines(pieces: np.ndarray) -> np.ndarray:
    """The pieces' exterior rings as polygons, with a vertex added on each horizontal segment that lies on a strip
    edge wherever another piece has a vertex on that edge (coordinates are whole pixels)."""
    rings = shapely.get_exterior_ring(pieces)
    coords, ring = shapely.get_coordinates(rings, return_index=True)
    bounds = shapely.bounds(pieces)
    edges = np.intersect1d(bounds[:, 1], bounds[:, 3])  # rows where one piece ends and another begins
    stride = int(coords[:, 0].max()) + 2  # a vertex (x, y) on an edge is keyed y × stride + x, sortable
    on_edge = np.isin(coords[:, 1], edges)
    keys = np.unique(coords[on_edge, 1].astype(np.int64) * stride + coords[on_edge, 0].astype(np.int64))

    n = len(coords)
    closing = np.append(ring[1:] != ring[:-1], True)  # a ring's last point closes it and starts no segment
    start = np.flatnonzero(~closing)
    a, b = coords[start], coords[start + 1]
    row = a[:, 1].astype(np.int64) * stride
    lo = np.searchsorted(keys, row + np.minimum(a[:, 0], b[:, 0]).astype(np.int64), "right")
    hi = np.searchsorted(keys, row + np.maximum(a[:, 0], b[:, 0]).astype(np.int64), "left")
    along_edge = (a[:, 1] == b[:, 1]) & on_edge[start]
    added = np.zeros(n, dtype=np.int64)  # vertices to add after each point
    added[start] = np.where(along_edge, np.maximum(hi - lo, 0), 0)
    if not added.any():
        return shapely.polygons(rings)

    # each point, then the keys strictly inside its segment, in the segment's direction
    slots = 1 + added
    point = np.repeat(np.arange(n), slots)
    position = np.arange(int(slots.sum())) - np.repeat(np.cumsum(slots) - slots, slots)
    first, last, forward = np.zeros(n, np.int64), np.zeros(n, np.int64), np.ones(n, bool)
    first[start], last[start], forward[start] = lo, hi - 1, b[:, 0] > a[:, 0]
    new = position > 0
    owner, step = point[new], position[new] - 1
    key = keys[np.where(forward[owner], first[owner] + step, last[owner] - step)]
    out = coords[point]
    out[new, 0], out[new, 1] = key % stride, key // stride
    return shapely.polygons(shapely.linearrings(out, indices=ring[point]))
