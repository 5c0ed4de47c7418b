"""``nn.MultiheadAttention`` (``torch_flops/rules/mha.py``): hand-computed costs, and agreement of the
FX-level module rule with the aten-level count (:func:`torch_flops.count_aten`) across the layer's
options.

A bare ``torch.nn`` layer cannot be the traced root, and ``nn.Sequential`` passes one input only, so the
layer is wrapped in :class:`Attend`, whose ``forward(query, key, value)`` passes the masks (buffers) and
the flags (constants). Self-attention passes the same tensor three times, as a user would: that is what
lets PyTorch take its fused fast path (``aten._native_multi_head_attention``) in eval mode without grad.
"""

from __future__ import annotations

import warnings
from typing import Any

import pytest
import torch
from torch import nn

from torch_flops import Cost, Status, TorchFLOPsByFX, count_aten
from torch_flops.rules.mha import mha_attention_cost, multihead_attention_cost, projection_cost

torch.manual_seed(0)

E, H = 8, 2  # embed_dim, num_heads: head_dim d = 4
FAST_PATH = "aten._native_multi_head_attention"


# -- helpers -----------------------------------------------------------------------------------------
pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


class Attend(nn.Module):
    """``forward(query, key, value) = mha(query, key, value, attn_mask=..., key_padding_mask=..., **options)``."""

    def __init__(self, mha: nn.MultiheadAttention, attn_mask: torch.Tensor | None = None,
                 key_padding_mask: torch.Tensor | None = None, **options: Any) -> None:
        super().__init__()
        self.mha = mha
        self.options = options
        self.register_buffer("attn_mask", attn_mask)
        self.register_buffer("key_padding_mask", key_padding_mask)

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> Any:
        return self.mha(query, key, value, attn_mask=self.attn_mask, key_padding_mask=self.key_padding_mask,
                        **self.options)


def fx_cost(mha: nn.MultiheadAttention, inputs: tuple, **kwargs: Any) -> tuple[int, int]:
    """(FLOPs, MACs) of the FX-level count; the layer must be priced by its module rule."""
    counter = TorchFLOPsByFX(Attend(mha, **kwargs))
    counter.propagate(*inputs)
    [record] = [r for r in counter.records if r.op == "call_module"]
    assert record.status is Status.RULE, record.status
    assert not counter.unsupported
    return counter.total_flops, counter.total_macs


def aten_cost(mha: nn.MultiheadAttention, inputs: tuple, **kwargs: Any) -> tuple[tuple[int, int], set[str]]:
    """(FLOPs, MACs) of the aten-level count and the aten ops it saw."""
    _, tally = count_aten(mha, *inputs, **kwargs)
    assert not tally.unsupported, dict(tally.unsupported)
    return (tally.cost.flops, tally.cost.macs), set(tally.calls)


def randn(*shape: int) -> torch.Tensor:
    return torch.randn(*shape)


def sequence(length: int, width: int, n: int, batch_first: bool, batched: bool) -> torch.Tensor:
    if not batched:
        return randn(length, width)
    return randn(n, length, width) if batch_first else randn(length, n, width)


def bool_mask(*shape: int) -> torch.Tensor:
    """Some positions masked, never the first key (so no row is fully masked)."""
    mask = torch.rand(*shape) > 0.6
    mask[..., 0] = False
    return mask


# -- hand-computed costs -----------------------------------------------------------------------------
# E = 8, H = 2, d = 4; batch N = 2, L = 3 queries, S = 5 keys unless said otherwise.
x_lne = randn(3, 2, 8)  # (L, N, E), batch_first=False
x_nle = randn(2, 3, 8)  # (N, L, E), batch_first=True
kv_sne = randn(5, 2, 8)
kv_nse = randn(2, 5, 8)
x_le = randn(3, 8)  # unbatched

