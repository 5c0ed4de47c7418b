"""Two independent counts agree: the FX rule level and the aten level.

For a model and its inputs, ``TorchFLOPsByFX(model).propagate(*inputs)`` prices every FX node with its
rule; ``count_aten(model.eval(), *inputs)`` prices every aten op the same forward dispatches. The two
totals, FLOPs and MACs, must be equal. They are compared family by family (linear/matmul, conv, norm,
activation, pool, softmax, attention, elementwise, reduction, ...): FX records are bucketed by their
module class or target, aten ops by name, into the same families, and a mismatch reports the table of
per-family differences.

Where the two legitimately differ, the difference is in :data:`ALLOW_LIST` (family, models, the exact
expected difference as a formula of the run, reason), mirrored in ``docs/agreement.md``; any other
difference fails.

Default run: every small model of ``tests/models.py`` plus two cases that exercise the allow-list.
``-m slow``: the 33 torchvision classification models of ``tests/test_benchmarks.py`` and timm's
resnet50, vit_base_patch16_224 (fused attention on and off), convnext_tiny and efficientnet_b0; the last
slow test checks the agreement table of ``docs/agreement.md`` against the run
(``TORCH_FLOPS_UPDATE_AGREEMENT=1`` rewrites it).
"""

from __future__ import annotations

import ast
import fnmatch
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from models import Branchy, HasBranchy, NoParams, Op, SimpleModel, SmallConvNet, TwoInputs
from torch_flops import Cost, NodeRecord, Status, TorchFLOPsByFX, count_aten

ZERO = Cost(0, 0)


# -- families ------------------------------------------------------------------------------------------
FAMILY_NAMES: dict[str, tuple[str, ...]] = {
    # op names: FX function / method targets (last dotted part) and aten packets, one table for both
    "linear/matmul": (
        "linear", "matmul", "mm", "bmm", "addmm", "baddbmm", "addbmm", "addmv", "mv", "dot", "vdot", "inner",
        "einsum", "bilinear",
    ),
    "conv": (
        "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d", "convolution",
        "_convolution", "convolution_overrideable", "mkldnn_convolution", "cudnn_convolution", "miopen_convolution",
        "_conv_depthwise2d", "conv_depthwise3d", "cudnn_convolution_transpose", "miopen_convolution_transpose",
    ),
    "norm": (
        "batch_norm", "instance_norm", "layer_norm", "group_norm", "rms_norm", "native_batch_norm",
        "_native_batch_norm_legit", "_native_batch_norm_legit_no_training", "cudnn_batch_norm", "miopen_batch_norm",
        "native_layer_norm", "native_group_norm", "_fused_rms_norm",
    ),
    "activation": (
        "relu", "relu6", "gelu", "silu", "sigmoid", "tanh", "hardtanh", "hardswish", "hardsigmoid", "leaky_relu",
        "elu", "selu", "celu", "mish", "softplus", "glu", "prelu", "_prelu_kernel", "rrelu", "rrelu_with_noise",
        "threshold", "logsigmoid", "log_sigmoid", "log_sigmoid_forward", "hardshrink", "softshrink", "tanhshrink",
        "softsign",
    ),
    # averaging reductions share the family of average pooling: AdaptiveAvgPool2d(1) runs as aten.mean
    "pool/mean": (
        "max_pool1d", "max_pool2d", "max_pool3d", "max_pool1d_with_indices", "max_pool2d_with_indices",
        "max_pool3d_with_indices", "mkldnn_max_pool2d", "mkldnn_max_pool3d", "avg_pool1d", "avg_pool2d",
        "avg_pool3d", "mkldnn_avg_pool2d", "mkldnn_avg_pool3d", "adaptive_max_pool1d", "adaptive_max_pool2d",
        "adaptive_max_pool3d", "adaptive_max_pool1d_with_indices", "adaptive_max_pool2d_with_indices",
        "adaptive_max_pool3d_with_indices", "adaptive_avg_pool1d", "adaptive_avg_pool2d", "adaptive_avg_pool3d",
        "_adaptive_avg_pool2d", "_adaptive_avg_pool3d", "mkldnn_adaptive_avg_pool2d", "mean", "nanmean",
    ),
    "softmax": ("softmax", "_softmax", "_safe_softmax", "log_softmax", "_log_softmax", "softmin"),
    "attention": (
        "scaled_dot_product_attention", "_scaled_dot_product_flash_attention",
        "_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_efficient_attention",
        "_scaled_dot_product_cudnn_attention", "_scaled_dot_product_fused_attention_overrideable",
        "_native_multi_head_attention", "multi_head_attention_forward",
    ),
    "reduction": (
        "sum", "nansum", "prod", "any", "all", "max", "min", "amax", "amin", "argmax", "argmin", "var", "std",
        "var_mean", "std_mean", "norm", "linalg_vector_norm", "vector_norm", "logsumexp", "cumsum", "cumprod",
    ),
    "elementwise": (
        "add", "sub", "subtract", "rsub", "mul", "multiply", "div", "divide", "true_divide", "truediv",
        "floordiv", "floor_divide", "remainder", "fmod", "mod", "pow", "eq", "ne", "lt", "le", "gt", "ge",
        "maximum", "minimum", "fmax", "fmin", "atan2", "hypot", "copysign", "xlogy", "logaddexp", "logical_and",
        "logical_or", "logical_xor", "logical_not", "bitwise_and", "bitwise_or", "bitwise_xor", "bitwise_not",
        "and", "or", "xor", "invert", "isclose", "neg", "negative", "abs", "exp", "exp2", "expm1", "log", "log2",
        "log10", "log1p", "sqrt", "rsqrt", "reciprocal", "square", "sin", "cos", "tan", "asin", "acos", "atan",
        "sinh", "cosh", "asinh", "acosh", "atanh", "erf", "erfc", "erfinv", "floor", "ceil", "round", "trunc",
        "frac", "sign", "sgn", "signbit", "isnan", "isinf", "isfinite", "nan_to_num", "where", "masked_fill",
        "clamp", "clip", "clamp_min", "clamp_max", "lerp", "addcmul", "addcdiv",
    ),
}
FAMILY_OF_NAME = {name: family for family, names in FAMILY_NAMES.items() for name in names}
SCALAR = "python scalar"  # FX-only: arithmetic on Python numbers (shape arithmetic), 1 FLOP per node
OTHER = "other"


