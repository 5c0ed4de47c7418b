"""Pooling: max and average, fixed-window and adaptive, 1d/2d/3d, modules and functionals.

A window of ``w`` elements costs ``w - 1`` comparisons (max) or ``w - 1`` adds and 1 divide (average):

- max pooling: ``out_numel * (prod(kernel) - 1)`` FLOPs;
- average pooling: ``out_numel * prod(kernel)`` FLOPs and MACs (the full window, padding included);
- adaptive pooling: the exact windows PyTorch uses, ``start = floor(i * in / out)``,
  ``end = ceil((i + 1) * in / out)``; the windows are separable, so the total window size is the
  product over dimensions of each dimension's summed window lengths. Average: that total; max: that
  total minus ``out_numel``.

Fractional max pooling has the same windows at random offsets (the draws cost nothing): as max pooling.
An int ``kernel_size=3`` of a 2-D pool is a 3x3 window (upstream torch_flops read it as 3).
Max pooling costs no MACs.

Worked example: ``MaxPool2d(3, 2, 1)`` on ``(1, 64, 112, 112)`` -> ``(1, 64, 56, 56)``:
200,704 outputs * (9 - 1) = 1,605,632 FLOPs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch.nn.functional as F
from torch import nn

from torch_flops.records import Cost
from torch_flops.registry import (
    OpCall,
    aten_ops,
    aten_rule,
    first_output,
    function_rule,
    lookup_by_mro,
    module_rule,
    numel,
    prod,
)


def _expand(value: int | Sequence[int], ndim: int) -> tuple[int, ...]:
    if isinstance(value, int):
        return (value,) * ndim
    values = tuple(int(v) for v in value)
    return values * ndim if len(values) == 1 else values


def max_pool_cost(out_numel: int, window: int) -> Cost:
    """``out_numel * (window - 1)`` comparisons."""
    return Cost(out_numel * max(window - 1, 0), 0)


def avg_pool_cost(out_numel: int, window: int) -> Cost:
    """``out_numel * window``: ``window - 1`` adds and one divide per output."""
    flops = out_numel * window
    return Cost(flops, flops)


def adaptive_window_total(in_sizes: Sequence[int], out_sizes: Sequence[int]) -> int:
    """Sum of the window sizes of one (N, C) plane: product over dims of that dim's window lengths."""
    total = 1
    for size_in, size_out in zip(in_sizes, out_sizes):
        total *= sum(
            math.ceil((i + 1) * size_in / size_out) - (i * size_in) // size_out for i in range(size_out)
        )
    return total


def adaptive_pool_windows(input_shape: Sequence[int], output_shape: Sequence[int], ndim: int) -> tuple[int, int]:
    """(sum of all window sizes, number of outputs) for an adaptive pool over the last ``ndim`` dims."""
    planes = prod(output_shape[:-ndim])
    return planes * adaptive_window_total(input_shape[-ndim:], output_shape[-ndim:]), prod(output_shape)


_MAX = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)
_AVG = (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)
_ADAPTIVE_MAX = (nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d)
_ADAPTIVE_AVG = (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d)
_FRACTIONAL_MAX = (nn.FractionalMaxPool2d, nn.FractionalMaxPool3d)  # windows at random offsets, the same sizes
_NDIM = {cls: i + 1 for group in (_MAX, _AVG, _ADAPTIVE_MAX, _ADAPTIVE_AVG) for i, cls in enumerate(group)}
_NDIM |= {nn.FractionalMaxPool2d: 2, nn.FractionalMaxPool3d: 3}


def _ndim_of(module: nn.Module) -> int:
    ndim = lookup_by_mro(_NDIM, type(module))
    if ndim is None:
        raise TypeError(f"not a pooling module: {type(module).__name__}")
    return ndim


# [N, C, *out] = MaxPoolNd(kernel_size)([N, C, *in]); FractionalMaxPoolNd too (its random offsets are draws: 0)
@module_rule(*_MAX, *_FRACTIONAL_MAX)
def max_pool_module(call: OpCall) -> Cost:
    window = prod(_expand(call.module.kernel_size, _ndim_of(call.module)))
    return max_pool_cost(numel(first_output(call.output)), window)


# [N, C, *out] = AvgPoolNd(kernel_size)([N, C, *in])
@module_rule(*_AVG)
def avg_pool_module(call: OpCall) -> Cost:
    window = prod(_expand(call.module.kernel_size, _ndim_of(call.module)))
    return avg_pool_cost(numel(call.output), window)


# [N, C, *out] = AdaptiveMaxPoolNd(out)([N, C, *in])
@module_rule(*_ADAPTIVE_MAX)
def adaptive_max_pool_module(call: OpCall) -> Cost:
    out = first_output(call.output)
    windows, outputs = adaptive_pool_windows(call.arg(0, "input").shape, out.shape, _ndim_of(call.module))
    return Cost(windows - outputs, 0)