HAND_CASES = [
    # (id, module, (query, key, value), call kwargs, FLOPs, MACs)
    ("self_weights", nn.MultiheadAttention(E, H), (x_lne, x_lne, x_lne), {},
     # in-proj 6 rows * 24 * (2*8 - 1) = 2,160 + bias 144 = 2,304; q scaling 2*3*8 = 48;
     # scores 4*3*3 = 36 * (2*4 - 1) = 252; softmax 12 rows * (3*3 - 1) = 96; attn x V 48 * (2*3 - 1) = 240;
     # mean over heads 36; out-proj 48 * 15 = 720 + 48 = 768 -> 3,744
     3744,
     # 6*24*8 = 1,152 + 144; 36*4 = 144; 48*3 = 144; mean 36; 48*8 = 384 + 48 -> 2,052
     2052),
    ("self_no_weights", nn.MultiheadAttention(E, H), (x_lne, x_lne, x_lne), {"need_weights": False},
     # 2,304 + SDPA (252 scores + 36 scaling of the scores + 96 softmax + 240 attn x V = 624) + 768
     3696, 1296 + 144 + 144 + 432),  # no mean: 2,016
    ("cross_weights", nn.MultiheadAttention(E, H), (x_lne, kv_sne, kv_sne), {},
     # q: 6*8*15 = 720 + 48; k, v: 10 rows * 16 * 15 = 2,400 + 160; out 768 -> 4,096;
     # scaling 48; scores 60 * 7 = 420; softmax 12 * (15 - 1) = 168; attn x V 48 * (2*5 - 1) = 432; mean 60
     4096 + 48 + 420 + 168 + 432 + 60,  # 5,224
     # 432 + 1,280 + 160 + 432 = 2,304; scores 60*4 = 240; attn x V 48*5 = 240; mean 60
     2304 + 240 + 240 + 60),  # 2,844
    ("bf_cross_weights", nn.MultiheadAttention(E, H, batch_first=True), (x_nle, kv_nse, kv_nse), {},
     # the same FLOPs; the transposed (batch_first) inputs are not contiguous, so the in-projections run
     # as mm + add_: their bias adds (48 + 160) are FLOPs, not MACs
     5224, 2844 - 48 - 160),  # 2,636
    ("bf_self_fast_path", nn.MultiheadAttention(E, H, batch_first=True), (x_nle, x_nle, x_nle), {},
     # fused kernel, priced as "self_weights"; the in-projection bias (144) is no MAC (N, L > 1)
     3744, 2052 - 144),  # 1,908
    ("kdim_vdim", nn.MultiheadAttention(E, H, kdim=6, vdim=7), (x_lne, randn(5, 2, 6), randn(5, 2, 7)), {},
     # q 768; k 10*8*(2*6 - 1) = 880 + 80; v 10*8*(2*7 - 1) = 1,040 + 80; out 768 -> 3,616;
     # attention as "cross_weights": 48 + 420 + 168 + 432 + 60 = 1,128
     3616 + 1128,  # 4,744
     # 432 + (480 + 80) + (560 + 80) + 432 = 2,064; attention 240 + 240 + 60
     2064 + 540),  # 2,604
    ("bool_masks", nn.MultiheadAttention(E, H), (x_lne, x_lne, x_lne),
     {"attn_mask": bool_mask(3, 3), "key_padding_mask": bool_mask(2, 3)},
     # "self_weights" + to float: 9 + 6 = 15; merging the masks 2*2*3*3 = 36; the mask add (baddbmm) 36
     3744 + 15 + 36 + 36,  # 3,831
     2052 + 36),  # the baddbmm input add is a MAC: 2,088
    ("bias_kv_zero_attn", nn.MultiheadAttention(E, H, add_bias_kv=True, add_zero_attn=True),
     (x_lne, x_lne, x_lne), {},
     # S' = 3 + 1 + 1 = 5: projections 3,072 (the extra keys are not projected); scaling 48;
     # scores 60 * 7 = 420; softmax 12 * 14 = 168; attn x V 48 * 9 = 432; mean 60
     3072 + 48 + 420 + 168 + 432 + 60,  # 4,200
     1728 + 240 + 240 + 60),  # 2,268
    ("unbatched_no_bias_no_weights", nn.MultiheadAttention(E, H, bias=False), (x_le, x_le, x_le),
     {"need_weights": False},
     # in-proj 3 rows * 24 * 15 = 1,080; out 3*8*15 = 360; SDPA B = 2, L = S = 3:
     # scores 18 * 7 = 126, scaling 18, softmax 6 * 8 = 48, attn x V 24 * 5 = 120
     1080 + 360 + 126 + 18 + 48 + 120,  # 1,752
     576 + 192 + 72 + 72),  # 912
    ("causal_no_weights", nn.MultiheadAttention(E, H), (x_lne, x_lne, x_lne),
     {"attn_mask": nn.Transformer.generate_square_subsequent_mask(3), "is_causal": True, "need_weights": False},
     # "self_no_weights" + the mask add inside SDPA, 36 (PyTorch passes is_causal=True instead of the mask)
     3696 + 36, 2016),
]


