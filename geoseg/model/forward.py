"""The network over a batch of windows: fixed batch shape, channels-last, autocast, TTA and softmax.

Inference (``geoseg.infer``) and the drift check's confidence sample (``geoseg.drift``) both run windows
through this one function, so they see the same probabilities.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext

import numpy as np
import torch

from geoseg.tta import averaged_probabilities


@torch.inference_mode()
def batch_probabilities(
    model: torch.nn.Module, windows: Sequence[np.ndarray], batch_size: int, precision: str = "fp32", tta: bool = False
) -> np.ndarray:
    """Softmax probabilities (n, classes, h, w) of up to ``batch_size`` normalized (bands, h, w) windows.

    They run as one batch of always ``batch_size`` windows (zero-padded), so a window's probabilities do not
    depend on how many others share its batch.
    """
    device = next(model.parameters()).device
    batch = np.zeros((batch_size, *windows[0].shape), dtype=np.float32)
    for i, window in enumerate(windows):
        batch[i] = window
    x = torch.from_numpy(batch).to(device).contiguous(memory_format=torch.channels_last)

    def logits_of(view: torch.Tensor) -> torch.Tensor:
        with _autocast(device, precision):
            return model(view.contiguous(memory_format=torch.channels_last))

    return averaged_probabilities(logits_of, x, tta)[: len(windows)].cpu().numpy()


def _autocast(device: torch.device, precision: str):
    if precision == "fp32":
        return nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)
