"""The aten-level fallback, custom rules, and agreement with torch.utils.flop_counter."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from models import Branchy, HasBranchy, Op, SimpleModel, SmallConvNet, TwoInputs
from torch_flops import (
    DEFAULT_REGISTRY,
    Cost,
    CostRegistry,
    CostRuleError,
    DuplicateRuleError,
    OpCall,
    Rule,
    Status,
    TorchFLOPsByFX,
    count_aten,
    module_rule,
)

torch.manual_seed(0)
aten = torch.ops.aten


class Block(nn.Module):
    """One op of most families; used both traced (FX rules) and as a leaf (aten fallback)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.pool = nn.MaxPool2d(2)
        self.avg = nn.AdaptiveAvgPool2d(2)
        self.norm = nn.LayerNorm(16)
        self.fc = nn.Linear(16, 8)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(torch.relu(self.bn(self.conv(x))))  # (1, 4, 4, 4)
        x = self.avg(x).flatten(1)  # (1, 16)
        x = self.act(self.fc(self.norm(x)))  # (1, 8)
        q = x.view(1, 2, 2, 2)
        x = F.scaled_dot_product_attention(q, q, q).flatten(1) + x
        return torch.softmax(x * 2.0, dim=-1).sum(-1)


class Outer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.block = Block()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x) - 1


def counted(model: nn.Module, *inputs: torch.Tensor, **kwargs) -> TorchFLOPsByFX:
    counter = TorchFLOPsByFX(model, **kwargs)
    counter.propagate(*inputs)
    return counter


# -- the fallback prices untraced code exactly like the rules ------------------------------------------
def test_leaf_module_is_counted_by_the_fallback_like_the_traced_one() -> None:
    x = torch.randn(1, 3, 8, 8)
    traced = counted(Outer(), x)
    leaf = counted(Outer(), x, leaf_types=(Block,))
    block = [r for r in leaf.records if r.leaf_node == "block"]
    assert block and not any(r.op == "call_module" for r in leaf.records)
    assert not traced.unsupported and not leaf.unsupported
    assert (leaf.total_flops, leaf.total_macs) == (traced.total_flops, traced.total_macs)
    assert sum(r.flops for r in block) == traced.total_flops - 1  # everything but the final `- 1`


@pytest.mark.parametrize("model, inputs, leaves", [
    (SimpleModel(add_one=True), (torch.randn(2, 5),), ()),
    (SmallConvNet(), (torch.randn(2, 3, 8, 8),), ()),
    (HasBranchy(), (torch.randn(3, 4),), (Branchy,)),
    (TwoInputs(), (torch.randn(2, 3), torch.randn(2, 3)), ()),
    (Outer(), (torch.randn(1, 3, 8, 8),), ()),
], ids=["simple_add_one", "small_convnet", "branchy_leaf", "two_inputs", "block"])
def test_whole_model_aten_count_equals_fx_count(model: nn.Module, inputs: tuple, leaves: tuple) -> None:
    counter = counted(model, *inputs, leaf_types=leaves)
    _, tally = count_aten(model.eval(), *inputs)
    assert not tally.unsupported
    assert (tally.cost.flops, tally.cost.macs) == (counter.total_flops, counter.total_macs)


