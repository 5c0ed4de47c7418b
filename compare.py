"""Compare torch_flops with the other FLOP/MAC counters that are installed, side by side.

    python compare.py [--case simple|add_one|linear_no_bias|attention_block|resnet50|vit_b_16|all] [--quick]

Every peer tool runs on the same cases as torch_flops, each in its own ``try``, on a fresh model
instance, with the global state it touches (``torch``, ``torch.nn.functional`` and ``torch.Tensor``
attributes, grad mode, default dtype, warning filters) restored afterwards. A tool that is not installed
or that raises is shown as such, never hidden.

Below the table, one line per tool and case explains its number from *our* per-node records: the records
are bucketed by family (:func:`breakdown`), each tool's convention turns the buckets into a predicted
number (``Tool.predict``), and the line says "matches" only when the prediction equals the tool's
number; otherwise it prints the unexplained remainder.

``--quick`` runs the three seed cases only (what CI runs). The exit code is 0 even when peer tools fail;
it is 1 only when torch_flops itself fails.

Peer conventions (read from their sources, checked against their numbers by the lines below):

- thop (MACs): module hooks on exact ``torch.nn`` classes; Linear/Conv multiplies without the bias,
  norms 2 per element (4 with an affine transform), adaptive average pooling window + 1 per output;
  functional ops (``@``, ``+``, ``softmax``) and subclasses (timm's ``LayerNorm``) are not seen.
- ptflops, ``backend='pytorch'`` (MACs): module hooks (multiplies + bias; activations and pools 1 per
  element; norms 1 per element, 2 for BatchNorm with ``affine``) plus patched ``F.*`` and tensor ops,
  which count again what a hooked module calls (``nn.ReLU`` -> ``F.relu``); a hooked module (timm
  ``Attention``) hides its children (the qkv / proj Linears).
- ptflops, ``backend='aten'`` (MACs): ``aten.mm``, ``bmm``, ``addmm`` (with its bias) and
  ``convolution`` (with its bias) only.
- fvcore ``FlopCountAnalysis`` (one "flop" per MAC): linear, matmul and conv multiplies without bias;
  BatchNorm (eval) 2 per element (1 without affine), LayerNorm / GroupNorm 5 (4); adaptive average
  pooling 1 per input element; elementwise ops, activations, softmax, max pooling and
  ``scaled_dot_product_attention`` are skipped (listed as unsupported).
- ``torch.utils.flop_counter.FlopCounterMode`` (FLOPs): 2 per multiply of mm / bmm / addmm /
  convolution, no bias. CPU SDPA runs ``aten._scaled_dot_product_flash_attention_for_cpu``: where its
  ``flop_registry`` has a formula for it (torch 2.15 on), 2 per multiply of SDPA's two products; where
  not (torch 2.14 and earlier), 0.
- torchinfo ``summary(...).total_mult_adds`` (MACs): per leaf module with ``weight``/``bias``
  parameters: Conv layers parameters x output positions, every other layer batch x parameters (a Linear
  on ``(1, 197, 768)`` counts once, not 197 times).
- calflops ``calculate_flops`` (FLOPs): patched ``F.*`` and tensor functions: 2 x multiplies for
  ``F.linear`` (no bias), ``F.conv*`` (with bias), ``torch.matmul``; activations, pools and softmax 1 per
  input element; BatchNorm (eval) 2 per element, LayerNorm 5; operators (``@``, ``+``) and
  ``Tensor.softmax`` are not seen.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib
import importlib.util
import io
import math
import sys
import traceback
import types
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.fx as fx
import torch.nn.functional as F
from tabulate import tabulate
from torch import nn

from torch_flops import Status, TorchFLOPsByFX
from torch_flops.registry import lookup_by_mro

FLOPS, MACS = "FLOPs", "MACs"


# -- cases ---------------------------------------------------------------------------------------------
@functools.cache
def _test_models() -> Any:
    """``tests/models.py``, where the seed ``SimpleModel`` lives."""
    spec = importlib.util.spec_from_file_location("_compare_test_models", Path(__file__).resolve().parent / "tests" / "models.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _simple_model(**kwargs: Any) -> Callable[[], nn.Module]:
    def make() -> nn.Module:
        return _test_models().SimpleModel(**kwargs)

    return make


def _attention_block(fused: bool) -> Callable[[], nn.Module]:
    def make() -> nn.Module:
        from timm.models.vision_transformer import Block

        block = Block(dim=768, num_heads=12)
        block.attn.fused_attn = fused
        return block

    return make


def _timm(name: str) -> Callable[[], nn.Module]:
    def make() -> nn.Module:
        import timm

        return timm.create_model(name, pretrained=False)

    return make


def _torchvision_resnet50() -> nn.Module:
    import torchvision

    return torchvision.models.resnet50(weights=None)


@dataclass(frozen=True)
class Case:
    """One model and input shape; ``group`` is the ``--case`` name that selects it."""

    group: str
    label: str
    description: str
    make_model: Callable[[], nn.Module]
    input_shape: tuple[int, ...]

    def make_input(self) -> torch.Tensor:
        return torch.randn(self.input_shape, generator=torch.Generator().manual_seed(0))


CASES: tuple[Case, ...] = (
    Case("simple", "simple", "SimpleModel: Linear(5, 4) on (1, 5)", _simple_model(), (1, 5)),
    Case("add_one", "add_one", "SimpleModel(add_one=True): Linear(5, 4), then x += 1. on (1, 5)",
         _simple_model(add_one=True), (1, 5)),
    Case("linear_no_bias", "linear_no_bias", "SimpleModel(bias=False): Linear(5, 4, bias=False) on (1, 5)",
         _simple_model(bias=False), (1, 5)),
    Case("attention_block", "attn_block eager", "timm Block(dim=768, num_heads=12), fused_attn=False, on (1, 197, 768)",
         _attention_block(fused=False), (1, 197, 768)),
    Case("attention_block", "attn_block fused", "timm Block(dim=768, num_heads=12), fused_attn=True (F.scaled_dot_product_attention), on (1, 197, 768)",
         _attention_block(fused=True), (1, 197, 768)),
    Case("resnet50", "resnet50 tv", "torchvision resnet50(weights=None) on (1, 3, 224, 224)", _torchvision_resnet50, (1, 3, 224, 224)),
    Case("resnet50", "resnet50 timm", "timm resnet50(pretrained=False) on (1, 3, 224, 224)", _timm("resnet50"), (1, 3, 224, 224)),
    Case("vit_b_16", "vit_b_16 timm", "timm vit_base_patch16_224(pretrained=False), timm's default fused attention, on (1, 3, 224, 224)",
         _timm("vit_base_patch16_224"), (1, 3, 224, 224)),
)
QUICK_GROUPS = ("simple", "add_one", "linear_no_bias")
GROUPS = tuple(dict.fromkeys(case.group for case in CASES))


def select_cases(group: str = "all", quick: bool = False) -> list[Case]:
    """The cases of ``--case group`` (``all``: every case); ``quick`` keeps the seed cases only."""
    if group != "all" and group not in GROUPS:
        raise ValueError(f"unknown case {group!r}; choose from {', '.join((*GROUPS, 'all'))}")
    chosen = [c for c in CASES if group in ("all", c.group)]
    return [c for c in chosen if c.group in QUICK_GROUPS] if quick else chosen


# -- our count and its breakdown by family ------------------------------------------------------------
PRODUCT_FAMILIES = ("linear", "conv", "conv_transpose", "matmul")

# the function a torch.nn layer calls in its forward (what patching tools see)
_MODULE_CALLS: dict[type, Any] = {
    nn.Linear: F.linear, nn.Conv1d: F.conv1d, nn.Conv2d: F.conv2d, nn.Conv3d: F.conv3d,
    nn.ConvTranspose1d: F.conv_transpose1d, nn.ConvTranspose2d: F.conv_transpose2d, nn.ConvTranspose3d: F.conv_transpose3d,
    nn.ReLU: F.relu, nn.GELU: F.gelu, nn.SiLU: F.silu, nn.ELU: F.elu, nn.LeakyReLU: F.leaky_relu, nn.PReLU: F.prelu,
    nn.ReLU6: F.hardtanh, nn.Hardtanh: F.hardtanh, nn.Sigmoid: torch.sigmoid, nn.Tanh: torch.tanh,
    nn.modules.batchnorm._BatchNorm: F.batch_norm, nn.LayerNorm: F.layer_norm, nn.GroupNorm: F.group_norm,
    nn.modules.instancenorm._InstanceNorm: F.instance_norm,
    nn.MaxPool1d: F.max_pool1d, nn.MaxPool2d: F.max_pool2d, nn.MaxPool3d: F.max_pool3d,
    nn.AvgPool1d: F.avg_pool1d, nn.AvgPool2d: F.avg_pool2d, nn.AvgPool3d: F.avg_pool3d,
    nn.AdaptiveAvgPool1d: F.adaptive_avg_pool1d, nn.AdaptiveAvgPool2d: F.adaptive_avg_pool2d,
    nn.AdaptiveAvgPool3d: F.adaptive_avg_pool3d, nn.AdaptiveMaxPool1d: F.adaptive_max_pool1d,
    nn.AdaptiveMaxPool2d: F.adaptive_max_pool2d, nn.AdaptiveMaxPool3d: F.adaptive_max_pool3d,
    nn.Softmax: F.softmax,
}
_NORM_KINDS = {F.batch_norm: "batch", F.layer_norm: "layer", F.group_norm: "group", F.instance_norm: "instance"}


@dataclass(frozen=True)
class Item:
    """One counted node of our graph, bucketed by family, with the quantities peer conventions use.

    Products (``linear``, ``conv``, ``matmul``, ``attention``): ``multiplies`` (k per dot product),
    ``adds`` (k - 1 per dot product) and ``bias`` (1 per output). ``attention`` (SDPA) also has
    ``scores`` (B L S, each scaled once) and ``softmax`` FLOPs. ``call`` is the function the node reaches
    at run time (``F.linear`` for an ``nn.Linear`` node) or a ``Tensor`` method name; ``layer`` the leaf
    module the node is (or whose traced ``forward`` it is); ``around`` the modules enclosing it,
    outermost first.
    """

    node: str
    family: str
    flops: int
    macs: int
    call: Any
    where: str
    layer: nn.Module | None
    around: tuple[nn.Module, ...]
    inputs: int
    outputs: int
    batch: int
    multiplies: int = 0
    adds: int = 0
    bias: int = 0
    scores: int = 0
    softmax: int = 0
    weight: bool = False  # norms: an affine weight is applied

    def hooked(self, classes: Any) -> bool:
        """A module-hook tool with a table of exact ``classes`` sees this node as its layer (and no
        enclosing module of the table hides it)."""
        return self.layer is not None and type(self.layer) in classes and not any(type(m) in classes for m in self.around)

    def inside(self, classes: tuple[type, ...]) -> nn.Module | None:
        """The outermost enclosing module of one of the exact ``classes``."""
        return next((m for m in self.around if type(m) in classes), None)


@dataclass(frozen=True)
class Breakdown:
    items: tuple[Item, ...]
    total_flops: int
    total_macs: int

    def sum(self, quantity: str, families: Sequence[str] | None = None) -> int:
        return sum(getattr(i, quantity) for i in self.items if families is None or i.family in families)


def _class_label(cls: type) -> str:
    if cls.__module__.startswith("torch.nn"):
        return f"nn.{cls.__name__}"
    package = cls.__module__.partition(".")[0]
    return f"{package} {cls.__name__}" if package in ("timm", "torchvision", "transformers") else cls.__name__


def _family(counter: TorchFLOPsByFX, node: fx.Node, module: nn.Module | None, status: Status) -> str:
    """The cost-rule family that priced ``node`` (``torch_flops/rules/<family>.py``), split where peers
    split it: matmul vs linear, max vs average pooling, softmax vs other reductions."""
    if status in (Status.ZERO, Status.IGNORED):
        return "zero"
    if status in (Status.FALLBACK, Status.UNSUPPORTED):
        return status.value
    if node.op == "call_module":
        rule = counter.registry.module_rule(module)
    elif node.op == "call_function":
        rule = counter.registry.function_rule(node.target)
    else:
        rule = counter.registry.method_rule(node.target)
    if rule is None:
        return "other"
    family, name = rule.fn.__module__.rpartition(".")[2], rule.fn.__qualname__
    if family == "linear":
        return "matmul" if name in ("matmul", "dot") else "linear"
    if family == "conv":
        return "conv_transpose" if "transpose" in name else "conv"
    if family == "pool":
        return "max_pool" if "max" in name else "avg_pool"
    if family == "reduction":
        return "softmax" if name.startswith(("softmax", "log_softmax", "softmin")) else "reduction"
    return family


def _item(counter: TorchFLOPsByFX, model: nn.Module, node: fx.Node, record: Any) -> Item:
    names = record.module_path.split(".") if record.module_path else []
    scope = [model] + [model.get_submodule(".".join(names[: i + 1])) for i in range(len(names))]
    owner = scope[-1]
    if node.op == "call_module":  # the node is the layer (its module_path is its own name)
        layer = counter.graph_model.get_submodule(node.target)
        call, where = lookup_by_mro(_MODULE_CALLS, type(layer)), _class_label(type(layer))
    else:  # a function or method, inside the traced forward of `owner`; a childless owner is a leaf layer
        layer = owner if owner is not model and next(owner.children(), None) is None else None
        call = node.target
        name = call if isinstance(call, str) else getattr(call, "__name__", str(call))
        where = f"{name} in {_class_label(type(owner))}"
    around = tuple(m for m in scope if m is not layer)
    family = _family(counter, node, layer, record.status)
    shapes_in, shapes_out = record.input_shapes, record.output_shapes
    inputs = math.prod(shapes_in[0]) if shapes_in else 0
    outputs = math.prod(shapes_out[0]) if shapes_out else 0
    batch = shapes_out[0][0] if shapes_out and shapes_out[0] else 1
    flops, macs = record.flops or 0, record.macs or 0
    extra: dict[str, Any] = {}
    if family in ("linear", "conv", "matmul"):
        # flops = O(2k - 1) + b, macs = O k + b  =>  adds = flops - macs, multiplies = adds + O
        adds = flops - macs
        extra = {"adds": adds, "multiplies": adds + outputs, "bias": macs - adds - outputs}
    elif family == "conv_transpose":
        # flops = 2 P + b, macs = P + b: P multiplies, P adds
        extra = {"adds": flops - macs, "multiplies": flops - macs, "bias": 2 * macs - flops}
    elif family == "attention":
        (*lead, q_len, head_dim), (*_, kv_len, _), (*_, value_dim) = shapes_in[:3]
        heads = math.prod(lead)
        scores, values = heads * q_len * kv_len, heads * q_len * value_dim
        extra = {"multiplies": macs, "adds": macs - scores - values, "bias": 0, "scores": scores,
                 "softmax": heads * q_len * (3 * kv_len - 1)}
    elif family == "norm":
        extra = {"weight": inputs > 0 and flops >= 3 * inputs}
    if extra.get("bias", 0) < 0 or extra.get("adds", 0) < 0:  # not a plain product (e.g. addmm with alpha != 1)
        family, extra = "other", {}
    return Item(node.name, family, flops, macs, call, where, layer, around, inputs, outputs, batch, **extra)


def breakdown(counter: TorchFLOPsByFX, model: nn.Module) -> Breakdown:
    """Bucket the records of ``counter``'s last ``propagate`` of ``model`` by family (one :class:`Item`
    per node that is not a placeholder, attribute read or output)."""
    nodes = {n.name: n for n in counter.graph_model.graph.nodes}
    items = tuple(
        _item(counter, model, nodes[r.name], r)
        for r in counter.records
        if r.op not in ("placeholder", "get_attr", "output")
    )
    return Breakdown(items, counter.total_flops, counter.total_macs)


@dataclass(frozen=True)
class OurResult:
    flops: int | None
    macs: int | None
    breakdown: Breakdown | None
    error: str | None = None


def run_ours(case: Case) -> OurResult:
    """torch_flops on a fresh instance of the case's model."""
    torch.manual_seed(0)
    model = case.make_model()
    try:
        counter = TorchFLOPsByFX(model)
        counter.propagate(case.make_input())
        return OurResult(counter.total_flops, counter.total_macs, breakdown(counter, model))
    except Exception as error:  # reported, and makes the exit code 1
        traceback.print_exc()
        return OurResult(None, None, None, _first_line(error))


