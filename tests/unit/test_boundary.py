"""Boundary shape: convex and concave edge, on shapes whose answer is known by hand."""

from __future__ import annotations

import math

import numpy as np

from geoseg.boundary import boundary_samples, edge_shape

ROWS, COLS = np.mgrid[0:200, 0:200]


def test_a_disc_is_all_convex_and_its_surroundings_all_concave() -> None:
    disc = np.where((ROWS - 100) ** 2 + (COLS - 100) ** 2 <= 30**2, 1, 2).astype(np.uint8)
    inside, around = edge_shape(disc, 1, 0.5), edge_shape(disc, 2, 0.5)
    assert inside.shares() == {"convex_edge_share": 1.0, "concave_edge_share": 0.0}
    assert around.shares() == {"convex_edge_share": 0.0, "concave_edge_share": 1.0}  # the map's border left out
    assert inside.total == around.total == len(boundary_samples(disc, 1).turning_deg) * 0.5


def test_a_square_with_a_notch_is_concave_only_at_the_notch() -> None:
    square = np.full((200, 200), 2, np.uint8)
    square[40:160, 40:160] = 1
    square[40:80, 90:110] = 2  # a notch bitten into the top side
    samples = boundary_samples(square, 1)
    concave = samples.points[samples.turning_deg < -5]
    assert len(concave) > 0
    assert concave[:, 0].min() >= 80 and concave[:, 0].max() <= 120 and concave[:, 1].max() <= 90
    convex = samples.points[samples.turning_deg > 5]
    corners = [(40, 40), (160, 40), (40, 160), (160, 160), (90, 40), (110, 40)]  # (column, row)
    assert all(min(math.dist(p, c) for c in corners) <= 15 for p in convex)  # 10 px each way, smoothed


def test_a_straight_staircase_is_straight_and_nodata_is_no_boundary() -> None:
    diagonal = np.where(COLS > 0.5 * ROWS + 20, 1, 2).astype(np.uint8)
    shape = edge_shape(diagonal, 1, 1.0)
    assert shape.straight / shape.total > 0.9
    field = np.full((200, 200), 1, np.uint8)
    field[:, 150:] = 255  # the survey ends: that edge is not the class's
    assert edge_shape(field, 1, 1.0).total == 0 and math.isnan(edge_shape(field, 1, 1.0).shares()["convex_edge_share"])
