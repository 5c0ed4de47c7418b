"""Normalisation layers: BatchNorm, LayerNorm, GroupNorm, InstanceNorm (modules and functionals).

Normalising costs 2 per element (subtract the mean, divide by the standard deviation); an affine
transform adds 1 per element for the weight and 1 for the bias. So 4 per element with
``affine=True`` (``elementwise_affine=True``), 2 without. MACs are counted the same way.
Statistics (mean, variance) are not counted: in eval mode BatchNorm uses stored ones, and the
convention keeps every norm at the same per-element price.

Worked example: ``LayerNorm(768)`` on ``(1, 197, 768)``: 197*768 * 4 = 605,184.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from torch_flops.records import Cost
from torch_flops.registry import OpCall, function_rule, module_rule, numel


def norm_cost(numel_: int, weight: bool, bias: bool) -> Cost:
    """``numel * (2 + weight + bias)``: normalise, then scale and shift when present."""
    flops = numel_ * (2 + int(weight) + int(bias))
    return Cost(flops, flops)


def _module_cost(call: OpCall) -> Cost:
    module = call.module
    return norm_cost(numel(call.output), module.weight is not None, module.bias is not None)


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
