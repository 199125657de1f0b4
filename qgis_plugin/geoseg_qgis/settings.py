"""The plugin's one setting: which geoseg to run (Processing → Options → Providers → geoseg)."""

from __future__ import annotations

EXECUTABLE_SETTING = "GEOSEG_EXECUTABLE"
EXECUTABLE_LABEL = "geoseg executable (the geoseg program, its environment's python, or that environment's folder)"


def add_settings(provider_name: str) -> None:
    from processing.core.ProcessingConfig import ProcessingConfig, Setting

    ProcessingConfig.addSetting(
        Setting(provider_name, EXECUTABLE_SETTING, EXECUTABLE_LABEL, "", valuetype=Setting.FILE)
    )
    ProcessingConfig.readSettings()


def remove_settings() -> None:
    from processing.core.ProcessingConfig import ProcessingConfig

    ProcessingConfig.removeSetting(EXECUTABLE_SETTING)


def executable_setting() -> str | None:
    """The configured geoseg, or None to fall back on $GEOSEG_EXECUTABLE and PATH."""
    try:
        from processing.core.ProcessingConfig import ProcessingConfig
    except ImportError:  # Processing disabled: only the environment and PATH remain
        return None
    value = ProcessingConfig.getSetting(EXECUTABLE_SETTING)
    return str(value) if value else None