@pytest.mark.parametrize("case_id, mha, inputs, kwargs, flops, macs",
                         [pytest.param(*case, id=case[0]) for case in HAND_CASES])
def test_hand_computed(case_id: str, mha: nn.Module, inputs: tuple, kwargs: dict, flops: int, macs: int) -> None:
    mha.eval()
    assert fx_cost(mha, inputs, **kwargs) == (flops, macs), case_id
    assert aten_cost(mha, inputs, **kwargs)[0] == (flops, macs), case_id


def test_fast_path_is_priced_by_its_aten_rule() -> None:
    mha = nn.MultiheadAttention(E, H, batch_first=True).eval()
    cost, ops = aten_cost(mha, (x_nle, x_nle, x_nle))
    assert FAST_PATH in ops and "aten.bmm" not in ops
    assert cost == (3744, 1908)  # as "bf_self_fast_path"


def test_shape_only_helpers() -> None:
    # the module docstring's worked example: N = 2, L = S = 3, E = 8, H = 2
    assert multihead_attention_cost(2, 3, 3, 8, 2, 8, 8, in_bias=True, out_bias=True) == Cost(3744, 2052)
    assert multihead_attention_cost(2, 3, 3, 8, 2, 8, 8, in_bias=True, out_bias=True,
                                    need_weights=False) == Cost(3696, 2016)
    # 6 rows * 24 * 15 = 2,160 + 144 bias; MACs 1,152 (+ 144 when fused into addmm)
    assert projection_cost(6, 8, 24, bias=True, bias_is_mac=True) == Cost(2304, 1296)
    assert projection_cost(6, 8, 24, bias=True, bias_is_mac=False) == Cost(2304, 1152)
    assert projection_cost(6, 8, 24, bias=False, bias_is_mac=True) == Cost(2160, 1152)
    # 48 + 252 + 36 (mask add, MAC too) + 96 + 240, no mean; MACs 144 + 36 + 144
    assert mha_attention_cost(2, 2, 3, 3, 4, masked=True, need_weights=True, average=False) == Cost(672, 324)
    # 252 + 36 scaling + 36 mask add + 96 + 240; MACs 144 + 144
    assert mha_attention_cost(2, 2, 3, 3, 4, masked=True, need_weights=False, average=True) == Cost(660, 288)


