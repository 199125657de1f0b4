"""Remote-sensing encoder weights (torchgeo's enums): their normalization, the cache, and the offline failure.

Nothing is downloaded: the cached-file path is tested with a local file of the same architecture placed
where torch's hub cache keeps the real one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import timm
import torch

from geoseg.data.preprocess import Normalization
from geoseg.errors import ConfigError, WeightsUnavailableError
from geoseg.model import remote_sensing
from geoseg.model.build import build_unet
from geoseg.train import weights_normalization

LANDSAT = "torchgeo:ResNet18_Weights.LANDSAT_ETM_SR_MOCO"
SENTINEL2 = "torchgeo:ResNet18_Weights.SENTINEL2_ALL_MOCO"


@pytest.fixture
def hub_dir(tmp_path: Path):
    previous = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))
    yield tmp_path / "hub"
    torch.hub.set_dir(previous)


def test_landsat_weights_keep_torchgeos_scaling() -> None:
    described = remote_sensing.describe(LANDSAT)
    assert (described.architecture, described.in_channels, len(described.bands)) == ("resnet18", 6, 6)
    normalization = weights_normalization(LANDSAT, 6)
    assert isinstance(normalization, Normalization)
    raw = np.array([0, 51, 255], dtype=np.float32).reshape(1, 3, 1).repeat(6, axis=0)
    np.testing.assert_allclose(normalization.apply(raw)[:, :, 0], raw[:, :, 0] / 255, rtol=1e-5)  # x / 255


def test_sentinel2_weights_standardize_with_their_band_statistics() -> None:
    described = remote_sensing.describe(SENTINEL2)
    assert described.in_channels == 13
    normalization = weights_normalization(SENTINEL2, 13)
    raw = np.array(described.offset, dtype=np.float32)[:, None, None] + np.array(described.divisor)[:, None, None]
    np.testing.assert_allclose(normalization.apply(raw.astype(np.float32)), 1.0, rtol=1e-4)  # mean + 1 sd -> 1


def test_other_weights_leave_normalization_to_geoseg() -> None:
    assert weights_normalization("imagenet", 3) is None and weights_normalization(None, 3) is None


def test_unknown_names_and_other_encoders_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="not one of torchgeo's weights"):
        remote_sensing.describe("torchgeo:ResNet18_Weights.NO_SUCH_THING")
    with pytest.raises(ConfigError, match=r"set model\.encoder: resnet18"):
        build_unet("resnet34", 6, 2, LANDSAT)


def test_offline_without_the_file_fails_at_once_saying_where_it_goes(hub_dir: Path) -> None:
    with pytest.raises(WeightsUnavailableError) as info:  # HF_HUB_OFFLINE=1 in tests: no network attempt
        build_unet("resnet18", 6, 2, LANDSAT)
    message = str(info.value)
    assert "unreachable" in message and str(hub_dir / "checkpoints") in message and "https://" in message


def test_a_cached_file_of_the_same_architecture_loads_into_the_encoder(hub_dir: Path) -> None:
    torch.manual_seed(3)
    state = timm.create_model("resnet18", in_chans=6, num_classes=0).state_dict()
    cache = remote_sensing.describe(LANDSAT).cache_file
    assert cache.parent == hub_dir / "checkpoints"
    cache.parent.mkdir(parents=True)
    torch.save(state, cache)
    model = build_unet("resnet18", 6, 2, LANDSAT)
    torch.testing.assert_close(model.encoder.conv1.weight, state["conv1.weight"])
    torch.testing.assert_close(model.encoder.layer4[1].bn2.running_var, state["layer4.1.bn2.running_var"])
