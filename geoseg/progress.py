"""Progress reporting: a bar for people, JSON lines for programs (the QGIS plugin), or nothing."""

from __future__ import annotations

import json
import sys
from enum import StrEnum

from tqdm import tqdm


class ProgressMode(StrEnum):
    bar = "bar"
    json = "json"
    none = "none"


class Progress:
    """``update(stage, done, total)`` as a tqdm bar per stage, or ``{"stage", "done", "total"}`` on stderr."""

    def __init__(self, mode: ProgressMode = ProgressMode.bar) -> None:
        self.mode = mode
        self._bar: tqdm | None = None
        self._stage: str | None = None

    def update(self, stage: str, done: int, total: int) -> None:
        if self.mode == ProgressMode.json:
            sys.stderr.write(json.dumps({"stage": stage, "done": done, "total": total}) + "\n")
            sys.stderr.flush()
        elif self.mode == ProgressMode.bar:
            if stage != self._stage or self._bar is None:
                self.close()
                self._bar = tqdm(total=total, desc=stage, unit="step", leave=False, file=sys.stderr)
                self._stage = stage
            self._bar.n = done
            self._bar.refresh()
            if done >= total:
                self.close()

    def stage(self, stage: str):
        return lambda done, total: self.update(stage, done, total)

    def message(self, text: str) -> None:
        if self._bar is not None:
            self._bar.write(text)
        else:
            print(text, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
            self._stage = None
