"""Convolutions (``Conv1d/2d/3d`` and ``F.conv1d/2d/3d``, any groups).

Each output element is a dot product over ``Cin/groups * prod(kernel)`` inputs:
FLOPs ``out_numel * (2 * Cin/groups * prod(kernel) - 1)``, plus ``out_numel`` for a bias;
MACs ``out_numel * Cin/groups * prod(kernel)``, plus ``out_numel`` for a bias.

Worked example: ``Conv2d(3, 8, 3, padding=1)`` on ``(1, 3, 8, 8)``: out_numel = 8*8*8 = 512;
512 * (2*3*9 - 1) = 27,136, + 512 bias = 27,648 FLOPs.

Transposed convolutions (``ConvTransposeNd``, ``F.conv_transposeNd``) are priced from the input side:
every input element is multiplied by ``Cout/groups * prod(kernel)`` weights and each product is
accumulated into an output, so FLOPs ``2 * in_numel * Cout/groups * prod(kernel)`` and MACs
``in_numel * Cout/groups * prod(kernel)``, each ``+ out_numel`` for a bias.

Worked example: ``ConvTranspose2d(4, 2, 3, stride=2)`` on ``(1, 4, 5, 5)`` -> ``(1, 2, 11, 11)``:
100 inputs * 2 * 9 = 1,800 MACs, + 242 bias = 2,042 MACs; FLOPs 2 * 1,800 + 242 = 3,842.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from torch_flops.records import Cost
from torch_flops.registry import OpCall, aten_ops, aten_rule, function_rule, module_rule, module_tensor, numel, prod
from torch_flops.rules.linear import linear_cost


def conv_cost(out_numel: int, in_channels_per_group: int, kernel_numel: int, bias: bool) -> Cost:
    """``out_numel * (2 * Cin/groups * prod(kernel) - 1)`` FLOPs, ``+ out_numel`` for a bias."""
    return linear_cost(out_numel, in_channels_per_group * kernel_numel, bias)


def _cost_from_weight(weight: torch.Tensor, bias: object, output: torch.Tensor) -> Cost:
    # weight: [Cout, Cin/groups, *kernel]
    return conv_cost(numel(output), weight.shape[1], prod(weight.shape[2:]), bias is not None)


# [N, Cout, *out] = ConvNd([N, Cin, *in])
@module_rule(nn.Conv1d, nn.Conv2d, nn.Conv3d)
def conv_module(call: OpCall) -> Cost:
    module = call.module
    return _cost_from_weight(module_tensor(module, "weight"), module_tensor(module, "bias"), call.output)


# [N, Cout, *out] = F.convNd(input, weight [Cout, Cin/groups, *kernel], bias=None, stride, padding, dilation, groups)
@function_rule(F.conv1d, F.conv2d, F.conv3d)
def conv_function(call: OpCall) -> Cost:
    return _cost_from_weight(call.arg(1, "weight"), call.arg(2, "bias", None), call.output)


def conv_transpose_cost(in_numel: int, out_channels_per_group: int, kernel_numel: int, out_numel: int, bias: bool) -> Cost:
    """``2 * in_numel * Cout/groups * prod(kernel)`` FLOPs (multiply and accumulate each product),
    ``in_numel * Cout/groups * prod(kernel)`` MACs; ``+ out_numel`` of each for a bias."""
    products = in_numel * out_channels_per_group * kernel_numel
    bias_adds = out_numel if bias else 0
    return Cost(2 * products + bias_adds, products + bias_adds)


def _transpose_cost_from_weight(input_: torch.Tensor, weight: torch.Tensor, bias: object, output: torch.Tensor) -> Cost:
    # weight: [Cin, Cout/groups, *kernel]
    return conv_transpose_cost(input_.numel(), weight.shape[1], prod(weight.shape[2:]), numel(output), bias is not None)


# [N, Cout, *out] = ConvTransposeNd([N, Cin, *in])
@module_rule(nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
def conv_transpose_module(call: OpCall) -> Cost:
    module = call.module
    return _transpose_cost_from_weight(call.arg(0, "input"), module_tensor(module, "weight"), module_tensor(module, "bias"), call.output)


# F.conv_transposeNd(input, weight [Cin, Cout/groups, *kernel], bias=None, stride, padding, output_padding, groups, dilation)
@function_rule(F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d)
def conv_transpose_function(call: OpCall) -> Cost:
    return _transpose_cost_from_weight(call.arg(0, "input"), call.arg(1, "weight"), call.arg(2, "bias", None), call.output)


# aten: [N, Cout, *out] = convolution(input, weight, bias, stride, padding, dilation, transposed, output_padding, groups)
# (also _convolution and convolution_overrideable, same leading arguments; convNd / conv_transposeNd
# arrive decomposed into it)
@aten_rule(*aten_ops("convolution", "_convolution", "convolution_overrideable"))
def convolution_aten(call: OpCall) -> Cost:
    input_, weight, bias = call.arg(0, "input"), call.arg(1, "weight"), call.arg(2, "bias", None)
    if call.arg(6, "transposed", False):
        return _transpose_cost_from_weight(input_, weight, bias, call.output)
    return _cost_from_weight(weight, bias, call.output)


# aten backend convolutions: (self, weight, ...) with the bias, if any, the next tensor argument
@aten_rule(*aten_ops("mkldnn_convolution", "cudnn_convolution", "miopen_convolution", "_conv_depthwise2d", "conv_depthwise3d"))
def backend_convolution_aten(call: OpCall) -> Cost:
    bias = next((a for a in (*call.args[2:], *call.kwargs.values()) if isinstance(a, torch.Tensor)), None)
    return _cost_from_weight(call.arg(1, "weight"), bias, call.output)


@aten_rule(*aten_ops("cudnn_convolution_transpose", "miopen_convolution_transpose"))
def backend_convolution_transpose_aten(call: OpCall) -> Cost:
    return _transpose_cost_from_weight(call.arg(0, "self"), call.arg(1, "weight"), None, call.output)


@aten_rule(*aten_ops("conv1d", "conv2d", "conv3d"))
def conv_aten(call: OpCall) -> Cost:
    return conv_function(call)


@aten_rule(*aten_ops("conv_transpose1d", "conv_transpose2d", "conv_transpose3d"))
def conv_transpose_aten(call: OpCall) -> Cost:
    return conv_transpose_function(call)
