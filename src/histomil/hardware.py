"""What the machine's CPU/GPU runs natively: bfloat16 is fast only where the hardware has it.

Machines of one project differ (one CPU has AVX512-BF16 or AMX, another only AVX2). Without
native support torch emulates bfloat16 matrix multiplies, which is slower than float32: an
explicit bfloat16 request then warns, and ``auto`` never picks it.
"""

from __future__ import annotations

import functools
import warnings

_WARNED: set[str] = set()


class EmulatedPrecisionWarning(UserWarning):
    """bfloat16 was asked for on hardware that only emulates it."""


def native_bf16(device) -> bool:  # noqa: ANN001  (torch.device, imported lazily)
    """Whether ``device`` runs bfloat16 matrix multiplies natively (asked once per type)."""
    return _native_bf16(device.type)


@functools.cache
def _native_bf16(device_type: str) -> bool:
    import torch

    if device_type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def warn_if_emulated_bf16(device) -> bool:  # noqa: ANN001
    """Warn (once per process and device type) when bfloat16 is emulated on ``device``;
    returns whether it is native."""
    native = native_bf16(device)
    if not native and device.type not in _WARNED:
        _WARNED.add(device.type)
        warnings.warn(
            f"bfloat16 is not native on this {device.type} (no AVX512-BF16/AMX): torch emulates "
            "it, which is slower than float32 and no more accurate; use float32 here",
            EmulatedPrecisionWarning,
            stacklevel=3,
        )
    return native
