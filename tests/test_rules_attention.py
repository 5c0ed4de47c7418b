"""``attention="causal"``: SDPA counted over the visible scores only, with the hand arithmetic beside
each expected value (docs/conventions.md, "Scaled dot-product attention").

Notation: ``B`` batch x query heads, ``L`` queries, ``S`` keys, ``E = Ev = 8``; ``U`` visible scores,
``R`` rows that see at least one key. Causal count: scores ``U (2E - 1) = 15U``, scaling ``U``, mask add
``U`` (when masked), softmax ``3U - R``, attention x V ``Ev (2U - R) = 8 (2U - R)``; MACs ``16U``; a boolean
mask adds ``mask.numel()`` selects (its conversion to a float mask). Every case is also counted at the
aten level (``count_aten`` with the same overlay: CPU SDPA runs as
``aten._scaled_dot_product_flash_attention_for_cpu``), which must agree.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F

from features import needs_sdpa_gqa
from models import Op
from torch_flops import DEFAULT_REGISTRY, Cost, CostRuleError, OpCall, TorchFLOPsByFX, count_aten
from torch_flops.rules.attention import (
    ATTENTION_MODES, attention_rules, causal_scores, sdpa_cost, visible_sdpa_cost,
)

torch.manual_seed(0)
NEG_INF = float("-inf")


def qkv(batch: int = 1, heads: int = 2, kv_heads: int | None = None, q_len: int = 4, kv_len: int = 4) -> tuple:
    kv_heads = heads if kv_heads is None else kv_heads
    return (torch.randn(batch, heads, q_len, 8), torch.randn(batch, kv_heads, kv_len, 8),
            torch.randn(batch, kv_heads, kv_len, 8))


def sdpa(**options: Any) -> Op:
    return Op(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, **options))


def sdpa_masked(mask: torch.Tensor) -> Op:
    return Op(lambda q, k, v, mask: F.scaled_dot_product_attention(q, k, v, attn_mask=mask), mask=mask)


def tril(q_len: int, kv_len: int, window: int | None = None) -> torch.Tensor:
    """The boolean causal mask (key j visible to query i when j <= i), limited to ``window`` keys."""
    i, j = torch.arange(q_len)[:, None], torch.arange(kv_len)[None, :]
    return (j <= i) & (i - j < window) if window is not None else j <= i


def additive(mask: torch.Tensor) -> torch.Tensor:
    """``mask`` as an additive float mask: 0 where visible, -inf where not."""
    return torch.zeros(mask.shape).masked_fill(~mask, NEG_INF)


PADDING = torch.tensor([[True] * 4, [True, True, True, False]])[:, None, None, :]  # (2, 1, 1, 4): sequence 1 pads its last key
FIRST_ROW_EMPTY = tril(4, 4).clone()
FIRST_ROW_EMPTY[0] = False  # a query that sees nothing (a padded query row)

# (id, model, inputs, dense FLOPs, causal FLOPs, causal MACs)
CASES = [
    # B = 2, L = S = 4: U = 2 * (1+2+3+4) = 20, R = 8: 300 + 20 + 20 + (60 - 8) + 8 * (40 - 8) = 648; MACs 320
    ("is_causal", sdpa(is_causal=True), qkv(), 1_080, 648, 320),
    # top-left when L < S: rows see 1, 2, 3 of 5 keys: U = 2 * 6 = 12, R = 6:
    # 180 + 12 + 12 + (36 - 6) + 8 * (24 - 6) = 378; MACs 192. Dense: 30*15 + 30 + 30 + 6*14 + 48*9 = 1,026
    ("is_causal_fewer_queries", sdpa(is_causal=True), qkv(q_len=3, kv_len=5), 1_026, 378, 192),
    # L > S: rows see 1, 2, 3, 3, 3 of 3 keys: U = 2 * 12 = 24, R = 10:
    # 360 + 24 + 24 + (72 - 10) + 8 * (48 - 10) = 774; MACs 384. Dense: 30*15 + 30 + 30 + 10*8 + 80*5 = 990
    ("is_causal_more_queries", sdpa(is_causal=True), qkv(q_len=5, kv_len=3), 990, 774, 384),
    # decode with a KV cache: 1 query, 6 keys, all visible: U = 12, R = 2: 180 + 12 + (36 - 2) + 8 * (24 - 2) = 402
    ("decode_one_query", sdpa(), qkv(q_len=1, kv_len=6), 402, 402, 192),
    # boolean tril mask: as is_causal, plus 16 selects: 648 + 16 = 664 (dense 1,080 + 16)
    ("bool_causal_mask", sdpa_masked(tril(4, 4)), qkv(), 1_096, 664, 320),
    # the same mask as 0 / -inf: no selects
    ("float_causal_mask", sdpa_masked(additive(tril(4, 4))), qkv(), 1_080, 648, 320),
    # sliding window of 2: rows see 1, 2, 2, 2: U = 2 * 7 = 14, R = 8:
    # 210 + 14 + 14 + (42 - 8) + 8 * (28 - 8) = 432, + 16 selects = 448; MACs 224
    ("sliding_window_bool", sdpa_masked(tril(4, 4, window=2)), qkv(), 1_096, 448, 224),
    ("sliding_window_float", sdpa_masked(additive(tril(4, 4, window=2))), qkv(), 1_080, 432, 224),
    # padding mask (2, 1, 1, 4) over batch 2 x 2 heads (B = 4): U = 2 * 16 + 2 * 12 = 56, R = 16:
    # 840 + 56 + 56 + (168 - 16) + 8 * (112 - 16) = 1,872, + 8 selects = 1,880; MACs 896. Dense: 2 * 1,080 + 8
    ("padding_mask", sdpa_masked(PADDING), qkv(batch=2), 2_168, 1_880, 896),
    # a query row that sees no key costs nothing: rows see 0, 2, 3, 4: U = 2 * 9 = 18, R = 6:
    # 270 + 18 + 18 + (54 - 6) + 8 * (36 - 6) = 594, + 16 selects = 610; MACs 288
    ("empty_row", sdpa_masked(FIRST_ROW_EMPTY), qkv(), 1_096, 610, 288),
    # a float mask's finite entries are visible, however negative: all 32 scores
    ("float_mask_finite", sdpa_masked(torch.full((4, 4), torch.finfo(torch.float32).min)), qkv(), 1_080, 1_080, 512),
    # GQA, 4 query heads over 2 key heads: scores per query head, B = 4: 2 * 648 = 1,296; MACs 640
    pytest.param("gqa_causal", sdpa(is_causal=True, enable_gqa=True), qkv(heads=4, kv_heads=2), 2_160, 1_296, 640,
                 marks=needs_sdpa_gqa),
]


def fx_count(model: Op, inputs: tuple, attention: str) -> tuple[int, int]:
    counter = TorchFLOPsByFX(model, attention=attention)
    counter.propagate(*inputs)
    assert not counter.unsupported
    return counter.total_flops, counter.total_macs


def aten_count(model: Op, inputs: tuple, attention: str) -> tuple[int, int]:
    _, tally = count_aten(model, *inputs, registry=DEFAULT_REGISTRY.overlay(attention_rules(attention)))
    assert not tally.unsupported
    return tally.cost.flops, tally.cost.macs


def _bool_mask_flops_per_entry() -> int:
    """What this torch's SDPA runs, counted at aten level, to make a float mask of a boolean one, per
    entry: 1 on 2.14 (one ``where``, as the FX rule prices it), 2 on 2.4 (``logical_not``, then
    ``masked_fill_``)."""
    q, k, v = qkv()
    mask = tril(4, 4)
    with_bool, with_float = (count_aten(lambda m=m: F.scaled_dot_product_attention(q, k, v, attn_mask=m))[1].cost.flops
                             for m in (mask, additive(mask)))
    return (with_bool - with_float) // mask.numel()


BOOL_MASK_FLOPS_PER_ENTRY = _bool_mask_flops_per_entry()


@pytest.mark.parametrize("case_id, model, inputs, dense, causal, causal_macs", CASES)
def test_causal_counts_visible_scores(case_id: str, model: Op, inputs: tuple, dense: int, causal: int, causal_macs: int) -> None:
    assert fx_count(model, inputs, "dense")[0] == dense
    assert fx_count(model, inputs, "causal") == (causal, causal_macs)
    # the fused CPU kernel, same price; the aten ops that turn a boolean mask into a float one, as this torch runs them
    conversion = (BOOL_MASK_FLOPS_PER_ENTRY - 1) * sum(b.numel() for b in model.buffers() if b.dtype == torch.bool)
    assert aten_count(model, inputs, "causal") == (causal + conversion, causal_macs)
    assert aten_count(model, inputs, "dense")[0] == dense + conversion


def test_lower_right_causal_bias() -> None:
    """``causal_lower_right(3, 5)``: the 3 queries are the last 3 of the 5 keys (a KV cache), rows see
    3, 4, 5: U = 2 * 12 = 24, R = 6: 360 + 24 + 24 + (72 - 6) + 8 * (48 - 6) = 810; MACs 384."""
    bias = pytest.importorskip("torch.nn.attention.bias")
    q, k, v = qkv(q_len=3, kv_len=5)
    rule = DEFAULT_REGISTRY.overlay(attention_rules("causal")).function_rule(F.scaled_dot_product_attention)
    mask = bias.causal_lower_right(3, 5)
    output = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    assert rule.fn(OpCall((q, k, v), {"attn_mask": mask}, output)) == Cost(810, 384)
    assert causal_scores(3, 5, bottom_right=True) == 12


@pytest.mark.parametrize("length, window, expected", [
    (4, None, 10), (7, None, 28),  # L (L + 1) / 2
    (4, 2, 7), (6, 3, 15), (8, 3, 21),  # w (w + 1) / 2 + (L - w) w: 3 + 4, 6 + 9, 6 + 15
    (2, 3, 3),  # window longer than the sequence: L (L + 1) / 2
])
def test_causal_scores_closed_forms(length: int, window: int | None, expected: int) -> None:
    assert causal_scores(length, length, window=window) == expected
    assert int(tril(length, length, window).sum()) == expected


@pytest.mark.parametrize("q_len, kv_len, expected", [
    (1, 9, 9),  # decode: one query sees every key
    (3, 5, 12),  # L S - L (L - 1) / 2 = 15 - 3
    (4, 4, 10),  # L = S: as top-left
])
def test_bottom_right_closed_form(q_len: int, kv_len: int, expected: int) -> None:
    assert causal_scores(q_len, kv_len, bottom_right=True) == expected == q_len * kv_len - q_len * (q_len - 1) // 2


@pytest.mark.parametrize("shape", [(2, 4, 4, 8, 8), (3, 1, 7, 16, 16), (1, 5, 3, 8, 4)])
@pytest.mark.parametrize("masked", [False, True])
def test_every_score_visible_is_the_dense_count(shape: tuple, masked: bool) -> None:
    batch, q_len, kv_len, head_dim, value_dim = shape
    dense = sdpa_cost(batch, q_len, kv_len, head_dim, value_dim, masked)
    assert visible_sdpa_cost(batch * q_len * kv_len, batch * q_len, head_dim, value_dim, masked) == dense


def test_meta_tensors() -> None:
    """Without a mask the count needs no values; a mask on meta has none and raises, naming the option."""
    counter = TorchFLOPsByFX(sdpa(is_causal=True), attention="causal")
    counter.propagate_shapes(input_shapes=[(1, 2, 4, 8)] * 3)
    assert counter.total_flops == 648
    counter = TorchFLOPsByFX(sdpa_masked(tril(4, 4)), attention="causal")
    with pytest.raises(CostRuleError, match=r"attention='causal' counts the visible entries of attn_mask.*meta device"):
        counter.propagate_shapes(input_shapes=[(1, 2, 4, 8)] * 3)
    dense = TorchFLOPsByFX(sdpa_masked(tril(4, 4)))
    dense.propagate_shapes(input_shapes=[(1, 2, 4, 8)] * 3)
    assert dense.total_flops == 1_096


def test_option_is_checked_and_overlays_without_changing_the_registry() -> None:
    assert ATTENTION_MODES == ("dense", "causal")
    for bad in ("Causal", "sparse", None):
        with pytest.raises(ValueError, match=r"attention must be one of \('dense', 'causal'\)"):
            TorchFLOPsByFX(sdpa(), attention=bad)
    before = DEFAULT_REGISTRY.function_rule(F.scaled_dot_product_attention)
    counter = TorchFLOPsByFX(sdpa(is_causal=True), attention="causal")
    assert DEFAULT_REGISTRY.function_rule(F.scaled_dot_product_attention) is before
    assert counter.registry.function_rule(F.scaled_dot_product_attention) is not before
    assert attention_rules("dense") == {}
    # extra_rules beat the attention rules
    own = TorchFLOPsByFX(sdpa(is_causal=True), attention="causal", extra_rules={F.scaled_dot_product_attention: lambda call: Cost(7)})
    own.propagate(*qkv())
    assert own.total_flops == 7