# -- peer tools ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ToolRun:
    value: int
    notes: str = ""


@dataclass(frozen=True)
class Tool:
    """A peer counter: ``requires`` is the module whose absence means "not installed"; ``count`` runs it
    on a fresh model and an input and returns its number in ``unit``; ``predict`` applies its convention
    to our breakdown (see :class:`Prediction`)."""

    name: str
    requires: str
    unit: str
    count: Callable[[nn.Module, torch.Tensor], ToolRun]
    predict: Callable[[Breakdown], Prediction] | None = None


@dataclass(frozen=True)
class Measurement:
    tool: Tool
    value: int | None
    status: str  # "ok" | "not installed" | "failed: <first line>"
    notes: str = ""

    @property
    def cell(self) -> str:
        if self.value is not None:
            return f"{self.value:,}"
        return self.status if len(self.status) <= 40 else self.status[:39] + "…"


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


def _thop(model: nn.Module, x: torch.Tensor) -> ToolRun:
    import thop

    macs, _params = thop.profile(model, inputs=(x,), verbose=False)
    return ToolRun(int(macs))


def _ptflops(backend: str) -> Callable[[nn.Module, torch.Tensor], ToolRun]:
    def count(model: nn.Module, x: torch.Tensor) -> ToolRun:
        from ptflops import get_model_complexity_info

        log = io.StringIO()
        with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
            macs, _params = get_model_complexity_info(
                model, tuple(x.shape[1:]), input_constructor=lambda _: x, print_per_layer_stat=False,
                as_strings=False, backend=backend, ost=log, verbose=False)
        if macs is None:  # ptflops catches the exception, prints it and returns None
            raise RuntimeError(_ptflops_error(log.getvalue()))
        return ToolRun(int(macs))

    return count


