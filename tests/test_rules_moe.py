"""Hand-computed costs of what mixtures of experts run: grouped products (``torch._grouped_mm``,
transformers' ``grouped_mm_fallback`` where it cannot run), ``histc`` (tokens per expert) and
``bincount``.

A grouped product of ``a (M, K)`` by ``b (G, K, N)``: ``M * N`` dot products of length ``K``,
``M * N * (2K - 1)`` FLOPs and ``M * N * K`` MACs; its weight gradient ``a (K, M) @ b (M, N)`` with the
``M`` rows split in ``G`` groups: ``K * N * (2M - G)`` FLOPs, ``K * N * M`` MACs.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from features import needs_transformers_5, works
from models import Op
from torch_flops import DEFAULT_REGISTRY, Cost, OpCall, TorchFLOPsByFX, count_aten
from torch_flops.rules.linear import grouped_mm_cost
from torch_flops.rules.reduction import histc_cost

OFFS = torch.tensor([4, 7, 12], dtype=torch.int32)  # 3 groups of 4, 3 and 5 rows
GROUPED_MM = hasattr(torch, "_grouped_mm") and works(lambda: torch._grouped_mm(torch.ones(12, 8), torch.ones(3, 8, 4), offs=OFFS))
needs_grouped_mm = pytest.mark.skipif(not GROUPED_MM, reason="this torch has no torch._grouped_mm on CPU")


def test_grouped_mm_cost() -> None:
    assert grouped_mm_cost((12, 8), (3, 8, 4), 3, 12 * 4) == Cost(12 * 4 * (2 * 8 - 1), 12 * 4 * 8)  # 720, 384
    assert grouped_mm_cost((3, 5, 8), (3, 8, 4), 3, 3 * 5 * 4) == Cost(60 * 15, 60 * 8)  # as bmm: 900, 480
    # weight gradient: a (8, 12) @ b (12, 4), the 12 rows in 3 groups: 8 * 4 * (2 * 12 - 3) = 672 adds and products
    assert grouped_mm_cost((8, 12), (12, 4), 3, 3 * 8 * 4) == Cost(8 * 4 * (24 - 3), 8 * 4 * 12)
    assert grouped_mm_cost((0, 8), (3, 8, 4), 3, 0) == Cost(0, 0)


@needs_grouped_mm
@pytest.mark.parametrize("a, b, offs, flops, macs", [
    (torch.randn(12, 8), torch.randn(3, 8, 4), OFFS, 720, 384),
    (torch.randn(3, 5, 8), torch.randn(3, 8, 4), None, 900, 480),
    (torch.randn(8, 12), torch.randn(12, 4), OFFS, 672, 384),
], ids=["2d_by_3d", "3d_by_3d", "2d_by_2d"])
def test_grouped_mm_at_the_aten_level(a: torch.Tensor, b: torch.Tensor, offs: Any, flops: int, macs: int) -> None:
    _, tally = count_aten(lambda: torch._grouped_mm(a, b, offs=offs))
    assert (tally.cost.flops, tally.cost.macs, dict(tally.unsupported)) == (flops, macs, {})


def test_transformers_grouped_mm_stand_in_and_its_backward() -> None:
    """Priced by name, without transformers loaded: forward ``(12, 8) x (3, 8, 4)``, 720 FLOPs; backward
    ``grad_input (12, 8) = grad_output (12, 4) @ w.T``: 96 dot products of 4, ``96 * 7 = 672``; and
    ``grad_weight (3, 8, 4)``: ``8 * 4 * (2 * 12 - 3) = 672``."""
    x, w = torch.randn(12, 8), torch.randn(3, 8, 4)
    forward = DEFAULT_REGISTRY.aten.get("transformers::grouped_mm_fallback")
    backward = DEFAULT_REGISTRY.aten.get("transformers::grouped_mm_fallback_backward")
    assert forward.fn(OpCall((x, w, OFFS), {}, torch.empty(12, 4))) == Cost(720, 384)
    grads = (torch.empty(12, 8), torch.empty(3, 8, 4))
    assert backward.fn(OpCall((x, w, OFFS, torch.randn(12, 4)), {}, grads)) == Cost(96 * 7 + 672, 96 * 4 + 384)


@pytest.mark.parametrize("fn, flops", [
    (lambda x: torch.histc(x, bins=4, min=0, max=3), 3 * 10),  # a subtract, a multiply, an add per value
    (lambda x: torch.histc(x, bins=4), 3 * 10 + 2 * 9),  # and the data's own range: min and max
    (lambda x: x.long().clamp(min=0).bincount(), 10 + (10 - 1)),  # an add per value, and the largest value
], ids=["histc", "histc_own_range", "bincount"])
def test_counting_values_into_bins(fn: Any, flops: int) -> None:
    x = torch.randn(10)
    counter = TorchFLOPsByFX(Op(fn))
    counter.propagate(x)
    by_target = {r.target: r.flops for r in counter.records}
    made = by_target.get("torch.histc", by_target.get("bincount"))
    assert made == flops


def test_histc_of_nothing_costs_nothing() -> None:
    assert histc_cost(0, own_range=True) == Cost(0, 0)


@needs_transformers_5
@needs_grouped_mm
def test_mixtral_experts_are_counted_by_the_tokens_routed_to_them() -> None:
    """2 x 16 tokens, 2 of 4 experts each: 64 routed rows a layer. ``gate_up`` ``(64, 64) x (4, 64, 256)``:
    64 * 256 * 127 = 2,080,768; ``down`` ``(64, 128) x (4, 128, 64)``: 64 * 64 * 255 = 1,044,480; the
    tokens per expert, ``histc`` of the 64 expert ids over a given range: 192. Backward of ``gate_up``:
    the input's gradient 64 * 64 * (2*256 - 1) and the weights' 64 * 256 * (2*64 - 4)."""
    transformers = pytest.importorskip("transformers")
    config = transformers.MixtralConfig(
        vocab_size=1000, hidden_size=64, num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2,
        intermediate_size=128, num_local_experts=4, num_experts_per_tok=2)
    torch.manual_seed(0)
    counter = TorchFLOPsByFX(transformers.MixtralModel(config))
    counter.propagate(input_ids=torch.randint(0, 1000, (2, 16)), backward=True)
    assert not counter.unsupported
    experts = [(r.target, r.flops, r.backward_flops) for r in counter.records
               if r.module_path == "layers.0.mlp.experts" and r.target in ("torch._grouped_mm", "torch.histc")]
    gate_up_backward = 64 * 64 * (2 * 256 - 1) + 64 * 256 * (2 * 64 - 4)
    assert experts[0][:2] == ("torch.histc", 192)
    assert experts[1] == ("torch._grouped_mm", 64 * 256 * 127, gate_up_backward)
    assert experts[2][:2] == ("torch._grouped_mm", 64 * 64 * 255)
