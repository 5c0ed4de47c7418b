"""``nn.MultiheadAttention``: its projections, its mask preparation and the attention.

The layer is priced as the aten ops its Python path (``F.multi_head_attention_forward``) dispatches,
each with its family's formula (:mod:`~torch_flops.rules.linear`, :mod:`~torch_flops.rules.reduction`,
:mod:`~torch_flops.rules.attention`), so the module rule equals :func:`torch_flops.count_aten` of the
layer. The model runs in eval mode, where dropout is the identity (not counted).

Notation: batch ``N`` (1 for an unbatched input), target length ``L``, source length ``S``, ``E =
embed_dim``, ``H = num_heads`` heads of ``d = E / H``, key and value widths ``Ek = kdim``, ``Ev = vdim``
(``E`` unless given), and ``S' = S`` + 1 with ``add_bias_kv`` + 1 with ``add_zero_attn`` (the appended
key/value rows are not projected, so they only lengthen the attention).

- in-projections, ``N L`` query rows and ``N S`` key/value rows: ``N L E (2E - 1) + N S E (2Ek - 1)
  + N S E (2Ev - 1)`` FLOPs, ``+ N L E + 2 N S E`` with a bias. MACs ``N L E E + N S E Ek + N S E Ev``,
  ``+`` the bias outputs of each projection that runs as one ``aten.addmm`` (see below);
- out-projection: ``N L E (2E - 1)``, ``+ N L E`` with a bias; MACs ``N L E E (+ N L E)``;
- mask preparation: a boolean ``attn_mask`` / ``key_padding_mask`` is turned into a float ``-inf``
  mask, one FLOP per element of the mask; when both masks are given they are added into one
  ``N H L S'`` mask: ``N H L S'``. No MACs;
- attention with ``need_weights=True`` (explicit ``bmm``): scaling ``q`` ``N L E``, scores
  ``N H L S' (2d - 1)``, the mask add ``N H L S'`` when a mask is given (the input add of
  ``aten.baddbmm``: a MAC too), softmax ``N H L (3S' - 1)``, attention x V ``N L E (2S' - 1)``, and with
  ``average_attn_weights`` the mean over heads ``N H L S'`` (MACs too, as every mean). MACs of the
  products ``2 N H L S' d``;
- attention with ``need_weights=False``: ``F.scaled_dot_product_attention`` (:func:`sdpa_cost`): the
  same, but it scales the score matrix (``N H L S'``) instead of ``q``, its mask add costs no MAC and
  nothing is averaged.

"A mask is given" means ``attn_mask`` or ``key_padding_mask`` (``is_causal`` requires ``attn_mask``;
with ``need_weights=False`` PyTorch may pass ``is_causal=True`` to SDPA instead: the same count).

**In-projection bias MACs.** ``F.linear`` on a 3-D input runs as one ``aten.addmm`` (bias = MAC, as a
``Linear`` bias) only when the sequence-first ``(L, N, E)`` input is contiguous; otherwise it runs as
``aten.mm`` + ``aten.add_`` and the bias add is elementwise: FLOPs, no MACs. With ``batch_first=True``
the layer transposes its inputs, so for ``N > 1`` and ``L > 1`` the in-projection biases cost no
MACs; with ``batch_first=False`` (contiguous inputs) and for unbatched inputs they do. The rule
reads each input's layout to decide. The out-projection always runs on a 2-D input: ``addmm``.

**The fast path.** In eval mode with no grad needed, a batched ``batch_first`` self-attention call
(the same tensor as query, key and value, an even number of heads, no ``add_bias_kv`` /
``add_zero_attn``, no float mask, ``bias=True``) runs as one fused ``aten._native_multi_head_attention``. Its CPU kernel
computes the in-projection as ``mm`` + a separate bias add that also scales ``q``, then ``bmm``, a
masked softmax (the mask applied as a select), ``bmm``, the out-projection ``addmm`` and, to average,
``sum`` + ``div`` over heads -- with ``need_weights=False`` too (no SDPA on CPU). It is priced with the
formula above for the same arguments, so a layer costs the same whichever path PyTorch takes (that
depends on grad mode, ``requires_grad`` and tensor identity, not on the arithmetic of the layer). Against
the kernel's own work this differs only in: with ``need_weights=False`` the formula scales the scores
(``N H L S``) where the kernel scales ``q`` (``N L E``); the mask add and the average over heads are
MACs too where the kernel uses a select and ``sum`` + ``div`` (equal FLOPs); the in-projection bias
follows the Python path's layout rule above (a MAC only when ``N = 1`` or ``L = 1``) where the kernel
always adds it separately (equal FLOPs). Mask preparation (boolean to float, merging both masks) runs
in Python before the kernel and is counted there.

**Known difference.** A call that passes every fast-path check but has no ``in_proj_bias``
(``bias=False``) merges ``attn_mask`` and ``key_padding_mask`` for the kernel, then falls back to the
Python path, which merges them again: the aten count sees ``N H L S`` more adds than this rule, which
counts the merge once.

Worked example: ``MultiheadAttention(8, 2)`` (``d = 4``), self-attention on ``(3, 2, 8)`` (``L = S = 3``,
``N = 2``), ``need_weights=True``:

- in-projection 6 rows * 24 outputs * (2*8 - 1) = 2,160, + bias 144 = 2,304;
- scaling q 2*3*8 = 48; scores 4 * 3 * 3 = 36 outputs * (2*4 - 1) = 252; softmax 12 rows * (3*3 - 1)
  = 96; attention x V 48 outputs * (2*3 - 1) = 240; mean over heads 36;
- out-projection 48 outputs * (2*8 - 1) = 720, + bias 48 = 768;

total 3,744 FLOPs; MACs 1,152 + 144 + 36*4 + 48*3 + 36 + 384 + 48 = 2,052. With ``need_weights=False``:
the attention is 252 + 36 (scaling the scores) + 96 + 240 = 624, total 3,696 FLOPs, 2,016 MACs.
"""

