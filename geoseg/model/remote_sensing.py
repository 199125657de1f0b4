"""Encoder weights pretrained on satellite imagery: torchgeo's weight enums, as ``torchgeo:<Enum>.<MEMBER>``.

For example ``model.weights: torchgeo:ResNet18_Weights.LANDSAT_ETM_SR_MOCO`` (SSL4EO-L, 6 Landsat 7
surface-reflectance bands) or ``torchgeo:ResNet50_Weights.SENTINEL2_ALL_MOCO`` (13 Sentinel-2 bands).
The weights were learned on inputs normalized torchgeo's way, so the bundle records that normalization
instead of geoseg's own, and inference applies it. The file is downloaded once into torch's hub cache
(``~/.cache/torch/hub/checkpoints``); offline, a missing file fails within seconds with how to supply it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import torch

from geoseg.errors import ConfigError, WeightsUnavailableError

PREFIX = "torchgeo:"
NORMALIZED_RANGE = 65535.0  # raw values are scaled from [0, this] so geoseg's clip to 0..1 never bites


@dataclass(frozen=True)
class RemoteSensingWeights:
    name: str  # e.g. ResNet18_Weights.LANDSAT_ETM_SR_MOCO
    url: str
    architecture: str  # the timm/smp encoder these weights belong to, e.g. resnet18
    in_channels: int
    bands: list[str]
    offset: list[float]  # torchgeo's input normalization, composed: (x - offset) / divisor, per band
    divisor: list[float]

    @property
    def cache_file(self) -> Path:
        return Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(self.url).path).name

    def normalization_json(self, n_bands: int) -> dict[str, list]:
        """The bundle's ``input`` for these weights: scale [0, 65535], then mean/std giving (x - offset) / divisor."""
        offsets, divisors = _per_band(self.offset, n_bands), _per_band(self.divisor, n_bands)
        return {
            "scale": [[0.0, NORMALIZED_RANGE]] * n_bands,
            "mean": [o / NORMALIZED_RANGE for o in offsets],
            "std": [d / NORMALIZED_RANGE for d in divisors],
        }


def is_torchgeo(weights: str | None) -> bool:
    return isinstance(weights, str) and weights.startswith(PREFIX)


def describe(weights: str) -> RemoteSensingWeights:
    """The weights a ``torchgeo:...`` name stands for; an unknown name is a config error."""
    from torchgeo.models import get_weight

    name = weights.removeprefix(PREFIX)
    try:
        member = get_weight(name)
    except (ValueError, AttributeError):
        raise ConfigError(
            f"model.weights {weights!r} is not one of torchgeo's weights; names look like "
            "torchgeo:ResNet18_Weights.LANDSAT_ETM_SR_MOCO (see torchgeo.models.list_models and its *_Weights enums)"
        ) from None
    offset, divisor = _composed_normalization(member.transforms)
    meta = member.meta
    return RemoteSensingWeights(name=name, url=member.url, architecture=str(meta.get("model", "")),
                                in_channels=int(meta.get("in_chans", 3)), bands=list(meta.get("bands", [])),
                                offset=offset, divisor=divisor)  # fmt: skip


def _composed_normalization(transforms: torch.nn.Module) -> tuple[list[float], list[float]]:
    """torchgeo's chain of Normalize steps as one (x - offset) / divisor; crops and resizes are not ours to copy."""
    offset, divisor = torch.zeros(1, dtype=torch.float64), torch.ones(1, dtype=torch.float64)
    for step in transforms.children() if isinstance(transforms, torch.nn.Sequential) else [transforms]:
        mean, std = getattr(step, "mean", None), getattr(step, "std", None)
        if mean is None or std is None:
            continue
        mean_t = torch.as_tensor(mean, dtype=torch.float64).flatten()
        std_t = torch.as_tensor(std, dtype=torch.float64).flatten()
        offset = offset + mean_t * divisor  # ((x - a) / b - m) / s = (x - (a + m b)) / (b s)
        divisor = divisor * std_t
    return offset.tolist(), divisor.tolist()


def _per_band(values: list[float], n_bands: int) -> list[float]:
    if len(values) == 1:
        return values * n_bands
    if len(values) < n_bands:
        raise ConfigError(f"the weights' normalization has {len(values)} bands but the images give {n_bands}")
    return values[:n_bands]


def check_encoder(weights: RemoteSensingWeights, encoder: str) -> None:
    if weights.architecture and encoder != weights.architecture:
        raise ConfigError(
            f"model.weights torchgeo:{weights.name} are for a {weights.architecture} encoder; "
            f"set model.encoder: {weights.architecture}"
        )


def state_dict(weights: RemoteSensingWeights) -> dict[str, torch.Tensor]:
    """The weights' tensors: from torch's hub cache, else downloaded once; offline, a quick clear failure."""
    from geoseg.model.build import url_reachable  # build imports this module

    cached = weights.cache_file
    if not cached.is_file():
        if not url_reachable(weights.url):
            raise WeightsUnavailableError(
                f"torchgeo weights {weights.name} are not cached and {urlparse(weights.url).hostname} is unreachable "
                f"(offline?): download {weights.url} on a connected machine and copy it to {cached}, or set "
                "model.weights to that local file"
            )
        torch.hub.load_state_dict_from_url(weights.url, map_location="cpu", weights_only=True, progress=False)
    tensors = torch.load(cached, map_location="cpu", weights_only=True)
    if isinstance(tensors, dict) and isinstance(tensors.get("state_dict"), dict):
        tensors = tensors["state_dict"]
    return {k: v for k, v in tensors.items() if isinstance(v, torch.Tensor)}
