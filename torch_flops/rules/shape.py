"""Ops that move, copy, view or select data without arithmetic: known zero.

Views and reshapes, concatenation and splitting, indexing, ``getattr`` / ``size`` bookkeeping,
dtype and device casts, padding, ``Identity`` and dropout (the model runs in eval mode, where dropout is
the identity). They are recorded with status ``zero`` rather than left unsupported.
"""

from __future__ import annotations

import operator

import torch
import torch.nn.functional as F
from torch import nn

from torch_flops.records import ZERO_COST, Cost
from torch_flops.registry import OpCall, function_rule, method_rule, module_rule

ZERO_MODULES = (
    nn.Identity,
    nn.Flatten,
    nn.Unflatten,
    nn.modules.dropout._DropoutNd,
    nn.modules.padding._ConstantPadNd,
    nn.modules.padding._ReflectionPadNd,
    nn.modules.padding._ReplicationPadNd,
    nn.modules.padding._CircularPadNd,
    nn.ZeroPad2d,
    nn.PixelShuffle,
    nn.PixelUnshuffle,
    nn.ChannelShuffle,
)

ZERO_FUNCTIONS = (
    getattr,
    operator.getitem,
    torch._assert,
    torch.fx._symbolic_trace._assert_is_none,
    torch.cat,
    torch.concat,
    torch.concatenate,
    torch.stack,
    torch.hstack,
    torch.vstack,
    torch.flatten,
    torch.reshape,
    torch.permute,
    torch.transpose,
    torch.swapaxes,
    torch.movedim,
    torch.t,
    torch.squeeze,
    torch.unsqueeze,
    torch.chunk,
    torch.split,
    torch.tensor_split,
    torch.unbind,
    torch.narrow,
    torch.flip,
    torch.roll,
    torch.broadcast_to,
    torch.tile,
    torch.clone,
    torch.select,
    torch.index_select,
    torch.gather,
    torch.zeros_like,
    torch.ones_like,
    torch.empty_like,
    torch.full_like,
    torch.arange,
    torch.zeros,
    torch.ones,
    F.pad,
    F.dropout,
    F.dropout1d,
    F.dropout2d,
    F.dropout3d,
    F.alpha_dropout,
    F.feature_alpha_dropout,
    F.pixel_shuffle,
    F.pixel_unshuffle,
    F.channel_shuffle,
)

ZERO_METHODS = (
    "view", "view_as", "reshape", "reshape_as", "permute", "transpose", "t", "flatten", "unflatten",
    "squeeze", "unsqueeze", "expand", "expand_as", "repeat", "tile", "contiguous", "size", "dim",
    "numel", "chunk", "split", "tensor_split", "unbind", "narrow", "flip", "roll", "movedim",
    "swapaxes", "clone", "detach", "to", "type", "type_as", "float", "half", "double", "bfloat16",
    "int", "long", "bool", "cuda", "cpu", "__getitem__", "new_zeros", "new_ones", "new_empty",
    "new_full", "new_tensor", "zero_", "fill_", "copy_", "unfold", "masked_select", "transpose_",
    "t_", "squeeze_", "unsqueeze_", "select", "index_select", "gather",
)


@module_rule(*ZERO_MODULES, known_zero=True)
@function_rule(*ZERO_FUNCTIONS, known_zero=True)
@method_rule(*ZERO_METHODS, known_zero=True)
def no_arithmetic(call: OpCall) -> Cost:
    """Known zero: the op moves, views or copies data."""
    return ZERO_COST
