"""Normalisation layers: BatchNorm, LayerNorm, GroupNorm, InstanceNorm, RMSNorm (modules, functionals
and their aten forms).

Normalising costs 2 per element (subtract the mean, divide by the standard deviation); an affine
transform adds 1 per element for the weight and 1 for the bias. So 4 per element with
``affine=True`` (``elementwise_affine=True``), 2 without. MACs are counted the same way.
Statistics (mean, variance) are not counted: in eval mode BatchNorm uses stored ones, and the
convention keeps every norm at the same per-element price.

RMSNorm has no upstream price and is counted as computed, statistics included: per element a square,
the mean's share (``n`` per row of ``n``), the multiply by ``rsqrt`` and 1 for a weight; per row the
``+ eps`` and the ``rsqrt``: ``numel * (3 + weight) + 2 * rows``. MACs: ``numel``, the mean's (a mean
costs as many MACs as FLOPs, see :mod:`torch_flops.rules.reduction`).

Worked examples: ``LayerNorm(768)`` on ``(1, 197, 768)``: 197*768 * 4 = 605,184.
``RMSNorm(8)`` on ``(2, 8)``: 16 * 4 + 2 * 2 = 68.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from torch_flops.records import Cost
from torch_flops.registry import OpCall, aten_ops, aten_rule, first_output, function_rule, module_rule, module_tensor, numel, prod


def norm_cost(numel_: int, weight: bool, bias: bool) -> Cost:
    """``numel * (2 + weight + bias)``: normalise, then scale and shift when present."""
    flops = numel_ * (2 + int(weight) + int(bias))
    return Cost(flops, flops)


def _module_cost(call: OpCall) -> Cost:
    module = call.module
    return norm_cost(numel(call.output), module_tensor(module, "weight") is not None, module_tensor(module, "bias") is not None)


# [N, C, *] = BatchNormNd / InstanceNormNd([N, C, *]); [*] = LayerNorm / GroupNorm([*])
@module_rule(nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm, nn.LayerNorm, nn.GroupNorm)
def norm_module(call: OpCall) -> Cost:
    return _module_cost(call)


# F.batch_norm(input, running_mean, running_var, weight=None, bias=None, ...)
# F.instance_norm(input, running_mean=None, running_var=None, weight=None, bias=None, ...)
@function_rule(F.batch_norm, F.instance_norm)
def batch_norm_function(call: OpCall) -> Cost:
    weight = call.arg(3, "weight", None)
    bias = call.arg(4, "bias", None)
    return norm_cost(numel(call.output), weight is not None, bias is not None)


# F.layer_norm(input, normalized_shape, weight=None, bias=None, eps)
# F.group_norm(input, num_groups, weight=None, bias=None, eps)
@function_rule(F.layer_norm, F.group_norm)
def layer_norm_function(call: OpCall) -> Cost:
    weight = call.arg(2, "weight", None)
    bias = call.arg(3, "bias", None)
    return norm_cost(numel(call.output), weight is not None, bias is not None)


# aten: (out, *statistics) = native_batch_norm / _native_batch_norm_legit[_no_training] /
# cudnn_batch_norm / miopen_batch_norm(input, weight, bias, ...); (out, mean, rstd) =
# native_group_norm(input, weight, bias, N, C, HxW, group, eps)
@aten_rule(
    *aten_ops(
        "native_batch_norm",
        "_native_batch_norm_legit",
        "_native_batch_norm_legit_no_training",
        "cudnn_batch_norm",
        "miopen_batch_norm",
        "native_group_norm",
        "batch_norm",
    )
)
def batch_norm_aten(call: OpCall) -> Cost:
    output = first_output(call.output)
    return norm_cost(numel(output), call.arg(1, "weight", None) is not None, call.arg(2, "bias", None) is not None)


# aten: (out, mean, rstd) = native_layer_norm(input, normalized_shape, weight, bias, eps)
@aten_rule(*aten_ops("native_layer_norm", "layer_norm", "group_norm"))
def layer_norm_aten(call: OpCall) -> Cost:
    output = first_output(call.output)
    return norm_cost(numel(output), call.arg(2, "weight", None) is not None, call.arg(3, "bias", None) is not None)


def rms_norm_cost(numel_: int, normalized_numel: int, weight: bool) -> Cost:
    """``numel * (3 + weight) + 2 * rows``, ``rows = numel / normalized_numel``; MACs ``numel``."""
    if numel_ == 0:
        return Cost(0, 0)
    return Cost(numel_ * (3 + int(weight)) + 2 * (numel_ // normalized_numel), numel_)


def _normalized_numel(normalized_shape: object) -> int:
    return prod(normalized_shape) if isinstance(normalized_shape, (tuple, list, torch.Size)) else int(normalized_shape)


# [*, normalized] = RMSNorm(normalized_shape)([*, normalized])
@module_rule(*([nn.RMSNorm] if hasattr(nn, "RMSNorm") else []))
def rms_norm_module(call: OpCall) -> Cost:
    module = call.module
    return rms_norm_cost(numel(call.output), _normalized_numel(module.normalized_shape), module.weight is not None)


# F.rms_norm(input, normalized_shape, weight=None, eps=None); aten: _fused_rms_norm / rms_norm, same arguments
@function_rule(*([F.rms_norm] if hasattr(F, "rms_norm") else []))
@aten_rule(*aten_ops("rms_norm", "_fused_rms_norm"))
def rms_norm_function(call: OpCall) -> Cost:
    output = first_output(call.output)
    normalized = _normalized_numel(call.arg(1, "normalized_shape"))
    return rms_norm_cost(numel(output), normalized, call.arg(2, "weight", None) is not None)