def family_of_name(name: str) -> str:
    """``add``, ``add_``, ``__radd__``, ``iadd``, ``aten.add`` ... -> their family; else ``other``."""
    name = name.rsplit(".", 1)[-1]
    candidates = [name, name.rstrip("_"), name.strip("_")]
    core = name.strip("_")
    if core[:1] in ("r", "i"):  # reflected and augmented operators: __radd__, iadd, __imul__
        candidates.append(core[1:])
    return next((FAMILY_OF_NAME[c] for c in candidates if c in FAMILY_OF_NAME), OTHER)


MODULE_FAMILIES: tuple[tuple[tuple[type, ...], str], ...] = (
    ((nn.Linear, nn.Bilinear), "linear/matmul"),
    ((nn.modules.conv._ConvNd,), "conv"),
    ((nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm, nn.LayerNorm, nn.GroupNorm,
      *([nn.RMSNorm] if hasattr(nn, "RMSNorm") else [])), "norm"),
    ((nn.Softmax, nn.LogSoftmax, nn.Softmin, nn.Softmax2d), "softmax"),
    ((nn.MultiheadAttention,), "attention"),
)


def family_of_module(module: nn.Module) -> str:
    for classes, family in MODULE_FAMILIES:
        if isinstance(module, classes):
            return family
    defined_in = type(module).__module__
    if defined_in == "torch.nn.modules.activation":
        return "activation"
    if defined_in == "torch.nn.modules.pooling":
        return "pool/mean"
    return OTHER


def add_to(buckets: dict[str, Cost], family: str, cost: Cost) -> None:
    if cost != ZERO:
        buckets[family] = buckets.get(family, ZERO) + cost


