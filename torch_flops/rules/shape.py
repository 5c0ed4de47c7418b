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
from torch_flops.registry import OpCall, aten_ops, aten_rule, function_rule, method_rule, module_rule
from torch_flops.tracer import TENSOR_FACTORIES

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
    # tensors made from sizes and numbers alone, random draws included: the tracer's one list of them
    *(getattr(torch, name) for name in TENSOR_FACTORIES if hasattr(torch, name)),
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


# aten ops that allocate, copy, move or select data (views are known zero without a listing)
ZERO_ATEN = (
    "_to_copy", "_unsafe_view", "to", "clone", "contiguous", "copy", "copy_", "_copy_from", "_copy_from_and_resize",
    "lift_fresh", "lift_fresh_copy", "detach", "alias", "empty", "empty_like", "empty_strided",
    "new_empty", "new_empty_strided", "new_zeros", "new_ones", "new_full", "zeros", "zeros_like", "ones",
    "ones_like", "full", "full_like", "fill", "fill_", "zero_", "arange", "scalar_tensor", "linspace",
    "eye", "tensor", "cat", "stack", "hstack", "vstack", "repeat", "repeat_interleave", "tile", "flip",
    "roll", "constant_pad_nd", "pad", "reflection_pad1d", "reflection_pad2d", "reflection_pad3d",
    "replication_pad1d", "replication_pad2d", "replication_pad3d", "_pad_circular", "index",
    "index_select", "gather", "take", "take_along_dim",
    "index_copy", "index_copy_", "index_fill", "index_fill_", "masked_scatter",
    "masked_scatter_", "masked_select", "nonzero", "nonzero_static", "pixel_shuffle", "pixel_unshuffle",
    "channel_shuffle", "native_channel_shuffle", "reshape", "_reshape_copy", "view_copy", "expand_copy",
    "permute_copy", "transpose_copy", "t_copy", "squeeze_copy", "unsqueeze_copy", "select_copy",
    "slice_copy", "slice_scatter", "select_scatter", "diagonal_scatter", "as_strided_scatter",
    "split_with_sizes_copy", "unbind_copy", "unsafe_split", "unsafe_split_with_sizes", "unsafe_chunk",
    "transpose_", "t_", "squeeze_", "unsqueeze_", "as_strided_", "swapdims_", "swapaxes_", "detach_",
    "triu", "tril", "triu_", "tril_", "im2col", "col2im", "resize_", "resize_as_", "set_",
    "_local_scalar_dense", "item", "_linalg_check_errors", "_assert_async", "_assert_tensor_metadata", "_assert_scalar",
    "sym_constrain_range", "sym_constrain_range_for_size", "_functional_assert_async", "dropout",
    "feature_dropout", "alpha_dropout", "feature_alpha_dropout", "embedding", "one_hot", "bernoulli",
    "bernoulli_", "rand", "randn", "rand_like", "randn_like", "randint", "randint_like", "randperm",
    "normal", "normal_", "uniform_", "record_stream", "_unsafe_index",
    "range", "logspace", "tril_indices", "triu_indices", "bartlett_window", "blackman_window", "hamming_window",
    "hann_window", "kaiser_window",
    "exponential_", "geometric_", "cauchy_", "log_normal_", "random_", "max_unpool2d", "max_unpool3d", "lu_unpack",
    "unfold", "diag_embed", "diag", "narrow_copy", "flatten", "_nested_tensor_from_mask", "size", "stride",
    "sym_size", "sym_stride", "sym_numel", "sym_storage_offset", "is_same_size", "_has_compatible_shallow_copy_type",
    "result_type", "dim",
)

# the profiler's range markers (``torch.autograd.profiler.record_function``, opened by nn.DataParallel's
# forward and by some models'): bookkeeping, no arithmetic
PROFILER_OPS = tuple(
    getattr(torch.ops.profiler, name)
    for name in ("_record_function_enter", "_record_function_enter_new", "_record_function_exit")
    if hasattr(torch.ops.profiler, name)
)


@module_rule(*ZERO_MODULES, known_zero=True)
@function_rule(*ZERO_FUNCTIONS, known_zero=True)
@method_rule(*ZERO_METHODS, known_zero=True)
@aten_rule(*aten_ops(*ZERO_ATEN), *PROFILER_OPS, known_zero=True)
def no_arithmetic(call: OpCall) -> Cost:
    """Known zero: the op moves, views or copies data."""
    return ZERO_COST
