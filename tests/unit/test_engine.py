"""Inference on one block: windowed prediction equals the whole image at once (no seams)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from geoseg.config import IGNORE_INDEX
from geoseg.data.preprocess import Normalization
from geoseg.infer.whole import predict_block
from geoseg.infer.windows import blend_weights, window_grid

CLASS_IDS = [4, 0, 9]
NORM = Normalization([(0.0, 255.0)] * 3, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])


class PerPixel(torch.nn.Module):
    """A 1×1 convolution with fixed weights: each output pixel depends on its own input pixel only."""

    def __init__(self, in_channels: int = 3, n_classes: int = 3) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.conv = torch.nn.Conv2d(in_channels, n_classes, 1)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(self.conv.weight.shape, generator=generator) * 3)
            self.conv.bias.copy_(torch.randn(n_classes, generator=generator))
        self.calls = 0
        self.windows = 0
        self.shapes: set[tuple[int, ...]] = set()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        self.windows += x.shape[0]
        self.shapes.add(tuple(x.shape[1:]))
        return self.conv(x)


def _image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (3, h, w), dtype=np.uint8)


@torch.inference_mode()
def _whole(model: PerPixel, raw: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """The reference: the model on the whole image at once."""
    image = NORM.apply(raw)
    image[:, ~valid] = 0.0
    logits = model.conv(torch.from_numpy(image)[None])[0]
    out = np.asarray(CLASS_IDS, dtype=np.uint8)[logits.argmax(dim=0).numpy()]
    out[~valid] = IGNORE_INDEX
    return out


@pytest.mark.parametrize(
    ("h", "w", "tile", "overlap"),
    [
        (100, 77, 32, 8),
        (100, 77, 48, 16),
        (97, 131, 64, 0),
        (65, 65, 64, 63),
        (130, 45, 40, 20),
        (20, 27, 32, 8),  # smaller than one tile
        (32, 100, 32, 16),  # exactly one tile high
    ],
)
def test_windowed_equals_whole_image(h: int, w: int, tile: int, overlap: int) -> None:
    model = PerPixel()
    raw = _image(h, w, seed=h * w)
    valid = np.ones((h, w), dtype=bool)
    out = predict_block(model, raw, valid, NORM, CLASS_IDS, tile=tile, overlap=overlap, batch_size=3)
    assert out.dtype == np.uint8 and out.shape == (h, w)
    np.testing.assert_array_equal(out, _whole(model, raw, valid))
    assert model.shapes == {(3, tile, tile)}  # always full tiles, padded where the image is smaller
    assert set(np.unique(out)) == set(CLASS_IDS)  # every class occurs, so the comparison means something


def test_batch_size_does_not_change_the_result() -> None:
    model = PerPixel()
    raw = _image(90, 70, seed=1)
    valid = np.ones((90, 70), dtype=bool)
    results = [predict_block(model, raw, valid, NORM, CLASS_IDS, 32, 8, batch_size=b) for b in (1, 2, 16)]
    for r in results[1:]:
        np.testing.assert_array_equal(r, results[0])


def test_invalid_pixels_are_255_and_the_rest_unchanged() -> None:
    model = PerPixel()
    h, w = 80, 90
    raw = _image(h, w, seed=2)
    valid = np.random.default_rng(3).random((h, w)) > 0.3
    out = predict_block(model, raw, valid, NORM, CLASS_IDS, tile=32, overlap=8)
    assert (out[~valid] == IGNORE_INDEX).all()
    assert (out[valid] != IGNORE_INDEX).all()
    np.testing.assert_array_equal(out, _whole(model, raw, valid))


def test_windows_entirely_nodata_are_skipped() -> None:
    model = PerPixel()
    h, w, tile = 96, 96, 32
    raw = _image(h, w, seed=4)
    valid = np.zeros((h, w), dtype=bool)
    valid[:40, :40] = True  # only the top-left windows (and their neighbours' overlap) see data
    out = predict_block(model, raw, valid, NORM, CLASS_IDS, tile=tile, overlap=0, batch_size=1)
    origins = window_grid(h, w, tile, 0)
    with_data = [(r, c) for r, c in origins if valid[r : r + tile, c : c + tile].any()]
    assert len(origins) == 9 and len(with_data) == 4
    assert model.windows == model.calls == 4
    np.testing.assert_array_equal(out, _whole(model, raw, valid))


def test_all_nodata_block_runs_no_window() -> None:
    model = PerPixel()
    raw = np.zeros((3, 50, 60), dtype=np.uint8)
    out = predict_block(model, raw, np.zeros((50, 60), dtype=bool), NORM, CLASS_IDS, tile=32, overlap=8)
    assert model.calls == 0
    assert (out == IGNORE_INDEX).all()


def test_blend_weights_are_positive_and_peak_in_the_middle() -> None:
    weights = blend_weights(64)
    assert weights.shape == (64, 64) and weights.dtype == np.float32
    assert (weights > 0).all()
    assert weights[32, 32] > weights[0, 32] and weights[32, 32] > weights[32, 0]
    np.testing.assert_allclose(weights, weights.T)


@pytest.mark.parametrize(("tile", "overlap"), [(32, 8), (48, 20), (64, 0)])
@pytest.mark.parametrize("block", [17, 40, 64, 1000])
def test_blocks_assemble_to_the_whole_image_result(tile: int, overlap: int, block: int) -> None:
    """No seams at block borders: any block size gives the whole-image result, pixel for pixel."""
    from rasterio.windows import Window

    from geoseg.infer.assemble import Assembler, block_contribution
    from geoseg.infer.engine import InferenceSpec, slice_padded

    h, w = 113, 149
    raw = _image(h, w, seed=3)
    valid = np.ones((h, w), dtype=bool)
    valid[:9, :30] = False
    model = PerPixel()
    spec = InferenceSpec(NORM, CLASS_IDS, tile, overlap, batch_size=3)

    def read(window: Window) -> tuple[np.ndarray, np.ndarray]:
        return slice_padded(raw, valid, window)

    assembler = Assembler((h, w), block, spec, confidence=False)
    assembled = np.zeros((h, w), dtype=np.uint8)
    finished = 0
    # Deliver the blocks in reverse order: the result must not depend on arrival order either.
    for core in reversed(assembler.blocks):
        for window, result in assembler.add(block_contribution(model, read, core, (h, w), spec)):
            r, c = int(window.row_off), int(window.col_off)
            assembled[r : r + int(window.height), c : c + int(window.width)] = result.classes
            finished += 1
    assert finished == len(assembler.blocks) and assembler.complete
    assert np.array_equal(assembled, _whole(model, raw, valid))
    windows_run = model.windows
    expected = sum(valid[r : r + tile, c : c + tile].any() for r, c in window_grid(h, w, tile, overlap))
    # Each window runs once; each block's last batch is padded with up to 2 empty windows.
    assert expected <= windows_run <= expected + 2 * len(assembler.blocks)


@pytest.mark.parametrize("in_torch", [False, True])  # the CPU's way, and a GPU's run on CPU tensors
@pytest.mark.parametrize("block", [17, 40, 64, 1000])
def test_interiors_settled_where_blocks_run_give_the_same_blocks(block: int, in_torch: bool) -> None:
    """A block's interior, which no other block's windows reach, is finished where the block runs (from
    sums added up in torch) and only its top and left bands wait for the neighbours: classes and
    confidence must be those of finishing the whole block in the writer."""
    from rasterio.windows import Window

    from geoseg.infer.assemble import Assembler, block_contribution
    from geoseg.infer.engine import InferenceSpec, slice_padded

    h, w = 113, 149
    raw, valid = _image(h, w, seed=5), np.ones((h, w), dtype=bool)
    valid[40:60, 100:] = False
    model, spec = PerPixel(), InferenceSpec(NORM, CLASS_IDS, 48, 20, batch_size=2)

    def read(window: Window) -> tuple[np.ndarray, np.ndarray]:
        return slice_padded(raw, valid, window)

    maps = []
    for settled in (False, True):
        assembler = Assembler((h, w), block, spec, confidence=True)
        classes, confidence = np.zeros((h, w), np.uint8), np.zeros((h, w), np.float32)
        for core in assembler.blocks:
            layout = assembler.layout(core) if settled else None
            contribution = block_contribution(model, read, core, (h, w), spec, layout=layout, confidence=True,
                                              finish_in_torch=in_torch)  # fmt: skip
            assert (contribution.settled is not None) == (settled and layout.interior is not None)
            for window, result in assembler.add(contribution):
                rows, cols = window.toslices()
                classes[rows, cols], confidence[rows, cols] = result.classes, result.confidence
        assert assembler.complete
        maps.append((classes, confidence))
    assert np.array_equal(maps[1][0], maps[0][0]) and np.array_equal(maps[0][0], _whole(model, raw, valid))
    assert np.array_equal(maps[1][1].view(np.uint32), maps[0][1].view(np.uint32))
    assert 0.3 < float(maps[0][1][valid].mean()) < 1.0


@pytest.mark.parametrize("block", [40, 64])
def test_blocks_run_as_bands_and_single_windows_give_the_same_blocks(block: int) -> None:
    """The last blocks of a run can be cut into bands or single windows (``balance.py``) so that no worker
    idles: their sums and valid masks are put together in their block, in any order of arrival, and the
    classes and confidence are those of the blocks run whole, bit for bit."""
    from rasterio.windows import Window

    from geoseg.infer.assemble import Assembler, block_contribution
    from geoseg.infer.balance import window_bands, window_cells
    from geoseg.infer.engine import InferenceSpec, slice_padded

    h, w = 113, 149
    raw, valid = _image(h, w, seed=7), np.ones((h, w), dtype=bool)
    valid[50:70, :25] = False
    model, spec = PerPixel(), InferenceSpec(NORM, CLASS_IDS, 32, 8, batch_size=2)

    def read(window: Window) -> tuple[np.ndarray, np.ndarray]:
        return slice_padded(raw, valid, window)

    def run(assembler: Assembler, order: list[Window]) -> tuple[np.ndarray, np.ndarray]:
        classes, confidence = np.zeros((h, w), np.uint8), np.zeros((h, w), np.float32)
        for job in order:
            layout = assembler.layout(job)
            contribution = block_contribution(model, read, job, (h, w), spec, layout=layout, confidence=True)
            for window, result in assembler.add(contribution):
                rows, cols = window.toslices()
                classes[rows, cols], confidence[rows, cols] = result.classes, result.confidence
        assert assembler.complete
        return classes, confidence

    whole = Assembler((h, w), block, spec, confidence=True)
    expected = run(whole, whole.blocks)
    jobs: list[Window] = []
    for i, core in enumerate(whole.blocks):
        cut = (None, window_bands, window_cells)[i % 3]
        jobs += [core] if cut is None else cut(core, (h, w), spec.tile, spec.overlap)
    assert len(jobs) > len(whole.blocks)
    split = Assembler((h, w), block, spec, confidence=True, jobs=jobs)
    assert [split.layout(job) is None for job in jobs].count(False) == len(whole.blocks[::3])
    shuffled = [jobs[i] for i in np.random.default_rng(0).permutation(len(jobs))]
    classes, confidence = run(split, shuffled)
    assert np.array_equal(classes, expected[0]) and np.array_equal(classes, _whole(model, raw, valid))
    assert np.array_equal(confidence.view(np.uint32), expected[1].view(np.uint32))


def test_first_maximum_is_argmax_with_ties_to_the_first_class() -> None:
    from geoseg.infer.assemble import first_maximum

    rng = np.random.default_rng(3)
    sums = rng.integers(0, 4, (5, 40, 30)).astype(np.int32)  # few values: many ties between classes
    labels = [7, 0, 254, 3, 12]
    classes, top = first_maximum(sums, labels)
    assert classes.dtype == np.uint8
    assert np.array_equal(classes, np.asarray(labels, dtype=np.uint8)[sums.argmax(axis=0)])
    assert np.array_equal(top, sums.max(axis=0))


@pytest.mark.parametrize("confidence", [False, True])
def test_finishing_on_the_device_follows_the_writers_rule(confidence: bool) -> None:
    """On a GPU a block's interior is finished in torch (``device_finish``); here the same function runs on
    CPU tensors and must give ``finish_block``'s classes and confidence bit for bit, ties and nodata included."""
    from rasterio.windows import Window

    from geoseg.infer.assemble import finish_block
    from geoseg.infer.engine import InferenceSpec
    from geoseg.model.forward import device_finish

    rng = np.random.default_rng(11)
    sums = rng.integers(0, 6, (3, 50, 70)).astype(np.int32) * 2**22  # few values: many ties
    valid = rng.random((50, 70)) > 0.1
    spec = InferenceSpec(NORM, CLASS_IDS, 48, 20)
    expected = finish_block(Window(0, 0, 70, 50), [(0, 0, sums.copy())], valid, spec, confidence)
    classes, share = device_finish(torch.from_numpy(sums), CLASS_IDS, valid, confidence, IGNORE_INDEX)
    assert np.array_equal(classes, expected.classes) and (classes == IGNORE_INDEX).sum() == (~valid).sum()
    if confidence:
        assert share is not None and expected.confidence is not None
        assert np.array_equal(share.view(np.uint32), expected.confidence.view(np.uint32))
    else:
        assert share is None
