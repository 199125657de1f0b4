"""One user-facing error hierarchy.

Anything a user can fix (a wrong path, a config key, bands that do not fit) raises a
``GeoSegError`` whose message is one readable line naming the file and the fix. The CLI
prints that line and exits with code 2; any other exception is a bug (exit code 1).
"""

from __future__ import annotations

from pathlib import Path


class GeoSegError(Exception):
    """A problem with the user's input, explained in one line."""

    exit_code = 2

    def __init__(self, message: str, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else None
        super().__init__(f"{path}: {message}" if path is not None else message)


class InputError(GeoSegError):
    """An input file is missing, unreadable or does not fit the job."""


class ConfigError(GeoSegError):
    """A config file or option is invalid."""


class BundleError(GeoSegError):
    """A model bundle is missing, malformed or does not fit the input."""


class OutputExistsError(GeoSegError):
    """An output exists and ``--overwrite`` was not given."""


class DeviceError(GeoSegError):
    """The requested compute device is not available."""


class WeightsUnavailableError(GeoSegError):
    """Pretrained weights were requested but cannot be fetched."""


class OutputError(GeoSegError):
    """An output cannot be written (folder missing rights, disk full)."""


class Cancelled(Exception):
    """Work stopped part-way because the run is being interrupted; its partial output is already removed."""


# What `pip install 'geoseg[torch]'` adds: a command that imports one of these in an install without it
# gets one line saying so (the CLI), never a traceback.
TORCH_MODULES = frozenset(
    {"torch", "torchvision", "torchgeo", "lightning", "segmentation_models_pytorch", "timm", "torchmetrics"}
)
INSTALL_TORCH = "pip install 'geoseg[torch]'"


def needs_torch(exc: ImportError) -> bool:
    """Whether ``exc`` is the import of a module only the torch extra installs."""
    return isinstance(exc, ModuleNotFoundError) and (exc.name or "").split(".")[0] in TORCH_MODULES
