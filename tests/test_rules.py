"""Per-family tables of hand-computed costs, run end to end through ``TorchFLOPsByFX``.

Every case is ``(id, model_or_callable, inputs, expected_flops, expected_macs)`` with the arithmetic
written beside it, from the formula in the family module's docstring (``torch_flops/rules/*.py``).
A callable is wrapped in :class:`Op`, whose ``forward`` calls it, so the op under test is an FX node.
The expected value is the sum over every node that is not a placeholder or the output.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pytest
import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

from features import needs_sdpa_gqa
from models import Op
from torch_flops import Status, TorchFLOPsByFX, aggregate
from torch_flops.rules import activation

torch.manual_seed(0)


# -- helpers -----------------------------------------------------------------------------------------
class LinearThenAddOne(nn.Module):
    """The seed case: ``Linear(5, 4)`` then ``x += 1.``."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(5, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer(x)
        x += 1.0
        return x


def randn(*shape: int) -> torch.Tensor:
    return torch.randn(*shape)


def rand(*shape: int) -> torch.Tensor:
    """Uniform in [0, 1): positive, so it is a valid running variance too."""
    return torch.rand(*shape)


def as_module(model_or_callable: nn.Module | Callable[..., Any]) -> nn.Module:
    """A model to trace. FX always traces *into* the root module, so a bare ``torch.nn`` layer is put in
    an ``nn.Sequential`` to stay one ``call_module`` node; a callable is wrapped in :class:`Op`."""
    if isinstance(model_or_callable, nn.Module):
        if type(model_or_callable).__module__.startswith("torch.nn"):
            return nn.Sequential(model_or_callable)
        return model_or_callable
    return Op(model_or_callable)


def run(model_or_callable: nn.Module | Callable[..., Any], inputs: Sequence[torch.Tensor]) -> TorchFLOPsByFX:
    counter = TorchFLOPsByFX(as_module(model_or_callable))
    counter.propagate(*inputs)
    return counter


def op_records(counter: TorchFLOPsByFX) -> list:
    return [r for r in counter.records if r.op not in ("placeholder", "output")]


def measured_cost(model_or_callable: nn.Module | Callable[..., Any], inputs: Sequence[torch.Tensor]) -> tuple[int, int]:
    """(FLOPs, MACs) summed over the op nodes; every node must be priced."""
    counter = run(model_or_callable, inputs)
    records = op_records(counter)
    unsupported = [(r.name, r.target) for r in records if r.status is Status.UNSUPPORTED]
    assert not unsupported, f"nodes without a rule: {unsupported}"
    assert any(r.status is Status.RULE for r in records), "no node was counted"
    flops = sum(r.flops for r in records)
    macs = sum(r.macs for r in records)
    assert (flops, macs) == (counter.total_flops, counter.total_macs)
    return flops, macs


def check(case_id: str, model: Any, inputs: Sequence[torch.Tensor], flops: int, macs: int) -> None:
    assert measured_cost(model, inputs) == (flops, macs), case_id


def params(cases: list[tuple]) -> list:
    """Table rows -> ``pytest.param``s with the row's id; a row may carry marks as a sixth element."""
    return [pytest.param(*case[:5], id=case[0], marks=case[5] if len(case) > 5 else ()) for case in cases]


SIGNATURE = "case_id, model, inputs, flops, macs"


# -- linear ------------------------------------------------------------------------------------------
LINEAR_CASES = [
    ("linear", nn.Linear(5, 4), (randn(1, 5),),
     40, 24),  # 4 outputs * (2*5 - 1) + 4 bias = 40; MACs 4*5 + 4 = 24
    ("linear_no_bias", nn.Linear(5, 4, bias=False), (randn(1, 5),),
     36, 20),  # 4 * (2*5 - 1) = 36; MACs 4*5 = 20
    ("linear_3d_input", nn.Linear(5, 4), (randn(2, 3, 5),),
     240, 144),  # 2*3*4 = 24 outputs * 9 + 24 = 240; MACs 24*5 + 24 = 144
    ("linear_1d_input", nn.Linear(5, 4), (randn(5),),
     40, 24),  # 4 outputs * 9 + 4 = 40
    ("f_linear", Op(lambda x, weight, bias: F.linear(x, weight, bias), weight=randn(4, 5), bias=randn(4)),
     (randn(1, 5),), 40, 24),  # as nn.Linear(5, 4)
    ("f_linear_no_bias", Op(lambda x, weight: F.linear(x, weight), weight=randn(4, 5)),
     (randn(1, 5),), 36, 20),  # 4 * 9 = 36
    # nn.Bilinear(4, 3, 5) on rows of (2, 4) and (2, 3), one output feature at a time: x1 A over in1 for
    # 2*5*3 = 30 (n, o, j), dot products of 4: 30 * 7 = 210 (120 MACs); with x2 over 3: 10 * 5 = 50 (30
    # MACs); each slice added into the zeroed output: 10; the bias: 10 adds
    ("bilinear", Op(lambda a, b, weight, bias: F.bilinear(a, b, weight, bias), weight=randn(5, 4, 3), bias=randn(5)),
     (randn(2, 4), randn(2, 3)), 210 + 50 + 10 + 10, 120 + 30),
    ("bilinear_no_bias", Op(lambda a, b, weight: F.bilinear(a, b, weight), weight=randn(5, 4, 3)), (randn(2, 4), randn(2, 3)),
     270, 150),
]


@pytest.mark.parametrize(SIGNATURE, params(LINEAR_CASES))
def test_linear(case_id: str, model: Any, inputs: tuple, flops: int, macs: int) -> None:
    check(case_id, model, inputs, flops, macs)


