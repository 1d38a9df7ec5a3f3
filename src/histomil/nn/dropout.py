"""Dropout whose random mask is cheap on the CPU.

torch's CPU dropout draws its Bernoulli mask from the default generator one element at a time
(mt19937): about 13 ns per element here, 52-60 ms for one 8,000 x 512 activation, which was the
largest cost outside the matrix multiplies in every model of the zoo (``benchmarks/README.md``,
"Floors"). NumPy's PCG64 makes 64 random bits in about 2 ns, so on CPU tensors the mask comes from
a PCG64 stream seeded from torch's default generator (one draw per call): each raw 64-bit output is
read as four uniform 16-bit integers (in the machine's byte order), about 20x faster than torch's
draw and 3x faster than ``Generator.integers(..., dtype=uint16)``, which spends most of its time on
bounded-range logic that a range of exactly 2**16 does not need. Runs stay reproducible under
``torch.manual_seed`` and the mask is independent of NumPy's global state. Each element is kept
with probability ``1 - round(p * 65536) / 65536`` (``p`` to within 8e-6; exact for multiples of
1/65536 such as 0.25 and 0.5) and scaled by ``1 / (1 - p)``, as
:func:`torch.nn.functional.dropout`, whose CPU path likewise multiplies by a float mask of 0 and
``1 / (1 - p)`` and keeps it for the backward pass. Other devices (CUDA: Philox, already fast) and
in-place dropout use :func:`torch.nn.functional.dropout` unchanged.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

_LEVELS = 65536  # the mask compares uniform 16-bit integers with round(p * 65536)
# Names the mask stream. It is part of a training fold's resume identity (an interrupted fold is
# not continued with other masks), so change it whenever the draw changes.
MASK_STREAM = "pcg64-raw64-as-4x16"


def _keep_bits(n: int, p: float) -> np.ndarray:
    """Bool (n,): True with probability ``1 - p`` (to 1/65536), from a PCG64 stream seeded by one
    draw from torch's default generator."""
    seed = int(torch.randint(0, 2**62, (1,)).item())
    words = np.random.PCG64(seed).random_raw(-(-n // 4))  # uint64, 4 x 16 uniform bits each
    bits = words.view(np.uint16)[:n]
    return bits >= np.uint16(min(round(p * _LEVELS), _LEVELS - 1))


def scaled_keep_mask(n: int, p: float, dtype: torch.dtype) -> Tensor:
    """Float (n,) in ``dtype``: 0 where dropped, ``1 / (1 - p)`` where kept (bf16/half: rounded
    from float32), as torch's CPU dropout multiplies by. Built in one NumPy pass from the bool
    draw; multiplying by the bool mask instead is 3x slower (the dtype promotion is not
    vectorised)."""
    dt = np.float64 if dtype == torch.float64 else np.float32
    scale = np.multiply(_keep_bits(n, p), dt(1.0 / (1.0 - p)), dtype=dt)
    return torch.from_numpy(scale).to(dtype)


def keep_mask(shape: torch.Size | tuple[int, ...], p: float) -> Tensor:
    """Bool tensor of ``shape``: the elements :func:`dropout` keeps."""
    return torch.from_numpy(_keep_bits(int(np.prod(shape, dtype=np.int64)), p)).view(tuple(shape))


def dropout(x: Tensor, p: float, training: bool = True) -> Tensor:
    """:func:`torch.nn.functional.dropout` with the cheap CPU mask of this module."""
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu" or p >= 1.0:
        return nn.functional.dropout(x, p, training)
    # the float mask is what torch's CPU dropout keeps for the backward pass too
    return x * scaled_keep_mask(x.numel(), p, x.dtype).view(x.shape)


class Dropout(nn.Dropout):
    """:class:`torch.nn.Dropout` (same constructor, no parameters) with the cheap CPU mask."""

    def forward(self, x: Tensor) -> Tensor:
        if self.inplace:
            return super().forward(x)
        return dropout(x, self.p, self.training)


def use_fast_dropout(module: nn.Module) -> nn.Module:
    """Replace every plain :class:`torch.nn.Dropout` inside ``module`` (e.g. the ones a
    :class:`torch.nn.TransformerEncoderLayer` creates) by :class:`Dropout`; returns ``module``.
    Attention-weight dropout inside :class:`torch.nn.MultiheadAttention` is torch's own."""
    for name, child in list(module.named_children()):
        if type(child) is nn.Dropout:
            setattr(module, name, Dropout(child.p, child.inplace))
        else:
            use_fast_dropout(child)
    return module