def conv_only(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return F.conv2d(x, w, padding=1)


def test_aten_convolution_is_priced_like_conv2d() -> None:
    x, w = torch.randn(1, 3, 8, 8), torch.randn(4, 3, 3, 3)
    _, tally = count_aten(conv_only, x, w)
    # 4*8*8 = 256 outputs * (2 * 3*9 - 1) = 13,568; MACs 256 * 27 = 6,912
    assert tally.by_op == {"aten.convolution": Cost(13_568, 6_912)}
    assert tally.calls == {"aten.convolution": 1}


def helper_without_arithmetic(x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Like timm's ``maybe_add_mask``: arithmetic only when a mask is given."""
    return x if mask is None else x + mask


torch.fx.wrap("helper_without_arithmetic")


def in_place_helper(x: torch.Tensor) -> torch.Tensor:
    return x.mul_(2).add_(1)


torch.fx.wrap("in_place_helper")


def test_helper_without_arithmetic_is_zero_counted_by_the_fallback() -> None:
    counter = counted(Op(lambda x: helper_without_arithmetic(x) * 3), torch.randn(2, 3))
    (helper,) = [r for r in counter.records if r.target.endswith("helper_without_arithmetic")]
    assert helper.status is Status.FALLBACK and (helper.flops, helper.macs) == (0, 0)
    assert counter.total_flops == 6


def test_fallback_runs_a_node_once() -> None:
    x = torch.ones(2, 2)
    counter = TorchFLOPsByFX(Op(lambda x: in_place_helper(x.clone())))
    out = counter.propagate(x)
    torch.testing.assert_close(out, torch.full((2, 2), 3.0))  # (1 * 2) + 1, not applied twice
    (helper,) = [r for r in counter.records if r.target.endswith("in_place_helper")]
    assert helper.status is Status.FALLBACK and helper.flops == 4 + 4


# -- custom rules ------------------------------------------------------------------------------------
class Custom(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.linalg.matrix_exp(x) @ x


class HasCustom(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.custom = Custom()
        self.fc = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.custom(x))


def fixed(flops: int, macs: int = 0):
    def rule(call: OpCall) -> Cost:
        return Cost(flops, macs)

    return rule


def test_extra_rules_beat_built_in_rules_and_the_fallback() -> None:
    x = torch.randn(4, 4)
    plain = counted(HasCustom(), x, leaf_types=(Custom,))
    exponential, matmul = [r for r in plain.records if r.leaf_node == "custom"]
    assert exponential.status is Status.UNSUPPORTED and exponential.unsupported_ops == ("aten.linalg_matrix_exp",)
    assert matmul.status is Status.RULE and matmul.flops == custom_matmul_flops()  # only the exponential is left out

    counter = counted(HasCustom(), x, leaf_types=(Custom,), extra_rules={Custom: fixed(1000), nn.Linear: fixed(7, 3)})
    statuses = {r.target: (r.status, r.flops, r.macs) for r in counter.records}
    assert statuses["custom"] == (Status.RULE, 1000, 0)
    assert statuses["fc"] == (Status.RULE, 7, 3)
    assert (counter.total_flops, counter.total_macs) == (1007, 3)
    # the overlay is per counter: the built-in registry is unchanged
    assert DEFAULT_REGISTRY.module_rule(nn.Linear(1, 1)).name.endswith("linear_module")
    assert counted(HasCustom(), x).total_flops == plain.total_flops  # traced or kept whole: the same calls


def custom_matmul_flops() -> int:
    return 16 * 7  # the traced Custom: matrix_exp (no rule) then (4, 4) @ (4, 4) = 16 * (2*4 - 1)


def test_extra_rules_for_functions_methods_and_aten_ops() -> None:
    x = torch.randn(4, 4)
    model = Op(lambda x: torch.sum(torch.linalg.matrix_exp(x).exp()))
    counter = counted(model, x, extra_rules={aten.linalg_matrix_exp: fixed(100), "exp": fixed(5), torch.sum: fixed(1)})
    by_target = {r.target: (r.status, r.flops) for r in counter.records if r.op.startswith("call")}
    assert by_target == {
        "torch.linalg.matrix_exp": (Status.FALLBACK, 100),  # no rule of its own: the aten overlay prices it
        "exp": (Status.RULE, 5),
        "torch.sum": (Status.RULE, 1),
    }


def test_duplicate_registration_is_rejected_unless_replacing() -> None:
    registry = DEFAULT_REGISTRY.overlay({})
    with pytest.raises(DuplicateRuleError, match="Linear already has the rule"):
        registry.add_module_rule([nn.Linear], Rule(fixed(1)))
    with pytest.raises(DuplicateRuleError):
        module_rule(nn.Conv2d, registry=registry)(fixed(1))
    registry.add_module_rule([nn.Linear], Rule(fixed(1)), replace=True)
    assert counted(nn.Sequential(nn.Linear(2, 2)), torch.randn(1, 2), registry=registry).total_flops == 1
    assert counted(nn.Sequential(nn.Linear(2, 2)), torch.randn(1, 2)).total_flops == 2 * 3 + 2


def test_registry_rejects_keys_of_the_wrong_kind() -> None:
    registry = CostRegistry()
    with pytest.raises(TypeError, match="nn.Module subclasses"):
        registry.add_module_rule([int], Rule(fixed(1)))
    with pytest.raises(TypeError, match="keyed by torch.ops operators or .namespace::name."):
        registry.add_aten_rule([torch.add], Rule(fixed(1)))
    with pytest.raises(TypeError, match="keyed by torch.ops operators or .namespace::name."):
        registry.add_aten_rule(["nms"], Rule(fixed(1)))
    registry.add_rule("torchvision::nms", fixed(1))  # a qualified name: an operator, not a method
    assert "torchvision::nms" in registry.aten and "torchvision::nms" not in registry.methods
    with pytest.raises(TypeError, match="must be callable"):
        registry.add_rule(torch.add, 3)


def test_a_failing_aten_rule_names_the_rule_the_aten_op_and_the_node() -> None:
    def broken(call: OpCall) -> Cost:
        raise ValueError("boom")

    with pytest.raises(CostRuleError, match=r"aten rule .*broken failed on aten\.linalg_matrix_exp: ValueError: boom \(node 'linalg_matrix_exp'"):
        counted(Op(lambda x: torch.linalg.matrix_exp(x)), torch.randn(3, 3), extra_rules={aten.linalg_matrix_exp: broken})
    with pytest.raises(CostRuleError, match=r"returned 1\.5 for aten\.linalg_matrix_exp"):
        counted(Op(lambda x: torch.linalg.matrix_exp(x)), torch.randn(3, 3), extra_rules={aten.linalg_matrix_exp: lambda c: 1.5})


# -- agreement with torch.utils.flop_counter ---------------------------------------------------------
def flop_counter_total(fn, *inputs: torch.Tensor) -> int:
    with torch.no_grad(), FlopCounterMode(display=False) as mode:
        fn(*inputs)
    return mode.get_total_flops()


dims = st.integers(1, 6)


@settings(max_examples=40, deadline=None)
@given(batch=st.integers(1, 3), n=dims, k=dims, m=dims, kind=st.sampled_from(["linear", "matmul", "bmm", "mm"]))
def test_flop_counter_mode_counts_out_numel_more_on_products(batch: int, n: int, k: int, m: int, kind: str) -> None:
    """FlopCounterMode prices a dot product of length k as 2k; we price it k multiplies + k - 1 adds."""
    if kind == "linear":
        fn, inputs = (lambda x, w: F.linear(x, w)), (torch.randn(batch, n, k), torch.randn(m, k))
        out_numel = batch * n * m
    elif kind == "bmm":
        fn, inputs = (lambda a, b: torch.bmm(a, b)), (torch.randn(batch, n, k), torch.randn(batch, k, m))
        out_numel = batch * n * m
    elif kind == "matmul":
        fn, inputs = (lambda a, b: a @ b), (torch.randn(batch, n, k), torch.randn(k, m))
        out_numel = batch * n * m
    else:
        fn, inputs = (lambda a, b: torch.mm(a, b)), (torch.randn(n, k), torch.randn(k, m))
        out_numel = n * m
    ours = counted(Op(fn), *inputs).total_flops
    assert flop_counter_total(fn, *inputs) - out_numel == ours


@settings(max_examples=30, deadline=None)
@given(
    batch=st.integers(1, 2), groups=st.integers(1, 3), cin_per_group=st.integers(1, 3), cout_per_group=st.integers(1, 3),
    kernel=st.integers(1, 3), stride=st.integers(1, 2), padding=st.integers(0, 1), dilation=st.integers(1, 2),
    size=st.integers(5, 9), transposed=st.booleans(),
)
def test_flop_counter_mode_relation_on_convolutions(
    batch: int, groups: int, cin_per_group: int, cout_per_group: int, kernel: int, stride: int, padding: int,
    dilation: int, size: int, transposed: bool,
) -> None:
    """Convolutions without bias: FlopCounterMode's count minus out_numel equals ours. Transposed
    convolutions are priced from the input side by both, so they agree exactly."""
    cin, cout = groups * cin_per_group, groups * cout_per_group
    cls = nn.ConvTranspose2d if transposed else nn.Conv2d
    conv = cls(cin, cout, kernel, stride=stride, padding=padding, dilation=dilation, groups=groups, bias=False)
    x = torch.randn(batch, cin, size, size)
    ours = counted(nn.Sequential(conv), x).total_flops
    out_numel = conv(x).numel()
    assert flop_counter_total(conv, x) - (0 if transposed else out_numel) == ours