def _ptflops_error(printed: str) -> str:
    lines = printed.splitlines()
    marker = next((i for i, line in enumerate(lines) if "following exception" in line), None)
    return lines[marker + 1] if marker is not None and marker + 1 < len(lines) else "ptflops returned None"


def _fvcore(model: nn.Module, x: torch.Tensor) -> ToolRun:
    from fvcore.nn import FlopCountAnalysis

    analysis = FlopCountAnalysis(model, (x,)).unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    total = analysis.total()
    skipped = ", ".join(f"{op} x{n}" for op, n in sorted(analysis.unsupported_ops().items()))
    return ToolRun(int(total), f"fvcore lists as unsupported: {skipped}" if skipped else "")


def _flop_counter_mode(model: nn.Module, x: torch.Tensor) -> ToolRun:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as mode:
        model(x)
    by_op = ", ".join(f"{op} {n:,}" for op, n in mode.get_flop_counts().get("Global", {}).items())
    return ToolRun(int(mode.get_total_flops()), f"FlopCounterMode by op: {by_op}" if by_op else "")


def _torchinfo(model: nn.Module, x: torch.Tensor) -> ToolRun:
    import torchinfo

    return ToolRun(int(torchinfo.summary(model, input_data=[x], verbose=0, mode="eval").total_mult_adds))