def aten_families(by_op: Mapping[str, Cost]) -> dict[str, Cost]:
    """The aten tally (``tally.by_op``, keyed ``'aten.mm'``) summed by family."""
    buckets: dict[str, Cost] = {}
    for label, cost in by_op.items():
        add_to(buckets, family_of_name(label), cost)
    return buckets


def is_scalar_op(record: NodeRecord) -> bool:
    """A counted call whose output holds no tensor: arithmetic on Python numbers (``H == 224``)."""
    return record.op in ("call_function", "call_method") and not record.output_shapes and bool(record.flops)


def fx_families(records: Sequence[NodeRecord], gm: fx.GraphModule,
                fallback_ops: Mapping[str, Mapping[str, Cost]] | None = None) -> dict[str, Cost]:
    """FX records summed by family. A node the aten fallback priced is split by the aten ops it ran
    (``fallback_ops``, from :class:`Inspector`), bucketed as the aten side is."""
    fallback_ops = fallback_ops or {}
    buckets: dict[str, Cost] = {}
    for record in records:
        cost = Cost(record.flops or 0, record.macs or 0)
        if cost == ZERO:
            continue
        if record.status is Status.FALLBACK:
            for family, part in aten_families(fallback_ops[record.name]).items():
                add_to(buckets, family, part)
        elif is_scalar_op(record):
            add_to(buckets, SCALAR, cost)
        elif record.op == "call_module":
            add_to(buckets, family_of_module(gm.get_submodule(record.target)), cost)
        else:
            add_to(buckets, family_of_name(record.target), cost)
    return buckets


class Inspector(fx.Interpreter):
    """Runs the counter's graph once more to learn what records do not hold: the aten ops of the
    nodes the fallback priced (``fallback_ops``), and the ``Linear`` / ``F.linear`` nodes with a bias
    whose N-d input is not contiguous, which ATen runs as ``matmul + add`` instead of one ``addmm``
    (``split_linear_outputs``: their output elements)."""

    def __init__(self, gm: fx.GraphModule, fallback_names: Iterable[str]) -> None:
        super().__init__(gm)
        self.fallback_names = set(fallback_names)
        self.fallback_ops: dict[str, dict[str, Cost]] = {}
        self.split_linear_outputs = 0

    def run_node(self, n: fx.Node) -> Any:
        with self._set_current_node(n):
            args, kwargs = self.fetch_args_kwargs_from_env(n)
        if n.name in self.fallback_names:
            result, tally = count_aten(getattr(self, n.op), n.target, args, kwargs)
            self.fallback_ops[n.name] = dict(tally.by_op)
            return result
        result = super().run_node(n)
        if n.op == "call_module" and isinstance(self.module.get_submodule(n.target), nn.Linear):
            x, bias = args[0] if args else kwargs["input"], self.module.get_submodule(n.target).bias
        elif n.op == "call_function" and n.target is F.linear:
            x = args[0] if args else kwargs["input"]
            bias = args[2] if len(args) > 2 else kwargs.get("bias")
        else:
            return result
        if bias is not None and x.dim() > 2 and not x.is_contiguous():
            self.split_linear_outputs += result.numel()
        return result


# -- the allow-list ------------------------------------------------------------------------------------
@dataclass
class Run:
    """One model counted both ways."""

    model_id: str
    records: list[NodeRecord]
    fx: Cost
    aten: Cost
    fx_families: dict[str, Cost]
    aten_families: dict[str, Cost]
    split_linear_outputs: int = 0
    allowed: dict[str, Cost] = field(default_factory=dict)
    used: list[str] = field(default_factory=list)

    @property
    def differences(self) -> dict[str, Cost]:
        """FX minus aten, per family, where they differ."""
        families = sorted(set(self.fx_families) | set(self.aten_families))
        diffs = {f: subtract(self.fx_families.get(f, ZERO), self.aten_families.get(f, ZERO)) for f in families}
        return {f: d for f, d in diffs.items() if d != ZERO}

    @property
    def unexplained(self) -> dict[str, Cost]:
        families = set(self.differences) | set(self.allowed)
        diffs = {f: subtract(self.differences.get(f, ZERO), self.allowed.get(f, ZERO)) for f in families}
        return {f: d for f, d in sorted(diffs.items()) if d != ZERO}

    def report(self) -> str:
        rows = [f"{self.model_id}: FX {self.fx}, aten {self.aten}; unexplained per family: {self.unexplained}",
                f"{'family':16} {'FX FLOPs':>16} {'aten FLOPs':>16} {'FX MACs':>16} {'aten MACs':>16} {'allowed':>24}"]
        for family in sorted(set(self.fx_families) | set(self.aten_families) | set(self.allowed)):
            fx_cost, aten_cost = self.fx_families.get(family, ZERO), self.aten_families.get(family, ZERO)
            allowed = self.allowed.get(family, ZERO)
            mark = "  <-- differs" if family in self.unexplained else ""
            rows.append(f"{family:16} {fx_cost.flops:16,} {aten_cost.flops:16,} {fx_cost.macs:16,} "
                        f"{aten_cost.macs:16,} {allowed.flops:>11,}/{allowed.macs:<11,}{mark}")
        return "\n".join(rows)