# -- matmul family -----------------------------------------------------------------------------------
MATMUL_CASES = [
    ("operator_matmul", lambda a, b: a @ b, (randn(2, 3, 4), randn(4, 5)),
     210, 120),  # 2*3*5 = 30 outputs * (2*4 - 1) = 210; MACs 30*4 = 120
    ("torch_matmul", lambda a, b: torch.matmul(a, b), (randn(2, 3, 4), randn(4, 5)),
     210, 120),  # 30 * 7
    ("tensor_matmul", lambda a, b: a.matmul(b), (randn(2, 3, 4), randn(4, 5)),
     210, 120),  # 30 * 7
    ("torch_mm", lambda a, b: torch.mm(a, b), (randn(3, 4), randn(4, 5)),
     105, 60),  # 15 outputs * (2*4 - 1) = 105; MACs 15*4 = 60
    ("tensor_mm", lambda a, b: a.mm(b), (randn(3, 4), randn(4, 5)),
     105, 60),  # 15 * 7
    ("torch_bmm", lambda a, b: torch.bmm(a, b), (randn(2, 3, 4), randn(2, 4, 5)),
     210, 120),  # 30 * 7
    ("dot_1d_1d", lambda a, b: a @ b, (randn(6), randn(6)),
     11, 6),  # 1 output * (2*6 - 1) = 11; MACs 6
    ("matrix_vector", lambda a, b: a @ b, (randn(3, 4), randn(4)),
     21, 12),  # 3 outputs * 7 = 21; MACs 12
    ("vector_batched_matrix", lambda a, b: torch.matmul(a, b), (randn(4), randn(2, 4, 5)),
     70, 40),  # (2, 5) = 10 outputs * 7 = 70; MACs 40
    ("broadcast_batch", lambda a, b: a @ b, (randn(2, 1, 3, 4), randn(5, 4, 6)),
     1260, 720),  # (2, 5, 3, 6) = 180 outputs * 7 = 1,260; MACs 180*4 = 720
    ("addmm", lambda b, x, w: torch.addmm(b, x, w), (randn(5), randn(2, 3), randn(3, 5)),
     60, 40),  # 10 outputs * (2*3 - 1) = 50, + 10 adds = 60; MACs 10*3 + 10 adds (as a bias) = 40
    ("addmm_alpha_beta", lambda b, x, w: torch.addmm(b, x, w, beta=2, alpha=3), (randn(5), randn(2, 3), randn(3, 5)),
     80, 40),  # 50 + 10 adds + 10 beta multiplies + 10 alpha multiplies = 80
    ("addmm_alpha_only", lambda b, x, w: torch.addmm(b, x, w, alpha=0.5), (randn(5), randn(2, 3), randn(3, 5)),
     70, 40),  # 50 + 10 adds + 10 alpha multiplies = 70
    ("tensor_addmm", lambda b, x, w: b.addmm(x, w), (randn(2, 5), randn(2, 3), randn(3, 5)),
     60, 40),  # 50 + 10
    ("baddbmm", lambda b, x, w: torch.baddbmm(b, x, w), (randn(2, 3, 5), randn(2, 3, 4), randn(2, 4, 5)),
     240, 150),  # 30 outputs * (2*4 - 1) = 210, + 30 adds = 240; MACs 30*4 + 30 = 150
    ("baddbmm_beta", lambda b, x, w: torch.baddbmm(b, x, w, beta=0.5), (randn(2, 3, 5), randn(2, 3, 4), randn(2, 4, 5)),
     270, 150),  # 210 + 30 adds + 30 beta multiplies = 270
]


@pytest.mark.parametrize(SIGNATURE, params(MATMUL_CASES))
def test_matmul_family(case_id: str, model: Any, inputs: tuple, flops: int, macs: int) -> None:
    check(case_id, model, inputs, flops, macs)


# -- convolutions ------------------------------------------------------------------------------------
CONV_CASES = [
    ("conv2d", nn.Conv2d(3, 8, 3, padding=1), (randn(1, 3, 8, 8),),
     27_648, 14_336),  # 8*8*8 = 512 outputs * (2*3*9 - 1) = 27,136, + 512 bias = 27,648; MACs 512*27 + 512
    ("conv2d_no_bias", nn.Conv2d(3, 8, 3, padding=1, bias=False), (randn(1, 3, 8, 8),),
     27_136, 13_824),  # 512 * 53 = 27,136; MACs 512*27 = 13,824
    ("depthwise", nn.Conv2d(8, 8, 3, padding=1, groups=8), (randn(1, 8, 8, 8),),
     9_216, 5_120),  # 512 outputs * (2*1*9 - 1) = 8,704, + 512 = 9,216; MACs 512*9 + 512 = 5,120
    ("grouped", nn.Conv2d(4, 6, 3, groups=2), (randn(1, 4, 5, 5),),
     1_944, 1_026),  # 6*3*3 = 54 outputs * (2*2*9 - 1) = 1,890, + 54 = 1,944; MACs 54*18 + 54 = 1,026
    ("stride2", nn.Conv2d(3, 8, 3, stride=2, padding=1), (randn(1, 3, 8, 8),),
     6_912, 3_584),  # 8*4*4 = 128 outputs * 53 = 6,784, + 128 = 6,912; MACs 128*27 + 128 = 3,584
    ("dilation2", nn.Conv2d(3, 8, 3, dilation=2), (randn(1, 3, 9, 9),),
     10_800, 5_600),  # 9 - 2*2 = 5 -> 8*5*5 = 200 outputs * 53 = 10,600, + 200 = 10,800; MACs 200*28
    ("batch2", nn.Conv2d(3, 8, 3, padding=1), (randn(2, 3, 8, 8),),
     55_296, 28_672),  # 1,024 outputs * 53 = 54,272, + 1,024 = 55,296
    ("conv1d", nn.Conv1d(4, 6, 3), (randn(2, 4, 10),),
     2_304, 1_248),  # 2*6*8 = 96 outputs * (2*4*3 - 1) = 2,208, + 96 = 2,304; MACs 96*12 + 96 = 1,248
    ("conv3d", nn.Conv3d(2, 4, (1, 3, 3)), (randn(1, 2, 3, 5, 5),),
     3_888, 2_052),  # 4*3*3*3 = 108 outputs * (2*2*9 - 1) = 3,780, + 108 = 3,888; MACs 108*18 + 108
    ("f_conv2d_bias_positional", Op(lambda x, w, b: F.conv2d(x, w, b, 1, 1), w=randn(8, 3, 3, 3), b=randn(8)),
     (randn(1, 3, 8, 8),), 27_648, 14_336),  # as conv2d
    ("f_conv2d_bias_keyword", Op(lambda x, w, b: F.conv2d(x, w, bias=b, padding=1), w=randn(8, 3, 3, 3), b=randn(8)),
     (randn(1, 3, 8, 8),), 27_648, 14_336),  # as conv2d
    ("f_conv2d_no_bias", Op(lambda x, w: F.conv2d(x, w, padding=1), w=randn(8, 3, 3, 3)),
     (randn(1, 3, 8, 8),), 27_136, 13_824),  # 512 * 53
    ("f_conv2d_groups_keyword", Op(lambda x, w: F.conv2d(x, w, groups=2), w=randn(6, 2, 3, 3)),
     (randn(1, 4, 5, 5),), 1_890, 972),  # 54 outputs * (2*2*9 - 1) = 1,890; MACs 54*18 = 972
    ("f_conv1d", Op(lambda x, w, b: F.conv1d(x, w, b), w=randn(6, 4, 3), b=randn(6)),
     (randn(2, 4, 10),), 2_304, 1_248),  # as conv1d
    ("f_conv3d_stride", Op(lambda x, w: F.conv3d(x, w, stride=2), w=randn(4, 2, 3, 3, 3)),
     (randn(1, 2, 5, 5, 5),), 3_424, 1_728),  # 4*2*2*2 = 32 outputs * (2*2*27 - 1) = 3,424; MACs 32*54
]


@pytest.mark.parametrize(SIGNATURE, params(CONV_CASES))
def test_conv(case_id: str, model: Any, inputs: tuple, flops: int, macs: int) -> None:
    check(case_id, model, inputs, flops, macs)


