"""The tracer builds exactly the graph ``torch.fx.Tracer`` builds (code, node names, arguments and the
module stack every node records), only faster."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.fx as fx
from torch import nn

import torch_flops.tracer as tracer_module
from torch_flops.tracer import ScopeTrackingTracer
from torch_flops.tracing import modules_of, trace

torchvision = pytest.importorskip("torchvision")
timm = pytest.importorskip("timm")


def graph_summary(graph: fx.Graph) -> tuple[str, list[tuple]]:
    nodes = [(n.name, n.op, str(n.target), repr(n.args), repr(n.kwargs), n.meta.get("nn_module_stack")) for n in graph.nodes]
    return graph.python_code("self").src, nodes


class Unpacks(nn.Module):
    """Tuple unpacking of proxies and of ``x.shape``, a parameter read twice, a buffer and a constant."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(4))
        self.register_buffer("offset", torch.zeros(4))
        self.inner = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, features = x.shape
        a, b = x.chunk(2, dim=-1)
        y = torch.cat((b, a), dim=-1) * self.weight + self.weight
        return self.inner(y + self.offset).reshape(batch, features) + torch.tensor(1.0)


class PlainTensorAttributes(nn.Module):
    """Tensors held as plain attributes (not buffers), one of them by two modules, and a constant made
    in ``forward``: FX names each by the attribute that holds it (the last one found), or
    ``_tensor_constant0``."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = nn.Linear(4, 4)
        self.mask = torch.tensor([1.0, 0.0, 1.0, 0.0])
        self.inner.shift = torch.full((4,), 0.5)
        self.shared = self.inner.shift

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x * self.mask) + self.shared + torch.tensor(2.0)


class TiedParameters(nn.Module):
    """A weight shared by two layers and read through the second one's attribute, and a parameter of
    a nested module read by the root: FX names each by the first path ``named_parameters()`` gives."""

    def __init__(self) -> None:
        super().__init__()
        self.first = nn.Linear(4, 4)
        self.second = nn.Sequential(nn.Linear(4, 4))
        self.second[0].weight = self.first.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(x, self.second[0].weight) + self.first.bias * self.second[0].bias


def scaled_by_features(x: torch.Tensor, features: Any) -> torch.Tensor:
    return x / features


fx.wrap("scaled_by_features")  # FX records a call of it as one node instead of tracing into it


class WrappedFunctions(nn.Module):
    """``math.sqrt`` of a proxy (FX wraps ``math``'s functions during a trace) and a function registered
    with ``torch.fx.wrap``: each becomes one ``call_function`` node."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return scaled_by_features(self.inner(x), math.sqrt(x.shape[-1]))


def fx_reference(fx_trace: Callable[[], Any]) -> Any:
    """FX's own trace, the reference; skips where this PyTorch's FX cannot trace the model at all (timm's
    ViT on torch 2.4 passes a proxy of ``forward``'s ``is_causal`` to SDPA)."""
    try:
        return fx_trace()
    except TypeError as error:
        pytest.skip(f"torch.fx of torch {torch.__version__} cannot trace it: {error}")


MODELS: dict[str, Callable[[], nn.Module]] = {
    "unpacks": Unpacks,
    "wrapped_functions": WrappedFunctions,
    "plain_tensor_attributes": PlainTensorAttributes,
    "tied_parameters": TiedParameters,
    "resnet18": lambda: torchvision.models.resnet18(),
    "swin_t": lambda: torchvision.models.swin_t(),
    "vit_tiny": lambda: timm.create_model("vit_tiny_patch16_224"),
    "levit_128": lambda: timm.create_model("levit_128"),  # caches a tensor per device in eval mode
}


@pytest.mark.parametrize("own_trace", [True, False], ids=["own trace", "FX's trace"])
@pytest.mark.parametrize("name", MODELS)
def test_graph_equals_fx_tracers(name: str, own_trace: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """With its own ``trace`` and, where PyTorch lacks FX helpers it follows, with FX's ``trace``."""
    if own_trace and not tracer_module._OWN_TRACE:
        pytest.skip("this PyTorch lacks FX helpers the own trace follows (torch 2.4): FX's trace runs instead")
    monkeypatch.setattr(tracer_module, "_OWN_TRACE", own_trace)
    torch.manual_seed(0)
    reference = fx_reference(lambda: fx.Tracer().trace(MODELS[name]().eval()))
    torch.manual_seed(0)
    ours = ScopeTrackingTracer().trace(MODELS[name]().eval())  # a fresh model: LeViT caches proxies
    assert graph_summary(ours) == graph_summary(reference)


def test_buffers_as_attributes_and_constant_parameter_shapes() -> None:
    """The tracer options FX's getattr honours: buffers become get_attr nodes when asked, and with
    ``param_shapes_constant`` a parameter's shape is a constant, not a node."""

    class Shaped(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.weight = nn.Parameter(torch.ones(3, 4))
            self.register_buffer("scale", torch.ones(4))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.reshape(-1, self.weight.shape[1]) * self.scale @ self.weight.t()

    for options in ({"proxy_buffer_attributes": True}, {"param_shapes_constant": True}):
        reference, ours = fx.Tracer(), ScopeTrackingTracer()
        for tracer in (reference, ours):
            for key, value in options.items():
                setattr(tracer, key, value)
        assert graph_summary(ours.trace(Shaped())) == graph_summary(reference.trace(Shaped())), options


@pytest.mark.parametrize("name", ["unpacks", "resnet18", "vit_tiny"])
def test_graph_module_holds_the_models_own_objects(name: str) -> None:
    """``trace``'s graph module resolves every ``call_module`` / ``get_attr`` target to the very object
    ``GraphModule(model, graph)`` would hold there (modules, parameters and buffers are the model's; a
    traced tensor constant is a buffer of the graph module only), and its generated code computes what
    the model computes."""
    torch.manual_seed(0)
    model = MODELS[name]().eval()
    before = set(vars(model))
    gm = trace(model).graph_module
    assert set(vars(model)) == before  # the constants FX put on the model while tracing are gone
    reference = fx_reference(lambda: fx.symbolic_trace(model))  # leaves its constants on the model, as FX does
    targets = [n.target for n in gm.graph.nodes if n.op in ("call_module", "get_attr")]
    assert targets == [n.target for n in reference.graph.nodes if n.op in ("call_module", "get_attr")]
    for target in targets:
        ours, theirs = gm.get_submodule(target) if _is_module(gm, target) else _attr(gm, target), _attr(reference, target)
        if target.startswith("_tensor_constant"):
            assert torch.equal(ours, theirs) and target in dict(gm.named_buffers())
        else:
            assert ours is theirs, target
    x = torch.randn(2, 4) if name == "unpacks" else torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(gm(x), model(x), rtol=0, atol=0)


def _attr(module: nn.Module, target: str) -> object:
    for part in target.split("."):
        module = getattr(module, part)
    return module


def _is_module(module: nn.Module, target: str) -> bool:
    return isinstance(_attr(module, target), nn.Module)


class Delegating(nn.Module):
    """Overrides ``__getattr__`` (an alias) and ``__call__`` (doubles the output), each reaching
    ``nn.Module``'s through ``super()``: FX's patches of ``nn.Module`` see the parameter read and the
    call behind them, so the tracer must patch ``nn.Module`` itself here, not the class."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.full((4,), 2.0))
        self.inner = nn.Linear(4, 4)

    def __getattr__(self, name: str) -> object:
        return super().__getattr__("scale" if name == "gain" else name)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x) * self.gain


class Doubled(nn.Linear):
    def __call__(self, *args: object) -> object:
        return super().__call__(*args) * 2


class FailsInside(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inner = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.inner(x)
        if y.sum() > 0:  # data-dependent: symbolic tracing fails here
            return y
        return -y


@pytest.mark.parametrize("make", [Unpacks, Delegating, lambda: nn.Sequential(Delegating(), Doubled(4, 4), nn.ReLU())])
def test_graph_equals_fx_tracers_with_overridden_module_methods(make: Callable[[], nn.Module]) -> None:
    assert graph_summary(ScopeTrackingTracer().trace(make())) == graph_summary(fx.Tracer().trace(make()))


def test_wrapped_functions_are_recorded_in_every_trace_and_restored_after_it() -> None:
    """FX's wrappers of ``math`` functions and ``fx.wrap``-registered ones, reused across traces: the
    second trace records the same calls, and after each trace the modules hold the originals again."""
    originals = (math.sqrt, scaled_by_features)
    reference = graph_summary(fx.Tracer().trace(WrappedFunctions()))
    for _ in range(2):
        graph = ScopeTrackingTracer().trace(WrappedFunctions())
        assert graph_summary(graph) == reference
        targets = [n.target for n in graph.nodes if n.op == "call_function"]
        assert math.sqrt in targets and scaled_by_features in targets
        assert (math.sqrt, globals()["scaled_by_features"]) == originals
    assert graph_summary(fx.Tracer().trace(WrappedFunctions())) == reference  # FX's own trace is unaffected
    x = torch.randn(2, 4)
    gm = trace(WrappedFunctions().eval()).graph_module
    torch.testing.assert_close(gm(x), scaled_by_features(gm.inner(x), 2.0))


class DataDependent(nn.Module):
    """FX cannot trace ``branchy``'s ``forward`` (control flow on a tensor value): it becomes a leaf."""

    def __init__(self) -> None:
        super().__init__()
        self.first = nn.Linear(4, 4)
        self.branchy = Branchy()
        self.shared = self.first  # one module at two paths

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.branchy(self.shared(self.first(x)))


class Branchy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inner = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x) if x.sum() > 0 else -x


@pytest.mark.parametrize("make", [Unpacks, DataDependent, lambda: nn.Linear(4, 4), lambda: torchvision.models.resnet18()],
                         ids=["unpacks", "auto leaf", "library layer", "resnet18"])
def test_trace_result_lists_the_models_modules(make: Callable[[], nn.Module]) -> None:
    """``TraceResult.modules_by_path`` is ``named_modules()`` of the model: every module once, by its
    first path; with the graph module its modules are all the graph module holds, as a walk of both
    finds, and each path leads to the same module in the graph module (the counter uses it for the model
    state, training flags and module lookups instead of walking again)."""
    model = make()
    result = trace(model)
    assert ("branchy" in result.leaf_modules) == isinstance(model, DataDependent)
    assert list(result.modules_by_path.items()) == list(model.named_modules())
    gm, modules = result.graph_module, list(result.modules_by_path.values())
    walked = modules_of(gm, model)
    assert {id(m) for m in [gm, *modules]} == {id(m) for m in walked} and len(walked) == 1 + len(modules)
    targets = [n.target for n in gm.graph.nodes if n.op == "call_module"]
    assert targets and all(result.modules_by_path.get(t, gm.get_submodule(t)) is gm.get_submodule(t) for t in targets)


def test_unpacking_sites_found_in_one_trace_serve_the_next() -> None:
    """``a, b = proxy``: the unpack count of a call site is looked up once per process; later traces of
    the same code (other tracers, other instances) build FX's graph too."""
    reference = graph_summary(fx.Tracer().trace(Unpacks()))
    assert [graph_summary(ScopeTrackingTracer().trace(Unpacks())) for _ in range(3)] == [reference] * 3


def test_module_classes_are_restored_after_a_trace() -> None:
    """Module calls are intercepted on the model's own classes during a trace; afterwards, also after
    a trace that failed, those classes inherit ``__call__`` and ``__getattr__`` from ``nn.Module`` again
    and ``nn.Module``'s are its own, so FX's later traces (which patch ``nn.Module``) still see them."""
    import torch.fx._symbolic_trace as fx_trace

    constant_types = getattr(fx_trace, "_constant_attribute_types", None)
    originals = {name: vars(nn.Module)[name] for name in ("__call__", "__getattr__")}
    classes = (Unpacks, nn.Linear, FailsInside)
    ScopeTrackingTracer().trace(Unpacks())
    with pytest.raises(fx.proxy.TraceError):  # FX's error for a proxy used as a bool
        ScopeTrackingTracer().trace(FailsInside())
    for cls in classes:
        assert "__call__" not in vars(cls) and "__getattr__" not in vars(cls), cls
    assert {name: vars(nn.Module)[name] for name in originals} == originals
    assert getattr(fx_trace, "_constant_attribute_types", None) == constant_types  # put back, also after a failure
    gm = fx.symbolic_trace(Unpacks())
    assert [n.op for n in gm.graph.nodes].count("call_module") == 1  # inner is still a call_module node


def _sweep() -> list[tuple[str, Callable[[], nn.Module]]]:
    """Every torchvision classification model and one model of every timm family (the shortest name)."""
    cases: list[tuple[str, Callable[[], nn.Module]]] = [
        (name, lambda name=name: torchvision.models.get_model(name, weights=None))
        for name in torchvision.models.list_models(module=torchvision.models)
    ]
    for family in timm.list_modules():
        names = timm.list_models(module=family)
        if names:
            name = min(names, key=lambda n: (len(n), n))
            cases.append((name, lambda name=name: timm.create_model(name, pretrained=False)))
    return cases


SWEEP = _sweep()


@pytest.mark.slow
@pytest.mark.parametrize("name, build", SWEEP, ids=[name for name, _ in SWEEP])
def test_graph_equals_fx_tracers_across_model_zoos(name: str, build: Callable[[], nn.Module]) -> None:
    """On every model ``torch.fx.Tracer`` can trace, ours builds the same graph."""
    torch.manual_seed(0)
    try:
        reference = fx.Tracer().trace(build().eval())
    except Exception as error:  # the leaf fallback's case (test_leaf_fallback.py)
        pytest.skip(f"torch.fx.Tracer cannot trace {name}: {type(error).__name__}")
    torch.manual_seed(0)
    assert graph_summary(ScopeTrackingTracer().trace(build().eval())) == graph_summary(reference)
