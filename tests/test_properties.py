"""Properties of the counts on random small networks (hypothesis).

Every network is a chain of steps drawn at random for the current shape: ``Linear`` (bias or not),
``Conv1d`` / ``Conv2d`` (groups, stride, padding, dilation, bias), BatchNorm / LayerNorm / GroupNorm
(affine or not, weight only), every priced activation, max / average and adaptive pooling, matmul and
bmm, softmax, ``F.scaled_dot_product_attention`` (no mask, a float mask, causal), elementwise
arithmetic, clamp and selects, and the known-zero reshapes between them. Each step is written in one of
its forms (module, ``F.*`` / ``torch.*`` function, ``Tensor`` method, operator), drawn too.

Properties:

1. every node costs what the hand formula of ``docs/conventions.md`` says; the formulas are written
   again below as small pure functions (the library's ``*_cost`` helpers are not imported);
2. the total is the sum of the node costs, and ``profile()``'s MACs are the sum of its rows;
3. the module, functional and method forms of one op cost the same (and compute the same);
4. MACs relate to FLOPs as the conventions document per family;
5. the FX-level total equals the aten-level count, ``count_aten(model, x)[1].cost``;
6. FLOPs and MACs scale linearly with the batch size, node by node.

Two FX vs aten differences are pinned by their own tests (docs/agreement.md): a ``Linear`` on a
non-contiguous N-d input runs as ``mm + add`` (equal FLOPs, ``out_numel`` fewer MACs at the aten
level), and SDPA on CPU's math path (value dim != head dim, 5-D inputs, a last-dim stride other than
1) scales q and k instead of the scores. Random networks therefore make the input of every ``Linear``
contiguous and give SDPA dense inputs. A boolean ``attn_mask`` is drawn too: both levels price its
conversion to a float mask (``mask.numel()`` selects).

Example budget. ``TORCH_FLOPS_HYPOTHESIS_PROFILE`` selects the Hypothesis profile (``default`` or
``deep``, 10x the examples). The profiles are registered as ``torch_flops-default`` /
``torch_flops-deep`` and applied per test, not loaded: registering or loading a profile literally named
``"default"`` would change Hypothesis' settings for every other test of the session. Each test body
counts its runs in ``EXAMPLES``; the last test of the file asserts the default run executed at least
200 examples (``pytest tests/test_properties.py --hypothesis-show-statistics`` shows them too).
"""

from __future__ import annotations

import operator
import os
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from torch_flops import NodeRecord, Status, TorchFLOPsByFX, count_aten, profile
from torch_flops.rules.activation import PER_ELEMENT_FLOPS

Shape = tuple[int, ...]
CostPair = tuple[int, int]  # (FLOPs, MACs)

# -- hypothesis profiles and the example budget --------------------------------------------------------
PROFILE = os.environ.get("TORCH_FLOPS_HYPOTHESIS_PROFILE", "default")
SCALE = {"default": 1, "deep": 10}
if PROFILE not in SCALE:
    raise ValueError(f"TORCH_FLOPS_HYPOTHESIS_PROFILE must be one of {sorted(SCALE)}, got {PROFILE!r}")
for _name, _scale in SCALE.items():
    settings.register_profile(
        f"torch_flops-{_name}",
        deadline=None,
        max_examples=100 * _scale,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        print_blob=True,
    )
MIN_DEFAULT_EXAMPLES = 200
EXAMPLES: Counter[str] = Counter()


def examples(n: int) -> settings:
    """``n`` examples in the default profile, ``10 n`` in the deep one."""
    return settings(settings.get_profile(f"torch_flops-{PROFILE}"), max_examples=n * SCALE[PROFILE])


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


# -- hand formulas (docs/conventions.md), independent of torch_flops.rules -----------------------------
def prod(values: Sequence[int]) -> int:
    result = 1
    for value in values:
        result *= value
    return result


def dot_products(outputs: int, k: int, bias: bool = False) -> CostPair:
    """Linear, matmul, conv: each output is ``k`` multiplies and ``k - 1`` adds; a bias is one more add
    per output, and one more MAC."""
    return outputs * (2 * k - 1) + outputs * bias, outputs * k + outputs * bias


def normalisation(numel: int, weight: bool, bias: bool) -> CostPair:
    """Batch/Layer/GroupNorm: 2 per element to normalise, + 1 for a weight, + 1 for a bias; MACs equal."""
    flops = numel * (2 + weight + bias)
    return flops, flops


def per_element(numel: int, per: int) -> CostPair:
    """Activations and elementwise arithmetic: ``per`` FLOPs per output element, no MACs."""
    return numel * per, 0


def max_pool(outputs: int, window: int) -> CostPair:
    """``window - 1`` comparisons per output."""
    return outputs * (window - 1), 0


def avg_pool(outputs: int, window: int) -> CostPair:
    """``window - 1`` adds and a divide per output; MACs equal."""
    return outputs * window, outputs * window