def subtract(a: Cost, b: Cost) -> Cost:
    return Cost(a.flops - b.flops, a.macs - b.macs)


@dataclass(frozen=True)
class Allowance:
    """A legitimate FX vs aten difference: ``expected(run)`` is the exact FX - aten difference of each
    family, for models whose id matches one of ``models`` (fnmatch patterns)."""

    name: str
    models: tuple[str, ...]
    expected: Callable[[Run], dict[str, Cost]]
    reason: str


def scalar_ops(run: Run) -> dict[str, Cost]:
    return {SCALAR: Cost(sum(1 for r in run.records if is_scalar_op(r)), 0)}


def split_linear(run: Run) -> dict[str, Cost]:
    n = run.split_linear_outputs
    return {"linear/matmul": Cost(n, n), "elementwise": Cost(-n, 0)}


ALLOW_LIST: tuple[Allowance, ...] = (
    Allowance(
        "python-scalar-arithmetic",
        ("in-repo/ScalarAssert", "torchvision/shufflenet_v2_*", "timm/vit_base_patch16_224*", "timm/efficientnet_b0"),
        scalar_ops,
        "Arithmetic on Python numbers is an FX node that costs 1 FLOP (docs/conventions.md, as upstream "
        "torch_flops counts it) but dispatches no aten op: timm's traced _assert(H == 224) (ViT's PatchEmbed, "
        "2 nodes) and _assert(x.ndim == 4) (BatchNormAct2d, 49 in efficientnet_b0), torchvision's "
        "channel_shuffle `num_channels // groups` (16 in ShuffleNetV2). FX - aten = 1 FLOP per such node.",
    ),
    Allowance(
        "linear-on-non-contiguous-input",
        ("in-repo/TransposedLinear",),
        split_linear,
        "F.linear folds an N-d input into one aten.addmm only when it is contiguous; otherwise it runs "
        "matmul then add: the same FLOPs, but the bias add is elementwise (0 MACs) at the aten level. "
        "FX - aten = out_numel FLOPs and MACs in linear/matmul, -out_numel FLOPs in elementwise, per such node.",
    ),
)


def apply_allow_list(run: Run) -> Run:
    for allowance in ALLOW_LIST:
        if not any(fnmatch.fnmatchcase(run.model_id, pattern) for pattern in allowance.models):
            continue
        expected = {family: cost for family, cost in allowance.expected(run).items() if cost != ZERO}
        if expected:
            run.used.append(allowance.name)
        for family, cost in expected.items():
            run.allowed[family] = run.allowed.get(family, ZERO) + cost
    return run


# -- counting both ways ---------------------------------------------------------------------------------
def clone(inputs: Sequence[Any]) -> tuple[Any, ...]:
    return tuple(x.clone() if isinstance(x, torch.Tensor) else x for x in inputs)


