"""Test-time augmentation: each view is undone exactly, and the class map still does not depend on blocks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from rasterio.windows import Window

from geoseg.infer.assemble import Assembler, block_contribution
from geoseg.infer.engine import InferenceSpec, slice_padded
from geoseg.tta import VIEWS, _forward_view, _inverse_view, averaged_array_probabilities, averaged_probabilities
from tests.unit.test_engine import CLASS_IDS, NORM, PerPixel, _image


class Lopsided(torch.nn.Module):
    """A 5×5 convolution with random weights: its output changes when the input is flipped or rotated."""

    def __init__(self) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(1)
        self.conv = torch.nn.Conv2d(3, 3, 5, padding=2)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(self.conv.weight.shape, generator=generator))
            self.conv.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def test_the_eight_views_are_distinct_and_each_is_undone() -> None:
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4)
    seen = set()
    for k, flip in VIEWS:
        view = _forward_view(x, k, flip)
        seen.add(tuple(view[0, 0].flatten().tolist()))
        assert torch.equal(_inverse_view(view, k, flip), x)
    assert len(seen) == 8


@torch.inference_mode()
def test_a_per_pixel_model_is_unchanged_by_tta() -> None:
    model = PerPixel()
    x = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    plain = averaged_probabilities(model, x, tta=False)
    averaged = averaged_probabilities(model, x, tta=True)
    torch.testing.assert_close(averaged, plain)
    assert model.windows == 3 * 9  # one plain pass and eight views


@torch.inference_mode()
def test_tta_averages_views_of_a_lopsided_model() -> None:
    model = Lopsided()
    x = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    plain = averaged_probabilities(model, x, tta=False)
    averaged = averaged_probabilities(model, x, tta=True)
    assert not torch.allclose(averaged, plain)
    torch.testing.assert_close(averaged.sum(dim=1), torch.ones(1, 16, 16))
    # The average over the group is itself invariant: rotating the input rotates the result.
    rotated = averaged_probabilities(model, torch.rot90(x, 1, dims=(-2, -1)), tta=True)
    torch.testing.assert_close(rotated, torch.rot90(averaged, 1, dims=(-2, -1)), atol=1e-5, rtol=1e-5)


@torch.inference_mode()
def test_numpy_views_average_as_torch_views_do() -> None:
    """ONNX Runtime's path (numpy, no torch) and the torch path give the same averaged probabilities."""
    model = Lopsided()
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(3))

    def probabilities_of(array: np.ndarray) -> np.ndarray:
        return torch.softmax(model(torch.from_numpy(array)), dim=1).numpy()

    for tta in (False, True):
        expected = averaged_probabilities(model, x, tta=tta).numpy()
        got = averaged_array_probabilities(probabilities_of, x.numpy(), tta=tta)
        assert got.dtype == np.float32 and got.shape == expected.shape
        np.testing.assert_allclose(got, expected, atol=1e-6)
    assert not np.allclose(averaged_array_probabilities(probabilities_of, x.numpy(), tta=True),
                           averaged_array_probabilities(probabilities_of, x.numpy(), tta=False), atol=1e-3)  # fmt: skip
    with pytest.raises(ValueError, match="square"):
        averaged_array_probabilities(probabilities_of, np.zeros((1, 3, 8, 16), np.float32), tta=True)


def test_tta_needs_square_windows() -> None:
    with pytest.raises(ValueError, match="square"):
        averaged_probabilities(PerPixel(), torch.zeros(1, 3, 8, 16), tta=True)


def _assembled(model: torch.nn.Module, raw: np.ndarray, valid: np.ndarray, spec: InferenceSpec, block: int):
    h, w = valid.shape

    def read(window: Window) -> tuple[np.ndarray, np.ndarray]:
        return slice_padded(raw, valid, window)

    assembler = Assembler((h, w), block, spec, confidence=False)
    out = np.zeros((h, w), dtype=np.uint8)
    for core in assembler.blocks:
        for window, result in assembler.add(block_contribution(model, read, core, (h, w), spec)):
            r, c = int(window.row_off), int(window.col_off)
            out[r : r + int(window.height), c : c + int(window.width)] = result.classes
    assert assembler.complete
    return out


@torch.inference_mode()
def test_tta_class_map_is_bit_identical_across_block_sizes() -> None:
    h, w = 97, 131
    raw = _image(h, w, seed=5)
    valid = np.ones((h, w), dtype=bool)
    valid[:7, :40] = False
    model = Lopsided()
    tta = InferenceSpec(NORM, CLASS_IDS, 32, 8, batch_size=3, tta=True)
    maps = [_assembled(model, raw, valid, tta, block) for block in (17, 40, 64, 1000)]
    for other in maps[1:]:
        assert np.array_equal(other, maps[0])
    plain = _assembled(model, raw, valid, InferenceSpec(NORM, CLASS_IDS, 32, 8, batch_size=3), 1000)
    assert (plain != maps[0]).any()  # TTA did change the map of a model that is not symmetric