# [N, C, *out] = AdaptiveAvgPoolNd(out)([N, C, *in])
@module_rule(*_ADAPTIVE_AVG)
def adaptive_avg_pool_module(call: OpCall) -> Cost:
    windows, _ = adaptive_pool_windows(call.arg(0, "input").shape, call.output.shape, _ndim_of(call.module))
    return Cost(windows, windows)


# symbolic_trace resolves ``return_indices=True`` to the ``*_with_indices`` variants: both are priced
_MAX_FUNCTIONS = {
    F.max_pool1d: 1, F.max_pool2d: 2, F.max_pool3d: 3,
    F.max_pool1d_with_indices: 1, F.max_pool2d_with_indices: 2, F.max_pool3d_with_indices: 3,
    F.fractional_max_pool2d: 2, F.fractional_max_pool3d: 3,
    F.fractional_max_pool2d_with_indices: 2, F.fractional_max_pool3d_with_indices: 3,
}
_AVG_FUNCTIONS = {F.avg_pool1d: 1, F.avg_pool2d: 2, F.avg_pool3d: 3}
_ADAPTIVE_MAX_FUNCTIONS = {
    F.adaptive_max_pool1d: 1, F.adaptive_max_pool2d: 2, F.adaptive_max_pool3d: 3,
    F.adaptive_max_pool1d_with_indices: 1, F.adaptive_max_pool2d_with_indices: 2,
    F.adaptive_max_pool3d_with_indices: 3,
}
_ADAPTIVE_AVG_FUNCTIONS = {F.adaptive_avg_pool1d: 1, F.adaptive_avg_pool2d: 2, F.adaptive_avg_pool3d: 3}


def _max_pool_function_rule(ndim: int):
    # F.max_poolNd(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False)
    def rule(call: OpCall) -> Cost:
        window = prod(_expand(call.arg(1, "kernel_size"), ndim))
        return max_pool_cost(numel(first_output(call.output)), window)

    rule.__qualname__ = f"max_pool{ndim}d_function"
    return rule


def _avg_pool_function_rule(ndim: int):
    # F.avg_poolNd(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True, ...)
    def rule(call: OpCall) -> Cost:
        window = prod(_expand(call.arg(1, "kernel_size"), ndim))
        return avg_pool_cost(numel(call.output), window)

    rule.__qualname__ = f"avg_pool{ndim}d_function"
    return rule


def _adaptive_function_rule(ndim: int, is_max: bool):
    # F.adaptive_{max,avg}_poolNd(input, output_size, ...)
    def rule(call: OpCall) -> Cost:
        out = first_output(call.output)
        windows, outputs = adaptive_pool_windows(call.arg(0, "input").shape, out.shape, ndim)
        return Cost(windows - outputs, 0) if is_max else Cost(windows, windows)

    rule.__qualname__ = f"adaptive_{'max' if is_max else 'avg'}_pool{ndim}d_function"
    return rule


# aten forms take the same leading arguments (self, kernel_size | output_size, ...)
_MAX_ATEN = {1: ("max_pool1d", "max_pool1d_with_indices"),
             2: ("max_pool2d", "max_pool2d_with_indices", "mkldnn_max_pool2d", "fractional_max_pool2d"),
             3: ("max_pool3d", "max_pool3d_with_indices", "mkldnn_max_pool3d", "fractional_max_pool3d")}
_AVG_ATEN = {1: ("avg_pool1d",), 2: ("avg_pool2d", "mkldnn_avg_pool2d"), 3: ("avg_pool3d", "mkldnn_avg_pool3d")}
_ADAPTIVE_MAX_ATEN = {1: ("adaptive_max_pool1d",), 2: ("adaptive_max_pool2d",), 3: ("adaptive_max_pool3d",)}
_ADAPTIVE_AVG_ATEN = {1: ("adaptive_avg_pool1d",), 2: ("adaptive_avg_pool2d", "_adaptive_avg_pool2d", "mkldnn_adaptive_avg_pool2d"),
                      3: ("adaptive_avg_pool3d", "_adaptive_avg_pool3d")}


def _register(functions: dict, aten: dict[int, tuple[str, ...]], make_rule) -> None:
    for ndim in (1, 2, 3):
        rule = make_rule(ndim)
        function_rule(*(fn for fn, n in functions.items() if n == ndim))(rule)
        aten_rule(*aten_ops(*aten[ndim]))(rule)


_register(_MAX_FUNCTIONS, _MAX_ATEN, _max_pool_function_rule)
_register(_AVG_FUNCTIONS, _AVG_ATEN, _avg_pool_function_rule)
_register(_ADAPTIVE_MAX_FUNCTIONS, _ADAPTIVE_MAX_ATEN, lambda ndim: _adaptive_function_rule(ndim, is_max=True))
_register(_ADAPTIVE_AVG_FUNCTIONS, _ADAPTIVE_AVG_ATEN, lambda ndim: _adaptive_function_rule(ndim, is_max=False))