# -- elementwise -------------------------------------------------------------------------------------
ELEMENTWISE_CASES = [
    ("add_scalar", lambda x: x + 1, (randn(2, 3),), 6, 0),  # 6 outputs * 1
    ("rsub_scalar", lambda x: 1 - x, (randn(2, 3),), 6, 0),  # 6
    ("mul_broadcast", lambda x, y: x * y, (randn(2, 1, 4), randn(3, 4)),
     24, 0),  # broadcast to (2, 3, 4) = 24 outputs
    ("div_broadcast", lambda x, y: x / y, (randn(2, 3), randn(3)), 6, 0),  # (2, 3) = 6
    ("gt", lambda x: x > 0, (randn(2, 3),), 6, 0),  # 6 compares
    ("torch_eq", lambda x, y: torch.eq(x, y), (randn(2, 3), randn(2, 3)), 6, 0),  # 6
    ("tensor_le", lambda x, y: x.le(y), (randn(2, 3), randn(2, 3)), 6, 0),  # 6
    ("torch_maximum", lambda x, y: torch.maximum(x, y), (randn(2, 3), randn(2, 3)), 6, 0),  # 6
    ("torch_exp", lambda x: torch.exp(x), (randn(2, 3),), 6, 0),  # 6
    ("tensor_exp", lambda x: x.exp(), (randn(2, 3),), 6, 0),  # 6
    ("tensor_exp_", lambda x: x.exp_(), (randn(2, 3),), 6, 0),  # 6
    ("tensor_pow", lambda x: x.pow(2), (randn(2, 3),), 6, 0),  # 6
    ("operator_pow", lambda x: x**2, (randn(2, 3),), 6, 0),  # 6
    ("neg", lambda x: -x, (randn(2, 3),), 6, 0),  # 6
    ("sqrt_abs_plus_one", lambda x: torch.sqrt(x.abs()) + 1, (randn(2, 3),), 18, 0),  # abs 6 + sqrt 6 + add 6
    ("add_inplace", lambda x: x.add_(1), (randn(2, 3),), 6, 0),  # 6
    ("linear_then_iadd", LinearThenAddOne(), (randn(1, 5),),
     44, 24),  # Linear 4 * 9 + 4 = 40, + 4 adds of `x += 1.` = 44; the add has no MACs
    ("torch_add_alpha", lambda x, y: torch.add(x, y, alpha=2), (randn(2, 3), randn(2, 3)),
     12, 0),  # 2 * 6 outputs (multiply by alpha, add)
    ("torch_sub_alpha", lambda x, y: torch.sub(x, y, alpha=2), (randn(2, 3), randn(2, 3)), 12, 0),  # 2 * 6
    ("tensor_add_alpha", lambda x, y: x.add(y, alpha=0.5), (randn(2, 3), randn(2, 3)), 12, 0),  # 2 * 6
    ("torch_add_alpha_1", lambda x, y: torch.add(x, y, alpha=1), (randn(2, 3), randn(2, 3)), 6, 0),  # 1 * 6
    ("shape_arithmetic", lambda x: x.view(x.size(0) * 3, -1), (randn(2, 3),),
     1, 0),  # `size(0) * 3` on Python ints: 1; size and view: 0
    ("heaviside", lambda x, y: torch.heaviside(x, y), (randn(2, 3), randn(2, 3)), 6, 0),  # a select per output
    ("polar", lambda r, a: torch.polar(r.abs(), a), (randn(2, 3), randn(2, 3)), 6 + 6, 0),  # abs 6, then 6 complex outputs
    ("equal", lambda x: x + torch.equal(x, x), (randn(2, 3),), 6 + 6, 0),  # 6 compares, then the add
    ("equal_other_shapes", lambda x: x + torch.equal(x, x[:1]), (randn(2, 3),), 6, 0),  # unequal at once: only the add
]


@pytest.mark.parametrize(SIGNATURE, params(ELEMENTWISE_CASES))
def test_elementwise(case_id: str, model: Any, inputs: tuple, flops: int, macs: int) -> None:
    check(case_id, model, inputs, flops, macs)


# -- normalisation -----------------------------------------------------------------------------------
NORM_CASES = [
    ("batchnorm2d", nn.BatchNorm2d(3), (randn(2, 3, 4, 4),), 384, 384),  # 96 elements * 4 = 384
    ("batchnorm2d_no_affine", nn.BatchNorm2d(3, affine=False), (randn(2, 3, 4, 4),), 192, 192),  # 96 * 2
    ("batchnorm1d", nn.BatchNorm1d(3), (randn(4, 3),), 48, 48),  # 12 * 4
    ("layernorm", nn.LayerNorm(8), (randn(2, 4, 8),), 256, 256),  # 64 * 4
    ("layernorm_2d_shape", nn.LayerNorm((4, 8)), (randn(2, 4, 8),), 256, 256),  # 64 * 4
    ("layernorm_no_affine", nn.LayerNorm(8, elementwise_affine=False), (randn(2, 4, 8),), 128, 128),  # 64 * 2
    ("layernorm_no_bias", nn.LayerNorm(8, bias=False), (randn(2, 4, 8),), 192, 192),  # 64 * 3
    ("groupnorm", nn.GroupNorm(2, 4), (randn(1, 4, 3, 3),), 144, 144),  # 36 * 4
    ("groupnorm_no_affine", nn.GroupNorm(2, 4, affine=False), (randn(1, 4, 3, 3),), 72, 72),  # 36 * 2
    ("instancenorm2d", nn.InstanceNorm2d(3), (randn(2, 3, 4, 4),), 192, 192),  # affine=False: 96 * 2
    ("instancenorm2d_affine", nn.InstanceNorm2d(3, affine=True), (randn(2, 3, 4, 4),), 384, 384),  # 96 * 4
    ("instancenorm1d_affine", nn.InstanceNorm1d(3, affine=True), (randn(2, 3, 5),), 120, 120),  # 30 * 4
    ("f_layer_norm", Op(lambda x, w, b: F.layer_norm(x, (8,), w, b), w=rand(8), b=rand(8)),
     (randn(2, 4, 8),), 256, 256),  # 64 * 4
    ("f_layer_norm_weight_only", Op(lambda x, w: F.layer_norm(x, (8,), weight=w), w=rand(8)),
     (randn(2, 4, 8),), 192, 192),  # 64 * 3
    ("f_layer_norm_plain", lambda x: F.layer_norm(x, (8,)), (randn(2, 4, 8),), 128, 128),  # 64 * 2
    ("f_batch_norm", Op(lambda x, rm, rv, w, b: F.batch_norm(x, rm, rv, w, b),
                        rm=rand(3), rv=rand(3), w=rand(3), b=rand(3)),
     (randn(2, 3, 4, 4),), 384, 384),  # 96 * 4
    ("f_batch_norm_plain", Op(lambda x, rm, rv: F.batch_norm(x, rm, rv), rm=rand(3), rv=rand(3)),
     (randn(2, 3, 4, 4),), 192, 192),  # 96 * 2
    ("f_group_norm", Op(lambda x, w, b: F.group_norm(x, 2, w, b), w=rand(4), b=rand(4)),
     (randn(1, 4, 3, 3),), 144, 144),  # 36 * 4
    ("f_group_norm_plain", lambda x: F.group_norm(x, 2), (randn(1, 4, 3, 3),), 72, 72),  # 36 * 2
    ("f_instance_norm", lambda x: F.instance_norm(x), (randn(2, 3, 4, 4),), 192, 192),  # 96 * 2
    ("f_instance_norm_affine", Op(lambda x, w, b: F.instance_norm(x, weight=w, bias=b), w=rand(3), b=rand(3)),
     (randn(2, 3, 4, 4),), 384, 384),  # 96 * 4
]


