"""Bad input, one case at a time: each mistake raises the intended exception, with a message that
names what is wrong (the node, the shapes, the argument, the rule), and leaves the model exactly as it
was (``snapshot`` / ``assert_unchanged`` from ``test_side_effects``: bytes, flags, hooks, attributes).

Models are put in train mode with some parameters frozen first, so a run that fails half-way must
still restore the training flags and ``requires_grad``. Cases marked ``xfail(strict=True)`` are
library defects: the test says how it should behave (see the reason).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn
import torch.nn.functional as F

from models import NoParams, Op, SimpleModel, SmallConvNet, TwoInputs
from test_side_effects import assert_unchanged, record_facts, snapshot
from torch_flops import (
    DEFAULT_REGISTRY,
    Cost,
    CostRegistry,
    CostRuleError,
    DuplicateRuleError,
    NodeExecutionError,
    OpCall,
    Rule,
    Status,
    TorchFLOPsByFX,
    TraceError,
    aten_rule,
    count_aten,
    function_rule,
    method_rule,
    profile,
)
from torch_flops.fallback import AtenRuleError

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py
aten = torch.ops.aten


def prepared(model: nn.Module) -> nn.Module:
    """Train mode, the first parameter frozen: what a failed run must give back untouched."""
    model.train()
    first = next(model.parameters(), None)
    if first is not None:
        first.requires_grad_(False)
    return model


def case(case_id: str, *values: Any, xfail: str | None = None) -> Any:
    """One parametrized case with its id; ``xfail`` (the defect) marks it ``xfail(strict=True)``."""
    marks = [pytest.mark.xfail(strict=True, reason=xfail)] if xfail else []
    return pytest.param(*values, id=case_id, marks=marks)


def raises_unchanged(model: nn.Module, action: Callable[[], Any], error: type[BaseException], match: str) -> pytest.ExceptionInfo:
    before = snapshot(model)
    with pytest.raises(error, match=match) as info:
        action()
    assert_unchanged(model, before)
    return info


# -- models that fail in particular ways ---------------------------------------------------------------
class SizeLeaf(nn.Module):
    """``if x.size(0) > 0`` cannot be traced: an automatic leaf, counted by the aten-level fallback."""

    def __init__(self, features: int = 4) -> None:
        super().__init__()
        self.inner = nn.Linear(features, features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.size(0) > 0:
            return self.inner(x)
        return x


class HasSizeLeaf(nn.Module):
    def __init__(self, pre_out: int = 4) -> None:
        super().__init__()
        self.pre = nn.Linear(4, pre_out)
        self.bn = nn.BatchNorm1d(pre_out)
        self.block = SizeLeaf()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(self.bn(self.pre(x)))


class Raises(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise ValueError("Raises.forward refuses")


class HasRaises(nn.Module):
    """Only one submodule raises; FX cannot trace it (it raises while tracing too), so it becomes a leaf."""

    def __init__(self) -> None:
        super().__init__()
        self.pre = nn.Linear(4, 4)
        self.bn = nn.BatchNorm1d(4)
        self.bad = Raises()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bad(self.bn(self.pre(x)))


class Cholesky(nn.Module):
    """Traceable; fails only at run time, on values (``x`` not positive-definite), after two nodes ran."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.bn = nn.BatchNorm1d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn(self.lin(x))
        return torch.linalg.cholesky(x) @ y


class TakesKwargs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        return self.lin(x)


