"""Ctrl-C or SIGTERM stays an interruption (exit 130, one line) even when clean-up fails on the way out."""

from __future__ import annotations

import pytest

from geoseg.cli import raised_while_interrupted


def _failing_cleanup_after(first: BaseException) -> Exception:
    """The exception a ``with`` block's exit raises while ``first`` propagates (rasterio's EnvError, seen when
    SIGINT landed inside GDAL's environment bookkeeping)."""
    try:
        try:
            raise first
        finally:
            raise RuntimeError("No GDAL environment exists")
    except RuntimeError as exc:
        return exc
    raise AssertionError("unreachable")


def test_an_error_raised_while_unwinding_an_interrupt_is_the_interruption() -> None:
    assert raised_while_interrupted(_failing_cleanup_after(KeyboardInterrupt()))


@pytest.mark.parametrize("first", [ValueError("a real failure"), OSError("disk full")])
def test_an_error_during_another_error_is_not_an_interruption(first: BaseException) -> None:
    assert not raised_while_interrupted(_failing_cleanup_after(first))
    assert not raised_while_interrupted(RuntimeError("a bug"))