@pytest.mark.parametrize(SIGNATURE, params(NORM_CASES))
def test_norm(case_id: str, model: Any, inputs: tuple, flops: int, macs: int) -> None:
    check(case_id, model, inputs, flops, macs)


# -- activations -------------------------------------------------------------------------------------
# The price per element from the table in rules/activation.py's docstring, written out by hand, and the
# module forms of each entry. Input (2, 10): 20 elements (GLU halves the last dim: 10 outputs).
ACTIVATION_PRICES = {
    "relu": (1, [nn.ReLU()]),
    "gelu": (1, [nn.GELU(), nn.GELU(approximate="tanh")]),
    "sigmoid": (1, [nn.Sigmoid()]),
    "tanh": (1, [nn.Tanh()]),
    "threshold": (1, [nn.Threshold(0.1, 20.0)]),
    "hardtanh": (2, [nn.Hardtanh()]),
    "relu6": (2, [nn.ReLU6()]),
    "silu": (2, [nn.SiLU()]),
    "logsigmoid": (2, [nn.LogSigmoid()]),
    "tanhshrink": (2, [nn.Tanhshrink()]),
    "hardshrink": (2, [nn.Hardshrink()]),
    "softsign": (3, [nn.Softsign()]),
    "softshrink": (3, [nn.Softshrink()]),
    "hardsigmoid": (4, [nn.Hardsigmoid()]),
    "leaky_relu": (4, [nn.LeakyReLU()]),
    "prelu": (4, [nn.PReLU(), nn.RReLU()]),
    "elu": (4, [nn.ELU()]),
    "celu": (5, [nn.CELU()]),
    "selu": (5, [nn.SELU()]),
    "hardswish": (5, [nn.Hardswish()]),
    "mish": (5, [nn.Mish()]),
    "glu": (2, [nn.GLU()]),
}

ACTIVATION_CASES = [
    # relu, gelu, sigmoid, tanh, threshold: 20 elements * 1 = 20
    # hardtanh, relu6, silu, logsigmoid, tanhshrink, hardshrink: 20 * 2 = 40
    # softsign, softshrink: 20 * 3 = 60
    # hardsigmoid, leaky_relu, prelu/rrelu, elu: 20 * 4 = 80
    # celu, selu, hardswish, mish: 20 * 5 = 100
    # glu: 10 outputs * 2 = 20
    (f"{name}_{type(module).__name__}{i}", module, (randn(2, 10),), (10 if name == "glu" else 20) * price, 0)
    for name, (price, modules) in ACTIVATION_PRICES.items()
    for i, module in enumerate(modules)
] + [
    ("softplus", nn.Softplus(), (randn(2, 10),), 60, 0),  # 20 * 3
    ("softplus_beta2", nn.Softplus(beta=2), (randn(2, 10),), 100, 0),  # 20 * (3 + 2)
    ("f_softplus_beta2_keyword", lambda x: F.softplus(x, beta=2), (randn(2, 10),), 100, 0),  # 20 * 5
    ("f_softplus_beta2_positional", lambda x: F.softplus(x, 2), (randn(2, 10),), 100, 0),  # 20 * 5
    ("f_softplus", lambda x: F.softplus(x), (randn(2, 10),), 60, 0),  # 20 * 3
]

FUNCTIONAL_ACTIVATION_CASES = [
    ("f_relu", lambda x: F.relu(x), 20),  # 20 * 1
    ("f_gelu", lambda x: F.gelu(x), 20),  # 20 * 1
    ("f_sigmoid", lambda x: F.sigmoid(x), 20),  # 20 * 1
    ("torch_sigmoid", lambda x: torch.sigmoid(x), 20),  # 20 * 1
    ("tensor_sigmoid", lambda x: x.sigmoid(), 20),  # 20 * 1
    ("f_tanh", lambda x: F.tanh(x), 20),  # 20 * 1
    ("tensor_tanh", lambda x: x.tanh(), 20),  # 20 * 1
    ("f_threshold", lambda x: F.threshold(x, 0.1, 20.0), 20),  # 20 * 1
    ("f_hardtanh", lambda x: F.hardtanh(x), 40),  # 20 * 2
    ("f_relu6", lambda x: F.relu6(x), 40),  # 20 * 2
    ("f_silu", lambda x: F.silu(x), 40),  # 20 * 2
    ("f_logsigmoid", lambda x: F.logsigmoid(x), 40),  # 20 * 2
    ("f_tanhshrink", lambda x: F.tanhshrink(x), 40),  # 20 * 2
    ("f_hardshrink", lambda x: F.hardshrink(x), 40),  # 20 * 2
    ("f_softsign", lambda x: F.softsign(x), 60),  # 20 * 3
    ("f_softshrink", lambda x: F.softshrink(x), 60),  # 20 * 3
    ("f_hardsigmoid", lambda x: F.hardsigmoid(x), 80),  # 20 * 4
    ("f_leaky_relu", lambda x: F.leaky_relu(x, 0.2), 80),  # 20 * 4
    ("f_rrelu", lambda x: F.rrelu(x), 80),  # 20 * 4
    ("f_elu", lambda x: F.elu(x), 80),  # 20 * 4
    ("f_celu", lambda x: F.celu(x), 100),  # 20 * 5
    ("f_selu", lambda x: F.selu(x), 100),  # 20 * 5
    ("f_hardswish", lambda x: F.hardswish(x), 100),  # 20 * 5
    ("f_mish", lambda x: F.mish(x), 100),  # 20 * 5
    ("f_glu", lambda x: F.glu(x), 20),  # 10 outputs * 2
]


def test_activation_table_covers_every_priced_activation() -> None:
    assert set(ACTIVATION_PRICES) == set(activation.PER_ELEMENT_FLOPS)


@pytest.mark.parametrize(SIGNATURE, params(ACTIVATION_CASES))
def test_activation_module(case_id: str, model: Any, inputs: tuple, flops: int, macs: int) -> None:
    check(case_id, model, inputs, flops, macs)


@pytest.mark.parametrize(
    "case_id, model, flops", [pytest.param(*case, id=case[0]) for case in FUNCTIONAL_ACTIVATION_CASES]
)
def test_activation_functional(case_id: str, model: Any, flops: int) -> None:
    check(case_id, model, (randn(2, 10),), flops, 0)