from __future__ import annotations

import torch
from torch import nn

from torch_flops.records import Cost
from torch_flops.registry import OpCall, aten_ops, aten_rule, module_rule
from torch_flops.rules.attention import sdpa_cost
from torch_flops.rules.linear import linear_cost, matmul_cost
from torch_flops.rules.reduction import mean_cost, softmax_cost


# -- shape-only formulas ---------------------------------------------------------------------------------
def projection_cost(rows: int, in_features: int, out_features: int, bias: bool, bias_is_mac: bool) -> Cost:
    """``rows`` tokens through an ``in_features -> out_features`` projection: ``rows * out_features *
    (2 * in_features - 1)`` FLOPs, ``+ rows * out_features`` with a bias. MACs ``rows * out_features *
    in_features``, ``+ rows * out_features`` when the bias add is fused into ``addmm`` (``bias_is_mac``)."""
    out_numel = rows * out_features
    cost = linear_cost(out_numel, in_features, bias)
    if bias and not bias_is_mac:
        cost = Cost(cost.flops, cost.macs - out_numel)
    return cost


def mask_preparation_cost(bool_mask_numel: int, merged_numel: int) -> Cost:
    """Boolean masks turned into float ``-inf`` masks (one FLOP per element, ``bool_mask_numel`` in
    all) plus the add merging ``attn_mask`` and ``key_padding_mask`` (``merged_numel``, ``N H L S'``, or
    0 when at most one mask is given). No MACs."""
    return Cost(bool_mask_numel + merged_numel, 0)


def mha_attention_cost(
    batch: int, heads: int, q_len: int, kv_len: int, head_dim: int, masked: bool, need_weights: bool, average: bool
) -> Cost:
    """The attention of ``heads`` heads of ``head_dim`` over ``kv_len`` keys (``S'``), ``B = batch * heads``.

    ``need_weights=True``: ``B L d`` (scaling q) + ``B L S (2d - 1)`` (scores) + ``B L S`` (mask add,
    when ``masked``, MACs too) + ``B L (3S - 1)`` (softmax) + ``B L d (2S - 1)`` (attention x V)
    + ``B L S`` (mean over heads, when ``average``, MACs too). MACs of the products ``2 B L S d``.

    ``need_weights=False``: :func:`sdpa_cost` (it scales the ``B L S`` scores instead of q; no average).
    """
    bh = batch * heads
    if not need_weights:
        return sdpa_cost(bh, q_len, kv_len, head_dim, head_dim, masked)
    scores = bh * q_len * kv_len
    cost = Cost(bh * q_len * head_dim, 0)  # q * head_dim ** -0.5
    cost = cost + matmul_cost(scores, head_dim)
    if masked:
        cost = cost + Cost(scores, scores)  # the input add of baddbmm(mask, q, k^T)
    cost = cost + softmax_cost(scores, kv_len)
    cost = cost + matmul_cost(bh * q_len * head_dim, kv_len)
    if average:
        cost = cost + mean_cost(scores, batch * q_len * kv_len)
    return cost


def multihead_attention_cost(
    batch: int,
    q_len: int,
    kv_len: int,
    embed_dim: int,
    heads: int,
    kdim: int,
    vdim: int,
    *,
    in_bias: bool,
    out_bias: bool,
    in_bias_is_mac: tuple[bool, bool, bool] = (True, True, True),
    extra_kv: int = 0,
    attn_mask: bool = False,
    key_padding_mask: bool = False,
    bool_mask_numel: int = 0,
    need_weights: bool = True,
    average: bool = True,
) -> Cost:
    """The whole layer (module docstring): in-projections of q (``batch * q_len`` rows, ``embed_dim``
    wide), k (``kdim``) and v (``vdim``), both ``batch * kv_len`` rows; mask preparation; attention over
    ``kv_len + extra_kv`` keys; out-projection. ``in_bias_is_mac`` says, for q, k and v, whether the
    in-projection bias runs inside ``addmm``."""
    q_rows, kv_rows = batch * q_len, batch * kv_len
    q_mac, k_mac, v_mac = in_bias_is_mac
    cost = projection_cost(q_rows, embed_dim, embed_dim, in_bias, q_mac)
    cost = cost + projection_cost(kv_rows, kdim, embed_dim, in_bias, k_mac)
    cost = cost + projection_cost(kv_rows, vdim, embed_dim, in_bias, v_mac)
    keys = kv_len + extra_kv
    merged = batch * heads * q_len * keys if attn_mask and key_padding_mask else 0
    cost = cost + mask_preparation_cost(bool_mask_numel, merged)
    cost = cost + mha_attention_cost(
        batch, heads, q_len, keys, embed_dim // heads, attn_mask or key_padding_mask, need_weights, average
    )
    return cost + projection_cost(q_rows, embed_dim, embed_dim, out_bias, True)