def _calflops(model: nn.Module, x: torch.Tensor) -> ToolRun:
    from calflops import calculate_flops

    flops, macs, _params = calculate_flops(model, args=[x], print_results=False, print_detailed=False,
                                           output_as_string=False)
    return ToolRun(int(flops), f"calflops also reports {int(macs):,} MACs")


@contextlib.contextmanager
def isolated() -> Iterator[io.StringIO]:
    """Run a peer tool: its prints go to the yielded buffer, its warnings are dropped, and afterwards the
    ``torch``, ``torch.nn.functional`` and ``torch.Tensor`` attributes it replaced are put back and those
    it added are removed (``torch.Tensor.matmul = f`` adds an attribute shadowing ``TensorBase.matmul``;
    submodules that got imported meanwhile are kept), as are the grad mode and the default dtype."""
    namespaces = (torch, F, torch.Tensor)
    saved = [dict(vars(namespace)) for namespace in namespaces]
    grad, dtype = torch.is_grad_enabled(), torch.get_default_dtype()
    printed = io.StringIO()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(printed), contextlib.redirect_stderr(printed):
            warnings.simplefilter("ignore")
            yield printed
    finally:
        for namespace, attributes in zip(namespaces, saved):
            for name, value in list(vars(namespace).items()):
                if name not in attributes and not isinstance(value, types.ModuleType):
                    delattr(namespace, name)
            for name, value in attributes.items():
                if vars(namespace).get(name) is not value:
                    setattr(namespace, name, value)
        torch.set_grad_enabled(grad)
        torch.set_default_dtype(dtype)