def test_f_prelu() -> None:
    model = Op(lambda x, w: F.prelu(x, w), w=rand(1))
    check("f_prelu", model, (randn(2, 10),), 80, 0)  # 20 * 4


# -- pooling -----------------------------------------------------------------------------------------
POOL_CASES = [
    ("maxpool2d_3_2_1", nn.MaxPool2d(3, 2, 1), (randn(1, 64, 112, 112),),
     1_605_632, 0),  # (1, 64, 56, 56) = 200,704 outputs * (3*3 - 1) = 1,605,632
    ("maxpool2d_2", nn.MaxPool2d(2), (randn(1, 3, 4, 4),), 36, 0),  # 3*2*2 = 12 outputs * (4 - 1) = 36
    ("maxpool2d_rect", nn.MaxPool2d((2, 3)), (randn(1, 1, 4, 6),), 20, 0),  # 2*2 = 4 outputs * (6 - 1) = 20
    ("maxpool2d_return_indices", nn.MaxPool2d(2, return_indices=True), (randn(1, 3, 4, 4),), 36, 0),  # 12 * 3
    ("avgpool2d_2", nn.AvgPool2d(2), (randn(1, 3, 4, 4),), 48, 48),  # 12 outputs * 4 = 48
    ("avgpool2d_padded", nn.AvgPool2d(3, stride=2, padding=1), (randn(1, 1, 5, 5),),
     81, 81),  # 3*3 = 9 outputs * 9 (full window, padding included) = 81
    ("maxpool1d", nn.MaxPool1d(3, stride=1), (randn(1, 2, 7),), 20, 0),  # 2*5 = 10 outputs * (3 - 1) = 20
    ("avgpool1d", nn.AvgPool1d(3), (randn(1, 2, 9),), 18, 18),  # 2*3 = 6 outputs * 3 = 18
    ("maxpool3d", nn.MaxPool3d(2), (randn(1, 1, 4, 4, 4),), 56, 0),  # 2*2*2 = 8 outputs * (8 - 1) = 56
    # windows of 2x2 at random offsets, 4x4 of them per plane: 2*16 = 32 outputs * (4 - 1); F. form 3x3 to 5x5
    ("fractional_maxpool2d", nn.FractionalMaxPool2d(2, output_size=4), (randn(1, 2, 8, 8),), 96, 0),
    ("f_fractional_max_pool2d", lambda x: F.fractional_max_pool2d(x, 3, output_size=5), (randn(1, 2, 8, 8),), 50 * 8, 0),
    ("avgpool3d", nn.AvgPool3d((1, 2, 2)), (randn(1, 2, 3, 4, 4),), 96, 96),  # 2*3*2*2 = 24 outputs * 4 = 96
    ("adaptive_avg_1", nn.AdaptiveAvgPool2d(1), (randn(1, 2048, 7, 7),),
     100_352, 100_352),  # 2,048 planes * 49 = 100,352
    # H 7 -> 3: [0,3) [2,5) [4,7) = 3+3+3 = 9; W 5 -> 3: [0,2) [1,4) [3,5) = 2+3+2 = 7; 63 per plane
    ("adaptive_avg_uneven", nn.AdaptiveAvgPool2d(3), (randn(1, 2, 7, 5),), 126, 126),  # 2 planes * 63 = 126
    ("adaptive_max_uneven", nn.AdaptiveMaxPool2d(3), (randn(1, 2, 7, 5),), 108, 0),  # 126 - 2*9 outputs = 108
    ("adaptive_max_return_indices", nn.AdaptiveMaxPool2d(3, return_indices=True), (randn(1, 2, 7, 5),), 108, 0),
    # 3 -> 5 (upsampling): [0,1) [0,2) [1,2) [1,3) [2,3) = 1+2+1+2+1 = 7
    ("adaptive_avg1d_up", nn.AdaptiveAvgPool1d(5), (randn(1, 1, 3),), 7, 7),
    # 5 -> 3: [0,2) [1,4) [3,5) = 7 per plane; 2 planes = 14, minus 6 outputs = 8
    ("adaptive_max1d", nn.AdaptiveMaxPool1d(3), (randn(1, 2, 5),), 8, 0),
    # 3 -> 2 per dim: [0,2) [1,3) = 4; 4*4*4 = 64
    ("adaptive_avg3d", nn.AdaptiveAvgPool3d(2), (randn(1, 1, 3, 3, 3),), 64, 64),
    ("adaptive_max3d", nn.AdaptiveMaxPool3d(2), (randn(1, 1, 3, 3, 3),), 56, 0),  # 64 - 8 outputs
    # (None, 2): H keeps 3 -> windows of 1 = 3; W 4 -> 2 = 2+2 = 4; 3*4 = 12
    ("adaptive_avg_none", nn.AdaptiveAvgPool2d((None, 2)), (randn(1, 1, 3, 4),), 12, 12),
    ("f_max_pool2d", lambda x: F.max_pool2d(x, 2), (randn(1, 3, 4, 4),), 36, 0),  # 12 * 3
    ("f_max_pool2d_3_2_1", lambda x: F.max_pool2d(x, 3, 2, 1), (randn(1, 2, 8, 8),),
     256, 0),  # 2*4*4 = 32 outputs * 8 = 256
    ("f_max_pool1d", lambda x: F.max_pool1d(x, 3, 1), (randn(1, 2, 7),), 20, 0),  # 10 * 2
    ("f_avg_pool2d", lambda x: F.avg_pool2d(x, 2), (randn(1, 3, 4, 4),), 48, 48),  # 12 * 4
    ("f_avg_pool1d", lambda x: F.avg_pool1d(x, 3), (randn(1, 2, 9),), 18, 18),  # 6 * 3
    ("f_avg_pool3d", lambda x: F.avg_pool3d(x, (1, 2, 2)), (randn(1, 2, 3, 4, 4),), 96, 96),  # 24 * 4
    ("f_adaptive_avg_pool2d_1", lambda x: F.adaptive_avg_pool2d(x, 1), (randn(1, 8, 3, 3),), 72, 72),  # 8 * 9
    ("f_adaptive_avg_pool2d_uneven", lambda x: F.adaptive_avg_pool2d(x, 3), (randn(1, 2, 7, 5),), 126, 126),
    ("f_adaptive_max_pool2d_1", lambda x: F.adaptive_max_pool2d(x, 1), (randn(1, 8, 3, 3),), 64, 0),  # 72 - 8
    ("f_adaptive_avg_pool1d_up", lambda x: F.adaptive_avg_pool1d(x, 5), (randn(1, 1, 3),), 7, 7),  # as above
    # return_indices=True: symbolic_trace records F.*_with_indices as the node target
    ("f_max_pool1d_return_indices", lambda x: F.max_pool1d(x, 2, return_indices=True)[0], (randn(1, 2, 4),),
     4, 0),  # 2*2 = 4 outputs * (2 - 1) = 4
    ("f_max_pool2d_return_indices", lambda x: F.max_pool2d(x, 2, return_indices=True)[0], (randn(1, 3, 4, 4),),
     36, 0),  # 12 outputs * 3
    ("f_max_pool3d_return_indices", lambda x: F.max_pool3d(x, 2, return_indices=True)[0], (randn(1, 1, 4, 4, 4),),
     56, 0),  # 8 outputs * 7
    ("f_adaptive_max_pool1d_return_indices", lambda x: F.adaptive_max_pool1d(x, 1, return_indices=True)[0],
     (randn(1, 2, 4),), 6, 0),  # 2 planes * 4 - 2 outputs = 6
    ("f_adaptive_max_pool2d_return_indices", lambda x: F.adaptive_max_pool2d(x, 1, return_indices=True)[0],
     (randn(1, 8, 3, 3),), 64, 0),  # 8 planes * 9 - 8 outputs = 64
    ("f_adaptive_max_pool3d_return_indices", lambda x: F.adaptive_max_pool3d(x, 1, return_indices=True)[0],
     (randn(1, 1, 2, 2, 2),), 7, 0),  # 8 - 1 output = 7
]