# -- agreement with the aten-level count -------------------------------------------------------------
def make_case(kind: str = "self", batch_first: bool = False, batched: bool = True, n: int = 2, l: int = 3,
              s: int = 5, heads: int = H, kdim: int | None = None, vdim: int | None = None,
              masks: tuple[str, ...] = (), **module_options: Any) -> tuple[nn.MultiheadAttention, tuple, dict]:
    """A layer, its ``(query, key, value)`` and the masks. ``kind``: ``self`` (one tensor three times),
    ``cross`` (key is value, ``s`` long) or ``separate`` (three tensors). ``masks``: ``attn_f2`` /
    ``attn_b2`` / ``attn_f3`` / ``attn_b3`` (float or bool, 2-D or 3-D), ``kpm_f`` / ``kpm_b``, ``causal`` /
    ``causal_b`` (float or bool, with ``is_causal=True``)."""
    mha = nn.MultiheadAttention(E, heads, batch_first=batch_first, kdim=kdim, vdim=vdim, **module_options).eval()
    query = sequence(l, E, n, batch_first, batched)
    if kind == "self":
        key = value = query
        s = l
    elif kind == "cross":
        key = value = sequence(s, kdim or E, n, batch_first, batched)
    else:
        key, value = sequence(s, kdim or E, n, batch_first, batched), sequence(s, vdim or E, n, batch_first, batched)
    kwargs: dict[str, Any] = {}
    for mask in masks:
        if mask.startswith("attn"):
            shape = (l, s) if mask.endswith("2") else (n * heads, l, s)
            kwargs["attn_mask"] = bool_mask(*shape) if "_b" in mask else randn(*shape)
        elif mask.startswith("kpm"):
            shape = (n, s) if batched else (s,)
            kwargs["key_padding_mask"] = bool_mask(*shape) if mask.endswith("b") else randn(*shape)
        else:  # causal (float -inf above the diagonal) or causal_b (bool)
            causal = nn.Transformer.generate_square_subsequent_mask(l)
            kwargs["attn_mask"] = causal.isinf() if mask.endswith("_b") else causal
            kwargs["is_causal"] = True
    return mha, (query, key, value), kwargs


AGREEMENT_CASES = {
    "self": {},
    "cross": {"kind": "cross"},
    "separate_key_value": {"kind": "separate"},
    "bf_self_fast_path": {"batch_first": True},
    "bf_self_batch_1": {"batch_first": True, "n": 1},
    "bf_self_odd_heads": {"batch_first": True, "heads": 1},
    "bf_cross": {"batch_first": True, "kind": "cross"},
    "bf_separate_batch_1": {"batch_first": True, "kind": "separate", "n": 1},
    "unbatched_self": {"batched": False},
    "unbatched_cross": {"batched": False, "kind": "cross"},
    "unbatched_bf": {"batched": False, "batch_first": True, "kind": "cross"},
    "kdim_vdim": {"kind": "separate", "kdim": 6, "vdim": 7},
    "kdim_vdim_bf": {"kind": "separate", "kdim": 6, "vdim": 7, "batch_first": True},
    "no_bias": {"bias": False},
    "bias_kv": {"add_bias_kv": True, "kind": "cross"},
    "zero_attn": {"add_zero_attn": True},
    "bias_kv_zero_attn_masks": {"add_bias_kv": True, "add_zero_attn": True, "masks": ("attn_f2", "kpm_f")},
    "bias_kv_bf_bool_masks": {"add_bias_kv": True, "batch_first": True, "masks": ("attn_b3", "kpm_b")},
    "float_mask_2d": {"kind": "cross", "masks": ("attn_f2",)},
    "float_mask_3d": {"kind": "cross", "masks": ("attn_f3",)},
    "bool_mask_2d": {"kind": "cross", "masks": ("attn_b2",)},
    "bool_mask_3d": {"kind": "cross", "masks": ("attn_b3",)},
    "float_padding_mask": {"kind": "cross", "masks": ("kpm_f",)},
    "bool_padding_mask": {"kind": "cross", "masks": ("kpm_b",)},
    "bool_masks_both": {"kind": "cross", "masks": ("attn_b2", "kpm_b")},
    "float_masks_both_3d": {"masks": ("attn_f3", "kpm_f")},
    "bf_fast_path_bool_mask_2d": {"batch_first": True, "masks": ("attn_b2",)},
    "bf_fast_path_bool_mask_3d": {"batch_first": True, "masks": ("attn_b3",)},
    "bf_fast_path_padding_mask": {"batch_first": True, "masks": ("kpm_b",)},
    "bf_fast_path_both_masks": {"batch_first": True, "masks": ("attn_b2", "kpm_b")},
    "bf_float_mask": {"batch_first": True, "masks": ("attn_f2",)},
    "unbatched_masks": {"batched": False, "kind": "cross", "masks": ("attn_b2", "kpm_b")},
    "causal": {"masks": ("causal",)},
    "causal_padding_mask": {"masks": ("causal", "kpm_b")},
    "bf_causal": {"batch_first": True, "masks": ("causal",)},
    "bool_causal": {"masks": ("causal_b",)},
    "bf_bool_causal": {"batch_first": True, "masks": ("causal_b",)},
}