def adaptive_plane_windows(in_sizes: Sequence[int], out_sizes: Sequence[int]) -> int:
    """Sum of the window sizes of one (N, C) plane; window ``i`` of a dimension spans
    ``[floor(i * in / out), ceil((i + 1) * in / out))`` and windows are separable."""
    total = 1
    for size_in, size_out in zip(in_sizes, out_sizes):
        total *= sum(-(-(i + 1) * size_in // size_out) - i * size_in // size_out for i in range(size_out))
    return total


def softmax(numel: int, n: int) -> CostPair:
    """Per row of ``n``: ``n`` exps, ``n - 1`` adds, ``n`` divides."""
    return numel // n * (3 * n - 1), 0


def attention(b: int, q_len: int, kv_len: int, e: int, ev: int, masked: bool) -> CostPair:
    """SDPA: scores, scaling of the scores, the mask add, softmax over ``S``, attention x V."""
    scores = b * q_len * kv_len
    flops = scores * (2 * e - 1) + scores + masked * scores + b * q_len * (3 * kv_len - 1) + b * q_len * ev * (2 * kv_len - 1)
    return flops, scores * e + b * q_len * ev * kv_len


def conv_out(size: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def pool_out(size: int, kernel: int, stride: int, padding: int, dilation: int, ceil_mode: bool) -> int:
    span = size + 2 * padding - dilation * (kernel - 1) - 1
    out = (-(-span // stride) if ceil_mode else span // stride) + 1
    if ceil_mode and (out - 1) * stride >= size + padding:  # the last window must start inside
        out -= 1
    return out


# Per-element prices of docs/conventions.md ("Activations"); softplus is 3 with beta == 1, else 5.
ACTIVATION_PRICES = {
    "relu": 1, "gelu": 1, "sigmoid": 1, "tanh": 1, "threshold": 1,
    "relu6": 2, "hardtanh": 2, "silu": 2, "logsigmoid": 2, "tanhshrink": 2, "hardshrink": 2, "glu": 2,
    "softsign": 3, "softshrink": 3,
    "hardsigmoid": 4, "leaky_relu": 4, "prelu": 4, "rrelu": 4, "elu": 4,
    "celu": 5, "selu": 5, "hardswish": 5, "mish": 5,
}


def test_hand_formulas_reproduce_the_documented_worked_examples() -> None:
    assert dot_products(4, 5, bias=True) == (40, 24)  # Linear(5, 4) on (1, 5)
    assert dot_products(24, 5, bias=True)[0] == 240  # ... on (2, 3, 5)
    assert dot_products(30, 4) == (210, 120)  # (2, 3, 4) @ (4, 5)
    assert dot_products(512, 3 * 9, bias=True)[0] == 27_648  # Conv2d(3, 8, 3, padding=1) on (1, 3, 8, 8)
    assert dot_products(512, 1 * 9, bias=True)[0] == 9_216  # depthwise
    assert normalisation(197 * 768, True, True)[0] == 605_184  # LayerNorm(768)
    assert per_element(20, ACTIVATION_PRICES["silu"])[0] == 40
    assert max_pool(64 * 56 * 56, 9)[0] == 1_605_632  # MaxPool2d(3, 2, 1) on (1, 64, 112, 112)
    assert 2048 * adaptive_plane_windows((7, 7), (1, 1)) == 100_352  # AdaptiveAvgPool2d(1)
    assert softmax(12 * 197 * 197, 197)[0] == 1_394_760
    assert attention(2, 4, 4, 8, 8, masked=False)[0] == 1_048
    assert pool_out(112, 3, 2, 1, 1, False) == 56


def test_every_priced_activation_has_a_documented_price() -> None:
    """The random networks draw from the library's table; prices come from the docs (above)."""
    assert set(PER_ELEMENT_FLOPS) <= set(ACTIVATION_PRICES)


# -- the networks --------------------------------------------------------------------------------------
class Step(nn.Module):
    """One step of a network: ``forward(x) = fn(self, x)``; ``layer`` (a ``torch.nn`` layer, one
    ``call_module`` node) and ``tensors`` (buffers: weights, statistics, masks, operands) are optional."""

    def __init__(self, fn: Callable[[Step, torch.Tensor], torch.Tensor], layer: nn.Module | None = None,
                 **tensors: torch.Tensor | None) -> None:
        super().__init__()
        self.fn = fn
        if layer is not None:
            self.layer = layer
        for name, tensor in tensors.items():
            self.register_buffer(name, tensor)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(self, x)


class Net(nn.Module):
    def __init__(self, steps: Sequence[nn.Module]) -> None:
        super().__init__()
        self.steps = nn.ModuleList(steps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for step in self.steps:
            x = step(x)
        return x


def loaded(layer: nn.Module, **tensors: torch.Tensor | None) -> nn.Module:
    with torch.no_grad():
        for name, tensor in tensors.items():
            if tensor is not None:
                getattr(layer, name).copy_(tensor)
    return layer.eval()


@dataclass(frozen=True)
class Spec:
    """A step for per-sample input shape ``s`` (the batch dimension excluded): its forms, output shape,
    the hand cost of each priced node and the documented MACs relation. Weights come from ``seed``, so
    every form of one spec computes the same thing."""

    s: Shape
    seed: int
    FORMS: ClassVar[tuple[str, ...]] = ()
    ZERO_MACS: ClassVar[bool] = False  # the family costs no MACs (property 4)

    @property
    def forms(self) -> tuple[str, ...]:
        return self.FORMS

    @property
    def out(self) -> Shape:
        return self.s

    def node_costs(self, n: int) -> list[CostPair]:
        """(FLOPs, MACs) of each priced node of this step, in graph order, at batch size ``n``."""
        raise NotImplementedError

    def flops_from_macs(self, macs: int, n: int) -> int:
        """FLOPs as the documented MACs relation predicts them (families that cost MACs)."""
        raise NotImplementedError

    def build(self, form: str) -> Step:
        raise NotImplementedError

    def randn(self, *shapes: Shape) -> list[torch.Tensor]:
        generator = torch.Generator().manual_seed(self.seed)
        return [torch.randn(*shape, generator=generator) for shape in shapes]


# ---- linear and the matmul family
@dataclass(frozen=True)
class LinearSpec(Spec):
    out_features: int
    bias: bool
    contiguous: bool = True  # make the input contiguous first (see below)
    FORMS = ("module", "F_positional", "F_keyword")

    @property
    def out(self) -> Shape:
        return (*self.s[:-1], self.out_features)

    def node_costs(self, n: int) -> list[CostPair]:
        return [dot_products(n * prod(self.out), self.s[-1], self.bias)]

    def flops_from_macs(self, macs: int, n: int) -> int:
        # FLOPs = out (2k - 1) + bias out, MACs = out k + bias out  =>  FLOPs = 2 MACs - (1 + bias) out
        return 2 * macs - (1 + self.bias) * n * prod(self.out)

    def build(self, form: str) -> Step:
        w, b = self.randn((self.out_features, self.s[-1]), (self.out_features,))
        b = b if self.bias else None
        # an N-d input that is not contiguous runs as mm + add at the aten level (see
        # test_linear_on_a_non_contiguous_input_differs_in_macs_only)
        prepare = (lambda x: x.contiguous()) if self.contiguous else (lambda x: x)  # noqa: E731
        if form == "module":
            layer = loaded(nn.Linear(self.s[-1], self.out_features, bias=self.bias), weight=w, bias=b)
            return Step(lambda m, x: m.layer(prepare(x)), layer)
        if form == "F_positional":
            return Step(lambda m, x: F.linear(prepare(x), m.weight, m.bias), weight=w, bias=b)
        return Step(lambda m, x: F.linear(input=prepare(x), weight=m.weight, bias=m.bias), weight=w, bias=b)


@dataclass(frozen=True)
class MatmulSpec(Spec):
    """``x @ W`` with ``W`` of ``(k, m)``."""

    m: int
    FORMS = ("operator", "torch_matmul", "method_matmul")

    @property
    def out(self) -> Shape:
        return (*self.s[:-1], self.m)

    def node_costs(self, n: int) -> list[CostPair]:
        return [dot_products(n * prod(self.out), self.s[-1])]

    def flops_from_macs(self, macs: int, n: int) -> int:
        return 2 * macs - n * prod(self.out)

    def build(self, form: str) -> Step:
        (w,) = self.randn((self.s[-1], self.m))
        fn = {
            "operator": lambda m, x: x @ m.w,
            "torch_matmul": lambda m, x: torch.matmul(x, m.w),
            "method_matmul": lambda m, x: x.matmul(m.w),
        }[form]
        return Step(fn, w=w)


@dataclass(frozen=True)
class BmmSpec(Spec):
    """``x @ x^T`` per batch element: ``(N, A, k) -> (N, A, A)``."""

    FORMS = ("torch_bmm", "method_bmm", "torch_matmul", "operator")

    @property
    def out(self) -> Shape:
        return (self.s[0], self.s[0])

    def node_costs(self, n: int) -> list[CostPair]:
        return [dot_products(n * prod(self.out), self.s[1])]

    def flops_from_macs(self, macs: int, n: int) -> int:
        return 2 * macs - n * prod(self.out)

    def build(self, form: str) -> Step:
        fn = {
            "torch_bmm": lambda m, x: torch.bmm(x, x.transpose(1, 2)),
            "method_bmm": lambda m, x: x.bmm(x.transpose(1, 2)),
            "torch_matmul": lambda m, x: torch.matmul(x, x.transpose(1, 2)),
            "operator": lambda m, x: x @ x.transpose(-1, -2),
        }[form]
        return Step(fn)


# ---- convolutions
@dataclass(frozen=True)
class ConvSpec(Spec):
    out_channels: int
    kernel: Shape
    stride: Shape
    padding: Shape
    dilation: Shape
    groups: int
    bias: bool
    FORMS = ("module", "F_positional", "F_keyword")

    @property
    def out(self) -> Shape:
        sizes = map(conv_out, self.s[1:], self.kernel, self.stride, self.padding, self.dilation)
        return (self.out_channels, *sizes)

    def node_costs(self, n: int) -> list[CostPair]:
        return [dot_products(n * prod(self.out), self.s[0] // self.groups * prod(self.kernel), self.bias)]

    def flops_from_macs(self, macs: int, n: int) -> int:
        return 2 * macs - (1 + self.bias) * n * prod(self.out)

    def build(self, form: str) -> Step:
        w, b = self.randn((self.out_channels, self.s[0] // self.groups, *self.kernel), (self.out_channels,))
        b = b if self.bias else None
        cls, fn = {1: (nn.Conv1d, F.conv1d), 2: (nn.Conv2d, F.conv2d)}[len(self.kernel)]
        options = dict(stride=self.stride, padding=self.padding, dilation=self.dilation, groups=self.groups)
        if form == "module":
            layer = loaded(cls(self.s[0], self.out_channels, self.kernel, bias=self.bias, **options), weight=w, bias=b)
            return Step(lambda m, x: m.layer(x), layer)
        if form == "F_positional":
            args = (self.stride, self.padding, self.dilation, self.groups)
            return Step(lambda m, x: fn(x, m.weight, m.bias, *args), weight=w, bias=b)
        return Step(lambda m, x: fn(x, m.weight, bias=m.bias, **options), weight=w, bias=b)


# ---- normalisation
class NormSpec(Spec):
    """What batch, layer and group norm share: one normalisation cost, MACs equal to FLOPs, and (unless
    overridden) the module form only when weight and bias are both given or both left out. Each
    subclass declares ``weight`` and ``bias`` among its dataclass fields."""

    weight: bool
    bias: bool

    @property
    def forms(self) -> tuple[str, ...]:
        return (("module",) if self.weight == self.bias else ()) + ("F_positional", "F_keyword")

    def node_costs(self, n: int) -> list[CostPair]:
        return [normalisation(n * prod(self.s), self.weight, self.bias)]

    def flops_from_macs(self, macs: int, n: int) -> int:
        return macs


@dataclass(frozen=True)
class BatchNormSpec(NormSpec):
    weight: bool
    bias: bool

    def build(self, form: str) -> Step:
        c = self.s[0]
        mean, var, w, b = self.randn((c,), (c,), (c,), (c,))
        var = var.abs() + 0.5
        w, b = (w if self.weight else None), (b if self.bias else None)
        if form == "module":
            cls = {2: nn.BatchNorm1d, 3: nn.BatchNorm2d}[len(self.s)]
            layer = loaded(cls(c, affine=self.weight), running_mean=mean, running_var=var, weight=w, bias=b)
            return Step(lambda m, x: m.layer(x), layer)
        stats = dict(mean=mean, var=var, weight=w, bias=b)
        if form == "F_positional":
            return Step(lambda m, x: F.batch_norm(x, m.mean, m.var, m.weight, m.bias, False), **stats)
        return Step(lambda m, x: F.batch_norm(x, m.mean, m.var, weight=m.weight, bias=m.bias, training=False), **stats)


@dataclass(frozen=True)
class LayerNormSpec(NormSpec):
    dims: int  # normalised over the last ``dims`` dimensions
    weight: bool
    bias: bool

    @property
    def forms(self) -> tuple[str, ...]:
        module = self.weight or not self.bias  # nn.LayerNorm has no bias without a weight
        return (("module",) if module else ()) + ("F_positional", "F_keyword")

    def build(self, form: str) -> Step:
        shape = self.s[-self.dims:]
        w, b = self.randn(shape, shape)
        w, b = (w if self.weight else None), (b if self.bias else None)
        if form == "module":
            layer = loaded(nn.LayerNorm(shape, elementwise_affine=self.weight, bias=self.bias), weight=w, bias=b)
            return Step(lambda m, x: m.layer(x), layer)
        if form == "F_positional":
            return Step(lambda m, x: F.layer_norm(x, shape, m.weight, m.bias), weight=w, bias=b)
        return Step(lambda m, x: F.layer_norm(x, normalized_shape=shape, weight=m.weight, bias=m.bias), weight=w, bias=b)


@dataclass(frozen=True)
class GroupNormSpec(NormSpec):
    groups: int
    weight: bool
    bias: bool

    def build(self, form: str) -> Step:
        c = self.s[0]
        w, b = self.randn((c,), (c,))
        w, b = (w if self.weight else None), (b if self.bias else None)
        if form == "module":
            layer = loaded(nn.GroupNorm(self.groups, c, affine=self.weight), weight=w, bias=b)
            return Step(lambda m, x: m.layer(x), layer)
        if form == "F_positional":
            return Step(lambda m, x: F.group_norm(x, self.groups, m.weight, m.bias), weight=w, bias=b)
        return Step(lambda m, x: F.group_norm(x, num_groups=self.groups, weight=m.weight, bias=m.bias), weight=w, bias=b)


# ---- activations
def activation_forms(name: str, option: Any, weight: torch.Tensor) -> dict[str, Callable[[], Step]]:
    """form -> a factory of the step (layers are built only for the form asked for)."""
    def module(make: Callable[[], nn.Module]) -> Callable[[], Step]:
        return lambda: Step(lambda m, x: m.layer(x), make())

    def function(fn: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[], Step]:
        return lambda: Step(lambda m, x: fn(x))

    table: dict[str, dict[str, Callable[[], Step]]] = {
        "relu": {"module": module(nn.ReLU), "F": function(F.relu), "torch": function(torch.relu),
                 "method": function(lambda x: x.relu())},
        "gelu": {"module": module(lambda: nn.GELU(approximate=option)), "F": function(lambda x: F.gelu(x, approximate=option))},
        "sigmoid": {"module": module(nn.Sigmoid), "F": function(F.sigmoid), "torch": function(torch.sigmoid),
                    "method": function(lambda x: x.sigmoid())},
        "tanh": {"module": module(nn.Tanh), "F": function(F.tanh), "torch": function(torch.tanh),
                 "method": function(lambda x: x.tanh())},
        "threshold": {"module": module(lambda: nn.Threshold(0.1, 20.0)), "F": function(lambda x: F.threshold(x, 0.1, 20.0))},
        "hardtanh": {"module": module(lambda: nn.Hardtanh(-0.5, 0.5)), "F": function(lambda x: F.hardtanh(x, -0.5, 0.5))},
        "relu6": {"module": module(nn.ReLU6), "F": function(F.relu6)},
        "silu": {"module": module(nn.SiLU), "F": function(F.silu)},
        "logsigmoid": {"module": module(nn.LogSigmoid), "F": function(F.logsigmoid)},
        "tanhshrink": {"module": module(nn.Tanhshrink), "F": function(F.tanhshrink)},
        "hardshrink": {"module": module(lambda: nn.Hardshrink(0.3)), "F": function(lambda x: F.hardshrink(x, 0.3))},
        "softsign": {"module": module(nn.Softsign), "F": function(F.softsign)},
        "softshrink": {"module": module(lambda: nn.Softshrink(0.3)), "F": function(lambda x: F.softshrink(x, 0.3))},
        "hardsigmoid": {"module": module(nn.Hardsigmoid), "F": function(F.hardsigmoid)},
        "leaky_relu": {"module": module(lambda: nn.LeakyReLU(0.1)), "F": function(lambda x: F.leaky_relu(x, 0.1))},
        "prelu": {"module": module(lambda: loaded(nn.PReLU(option), weight=weight)),
                  "F": lambda: Step(lambda m, x: F.prelu(x, m.weight), weight=weight)},
        "rrelu": {"module": module(lambda: nn.RReLU(0.1, 0.3)), "F": function(lambda x: F.rrelu(x, 0.1, 0.3, training=False))},
        "elu": {"module": module(lambda: nn.ELU(0.7)), "F": function(lambda x: F.elu(x, 0.7))},
        "celu": {"module": module(lambda: nn.CELU(0.7)), "F": function(lambda x: F.celu(x, 0.7))},
        "selu": {"module": module(nn.SELU), "F": function(F.selu)},
        "hardswish": {"module": module(nn.Hardswish), "F": function(F.hardswish)},
        "mish": {"module": module(nn.Mish), "F": function(F.mish)},
        "glu": {"module": module(lambda: nn.GLU(option)), "F": function(lambda x: F.glu(x, option))},
        "softplus": {"module": module(lambda: nn.Softplus(option, 5.0)), "F": function(lambda x: F.softplus(x, option, 5.0)),
                     "F_keyword": function(lambda x: F.softplus(x, beta=option, threshold=5.0))},
    }
    return table[name]


ACTIVATION_FORMS = {name: tuple(activation_forms(name, None, torch.ones(1))) for name in [*ACTIVATION_PRICES, "softplus"]}


@dataclass(frozen=True)
class ActivationSpec(Spec):
    name: str
    option: Any  # gelu: approximate; prelu: num_parameters; glu: dim; softplus: beta
    ZERO_MACS = True

    @property
    def forms(self) -> tuple[str, ...]:
        return ACTIVATION_FORMS[self.name]

    @property
    def out(self) -> Shape:
        if self.name != "glu":
            return self.s
        out = list(self.s)
        out[self.option - 1] //= 2  # option is the dim of the batched tensor
        return tuple(out)

    def node_costs(self, n: int) -> list[CostPair]:
        per = (3 if self.option == 1 else 5) if self.name == "softplus" else ACTIVATION_PRICES[self.name]
        return [per_element(n * prod(self.out), per)]

    def build(self, form: str) -> Step:
        (weight,) = self.randn((self.option if self.name == "prelu" else 1,))
        return activation_forms(self.name, self.option, weight)[form]()


# ---- pooling
@dataclass(frozen=True)
class PoolSpec(Spec):
    kind: str  # "max" | "avg"
    kernel: Shape
    stride: Shape | None  # None: the kernel (PyTorch's default)
    padding: Shape
    dilation: Shape  # 1s for average pooling
    ceil_mode: bool
    count_include_pad: bool

    @property
    def forms(self) -> tuple[str, ...]:
        forms = ("module", "F")
        if len(set(self.kernel)) == 1:
            forms += ("module_int_kernel", "F_int_kernel")  # a 2-D int kernel k is a k x k window
        return forms + (("F_return_indices",) if self.kind == "max" else ())

    @property
    def out(self) -> Shape:
        stride = self.stride or self.kernel
        sizes = map(pool_out, self.s[1:], self.kernel, stride, self.padding, self.dilation, [self.ceil_mode] * 2)
        return (self.s[0], *sizes)

    @property
    def ZERO_MACS(self) -> bool:  # type: ignore[override]
        return self.kind == "max"

    def node_costs(self, n: int) -> list[CostPair]:
        pool = max_pool if self.kind == "max" else avg_pool
        return [pool(n * prod(self.out), prod(self.kernel))]

    def flops_from_macs(self, macs: int, n: int) -> int:
        return macs  # average pooling

    def build(self, form: str) -> Step:
        dim = len(self.kernel)
        kernel: Any = self.kernel[0] if form.endswith("int_kernel") or dim == 1 else self.kernel
        unwrap = (lambda v: v[0]) if dim == 1 else (lambda v: v)  # noqa: E731
        stride = None if self.stride is None else unwrap(self.stride)
        padding, dilation = unwrap(self.padding), unwrap(self.dilation)
        if self.kind == "max":
            cls, fn = {1: (nn.MaxPool1d, F.max_pool1d), 2: (nn.MaxPool2d, F.max_pool2d)}[dim]
            options = dict(stride=stride, padding=padding, dilation=dilation, ceil_mode=self.ceil_mode)
        else:
            cls, fn = {1: (nn.AvgPool1d, F.avg_pool1d), 2: (nn.AvgPool2d, F.avg_pool2d)}[dim]
            options = dict(stride=stride, padding=padding, ceil_mode=self.ceil_mode, count_include_pad=self.count_include_pad)
        if form.startswith("module"):
            return Step(lambda m, x: m.layer(x), cls(kernel, **options))
        if form == "F_return_indices":
            return Step(lambda m, x: fn(x, kernel, **options, return_indices=True)[0])
        return Step(lambda m, x: fn(x, kernel, **options))


@dataclass(frozen=True)
class AdaptivePoolSpec(Spec):
    kind: str  # "max" | "avg"
    output_size: tuple[int | None, ...]  # None keeps the input size

    @property
    def forms(self) -> tuple[str, ...]:
        square = len(set(self.output_size)) == 1 and None not in self.output_size
        return ("module", "F") + (("module_int", "F_int") if square and len(self.output_size) == 2 else ())

    @property
    def out(self) -> Shape:
        return (self.s[0], *(n if o is None else o for n, o in zip(self.s[1:], self.output_size)))

    @property
    def ZERO_MACS(self) -> bool:  # type: ignore[override]
        return self.kind == "max"

    def node_costs(self, n: int) -> list[CostPair]:
        windows = n * self.s[0] * adaptive_plane_windows(self.s[1:], self.out[1:])
        return [(windows - n * prod(self.out), 0) if self.kind == "max" else (windows, windows)]

    def flops_from_macs(self, macs: int, n: int) -> int:
        return macs

    def build(self, form: str) -> Step:
        dim = len(self.output_size)
        size: Any = self.output_size[0] if form.endswith("int") or dim == 1 else self.output_size
        cls, fn = {
            ("max", 1): (nn.AdaptiveMaxPool1d, F.adaptive_max_pool1d), ("max", 2): (nn.AdaptiveMaxPool2d, F.adaptive_max_pool2d),
            ("avg", 1): (nn.AdaptiveAvgPool1d, F.adaptive_avg_pool1d), ("avg", 2): (nn.AdaptiveAvgPool2d, F.adaptive_avg_pool2d),
        }[self.kind, dim]
        if form.startswith("module"):
            return Step(lambda m, x: m.layer(x), cls(size))
        return Step(lambda m, x: fn(x, size))


# ---- softmax and attention
@dataclass(frozen=True)
class SoftmaxSpec(Spec):
    dim: int  # of the batched tensor, 1.. or negative, never the batch (so the cost is linear in it)
    FORMS = ("module", "F", "F_keyword", "torch", "method")
    ZERO_MACS = True

    def node_costs(self, n: int) -> list[CostPair]:
        return [softmax(n * prod(self.s), self.s[self.dim - 1 if self.dim > 0 else self.dim])]

    def build(self, form: str) -> Step:
        dim = self.dim
        if form == "module":
            return Step(lambda m, x: m.layer(x), nn.Softmax(dim))
        fn = {
            "F": lambda m, x: F.softmax(x, dim),
            "F_keyword": lambda m, x: F.softmax(x, dim=dim),
            "torch": lambda m, x: torch.softmax(x, dim),
            "method": lambda m, x: x.softmax(dim),
        }[form]
        return Step(fn)


@dataclass(frozen=True)
class AttentionSpec(Spec):
    """Self-attention ``sdpa(q, q, q)``. A 3-D ``(N, T, D)`` input is split into ``heads``
    (``(N, heads, T, D / heads)``) and merged back; a 4-D input is ``(N, heads, L, E)`` as it is."""

    heads: int
    mask: str  # "none" | "float" | "causal" | "bool"

    @property
    def forms(self) -> tuple[str, ...]:
        return {"none": ("default", "explicit_none"), "causal": ("keyword",)}.get(self.mask, ("positional", "keyword"))

    def dims(self, n: int) -> tuple[int, int, int]:
        """(B, L = S, E)."""
        if len(self.s) == 2:
            return n * self.heads, self.s[0], self.s[1] // self.heads
        return n * self.s[0], self.s[1], self.s[2]

    def bool_mask_selects(self) -> int:
        """A boolean (L, S) mask is first turned into a float one: L * S selects."""
        length = self.s[0] if len(self.s) == 2 else self.s[1]
        return length * length if self.mask == "bool" else 0

    def node_costs(self, n: int) -> list[CostPair]:
        b, length, e = self.dims(n)
        flops, macs = attention(b, length, length, e, e, masked=self.mask != "none")
        return [(flops + self.bool_mask_selects(), macs)]

    def flops_from_macs(self, macs: int, n: int) -> int:
        # FLOPs - 2 MACs = -BLS + BLS (scaling) + mask BLS + BL(3S - 1) - BLEv (+ LS for a bool mask)
        b, length, e = self.dims(n)
        return (2 * macs + (self.mask != "none") * b * length * length + b * length * (3 * length - 1)
                - b * length * e + self.bool_mask_selects())

    def build(self, form: str) -> Step:
        length = self.dims(1)[1]
        mask = None
        if self.mask == "float":
            (mask,) = self.randn((length, length))
        elif self.mask == "bool":
            (mask,) = self.randn((length, length))
            mask = (mask > -0.5) | torch.eye(length, dtype=torch.bool)  # every row attends somewhere
        sdpa = {
            "default": lambda q, m: F.scaled_dot_product_attention(q, q, q),
            "explicit_none": lambda q, m: F.scaled_dot_product_attention(q, q, q, None),
            "positional": lambda q, m: F.scaled_dot_product_attention(q, q, q, m.mask),
            "keyword": (lambda q, m: F.scaled_dot_product_attention(q, q, q, is_causal=True)) if self.mask == "causal"
            else (lambda q, m: F.scaled_dot_product_attention(query=q, key=q, value=q, attn_mask=m.mask)),
        }[form]
        # a copy with a last-dim stride of 1: otherwise (even for a last dim of size 1) CPU SDPA takes the
        # math path, which the aten level prices differently (test_sdpa_on_the_math_path_differs_by_its_scaling)
        dense = lambda q: q.clone(memory_format=torch.contiguous_format)  # noqa: E731
        if len(self.s) == 3:
            return Step(lambda m, x: sdpa(dense(x), m), mask=mask)
        heads = self.heads
        return Step(lambda m, x: sdpa(dense(x.unflatten(-1, (heads, -1)).transpose(1, 2)), m).transpose(1, 2).flatten(2),
                    mask=mask)


# ---- elementwise arithmetic
BINARY_FORMS: dict[str, dict[str, Callable]] = {
    "add": {"operator": lambda x, y: x + y, "reflected": lambda x, y: y + x, "torch": torch.add,
            "method": lambda x, y: x.add(y), "in_place": lambda x, y: x.add_(y), "augmented": operator.iadd},
    "add_alpha": {"torch": lambda x, y: torch.add(x, y, alpha=2), "method": lambda x, y: x.add(y, alpha=2),
                  "in_place": lambda x, y: x.add_(y, alpha=2)},
    "sub": {"operator": lambda x, y: x - y, "torch": torch.sub, "method": lambda x, y: x.sub(y),
            "in_place": lambda x, y: x.sub_(y), "augmented": operator.isub},
    "mul": {"operator": lambda x, y: x * y, "reflected": lambda x, y: y * x, "torch": torch.mul,
            "method": lambda x, y: x.mul(y), "in_place": lambda x, y: x.mul_(y), "augmented": operator.imul},
    "div": {"operator": lambda x, y: x / y, "torch": torch.div, "method": lambda x, y: x.div(y)},
    "maximum": {"torch": torch.maximum, "method": lambda x, y: x.maximum(y)},
    "minimum": {"torch": torch.minimum, "method": lambda x, y: x.minimum(y)},
    "pow": {"operator": lambda x, y: x ** y, "torch": torch.pow, "method": lambda x, y: x.pow(y)},
}
TENSOR_ONLY = {"maximum", "minimum"}
SCALAR_ONLY = {"pow"}


@dataclass(frozen=True)
class BinarySpec(Spec):
    op: str
    operand: Shape | None  # a buffer broadcast to x (never enlarging it), or None for the scalar 2.0
    ZERO_MACS = True

    @property
    def forms(self) -> tuple[str, ...]:
        return tuple(BINARY_FORMS[self.op])

    def node_costs(self, n: int) -> list[CostPair]:
        return [per_element(n * prod(self.s), 2 if self.op == "add_alpha" else 1)]

    def build(self, form: str) -> Step:
        fn = BINARY_FORMS[self.op][form]
        if self.operand is None:
            return Step(lambda m, x: fn(x, 2.0))
        (y,) = self.randn(self.operand)
        return Step(lambda m, x: fn(x, m.y), y=y)


UNARY_FORMS: dict[str, dict[str, Callable]] = {
    "neg": {"operator": operator.neg, "torch": torch.neg, "method": lambda x: x.neg()},
    "abs": {"builtin": abs, "torch": torch.abs, "method": lambda x: x.abs()},
    "exp": {"torch": torch.exp, "method": lambda x: x.exp()},
    "square": {"torch": torch.square, "method": lambda x: x.square()},
    "floor": {"torch": torch.floor, "method": lambda x: x.floor()},
}


@dataclass(frozen=True)
class UnarySpec(Spec):
    op: str
    ZERO_MACS = True

    @property
    def forms(self) -> tuple[str, ...]:
        return tuple(UNARY_FORMS[self.op])

    def node_costs(self, n: int) -> list[CostPair]:
        return [per_element(n * prod(self.s), 1)]

    def build(self, form: str) -> Step:
        fn = UNARY_FORMS[self.op][form]
        return Step(lambda m, x: fn(x))


@dataclass(frozen=True)
class ClampSpec(Spec):
    low: float | None
    high: float | None
    ZERO_MACS = True

    @property
    def forms(self) -> tuple[str, ...]:
        forms = ("torch_clamp", "method_clamp", "torch_clip", "keywords")
        return forms + (("clamp_min",) if self.high is None else ()) + (("clamp_max",) if self.low is None else ())

    def node_costs(self, n: int) -> list[CostPair]:
        # one comparison per element and given bound
        return [per_element(n * prod(self.s), (self.low is not None) + (self.high is not None))]

    def build(self, form: str) -> Step:
        low, high = self.low, self.high
        fn = {
            "torch_clamp": lambda m, x: torch.clamp(x, low, high),
            "method_clamp": lambda m, x: x.clamp(low, high),
            "torch_clip": lambda m, x: torch.clip(x, low, high),
            "keywords": lambda m, x: x.clamp(min=low, max=high),
            "clamp_min": lambda m, x: x.clamp_min(low),
            "clamp_max": lambda m, x: torch.clamp_max(x, high),
        }[form]
        return Step(fn)


@dataclass(frozen=True)
class SelectSpec(Spec):
    """A comparison then a select: ``where(x > 0, x, y)`` or ``masked_fill(x < 0, 0.5)``."""

    op: str  # "where" | "masked_fill"
    operand: Shape | None
    ZERO_MACS = True

    @property
    def forms(self) -> tuple[str, ...]:
        return ("torch", "method") if self.op == "where" else ("method", "torch", "in_place")

    def node_costs(self, n: int) -> list[CostPair]:
        outputs = n * prod(self.s)
        return [per_element(outputs, 1), per_element(outputs, 1)]  # the comparison, the select

    def build(self, form: str) -> Step:
        if self.op == "masked_fill":
            fn = {"method": lambda m, x: x.masked_fill(x < 0, 0.5), "torch": lambda m, x: torch.masked_fill(x, x < 0, 0.5),
                  "in_place": lambda m, x: x.masked_fill_(x < 0, 0.5)}[form]
            return Step(fn)
        y = None if self.operand is None else self.randn(self.operand)[0]
        if form == "torch":
            return Step((lambda m, x: torch.where(x > 0, x, 0.5)) if y is None else (lambda m, x: torch.where(x > 0, x, m.y)), y=y)
        return Step((lambda m, x: x.where(x > 0, 0.5)) if y is None else (lambda m, x: x.where(x > 0, m.y)), y=y)


# ---- known-zero steps between families
@dataclass(frozen=True)
class ReshapeSpec(Spec):
    """``flatten(2)`` of a 4-D tensor, or ``transpose(1, 2)`` of a 3-D one: no arithmetic."""

    @property
    def forms(self) -> tuple[str, ...]:
        return ("method", "torch", "module") if len(self.s) == 3 else ("method", "torch", "permute")

    @property
    def out(self) -> Shape:
        return (self.s[0], self.s[1] * self.s[2]) if len(self.s) == 3 else (self.s[1], self.s[0])

    def node_costs(self, n: int) -> list[CostPair]:
        return []

    def build(self, form: str) -> Step:
        if len(self.s) == 3:
            if form == "module":
                return Step(lambda m, x: m.layer(x), nn.Flatten(2))
            return Step({"method": lambda m, x: x.flatten(2), "torch": lambda m, x: torch.flatten(x, 2)}[form])
        return Step({"method": lambda m, x: x.transpose(1, 2), "torch": lambda m, x: torch.transpose(x, 1, 2),
                     "permute": lambda m, x: x.permute(0, 2, 1)}[form])


# -- strategies ----------------------------------------------------------------------------------------
seeds = st.integers(0, 2**16)
MAX_SIZE = 6


def divisors(n: int, limit: int = 3) -> list[int]:
    return [d for d in range(1, min(n, limit) + 1) if n % d == 0]


@st.composite
def linear_specs(draw, s: Shape) -> Spec:
    return LinearSpec(s, draw(seeds), draw(st.integers(1, MAX_SIZE)), draw(st.booleans()))


@st.composite
def matmul_specs(draw, s: Shape) -> Spec:
    return MatmulSpec(s, draw(seeds), draw(st.integers(1, MAX_SIZE)))


@st.composite
def conv_specs(draw, s: Shape) -> Spec:
    groups = draw(st.sampled_from(divisors(s[0])))
    out_channels = groups * draw(st.integers(1, MAX_SIZE // groups))
    kernel, stride, padding, dilation = [], [], [], []
    for size in s[1:]:
        p = draw(st.integers(0, 1 if size < 8 else 0))
        d = draw(st.integers(1, 2))
        kernel.append(draw(st.integers(1, min(3, (size + 2 * p - 1) // d + 1))))
        stride.append(draw(st.integers(1, 2)))
        padding.append(p)
        dilation.append(d)
    return ConvSpec(s, draw(seeds), out_channels, tuple(kernel), tuple(stride), tuple(padding), tuple(dilation),
                    groups, draw(st.booleans()))


@st.composite
def norm_specs(draw, s: Shape) -> Spec:
    # F.group_norm rejects groups of one value per sample (C / groups * spatial == 1; the batch may be 1)
    groups = [g for g in divisors(s[0], s[0]) if s[0] // g * prod(s[1:]) > 1]
    kind = draw(st.sampled_from(["batch", "layer", "group"] if groups else ["batch", "layer"]))
    weight, bias = draw(st.booleans()), draw(st.booleans())
    if kind == "batch":
        return BatchNormSpec(s, draw(seeds), weight, bias)
    if kind == "layer":
        return LayerNormSpec(s, draw(seeds), draw(st.integers(1, 2)), weight, bias)
    return GroupNormSpec(s, draw(seeds), draw(st.sampled_from(groups)), weight, bias)


ACTIVATION_NAMES = sorted(PER_ELEMENT_FLOPS) + ["rrelu", "softplus"]


@st.composite
def activation_specs(draw, s: Shape, name: str | None = None) -> Spec:
    even_dims = [i + 1 for i, size in enumerate(s) if size % 2 == 0]
    name = name or draw(st.sampled_from([a for a in ACTIVATION_NAMES if a != "glu" or even_dims]))
    option = {
        "gelu": st.sampled_from(["none", "tanh"]),
        "prelu": st.sampled_from([1, s[0]]),
        "glu": st.sampled_from(even_dims or [0]),
        "softplus": st.sampled_from([1.0, 2.0]),
    }.get(name, st.none())
    return ActivationSpec(s, draw(seeds), name, draw(option))


@st.composite
def pool_specs(draw, s: Shape) -> Spec:
    kind = draw(st.sampled_from(["max", "avg"]))
    square = len(s) == 3 and draw(st.booleans())
    kernel, stride, padding, dilation = [], [], [], []
    for size in s[1:]:
        d = draw(st.integers(1, 2)) if kind == "max" else 1
        k = kernel[0] if square and kernel and (kernel[0] - 1) * d < size else draw(st.integers(1, min(3, (size - 1) // d + 1)))
        kernel.append(k)
        stride.append(draw(st.integers(1, 3)))
        padding.append(draw(st.integers(0, k // 2)))
        dilation.append(d)
    return PoolSpec(s, draw(seeds), kind, tuple(kernel), draw(st.none() | st.just(tuple(stride))), tuple(padding),
                    tuple(dilation), draw(st.booleans()), draw(st.booleans()))


@st.composite
def adaptive_specs(draw, s: Shape) -> Spec:
    kind = draw(st.sampled_from(["max", "avg"]))
    if len(s) == 3 and draw(st.booleans()):
        size = draw(st.integers(1, max(s[1:]) + 1))
        return AdaptivePoolSpec(s, draw(seeds), kind, (size, size))
    none = st.none() if len(s) == 3 else st.nothing()  # None entries: 2-D only
    sizes = tuple(draw(st.integers(1, n + 1) | none) for n in s[1:])
    return AdaptivePoolSpec(s, draw(seeds), kind, sizes)


@st.composite
def softmax_specs(draw, s: Shape) -> Spec:
    return SoftmaxSpec(s, draw(seeds), draw(st.sampled_from([*range(1, len(s) + 1), *range(-len(s), 0)])))


@st.composite
def attention_specs(draw, s: Shape, masks: Sequence[str] = ("none", "float", "causal")) -> Spec:
    heads = draw(st.sampled_from(divisors(s[-1]))) if len(s) == 2 else s[0]
    return AttentionSpec(s, draw(seeds), heads, draw(st.sampled_from(list(masks))))


@st.composite
def operand_shapes(draw, s: Shape) -> Shape:
    """A shape that broadcasts to ``s`` (a suffix, some sizes set to 1) or to ``(N, *s)``."""
    start = draw(st.integers(0, len(s)))
    return tuple(size if draw(st.booleans()) else 1 for size in s[start:]) or (1,)


@st.composite
def elementwise_specs(draw, s: Shape) -> Spec:
    kind = draw(st.sampled_from(["binary", "unary", "clamp", "select"]))
    if kind == "binary":
        op = draw(st.sampled_from(sorted(BINARY_FORMS)))
        scalar = op in SCALAR_ONLY or op not in TENSOR_ONLY and draw(st.booleans())
        return BinarySpec(s, draw(seeds), op, None if scalar else draw(operand_shapes(s)))
    if kind == "unary":
        return UnarySpec(s, draw(seeds), draw(st.sampled_from(sorted(UNARY_FORMS))))
    if kind == "clamp":
        low, high = draw(st.sampled_from([(-1.0, 1.0), (-0.5, None), (None, 0.5)]))
        return ClampSpec(s, draw(seeds), low, high)
    op = draw(st.sampled_from(["where", "masked_fill"]))
    return SelectSpec(s, draw(seeds), op, None if op == "masked_fill" or draw(st.booleans()) else draw(operand_shapes(s)))


@st.composite
def reshape_specs(draw, s: Shape) -> Spec:
    return ReshapeSpec(s, draw(seeds))


def families_for(s: Shape) -> dict[str, Callable[[Shape], st.SearchStrategy[Spec]]]:
    """The step strategies that apply to per-sample shape ``s`` ((C, L) or (C, H, W))."""
    families = {
        "linear": linear_specs, "matmul": matmul_specs, "conv": conv_specs, "norm": norm_specs,
        "activation": activation_specs, "pool": pool_specs, "adaptive_pool": adaptive_specs,
        "softmax": softmax_specs, "attention": attention_specs, "elementwise": elementwise_specs,
        "reshape": reshape_specs,
    }
    if len(s) == 2:
        families["bmm"] = lambda s: st.builds(BmmSpec, st.just(s), seeds)
    return families


@st.composite
def layer_specs(draw, s: Shape) -> Spec:
    families = families_for(s)
    return draw(families[draw(st.sampled_from(sorted(families)))](s))


@dataclass(frozen=True)
class Network:
    """A drawn network: the input shape (batch included) and its steps with the form of each."""

    input_shape: Shape
    steps: tuple[tuple[Spec, str], ...]

    def build(self) -> Net:
        return Net([spec.build(form) for spec, form in self.steps]).eval()

    def input(self, batch: int | None = None) -> torch.Tensor:
        """Fresh, reproducible input (steps may work in place)."""
        generator = torch.Generator().manual_seed(len(self.steps))
        x = torch.randn(*self.input_shape, generator=generator)
        return x if batch is None else x[:batch].clone()

    @property
    def out_shape(self) -> Shape:
        return (self.input_shape[0], *self.steps[-1][0].out)


@st.composite
def networks(draw, max_steps: int = 5, min_batch: int = 1) -> Network:
    batch = draw(st.integers(min_batch, 3))
    s: Shape = tuple(draw(st.integers(1, 5)) for _ in range(draw(st.sampled_from([2, 3]))))
    input_shape = (batch, *s)
    steps = []
    for _ in range(draw(st.integers(1, max_steps))):
        spec = draw(layer_specs(s))
        steps.append((spec, draw(st.sampled_from(spec.forms))))
        s = spec.out
    return Network(input_shape, tuple(steps))


# -- running -------------------------------------------------------------------------------------------
def counted(model: nn.Module, *inputs: torch.Tensor) -> TorchFLOPsByFX:
    counter = TorchFLOPsByFX(model)
    counter.propagate(*inputs)
    assert not counter.unsupported, [(r.target, r.unsupported_ops) for r in counter.unsupported]
    return counter


def records_of_step(records: Sequence[NodeRecord], index: int) -> list[NodeRecord]:
    prefix = f"steps.{index}"
    return [r for r in records if r.module_path == prefix or r.module_path.startswith(prefix + ".")]


def priced(records: Sequence[NodeRecord]) -> list[NodeRecord]:
    """The nodes a rule (or the fallback) priced; every other node must be known zero."""
    return [r for r in records if r.status in (Status.RULE, Status.FALLBACK)]


def describe(counter: TorchFLOPsByFX) -> str:
    rows = [f"{r.name:24} {r.target:40} {r.module_path:10} {r.status.value:10} {r.flops} {r.macs} {r.output_shapes}"
            for r in counter.records]
    return "\n".join(rows)


# -- 1. every node costs its hand formula ------------------------------------------------------------
@examples(60)
@given(network=networks())
def test_every_node_costs_its_hand_formula(network: Network) -> None:
    EXAMPLES["node_costs"] += 1
    counter = counted(network.build(), network.input())
    n = network.input_shape[0]
    for index, (spec, form) in enumerate(network.steps):
        step_records = records_of_step(counter.records, index)
        measured = [(r.flops, r.macs) for r in priced(step_records)]
        assert measured == spec.node_costs(n), f"step {index} {spec} ({form}):\n{describe(counter)}"
        assert all(r.flops == 0 and r.status is Status.ZERO for r in step_records if r not in priced(step_records))
    step_paths = {r.module_path for i in range(len(network.steps)) for r in records_of_step(counter.records, i)}
    assert all(r.flops == 0 for r in counter.records if r.module_path not in step_paths)
    (output,) = [r for r in counter.records if r.op == "output"]
    assert output.input_shapes[0] == network.out_shape  # the shapes the hand formulas assumed


# -- 2. totals are sums ------------------------------------------------------------------------------
@examples(30)
@given(network=networks())
def test_totals_are_sums_of_nodes_and_profile_rows(network: Network) -> None:
    EXAMPLES["totals"] += 1
    model = network.build()
    counter = counted(model, network.input())
    assert counter.total_flops == sum(r.flops for r in counter.records)
    assert counter.total_macs == sum(r.macs for r in counter.records)
    assert counter.total_flops == sum(f for spec, _ in network.steps for f, _ in spec.node_costs(network.input_shape[0]))
    macs, params, info = profile(model, network.input(), verbose=False)
    assert macs == sum(layer.macs for layer in info.layers) == info.total_macs == counter.total_macs
    assert sum(layer.flops for layer in info.layers) == counter.total_flops
    assert params == sum(layer.params for layer in info.layers) == sum(p.numel() for p in model.parameters())


# -- 3. the forms of one op agree ----------------------------------------------------------------------
FAMILIES = sorted(families_for((2, 2, 2)))  # every family (bmm: 3-D inputs only, drawn below)


def assert_forms_agree(input_shape: Shape, spec: Spec) -> None:
    """Every form costs the hand formula, node by node, and computes the same values."""
    x = torch.randn(*input_shape)
    costs, outputs = {}, {}
    for form in spec.forms:
        counter = TorchFLOPsByFX(Net([spec.build(form)]).eval())
        outputs[form] = counter.propagate(x.clone())  # a clone: some forms work in place
        assert not counter.unsupported
        costs[form] = [(r.flops, r.macs) for r in priced(counter.records)]
    assert len({tuple(c) for c in costs.values()}) == 1, costs
    assert next(iter(costs.values())) == spec.node_costs(input_shape[0])
    first = next(iter(outputs.values()))
    for form, output in outputs.items():
        torch.testing.assert_close(output, first, equal_nan=True, msg=lambda m: f"{form}: {m}")


@st.composite
def single_steps(draw, family: str) -> tuple[Shape, Spec]:
    rank = 2 if family == "bmm" else draw(st.sampled_from([2, 3]))
    s: Shape = tuple(draw(st.integers(1, 5)) for _ in range(rank))
    spec = draw(families_for(s)[family](s).filter(lambda spec: len(spec.forms) > 1))
    return (draw(st.integers(1, 3)), *s), spec


@pytest.mark.parametrize("family", [*FAMILIES, "bmm"])
@examples(6)
@given(data=st.data())
def test_module_functional_and_method_forms_agree(family: str, data: st.DataObject) -> None:
    EXAMPLES["forms"] += 1
    assert_forms_agree(*data.draw(single_steps(family)))


@st.composite
def activation_steps(draw, name: str) -> tuple[Shape, Spec]:
    s: Shape = tuple(draw(st.integers(1, 4)) for _ in range(draw(st.sampled_from([2, 3]))))
    if name == "glu":
        s = (*s[:-1], 2 * s[-1])
    return (draw(st.integers(1, 3)), *s), draw(activation_specs(s, name))


@pytest.mark.parametrize("name", ACTIVATION_NAMES)
@examples(3)
@given(data=st.data())
def test_every_activation_costs_its_price_in_every_form(name: str, data: st.DataObject) -> None:
    EXAMPLES["activation_forms"] += 1
    assert_forms_agree(*data.draw(activation_steps(name)))


# -- 4. MACs relate to FLOPs as documented -------------------------------------------------------------
@examples(30)
@given(network=networks())
def test_macs_relate_to_flops_as_documented(network: Network) -> None:
    """Products: FLOPs = 2 MACs - out_numel (- out_numel more with a bias); norms and average pooling:
    FLOPs = MACs; SDPA: FLOPs = 2 MACs + mask BLS + BL(3S - 1) - BLEv; activations, max pooling,
    softmax, elementwise: 0 MACs."""
    EXAMPLES["macs_relation"] += 1
    counter = counted(network.build(), network.input())
    n = network.input_shape[0]
    for index, (spec, form) in enumerate(network.steps):
        for record in priced(records_of_step(counter.records, index)):
            if spec.ZERO_MACS:
                assert record.macs == 0, (spec, form, record)
            else:
                assert record.flops == spec.flops_from_macs(record.macs, n), (spec, form, record)


# -- 5. the FX-level total equals the aten-level count -------------------------------------------------
@examples(50)
@given(network=networks())
def test_fx_total_equals_the_aten_count(network: Network) -> None:
    EXAMPLES["aten"] += 1
    model = network.build()
    counter = counted(model, network.input())
    _, tally = count_aten(model.eval(), network.input())
    assert not tally.unsupported
    assert (counter.total_flops, counter.total_macs) == (tally.cost.flops, tally.cost.macs), (
        f"{dict(tally.by_op)}\n{describe(counter)}")


# -- 6. linear in the batch size ----------------------------------------------------------------------
@examples(30)
@given(network=networks(min_batch=2))
def test_costs_scale_linearly_with_the_batch(network: Network) -> None:
    EXAMPLES["batch"] += 1
    model = network.build()
    n = network.input_shape[0]
    full = counted(model, network.input()).records
    one = counted(model, network.input(batch=1)).records
    assert [(r.name, r.flops, r.macs) for r in full] == [(r.name, n * r.flops, n * r.macs) for r in one]


# -- pinned FX vs aten differences ---------------------------------------------------------------------
@examples(15)
@given(batch=st.integers(1, 3), rows=st.integers(1, 4), features=st.integers(2, 5), out=st.integers(1, 5),
       form=st.sampled_from(["module", "F_positional", "F_keyword"]))
def test_linear_on_a_non_contiguous_input_differs_in_macs_only(batch: int, rows: int, features: int, out: int, form: str) -> None:
    """``F.linear`` folds an N-d input into one ``addmm`` only when it is contiguous; otherwise it runs
    ``matmul`` then ``add``: the same FLOPs, but the bias is an elementwise add (0 MACs) at the aten
    level instead of a MAC per output (docs/conventions.md, nn.MultiheadAttention)."""
    EXAMPLES["non_contiguous_linear"] += 1
    spec = LinearSpec((rows, features), 0, out, True, contiguous=False)
    transpose = ReshapeSpec((features, rows), 0).build("method")  # -> (N, rows, features), a view
    model = Net([transpose, spec.build(form)]).eval()
    x = torch.randn(batch, features, rows)
    counter = counted(model, x)
    _, tally = count_aten(model, x)
    out_numel = batch * rows * out
    assert counter.total_flops == tally.cost.flops == dot_products(out_numel, features, bias=True)[0]
    non_contiguous = rows > 1 and features > 1  # a transpose with a dimension of 1 is still contiguous
    assert counter.total_macs - tally.cost.macs == (out_numel if non_contiguous else 0)


def bool_mask_inversion_flops(tally: Any) -> int:
    """torch 2.4's SDPA math path turns a bool (or causal) mask into a float bias with ``logical_not`` then
    ``masked_fill_``, one pass over the ``L S`` mask more than the single ``where`` of later torch."""
    return tally.by_op["aten.logical_not"].flops if "aten.logical_not" in tally.by_op else 0


class Sdpa(nn.Module):
    def __init__(self, mask: torch.Tensor | None, causal: bool) -> None:
        super().__init__()
        self.register_buffer("mask", mask)
        self.causal = causal

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=self.mask, is_causal=self.causal)


@examples(20)
@given(trigger=st.sampled_from(["value_dim", "rank_5", "last_dim_stride"]), batch=st.integers(1, 2),
       heads=st.integers(1, 3), q_len=st.integers(1, 4), kv_len=st.integers(1, 4), e=st.integers(1, 4),
       mask=st.sampled_from(["none", "float", "causal"]))
def test_sdpa_on_the_math_path_differs_by_its_scaling(trigger: str, batch: int, heads: int, q_len: int, kv_len: int,
                                                      e: int, mask: str) -> None:
    """CPU SDPA runs the fused kernel (priced by the formula) unless the value dim differs from the head
    dim, the inputs are not 3-D/4-D or a last dim has a stride other than 1; the math path then
    scales q and k by sqrt(scale) (``numel(q) + numel(k)`` multiplies) where the formula scales the
    ``B L S`` scores, and builds a causal mask with an ``L S`` select. MACs agree
    (docs/agreement.md)."""
    EXAMPLES["sdpa_math_path"] += 1
    dims = (batch, heads, 2) if trigger == "rank_5" else (batch, heads)
    ev = e + 1 if trigger == "value_dim" else e
    q = torch.randn(*dims, q_len, 2 * e)[..., ::2] if trigger == "last_dim_stride" else torch.randn(*dims, q_len, e)
    k, v = torch.randn(*dims, kv_len, e), torch.randn(*dims, kv_len, ev)
    model = Sdpa(torch.randn(q_len, kv_len) if mask == "float" else None, mask == "causal").eval()
    counter = counted(model, q, k, v)
    _, tally = count_aten(model, q, k, v)
    assert "aten._scaled_dot_product_flash_attention_for_cpu" not in tally.by_op
    b = prod(dims)
    assert (counter.total_flops, counter.total_macs) == attention(b, q_len, kv_len, e, ev, masked=mask != "none")
    inversion = bool_mask_inversion_flops(tally)
    assert inversion in (0, q_len * kv_len if mask == "causal" else 0)
    scaling = b * q_len * kv_len - q.numel() - k.numel() - (q_len * kv_len if mask == "causal" else 0) - inversion
    assert (counter.total_flops - tally.cost.flops, counter.total_macs - tally.cost.macs) == (scaling, 0)


@pytest.mark.parametrize("rank", [3, 4])
def test_sdpa_with_a_bool_mask_costs_the_documented_formula(rank: int) -> None:
    s = (4, 6) if rank == 3 else (2, 4, 3)
    spec = AttentionSpec(s, 0, 2 if rank == 3 else s[0], "bool")
    for form in spec.forms:
        counter = counted(Net([spec.build(form)]).eval(), torch.randn(2, *s))
        assert [(r.flops, r.macs) for r in priced(counter.records)] == spec.node_costs(2)


@pytest.mark.parametrize("rank", [3, 4])
def test_sdpa_with_a_bool_mask_fx_equals_aten(rank: int) -> None:
    s = (4, 6) if rank == 3 else (2, 4, 3)
    spec = AttentionSpec(s, 0, 2 if rank == 3 else s[0], "bool")
    model = Net([spec.build("positional")]).eval()
    x = torch.randn(2, *s)
    counter = counted(model, x)
    _, tally = count_aten(model, x)
    inversion = bool_mask_inversion_flops(tally)
    assert inversion in (0, spec.bool_mask_selects())  # 0, or once more over the (L, S) mask
    assert (counter.total_flops + inversion, counter.total_macs) == (tally.cost.flops, tally.cost.macs), dict(tally.by_op)


# -- the example budget ------------------------------------------------------------------------------
HYPOTHESIS_TESTS = {"node_costs", "totals", "forms", "activation_forms", "macs_relation", "aten", "batch",
                    "non_contiguous_linear", "sdpa_math_path"}


def test_zz_the_run_executed_enough_examples() -> None:
    """Runs last (file order). Skipped when only part of the file ran (``-k``, a failure elsewhere)."""
    if set(EXAMPLES) != HYPOTHESIS_TESTS:
        pytest.skip(f"only {sorted(EXAMPLES)} of the hypothesis tests ran")
    total = sum(EXAMPLES.values())
    print(f"\nhypothesis examples executed ({PROFILE} profile): {total} {dict(EXAMPLES)}")
    assert total >= MIN_DEFAULT_EXAMPLES * SCALE[PROFILE], dict(EXAMPLES)
