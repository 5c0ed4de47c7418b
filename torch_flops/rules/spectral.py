"""Fast Fourier transforms, at the aten level: every ``torch.fft`` function, ``torch.stft`` and
``torch.istft`` (and their backward) reach one of three kernels, which are priced here.

An FFT's operation count depends on the algorithm a library picks for each length (radix-2,
mixed-radix, Bluestein for large primes), so the count is the nominal one that FFT benchmarks use
(FFTW's): a complex transform of ``N`` points costs ``5 N log2 N`` real FLOPs, a real-input or
real-output one half of that. For a transform over several dimensions ``N`` is the product of their
sizes (a row-column transform sums ``5 N log2 n_i`` over the dimensions, which is ``5 N log2 N``); the
other dimensions are a batch of ``B`` transforms:

- ``_fft_c2c(x, dim, normalization, forward)``: ``B * 5 N log2 N``, ``N`` from ``x``'s sizes;
- ``_fft_r2c(x, dim, normalization, onesided)``: ``B * 2.5 N log2 N``, ``N`` from the real ``x`` (a
  two-sided output's mirrored half is filled by conjugate symmetry, not counted);
- ``_fft_c2r(x, dim, normalization, last_dim_size)``: ``B * 2.5 N log2 N``, ``N`` from the real output;
- ``normalization`` other than 0 (``norm="ortho"``, or ``"backward"`` on an inverse transform): one
  multiply per real number of the output, 2 per complex element.

Each transform's count is rounded to the nearest integer (``log2 N`` is irrational unless ``N`` is a
power of two). MACs are 0, as for the other non-product ops. Worked example: ``torch.fft.rfft`` of a
``(2, 16)`` real tensor: ``2 * 2.5 * 16 * 4 = 320`` FLOPs; ``torch.fft.ifft`` of a ``(4, 8)`` complex
tensor: ``4 * 5 * 8 * 3 = 480``, plus ``2 * 32`` for the ``1/8`` scaling: 544.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch_flops.records import Cost
from torch_flops.registry import OpCall, aten_ops, aten_rule, prod


def fft_cost(batch: int, points: int, real: bool) -> int:
    """``batch * 5 N log2 N`` FLOPs for ``batch`` complex transforms of ``N = points``, half for real
    ones, rounded to the nearest integer."""
    if batch == 0 or points <= 1:
        return 0
    return round(batch * (2.5 if real else 5.0) * points * math.log2(points))


def _points(shape: Sequence[int], dims: Sequence[int]) -> tuple[int, int]:
    """The transform's points (the product of the sizes along ``dims``) and the batch (the rest)."""
    rank = len(shape)
    along = {d % rank for d in dims}
    points = prod(shape[d] for d in along)
    batch = prod(shape[d] for d in range(rank) if d not in along)
    return points, batch


def _priced(call: OpCall, shape: Sequence[int], real: bool) -> Cost:
    """The transforms over ``call``'s ``dim`` of a tensor of ``shape`` (the complex or real side, as the
    op says), plus one multiply per real number of the output when ``normalization`` is not 0."""
    points, batch = _points(shape, call.arg(1, "dim"))
    flops = fft_cost(batch, points, real)
    if call.arg(2, "normalization"):
        output = call.output
        flops += output.numel() * (2 if output.is_complex() else 1)
    return Cost(flops, 0)


@aten_rule(*aten_ops("_fft_c2c"))
def fft_c2c(call: OpCall) -> Cost:
    return _priced(call, call.args[0].shape, real=False)


@aten_rule(*aten_ops("_fft_r2c"))
def fft_r2c(call: OpCall) -> Cost:
    return _priced(call, call.args[0].shape, real=True)  # N from the real input


@aten_rule(*aten_ops("_fft_c2r"))
def fft_c2r(call: OpCall) -> Cost:
    return _priced(call, call.output.shape, real=True)  # N from the real output