# -- propagate(): inputs the model cannot take ---------------------------------------------------------
def t(*shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A test input: random floats (from a private generator: building the case table at collection time
    must not move the global RNG other tests draw from), or ones for integer dtypes."""
    if not dtype.is_floating_point:
        return torch.ones(*shape, dtype=dtype)
    return torch.randn(*shape, dtype=dtype, generator=torch.Generator().manual_seed(0))


LINEAR_NODE = r"node 'layer' \(call_module layer in module 'layer' \(Linear\)\) failed on inputs with shapes "
PROPAGATE_CASES = [
    # (id, model factory, args, kwargs, exception, message); a message ends where torch's own wording starts
    # (the test checks that part against the error torch raised, chained as the cause)
    case("wrong_channels", SmallConvNet, (t(1, 1, 8, 8),), {}, NodeExecutionError,
         r"node 'conv' \(call_module conv in module 'conv' \(Conv2d\)\) failed on inputs with shapes \[\[1, 1, 8, 8\]\]: "
         r"RuntimeError: "),
    case("wrong_spatial_size_fails_at_fc", SmallConvNet, (t(2, 3, 10, 10),), {}, NodeExecutionError,
         r"node 'fc' \(call_module fc in module 'fc' \(Linear\)\) failed on inputs with shapes \[\[2, 100\]\]: "
         r"RuntimeError: "),
    case("missing_batch_dim", SmallConvNet, (t(3, 8, 8),), {}, NodeExecutionError,
         r"node 'bn' \(call_module bn in module 'bn' \(BatchNorm2d\)\) failed on inputs with shapes \[\[4, 8, 8\]\]: "
         r"ValueError: "),
    case("zero_dim_tensor", SimpleModel, (torch.tensor(1.0),), {}, NodeExecutionError,
         LINEAR_NODE + r"\[\[\]\]: RuntimeError: "),
    case("wrong_shape_into_auto_leaf", lambda: HasSizeLeaf(pre_out=6), (t(2, 4),), {}, NodeExecutionError,
         r"node 'block' \(call_module block in module 'block' \(SizeLeaf\)\) failed on inputs with shapes \[\[2, 6\]\]: "
         r"RuntimeError: "),
    case("int64_input_to_linear", SimpleModel, (t(1, 5, dtype=torch.int64),), {}, NodeExecutionError,
         LINEAR_NODE + r"\[\[1, 5\]\]: RuntimeError: "),
    case("float64_input_to_float32_model", SimpleModel, (t(1, 5, dtype=torch.float64),), {}, NodeExecutionError,
         LINEAR_NODE + r"\[\[1, 5\]\]: RuntimeError: "),
    case("list_instead_of_tensor", SimpleModel, ([t(1, 5)],), {}, NodeExecutionError,
         LINEAR_NODE + r"\[\[1, 5\]\]: TypeError: "),
    case("dict_instead_of_tensor", SimpleModel, ({"x": t(1, 5)},), {}, NodeExecutionError,
         LINEAR_NODE + r"\[\[1, 5\]\]: TypeError: "),
    case("none_instead_of_tensor", SimpleModel, (None,), {}, NodeExecutionError,
         LINEAR_NODE + r"\[no tensors\]: TypeError: "),
    case("float_instead_of_tensor", SimpleModel, (3.0,), {}, NodeExecutionError,
         LINEAR_NODE + r"\[no tensors\]: TypeError: "),
    case("str_instead_of_tensor", SimpleModel, ("x",), {}, NodeExecutionError,
         LINEAR_NODE + r"\[no tensors\]: TypeError: "),
    case("numpy_instead_of_tensor", SimpleModel, (np.ones((1, 5), np.float32),), {}, NodeExecutionError,
         r"failed on inputs with shapes \[no tensors\]: TypeError: "),
    case("too_many_positional", SimpleModel, (t(1, 5), t(1, 5)), {}, TypeError,
         r"SimpleModel.forward\(x: torch.Tensor\) cannot take these inputs: too many positional arguments"),
    case("too_many_past_a_default", TwoInputs, (t(2, 3), t(2, 3), 3.0, 4.0), {}, TypeError,
         r"TwoInputs.forward\(x: torch.Tensor, y: torch.Tensor, scale: float = 2.0\) cannot take these inputs: "
         r"too many positional arguments"),
    case("missing_required_input", SimpleModel, (), {}, TypeError,
         r"SimpleModel.forward\(x: torch.Tensor\) cannot take these inputs: missing a required argument: 'x'"),
    case("misnamed_keyword", SimpleModel, (), {"input": t(1, 5)}, TypeError,
         r"SimpleModel.forward\(x: torch.Tensor\) cannot take these inputs: missing a required argument: 'x'"),
    case("same_argument_twice", SimpleModel, (t(1, 5),), {"x": t(1, 5)}, TypeError,
         r"cannot take these inputs: multiple values for argument 'x'"),
    case("unknown_keyword", SmallConvNet, (t(1, 3, 8, 8),), {"mask": t(1, 3, 8, 8)}, TypeError,
         r"SmallConvNet.forward\(x: torch.Tensor\) cannot take these inputs: got an unexpected keyword argument 'mask'"),
    case("runtime_error_in_traced_op", Cholesky, (-torch.ones(4, 4),), {}, NodeExecutionError,
         r"node 'linalg_cholesky' \(call_function torch.linalg.cholesky\) failed on inputs with shapes \[\[4, 4\]\]: "
         r""),
    case("only_one_submodule_raises", HasRaises, (t(2, 4),), {}, NodeExecutionError,
         r"node 'bad' \(call_module bad in module 'bad' \(Raises\)\) failed on inputs with shapes \[\[2, 4\]\]: "
         r"ValueError: Raises.forward refuses"),
    case("root_forward_raises", Raises, (t(2, 4),), {}, NodeExecutionError,
         r"node 'root_module' \(call_module \(root\)\) failed on inputs with shapes \[\[2, 4\]\]: ValueError: Raises.forward refuses"),
]


@pytest.mark.parametrize("build, args, kwargs, error, match", PROPAGATE_CASES)
def test_propagate_rejects_inputs_the_model_cannot_take(
    build: Callable[[], nn.Module], args: tuple, kwargs: dict, error: type[Exception], match: str
) -> None:
    model = prepared(build())
    counter = TorchFLOPsByFX(model)
    info = raises_unchanged(model, lambda: counter.propagate(*args, **kwargs), error, match)
    if isinstance(info.value, NodeExecutionError):
        assert f"node '{info.value.node_name}'" in str(info.value)
        cause = info.value.__cause__
        assert cause is not None  # the original error is chained, not lost, and quoted whole
        assert str(info.value).endswith(f"]]: {type(cause).__name__}: {cause}") or str(info.value).endswith(
            f"[no tensors]: {type(cause).__name__}: {cause}")
    assert model.training and all(m.training for m in model.modules())  # still in train mode


def test_a_raising_submodule_is_a_leaf_and_the_model_is_restored() -> None:
    model = prepared(HasRaises())
    model.bn.running_mean.fill_(0.5)
    counter = TorchFLOPsByFX(model)
    assert counter.leaf_modules == {"bad": "ValueError: Raises.forward refuses; counted op by op instead"}  # why it is a leaf
    raises_unchanged(model, lambda: counter.propagate(torch.randn(8, 4) * 10), NodeExecutionError, "node 'bad'")
    assert torch.all(model.bn.running_mean == 0.5) and model.bn.training and model.bad.training


def test_a_base_exception_from_a_hook_passes_through_and_the_model_is_restored() -> None:
    class Abort(BaseException):
        pass

    def abort(module: nn.Module, inputs: tuple, output: Any) -> None:
        raise Abort("stop")

    model = prepared(SmallConvNet())
    handle = model.bn.register_forward_hook(abort)
    raises_unchanged(model, lambda: TorchFLOPsByFX(model).propagate(torch.randn(2, 3, 8, 8)), Abort, "stop")
    assert model.training and torch.is_grad_enabled()
    handle.remove()


def test_the_counter_recovers_after_a_failed_run() -> None:
    model = prepared(SmallConvNet())
    counter = TorchFLOPsByFX(model)
    with pytest.raises(NodeExecutionError):
        counter.propagate(torch.randn(2, 3, 10, 10))
    counter.propagate(torch.randn(2, 3, 8, 8))
    assert counter.total_flops == 33_230  # test_engine's hand count


def test_a_failed_run_leaves_no_stale_results() -> None:
    counter = TorchFLOPsByFX(SimpleModel())
    counter.propagate(torch.randn(1, 5))
    with pytest.raises(NodeExecutionError):
        counter.propagate(torch.randn(1, 6))
    with pytest.raises(RuntimeError, match=r"call propagate\(\) first"):
        counter.print_total_flops(show=False)


@pytest.mark.parametrize("kwargs", [{}, {"foo": 1}, {"foo": torch.ones(2)}], ids=["no_keywords", "unexpected_int", "unexpected_tensor"])
def test_forward_with_var_keyword_takes_keywords_as_eager_does(kwargs: dict) -> None:
    model = prepared(TakesKwargs())
    x = torch.randn(2, 4)
    before = snapshot(model)
    counter = TorchFLOPsByFX(model)
    out = counter.propagate(x, **kwargs)
    torch.testing.assert_close(out, model.eval()(x, **kwargs))
    model.train()
    assert counter.total_flops == 8 * (2 * 4 - 1) + 8  # linear 8 outputs * 7 + 8 bias = 64
    assert_unchanged(model, before)


class UntraceableVariadics(nn.Module):
    """``*rest`` and ``**kwargs`` that FX cannot trace (a membership test on the keywords, a branch on a
    tensor), so the whole model becomes one node that must pass both on, unpacked."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor, *rest: torch.Tensor, scale: float = 2.0, **kwargs: Any) -> torch.Tensor:
        y = self.lin(x) * scale
        if "bias" in kwargs:
            y = y + kwargs["bias"]
        for extra in rest:
            y = y + extra
        return y


@pytest.mark.parametrize("timing", [True, False], ids=["timed", "flops_only"])
@pytest.mark.parametrize("rest, kwargs, flops", [
    ((), {}, 64 + 8),  # linear: 8 outputs x (2*4 - 1) + 8 bias = 64; the scaling: 8
    ((), {"bias": torch.ones(4)}, 64 + 8 + 8),
    ((torch.ones(2, 4), torch.ones(2, 4)), {"scale": 3.0, "bias": torch.ones(4)}, 64 + 8 + 8 + 2 * 8),
], ids=["none", "keyword", "starred_and_keywords"])
def test_a_whole_model_node_passes_starred_and_keyword_arguments_on(rest: tuple, kwargs: dict, flops: int, timing: bool) -> None:
    model = prepared(UntraceableVariadics())
    x = torch.randn(2, 4)
    before = snapshot(model)
    counter = TorchFLOPsByFX(model)
    out = counter.propagate(x, *rest, timing=timing, **kwargs)
    assert "" in counter.leaf_modules  # the whole model is one node
    torch.testing.assert_close(out, model.eval()(x, *rest, **kwargs))
    model.train()
    assert counter.total_flops == flops
    assert_unchanged(model, before)


class TraceableVariadics(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor, *rest: torch.Tensor, scale: float = 2.0, **kwargs: Any) -> torch.Tensor:
        return self.lin(x) * scale + rest[0] + kwargs["b"]


@pytest.mark.parametrize("timing", [True, False], ids=["timed", "flops_only"])
def test_a_traced_forward_takes_starred_keyword_only_and_keyword_arguments(timing: bool) -> None:
    model = TraceableVariadics()
    x, extra, b = torch.randn(2, 4), torch.randn(2, 4), torch.randn(4)
    counter = TorchFLOPsByFX(model)
    out = counter.propagate(x, extra, scale=3.0, b=b, timing=timing)
    assert counter.leaf_modules == {}  # traced, not one node
    torch.testing.assert_close(out, model(x, extra, scale=3.0, b=b))
    assert counter.total_flops == 64 + 8 + 8 + 8  # linear, the scaling, two adds of 2 x 4


def test_repeated_timing_calls_the_plain_forward_with_every_argument() -> None:
    model = UntraceableVariadics()
    seen: list[tuple[int, tuple[str, ...]]] = []
    model.register_forward_pre_hook(lambda module, args, kwargs: seen.append((len(args), tuple(kwargs))), with_kwargs=True)
    counter = TorchFLOPsByFX(model)
    counter.propagate(torch.randn(2, 4), torch.ones(2, 4), bias=torch.ones(4), repeat=2)
    # the whole-model node, then the plain forwards: one untimed, then one after each of the 2 timed runs
    assert seen and all(call == (2, ("scale", "bias")) for call in seen[-3:])
    assert counter.plain_forward_ms is not None


# -- inputs and parameters on different devices -------------------------------------------------------
# Without a GPU the only other device is ``meta``, and a meta tensor anywhere makes the run shape-only
# (engine.propagate's docstring): not an error, so those cases check the shape-only contract instead.
def test_meta_input_with_cpu_parameters_is_a_shape_only_run_that_restores_the_weights() -> None:
    model = prepared(SmallConvNet())
    x = torch.randn(2, 3, 8, 8)
    real = TorchFLOPsByFX(model)
    real.propagate(x)
    before = snapshot(model)
    counter = TorchFLOPsByFX(model)
    out = counter.propagate(x.to("meta"))
    assert out.device.type == "meta" and out.shape == (2, 10)
    assert record_facts(counter) == record_facts(real) and counter.total_flops == 33_230
    assert_unchanged(model, before)  # the meta stand-ins were swapped back: same Parameter objects, same bytes


def test_cpu_input_with_meta_parameters_is_a_shape_only_run() -> None:
    model = prepared(SmallConvNet()).to("meta")
    before = snapshot(model)
    counter = TorchFLOPsByFX(model)
    out = counter.propagate(torch.randn(2, 3, 8, 8))
    assert out.device.type == "meta" and counter.total_flops == 33_230
    assert_unchanged(model, before)


@pytest.mark.cuda
@pytest.mark.parametrize("input_on_cuda", [True, False], ids=["cuda_input_cpu_params", "cpu_input_cuda_params"])
def test_input_on_another_device_than_the_parameters_names_the_node(cuda_device: torch.device, input_on_cuda: bool) -> None:
    model = prepared(SimpleModel())
    x = torch.randn(1, 5)
    if input_on_cuda:
        x = x.to(cuda_device)
    else:
        model.to(cuda_device)
    raises_unchanged(model, lambda: TorchFLOPsByFX(model).propagate(x), NodeExecutionError,
                     LINEAR_NODE + r"\[\[1, 5\]\]: RuntimeError: .*(device|cuda)")


# -- TorchFLOPsByFX(...): arguments of the wrong kind ------------------------------------------------
def rule_2_flops(call: OpCall) -> Cost:
    return Cost(2, 0)


CONSTRUCTOR_CASES = [
    # case(id, model factory, keyword arguments, exception, message)
    case("builtin_function", lambda: torch.relu, {}, TypeError, "expects an nn.Module, got builtin_function_or_method"),
    case("bound_forward_method", lambda: SimpleModel().forward, {}, TypeError, "expects an nn.Module, got method"),
    case("tensor", lambda: torch.randn(3), {}, TypeError, "expects an nn.Module, got Tensor"),
    case("none", lambda: None, {}, TypeError, "expects an nn.Module, got NoneType"),
    case("list_of_modules", lambda: [nn.Linear(2, 2)], {}, TypeError, "expects an nn.Module, got list"),
    case("class_not_instance", lambda: SimpleModel, {}, TypeError, r"class SimpleModel.*instance"),
    case("mem_func_reserved", SimpleModel, {"mem_func_name": "memory_reserved"}, ValueError,
         r"mem_func_name must be one of \('max_memory_allocated', 'memory_allocated'\), got 'memory_reserved'"),
    case("mem_func_wrong_case", SimpleModel, {"mem_func_name": "MAX_MEMORY_ALLOCATED"}, ValueError,
         r"mem_func_name must be one of .*, got 'MAX_MEMORY_ALLOCATED'"),
    case("mem_func_none", SimpleModel, {"mem_func_name": None}, ValueError, r"mem_func_name must be one of .*, got None"),
    case("inputs_given_to_the_constructor", SimpleModel, {"mem_func_name": torch.randn(1, 5)}, TypeError,
         r"mem_func_name must be one of .*, got tensors of shape \[1, 5\]: a model's inputs are not given to "
         r"TorchFLOPsByFX\(model\) but to counter.propagate"),
    case("input_tuple_given_to_the_constructor", SimpleModel, {"mem_func_name": (torch.randn(1, 5), torch.ones(2))}, TypeError,
         r"got tensors of shape \[1, 5\], \[2\]: a model's inputs"),
    case("leaf_path_missing", SmallConvNet, {"leaf_modules": ["conv", "backbone.body"]}, ValueError,
         r"leaf_modules \['backbone.body'\] are not submodules of SmallConvNet"),
    case("leaf_path_is_a_parameter", SmallConvNet, {"leaf_modules": ["conv.weight"]}, ValueError,
         r"leaf_modules \['conv.weight'\] are not submodules of SmallConvNet"),
    case("leaf_path_as_bare_string", SmallConvNet, {"leaf_modules": "fc.linear"}, ValueError,
         r"leaf_modules \['fc.linear'\] are not submodules"),
    case("leaf_path_not_a_string", SmallConvNet, {"leaf_modules": [3]}, ValueError, r"leaf_modules \[3\] are not submodules"),
    case("extra_rule_key_int", SimpleModel, {"extra_rules": {3: rule_2_flops}}, TypeError,
         "function rules are keyed by callables, got 3"),
    case("extra_rule_key_not_a_module_class", SimpleModel, {"extra_rules": {int: rule_2_flops}}, TypeError,
         r"module rules are keyed by nn.Module subclasses, got <class 'int'>"),
    case("extra_rule_not_callable", SimpleModel, {"extra_rules": {nn.Linear: 3}}, TypeError,
         r"the rule for <class 'torch.nn.modules.linear.Linear'> must be callable \(call -> Cost\), got 3"),
    case("extra_rule_key_module_instance", SimpleModel, {"extra_rules": {nn.ReLU(): rule_2_flops}}, TypeError,
         r"nn.Module subclasses, got .*ReLU"),
    case("extra_rules_not_a_mapping", SimpleModel, {"extra_rules": [nn.Linear]}, TypeError, r"extra_rules must be a mapping"),
    case("registry_not_a_registry", SimpleModel, {"registry": "default"}, TypeError,
         r"registry must be a CostRegistry, got str"),
    case("registry_empty_dict", SimpleModel, {"registry": {}}, TypeError, r"registry must be a CostRegistry, got dict"),
    case("leaf_types_not_types", SimpleModel, {"leaf_types": ("Linear",)}, TypeError, r"leaf_types .*'Linear'"),
    case("ignore_ops_int", SimpleModel, {"ignore_ops": 3}, TypeError, r"ignore_ops .*3"),
    case("ignore_ops_junk_in_list", SimpleModel, {"ignore_ops": [nn.Linear, 3]}, TypeError, r"ignore_ops .*3"),
    case("ignore_ops_module_instance", SimpleModel, {"ignore_ops": [nn.ReLU()]}, TypeError, r"ignore_ops .*class"),
    case("concrete_args_unknown_name", SimpleModel, {"concrete_args": {"mode": "fast"}}, ValueError,
         r"concrete_args .*'mode'.*forward\(x"),
]


@pytest.mark.parametrize("build, kwargs, error, match", CONSTRUCTOR_CASES)
def test_constructor_rejects_arguments_of_the_wrong_kind(
    build: Callable[[], Any], kwargs: dict, error: type[Exception], match: str
) -> None:
    model = build()
    if isinstance(model, nn.Module):
        prepared(model)
        raises_unchanged(model, lambda: TorchFLOPsByFX(model, **kwargs), error, match)
    else:
        with pytest.raises(error, match=match):
            TorchFLOPsByFX(model, **kwargs)


def test_ignore_ops_none_means_nothing_ignored() -> None:
    counter = TorchFLOPsByFX(SimpleModel(), ignore_ops=None)
    counter.propagate(torch.randn(1, 5))
    assert counter.total_flops == 40


def test_untraceable_model_with_auto_leaf_off_is_restored() -> None:
    model = prepared(HasSizeLeaf())
    raises_unchanged(model, lambda: TorchFLOPsByFX(model, auto_leaf=False), TraceError,
                     r"could not trace module 'block' \(SizeLeaf\): TraceError: symbolically traced variables")


# -- custom rules that misbehave -----------------------------------------------------------------------
def returns_float(call: OpCall) -> Any:
    return 1.5


def returns_tuple(call: OpCall) -> Any:
    return (40, 20)


def returns_none(call: OpCall) -> Any:
    return None


def returns_int(call: OpCall) -> Any:
    return 40


def returns_cost_of_floats(call: OpCall) -> Any:
    return Cost(40.0, 20.0)


def returns_negative_cost(call: OpCall) -> Any:
    return Cost(-40, 0)


def raises_value_error(call: OpCall) -> Any:
    raise ValueError("rule exploded")


RULE_CASES = [
    case("float", returns_float, r"cost rule returns_float returned 1.5 for node 'layer' \(layer\); expected a Cost of two (non-negative )?ints"),
    case("tuple", returns_tuple, r"cost rule returns_tuple returned \(40, 20\) for node 'layer' \(layer\); expected a Cost"),
    case("none", returns_none, r"cost rule returns_none returned None for node 'layer' \(layer\); expected a Cost"),
    case("bare_int", returns_int, r"cost rule returns_int returned 40 for node 'layer' \(layer\); expected a Cost"),
    case("cost_of_floats", returns_cost_of_floats,
         r"cost rule returns_cost_of_floats returned Cost\(flops=40.0, macs=20.0\) for node 'layer' \(layer\)"),
    case("raises", raises_value_error, r"cost rule raises_value_error failed on node 'layer' \(call_module layer\) with input "
         r"shapes \[\[3, 5\]\]: ValueError: rule exploded"),
    case("negative", returns_negative_cost, r"cost rule returns_negative_cost returned Cost\(flops=-40"),
]


@pytest.mark.parametrize("rule, match", RULE_CASES)
def test_module_rule_returning_garbage_names_the_rule_and_the_node(rule: Callable, match: str) -> None:
    model = prepared(SimpleModel(add_one=True))
    counter = TorchFLOPsByFX(model, extra_rules={nn.Linear: rule})
    raises_unchanged(model, lambda: counter.propagate(torch.randn(3, 5)), CostRuleError, match)


def test_method_rule_returning_a_float_names_the_method_node() -> None:
    model = prepared(SmallConvNet())
    counter = TorchFLOPsByFX(model, extra_rules={"flatten": returns_float})
    raises_unchanged(model, lambda: counter.propagate(torch.randn(1, 3, 8, 8)), CostRuleError,
                     r"cost rule returns_float returned 1.5 for node 'flatten' \(flatten\)")


def test_function_rule_that_raises_names_the_function_node_and_shapes() -> None:
    model = prepared(SmallConvNet())
    counter = TorchFLOPsByFX(model, extra_rules={torch.softmax: raises_value_error})
    raises_unchanged(model, lambda: counter.propagate(torch.randn(1, 3, 8, 8)), CostRuleError,
                     r"cost rule raises_value_error failed on node 'softmax' \(call_function torch.softmax\) with input "
                     r"shapes \[\[1, 10\]\]: ValueError: rule exploded")


def test_function_rule_that_raises_inside_a_leaf_names_rule_call_module_and_node_and_removes_its_hooks() -> None:
    """The leaf has children, so hooks follow the module running while it runs: they must go too."""
    model = prepared(HasSizeLeaf())
    counter = TorchFLOPsByFX(model, extra_rules={F.linear: raises_value_error})
    assert counter.leaf_modules.keys() == {"block"}
    raises_unchanged(model, lambda: counter.propagate(torch.randn(2, 4)), CostRuleError,
                     r"cost rule raises_value_error failed on torch.nn.functional.linear in module 'block.inner' "
                     r"\(inside node 'block'\) with input shapes \[\[2, 4\], \[4, 4\], \[4\]\]: ValueError: rule exploded")


class InverseLeaf(nn.Module):
    """``if x.size(0) > 0`` cannot be traced; ``torch.linalg.matrix_exp`` has no function rule: priced by its aten op."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.size(0) > 0:
            return torch.linalg.matrix_exp(x)
        return x


def test_aten_rule_that_raises_inside_a_leaf_names_rule_op_and_node() -> None:
    model = InverseLeaf()
    counter = TorchFLOPsByFX(model, extra_rules={aten.linalg_matrix_exp: raises_value_error})
    raises_unchanged(model, lambda: counter.propagate(torch.eye(3)), AtenRuleError,
                     r"aten rule raises_value_error failed on aten.linalg_matrix_exp: ValueError: rule exploded "
                     r"\(node 'root_module', call_module \(root\), input shapes \[\[3, 3\]\]\)")


def test_aten_rule_returning_a_float_in_a_whole_model_leaf_names_the_root_node() -> None:
    model = InverseLeaf()
    counter = TorchFLOPsByFX(model, leaf_modules=[""], extra_rules={aten.linalg_matrix_exp: returns_float})
    raises_unchanged(model, lambda: counter.propagate(torch.eye(3)), AtenRuleError,
                     r"aten rule returns_float returned 1.5 for aten.linalg_matrix_exp; expected a Cost of two (non-negative )?ints "
                     r"\(node 'root_module', call_module \(root\), input shapes \[\[3, 3\]\]\)")


def test_count_aten_with_a_raising_rule_names_rule_and_op_and_pops_its_mode() -> None:
    model = prepared(SmallConvNet())
    registry = DEFAULT_REGISTRY.overlay({aten.convolution: raises_value_error})
    raises_unchanged(model, lambda: count_aten(model, torch.randn(1, 3, 8, 8), registry=registry), AtenRuleError,
                     r"aten rule raises_value_error failed on aten.convolution: ValueError: rule exploded")


def test_profile_custom_counter_that_raises_leaves_no_total_ops_behind() -> None:
    def boom(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        module.total_ops += 1
        raise RuntimeError("thop counter broke")

    model = prepared(SmallConvNet())
    raises_unchanged(model, lambda: profile(model, torch.randn(1, 3, 8, 8), custom_ops={nn.Linear: boom}, verbose=False),
                     CostRuleError, r"custom counter failed on node 'fc' .*RuntimeError: thop counter broke")


# -- profile() and LayerInfo.summary() -----------------------------------------------------------------
def test_profile_rejects_a_function_and_a_missing_input() -> None:
    with pytest.raises(TypeError, match="expects an nn.Module, got function"):
        profile(lambda x: x, torch.randn(1))
    model = prepared(SimpleModel())
    raises_unchanged(model, lambda: profile(model, verbose=False), TypeError,
                     r"SimpleModel.forward\(x: torch.Tensor\) cannot take these inputs: missing a required argument: 'x'")


def test_profile_custom_ops_keyed_by_a_string() -> None:
    model = prepared(SimpleModel())
    raises_unchanged(model, lambda: profile(model, torch.randn(1, 5), custom_ops={"Linear": lambda m, i, o: 1}),
                     TypeError, r"custom_ops .*'Linear'")


@pytest.fixture(scope="module")
def small_info():
    return profile(SmallConvNet(), torch.randn(1, 3, 8, 8), verbose=False)[2]


@pytest.mark.parametrize("kind, fmt, match", [
    ("TEXT", "raw", r"kind must be one of \('text', 'csv', 'md'\), got 'TEXT'"),
    ("markdown", "raw", r"kind must be one of \('text', 'csv', 'md'\), got 'markdown'"),
    (None, "raw", r"kind must be one of \('text', 'csv', 'md'\), got None"),
    ("text", "RAW", r"fmt must be one of \('raw', 'clever', 'ratio'\), got 'RAW'"),
    ("md", "percent", r"fmt must be one of \('raw', 'clever', 'ratio'\), got 'percent'"),
    ("csv", None, r"fmt must be one of \('raw', 'clever', 'ratio'\), got None"),
], ids=["kind_upper_case", "kind_markdown", "kind_none", "fmt_upper_case", "fmt_percent", "fmt_none"])
def test_summary_rejects_unknown_kind_and_fmt(small_info, kind: Any, fmt: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        small_info.summary(kind=kind, fmt=fmt)


# -- results asked for before propagate() ----------------------------------------------------------
BEFORE_PROPAGATE = {
    "total_flops": lambda c, tmp: c.total_flops,
    "total_macs": lambda c, tmp: c.total_macs,
    "unsupported": lambda c, tmp: c.unsupported,
    "print_result_table": lambda c, tmp: c.print_result_table(),
    "print_total_time": lambda c, tmp: c.print_total_time(),
    "print_max_memory": lambda c, tmp: c.print_max_memory(show=False),
    "save_result_to_csv": lambda c, tmp: c.save_result_to_csv(tmp / "out.csv"),
}


@pytest.mark.parametrize("what", list(BEFORE_PROPAGATE))
def test_results_before_propagate_raise_a_clear_error(what: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = prepared(SmallConvNet())
    counter = TorchFLOPsByFX(model)
    raises_unchanged(model, lambda: BEFORE_PROPAGATE[what](counter, tmp_path), RuntimeError,
                     r"no results yet: call propagate\(\) first")
    assert capsys.readouterr().out == ""  # nothing half-printed


def test_save_result_to_csv_before_propagate_keeps_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "previous.csv"
    path.write_text("results of an earlier run\n")
    with pytest.raises(RuntimeError, match=r"call propagate\(\) first"):
        TorchFLOPsByFX(SimpleModel()).save_result_to_csv(path)
    assert path.read_text() == "results of an earlier run\n"


# -- the registry: duplicates and keys of the wrong kind ---------------------------------------------
def _registry_sizes() -> tuple[int, ...]:
    return tuple(len(table) for table in (DEFAULT_REGISTRY.modules, DEFAULT_REGISTRY.functions,
                                          DEFAULT_REGISTRY.methods, DEFAULT_REGISTRY.aten))


REGISTRY_CASES = {
    "duplicate_function": (lambda r: r.add_function_rule([torch.matmul], Rule(rule_2_flops)), DuplicateRuleError,
                           r"matmul already has the rule \w+; pass replace=True to override it"),
    "duplicate_method": (lambda r: r.add_method_rule(["add"], Rule(rule_2_flops)), DuplicateRuleError,
                         r"add already has the rule \w+; pass replace=True"),
    "duplicate_aten_op": (lambda r: r.add_aten_rule([aten.mm], Rule(rule_2_flops)), DuplicateRuleError,
                          r"aten.mm already has the rule \w+; pass replace=True"),
    "duplicate_via_add_rule": (lambda r: r.add_rule(nn.Conv2d, rule_2_flops), DuplicateRuleError,
                               r"Conv2d already has the rule \w+; pass replace=True"),
    "duplicate_function_decorator": (lambda r: function_rule(torch.matmul, registry=r)(rule_2_flops), DuplicateRuleError,
                                     r"matmul already has the rule"),
    "duplicate_method_decorator": (lambda r: method_rule("matmul", registry=r)(rule_2_flops), DuplicateRuleError,
                                   r"matmul already has the rule"),
    "duplicate_aten_decorator": (lambda r: aten_rule(aten.addmm, registry=r)(rule_2_flops), DuplicateRuleError,
                                 r"aten.addmm already has the rule"),
    "method_keyed_by_callable": (lambda r: r.add_method_rule([torch.add], Rule(rule_2_flops)), TypeError,
                                 r"method rules are keyed by method names \(str\), got <built-in method add"),
    "function_keyed_by_string": (lambda r: r.add_function_rule(["add"], Rule(rule_2_flops)), TypeError,
                                 r"function rules are keyed by callables, got 'add'"),
    "module_keyed_by_instance": (lambda r: r.add_module_rule([nn.Linear(2, 2)], Rule(rule_2_flops)), TypeError,
                                 r"module rules are keyed by nn.Module subclasses, got Linear"),
    "rule_not_callable": (lambda r: r.add_rule("foo", "bar"), TypeError,
                          r"the rule for 'foo' must be callable \(call -> Cost\), got 'bar'"),
}


@pytest.mark.parametrize("case", list(REGISTRY_CASES))
def test_registry_rejects_duplicates_and_wrong_keys(case: str) -> None:
    action, error, match = REGISTRY_CASES[case]
    sizes = _registry_sizes()
    registry = DEFAULT_REGISTRY.overlay({})
    tables = (dict(registry.modules), dict(registry.functions), dict(registry.methods), dict(registry.aten))
    with pytest.raises(error, match=match):
        action(registry)
    assert (registry.modules, registry.functions, registry.methods, registry.aten) == tables  # nothing half-added
    assert _registry_sizes() == sizes  # and the built-in registry never changes


def test_add_rule_keyed_by_a_module_instance_is_rejected() -> None:
    with pytest.raises(TypeError, match=r"nn.Module subclass"):
        CostRegistry().add_rule(nn.Linear(2, 2), rule_2_flops)


def test_a_rejected_registration_adds_nothing() -> None:
    class NewLayer(nn.Module):
        pass

    registry = DEFAULT_REGISTRY.overlay({})
    with pytest.raises(DuplicateRuleError, match="Linear already has the rule"):
        registry.add_module_rule([NewLayer, nn.Linear], Rule(rule_2_flops))
    assert NewLayer not in registry.modules


# -- edge values that are not errors: they must count exactly ------------------------------------------
EMPTY_CASES = {
    # (model factory, inputs, expected flops by node name)
    "batch_of_zero_convnet": (SmallConvNet, lambda: (torch.randn(0, 3, 8, 8),),
                              {"conv": 0, "bn": 0, "act": 0, "pool": 0, "fc": 0, "mul": 0, "softmax": 0}),
    "batch_of_zero_linear_and_add": (lambda: SimpleModel(add_one=True), lambda: (torch.randn(0, 5),), {"layer": 0, "add": 0}),
    "inner_dim_zero_matmul": (NoParams, lambda: (torch.randn(2, 0), torch.randn(0, 3)), {"matmul": 0, "relu": 6}),  # relu of 2x3 zeros
    "empty_rows_softmax": (lambda: Op(lambda a: a.softmax(-1)), lambda: (torch.randn(4, 0),), {"softmax": 0}),
    "empty_mean": (lambda: Op(lambda a: a.mean(-1)), lambda: (torch.randn(0, 7),), {"mean": 0}),
}


@pytest.mark.parametrize("case", list(EMPTY_CASES))
def test_empty_tensors_count_zero_without_crashing(case: str) -> None:
    build, make_inputs, expected = EMPTY_CASES[case]
    model = prepared(build())
    before = snapshot(model)
    counter = TorchFLOPsByFX(model)
    counter.propagate(*make_inputs())
    by_name = {r.name: r for r in counter.records}
    assert {name: by_name[name].flops for name in expected} == expected
    assert all(by_name[name].status in (Status.RULE, Status.FALLBACK) for name in expected)  # priced, not skipped
    assert counter.total_flops == sum(expected.values())
    assert_unchanged(model, before)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")], ids=["nan", "inf", "minus_inf"])
def test_non_finite_inputs_count_like_finite_ones(value: float) -> None:
    model = prepared(SmallConvNet())
    before = snapshot(model)
    x = torch.randn(2, 3, 8, 8)
    finite = TorchFLOPsByFX(model)
    finite.propagate(x)
    x[0, 1, 2:5, 3] = value
    x[1] = value
    counter = TorchFLOPsByFX(model)
    counter.propagate(x)
    assert record_facts(counter) == record_facts(finite)
    assert counter.total_flops == 33_230
    assert_unchanged(model, before)  # a NaN batch must not leak into the running statistics either
