"""South-up rasters (a positive y pixel size) are refused in one line: the network would see them mirrored."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import rasterio
from affine import Affine

from geoseg.demo_data import make_survey
from tests.conftest import make_random_bundle, write_config


@pytest.fixture(scope="module")
def south_up(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The survey stored bottom row first, with the geotransform that keeps every pixel where it was."""
    folder = tmp_path_factory.mktemp("south")
    survey = make_survey(folder, size=256, seed=5)
    with rasterio.open(survey.image) as ds:
        data, profile, t = ds.read(), ds.profile, ds.transform
    flipped = Affine(t.a, t.b, t.c, t.d, -t.e, t.f + t.e * ds.height)
    path = folder / "south_up.tif"
    with rasterio.open(path, "w", **(profile | {"transform": flipped})) as out:
        out.write(data[:, ::-1, :])
    return path, survey.labels


def refused(*args: str | Path) -> str:
    run = subprocess.run([sys.executable, "-m", "geoseg", *map(str, args)], capture_output=True, text=True)
    assert run.returncode == 2, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "mirrored" in lines[0] and "gdalwarp" in lines[0], run.stderr
    return lines[0]


def test_infer_and_train_refuse_a_south_up_mosaic(tmp_path: Path, south_up: tuple[Path, Path], lite0_weights) -> None:
    mosaic, labels = south_up
    bundle = make_random_bundle(tmp_path / "b", [1, 2, 3], n_classes=4, tile=128, overlap=16)
    assert "south_up.tif" in refused("infer", mosaic, "--model", bundle, "--out-dir", tmp_path / "out")
    config = write_config(tmp_path / "train.yaml", f"""
data: {{images: [{mosaic}], labels: {labels}, classes: {{1: soil, 2: crust, 3: lichen, 4: moss}}}}
model: {{encoder: tu-efficientnet_lite0, weights: {lite0_weights}}}
""")  # fmt: skip
    refused("train", config, "--out", tmp_path / "model")
    assert not (tmp_path / "out").exists() and not (tmp_path / "model").exists()


def test_the_api_refuses_a_mirrored_array(tmp_path: Path, south_up: tuple[Path, Path]) -> None:
    import rioxarray

    import geoseg
    from geoseg.api import ArrayError

    bundle = make_random_bundle(tmp_path / "b", [1, 2, 3], n_classes=4, tile=128, overlap=16)
    model = geoseg.load_model(bundle, device="cpu")
    with pytest.raises(ArrayError, match="mirrored"):
        geoseg.segment(rioxarray.open_rasterio(south_up[0]), model)