def run_tool(tool: Tool, case: Case) -> Measurement:
    """``tool`` on a fresh instance of ``case``'s model in eval mode, isolated; never raises."""
    try:
        with isolated(), torch.no_grad():
            try:
                importlib.import_module(tool.requires)
            except ModuleNotFoundError as error:
                if error.name and tool.requires.startswith(error.name):
                    return Measurement(tool, None, "not installed")
                raise
            torch.manual_seed(0)
            result = tool.count(case.make_model().eval(), case.make_input())
    except Exception as error:
        return Measurement(tool, None, f"failed: {_first_line(error)}")
    return Measurement(tool, result.value, "ok", result.notes)


# -- predictions: each tool's convention applied to our breakdown --------------------------------------
@dataclass(frozen=True)
class Term:
    quantity: int
    label: str
    factor: int = 1

    @property
    def value(self) -> int:
        return self.quantity * self.factor

    def __str__(self) -> str:
        return f"{self.factor} x {self.quantity:,} {self.label}" if self.factor != 1 else f"{self.quantity:,} {self.label}"


@dataclass
class Prediction:
    """What a tool should report under its convention (``counted``) and what of our FLOPs it leaves out
    (``missed``, in our FLOPs)."""

    counted: dict[tuple[str, int], int] = field(default_factory=dict)
    missed: dict[str, int] = field(default_factory=dict)
    note: str = ""

    def count(self, quantity: int, label: str, factor: int = 1) -> None:
        if quantity:
            self.counted[(label, factor)] = self.counted.get((label, factor), 0) + quantity

    def miss(self, flops: int, label: str) -> None:
        if flops:
            self.missed[label] = self.missed.get(label, 0) + flops

    def miss_item(self, item: Item, why: str = "") -> None:
        self.miss(item.flops, f"{item.family}: {item.where}" + (f" ({why})" if why else ""))

    @property
    def terms(self) -> list[Term]:
        return [Term(q, label, factor) for (label, factor), q in self.counted.items()]

    @property
    def value(self) -> int:
        return sum(t.value for t in self.terms)


_LINEAR_CONV = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
_MAX_POOLS = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d)
_AVG_POOLS = (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)
_ADAPTIVE_AVG_POOLS = (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d)
_BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_INSTANCE_NORMS = (nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d)


def _count_product(p: Prediction, item: Item, label: str, factor: int = 1, bias: bool = False) -> None:
    """``factor`` x multiplies (+ bias); the adds a MAC convention (factor 1) leaves out are missed."""
    p.count(item.multiplies, f"multiplies ({label})", factor)
    if factor == 1:
        p.miss(item.adds, "dot-product adds")
    if bias:
        p.count(item.bias, "bias adds")
    else:
        p.miss(item.bias, "bias adds")


def predict_thop(b: Breakdown) -> Prediction:
    table = (*_LINEAR_CONV, *_BATCH_NORMS, *_INSTANCE_NORMS, nn.LayerNorm, *_AVG_POOLS, *_ADAPTIVE_AVG_POOLS,
             nn.Softmax, nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, *_MAX_POOLS, nn.Dropout)
    p = Prediction()
    for item in b.items:
        layer = type(item.layer) if item.hooked(table) else None
        if layer in _LINEAR_CONV:
            _count_product(p, item, "nn.Linear/ConvNd")
        elif layer in (*_BATCH_NORMS, *_INSTANCE_NORMS, nn.LayerNorm):
            p.count(item.inputs, "norm-layer elements", 4 if item.weight else 2)
        elif layer in _ADAPTIVE_AVG_POOLS:
            p.count(item.flops, "adaptive avg-pool window elements")
            p.count(item.outputs, "adaptive avg-pool outputs (a divide each)")
        elif layer in _AVG_POOLS:
            p.count(item.outputs, "avg-pool outputs")
        elif layer is nn.Softmax:
            p.count(item.flops, "nn.Softmax FLOPs")
        else:
            p.miss_item(item)
    return p


def _timm_attention() -> tuple[type, ...]:
    timm_vit = sys.modules.get("timm.models.vision_transformer")
    return (timm_vit.Attention,) if timm_vit is not None else ()


