"""Parity: one op written different ways (module, ``F.*``, ``torch.*``, ``Tensor`` method, operator;
positional and keyword arguments) costs the same.

Each group lists its variants with one hand-computed ``(FLOPs, MACs)``. Variants share weights and get
identical inputs, so the test also checks that they really compute the same thing (equal outputs).
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from models import Op
from torch_flops import DEFAULT_REGISTRY, Status, TorchFLOPsByFX

torch.manual_seed(0)


# -- helpers -----------------------------------------------------------------------------------------
class First(nn.Module):
    """``module(x)[0]``: the values of a pooling layer built with ``return_indices=True``."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.inner = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x)[0]


def as_module(model_or_callable: nn.Module | Callable[..., Any]) -> nn.Module:
    """FX traces *into* the root, so a bare ``torch.nn`` layer goes in a ``Sequential`` (one
    ``call_module`` node); a callable is wrapped in :class:`Op`."""
    if isinstance(model_or_callable, nn.Module):
        if type(model_or_callable).__module__.startswith("torch.nn"):
            return nn.Sequential(model_or_callable)
        return model_or_callable
    return Op(model_or_callable)


def loaded(module: nn.Module, **tensors: torch.Tensor) -> nn.Module:
    """``module`` with its parameters set to ``tensors`` (so variants share weights)."""
    with torch.no_grad():
        for name, tensor in tensors.items():
            getattr(module, name).copy_(tensor)
    return module


def make_inputs(shapes: Sequence[tuple[int, ...]]) -> tuple[torch.Tensor, ...]:
    """The same values on every call: each variant gets fresh, identical inputs (some ops are in-place)."""
    generator = torch.Generator().manual_seed(1234)
    return tuple(torch.randn(*shape, generator=generator) for shape in shapes)


def run(model_or_callable: Any, inputs: Sequence[torch.Tensor]) -> tuple[TorchFLOPsByFX, Any]:
    counter = TorchFLOPsByFX(as_module(model_or_callable))
    output = counter.propagate(*inputs)
    return counter, output


def cost(model_or_callable: Any, inputs: Sequence[torch.Tensor]) -> tuple[tuple[int, int], Any]:
    """((FLOPs, MACs), output); every node must be priced."""
    counter, output = run(model_or_callable, inputs)
    unsupported = [(r.name, r.target) for r in counter.records if r.status is Status.UNSUPPORTED]
    assert not unsupported, f"nodes without a rule: {unsupported}"
    return (counter.total_flops, counter.total_macs), output


# -- shared weights ----------------------------------------------------------------------------------
LIN_W, LIN_B = torch.randn(4, 5), torch.randn(4)
CONV_W, CONV_B = torch.randn(8, 3, 3, 3), torch.randn(8)
GCONV_W, GCONV_B = torch.randn(6, 2, 3, 3), torch.randn(6)
LN_W, LN_B = torch.randn(8), torch.randn(8)
BN_MEAN, BN_VAR, BN_W, BN_B = torch.randn(3), torch.rand(3) + 0.5, torch.randn(3), torch.randn(3)
MASK = torch.randn(4, 4)


