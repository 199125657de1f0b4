"""Build the segmentation network: an smp U-Net with ImageNet, local or no pretrained weights."""

from __future__ import annotations

import os
import socket
import warnings
from pathlib import Path
from urllib.parse import urlparse

import segmentation_models_pytorch as smp
import torch
from safetensors.torch import load_file

from geoseg.errors import ConfigError, WeightsUnavailableError
from geoseg.model import remote_sensing

HUB_CONNECT_TIMEOUT_S = 3.0
WEIGHTS_HOWTO = (
    "download the encoder weights on a connected machine (they land in ~/.cache/huggingface) and copy "
    "that cache here, or set model.weights to a local .safetensors/.pth file, or model.weights: null "
    "to train from scratch"
)


def build_unet(encoder: str, in_channels: int, n_classes: int, weights: str | None) -> smp.Unet:
    """A U-Net whose encoder starts from ``weights``: 'imagenet', 'torchgeo:<Enum>.<MEMBER>' (remote sensing
    weights, geoseg/model/remote_sensing.py), a local file, or None (random)."""
    if weights == "imagenet":
        return _build_imagenet(encoder, in_channels, n_classes)
    if remote_sensing.is_torchgeo(weights):
        described = remote_sensing.describe(weights)
        remote_sensing.check_encoder(described, encoder)
        model = _construct(encoder, in_channels, n_classes, encoder_weights=None)
        load_encoder_tensors(model, remote_sensing.state_dict(described), weights)
        return model
    model = _construct(encoder, in_channels, n_classes, encoder_weights=None)
    if weights is not None:
        loaded = load_encoder_weights(model, Path(weights))
        if loaded == 0:
            raise ConfigError(f"no tensor fits encoder {encoder}; is it the right weights file?", weights)
    return model


def _construct(encoder: str, in_channels: int, n_classes: int, encoder_weights: str | None) -> smp.Unet:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            weights_arg: str | bool | None = encoder_weights
            if encoder.startswith("tu-") and encoder_weights is not None:
                weights_arg = True  # timm encoders name their pretrained variant in the encoder name
            return smp.Unet(
                encoder_name=encoder, encoder_weights=weights_arg, in_channels=in_channels, classes=n_classes
            )
    except KeyError as exc:
        raise ConfigError(f"model.encoder {encoder!r} is not an smp/timm encoder ({exc.args[0][:120]})") from None
    except RuntimeError as exc:
        if "Unknown model" in str(exc):
            raise ConfigError(f"model.encoder {encoder!r} is not a timm model name") from None
        raise


def _build_imagenet(encoder: str, in_channels: int, n_classes: int) -> smp.Unet:
    """smp's own download path (cached by huggingface_hub), failing fast when offline.

    huggingface_hub retries for a long time when the network is down; a quick TCP probe of the
    hub decides first, and offline we only use what is already in the local cache.
    """
    if hub_reachable():
        return _construct(encoder, in_channels, n_classes, encoder_weights="imagenet")
    import huggingface_hub.constants as hub_constants

    previous = hub_constants.HF_HUB_OFFLINE
    hub_constants.HF_HUB_OFFLINE = True
    try:
        return _construct(encoder, in_channels, n_classes, encoder_weights="imagenet")
    except ConfigError:
        raise
    except Exception:
        raise WeightsUnavailableError(
            f"ImageNet weights for encoder {encoder!r} are not cached and the model hub is unreachable "
            f"(offline?): {WEIGHTS_HOWTO}"
        ) from None
    finally:
        hub_constants.HF_HUB_OFFLINE = previous


def hub_reachable(timeout: float = HUB_CONNECT_TIMEOUT_S) -> bool:
    return url_reachable(os.environ.get("HF_ENDPOINT", "https://huggingface.co"), timeout)


def url_reachable(url: str, timeout: float = HUB_CONNECT_TIMEOUT_S) -> bool:
    """A quick TCP probe of ``url``'s host; False at once when HF_HUB_OFFLINE says we are offline."""
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    parsed = urlparse(url)
    host = parsed.hostname or "huggingface.co"
    port = parsed.port or (443 if parsed.scheme != "http" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def read_weights_file(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a .safetensors file, or of a .pth/.pt state dict loaded without arbitrary unpickling."""
    if not path.is_file():
        raise ConfigError("model.weights file not found", path)
    try:
        if path.suffix == ".safetensors":
            tensors = load_file(str(path), device="cpu")
        else:
            tensors = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ConfigError(f"cannot read weights ({str(exc).splitlines()[0][:160]})", path) from None
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(tensors, dict) and isinstance(tensors.get(key), dict):
            tensors = tensors[key]
    if not isinstance(tensors, dict):
        raise ConfigError("is not a state dict of tensors", path)
    return {k: v for k, v in tensors.items() if isinstance(v, torch.Tensor)}


def load_encoder_weights(model: smp.Unet, path: Path) -> int:
    """Load an encoder's pretrained tensors into ``model.encoder``; returns how many were loaded.

    Accepts a whole smp model's state dict, an encoder's own, or a classifier checkpoint of the
    same architecture whose names differ (e.g. lukemelas-style EfficientNet files for timm's
    model): then tensors are matched by position and shape, and the classifier head left over.
    The first convolution is adapted when the band count differs from the file's 3 channels.
    """
    return load_encoder_tensors(model, read_weights_file(path), path)


def load_encoder_tensors(model: smp.Unet, source: dict[str, torch.Tensor], origin: str | Path) -> int:
    """``source``'s tensors into ``model.encoder`` by name, else by position and shape (see load_encoder_weights)."""
    path = origin
    target = model.encoder.state_dict()
    by_name = _match_by_name(source, target)
    matched = by_name if len(by_name) >= 0.9 * len(target) else _match_by_position(source, target)
    if len(matched) < 0.9 * len(target):
        raise ConfigError(
            f"fits only {len(matched)} of the encoder's {len(target)} tensors; is it the right architecture?",
            path,
        )
    model.encoder.load_state_dict(matched, strict=False)
    return len(matched)


def _match_by_name(source: dict[str, torch.Tensor], target: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    matched: dict[str, torch.Tensor] = {}
    prefixes = ("", "encoder.", "model.", "module.", "module.encoder.", "backbone.")
    for key, tensor in target.items():
        bare = key.removeprefix("model.")
        for prefix in prefixes:
            for candidate in (prefix + key, prefix + bare):
                if candidate in source:
                    adapted = _adapt(source[candidate], tensor)
                    if adapted is not None:
                        matched[key] = adapted
                    break
            if key in matched:
                break
    return matched


def _match_by_position(source: dict[str, torch.Tensor], target: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    matched: dict[str, torch.Tensor] = {}
    for (key, tensor), src in zip(target.items(), source.values(), strict=False):
        adapted = _adapt(src, tensor)
        if adapted is None:
            break
        matched[key] = adapted
    return matched


def _adapt(src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor | None:
    """``src`` reshaped to ``dst``'s shape where that is meaningful (the input conv), else None."""
    if src.shape == dst.shape:
        return src
    if src.ndim == 4 and dst.ndim == 4 and src.shape[0] == dst.shape[0] and src.shape[2:] == dst.shape[2:]:
        n_in, n_src = dst.shape[1], src.shape[1]
        if n_in == 1:
            return src.sum(dim=1, keepdim=True)
        repeats = -(-n_in // n_src)
        return src.repeat(1, repeats, 1, 1)[:, :n_in] * (n_src / n_in)
    return None