def predict_ptflops_pytorch(b: Breakdown) -> Prediction:
    activations = (nn.ReLU, nn.PReLU, nn.ELU, nn.LeakyReLU, nn.ReLU6, nn.GELU)
    norms = (*_BATCH_NORMS, *_INSTANCE_NORMS, nn.GroupNorm, nn.LayerNorm)
    pools = (*_MAX_POOLS, *_AVG_POOLS, *_ADAPTIVE_AVG_POOLS)
    attention = _timm_attention()
    table = (*_LINEAR_CONV, *activations, *norms, *pools, *attention)
    patched_per_input = (F.relu, F.prelu, F.elu, F.relu6, F.gelu, F.silu, F.softmax,
                         F.max_pool1d, F.max_pool2d, F.max_pool3d, F.avg_pool1d, F.avg_pool2d, F.avg_pool3d,
                         F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d,
                         F.adaptive_max_pool1d, F.adaptive_max_pool2d, F.adaptive_max_pool3d)
    patched_products = (torch.matmul, torch.mm, torch.bmm, "matmul", "mm", "bmm")
    patched_products_bias = (torch.addmm, torch.baddbmm, "addmm")
    patched_arithmetic = (torch.mul, torch.add, "mul", "add")
    p = Prediction()
    for item in b.items:
        seen = True
        if item.hooked(table):  # a module hook (the outermost hooked module hides its children)
            layer = type(item.layer)
            if layer in _LINEAR_CONV:
                _count_product(p, item, "nn.Linear/ConvNd", bias=True)
            elif layer in activations:
                p.count(item.outputs, "activation-layer elements (module hook)")
            elif layer in pools:
                p.count(item.inputs, "pool-layer input elements (module hook)")
            else:  # `affine` exists on BatchNorm / InstanceNorm / GroupNorm, not on LayerNorm
                p.count(item.inputs, "norm-layer elements", 2 if getattr(item.layer, "affine", False) else 1)
        elif attention and item.inside(attention) is not None:
            # timm Attention's own hook: B N C (scaling q) + B H (N N d + N N + N N d), from its body:
            # eager `q * scale`, `q @ k^T`, `softmax`, `attn @ v`, or one SDPA; its Linears are hidden
            if item.family in ("matmul", "attention"):
                p.count(item.multiplies, "Q.K^T and A.V multiplies (timm Attention hook)")
                p.miss(item.adds, "dot-product adds")
            if item.family in ("attention", "softmax"):
                p.count(item.scores or item.inputs, "attention scores (timm Attention hook)")
            if item.family in ("attention", "elementwise"):
                p.count(item.inputs if item.family == "attention" else item.outputs, "query elements (timm Attention hook)")
            if item.family not in ("matmul", "attention", "softmax", "elementwise"):
                p.miss_item(item, "hidden by the timm Attention hook")
        else:
            seen = False
        # patched functions count wherever they run, also inside a hooked module (counted twice then)
        if item.call in patched_per_input:
            again = ", again after the module hook" if item.hooked(table) else ""
            p.count(item.inputs, f"input elements of patched F.{item.call.__name__}{again}")
        elif item.call in patched_products:
            _count_product(p, item, "patched matmul")
        elif item.call in patched_products_bias:
            _count_product(p, item, "patched addmm", bias=True)
        elif item.call in patched_arithmetic:
            p.count(item.outputs, "outputs of patched torch.add/mul")
        elif not seen:
            p.miss_item(item)
    return p


def predict_ptflops_aten(b: Breakdown) -> Prediction:
    p = Prediction()
    for item in b.items:
        if item.family in PRODUCT_FAMILIES:
            _count_product(p, item, "mm/bmm/addmm/convolution", bias=True)
        elif item.family == "attention":
            p.miss_item(item, "its CPU kernel is not in ptflops' aten table")
        else:
            p.miss_item(item)
    return p


def predict_fvcore(b: Breakdown) -> Prediction:
    p = Prediction()
    for item in b.items:
        kind = _NORM_KINDS.get(item.call) if item.family == "norm" else None
        if item.family in PRODUCT_FAMILIES:
            _count_product(p, item, "linear/matmul/conv")
        elif kind == "batch":
            p.count(item.inputs, "batch-norm elements (eval)", 2 if item.weight else 1)
        elif kind in ("layer", "group", "instance"):
            p.count(item.inputs, f"{kind}-norm elements", 5 if item.weight else 4)
        elif item.call is F.adaptive_avg_pool2d:
            p.count(item.inputs, "adaptive_avg_pool2d input elements")
        else:
            p.miss_item(item)
    return p


def flop_counter_mode_prices_cpu_sdpa() -> bool:
    """Whether this torch's FlopCounterMode has a formula for the CPU SDPA kernel (torch 2.15 on)."""
    from torch.utils.flop_counter import flop_registry

    kernel = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    return kernel is not None and kernel in flop_registry