def iadd(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    x += y
    return x


@dataclass(frozen=True)
class Group:
    name: str
    shapes: tuple[tuple[int, ...], ...]
    flops: int
    macs: int
    variants: tuple[tuple, ...]  # (id, model_or_callable[, marks])


GROUPS = [
    Group(
        "linear", ((3, 5),),
        120, 72,  # 3*4 = 12 outputs * (2*5 - 1) = 108, + 12 bias = 120; MACs 12*5 + 12 = 72
        (
            ("nn_Linear", loaded(nn.Linear(5, 4), weight=LIN_W, bias=LIN_B)),
            ("F_linear_positional", Op(lambda x, w, b: F.linear(x, w, b), w=LIN_W, b=LIN_B)),
            ("F_linear_bias_keyword", Op(lambda x, w, b: F.linear(x, w, bias=b), w=LIN_W, b=LIN_B)),
            ("F_linear_all_keywords", Op(lambda x, w, b: F.linear(input=x, weight=w, bias=b), w=LIN_W, b=LIN_B)),
        ),
    ),
    Group(
        "linear_as_matmul_plus_add", ((3, 5),),
        120, 60,  # matmul 12 * 9 = 108, + 12 adds = 120; MACs 12*5 = 60 (elementwise adds are not MACs)
        (
            ("matmul_operator_plus_bias", Op(lambda x, w, b: x @ w.T + b, w=LIN_W, b=LIN_B)),
            ("torch_matmul_plus_bias", Op(lambda x, w, b: torch.matmul(x, w.t()) + b, w=LIN_W, b=LIN_B)),
            ("bias_plus_tensor_matmul", Op(lambda x, w, b: b + x.matmul(w.transpose(0, 1)), w=LIN_W, b=LIN_B)),
            ("torch_add_of_matmul", Op(lambda x, w, b: torch.add(x @ w.T, b), w=LIN_W, b=LIN_B)),
        ),
    ),
    Group(
        "linear_no_bias", ((3, 5),),
        108, 60,  # 12 outputs * (2*5 - 1) = 108; MACs 12*5 = 60
        (
            ("nn_Linear_bias_False", loaded(nn.Linear(5, 4, bias=False), weight=LIN_W)),
            ("F_linear", Op(lambda x, w: F.linear(x, w), w=LIN_W)),
            ("F_linear_None_positional", Op(lambda x, w: F.linear(x, w, None), w=LIN_W)),
            ("F_linear_None_keyword", Op(lambda x, w: F.linear(x, w, bias=None), w=LIN_W)),
            ("matmul_operator", Op(lambda x, w: x @ w.T, w=LIN_W)),
            ("torch_mm", Op(lambda x, w: torch.mm(x, w.t()), w=LIN_W)),
        ),
    ),
    Group(
        "matmul", ((3, 4), (4, 5)),
        105, 60,  # 3*5 = 15 outputs * (2*4 - 1) = 105; MACs 15*4 = 60
        (
            ("operator", lambda a, b: a @ b),
            ("operator_function", lambda a, b: operator.matmul(a, b)),
            ("torch_matmul", lambda a, b: torch.matmul(a, b)),
            ("torch_matmul_keywords", lambda a, b: torch.matmul(input=a, other=b)),
            ("tensor_matmul", lambda a, b: a.matmul(b)),
            ("torch_mm", lambda a, b: torch.mm(a, b)),
            ("tensor_mm", lambda a, b: a.mm(b)),
            ("torch_bmm_of_batch_of_one", lambda a, b: torch.bmm(a.unsqueeze(0), b.unsqueeze(0)).squeeze(0)),
        ),
    ),
    Group(
        "conv2d", ((1, 3, 8, 8),),
        27_648, 14_336,  # 8*8*8 = 512 outputs * (2*3*9 - 1) = 27,136, + 512 bias; MACs 512*27 + 512 = 14,336
        (
            ("nn_Conv2d", loaded(nn.Conv2d(3, 8, 3, padding=1), weight=CONV_W, bias=CONV_B)),
            ("nn_Conv2d_keywords", loaded(nn.Conv2d(3, 8, kernel_size=(3, 3), stride=1, padding=(1, 1)),
                                          weight=CONV_W, bias=CONV_B)),
            ("nn_Conv2d_padding_same", loaded(nn.Conv2d(3, 8, 3, padding="same"), weight=CONV_W, bias=CONV_B)),
            ("F_conv2d_positional", Op(lambda x, w, b: F.conv2d(x, w, b, 1, 1), w=CONV_W, b=CONV_B)),
            ("F_conv2d_bias_positional_padding_keyword", Op(lambda x, w, b: F.conv2d(x, w, b, padding=1),
                                                            w=CONV_W, b=CONV_B)),
            ("F_conv2d_keywords", Op(lambda x, w, b: F.conv2d(x, w, bias=b, stride=1, padding=1, dilation=1, groups=1),
                                     w=CONV_W, b=CONV_B)),
            ("F_conv2d_all_keywords", Op(lambda x, w, b: F.conv2d(input=x, weight=w, bias=b, padding=(1, 1)),
                                         w=CONV_W, b=CONV_B)),
        ),
    ),
    Group(
        "conv2d_no_bias", ((1, 3, 8, 8),),
        27_136, 13_824,  # 512 outputs * 53 = 27,136; MACs 512*27 = 13,824
        (
            ("nn_Conv2d_bias_False", loaded(nn.Conv2d(3, 8, 3, padding=1, bias=False), weight=CONV_W)),
            ("F_conv2d_None_positional", Op(lambda x, w: F.conv2d(x, w, None, 1, 1), w=CONV_W)),
            ("F_conv2d_no_bias", Op(lambda x, w: F.conv2d(x, w, padding=1), w=CONV_W)),
            ("F_conv2d_None_keyword", Op(lambda x, w: F.conv2d(x, w, bias=None, padding=1), w=CONV_W)),
        ),
    ),
    Group(
        "conv2d_grouped_strided", ((1, 4, 6, 6),),
        1_944, 1_026,  # 6*3*3 = 54 outputs * (2*2*9 - 1) = 1,890, + 54 bias; MACs 54*18 + 54 = 1,026
        (
            ("nn_Conv2d", loaded(nn.Conv2d(4, 6, 3, 2, 1, groups=2), weight=GCONV_W, bias=GCONV_B)),
            ("F_conv2d_positional", Op(lambda x, w, b: F.conv2d(x, w, b, 2, 1, 1, 2), w=GCONV_W, b=GCONV_B)),
            ("F_conv2d_keywords", Op(lambda x, w, b: F.conv2d(x, w, b, stride=2, padding=1, groups=2),
                                     w=GCONV_W, b=GCONV_B)),
            ("F_conv2d_tuple_keywords", Op(lambda x, w, b: F.conv2d(x, w, bias=b, stride=(2, 2), padding=(1, 1),
                                                                    dilation=(1, 1), groups=2), w=GCONV_W, b=GCONV_B)),
        ),
    ),
    Group(
        "relu", ((2, 10),),
        20, 0,  # 20 elements * 1
        (
            ("nn_ReLU", nn.ReLU()),
            ("nn_ReLU_inplace", nn.ReLU(inplace=True)),
            ("F_relu", lambda x: F.relu(x)),
            ("F_relu_inplace", lambda x: F.relu(x, inplace=True)),
            ("F_relu_", lambda x: F.relu_(x)),
            ("torch_relu", lambda x: torch.relu(x)),
            ("torch_relu_", lambda x: torch.relu_(x)),
            ("tensor_relu", lambda x: x.relu()),
            ("tensor_relu_", lambda x: x.relu_()),
        ),
    ),
    Group(
        "softmax_last_dim", ((2, 3, 5),),
        84, 0,  # 2*3 = 6 rows * (3*5 - 1) = 84
        (
            ("nn_Softmax_keyword", nn.Softmax(dim=-1)),
            ("nn_Softmax_positional", nn.Softmax(-1)),
            ("nn_Softmax_dim2", nn.Softmax(dim=2)),
            ("F_softmax_positional", lambda x: F.softmax(x, -1)),
            ("F_softmax_keyword", lambda x: F.softmax(x, dim=-1)),
            ("F_softmax_dim2", lambda x: F.softmax(x, dim=2)),
            ("torch_softmax_positional", lambda x: torch.softmax(x, -1)),
            ("torch_softmax_keyword", lambda x: torch.softmax(x, dim=-1)),
            ("tensor_softmax_positional", lambda x: x.softmax(-1)),
            ("tensor_softmax_keyword", lambda x: x.softmax(dim=-1)),
            ("tensor_softmax_dim2", lambda x: x.softmax(dim=2)),
        ),
    ),
    Group(
        "softmax_middle_dim", ((2, 3, 5),),
        80, 0,  # 2*5 = 10 rows * (3*3 - 1) = 80
        (
            ("nn_Softmax", nn.Softmax(1)),
            ("F_softmax", lambda x: F.softmax(x, 1)),
            ("torch_softmax", lambda x: torch.softmax(x, dim=1)),
            ("tensor_softmax", lambda x: x.softmax(1)),
            ("tensor_softmax_negative_dim", lambda x: x.softmax(dim=-2)),
        ),
    ),
    Group(
        "add", ((2, 3), (3,)),
        6, 0,  # broadcast to (2, 3): 6 adds
        (
            ("operator", lambda x, y: x + y),
            ("operator_reflected", lambda x, y: y + x),
            ("operator_function", lambda x, y: operator.add(x, y)),
            ("augmented_assignment", iadd),
            ("torch_add", lambda x, y: torch.add(x, y)),
            ("torch_add_keywords", lambda x, y: torch.add(input=x, other=y)),
            ("tensor_add", lambda x, y: x.add(y)),
            ("tensor_add_", lambda x, y: x.add_(y)),
            ("torch_add_alpha_1", lambda x, y: torch.add(x, y, alpha=1)),
        ),
    ),
    Group(
        "add_alpha", ((2, 3), (3,)),
        12, 0,  # 6 outputs * 2 (multiply by alpha, add)
        (
            ("torch_add", lambda x, y: torch.add(x, y, alpha=2)),
            ("tensor_add", lambda x, y: x.add(y, alpha=2)),
            ("tensor_add_", lambda x, y: x.add_(y, alpha=2)),
        ),
    ),
    Group(
        "layer_norm", ((2, 4, 8),),
        256, 256,  # 64 elements * 4
        (
            ("nn_LayerNorm", loaded(nn.LayerNorm(8), weight=LN_W, bias=LN_B)),
            ("nn_LayerNorm_list_shape", loaded(nn.LayerNorm([8]), weight=LN_W, bias=LN_B)),
            ("F_layer_norm_positional", Op(lambda x, w, b: F.layer_norm(x, (8,), w, b), w=LN_W, b=LN_B)),
            ("F_layer_norm_keywords", Op(lambda x, w, b: F.layer_norm(x, [8], weight=w, bias=b), w=LN_W, b=LN_B)),
            ("F_layer_norm_all_keywords", Op(lambda x, w, b: F.layer_norm(input=x, normalized_shape=(8,), weight=w,
                                                                          bias=b, eps=1e-5), w=LN_W, b=LN_B)),
        ),
    ),
    Group(
        "layer_norm_weight_only", ((2, 4, 8),),
        192, 192,  # 64 elements * 3
        (
            ("nn_LayerNorm_bias_False", loaded(nn.LayerNorm(8, bias=False), weight=LN_W)),
            ("F_layer_norm_positional", Op(lambda x, w: F.layer_norm(x, (8,), w), w=LN_W)),
            ("F_layer_norm_keyword", Op(lambda x, w: F.layer_norm(x, (8,), weight=w), w=LN_W)),
            ("F_layer_norm_bias_None", Op(lambda x, w: F.layer_norm(x, (8,), w, None), w=LN_W)),
        ),
    ),
    Group(
        "layer_norm_plain", ((2, 4, 8),),
        128, 128,  # 64 elements * 2
        (
            ("nn_LayerNorm_no_affine", nn.LayerNorm(8, elementwise_affine=False)),
            ("F_layer_norm", lambda x: F.layer_norm(x, (8,))),
            ("F_layer_norm_None", lambda x: F.layer_norm(x, (8,), None, None)),
        ),
    ),
    Group(
        "batch_norm", ((2, 3, 4, 4),),
        384, 384,  # 96 elements * 4
        (
            ("nn_BatchNorm2d", loaded(nn.BatchNorm2d(3), running_mean=BN_MEAN, running_var=BN_VAR, weight=BN_W,
                                      bias=BN_B)),
            ("F_batch_norm_positional", Op(lambda x, m, v, w, b: F.batch_norm(x, m, v, w, b),
                                           m=BN_MEAN, v=BN_VAR, w=BN_W, b=BN_B)),
            ("F_batch_norm_keywords", Op(lambda x, m, v, w, b: F.batch_norm(x, m, v, weight=w, bias=b),
                                         m=BN_MEAN, v=BN_VAR, w=BN_W, b=BN_B)),
        ),
    ),
    Group(
        "max_pool2d", ((1, 2, 8, 8),),
        256, 0,  # (1, 2, 4, 4) = 32 outputs * (3*3 - 1) = 256
        (
            ("nn_MaxPool2d_positional", nn.MaxPool2d(3, 2, 1)),
            ("nn_MaxPool2d_keywords", nn.MaxPool2d(kernel_size=3, stride=2, padding=1)),
            ("nn_MaxPool2d_tuples", nn.MaxPool2d((3, 3), (2, 2), (1, 1))),
            ("nn_MaxPool2d_return_indices", First(nn.MaxPool2d(3, 2, 1, return_indices=True))),
            ("F_max_pool2d_positional", lambda x: F.max_pool2d(x, 3, 2, 1)),
            ("F_max_pool2d_keywords", lambda x: F.max_pool2d(x, kernel_size=3, stride=2, padding=1)),
            ("F_max_pool2d_tuples", lambda x: F.max_pool2d(x, (3, 3), (2, 2), (1, 1))),
            ("F_max_pool2d_all_positional", lambda x: F.max_pool2d(x, 3, 2, 1, 1, False)),
            ("F_max_pool2d_return_indices", lambda x: F.max_pool2d(x, 3, 2, 1, return_indices=True)[0]),
        ),
    ),
    Group(
        "avg_pool2d", ((1, 2, 8, 8),),
        128, 128,  # (1, 2, 4, 4) = 32 outputs * 4
        (
            ("nn_AvgPool2d", nn.AvgPool2d(2)),
            ("nn_AvgPool2d_keywords", nn.AvgPool2d(kernel_size=(2, 2), stride=2)),
            ("F_avg_pool2d", lambda x: F.avg_pool2d(x, 2)),
            ("F_avg_pool2d_keywords", lambda x: F.avg_pool2d(x, kernel_size=(2, 2), stride=(2, 2))),
        ),
    ),
    Group(
        "adaptive_avg_pool2d", ((1, 2, 7, 5),),
        126, 126,  # H 7 -> 3: 3+3+3 = 9; W 5 -> 3: 2+3+2 = 7; 2 planes * 63 = 126
        (
            ("nn_AdaptiveAvgPool2d", nn.AdaptiveAvgPool2d(3)),
            ("nn_AdaptiveAvgPool2d_tuple", nn.AdaptiveAvgPool2d((3, 3))),
            ("F_adaptive_avg_pool2d", lambda x: F.adaptive_avg_pool2d(x, 3)),
            ("F_adaptive_avg_pool2d_keyword", lambda x: F.adaptive_avg_pool2d(x, output_size=(3, 3))),
        ),
    ),
    Group(
        "sum_dim", ((2, 5),),
        8, 0,  # 2 outputs * (5 - 1) = 8
        (
            ("tensor_sum_positional", lambda x: x.sum(1)),
            ("tensor_sum_keyword", lambda x: x.sum(dim=1)),
            ("torch_sum_positional", lambda x: torch.sum(x, 1)),
            ("torch_sum_keyword", lambda x: torch.sum(x, dim=-1)),
        ),
    ),
    Group(
        "sdpa_masked", ((1, 2, 4, 8), (1, 2, 4, 8), (1, 2, 4, 8)),
        1_080, 512,  # scores 32*15 = 480, scale 32, mask 32, softmax 8*11 = 88, x V 64*7 = 448; MACs 256 + 256
        (
            ("mask_positional", Op(lambda q, k, v, m: F.scaled_dot_product_attention(q, k, v, m), m=MASK)),
            ("mask_keyword", Op(lambda q, k, v, m: F.scaled_dot_product_attention(q, k, v, attn_mask=m), m=MASK)),
            ("all_keywords", Op(lambda q, k, v, m: F.scaled_dot_product_attention(query=q, key=k, value=v,
                                                                                  attn_mask=m), m=MASK)),
        ),
    ),
]
GROUPS_BY_NAME = {group.name: group for group in GROUPS}


def _variant_params() -> list:
    cases = []
    for group in GROUPS:
        for variant_id, model, *marks in group.variants:
            cases.append(pytest.param(group.name, model, id=f"{group.name}-{variant_id}", marks=marks))
    return cases


@pytest.mark.parametrize("group_name, model", _variant_params())
def test_variant_counts_the_hand_computed_cost(group_name: str, model: Any) -> None:
    group = GROUPS_BY_NAME[group_name]
    measured, _ = cost(model, make_inputs(group.shapes))
    assert measured == (group.flops, group.macs)


@pytest.mark.parametrize("group", [pytest.param(g, id=g.name) for g in GROUPS])
def test_variants_agree_and_compute_the_same(group: Group) -> None:
    """Every variant (known-bug variants left out) has the same cost and output as the first one."""
    variants = [(variant_id, model) for variant_id, model, *marks in group.variants if not marks]
    reference_id, reference = variants[0]
    reference_cost, reference_output = cost(reference, make_inputs(group.shapes))
    for variant_id, model in variants[1:]:
        measured, output = cost(model, make_inputs(group.shapes))
        assert measured == reference_cost, f"{variant_id} differs from {reference_id}"
        torch.testing.assert_close(output, reference_output, msg=f"{variant_id} computes something else")


# -- counts that are equal across forms by construction of the convention ---------------------------
def test_linear_and_matmul_plus_add_have_equal_flops() -> None:
    """``x @ w.T + b`` is a matmul plus an elementwise add: the same FLOPs as ``nn.Linear``. The MACs
    differ by the 12 bias adds, which ``rules/linear.py`` counts as MACs and ``rules/elementwise.py``
    does not."""
    inputs = ((3, 5),)
    linear = GROUPS_BY_NAME["linear"].variants[0][1]
    decomposed = GROUPS_BY_NAME["linear_as_matmul_plus_add"].variants[0][1]
    (linear_flops, linear_macs), linear_out = cost(linear, make_inputs(inputs))
    (decomposed_flops, decomposed_macs), decomposed_out = cost(decomposed, make_inputs(inputs))
    torch.testing.assert_close(decomposed_out, linear_out)
    assert linear_flops == decomposed_flops == 120  # 12 * (2*5 - 1) + 12
    assert (linear_macs, decomposed_macs) == (72, 60)  # 12*5 + 12 bias; 12*5


def test_add_alpha_written_out() -> None:
    # torch.add(x, y, alpha=2) with y (3,) broadcast to (2, 3): 2 * 6 = 12. Written out as x + 2 * y the
    # multiply runs on y's 3 elements before broadcasting: 3 + 6 = 9.
    (flops, macs), output = cost(lambda x, y: x + 2 * y, make_inputs(((2, 3), (3,))))
    assert (flops, macs) == (9, 0)
    (alpha_flops, _), alpha_output = cost(lambda x, y: torch.add(x, y, alpha=2), make_inputs(((2, 3), (3,))))
    assert alpha_flops == 12
    torch.testing.assert_close(output, alpha_output)


# -- module lookup along the MRO ---------------------------------------------------------------------
class MyConv2d(nn.Conv2d):
    """A user subclass of ``nn.Conv2d`` with nothing changed."""


class ScaledConv2d(nn.Conv2d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) * 2.0


class Holder(nn.Module):
    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


def test_conv2d_subclass_resolves_to_the_conv_rule() -> None:
    conv_rule = DEFAULT_REGISTRY.module_rule(nn.Conv2d(3, 8, 3))
    assert MyConv2d not in DEFAULT_REGISTRY.modules  # found through the MRO, not registered itself
    assert conv_rule is not None
    assert DEFAULT_REGISTRY.module_rule(MyConv2d(3, 8, 3)) == conv_rule
    assert DEFAULT_REGISTRY.module_rule(nn.LazyConv2d(8, 3)) == conv_rule
    assert DEFAULT_REGISTRY.module_rule(ScaledConv2d(3, 8, 3)) is None  # its own forward: counted by what it runs


@pytest.mark.parametrize(
    "layer, flops",
    [
        pytest.param(loaded(nn.Conv2d(3, 8, 3, padding=1), weight=CONV_W, bias=CONV_B), 27_648, id="nn_Conv2d"),
        # 512 * (2*3*9 - 1) + 512 = 27,648
        pytest.param(loaded(MyConv2d(3, 8, 3, padding=1), weight=CONV_W, bias=CONV_B), 27_648, id="subclass"),
        # 27,648 + 512 multiplies by 2.0 = 28,160
        pytest.param(loaded(ScaledConv2d(3, 8, 3, padding=1), weight=CONV_W, bias=CONV_B), 28_160,
                     id="subclass_with_forward"),
        # torch's own subclass, a leaf module: priced by the nn.Conv2d rule found along its MRO
        pytest.param(nn.LazyConv2d(8, 3, padding=1), 27_648, id="LazyConv2d"),
    ],
)
def test_conv2d_subclass_counts_as_conv(layer: nn.Module, flops: int) -> None:
    (measured_flops, _), _ = cost(Holder(layer), make_inputs(((1, 3, 8, 8),)))
    assert measured_flops == flops


def test_lazy_conv2d_is_one_module_node() -> None:
    counter, _ = run(Holder(nn.LazyConv2d(8, 3, padding=1)), make_inputs(((1, 3, 8, 8),)))
    (record,) = [r for r in counter.records if r.op == "call_module"]
    assert record.status is Status.RULE
    assert record.flops == 27_648  # 512 * 53 + 512
    assert record.macs == 14_336  # 512 * 27 + 512


# -- one module called twice -------------------------------------------------------------------------
class CalledTwice(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(5, 5)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.act(self.fc(x)))


def test_same_module_called_twice_is_two_nodes_with_equal_flops() -> None:
    counter, _ = run(CalledTwice(), make_inputs(((1, 5),)))
    calls = [r for r in counter.records if r.op == "call_module" and r.target == "fc"]
    assert len(calls) == 2
    assert calls[0].name != calls[1].name
    assert [r.flops for r in calls] == [50, 50]  # 5 outputs * (2*5 - 1) + 5 bias = 50 each
    assert [r.macs for r in calls] == [30, 30]  # 5*5 + 5
    assert counter.total_flops == 105  # 50 + 5 (relu) + 50
