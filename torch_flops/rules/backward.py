"""The aten ops a backward pass dispatches, priced with the forward families' conventions.

A backward pass of ``nn.Linear`` needs no rule of its own: autograd runs it as ``mm`` (grad input,
grad weight) and ``sum`` (grad bias), which :mod:`~torch_flops.rules.linear` and
:mod:`~torch_flops.rules.reduction` price. The ops below are the fused backward kernels. Conventions,
as in the forward rules: a product over ``k`` values costs ``2k - 1`` FLOPs and ``k`` MACs, a sum of
``n`` values ``n - 1`` adds; a value accumulated into a zeroed buffer (a scatter, a transposed
convolution) costs one add; a named transcendental primitive (exp, tanh, erf, sigmoid) costs 1.
Ops with an ``output_mask`` price only the gradients they are asked for.

- ``convolution_backward``: grad input is the transposed convolution of ``grad_output`` with the
  weight (priced as a transposed convolution is: ``2 * out_numel * Cin/g * prod(k)`` FLOPs,
  ``out_numel * Cin/g * prod(k)`` MACs); grad weight is a convolution over the batch, one dot product
  of length ``N * prod(out)`` per weight element: ``w_numel * (2 N prod(out) - 1)`` FLOPs,
  ``w_numel * N prod(out)`` MACs; grad bias sums ``grad_output`` over ``N * prod(out)``:
  ``Cout * (N prod(out) - 1)``. For a transposed forward the roles swap: grad input is a
  convolution (``in_numel * (2 Cout/g prod(k) - 1)``), grad weight a dot product of length
  ``N * prod(in)`` per weight element.
- norms (layer, group, batch): see :func:`row_norm_backward_cost` and :func:`batch_norm_backward_cost`;
  MACs equal FLOPs, as for the forward norms.
- activations: a fixed count per grad-input element, from the derivative as the kernel computes it
  (``_ACTIVATION_BACKWARD``); 0 MACs.
- softmax / log-softmax backward: ``rows * (4n - 1)``.
- pooling: max ``out_numel`` adds (each grad scattered into its argmax); average ``out_numel *
  (prod(k) + 1)`` (a divide, then an add into each window element); adaptive average the total window
  size plus ``out_numel``; average MACs equal FLOPs.
- embedding: ``T * D`` adds (``2 T D`` with ``scale_grad_by_freq``), ``T`` the indices that are not
  ``padding_idx``.
- losses: ``nll_loss``, ``mse_loss``, ``binary_cross_entropy``, ``smooth_l1_loss`` and ``huber_loss``,
  forward and backward, and ``binary_cross_entropy_with_logits`` (whose gradient is elementwise ops), as
  their kernels compute them (:func:`nll_loss_cost`, ...).
- attention kernels' backward: :func:`sdpa_backward_cost` (the scores and probabilities are recomputed).
- dropout: ``native_dropout`` forward and backward, 2 per element.

Worked example: ``Conv2d(3, 8, 3, padding=1)`` on ``(2, 3, 8, 8)``, all three gradients: grad input
``2 * 1,024 * 27 = 55,296``; grad weight ``216 * (2 * 128 - 1) = 55,080``; grad bias ``8 * 127 =
1,016``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from torch_flops.records import ZERO_COST, Cost
from torch_flops.registry import OpCall, aten_ops, aten_rule, prod
from torch_flops.rules.conv import conv_cost, conv_transpose_cost
from torch_flops.rules.elementwise import elementwise_cost
from torch_flops.rules.linear import matmul_cost
from torch_flops.rules.pool import adaptive_pool_windows
from torch_flops.rules.reduction import sum_cost


def _mask(value: object, size: int = 3) -> tuple[bool, ...]:
    return tuple(bool(v) for v in value) if value is not None else (True,) * size


# -- convolution -------------------------------------------------------------------------------------
def conv_backward_cost(
    input_shape: Sequence[int],
    weight_shape: Sequence[int],
    grad_output_shape: Sequence[int],
    transposed: bool,
    output_mask: Sequence[bool],
) -> Cost:
    """Grad input, grad weight and grad bias of a convolution, each when its ``output_mask`` entry is set.

    Not transposed (``weight [Cout, Cin/g, *k]``): grad input ``conv_transpose_cost(out_numel, Cin/g,
    prod(k))``; grad weight ``matmul_cost(w_numel, N prod(out))``; grad bias ``Cout (N prod(out) - 1)``.
    Transposed (``weight [Cin, Cout/g, *k]``): grad input ``conv_cost(in_numel, Cout/g, prod(k))``;
    grad weight ``matmul_cost(w_numel, N prod(in))``; grad bias as above.
    """
    grad_input, grad_weight, grad_bias = output_mask
    in_numel, out_numel, w_numel = prod(input_shape), prod(grad_output_shape), prod(weight_shape)
    kernel = prod(weight_shape[2:])
    cost = ZERO_COST
    if grad_input:
        if transposed:
            cost = cost + conv_cost(in_numel, weight_shape[1], kernel, bias=False)
        else:
            cost = cost + conv_transpose_cost(out_numel, weight_shape[1], kernel, in_numel, bias=False)
    if grad_weight:
        positions = prod(input_shape[2:]) if transposed else prod(grad_output_shape[2:])
        cost = cost + matmul_cost(w_numel, input_shape[0] * positions)
    if grad_bias:
        cost = cost + sum_cost(out_numel, grad_output_shape[1])
    return cost


# (grad_input, grad_weight, grad_bias) = convolution_backward(grad_output, input, weight, bias_sizes,
#     stride, padding, dilation, transposed, output_padding, groups, output_mask)
@aten_rule(*aten_ops("convolution_backward"))
def convolution_backward(call: OpCall) -> Cost:
    mask = list(_mask(call.arg(10, "output_mask")))
    mask[2] = mask[2] and call.arg(3, "bias_sizes") is not None
    return conv_backward_cost(
        call.arg(1, "input").shape, call.arg(2, "weight").shape, call.arg(0, "grad_output").shape,
        bool(call.arg(7, "transposed")), mask,
    )


# -- normalisation -----------------------------------------------------------------------------------
def row_norm_backward_cost(numel: int, groups: int, param_numel: int, weight: bool, output_mask: Sequence[bool]) -> Cost:
    """Layer norm and group norm: statistics over ``groups`` groups of ``n = numel / groups`` elements,
    an affine weight and bias of ``param_numel`` elements (broadcast over the rest).

    - ``x_hat = (x - mean) * rstd``: ``2 numel``, when grad input or grad weight is wanted;
    - grad input, ``g = dy * w`` (``numel`` with a weight), ``dx = rstd * (g - mean(g) - x_hat *
      mean(g * x_hat))``: per element ``g * x_hat``, ``x_hat * mean``, two subtracts, ``* rstd`` (5); per
      group two sums and two divides (``2n``): ``numel * (7 + weight)``;
    - grad weight ``sum(dy * x_hat)`` over the ``numel / param_numel`` positions of each parameter:
      ``matmul_cost(param_numel, numel / param_numel)``;
    - grad bias ``sum(dy)`` over the same positions: ``param_numel * (numel / param_numel - 1)``.

    MACs equal FLOPs, as for the forward norms.
    """
    grad_input, grad_weight, grad_bias = output_mask
    if numel == 0 or groups == 0:
        return ZERO_COST
    flops = 0
    if grad_input or grad_weight:
        flops += 2 * numel
    if grad_input:
        flops += numel * (7 + int(weight))
    if grad_weight:
        flops += matmul_cost(param_numel, numel // param_numel).flops
    if grad_bias:
        flops += sum_cost(numel, param_numel).flops
    return Cost(flops, flops)


def batch_norm_backward_cost(numel: int, channels: int, weight: bool, train: bool, output_mask: Sequence[bool]) -> Cost:
    """Batch norm, ``m = numel / channels`` elements per channel. The two per-channel sums
    ``sum(dy)`` (``C (m - 1)``) and ``sum(dy * x_hat)`` (``numel + C (m - 1)``) are computed once and are
    the grad bias and grad weight; ``x_hat = (x - mean) * invstd`` costs ``2 numel`` (eval: ``+ 2C`` to
    make ``invstd = rsqrt(running_var + eps)``).

    - training, grad input ``w * invstd * (dy - mean(dy) - x_hat * mean(dy * x_hat))``: both sums,
      ``x_hat``, two divides and the scale ``w * invstd`` per channel (``2C + C``), per element
      ``x_hat * mean``, two subtracts, one multiply (``4 numel``). With all three gradients:
      ``9 numel + C`` (``+ C`` for the scale only with a weight);
    - eval, grad input ``dy * (w * invstd)``: ``numel`` multiplies, ``+ C`` with a weight, ``+ 2C`` for
      ``invstd``;
    - grad weight: ``x_hat`` and ``sum(dy * x_hat)``; grad bias: ``sum(dy)``.

    MACs equal FLOPs.
    """
    grad_input, grad_weight, grad_bias = output_mask
    if numel == 0 or channels == 0:
        return ZERO_COST
    sum_dy = sum_cost(numel, channels).flops
    sum_dy_xhat = numel + sum_dy
    needs_sum_dy = grad_bias or (grad_input and train)
    needs_xhat = grad_weight or (grad_input and train)
    flops = 0
    if needs_xhat or (grad_input and not train):
        flops += 0 if train else 2 * channels  # invstd from the running variance
    if needs_xhat:
        flops += 2 * numel + sum_dy_xhat
    if needs_sum_dy:
        flops += sum_dy
    if grad_input:
        scale = channels if weight else 0
        flops += scale + (2 * channels + 4 * numel if train else numel)
    return Cost(flops, flops)


# (grad_input, grad_weight, grad_bias) = native_layer_norm_backward(grad_out, input, normalized_shape,
#     mean, rstd, weight, bias, output_mask)
@aten_rule(*aten_ops("native_layer_norm_backward"))
def layer_norm_backward(call: OpCall) -> Cost:
    input_ = call.arg(1, "input")
    normalized = prod(call.arg(2, "normalized_shape"))
    mask = list(_mask(call.arg(7, "output_mask")))
    weight = call.arg(5, "weight") is not None
    mask[1] = mask[1] and weight
    mask[2] = mask[2] and call.arg(6, "bias") is not None
    numel = input_.numel()
    return row_norm_backward_cost(numel, numel // normalized if normalized else 0, normalized, weight, mask)


# (grad_input, grad_weight, grad_bias) = native_group_norm_backward(grad_out, input, mean, rstd, weight,
#     N, C, HxW, group, output_mask)
@aten_rule(*aten_ops("native_group_norm_backward"))
def group_norm_backward(call: OpCall) -> Cost:
    n, c, group = call.arg(5, "N"), call.arg(6, "C"), call.arg(8, "group")
    weight = call.arg(4, "weight") is not None
    mask = list(_mask(call.arg(9, "output_mask")))
    mask[1] = mask[1] and weight  # group norm's bias gradient does not need the bias: kept
    return row_norm_backward_cost(call.arg(1, "input").numel(), n * group, c, weight, mask)


def _channels(input_: torch.Tensor) -> int:
    return input_.shape[1] if input_.dim() > 1 else input_.shape[0]


# (grad_input, grad_weight, grad_bias) = native_batch_norm_backward(grad_out, input, weight, running_mean,
#     running_var, save_mean, save_invstd, train, eps, output_mask)
# batch_norm_backward(grad_out, input, weight, running_mean, running_var, save_mean, save_var, update,
#     eps, output_mask, reserve)
@aten_rule(*aten_ops("native_batch_norm_backward", "batch_norm_backward"))
def batch_norm_backward(call: OpCall) -> Cost:
    input_ = call.arg(1, "input")
    weight = call.arg(2, "weight") is not None
    train = bool(call.arg(7, "train" if "train" in call.kwargs else "update"))
    mask = list(_mask(call.arg(9, "output_mask")))
    return batch_norm_backward_cost(input_.numel(), _channels(input_), weight, train, mask)


# (grad_input, grad_weight, grad_bias) = cudnn_batch_norm_backward / miopen_batch_norm_backward(input,
#     grad_output, weight, running_mean, running_var, save_mean, save_var, epsilon[, reserveSpace]):
# training, all three gradients
@aten_rule(*aten_ops("cudnn_batch_norm_backward", "miopen_batch_norm_backward"))
def cudnn_batch_norm_backward(call: OpCall) -> Cost:
    input_ = call.arg(0, "input")
    return batch_norm_backward_cost(input_.numel(), _channels(input_), True, True, (True, True, True))


def rms_norm_backward_cost(numel: int, normalized: int, weight: bool, output_mask: Sequence[bool]) -> Cost:
    """RMS norm, rows of ``n = normalized`` elements: ``x_hat = x * rstd`` (``numel``) when either
    gradient is wanted; grad input ``g = dy * w`` (``numel`` with a weight), ``dx = rstd * (g - x_hat *
    mean(g * x_hat))``: per element ``g * x_hat``, ``x_hat * mean``, a subtract, ``* rstd`` (4), per
    row a sum and a divide (``n``): ``numel * (5 + weight)``; grad weight ``matmul_cost(n, rows)``.
    MACs equal FLOPs."""
    grad_input, grad_weight = output_mask
    if numel == 0 or normalized == 0:
        return ZERO_COST
    flops = numel if grad_input or grad_weight else 0
    if grad_input:
        flops += numel * (5 + int(weight))
    if grad_weight:
        flops += matmul_cost(normalized, numel // normalized).flops
    return Cost(flops, flops)


# (grad_input, grad_weight) = _fused_rms_norm_backward(grad_out, input, normalized_shape, rstd, weight, output_mask)
@aten_rule(*aten_ops("_fused_rms_norm_backward"))
def fused_rms_norm_backward(call: OpCall) -> Cost:
    weight = call.arg(4, "weight") is not None
    mask = list(_mask(call.arg(5, "output_mask"), 2))
    mask[1] = mask[1] and weight
    return rms_norm_backward_cost(call.arg(1, "input").numel(), prod(call.arg(2, "normalized_shape")), weight, mask)


# -- activations -------------------------------------------------------------------------------------
# FLOPs per grad-input element, from the derivative as PyTorch's kernel computes it (y: the forward's
# output, x: its input, dy: the incoming gradient)
_ACTIVATION_BACKWARD: dict[str, tuple[int, str]] = {
    "threshold_backward": (1, "x > t ? dy : 0 (ReLU: threshold_backward(dy, y, 0))"),
    "hardtanh_backward": (2, "lo < x < hi ? dy : 0: 2 compares"),
    "hardshrink_backward": (2, "-l <= x <= l ? 0 : dy: 2 compares"),
    "softshrink_backward": (2, "-l <= x <= l ? 0 : dy: 2 compares"),
    "sigmoid_backward": (3, "dy * y * (1 - y)"),
    "tanh_backward": (3, "dy * (1 - y * y)"),
    "hardsigmoid_backward": (3, "-3 < x < 3 ? dy / 6 : 0: 2 compares, a divide"),
    "leaky_relu_backward": (3, "x > 0 ? dy : dy * slope: compare, multiply, select"),
    "glu_backward": (3, "per half-size output: s = sigmoid(b); da = dy s; db = dy a s (1 - s): 6, i.e. 3 per grad-input element"),
    "_prelu_kernel_backward": (4, "dx = x > 0 ? dy : w dy (3); dw = x > 0 ? 0 : x dy (1), summed to w's shape by a separate sum"),
    "hardswish_backward": (5, "x < -3 ? 0 : x <= 3 ? dy * (x / 3 + 0.5) : dy: 2 compares, divide, add, multiply"),
    "silu_backward": (6, "s = sigmoid(x); dy * s * (1 + x * (1 - s)): sigmoid, subtract, 2 multiplies, add, multiply"),
    "softplus_backward": (6, "z = exp(beta x); beta x > threshold ? dy : dy z / (z + 1): multiply, compare, exp, add, divide, multiply"),
    "mish_backward": (11, "t = tanh(softplus(x)), s = sigmoid(x): dy * (t + x s (1 - t t)): softplus 3, tanh 1, sigmoid 1, 6 arithmetic"),
    "log_sigmoid_backward": (9, "z = exp(-|x|); dy * ((x < 0) - sign * z / (1 + z)): compare, abs, negate, exp, add, divide, multiply, subtract, multiply"),
}


def activation_backward_cost(grad_input_numel: int, flops_per_element: int) -> Cost:
    """``grad_input_numel * flops_per_element`` FLOPs, 0 MACs."""
    return elementwise_cost(grad_input_numel, flops_per_element)


def _grad_numel(call: OpCall) -> int:
    output = call.output
    first = output[0] if isinstance(output, (tuple, list)) else output
    return first.numel()


def _per_element_backward(name: str, per: int, formula: str):
    def rule(call: OpCall) -> Cost:
        return activation_backward_cost(_grad_numel(call), per)

    rule.__name__ = rule.__qualname__ = f"{name}_rule"
    rule.__doc__ = f"{name}: {per} FLOP(s) per grad-input element: {formula}."
    return rule


for _name, (_per, _formula) in _ACTIVATION_BACKWARD.items():
    aten_rule(*aten_ops(_name))(_per_element_backward(_name, _per, _formula))


# [*] = gelu_backward(grad_output, self, *, approximate="none")
@aten_rule(*aten_ops("gelu_backward"))
def gelu_backward(call: OpCall) -> Cost:
    """``dy * (Phi(x) + x phi(x))``: ``Phi`` = ``0.5 (1 + erf(x / sqrt 2))`` 4, ``phi`` =
    ``exp(-x^2 / 2) / sqrt(2 pi)`` 4, multiply, add, ``* dy``: 11 per element. ``approximate="tanh"``:
    ``u = b (x + k x^3)`` 5 and its tanh 1; ``0.5 x`` 1, ``1 + t`` 1, ``0.5 (1 + t)`` 1; ``(1 - t^2)``
    2, ``b (1 + 3k x^2)`` 4, their product 1; ``0.5 x * that`` 1, the add 1, ``* dy`` 1: 19."""
    return activation_backward_cost(_grad_numel(call), 19 if call.arg(2, "approximate", "none") == "tanh" else 11)


# [*] = elu_backward(grad_output, alpha, scale, input_scale, is_result, self_or_result)
@aten_rule(*aten_ops("elu_backward"))
def elu_backward(call: OpCall) -> Cost:
    """Constants folded (``alpha * scale * input_scale`` once): from the result ``y``, ``y <= 0 ?
    dy * input_scale * (y + alpha scale) : dy * scale``: compare, add, 2 multiplies: 4; from the input
    ``x``, ``x <= 0 ? dy * c * exp(x * input_scale) : dy * scale``: compare, multiply, exp, 2 multiplies: 5."""
    return activation_backward_cost(_grad_numel(call), 4 if call.arg(4, "is_result") else 5)


# [*] = rrelu_with_noise_backward(grad_output, self, noise, lower, upper, training, self_is_result)
@aten_rule(*aten_ops("rrelu_with_noise_backward"))
def rrelu_backward(call: OpCall) -> Cost:
    """Training with ``upper > lower``: ``dy * noise``, 1 per element; otherwise leaky ReLU's 3."""
    random = call.arg(5, "training") and call.arg(4, "upper") > call.arg(3, "lower")
    return activation_backward_cost(_grad_numel(call), 1 if random else 3)