@pytest.mark.parametrize(SIGNATURE, params(POOL_CASES))
def test_pool(case_id: str, model: Any, inputs: tuple, flops: int, macs: int) -> None:
    check(case_id, model, inputs, flops, macs)


# -- softmax and reductions --------------------------------------------------------------------------
REDUCTION_CASES = [
    ("softmax_attention_scores", lambda x: torch.softmax(x, -1), (randn(1, 12, 197, 197),),
     1_394_760, 0),  # 12*197 = 2,364 rows * (3*197 - 1) = 2,364 * 590 = 1,394,760
    ("f_softmax_last", lambda x: F.softmax(x, dim=-1), (randn(2, 5),), 28, 0),  # 2 rows * (15 - 1) = 28
    ("tensor_softmax_dim0", lambda x: x.softmax(0), (randn(2, 5),), 25, 0),  # 5 rows * (6 - 1) = 25
    ("nn_softmax_dim1", nn.Softmax(dim=1), (randn(2, 3, 5),), 80, 0),  # 10 rows * (9 - 1) = 80
    ("torch_softmax_keyword", lambda x: torch.softmax(x, dim=1), (randn(2, 3, 5),), 80, 0),  # 10 * 8
    ("sum_all", lambda x: x.sum(), (randn(10),), 9, 0),  # 10 - 1 adds
    ("torch_sum_all_2d", lambda x: torch.sum(x), (randn(2, 5),), 9, 0),  # 10 - 1
    ("sum_dim", lambda x: x.sum(dim=1), (randn(2, 5),), 8, 0),  # 2 outputs * (5 - 1) = 8
    ("sum_dim_keepdim", lambda x: x.sum(1, keepdim=True), (randn(2, 5),), 8, 0),  # 2 * 4
    ("torch_sum_dims", lambda x: torch.sum(x, dim=(0, 2)), (randn(2, 3, 4),), 21, 0),  # 3 outputs * (8 - 1)
    ("mean_all", lambda x: x.mean(), (randn(2, 5),), 10, 10),  # 1 output * 10; MACs equal (an average)
    ("mean_dim", lambda x: x.mean(dim=1), (randn(2, 5),), 10, 10),  # 2 outputs * 5
    ("torch_mean_dims", lambda x: torch.mean(x, dim=(0, 2), keepdim=True), (randn(2, 3, 4),), 24, 24),  # 3 * 8
    # along dim 0 of (4, 5): 5 lines of 4, 3 steps each: 15
    ("logcumsumexp", lambda x: torch.logcumsumexp(x, 0), (randn(4, 5),), 15, 0),
    ("cummax", lambda x: torch.cummax(x, 0).values, (randn(4, 5),), 15, 0),
    ("cummin", lambda x: x.cummin(1).values, (randn(4, 5),), 4 * 4, 0),  # 4 lines of 5
]


@pytest.mark.parametrize(SIGNATURE, params(REDUCTION_CASES))
def test_softmax_and_reductions(case_id: str, model: Any, inputs: tuple, flops: int, macs: int) -> None:
    check(case_id, model, inputs, flops, macs)


# -- scaled dot-product attention --------------------------------------------------------------------
def _qkv(heads: int = 2, kv_heads: int = 2, q_len: int = 4, kv_len: int = 4, dim: int = 8, value_dim: int = 8) -> tuple:
    return randn(1, heads, q_len, dim), randn(1, kv_heads, kv_len, dim), randn(1, kv_heads, kv_len, value_dim)


# B = 2, L = S = 4, E = Ev = 8: scores 32 * 15 = 480, scaling 32, softmax 8 rows * 11 = 88,
# attention x V 64 * 7 = 448; 1,048 FLOPs. MACs 32*8 + 64*4 = 512. A mask adds 32.
ATTENTION_CASES = [
    ("sdpa", lambda q, k, v: F.scaled_dot_product_attention(q, k, v), _qkv(), 1_048, 512),
    ("sdpa_causal", lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True),
     _qkv(), 1_080, 512),  # the causal mask is an add too: 1,048 + 32
    ("sdpa_scale", lambda q, k, v: F.scaled_dot_product_attention(q, k, v, scale=0.5), _qkv(), 1_048, 512),
    ("sdpa_mask_keyword", Op(lambda q, k, v, mask: F.scaled_dot_product_attention(q, k, v, attn_mask=mask),
                             mask=randn(4, 4)), _qkv(), 1_080, 512),  # 1,048 + 32 mask adds
    ("sdpa_mask_positional", Op(lambda q, k, v, mask: F.scaled_dot_product_attention(q, k, v, mask),
                                mask=randn(4, 4)), _qkv(), 1_080, 512),  # 1,048 + 32
    ("sdpa_bool_mask", Op(lambda q, k, v, mask: F.scaled_dot_product_attention(q, k, v, attn_mask=mask),
                          mask=torch.ones(4, 4, dtype=torch.bool).tril()), _qkv(), 1_096, 512),  # 1,048 + 32 + 16 selects (bool to float mask)
    # B = 2, L = 4, S = 6: scores 48 * 15 = 720, scaling 48, softmax 8 * (18 - 1) = 136,
    # attention x V 64 * (2*6 - 1) = 704; 1,608. MACs 48*8 + 64*6 = 768
    ("sdpa_longer_keys", lambda q, k, v: F.scaled_dot_product_attention(q, k, v), _qkv(kv_len=6), 1_608, 768),
    # Ev = 16: attention x V 128 * 11 = 1,408; 720 + 48 + 136 + 1,408 = 2,312. MACs 384 + 128*6 = 1,152
    ("sdpa_value_dim", lambda q, k, v: F.scaled_dot_product_attention(q, k, v),
     _qkv(kv_len=6, value_dim=16), 2_312, 1_152),
    # grouped-query: 4 query heads over 2 key heads, B = 4: 2 * 1,048 = 2,096; MACs 2 * 512
    ("sdpa_gqa", lambda q, k, v: F.scaled_dot_product_attention(q, k, v, enable_gqa=True),
     _qkv(heads=4, kv_heads=2), 2_096, 1_024, needs_sdpa_gqa),
]


