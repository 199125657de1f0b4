"""Building the U-Net and loading encoder weights from local files (no download, no unpickling)."""

from __future__ import annotations

from pathlib import Path

import pytest
import segmentation_models_pytorch as smp
import torch
from safetensors.torch import save_file

from geoseg.errors import ConfigError
from geoseg.model.build import build_unet, load_encoder_weights, read_weights_file

LITE0_ENCODER_TENSORS = 288


def _lite0(in_channels: int = 3) -> smp.Unet:
    return smp.Unet("tu-efficientnet_lite0", encoder_weights=None, in_channels=in_channels, classes=2)


@pytest.fixture(scope="module")
def lite0_tensors(lite0_weights: Path) -> list[torch.Tensor]:
    return list(read_weights_file(lite0_weights).values())


def test_lite0_file_loads_every_encoder_tensor_by_position(lite0_weights: Path, lite0_tensors: list) -> None:
    model = _lite0()
    assert load_encoder_weights(model, lite0_weights) == LITE0_ENCODER_TENSORS
    loaded = list(model.encoder.state_dict().values())
    assert len(loaded) == LITE0_ENCODER_TENSORS
    for i, (got, expected) in enumerate(zip(loaded, lite0_tensors, strict=False)):
        assert torch.equal(got, expected), i


def test_single_band_first_conv_is_the_rgb_sum(lite0_weights: Path, lite0_tensors: list) -> None:
    model = _lite0(in_channels=1)
    assert load_encoder_weights(model, lite0_weights) == LITE0_ENCODER_TENSORS
    loaded = list(model.encoder.state_dict().values())
    stem = loaded[0]
    assert stem.shape == (lite0_tensors[0].shape[0], 1, *lite0_tensors[0].shape[2:])
    torch.testing.assert_close(stem, lite0_tensors[0].sum(dim=1, keepdim=True))
    for got, expected in zip(loaded[1:], lite0_tensors[1:LITE0_ENCODER_TENSORS], strict=True):
        assert torch.equal(got, expected)


def test_four_bands_work(lite0_weights: Path, lite0_tensors: list) -> None:
    model = _lite0(in_channels=4)
    assert load_encoder_weights(model, lite0_weights) == LITE0_ENCODER_TENSORS
    stem = next(iter(model.encoder.state_dict().values()))
    rgb = lite0_tensors[0]
    assert stem.shape == (rgb.shape[0], 4, *rgb.shape[2:])
    # the RGB kernels carry over (rescaled); the fourth band reuses one of them
    scale = stem[:, :3].flatten() @ rgb.flatten() / (rgb.flatten() @ rgb.flatten())
    torch.testing.assert_close(stem[:, :3], rgb * scale)
    assert torch.isfinite(stem).all() and stem[:, 3].abs().sum() > 0
    with torch.no_grad():
        assert model.eval()(torch.zeros(1, 4, 64, 64)).shape == (1, 2, 64, 64)


def test_build_unet_from_a_local_weights_file(lite0_weights: Path, lite0_tensors: list) -> None:
    model = build_unet("tu-efficientnet_lite0", 3, 5, str(lite0_weights))
    assert model.segmentation_head[0].out_channels == 5
    assert torch.equal(next(iter(model.encoder.state_dict().values())), lite0_tensors[0])
    assert model._hub_mixin_config["encoder_weights"] is None


def test_a_whole_smp_checkpoint_loads_by_name(tmp_path: Path) -> None:
    torch.manual_seed(1)
    source = smp.Unet("resnet18", encoder_weights=None, encoder_depth=3, decoder_channels=(16, 8, 4), classes=2)
    path = tmp_path / "whole.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    torch.manual_seed(2)
    target = smp.Unet("resnet18", encoder_weights=None, encoder_depth=3, decoder_channels=(16, 8, 4), classes=2)
    n = load_encoder_weights(target, path)
    assert n == len(target.encoder.state_dict())
    for key, value in target.encoder.state_dict().items():
        assert torch.equal(value, source.encoder.state_dict()[key]), key


def test_weights_of_another_architecture_are_refused(tmp_path: Path) -> None:
    resnet = smp.Unet("resnet18", encoder_weights=None, classes=2).encoder.state_dict()
    path = tmp_path / "resnet18.safetensors"
    save_file({k: v.contiguous() for k, v in resnet.items()}, str(path))
    with pytest.raises(ConfigError) as info:
        load_encoder_weights(_lite0(), path)
    message = str(info.value)
    assert str(path) in message and "architecture" in message and "\n" not in message
    with pytest.raises(ConfigError):
        build_unet("tu-efficientnet_lite0", 3, 2, str(path))


class Payload:
    """Anything that is not a tensor: loading it would mean unpickling arbitrary objects."""


def test_pickled_objects_are_not_unpickled(tmp_path: Path) -> None:
    path = tmp_path / "evil.pth"
    torch.save({"weight": torch.zeros(2), "payload": Payload()}, path)
    with pytest.raises(ConfigError) as info:
        read_weights_file(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_missing_or_garbage_weights_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        read_weights_file(tmp_path / "nope.safetensors")
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a safetensors file")
    with pytest.raises(ConfigError, match="cannot read"):
        read_weights_file(garbage)


def test_lightning_style_checkpoint_is_unwrapped(tmp_path: Path) -> None:
    path = tmp_path / "ckpt.pth"
    torch.save({"state_dict": {"a": torch.ones(3)}, "epoch": 3}, path)
    tensors = read_weights_file(path)
    assert list(tensors) == ["a"] and torch.equal(tensors["a"], torch.ones(3))


@pytest.mark.parametrize("encoder", ["resnet_does_not_exist", "tu-no_such_timm_model"])
def test_unknown_encoder_is_a_config_error(encoder: str) -> None:
    with pytest.raises(ConfigError, match=encoder):
        build_unet(encoder, 3, 2, None)