# -- softmax -----------------------------------------------------------------------------------------
def softmax_backward_cost(numel: int, dim_size: int) -> Cost:
    """``rows * (4n - 1)``. Softmax ``dx = y * (dy - sum(dy * y))``: per element ``dy * y``, a subtract,
    ``* y`` (3), per row ``n - 1`` adds; log-softmax ``dx = dy - exp(y) * sum(dy)``: per element exp,
    multiply, subtract (3), per row ``n - 1`` adds. 0 MACs, as softmax."""
    if numel == 0 or dim_size == 0:
        return ZERO_COST
    return Cost(numel // dim_size * (4 * dim_size - 1), 0)


# [*] = _softmax_backward_data / _log_softmax_backward_data(grad_output, output, dim, input_dtype)
@aten_rule(*aten_ops("_softmax_backward_data", "_log_softmax_backward_data"))
def softmax_backward(call: OpCall) -> Cost:
    output = call.arg(1, "output")
    dim_size = output.shape[call.arg(2, "dim")] if output.dim() else 1
    return softmax_backward_cost(output.numel(), dim_size)


# -- pooling -----------------------------------------------------------------------------------------
def max_pool_backward_cost(grad_output_numel: int) -> Cost:
    """Each output's gradient added into its argmax position (a zeroed grad input): ``out_numel`` adds."""
    return Cost(grad_output_numel, 0)


def avg_pool_backward_cost(grad_output_numel: int, window: int) -> Cost:
    """Per output a divide by the window size and an add into each of its ``window`` elements (padding
    counted, as the forward counts it): ``out_numel * (window + 1)``; MACs equal, as average pooling."""
    flops = grad_output_numel * (window + 1) if grad_output_numel and window else 0
    return Cost(flops, flops)


def _window(kernel_size: Sequence[int] | int, ndim: int) -> int:
    if isinstance(kernel_size, int):
        return kernel_size**ndim
    values = list(kernel_size)
    return prod(values * ndim if len(values) == 1 else values)


# [N, C, *in] = max_pool{2,3}d_with_indices_backward(grad_output, self, kernel_size, stride, padding, dilation, ceil_mode, indices)
# adaptive_max_pool{2,3}d_backward(grad_output, self, indices);
# fractional_max_pool{2,3}d_backward(grad_output, self, kernel_size, output_size, indices)
@aten_rule(*aten_ops("max_pool2d_with_indices_backward", "max_pool3d_with_indices_backward",
                     "adaptive_max_pool2d_backward", "adaptive_max_pool3d_backward",
                     "fractional_max_pool2d_backward", "fractional_max_pool3d_backward"))
def max_pool_backward(call: OpCall) -> Cost:
    return max_pool_backward_cost(call.arg(0, "grad_output").numel())


# [N, C, *in] = avg_pool{2,3}d_backward(grad_output, self, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)
@aten_rule(*aten_ops("avg_pool2d_backward"))
def avg_pool2d_backward(call: OpCall) -> Cost:
    return avg_pool_backward_cost(call.arg(0, "grad_output").numel(), _window(call.arg(2, "kernel_size"), 2))


@aten_rule(*aten_ops("avg_pool3d_backward"))
def avg_pool3d_backward(call: OpCall) -> Cost:
    return avg_pool_backward_cost(call.arg(0, "grad_output").numel(), _window(call.arg(2, "kernel_size"), 3))


def adaptive_avg_pool_backward_cost(input_shape: Sequence[int], output_shape: Sequence[int], ndim: int) -> Cost:
    """A divide per output and an add into each element of its window (PyTorch's exact windows):
    total window size ``+ out_numel``; MACs equal."""
    windows, outputs = adaptive_pool_windows(input_shape, output_shape, ndim)
    return Cost(windows + outputs, windows + outputs) if outputs else ZERO_COST


# [N, C, *in] = _adaptive_avg_pool{2,3}d_backward(grad_output, self)
@aten_rule(*aten_ops("_adaptive_avg_pool2d_backward"))
def adaptive_avg_pool2d_backward(call: OpCall) -> Cost:
    return adaptive_avg_pool_backward_cost(call.arg(1, "self").shape, call.arg(0, "grad_output").shape, 2)


@aten_rule(*aten_ops("_adaptive_avg_pool3d_backward"))
def adaptive_avg_pool3d_backward(call: OpCall) -> Cost:
    return adaptive_avg_pool_backward_cost(call.arg(1, "self").shape, call.arg(0, "grad_output").shape, 3)


# -- embedding ---------------------------------------------------------------------------------------
def embedding_backward_cost(entries: int, dim: int, scale_grad_by_freq: bool) -> Cost:
    """Each of ``entries`` gradient rows of ``dim`` values added into the zeroed table: ``entries * dim``;
    ``scale_grad_by_freq`` divides each by its index's count first: ``2 * entries * dim``. 0 MACs."""
    return Cost(entries * dim * (2 if scale_grad_by_freq else 1), 0)


# [num_weights, D] = embedding_dense_backward(grad_output [*, D], indices [*], num_weights, padding_idx, scale_grad_by_freq)
@aten_rule(*aten_ops("embedding_dense_backward"))
def embedding_dense_backward(call: OpCall) -> Cost:
    indices = call.arg(1, "indices")
    padding_idx = call.arg(3, "padding_idx")
    entries = indices.numel() if padding_idx is None or padding_idx < 0 else int((indices != padding_idx).sum())
    return embedding_backward_cost(entries, call.arg(0, "grad_output").shape[-1], bool(call.arg(4, "scale_grad_by_freq")))


# -- losses ------------------------------------------------------------------------------------------
_REDUCTIONS = ("none", "mean", "sum")  # the aten enum: 0, 1, 2


def nll_loss_cost(samples: int, weighted: bool, reduction: str) -> Cost:
    """``-w[t_i] x[i, t_i]`` per sample: a negation, ``+ 1`` multiply with a class weight; ``sum``: ``samples
    - 1`` adds; ``mean``: those adds and a divide, ``+ samples - 1`` adds for the weights' sum (the divisor)
    with a class weight. Ignored targets are counted (the formula sees shapes). 0 MACs."""
    if samples == 0:
        return ZERO_COST
    flops = samples * (1 + int(weighted))
    if reduction != "none":
        flops += samples - 1
    if reduction == "mean":
        flops += 1 + (samples - 1 if weighted else 0)
    return Cost(flops, 0)


def nll_loss_backward_cost(samples: int, weighted: bool, reduction: str) -> Cost:
    """``grad[i, t_i] = -w[t_i] * dy (/ total_weight)`` into a zeroed grad input: per sample a negation,
    ``+ 1`` with a class weight; ``mean``: one divide ``dy / total_weight``. 0 MACs."""
    if samples == 0:
        return ZERO_COST
    return Cost(samples * (1 + int(weighted)) + (1 if reduction == "mean" else 0), 0)


def _samples(target: torch.Tensor) -> int:
    return target.numel()


# (output, total_weight) = nll_loss_forward / nll_loss2d_forward(self, target, weight, reduction, ignore_index)
@aten_rule(*aten_ops("nll_loss_forward", "nll_loss2d_forward", "nll_loss", "nll_loss2d", "nll_loss_nd"))
def nll_loss(call: OpCall) -> Cost:
    reduction = _REDUCTIONS[call.arg(3, "reduction", 1)]
    return nll_loss_cost(_samples(call.arg(1, "target")), call.arg(2, "weight", None) is not None, reduction)


# [self] = nll_loss_backward / nll_loss2d_backward(grad_output, self, target, weight, reduction, ignore_index, total_weight)
@aten_rule(*aten_ops("nll_loss_backward", "nll_loss2d_backward"))
def nll_loss_backward(call: OpCall) -> Cost:
    reduction = _REDUCTIONS[call.arg(4, "reduction")]
    return nll_loss_backward_cost(_samples(call.arg(2, "target")), call.arg(3, "weight") is not None, reduction)


def _reduced(per_element: int, numel: int, reduction: str) -> Cost:
    """``per_element`` FLOPs for each of ``numel`` elements, then the reduction: ``sum`` ``numel - 1``
    adds, ``mean`` those and a divide. 0 MACs."""
    if numel == 0:
        return ZERO_COST
    return Cost(per_element * numel + {"none": 0, "sum": numel - 1, "mean": numel}[reduction], 0)


def _loss_input_numel(call: OpCall) -> int:
    """The elements of the input and target broadcast together (the aten ops take them unbroadcast)."""
    return prod(torch.broadcast_shapes(call.args[0].shape, call.args[1].shape))


def _loss_reduction(call: OpCall, position: int) -> str:
    return _REDUCTIONS[call.arg(position, "reduction", 1)]


def mse_loss_cost(numel: int, reduction: str) -> Cost:
    """``(x - t)^2``: 2 per element; ``sum`` ``+ numel - 1``; ``mean`` ``+ numel`` (the sum and a divide). 0 MACs."""
    return _reduced(2, numel, reduction)


def mse_loss_backward_cost(numel: int) -> Cost:
    """``dx = norm * (x - t) * dy``, ``norm = 2`` or ``2 / numel`` (a host number): 3 per element."""
    return Cost(3 * numel, 0)


# [] | [*] = mse_loss(self, target, reduction=mean)
@aten_rule(*aten_ops("mse_loss"))
def mse_loss(call: OpCall) -> Cost:
    return mse_loss_cost(call.output.numel() if call.arg(2, "reduction", 1) == 0 else call.arg(0, "self").numel(),
                         _loss_reduction(call, 2))


# [*] = mse_loss_backward(grad_output, self, target, reduction)
@aten_rule(*aten_ops("mse_loss_backward"))
def mse_loss_backward(call: OpCall) -> Cost:
    return mse_loss_backward_cost(_grad_numel(call))


# [] | [*] = binary_cross_entropy(self, target, weight=None, reduction=mean), as the kernel computes each
# element: (t - 1) * max(log1p(-x), -100) - t * max(log(x), -100): 9 (negate, log1p, max, log, max,
# subtract, 2 multiplies, subtract), + 1 with a weight
@aten_rule(*aten_ops("binary_cross_entropy"))
def binary_cross_entropy(call: OpCall) -> Cost:
    weighted = call.arg(2, "weight", None) is not None
    return _reduced(9 + weighted, _loss_input_numel(call), _loss_reduction(call, 3))


# [*] = binary_cross_entropy_backward(grad_output, self, target, weight, reduction): dy * (x - t) /
# max((1 - x) * x, eps): 6 per element, + 1 with a weight, + 1 for mean's divide
@aten_rule(*aten_ops("binary_cross_entropy_backward"))
def binary_cross_entropy_backward(call: OpCall) -> Cost:
    weighted = call.arg(3, "weight", None) is not None
    mean = call.arg(4, "reduction", 1) == 1
    return Cost((6 + weighted + mean) * _grad_numel(call), 0)


# [] | [*] = binary_cross_entropy_with_logits(self, target, weight, pos_weight, reduction), as PyTorch
# computes it: (1 - t) * x - log_sigmoid(x): log_sigmoid 2 (as the activation rule), then 3 per element;
# pos_weight scales log_sigmoid(x) by (pos_weight - 1) * t + 1: pos_weight.numel() + 3 per element;
# weight: + 1 per element. Its gradient runs as elementwise ops, priced as such.
@aten_rule(*aten_ops("binary_cross_entropy_with_logits"))
def binary_cross_entropy_with_logits(call: OpCall) -> Cost:
    numel = _loss_input_numel(call)
    pos_weight = call.arg(3, "pos_weight", None)
    per_element = 5 + (call.arg(2, "weight", None) is not None) + (3 if pos_weight is not None else 0)
    cost = _reduced(per_element, numel, _loss_reduction(call, 4))
    return cost + Cost(pos_weight.numel(), 0) if pos_weight is not None and numel else cost


# smooth_l1_loss(self, target, reduction, beta) and huber_loss(self, target, reduction, delta), per element
# z = |x - t|, then z < beta ? 0.5 z^2 / beta : z - 0.5 beta (smooth L1), z < delta ? 0.5 z^2 :
# delta (z - 0.5 delta) (Huber): a subtract, an abs, a compare, and the costlier branch (3, 2), so the
# count does not depend on the data: 6 and 5. Smooth L1 with beta = 0 is the L1 loss: 2.
@aten_rule(*aten_ops("smooth_l1_loss"))
def smooth_l1_loss(call: OpCall) -> Cost:
    per_element = 2 if call.arg(3, "beta", 1.0) == 0 else 6
    return _reduced(per_element, _loss_input_numel(call), _loss_reduction(call, 2))


@aten_rule(*aten_ops("huber_loss"))
def huber_loss(call: OpCall) -> Cost:
    return _reduced(5, _loss_input_numel(call), _loss_reduction(call, 2))


# their gradients, per element: d = x - t, two compares (the two outer branches), then the inner
# branch's multiplies (the costlier): smooth L1 norm * d * dy / beta, 3; Huber norm * d * dy, 2
@aten_rule(*aten_ops("smooth_l1_loss_backward"))
def smooth_l1_loss_backward(call: OpCall) -> Cost:
    return Cost(6 * _grad_numel(call), 0)


@aten_rule(*aten_ops("huber_loss_backward"))
def huber_loss_backward(call: OpCall) -> Cost:
    return Cost(5 * _grad_numel(call), 0)


# -- attention ---------------------------------------------------------------------------------------
def sdpa_backward_cost(batch: int, kv_batch: int, q_len: int, kv_len: int, head_dim: int, value_dim: int, masked: bool) -> Cost:
    """The backward of a fused attention kernel (FlashAttention-2's algorithm), which keeps only the
    output ``O`` and the row log-sum-exp ``lse`` of the forward. ``B = batch`` (batch x query heads),
    ``L``/``S`` query/key lengths, ``E``/``Ev`` head dims:

    - recompute: scores ``Q K^T`` ``B L S (2E - 1)``, scaling ``B L S``, mask add ``B L S`` when masked,
      ``P = exp(S - lse)`` ``2 B L S`` (the softmax, from the saved ``lse``);
    - ``dV = P^T dO``: ``B S Ev (2L - 1)``; ``dP = dO V^T``: ``B L S (2Ev - 1)``;
    - ``D = rowsum(dO * O)``: ``B L (2Ev - 1)``; ``dS = P * (dP - D) * scale``: ``3 B L S``;
    - ``dQ = dS K``: ``B L E (2S - 1)``; ``dK = dS^T Q``: ``B S E (2L - 1)``;
    - grouped-query keys (``kv_batch < batch``): the ``dK``, ``dV`` of the query heads that share a key
      head are summed: ``(batch - kv_batch) S (E + Ev)`` adds.

    MACs: the five products' ``k`` each. Dropout is not priced (as in the forward rule).
    """
    scores = batch * q_len * kv_len
    cost = matmul_cost(scores, head_dim) + Cost(scores * (3 + int(masked)), 0)  # Q K^T, scale, mask, exp(S - lse)
    cost = cost + matmul_cost(batch * kv_len * value_dim, q_len)  # dV
    cost = cost + matmul_cost(scores, value_dim)  # dP
    cost = cost + matmul_cost(batch * q_len, value_dim) + Cost(3 * scores, 0)  # D, dS
    cost = cost + matmul_cost(batch * q_len * head_dim, kv_len) + matmul_cost(batch * kv_len * head_dim, q_len)  # dQ, dK
    if kv_batch < batch:
        cost = cost + Cost((batch - kv_batch) * kv_len * (head_dim + value_dim), 0)
    return cost


def _sdpa_backward_of(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, masked: bool) -> Cost:
    *batch, q_len, head_dim = query.shape
    return sdpa_backward_cost(prod(batch), prod(key.shape[:-2]), q_len, key.shape[-2], head_dim, value.shape[-1], masked)


# (dq, dk, dv) = _scaled_dot_product_flash_attention_for_cpu_backward(grad_out, q, k, v, out, logsumexp,
#     dropout_p, is_causal, *, attn_mask=None, scale=None)
@aten_rule(*aten_ops("_scaled_dot_product_flash_attention_for_cpu_backward"))
def flash_attention_cpu_backward(call: OpCall) -> Cost:
    masked = call.kwargs.get("attn_mask") is not None or bool(call.arg(7, "is_causal"))
    return _sdpa_backward_of(call.args[1], call.args[2], call.args[3], masked)


# (dq, dk, dv) = _scaled_dot_product_flash_attention_backward(grad_out, q, k, v, out, logsumexp, cum_seq_q,
#     cum_seq_k, max_q, max_k, dropout_p, is_causal, philox_seed, philox_offset, *, scale=None)
@aten_rule(*aten_ops("_scaled_dot_product_flash_attention_backward"))
def flash_attention_backward(call: OpCall) -> Cost:
    return _sdpa_backward_of(call.args[1], call.args[2], call.args[3], bool(call.arg(11, "is_causal")))


# (dq, dk, dv, d_bias) = _scaled_dot_product_efficient_attention_backward(grad_out, q, k, v, attn_bias, out,
#     logsumexp, philox_seed, philox_offset, dropout_p, grad_input_mask, is_causal=False, *, scale=None)
@aten_rule(*aten_ops("_scaled_dot_product_efficient_attention_backward"))
def efficient_attention_backward(call: OpCall) -> Cost:
    """The kernel computes ``dQ``, ``dK``, ``dV`` whatever ``grad_input_mask`` asks; ``d_bias`` is ``dS``."""
    masked = call.arg(4, "attn_bias") is not None or bool(call.arg(11, "is_causal", False))
    return _sdpa_backward_of(call.args[1], call.args[2], call.args[3], masked)


# (dq, dk, dv) = _scaled_dot_product_cudnn_attention_backward(grad_out, q, k, v, out, logsumexp, philox_seed,
#     philox_offset, attn_bias, cum_seq_q, cum_seq_k, max_q, max_k, dropout_p, is_causal, *, scale=None)
@aten_rule(*aten_ops("_scaled_dot_product_cudnn_attention_backward"))
def cudnn_attention_backward(call: OpCall) -> Cost:
    masked = call.arg(8, "attn_bias") is not None or bool(call.arg(14, "is_causal"))
    return _sdpa_backward_of(call.args[1], call.args[2], call.args[3], masked)


# (dq, dk, dv, d_bias) = _scaled_dot_product_fused_attention_overrideable_backward(grad_out, q, k, v, attn_bias,
#     grad_input_mask, out, logsumexp, cum_seq_q, cum_seq_k, max_q, max_k, dropout_p, is_causal, ...)
@aten_rule(*aten_ops("_scaled_dot_product_fused_attention_overrideable_backward"))
def overrideable_attention_backward(call: OpCall) -> Cost:
    masked = call.arg(4, "attn_bias") is not None or bool(call.arg(13, "is_causal"))
    return _sdpa_backward_of(call.args[1], call.args[2], call.args[3], masked)


# -- dropout and data movement -----------------------------------------------------------------------
# (output, mask) = native_dropout(input, p, train): input * mask * (1 / (1 - p)) when training
@aten_rule(*aten_ops("native_dropout"))
def native_dropout(call: OpCall) -> Cost:
    """Training: 2 per element (the mask and the scale; drawing the mask is not counted, as
    ``bernoulli``); not training: a copy, 0. (The CPU path, ``bernoulli_``, ``div_``, ``mul``, also
    costs 2 per element.)"""
    train = call.arg(2, "train")
    return elementwise_cost(call.arg(0, "input").numel(), 2 if train is None or train else 0)


# [*] = native_dropout_backward(grad_output, mask, scale): dy * mask * scale
@aten_rule(*aten_ops("native_dropout_backward"))
def native_dropout_backward(call: OpCall) -> Cost:
    """2 per element. (The CPU path's backward is one ``mul``, 1 per element.)"""
    return elementwise_cost(call.arg(0, "grad_output").numel(), 2)


# [input_sizes] = slice_backward / select_backward / diagonal_backward(grad_output, input_sizes, ...): a zeroed
# tensor with the gradient copied into the slice: no arithmetic
@aten_rule(*aten_ops("slice_backward", "select_backward", "diagonal_backward"), known_zero=True)
def view_backward(call: OpCall) -> Cost:
    """Known zero: the gradient of a view is copied into zeros."""
    return ZERO_COST


# [input_sizes] = unfold_backward(grad_in [..., windows, size], input_sizes, dim, size, step)
@aten_rule(*aten_ops("unfold_backward"))
def unfold_backward(call: OpCall) -> Cost:
    """Each window element added into its position: ``grad_in.numel()`` adds (overlapping windows sum)."""
    return Cost(call.arg(0, "grad_in").numel(), 0)


# -- resampling, padding and scatter backward ----------------------------------------------------------
def scatter_accumulate_cost(grad_output_numel: int, points: int) -> Cost:
    """Each ``grad_output`` element added into the ``points`` inputs it was computed from: ``points == 1``
    (nearest resampling, reflection / replication padding, a scatter): ``grad_output_numel`` adds, 0 MACs;
    an interpolation (``points`` weights): a multiply and an add per point, ``2 * points`` per element,
    ``points`` MACs."""
    if points == 1:
        return Cost(grad_output_numel, 0)
    return Cost(2 * points * grad_output_numel, points * grad_output_numel)


def _interpolation_backward_rule(name: str, points_per_dim: int):
    # [N, C, *in] = upsample_<mode>_backward(grad_output [N, C, *out], output_size, input_size, align_corners, scales...)
    def rule(call: OpCall) -> Cost:
        grad_output = call.arg(0, "grad_output")
        return scatter_accumulate_cost(grad_output.numel(), points_per_dim ** (grad_output.dim() - 2))

    rule.__name__ = rule.__qualname__ = f"{name}_rule"
    rule.__doc__ = f"{name}: ``2 * {points_per_dim}^d`` per grad-output element (``d`` spatial dims), :func:`scatter_accumulate_cost`."
    return rule


for _name, _points in {"upsample_linear1d_backward": 2, "upsample_bilinear2d_backward": 2,
                       "upsample_trilinear3d_backward": 2, "upsample_bicubic2d_backward": 4}.items():
    aten_rule(*aten_ops(_name))(_interpolation_backward_rule(_name, _points))


# [N, C, *in] = upsample_nearest*_backward(grad_output, output_size, input_size, ...);
# reflection_pad*d_backward / replication_pad*d_backward(grad_output, self, padding)
@aten_rule(*aten_ops(
    "upsample_nearest1d_backward", "upsample_nearest2d_backward", "upsample_nearest3d_backward",
    "_upsample_nearest_exact1d_backward", "_upsample_nearest_exact2d_backward", "_upsample_nearest_exact3d_backward",
    "reflection_pad1d_backward", "reflection_pad2d_backward", "reflection_pad3d_backward",
    "replication_pad1d_backward", "replication_pad2d_backward", "replication_pad3d_backward",
))
def copy_backward(call: OpCall) -> Cost:
    """Each grad-output element added into the input element it copied: ``grad_output.numel()`` adds."""
    return scatter_accumulate_cost(call.arg(0, "grad_output").numel(), 1)


# [*self] = scatter(self, dim, index, src | value, *, reduce=None); scatter_
@aten_rule(*aten_ops("scatter", "scatter_"))
def scatter(call: OpCall) -> Cost:
    """A write costs 0; with ``reduce="add"`` or ``"multiply"`` an op per ``index`` element."""
    if call.kwargs.get("reduce") is None:
        return ZERO_COST
    return Cost(call.arg(2, "index").numel(), 0)


def reduce_into_cost(combined: int, reduce: str, self_numel: int) -> Cost:
    """``combined`` elements reduced into a tensor of ``self_numel``: ``sum``, ``prod``, ``amax``, ``amin``
    an op each; ``mean`` also counts them (an add each) and divides every element: ``2 * combined +
    self_numel``. Each combined element is counted even where ``include_self=False`` makes the first one
    into a target a copy (a bound: which one is first depends on the index values)."""
    if reduce == "mean":
        return Cost(2 * combined + self_numel, 0)
    return Cost(combined, 0)


# [*self] = scatter_reduce(self, dim, index, src, reduce, *, include_self=True); scatter_reduce_
@aten_rule(*aten_ops("scatter_reduce", "scatter_reduce_"))
def scatter_reduce(call: OpCall) -> Cost:
    """:func:`reduce_into_cost` of the ``index.numel()`` elements scattered."""
    return reduce_into_cost(call.arg(2, "index").numel(), call.arg(4, "reduce"), call.arg(0, "self").numel())


# [*self] = index_reduce(self, dim, index, source, reduce, *, include_self=True); index_reduce_
@aten_rule(*aten_ops("index_reduce", "index_reduce_"))
def index_reduce(call: OpCall) -> Cost:
    """:func:`reduce_into_cost` of the ``source.numel()`` elements reduced."""
    return reduce_into_cost(call.arg(3, "source").numel(), call.arg(4, "reduce"), call.arg(0, "self").numel())


# [*self] = index_put(self, indices, values, accumulate=False); index_put_, _index_put_impl_, _unsafe_index_put
# (with accumulate=True: the backward of advanced indexing, x[idx])
@aten_rule(*aten_ops("index_put", "index_put_", "_index_put_impl_", "_unsafe_index_put"))
def index_put(call: OpCall) -> Cost:
    """A write costs 0; with ``accumulate=True`` an add per element written: the elements
    ``self[indices]`` selects, :func:`indexed_numel`."""
    if not call.arg(3, "accumulate", False):
        return ZERO_COST
    return Cost(indexed_numel(call.arg(0, "self").shape, call.arg(1, "indices"), call.arg(2, "values")), 0)


def indexed_numel(shape: Sequence[int], indices: Sequence[torch.Tensor | None], values: torch.Tensor) -> int:
    """The number of elements ``x[indices]`` selects from an ``x`` of ``shape``: the broadcast shape of
    the index tensors times the dimensions no index tensor consumes (a ``None`` keeps its dimension, a
    boolean mask of ``k`` dimensions consumes ``k`` and selects as many as it has ``True`` values). A mask
    on meta has no values: then ``values.numel()``, the count when ``values`` is not broadcast."""
    index_shapes, kept, dim = [], 1, 0
    for index in indices:
        if index is None:
            kept *= shape[dim]
            dim += 1
        elif index.dtype in (torch.bool, torch.uint8):
            if index.is_meta:
                return values.numel()
            index_shapes.append((int(index.count_nonzero()),))
            dim += index.dim()
        else:
            index_shapes.append(tuple(index.shape))
            dim += 1
    return prod(torch.broadcast_shapes(*index_shapes)) * kept * prod(shape[dim:])


# [*] = scatter_add(self, dim, index, src); index_add(self, dim, index, source, *, alpha=1) (the backward of
# gather and index_select)
@aten_rule(*aten_ops("scatter_add", "scatter_add_", "index_add", "index_add_"))
def scatter_add(call: OpCall) -> Cost:
    """An add per ``src`` element; ``index_add`` with ``alpha != 1`` a multiply more."""
    src = call.arg(3, "src" if "src" in call.kwargs else "source")
    return Cost(src.numel() * (1 if call.kwargs.get("alpha", 1) == 1 else 2), 0)