def agreement(model_id: str, model: nn.Module, inputs: Sequence[Any], **counter_options: Any) -> Run:
    """Count ``model`` on ``inputs`` at the FX level and the aten level; bucket both by family and
    apply the allow-list."""
    model.eval()
    counter = TorchFLOPsByFX(model, **counter_options)
    counter.propagate(*clone(inputs))
    _, tally = count_aten(model.eval(), *clone(inputs))
    assert not counter.unsupported, [(r.target, r.unsupported_ops) for r in counter.unsupported]
    assert not tally.unsupported, dict(tally.unsupported)
    records = counter.records
    fx_total, aten_total = Cost(counter.total_flops, counter.total_macs), tally.cost
    fallback = [r.name for r in records if r.status is Status.FALLBACK and (r.flops or r.macs)]
    inspector = Inspector(counter.graph_model, fallback)
    if fallback or fx_total != aten_total:
        with torch.no_grad():
            inspector.run(*clone(inputs))
    run = Run(model_id, records, fx_total, aten_total, fx_families(records, counter.graph_model, inspector.fallback_ops),
              aten_families(tally.by_op), inspector.split_linear_outputs)
    return apply_allow_list(run)


def assert_agrees(run: Run) -> None:
    assert not run.unexplained, run.report()
    assert sum_costs(run.fx_families.values()) == run.fx and sum_costs(run.aten_families.values()) == run.aten
    assert subtract(run.fx, run.aten) == sum_costs(run.allowed.values()), run.report()


def sum_costs(costs: Iterable[Cost]) -> Cost:
    total = ZERO
    for cost in costs:
        total = total + cost
    return total


# -- default run: the in-repo models -------------------------------------------------------------------
class ScalarAssert(nn.Module):
    """timm's pattern: a traced ``_assert`` on a shape; the comparison is a Python-scalar FX node."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        torch._assert(x.shape[-1] == 8, "expected 8 features")
        return self.fc(x)


class TransposedLinear(nn.Module):
    """A ``Linear`` on a transposed (non-contiguous) 3-D input."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.transpose(1, 2)) + F.linear(x.transpose(1, 2), self.fc.weight)  # the second has no bias


IN_REPO: dict[str, tuple[Callable[[], nn.Module], Callable[[], tuple[Any, ...]]]] = {
    "SimpleModel": (SimpleModel, lambda: (torch.randn(2, 5),)),
    "SimpleModel(add_one)": (lambda: SimpleModel(add_one=True), lambda: (torch.randn(2, 3, 5),)),
    "SimpleModel(bias=False)": (lambda: SimpleModel(bias=False), lambda: (torch.randn(1, 5),)),
    "SmallConvNet": (SmallConvNet, lambda: (torch.randn(2, 3, 8, 8),)),
    "Branchy(linear branch)": (Branchy, lambda: (torch.rand(3, 4),)),  # untraceable root: one fallback node
    "Branchy(identity branch)": (Branchy, lambda: (-torch.rand(3, 4),)),
    "HasBranchy": (HasBranchy, lambda: (torch.randn(3, 4),)),
    "TwoInputs": (TwoInputs, lambda: (torch.randn(2, 3), torch.randn(2, 3))),
    "NoParams": (NoParams, lambda: (torch.randn(3, 4), torch.randn(4, 2))),
    "Op": (lambda: Op(lambda a, b: torch.softmax(a @ b, dim=-1).clamp(min=0.1) * 2 - b.sum()),
           lambda: (torch.randn(2, 3, 4), torch.randn(4, 4))),
    "ScalarAssert": (ScalarAssert, lambda: (torch.randn(2, 8),)),
    "TransposedLinear": (TransposedLinear, lambda: (torch.randn(2, 3, 5),)),
}


@pytest.mark.parametrize("name", list(IN_REPO))
def test_in_repo_model_agrees(name: str) -> None:
    torch.manual_seed(0)
    build, make_inputs = IN_REPO[name]
    assert_agrees(agreement(f"in-repo/{name}", build(), make_inputs()))


def test_allow_list_entries_are_exercised_with_their_exact_values() -> None:
    scalar = agreement("in-repo/ScalarAssert", ScalarAssert(), (torch.randn(2, 8),))
    assert scalar.used == ["python-scalar-arithmetic"]
    assert scalar.differences == {SCALAR: Cost(1, 0)}  # x.shape[-1] == 8
    split = agreement("in-repo/TransposedLinear", TransposedLinear(), (torch.randn(2, 3, 5),))
    assert split.used == ["linear-on-non-contiguous-input"]
    assert split.split_linear_outputs == 2 * 5 * 4  # only the Linear with a bias is split
    assert split.differences == {"linear/matmul": Cost(40, 40), "elementwise": Cost(-40, 0)}
    assert split.fx.flops == split.aten.flops and split.fx.macs - split.aten.macs == 40