def predict_flop_counter_mode(b: Breakdown) -> Prediction:
    p = Prediction()
    sdpa_priced = flop_counter_mode_prices_cpu_sdpa()
    for item in b.items:
        if item.family in PRODUCT_FAMILIES:
            _count_product(p, item, "mm/bmm/addmm/convolution", factor=2)
        elif item.family == "attention" and sdpa_priced:
            p.count(item.multiplies, "multiplies (SDPA's two products)", 2)
            p.miss(item.flops - item.multiplies - item.adds, "SDPA score scaling, softmax and mask")
        elif item.family == "attention":
            p.miss_item(item, "this torch has no formula for aten._scaled_dot_product_flash_attention_for_cpu")
        else:
            p.miss_item(item)
    # 2 x multiplies = (multiplies + adds + bias) - bias + dot products: relate it to our FLOPs
    counted = [i for i in b.items if i.family in PRODUCT_FAMILIES or (i.family == "attention" and sdpa_priced)]
    bias = sum(i.bias for i in counted)
    dots = sum(i.multiplies - i.adds for i in counted)
    others = sum(p.missed.values()) - bias
    p.note = (f"= our {b.total_flops:,} FLOPs" + (f" - {bias:,} bias adds" if bias else "")
              + f" + {dots:,} (k, not k - 1, adds per dot product)" + (f" - {others:,} not counted" if others else ""))
    return p


