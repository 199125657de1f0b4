"""What `--precision auto` picks on the CPU (README, "Segmenting a mosaic": precision)."""

from __future__ import annotations

from pathlib import Path

from geoseg.infer.settings import resolve_precision


def test_auto_precision_on_the_cpu_is_bf16_only_with_amx_tiles() -> None:
    """With AVX512-BF16 but no AMX a bf16 window ran 1.4× slower than fp32 (bench/RESULTS.md), so only AMX counts."""
    cpuinfo = Path("/proc/cpuinfo")
    flags = cpuinfo.read_text() if cpuinfo.exists() else ""
    assert resolve_precision("auto", "cpu") == ("bf16" if "amx_bf16" in flags else "fp32")
    assert resolve_precision("fp32", "cpu") == "fp32"
    assert resolve_precision("bf16", "cpu") == "bf16"  # asked for by name, it is what runs