def test_an_allowance_only_applies_to_the_models_it_names() -> None:
    run = agreement("in-repo/SomethingElse", ScalarAssert(), (torch.randn(2, 8),))
    assert run.used == [] and run.unexplained == {SCALAR: Cost(1, 0)}
    with pytest.raises(AssertionError, match=r"python scalar .*<-- differs"):
        assert_agrees(run)


def test_a_mispriced_rule_is_reported_by_family() -> None:
    """A wrong FX rule shows up in its own family's row, not only in the total."""
    def wrong_linear(call) -> Cost:
        return Cost(7, 3)

    run = agreement("in-repo/SmallConvNet", SmallConvNet(), (torch.randn(1, 3, 8, 8),), extra_rules={nn.Linear: wrong_linear})
    fc = 10 * (2 * 64 - 1) + 10  # Linear(64, 10) on (1, 64)
    assert run.unexplained == {"linear/matmul": Cost(7 - fc, 3 - (10 * 64 + 10))}
    with pytest.raises(AssertionError, match=r"linear/matmul .*<-- differs"):
        assert_agrees(run)


@pytest.mark.parametrize("name, family", [
    ("aten.addmm", "linear/matmul"), ("aten.convolution", "conv"), ("aten._native_batch_norm_legit_no_training", "norm"),
    ("aten.hardswish_", "activation"), ("aten.mean", "pool/mean"), ("aten._safe_softmax", "softmax"),
    ("aten._scaled_dot_product_flash_attention_for_cpu", "attention"), ("aten.add_", "elementwise"),
    ("operator.iadd", "elementwise"), ("__radd__", "elementwise"), ("torch.nn.functional.linear", "linear/matmul"),
    ("operator.matmul", "linear/matmul"), ("relu", "activation"), ("round", "elementwise"), ("aten.linalg_inv_ex", OTHER),
])
def test_op_names_are_bucketed_into_families(name: str, family: str) -> None:
    assert family_of_name(name) == family


def test_sdpa_math_path_decomposes_differently() -> None:
    """A value dim other than the head dim (or 2-D / 5-D inputs) makes CPU SDPA take the math path,
    which scales q and k by sqrt(scale) instead of the scores: aten counts numel(q) + numel(k) of
    multiplies where the FX formula counts B L S, and the rest lands in linear/matmul and softmax.
    Not allow-listed: no model in the sweep takes this path (see docs/agreement.md)."""
    q, k, v = torch.randn(1, 2, 4, 8), torch.randn(1, 2, 3, 8), torch.randn(1, 2, 3, 5)
    run = agreement("in-repo/SdpaMath", Op(lambda q, k, v: F.scaled_dot_product_attention(q, k, v)), (q, k, v))
    b, length, s, e, ev = 2, 4, 3, 8, 5
    formula = Cost(b * length * s * (2 * e - 1) + b * length * s + b * length * (3 * s - 1) + b * length * ev * (2 * s - 1),
                   b * length * s * e + b * length * ev * s)
    assert run.fx == run.fx_families["attention"] == formula
    assert run.aten_families["elementwise"] == Cost(q.numel() + k.numel(), 0)
    assert run.differences == {
        "attention": formula,
        "linear/matmul": Cost(-(b * length * s * (2 * e - 1) + b * length * ev * (2 * s - 1)), -formula.macs),
        "softmax": Cost(-b * length * (3 * s - 1), 0),
        "elementwise": Cost(-(q.numel() + k.numel()), 0),
    }
    assert run.fx.flops - run.aten.flops == b * length * s - q.numel() - k.numel()


