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

**Counting only the visible scores** (``TorchFLOPsByFX(model, attention="causal")``, which overlays the
rules of :func:`attention_rules` on the registry). ``U``, the scores a query may see (``is_causal``:
row ``i`` of ``L`` sees keys ``0 .. min(i, S - 1)``, torch's top-left alignment; a boolean mask: its
``True`` entries; a float mask: its entries above ``-inf``; both broadcast to ``[..., L, S]``), and
``R``, the rows that see at least one key, replace ``B L S`` and ``B L``: scores ``U (2E - 1)``, scaling
``U``, mask add ``U``, softmax ``3U - R``, attention x V ``Ev (2U - R)``; MACs ``U E + U Ev``. Without a
mask every score is visible and the count is the dense one. The conversion of a boolean mask stays
``mask.numel()`` selects (it runs over the whole mask). Worked example: ``is_causal=True`` on the
example above: ``U = 2 * (1 + 2 + 3 + 4) = 20``, ``R = 8``: ``300 + 20 + 20 + (60 - 8) + 8 * (40 - 8)
= 648`` FLOPs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from torch_flops.arguments import check_choice
from torch_flops.records import Cost
from torch_flops.registry import OpCall, Rule, RuleFn, aten_ops, aten_rule, function_rule, prod
from torch_flops.rules.linear import matmul_cost
from torch_flops.rules.reduction import softmax_cost

try:  # torch.nn.attention.bias.causal_lower_right(L, S): a mask object that SDPA materialises
    from torch.nn.attention.bias import CausalBias, CausalVariant
except ImportError:  # pragma: no cover - older torch
    CausalBias = CausalVariant = None


def _is_causal_bias(mask: Any) -> bool:
    """Whether ``mask`` is a :class:`CausalBias`, which SDPA applies as ``is_causal`` (no float mask is
    made of it; on torch 2.4 reading its ``dtype`` raises)."""
    return CausalBias is not None and isinstance(mask, CausalBias)


ATTENTION_MODES = ("dense", "causal")
"""``"dense"``: every score of the ``L x S`` matrix is counted; ``"causal"``: only the scores the mask
(``is_causal``, ``attn_mask``) leaves visible."""

_SDPA_OPS = aten_ops("scaled_dot_product_attention")
_FLASH_OPS = aten_ops("_scaled_dot_product_flash_attention", "_scaled_dot_product_flash_attention_for_cpu")
_EFFICIENT_OPS = aten_ops("_scaled_dot_product_efficient_attention", "_scaled_dot_product_cudnn_attention")
_OVERRIDEABLE_OPS = aten_ops("_scaled_dot_product_fused_attention_overrideable")


def sdpa_cost(batch: int, q_len: int, kv_len: int, head_dim: int, value_dim: int, masked: bool) -> Cost:
    """Scores + scaling + optional mask add + softmax + attention x V (see the module docstring)."""
    scores = batch * q_len * kv_len
    cost = matmul_cost(scores, head_dim)
    cost = cost + Cost(scores * (2 if masked else 1), 0)
    cost = cost + softmax_cost(scores, kv_len)
    return cost + matmul_cost(batch * q_len * value_dim, kv_len)


def visible_sdpa_cost(visible: int, rows: int, head_dim: int, value_dim: int, masked: bool) -> Cost:
    """SDPA over ``visible`` scores in ``rows`` rows that see at least one key (module docstring):
    scores ``U (2E - 1)``, scaling ``U``, mask add ``U``, softmax ``3U - R``, attention x V ``Ev (2U - R)``.
    With every score visible (``U = B L S``, ``R = B L``) it is :func:`sdpa_cost`."""
    if visible == 0:
        return Cost(0, 0)
    cost = Cost(visible * (2 * head_dim - 1), visible * head_dim)
    cost = cost + Cost(visible * (2 if masked else 1), 0)
    cost = cost + Cost(3 * visible - rows, 0)
    return cost + Cost(value_dim * (2 * visible - rows), value_dim * visible)


def causal_scores(q_len: int, kv_len: int, window: int | None = None, bottom_right: bool = False) -> int:
    """Visible scores of one ``q_len x kv_len`` head: row ``i`` sees ``min(i + 1, kv_len)`` keys (torch's
    ``is_causal``, top-left), ``kv_len - q_len + i + 1`` with ``bottom_right`` (queries that are the last
    ``q_len`` of the keys, as with a KV cache), and at most ``window`` of them (a sliding window: the
    key of the query's own position and the ``window - 1`` before it)."""
    shift = kv_len - q_len if bottom_right else 0
    return sum(_row_keys(i + shift, kv_len, window) for i in range(q_len))


def _row_keys(position: int, kv_len: int, window: int | None) -> int:
    seen = max(0, min(position + 1, kv_len))
    return seen if window is None else min(seen, window)