def predict_torchinfo(b: Breakdown) -> Prediction:
    p = Prediction()
    per_element = 0  # our MACs of the layers torchinfo counts once per sample
    for item in b.items:
        layer = item.layer
        params = sum(t.numel() for name, t in layer.named_parameters(recurse=False) if name in ("weight", "bias")) if layer is not None else 0
        if not params:
            p.miss_item(item)
        elif "Conv" in type(layer).__name__:
            p.count(params * (item.outputs // layer.out_channels), "Conv weight+bias x output positions")
        else:
            p.count(params, "weight+bias params of non-Conv layers (x batch)", item.batch)
            per_element += item.macs
    counted = sum(q * factor for (label, factor), q in p.counted.items() if label.startswith("weight+bias params"))
    if per_element != counted:
        p.note = f"our MACs of those layers are {per_element:,}: torchinfo counts them once per sample, not per token / element"
    return p


def predict_calflops(b: Breakdown) -> Prediction:
    activations = (F.relu, F.prelu, F.elu, F.leaky_relu, F.relu6, F.silu, F.gelu)
    pools = (F.max_pool1d, F.max_pool2d, F.max_pool3d, F.avg_pool1d, F.avg_pool2d, F.avg_pool3d,
             F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d,
             F.adaptive_max_pool1d, F.adaptive_max_pool2d, F.adaptive_max_pool3d)
    convs = (F.conv1d, F.conv2d, F.conv3d, F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d)
    p = Prediction()
    for item in b.items:
        call = item.call
        if call is F.linear:
            _count_product(p, item, "F.linear", factor=2)
        elif call in convs:
            _count_product(p, item, "F.conv*", factor=2, bias=True)
        elif call in (torch.matmul, "matmul"):
            _count_product(p, item, "torch.matmul", factor=2)
        elif call in (torch.addmm, torch.baddbmm, "addmm"):
            _count_product(p, item, "torch.addmm", factor=2, bias=True)
        elif call in activations:
            p.count(item.inputs, "activation elements")
        elif call is F.batch_norm:
            p.count(item.inputs, "batch-norm elements (eval)", 2 if item.weight else 1)
        elif call in (F.layer_norm, F.group_norm, F.instance_norm):
            p.count(item.inputs, "layer/group/instance-norm elements", 5 if item.weight else 4)
        elif call in pools:
            p.count(item.inputs, "pool input elements")
        elif call is F.softmax:
            p.count(item.inputs, "F.softmax input elements")
        elif call in (torch.mul, torch.add, "mul", "add"):
            p.count(item.outputs, "torch.add/mul outputs")
        else:
            p.miss_item(item)
    return p


TOOLS: tuple[Tool, ...] = (
    Tool("thop", "thop", MACS, _thop, predict_thop),
    Tool("ptflops pytorch", "ptflops", MACS, _ptflops("pytorch"), predict_ptflops_pytorch),
    Tool("ptflops aten", "ptflops", MACS, _ptflops("aten"), predict_ptflops_aten),
    Tool("fvcore", "fvcore", MACS, _fvcore, predict_fvcore),
    Tool("FlopCounterMode", "torch.utils.flop_counter", FLOPS, _flop_counter_mode, predict_flop_counter_mode),
    Tool("torchinfo", "torchinfo", MACS, _torchinfo, predict_torchinfo),
    Tool("calflops", "calflops", FLOPS, _calflops, predict_calflops),
)


# -- explanation lines ---------------------------------------------------------------------------------
def describe_ours(b: Breakdown) -> str:
    """``ours: 40 FLOPs = 20 multiplies + 16 adds + 4 bias adds (products) ...; 24 MACs``."""
    parts = []
    multiplies, adds, bias = (b.sum(q, PRODUCT_FAMILIES) for q in ("multiplies", "adds", "bias"))
    if multiplies:
        parts.append(f"products (Linear/Conv/matmul): {multiplies:,} multiplies + {adds:,} adds + {bias:,} bias adds")
    attention = [i for i in b.items if i.family == "attention"]
    if attention:
        a_mult, a_adds, scores, softmax = (sum(getattr(i, q) for i in attention) for q in ("multiplies", "adds", "scores", "softmax"))
        mask = sum(i.flops for i in attention) - a_mult - a_adds - scores - softmax
        parts.append(f"SDPA: {a_mult:,} multiplies + {a_adds:,} adds + {scores:,} score scalings + {softmax:,} softmax"
                     + (f" + {mask:,} mask adds" if mask else ""))
    families: dict[str, int] = {}
    for item in b.items:
        if item.family not in (*PRODUCT_FAMILIES, "attention", "zero") and item.flops:
            families[item.family] = families.get(item.family, 0) + item.flops
    parts += [f"{family} {flops:,}" for family, flops in families.items()]
    products = (*PRODUCT_FAMILIES, "attention")
    mac_parts = [f"{b.sum('multiplies', products):,} multiplies + {b.sum('bias', products):,} bias adds"]
    other_macs: dict[str, int] = {}
    for item in b.items:
        if item.macs and item.family not in products:
            other_macs[item.family] = other_macs.get(item.family, 0) + item.macs
    mac_parts += [f"{family} {n:,}" for family, n in other_macs.items()]
    return f"ours: {b.total_flops:,} FLOPs = " + "; ".join(parts) + f". {b.total_macs:,} MACs = " + "; ".join(mac_parts)


def explain(measurement: Measurement, b: Breakdown | None) -> str:
    """One line: the tool's number; "matches our <terms>" when our records under the tool's convention
    predict exactly that number, else the prediction and the unexplained remainder; then what of our
    FLOPs the convention leaves out."""
    tool = measurement.tool
    line = f"{tool.name}: "
    if measurement.value is None:
        return line + measurement.status
    line += f"{measurement.value:,} {tool.unit}"
    if b is None or tool.predict is None:
        return line + " (no prediction from our records)"
    p = tool.predict(b)
    terms = " + ".join(str(t) for t in p.terms) or "0 (none of our ops falls under its convention)"
    if measurement.value == p.value:
        line += f": matches our {terms}"
        if p.value == (b.total_flops if tool.unit == FLOPS else b.total_macs):
            line += f" (= our total {tool.unit})"
    else:
        line += f"; our records predict {p.value:,} = {terms}; unexplained remainder {measurement.value - p.value:+,}"
    if p.note:
        line += f"; {p.note}"
    if p.missed:
        missed = sorted(p.missed.items(), key=lambda kv: -kv[1])
        line += ". Not counted (our FLOPs): " + ", ".join(f"{flops:,} {label}" for label, flops in missed)
    if measurement.notes:
        line += f". [{measurement.notes}]"
    return line


# -- the report ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CaseResult:
    case: Case
    ours: OurResult
    measurements: tuple[Measurement, ...]


def compare_case(case: Case, tools: Sequence[Tool] = TOOLS) -> CaseResult:
    return CaseResult(case, run_ours(case), tuple(run_tool(tool, case) for tool in tools))


def to_table(results: Sequence[CaseResult]) -> str:
    """Tools as rows, cases as columns; the unit of each row in its own column."""
    headers = ["tool", "unit", *(r.case.label for r in results)]
    rows = [
        ["torch_flops", FLOPS, *(_our_cell(r.ours, r.ours.flops) for r in results)],
        ["torch_flops", MACS, *(_our_cell(r.ours, r.ours.macs) for r in results)],
    ]
    for index, first in enumerate(results[0].measurements if results else ()):
        rows.append([first.tool.name, first.tool.unit, *(r.measurements[index].cell for r in results)])
    return tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True,
                    colalign=("left", "left", *("right",) * len(results)))


def _our_cell(ours: OurResult, value: int | None) -> str:
    return f"{value:,}" if value is not None else f"failed: {ours.error}"


def to_explanations(results: Sequence[CaseResult]) -> str:
    blocks = []
    for r in results:
        lines = [f"{r.case.label} — {r.case.description}"]
        b = r.ours.breakdown
        lines.append(f"  {describe_ours(b)}" if b is not None else f"  ours: failed: {r.ours.error}")
        lines += [f"  {explain(m, b)}" for m in r.measurements]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def exit_code(results: Sequence[CaseResult]) -> int:
    """1 when torch_flops itself failed on a case; peer tools failing is reported, not an error."""
    return 1 if any(r.ours.error for r in results) else 0


def main(argv: Sequence[str] | None = None, tools: Sequence[Tool] = TOOLS) -> int:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n\n")[0])
    parser.add_argument("--case", default="all", choices=(*GROUPS, "all"))
    parser.add_argument("--quick", action="store_true", help="only the seed cases (simple, add_one, linear_no_bias)")
    args = parser.parse_args(argv)
    results = []
    for case in select_cases(args.case, args.quick):
        print(f"[compare] {case.label}: {case.description}", file=sys.stderr, flush=True)
        results.append(compare_case(case, tools))
    print(to_table(results))
    print()
    print(to_explanations(results))
    return exit_code(results)


if __name__ == "__main__":
    sys.exit(main())