# -- slow: torchvision classification models and timm -------------------------------------------------
def timm_model(name: str, fused_attn: bool | None = None) -> nn.Module:
    timm = pytest.importorskip("timm")
    model = timm.create_model(name, pretrained=False)
    if fused_attn is not None:
        for module in model.modules():
            if hasattr(module, "fused_attn"):
                module.fused_attn = fused_attn
    return model


TIMM: dict[str, Callable[[], nn.Module]] = {
    "timm/resnet50": lambda: timm_model("resnet50"),
    "timm/vit_base_patch16_224 (fused attention)": lambda: timm_model("vit_base_patch16_224", fused_attn=True),
    "timm/vit_base_patch16_224 (explicit attention)": lambda: timm_model("vit_base_patch16_224", fused_attn=False),
    "timm/convnext_tiny": lambda: timm_model("convnext_tiny"),
    "timm/efficientnet_b0": lambda: timm_model("efficientnet_b0"),
}
RESULTS: dict[str, Run] = {}


def torchvision_models() -> list[str]:
    """``MODELS`` of tests/test_benchmarks.py, read without importing it (that imports torchvision,
    seconds of collection time for a default run that does not use it)."""
    tree = ast.parse((Path(__file__).parent / "test_benchmarks.py").read_text())
    (models,) = [node.value for node in tree.body if isinstance(node, ast.Assign)
                 and [getattr(t, "id", None) for t in node.targets] == ["MODELS"]]
    return list(ast.literal_eval(models))


@pytest.mark.slow
@pytest.mark.parametrize("name", torchvision_models())
def test_torchvision_model_agrees(name: str) -> None:
    pytest.importorskip("torchvision")
    from test_benchmarks import build, input_size

    torch.manual_seed(0)
    size = input_size(name)
    run = agreement(f"torchvision/{name}", build(name), (torch.randn(1, 3, size, size),))
    RESULTS[run.model_id] = run
    assert_agrees(run)


@pytest.mark.slow
@pytest.mark.parametrize("model_id", list(TIMM))
def test_timm_model_agrees(model_id: str) -> None:
    torch.manual_seed(0)
    run = agreement(model_id, TIMM[model_id](), (torch.randn(1, 3, 224, 224),))
    RESULTS[run.model_id] = run
    assert_agrees(run)


AGREEMENT_DOC = Path(__file__).parent.parent / "docs" / "agreement.md"
TABLE_START, TABLE_END = "<!-- agreement-table:start -->", "<!-- agreement-table:end -->"


def agreement_table(runs: Iterable[Run]) -> str:
    lines = ["| model | FX FLOPs | aten FLOPs | FX - aten | FX MACs | aten MACs | allow-list entries used |",
             "|---|---:|---:|---:|---:|---:|---|"]
    for run in runs:
        used = ", ".join(f"`{name}`" for name in run.used) or "-"
        lines.append(f"| {run.model_id} | {run.fx.flops:,} | {run.aten.flops:,} | {run.fx.flops - run.aten.flops:,} | "
                     f"{run.fx.macs:,} | {run.aten.macs:,} | {used} |")
    return "\n".join(lines)


@pytest.mark.slow
def test_agreement_table_in_docs_matches_the_run() -> None:
    expected_ids = [f"torchvision/{name}" for name in torchvision_models()] + list(TIMM)
    missing = [model_id for model_id in expected_ids if model_id not in RESULTS]
    if missing:
        pytest.skip(f"run the whole slow part: no results for {missing}")
    table = agreement_table(RESULTS[model_id] for model_id in expected_ids)
    print("\n" + table)
    text = AGREEMENT_DOC.read_text()
    match = re.search(re.escape(TABLE_START) + ".*?" + re.escape(TABLE_END), text, re.S)
    assert match, f"{AGREEMENT_DOC} has no {TABLE_START} ... {TABLE_END} section"
    section = f"{TABLE_START}\n{table}\n{TABLE_END}"
    if os.environ.get("TORCH_FLOPS_UPDATE_AGREEMENT") == "1":
        AGREEMENT_DOC.write_text(text[:match.start()] + section + text[match.end():])
    else:
        assert match.group(0) == section, "docs/agreement.md is stale: rerun with TORCH_FLOPS_UPDATE_AGREEMENT=1"
