"""``F.scaled_dot_product_attention``, priced as its parts with the matmul and softmax formulas.

For query ``[..., L, E]``, key ``[..., S, E]``, value ``[..., S, Ev]`` and ``B = prod(...)`` (batch x
query heads; grouped-query keys are broadcast to the query heads):

- scores ``Q K^T``: ``B L S (2E - 1)`` FLOPs, ``B L S E`` MACs;
- scaling the score matrix: ``B L S``;
- the mask add, when ``attn_mask`` is given or ``is_causal=True``: ``B L S`` (the full score matrix is
  counted either way: a causal kernel may skip the masked half, the convention does not); a boolean
  ``attn_mask`` is first turned into a float one, ``mask.numel()`` selects, as PyTorch does;
- softmax over ``S``: ``B L (3S - 1)``;
- ``attention x V``: ``B L Ev (2S - 1)`` FLOPs, ``B L Ev S`` MACs.

Worked example: ``q, k, v`` of ``(1, 2, 4, 8)`` (B = 2, L = S = 4, E = Ev = 8), no mask: scores
32 * 15 = 480, scaling 32, softmax 8 rows * 11 = 88, attention x V 64 * 7 = 448; total 1,048 FLOPs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from torch_flops.records import Cost
from torch_flops.registry import OpCall, aten_ops, aten_rule, function_rule, prod
from torch_flops.rules.linear import matmul_cost
from torch_flops.rules.reduction import softmax_cost


def sdpa_cost(batch: int, q_len: int, kv_len: int, head_dim: int, value_dim: int, masked: bool) -> Cost:
    """Scores + scaling + optional mask add + softmax + attention x V (see the module docstring)."""
    scores = batch * q_len * kv_len
    cost = matmul_cost(scores, head_dim)
    cost = cost + Cost(scores * (2 if masked else 1), 0)
    cost = cost + softmax_cost(scores, kv_len)
    return cost + matmul_cost(batch * q_len * value_dim, kv_len)


def _sdpa_cost_of(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, masked: bool) -> Cost:
    *batch, q_len, head_dim = query.shape
    return sdpa_cost(prod(batch), q_len, key.shape[-2], head_dim, value.shape[-1], masked)


# [..., L, Ev] = sdpa(q [..., L, E], k [..., S, E], v [..., S, Ev], attn_mask=None, dropout_p=0, is_causal=False, scale=None)
@function_rule(F.scaled_dot_product_attention)
@aten_rule(*aten_ops("scaled_dot_product_attention"))
def scaled_dot_product_attention(call: OpCall) -> Cost:
    mask = call.arg(3, "attn_mask", None)
    masked = mask is not None or bool(call.arg(5, "is_causal", False))
    cost = _sdpa_cost_of(call.arg(0, "query"), call.arg(1, "key"), call.arg(2, "value"), masked)
    if isinstance(mask, torch.Tensor) and mask.dtype == torch.bool:
        cost = cost + Cost(mask.numel(), 0)  # PyTorch turns it into a float mask: where(mask, 0, -inf)
    return cost


# aten kernels, q/k/v as [B, H, L|S, E]:
# _scaled_dot_product_flash_attention[_for_cpu](q, k, v, dropout_p, is_causal, ..., *, attn_mask (cpu), scale)
@aten_rule(*aten_ops("_scaled_dot_product_flash_attention", "_scaled_dot_product_flash_attention_for_cpu"))
def flash_attention_aten(call: OpCall) -> Cost:
    masked = call.kwargs.get("attn_mask") is not None or bool(call.arg(4, "is_causal", False))
    return _sdpa_cost_of(call.args[0], call.args[1], call.args[2], masked)


# _scaled_dot_product_efficient_attention / _cudnn_attention(q, k, v, attn_bias, compute_log_sumexp, dropout_p, is_causal, ...)
@aten_rule(*aten_ops("_scaled_dot_product_efficient_attention", "_scaled_dot_product_cudnn_attention"))
def efficient_attention_aten(call: OpCall) -> Cost:
    masked = call.arg(3, "attn_bias", None) is not None or bool(call.arg(6, "is_causal", False))
    return _sdpa_cost_of(call.args[0], call.args[1], call.args[2], masked)


# _scaled_dot_product_fused_attention_overrideable(q, k, v, attn_bias, dropout_p, is_causal, ...)
@aten_rule(*aten_ops("_scaled_dot_product_fused_attention_overrideable"))
def overrideable_attention_aten(call: OpCall) -> Cost:
    masked = call.arg(3, "attn_bias", None) is not None or bool(call.arg(5, "is_causal", False))
    return _sdpa_cost_of(call.args[0], call.args[1], call.args[2], masked)