# -- adapters --------------------------------------------------------------------------------------------
def _bias_is_mac(x: torch.Tensor, batch_first: bool) -> bool:
    """Whether ``F.linear`` runs on ``x`` as one ``addmm``: the sequence-first 3-D input PyTorch builds
    (``unsqueeze(1)`` of an unbatched input, ``transpose(0, 1)`` of a ``batch_first`` one) is contiguous."""
    if x.dim() == 2:
        return x.unsqueeze(1).is_contiguous()
    return (x.transpose(0, 1) if batch_first else x).is_contiguous()


def _bool_numel(mask: torch.Tensor | None) -> int:
    return mask.numel() if mask is not None and mask.dtype == torch.bool else 0


# (attn_output [L, N, E] | [N, L, E] | [L, E], weights | None) = MultiheadAttention(query, key, value,
#     key_padding_mask=None, need_weights=True, attn_mask=None, average_attn_weights=True, is_causal=False)
@module_rule(nn.MultiheadAttention)
def multihead_attention_module(call: OpCall) -> Cost:
    module: nn.MultiheadAttention = call.module
    query, key, value = call.arg(0, "query"), call.arg(1, "key"), call.arg(2, "value")
    key_padding_mask = call.arg(3, "key_padding_mask", None)
    need_weights = bool(call.arg(4, "need_weights", True))
    attn_mask = call.arg(5, "attn_mask", None)
    average = bool(call.arg(6, "average_attn_weights", True))
    batch_first = module.batch_first
    if query.dim() == 2:  # unbatched: batch_first does not apply
        batch, q_len, kv_len = 1, query.shape[0], key.shape[0]
    elif batch_first:
        batch, q_len, kv_len = query.shape[0], query.shape[1], key.shape[1]
    else:
        q_len, batch, kv_len = query.shape[0], query.shape[1], key.shape[0]
    return multihead_attention_cost(
        batch,
        q_len,
        kv_len,
        module.embed_dim,
        module.num_heads,
        module.kdim,
        module.vdim,
        in_bias=module.in_proj_bias is not None,
        out_bias=module.out_proj.bias is not None,
        in_bias_is_mac=tuple(_bias_is_mac(x, batch_first) for x in (query, key, value)),
        extra_kv=(module.bias_k is not None) + bool(module.add_zero_attn),
        attn_mask=attn_mask is not None,
        key_padding_mask=key_padding_mask is not None,
        bool_mask_numel=_bool_numel(attn_mask) + _bool_numel(key_padding_mask),
        need_weights=need_weights,
        average=average,
    )


# (out [N, L, E], weights [N, L, S] | [N, H, L, S] | None) = _native_multi_head_attention(query [N, L, E],
#     key [N, S, E], value [N, S, E], embed_dim, num_head, qkv_weight [3E, E], qkv_bias [3E],
#     proj_weight [E, E], proj_bias [E], mask=None, need_weights=True, average_attn_weights=True,
#     mask_type=None); the mask arrives already float and merged
@aten_rule(*aten_ops("_native_multi_head_attention"))
def native_multi_head_attention_aten(call: OpCall) -> Cost:
    """The fused fast path, priced as the Python path would price the same call (module docstring)."""
    query, key, value = call.arg(0, "query"), call.arg(1, "key"), call.arg(2, "value")
    if query.is_nested:
        raise ValueError("nested-tensor inputs to _native_multi_head_attention have no fixed shape to price")
    batch, q_len, embed_dim = query.shape
    proj_bias = call.arg(8, "proj_bias", None)
    return multihead_attention_cost(
        batch,
        q_len,
        key.shape[1],
        int(call.arg(3, "embed_dim")),
        int(call.arg(4, "num_head")),
        embed_dim,
        embed_dim,
        in_bias=call.arg(6, "qkv_bias", None) is not None,
        out_bias=proj_bias is not None,
        in_bias_is_mac=tuple(_bias_is_mac(x, True) for x in (query, key, value)),
        attn_mask=call.arg(9, "mask", None) is not None,
        need_weights=bool(call.arg(10, "need_weights", True)),
        average=bool(call.arg(11, "average_attn_weights", True)),
    )