@pytest.mark.parametrize(SIGNATURE, params(ATTENTION_CASES))
def test_attention(case_id: str, model: Any, inputs: tuple, flops: int, macs: int) -> None:
    check(case_id, model, inputs, flops, macs)


# -- known zero --------------------------------------------------------------------------------------
ZERO_CASES = [
    # (id, model, inputs, the target that must appear with status ZERO)
    ("view", lambda x: x.view(6, 4), (randn(2, 3, 4),), "view"),
    ("reshape", lambda x: x.reshape(4, 6), (randn(2, 3, 4),), "reshape"),
    ("torch_reshape", lambda x: torch.reshape(x, (4, 6)), (randn(2, 3, 4),), "torch.reshape"),
    ("permute", lambda x: x.permute(2, 0, 1), (randn(2, 3, 4),), "permute"),
    ("transpose", lambda x: x.transpose(0, 1), (randn(2, 3, 4),), "transpose"),
    ("torch_transpose", lambda x: torch.transpose(x, 0, 1), (randn(2, 3, 4),), "torch.transpose"),
    ("flatten", lambda x: x.flatten(1), (randn(2, 3, 4),), "flatten"),
    ("torch_flatten", lambda x: torch.flatten(x, 1), (randn(2, 3, 4),), "torch.flatten"),
    ("cat", lambda x, y: torch.cat([x, y], dim=1), (randn(2, 3), randn(2, 4)), "torch.cat"),
    ("stack", lambda x, y: torch.stack((x, y)), (randn(2, 3), randn(2, 3)), "torch.stack"),
    ("chunk", lambda x: x.chunk(2, dim=1), (randn(2, 4),), "chunk"),
    ("torch_chunk", lambda x: torch.chunk(x, 2), (randn(2, 4),), "torch.chunk"),
    ("getitem", lambda x: x[0, 1:], (randn(2, 4),), "operator.getitem"),
    ("size", lambda x: x.view(x.size(0), -1), (randn(2, 3, 4),), "size"),
    ("contiguous", lambda x: x.transpose(0, 1).contiguous(), (randn(2, 3, 4),), "contiguous"),
    ("dropout", nn.Dropout(0.5), (randn(2, 3),), ""),
    ("identity", nn.Identity(), (randn(2, 3),), ""),
    ("nn_flatten", nn.Flatten(), (randn(2, 3, 4),), ""),
    ("f_dropout", lambda x: F.dropout(x, 0.5), (randn(2, 3),), "torch.nn.functional.dropout"),
]


@pytest.mark.parametrize("case_id, model, inputs, target", [pytest.param(*c, id=c[0]) for c in ZERO_CASES])
def test_known_zero(case_id: str, model: Any, inputs: tuple, target: str) -> None:
    counter = run(model, inputs)
    records = op_records(counter)
    assert records, "the op left no node"
    for record in records:
        assert record.status is Status.ZERO, (record.name, record.target, record.status)
        assert (record.flops, record.macs) == (0, 0)
    if target:  # functions and methods: the node carries the op's name
        assert target in {r.target for r in records}
    else:  # modules: one call_module node
        assert [r.op for r in records] == ["call_module"]
    assert counter.total_flops == 0 and counter.total_macs == 0


# -- unsupported -------------------------------------------------------------------------------------
def running_total(x: torch.Tensor) -> torch.Tensor:
    """Tensor math hidden from FX: ``torch.fx.wrap`` keeps this call as one opaque node."""
    return torch.cumsum(x, dim=-1) * 2


torch.fx.wrap("running_total")