OPTIONS = {
    "weights": {"need_weights": True},
    "no_weights": {"need_weights": False},
    "per_head": {"need_weights": True, "average_attn_weights": False},
}
PER_HEAD_CASES = ("self", "cross", "bf_self_fast_path", "unbatched_cross", "bias_kv_zero_attn_masks",
                  "bf_fast_path_both_masks", "bool_masks_both", "causal")
AGREEMENT_PARAMS = [
    pytest.param(case_id, option, id=f"{case_id}-{option}")
    for case_id in AGREEMENT_CASES
    for option in ("weights", "no_weights", "per_head")
    if option != "per_head" or case_id in PER_HEAD_CASES
]


@pytest.mark.parametrize("case_id, option", AGREEMENT_PARAMS)
def test_module_rule_equals_aten_count(case_id: str, option: str) -> None:
    mha, inputs, kwargs = make_case(**AGREEMENT_CASES[case_id])
    kwargs.update(OPTIONS[option])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # mixed mask types are deprecated but supported
        expected, _ = aten_cost(mha, inputs, **kwargs)
        assert fx_cost(mha, inputs, **kwargs) == expected


FAST_PATH_CASES = [case_id for case_id in AGREEMENT_CASES if case_id.startswith(("bf_fast_path", "bf_self"))]


@pytest.mark.parametrize("case_id", FAST_PATH_CASES)
@pytest.mark.parametrize("need_weights", [True, False], ids=["weights", "no_weights"])
def test_fast_path_costs_as_the_python_path(case_id: str, need_weights: bool) -> None:
    """The fused kernel and the Python path price the same: the count does not depend on grad mode."""
    mha, inputs, kwargs = make_case(**AGREEMENT_CASES[case_id])
    fast, fast_ops = aten_cost(mha, inputs, **kwargs, need_weights=need_weights)
    enabled = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        slow, slow_ops = aten_cost(mha, inputs, **kwargs, need_weights=need_weights)
    finally:
        torch.backends.mha.set_fastpath_enabled(enabled)
    assert (FAST_PATH in fast_ops) == (case_id != "bf_self_odd_heads")
    assert FAST_PATH not in slow_ops
    assert fast == slow


def test_known_difference_merged_masks_without_bias() -> None:
    """Documented difference: a fast-path-eligible call of a ``bias=False`` layer with both masks merges
    them in Python (``merge_masks``), finds no ``in_proj_bias``, and runs the Python path, which merges
    them again. The aten count sees that add twice; the module rule counts it once."""
    mha, inputs, kwargs = make_case(batch_first=True, bias=False, masks=("attn_b2", "kpm_b"))
    aten, _ = aten_cost(mha, inputs, **kwargs)
    fx = fx_cost(mha, inputs, **kwargs)
    assert aten == (fx[0] + 2 * H * 3 * 3, fx[1])  # the second merge: N H L S = 2*2*3*3 = 36 adds
