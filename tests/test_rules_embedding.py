"""Hand-computed costs of embeddings (``torch_flops/rules/embedding.py``).

A lookup is known zero. A bag of ``s`` counted entries (padding skipped) of dimension ``D`` costs
``(s - 1) * D`` (sum, max), ``s * D`` FLOPs and MACs (mean), ``(2s - 1) * D`` FLOPs and ``s * D`` MACs
(sum with per-sample weights); an empty bag costs 0.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from features import needs_jagged_embedding_bag
from models import Op
from test_rules import SIGNATURE, check, op_records, params, randn, run
from torch_flops import Cost, Status, count_aten
from torch_flops.rules.embedding import bag_entries, embedding_bag_cost

aten = torch.ops.aten
D = 4  # embedding dimension of every table below
WEIGHT = torch.randn(10, D)


def tensor(*values: int) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.long)


# indices [1, 2, 4, 5, 4, 3] with offsets [0, 2, 2]: bags [1, 2], [], [4, 5, 4, 3] (sizes 2, 0, 4)
INDICES, OFFSETS = tensor(1, 2, 4, 5, 4, 3), tensor(0, 2, 2)
PER_SAMPLE = torch.rand(6)


class Bag(nn.Module):
    """``nn.EmbeddingBag`` called with offsets and per-sample weights (an ``nn.Sequential`` passes one input)."""

    def __init__(self, bag: nn.EmbeddingBag) -> None:
        super().__init__()
        self.bag = bag

    def forward(self, x: torch.Tensor, offsets: torch.Tensor | None = None, weights: torch.Tensor | None = None) -> Any:
        return self.bag(x, offsets, per_sample_weights=weights)


def bag(mode: str, **kwargs: Any) -> Bag:
    return Bag(nn.EmbeddingBag(10, D, mode=mode, **kwargs))


# -- shape-only helpers ------------------------------------------------------------------------------
def test_embedding_bag_cost() -> None:
    # T = 6 entries in B = 2 non-empty bags of D = 4
    assert embedding_bag_cost(6, 2, 4, "sum") == Cost(16, 0)  # (6 - 2) * 4 adds
    assert embedding_bag_cost(6, 2, 4, "max") == Cost(16, 0)  # (6 - 2) * 4 comparisons
    assert embedding_bag_cost(6, 2, 4, "mean") == Cost(24, 24)  # 16 adds + 2 * 4 divides
    assert embedding_bag_cost(6, 2, 4, "sum", weighted=True) == Cost(40, 24)  # 16 + 6 * 4 multiplies
    assert embedding_bag_cost(0, 0, 4, "mean") == Cost(0, 0)  # only empty bags
    with pytest.raises(ValueError):
        embedding_bag_cost(6, 2, 4, "median")


@pytest.mark.parametrize(
    "args, expected",
    [
        ((INDICES, OFFSETS), (6, 2)),  # sizes 2, 0, 4
        ((INDICES, OFFSETS, False, 4), (4, 2)),  # padding 4 skipped: sizes 2, 0, 2
        ((INDICES, tensor(0, 2, 2, 5), True), (5, 2)),  # last offset ends the input: sizes 2, 0, 3
        ((INDICES, tensor(0, 6), True), (6, 1)),  # one bag of all 6
        ((tensor(4, 4), tensor(0, 1)), (2, 2)),  # sizes 1, 1
        ((tensor(4, 4), tensor(0, 1), False, 4), (0, 0)),  # both entries are padding
        ((tensor(1, 2, 3, 4, 4, 4).view(2, 3), None, False, 4), (3, 1)),  # rows [1, 2, 3], [4, 4, 4] -> 3, 0
        ((tensor(1, 2, 3, 4, 5, 6).view(3, 2), None), (6, 3)),  # 3 bags of 2
    ],
)
def test_bag_entries(args: tuple, expected: tuple[int, int]) -> None:
    assert bag_entries(*args) == expected


@needs_jagged_embedding_bag
def test_nested_input_is_one_bag_per_row() -> None:
    nested = torch.nested.nested_tensor([tensor(1, 2), tensor(3, 4, 5)], layout=torch.jagged)
    assert bag_entries(nested, None) == (5, 2)  # rows of 2 and 3
    _, tally = count_aten(lambda x: F.embedding_bag(x, WEIGHT, mode="sum"), nested)
    # (5 - 2) * 4; (the nested tensor's own `aten.dim` query has no rule: not an embedding matter)
    assert tally.by_op["aten._embedding_bag_forward_only"] == Cost(12, 0)


# -- FX level: modules and functionals ---------------------------------------------------------------
EMBEDDING_BAG_CASES = [
    # 1-D input with offsets: bags of 2, 0, 4 entries -> T = 6, B = 2
    ("sum_offsets", bag("sum"), (INDICES, OFFSETS), 16, 0),  # (6 - 2) * 4 adds
    ("mean_offsets", bag("mean"), (INDICES, OFFSETS), 24, 24),  # 16 adds + 2 * 4 divides; MACs as a mean
    ("max_offsets", bag("max"), (INDICES, OFFSETS), 16, 0),  # (6 - 2) * 4 comparisons
    ("sum_per_sample_weights", bag("sum"), (INDICES, OFFSETS, PER_SAMPLE),
     40, 24),  # 16 adds + 6 * 4 multiplies; MACs 6 * 4
    # 2-D input: 3 bags of 5 -> T = 15, B = 3
    ("sum_2d", bag("sum"), (torch.randint(0, 10, (3, 5)),), 48, 0),  # (15 - 3) * 4
    ("mean_2d", bag("mean"), (torch.randint(0, 10, (3, 5)),), 60, 60),  # 15 * 4
    ("max_2d", bag("max"), (torch.randint(0, 10, (3, 5)),), 48, 0),  # (15 - 3) * 4
    ("sum_2d_per_sample_weights", bag("sum"), (torch.randint(0, 10, (3, 5)), None, torch.rand(3, 5)),
     108, 60),  # 48 + 15 * 4 multiplies; MACs 60
    # include_last_offset: offsets [0, 2, 2, 5] are 3 bags of 2, 0, 3 (index 3 at position 5 unused): T = 5, B = 2
    ("mean_include_last_offset", bag("mean", include_last_offset=True), (INDICES, tensor(0, 2, 2, 5)), 20, 20),  # 5 * 4
    ("sum_include_last_offset", bag("sum", include_last_offset=True), (INDICES, tensor(0, 2, 2, 5)), 12, 0),  # 3 * 4
    # empty bags only: offsets [0, 0, 0] and no indices
    ("mean_all_empty", bag("mean"), (tensor(), tensor(0, 0, 0)), 0, 0),
    # padding_idx=4 skips both 4s: bags [1, 2], [], [5, 3] -> T = 4, B = 2
    ("sum_padding", bag("sum", padding_idx=4), (INDICES, OFFSETS), 8, 0),  # (4 - 2) * 4
    ("mean_padding", bag("mean", padding_idx=4), (INDICES, OFFSETS), 16, 16),  # 4 * 4 (divides by 2, not 4)
    ("max_padding", bag("max", padding_idx=4), (INDICES, OFFSETS), 8, 0),  # (4 - 2) * 4
    ("sum_padding_weights", bag("sum", padding_idx=4), (INDICES, OFFSETS, PER_SAMPLE), 24, 16),  # 8 + 4 * 4
    # padding in a 2-D input: rows [4, 4, 1], [2, 3, 4] keep 1 and 2 entries -> T = 3, B = 2
    ("max_2d_padding", bag("max", padding_idx=4), (tensor(4, 4, 1, 2, 3, 4).view(2, 3),), 4, 0),  # (3 - 2) * 4
    # rows [4, 4], [1, 2] keep 0 and 2 entries: T = 2, B = 1; the all-padding row is an empty bag
    ("mean_2d_all_padding_row", bag("mean", padding_idx=4), (tensor(4, 4, 1, 2).view(2, 2),),
     8, 8),  # (2 - 1) * 4 adds + 1 * 4 divides = 8
    # functional forms, weight as a buffer
    ("f_embedding_bag_mean_default", Op(lambda x, o, weight: F.embedding_bag(x, weight, o), weight=WEIGHT),
     (INDICES, OFFSETS), 24, 24),  # mode="mean" by default: 6 * 4
    ("f_embedding_bag_max_keyword", Op(lambda x, o, weight: F.embedding_bag(x, weight, offsets=o, mode="max"),
                                       weight=WEIGHT), (INDICES, OFFSETS), 16, 0),  # (6 - 2) * 4
    ("f_embedding_bag_positional", Op(lambda x, o, weight: F.embedding_bag(x, weight, o, None, 2, False, "sum"),
                                      weight=WEIGHT), (INDICES, OFFSETS), 16, 0),  # (6 - 2) * 4
    ("f_embedding_bag_weighted", Op(lambda x, o, p, weight: F.embedding_bag(x, weight, o, mode="sum",
                                                                            per_sample_weights=p), weight=WEIGHT),
     (INDICES, OFFSETS, PER_SAMPLE), 40, 24),  # 16 + 24 multiplies
    ("f_embedding_bag_negative_padding", Op(lambda x, o, weight: F.embedding_bag(x, weight, o, mode="sum",
                                                                                 padding_idx=-5), weight=WEIGHT),
     (INDICES, OFFSETS), 12, 0),  # padding -5 = 10 - 5 = index 5: bags [1, 2], [], [4, 4, 3]: (5 - 2) * 4
    ("f_embedding_bag_include_last_offset", Op(lambda x, o, weight: F.embedding_bag(
        x, weight, o, mode="sum", include_last_offset=True), weight=WEIGHT), (INDICES, tensor(0, 6)),
     20, 0),  # one bag of 6: (6 - 1) * 4
    ("f_embedding_bag_2d", Op(lambda x, weight: F.embedding_bag(x, weight, mode="sum"), weight=WEIGHT),
     (torch.randint(0, 10, (3, 5)),), 48, 0),  # (15 - 3) * 4
]


@pytest.mark.parametrize(SIGNATURE, params(EMBEDDING_BAG_CASES))
def test_embedding_bag(case_id: str, model: Any, inputs: tuple, flops: int, macs: int) -> None:
    check(case_id, model, inputs, flops, macs)


@pytest.mark.filterwarnings("ignore:Argument order of nn.functional.embedding_bag")
def test_deprecated_argument_order() -> None:
    def swapped(x: torch.Tensor, offsets: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return F.embedding_bag(weight, x, offsets, mode="sum")  # (weight, input): swapped back by PyTorch

    check("swapped", Op(swapped, weight=WEIGHT), (INDICES, OFFSETS), 16, 0)  # as sum_offsets: (6 - 2) * 4


# -- known zero: the lookup --------------------------------------------------------------------------
@pytest.mark.parametrize(
    "model, target",
    [
        (nn.Embedding(10, D), ""),
        (nn.Embedding(10, D, padding_idx=0), ""),
        (Op(lambda x, weight: F.embedding(x, weight), weight=WEIGHT), "torch.nn.functional.embedding"),
        (Op(lambda x, weight: torch.embedding(weight, x), weight=WEIGHT), "torch.embedding"),
    ],
    ids=["nn_embedding", "nn_embedding_padding", "f_embedding", "torch_embedding"],
)
def test_embedding_lookup_is_known_zero(model: Any, target: str) -> None:
    counter = run(model, (tensor(1, 2, 4, 5),))
    records = [r for r in op_records(counter) if r.op != "get_attr"]
    (record,) = records
    assert record.status is Status.ZERO and (record.flops, record.macs) == (0, 0)
    assert record.target.endswith(target)
    assert (counter.total_flops, counter.total_macs) == (0, 0)


# -- aten level --------------------------------------------------------------------------------------
# _embedding_bag(weight, indices, offsets, scale_grad_by_freq, mode (0 sum, 1 mean, 2 max), sparse,
#                per_sample_weights, include_last_offset, padding_idx)
ATEN_CASES = [
    ("forward_only_sum", aten._embedding_bag_forward_only, (WEIGHT, INDICES, OFFSETS, False, 0), Cost(16, 0)),
    ("forward_only_mean", aten._embedding_bag_forward_only, (WEIGHT, INDICES, OFFSETS, False, 1), Cost(24, 24)),
    ("forward_only_max", aten._embedding_bag_forward_only, (WEIGHT, INDICES, OFFSETS, False, 2), Cost(16, 0)),
    ("embedding_bag_weighted", aten._embedding_bag, (WEIGHT, INDICES, OFFSETS, False, 0, False, PER_SAMPLE),
     Cost(40, 24)),  # 16 adds + 24 multiplies
    ("include_last_offset", aten._embedding_bag_forward_only,
     (WEIGHT, INDICES, tensor(0, 2, 2, 5), False, 1, False, None, True), Cost(20, 20)),  # T = 5: 5 * 4
    ("padding_idx", aten._embedding_bag_forward_only,
     (WEIGHT, INDICES, OFFSETS, False, 1, False, None, False, 4), Cost(16, 16)),  # T = 4: 4 * 4
    ("padding_idx_negative_is_none", aten._embedding_bag,
     (WEIGHT, INDICES, OFFSETS, False, 0, False, None, False, -1), Cost(16, 0)),  # no padding: (6 - 2) * 4
]


@pytest.mark.parametrize("case_id, op, args, cost", [pytest.param(*c, id=c[0]) for c in ATEN_CASES])
def test_aten_embedding_bag(case_id: str, op: Any, args: tuple, cost: Cost) -> None:
    _, tally = count_aten(op, *args)
    assert not tally.unsupported, dict(tally.unsupported)
    assert tally.cost == cost, case_id
    assert f"aten.{op.__name__}" in tally.calls


def test_aten_embedding_is_known_zero() -> None:
    _, tally = count_aten(lambda x: F.embedding(x, WEIGHT), INDICES)
    assert tally.calls["aten.embedding"] == 1 and tally.cost == Cost(0, 0) and not tally.unsupported


# -- agreement: the FX-level total equals the aten-level count of the same model ---------------------
AGREEMENT_CASES = [
    (nn.Sequential(nn.Embedding(10, D)), (INDICES,)),
    (nn.Sequential(nn.EmbeddingBag(10, D)), (torch.randint(0, 10, (3, 5)),)),
    (nn.Sequential(nn.EmbeddingBag(10, D, mode="max", padding_idx=2)), (torch.randint(0, 10, (6, 5)),)),
    (bag("sum"), (INDICES, OFFSETS)),
    (bag("mean"), (INDICES, OFFSETS)),
    (bag("max"), (INDICES, OFFSETS)),
    (bag("sum"), (INDICES, OFFSETS, PER_SAMPLE)),
    (bag("mean", include_last_offset=True), (INDICES, tensor(0, 2, 2, 5))),
    (bag("mean", padding_idx=4), (INDICES, OFFSETS)),
    (bag("sum", padding_idx=-1), (tensor(9, 9, 1, 9, 3), tensor(0, 1, 3))),
    (bag("mean"), (tensor(), tensor(0, 0))),
    (Op(lambda x, o, weight: F.embedding_bag(x, weight, o, mode="sum", padding_idx=-5), weight=WEIGHT),
     (INDICES, OFFSETS)),
    (Op(lambda x, weight: F.embedding_bag(x, weight, mode="mean", padding_idx=3), weight=WEIGHT),
     (torch.randint(0, 10, (4, 6)),)),
]


@pytest.mark.parametrize("model, inputs", AGREEMENT_CASES, ids=[f"case{i}" for i in range(len(AGREEMENT_CASES))])
def test_fx_total_agrees_with_aten_count(model: nn.Module, inputs: tuple) -> None:
    counter = run(model, inputs)
    assert not counter.unsupported
    _, tally = count_aten(model, *inputs)
    assert not tally.unsupported, dict(tally.unsupported)
    assert (counter.total_flops, counter.total_macs) == (tally.cost.flops, tally.cost.macs)