class LinearThenWrapped(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(5, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return running_total(self.layer(x))


class LinearThenInverse(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.linalg.matrix_exp(self.layer(x))


def test_a_function_without_rule_is_counted_by_the_aten_fallback() -> None:
    counter = run(LinearThenWrapped(), (randn(1, 5),))
    (record,) = [r for r in counter.records if r.target.endswith("running_total")]
    # cumsum over 4 values: 3 adds; * 2: 4 multiplies
    assert record.status is Status.FALLBACK and (record.flops, record.macs) == (3 + 4, 0)
    # Linear: 4 * (2*5 - 1) + 4 = 40; MACs 4*5 + 4 = 24
    assert (counter.total_flops, counter.total_macs) == (40 + 7, 24)
    assert not counter.unsupported


def test_unsupported_names_the_aten_op_and_is_excluded() -> None:
    counter = run(LinearThenInverse(), (randn(4, 4),))
    unsupported = [r for r in counter.records if r.status is Status.UNSUPPORTED]
    (record,) = unsupported
    assert record.op == "call_function" and record.target == "torch.linalg.matrix_exp"
    assert record.unsupported_ops == ("aten.linalg_matrix_exp",)
    assert record.flops is None and record.macs is None
    assert record.output_shapes == ((4, 4),)
    assert counter.unsupported == unsupported
    # only the Linear is counted: 16 * (2*4 - 1) + 16 = 128; MACs 16*4 + 16 = 80
    assert (counter.total_flops, counter.total_macs) == (128, 80)
    assert aggregate.unsupported_by_target(counter.records) == {"torch.linalg.matrix_exp [aten.linalg_matrix_exp]": 1}


# -- transposed convolution -------------------------------------------------------------------------
CONV_TRANSPOSE_CASES = [
    # (1, 4, 5, 5) -> (1, 2, 11, 11): products 100 inputs * 2 * 9 = 1,800; bias 2*11*11 = 242
    ("conv_transpose2d", nn.ConvTranspose2d(4, 2, 3, stride=2), (randn(1, 4, 5, 5),), 3_842, 2_042),
    ("conv_transpose2d_no_bias", nn.ConvTranspose2d(4, 2, 3, stride=2, bias=False), (randn(1, 4, 5, 5),),
     3_600, 1_800),  # 2 * 1,800
    # groups=2: Cout/groups = 2; (2, 4, 3) -> (2, 4, 5): products 24 inputs * 2 * 3 = 144; bias 40
    ("conv_transpose1d_groups", nn.ConvTranspose1d(4, 4, 3, groups=2), (randn(2, 4, 3),), 328, 184),
    # (1, 1, 2, 2, 2) -> (1, 3, 3, 3, 3): products 8 * 3 * 8 = 192; bias 81
    ("conv_transpose3d", nn.ConvTranspose3d(1, 3, 2), (randn(1, 1, 2, 2, 2),), 465, 273),
    ("f_conv_transpose2d_bias_keyword", lambda x: F.conv_transpose2d(x, CT_W, bias=CT_B, stride=2),
     (randn(1, 4, 5, 5),), 3_842, 2_042),  # as conv_transpose2d
]
CT_W, CT_B = torch.randn(4, 2, 3, 3), torch.randn(2)


@pytest.mark.parametrize(SIGNATURE, params(CONV_TRANSPOSE_CASES))
def test_conv_transpose(case_id: str, model: Any, inputs: tuple, flops: int, macs: int) -> None:
    check(case_id, model, inputs, flops, macs)


# -- binding edge cases found in review --------------------------------------------------------------
import warnings  # noqa: E402


def deprecated_addmm_beta_alpha(a: torch.Tensor, m1: torch.Tensor, m2: torch.Tensor) -> torch.Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.addmm(2.0, a, 3.0, m1, m2)


def deprecated_addmm_beta(a: torch.Tensor, m1: torch.Tensor, m2: torch.Tensor) -> torch.Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.addmm(2.0, a, m1, m2)


def deprecated_add_alpha(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.add(a, 2, b)


EDGE_CASES = [
    # a (3, 5) + m1 (3, 7) @ m2 (7, 5): product 15 * (2*7 - 1) = 195 (MACs 15 * 7 = 105);
    # + 15 adds of a + 15 multiplies by beta + 15 by alpha = 240
    ("addmm_positional_beta_alpha", deprecated_addmm_beta_alpha, (randn(3, 5), randn(3, 7), randn(7, 5)), 240, 120),
    ("addmm_positional_beta", deprecated_addmm_beta, (randn(3, 5), randn(3, 7), randn(7, 5)), 225, 120),  # 195 + 15 + 15
    ("add_positional_alpha", deprecated_add_alpha, (randn(3, 5), randn(3, 5)), 30, 0),  # 15 adds + 15 multiplies
    ("clamp_min", lambda x: x.clamp(min=0), (randn(3, 4),), 12, 0),  # 12 elements * 1 bound
    ("clamp_both", lambda x: torch.clamp(x, -1, 1), (randn(3, 4),), 24, 0),  # 12 * 2 bounds
    ("clamp_min_function", lambda x: torch.clamp_min(x, 0.5), (randn(3, 4),), 12, 0),
]


@pytest.mark.parametrize(SIGNATURE, params(EDGE_CASES))
def test_binding_edge_cases(case_id: str, model: Any, inputs: tuple, flops: int, macs: int) -> None:
    check(case_id, model, inputs, flops, macs)


def test_shape_tuple_arithmetic_is_not_arithmetic() -> None:
    class Heads(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.view(x.size()[:-1] + (2, 2)) * 2

    counter = run(Heads(), (randn(2, 3, 4),))
    add = next(r for r in counter.records if r.target == "operator.add")
    assert add.status is Status.RULE and add.flops == 0
    assert counter.total_flops == 24  # only the multiply: 2*3*2*2


@pytest.mark.parametrize(
    "module, x, flops",
    [
        (nn.Softmax(dim=-1), randn(2, 5), 2 * (3 * 5 - 1)),  # 2 rows * 14 = 28
        (nn.AdaptiveAvgPool1d(1), randn(1, 2, 6), 12),  # 2 planes * 6
        (nn.ConvTranspose1d(2, 1, 2, bias=False), randn(1, 2, 3), 2 * 6 * 2),  # 6 inputs * 1 * 2 products, x2
    ],
    ids=["softmax", "adaptive_avg_pool", "conv_transpose"],
)
def test_module_called_with_keyword_input(module: nn.Module, x: torch.Tensor, flops: int) -> None:
    class Keyword(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.m = module

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.m(input=x)

    assert run(Keyword(), (x,)).total_flops == flops


def test_inplace_views_and_indexing_are_known_zero() -> None:
    def fn(x: torch.Tensor) -> torch.Tensor:
        y = x.clone().unsqueeze_(0).transpose_(1, 2)
        return torch.index_select(y.select(0, 0), 0, torch.tensor([0])).gather(1, torch.zeros(1, 2, dtype=torch.long))

    counter = run(fn, (randn(3, 4),))
    assert not counter.unsupported and counter.total_flops == 0


def _parametrized_conv() -> nn.Module:
    conv = nn.Conv2d(2, 4, 3)

    class Doubled(nn.Module):
        def forward(self, weight: torch.Tensor) -> torch.Tensor:
            return weight * 2

    torch.nn.utils.parametrize.register_parametrization(conv, "weight", Doubled())
    return conv


@pytest.mark.parametrize(
    "make",
    [lambda: nn.Conv2d(2, 4, 3), lambda: nn.Conv2d(2, 4, 3, bias=False), lambda: nn.BatchNorm2d(4, affine=False),
     lambda: nn.LayerNorm(4), _parametrized_conv, lambda: torch.nn.utils.parametrizations.weight_norm(nn.Linear(3, 2))],
    ids=["conv", "conv_no_bias", "bn_no_affine", "layer_norm", "parametrized", "weight_norm"],
)
def test_module_tensor_is_getattr(make: Callable[[], nn.Module]) -> None:
    """Rules read weights with ``module_tensor``, which must find what ``getattr`` finds: a registered
    parameter or buffer, ``None`` registered in a parameter's place, a parametrized weight (a property)."""
    from torch_flops.registry import module_tensor

    module = make()
    for name in ("weight", "bias", "running_mean"):
        if not hasattr(module, name):
            continue
        expected, found = getattr(module, name), module_tensor(module, name)
        if isinstance(expected, torch.Tensor):
            assert isinstance(found, torch.Tensor) and torch.equal(found, expected), name
        else:
            assert found is expected, name


def test_fractional_max_pool_backward_scatters_each_gradient() -> None:
    """Each of the 32 output gradients is added into its argmax: 32 adds (as max pooling's)."""
    counter = TorchFLOPsByFX(Op(lambda x: F.fractional_max_pool2d(x, 2, output_size=4)))
    counter.propagate(randn(1, 2, 8, 8).requires_grad_(), backward=True)
    assert counter.total_backward_flops == 2 * 4 * 4
    assert not [r for r in counter.records if r.backward_unsupported_ops]


def test_bilinear_backward_prices_its_three_trilinear_products() -> None:
    """nn.Bilinear(4, 3, 5) on N = 2 rows, all gradients; each _trilinear one output feature at a time:
    grad x1 ``5 * (24 + 8 * (2*3 - 1) + 8)`` = 360; grad W ``5 * (8 + 12 * (2*2 - 1) + 12)`` = 280;
    grad x2 ``5 * (6 * (2*4 - 1) + 6 + 6)`` = 270; grad bias ``5 * (2 - 1)`` = 5."""

    class Model(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layer = nn.Bilinear(4, 3, 5)

        def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            return self.layer(a, b)

    counter = TorchFLOPsByFX(Model())
    counter.propagate(randn(2, 4).requires_grad_(), randn(2, 3).requires_grad_(), backward=True)
    assert counter.total_flops == 280 and not counter.unsupported
    assert counter.total_backward_flops == 360 + 280 + 270 + 5