def _visible_scores(query: torch.Tensor, key: torch.Tensor, mask: Any, is_causal: bool) -> tuple[int, int]:
    """``(U, R)`` of one call: scores left visible by ``is_causal`` or ``mask``, and rows that see a key."""
    *batch, q_len, _ = query.shape
    kv_len, heads = key.shape[-2], prod(batch)
    if mask is None and not is_causal or kv_len == 0:
        return heads * q_len * kv_len, heads * q_len if kv_len else 0
    if mask is None or _is_causal_bias(mask):
        bottom_right = mask is not None and mask.variant == CausalVariant.LOWER_RIGHT
        rows = min(q_len, kv_len) if bottom_right else q_len  # top-left: every row sees key 0
        return heads * causal_scores(q_len, kv_len, bottom_right=bottom_right), heads * rows
    if mask.device.type == "meta":
        raise ValueError(
            f"attention='causal' counts the visible entries of attn_mask, and this {tuple(mask.shape)} mask is on "
            f"the meta device, which has no values: count with real tensors, pass is_causal=True instead of a "
            f"causal mask, or count every score with attention='dense'"
        )
    seen = mask if mask.dtype == torch.bool else mask > float("-inf")
    seen = seen.reshape(1) if seen.dim() == 0 else seen
    keys_per_row = seen.sum(-1, dtype=torch.int64) * (kv_len // seen.shape[-1])  # a last dim of 1 is broadcast
    keys_per_row = torch.broadcast_to(keys_per_row, (*batch, q_len))
    return int(keys_per_row.sum()), int((keys_per_row > 0).sum())


def _sdpa_call_cost(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: Any, is_causal: bool,
                    attention: str) -> Cost:
    masked = mask is not None or is_causal
    if attention == "dense":
        *batch, q_len, head_dim = query.shape
        return sdpa_cost(prod(batch), q_len, key.shape[-2], head_dim, value.shape[-1], masked)
    visible, rows = _visible_scores(query, key, mask, is_causal)
    return visible_sdpa_cost(visible, rows, query.shape[-1], value.shape[-1], masked)


# [..., L, Ev] = sdpa(q [..., L, E], k [..., S, E], v [..., S, Ev], attn_mask=None, dropout_p=0, is_causal=False, scale=None)
@function_rule(F.scaled_dot_product_attention)
@aten_rule(*_SDPA_OPS)
def scaled_dot_product_attention(call: OpCall, attention: str = "dense") -> Cost:
    mask = call.arg(3, "attn_mask", None)
    cost = _sdpa_call_cost(call.arg(0, "query"), call.arg(1, "key"), call.arg(2, "value"), mask,
                           bool(call.arg(5, "is_causal", False)), attention)
    if isinstance(mask, torch.Tensor) and not _is_causal_bias(mask) and mask.dtype == torch.bool:
        cost = cost + Cost(mask.numel(), 0)  # PyTorch turns it into a float mask: where(mask, 0, -inf)
    return cost


# aten kernels, q/k/v as [B, H, L|S, E]:
# _scaled_dot_product_flash_attention[_for_cpu](q, k, v, dropout_p, is_causal, ..., *, attn_mask (cpu), scale)
@aten_rule(*_FLASH_OPS)
def flash_attention_aten(call: OpCall, attention: str = "dense") -> Cost:
    return _sdpa_call_cost(call.args[0], call.args[1], call.args[2], call.kwargs.get("attn_mask"),
                           bool(call.arg(4, "is_causal", False)), attention)


# _scaled_dot_product_efficient_attention / _cudnn_attention(q, k, v, attn_bias, compute_log_sumexp, dropout_p, is_causal, ...)
@aten_rule(*_EFFICIENT_OPS)
def efficient_attention_aten(call: OpCall, attention: str = "dense") -> Cost:
    return _sdpa_call_cost(call.args[0], call.args[1], call.args[2], call.arg(3, "attn_bias", None),
                           bool(call.arg(6, "is_causal", False)), attention)


# _scaled_dot_product_fused_attention_overrideable(q, k, v, attn_bias, dropout_p, is_causal, ...)
@aten_rule(*_OVERRIDEABLE_OPS)
def overrideable_attention_aten(call: OpCall, attention: str = "dense") -> Cost:
    return _sdpa_call_cost(call.args[0], call.args[1], call.args[2], call.arg(3, "attn_bias", None),
                           bool(call.arg(5, "is_causal", False)), attention)


_SDPA_RULES: tuple[tuple[Callable[..., Cost], list[Any]], ...] = (
    (scaled_dot_product_attention, [F.scaled_dot_product_attention, *_SDPA_OPS]),
    (flash_attention_aten, _FLASH_OPS),
    (efficient_attention_aten, _EFFICIENT_OPS),
    (overrideable_attention_aten, _OVERRIDEABLE_OPS),
)


def attention_rules(attention: str) -> dict[Any, Rule]:
    """The SDPA rules (function and aten forms) that count ``attention`` (one of :data:`ATTENTION_MODES`),
    to overlay on a registry: ``registry.overlay(attention_rules("causal"))``. Empty for ``"dense"``, what
    the built-in rules count."""
    check_choice("attention", attention, ATTENTION_MODES)
    if attention == "dense":
        return {}
    return {key: Rule(_counting(rule, attention)) for rule, keys in _SDPA_RULES for key in keys}


def _counting(rule: Callable[..., Cost], attention: str) -> RuleFn:
    def counted(call: OpCall) -> Cost:
        return rule(call, attention)

    counted.__qualname__ = f"{rule.__qualname__}[attention={attention!r}]"
    return counted
