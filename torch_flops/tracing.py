"""Model -> ``torch.fx.GraphModule``, with an automatic leaf fallback for code FX cannot trace.

``symbolic_trace`` fails on data-dependent control flow, asserts on shapes, iteration over tensors ...
When it does, :func:`trace` finds the innermost module whose ``forward`` was running, traces again with
that module kept whole (a leaf: one ``call_module`` node, counted through the aten-level fallback), and
repeats until the graph builds. If the root's own ``forward`` cannot be traced, the root becomes the
leaf: the graph is one node that runs the whole model. The modules made leaves, and why, are in
:attr:`TraceResult.leaf_modules`.
"""

from __future__ import annotations

import inspect
import operator
import warnings
from collections.abc import Collection, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.fx as fx
from torch import nn

from torch_flops.model_state import ModelSnapshot, RngState, global_hooks, hooked_modules
from torch_flops.inputs import forward_signature
from torch_flops.tracer import ScopeTrackingTracer, named_modules

FX_LIMITATIONS_URL = "https://pytorch.org/docs/stable/fx.html#limitations-of-symbolic-tracing"


class TraceError(RuntimeError):
    """``symbolic_trace`` could not build a graph. ``module_path`` names the innermost module being
    traced when it failed ('' for the root) and ``module_class`` its class."""

    def __init__(self, message: str, module_path: str, module_class: str) -> None:
        super().__init__(message)
        self.module_path = module_path
        self.module_class = module_class


def modules_of(*roots: nn.Module) -> list[nn.Module]:
    """Every module under ``roots`` (the roots included), once each, in ``Module.modules()`` order.

    A walk over ``_modules`` with an explicit stack: ``modules()`` nests one generator per level."""
    found: dict[int, nn.Module] = {}
    stack = list(reversed(roots))
    while stack:
        module = stack.pop()
        if id(module) in found:
            continue
        found[id(module)] = module
        stack.extend([child for child in reversed(module._modules.values()) if child is not None])
    return list(found.values())


def state_tensors(modules: Iterable[nn.Module]) -> list[torch.Tensor]:
    """The parameters and buffers held by ``modules`` themselves (``None`` entries left out), read from
    their tables: ``parameters()`` and ``buffers()`` without a generator per module level."""
    return [t for module in modules for table in (module._parameters, module._buffers) for t in table.values() if t is not None]


@contextmanager
def eval_mode(*roots: nn.Module, modules: Iterable[nn.Module] = (), training: bool = False) -> Iterator[None]:
    """Put ``roots`` (and so all their submodules) and ``modules`` in eval mode (train mode with
    ``training=True``); restore every module's own flag after.

    Only modules whose flag differs are touched. Their flag is set directly (what ``nn.Module.train``
    does), except for classes that override ``train``, whose own ``train(...)`` runs, and TorchScript
    modules, whose flag lives in the compiled module (set through its ``setattr``)."""
    every = {id(module): module for module in (*modules_of(*roots), *modules)}
    changed = [module for module in every.values() if module.training != training]
    try:
        for module in changed:
            _set_training(module, training)
        yield
    finally:
        for module in changed:  # each module's own flag back, directly: a train() would recurse into children
            if isinstance(module, torch.jit.ScriptModule):
                module.training = not training
            else:
                module.__dict__["training"] = not training


def _set_training(module: nn.Module, training: bool) -> None:
    if isinstance(module, torch.jit.ScriptModule):
        module.training = training
    elif type(module).train is nn.Module.train:
        module.__dict__["training"] = training
    else:
        module.train(training)


def check_model(model: Any) -> None:
    """Raise ``TypeError`` unless ``model`` is an ``nn.Module`` instance."""
    if isinstance(model, type) and issubclass(model, nn.Module):
        raise TypeError(f"torch_flops expects an nn.Module instance, got the class {model.__name__}; create an instance first")
    if not isinstance(model, nn.Module):
        raise TypeError(f"torch_flops expects an nn.Module, got {type(model).__name__}")


def first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


ROOT_LEAF = "root_module"
"""The attribute under which a graph that runs the whole model as one node holds the model."""

_SPECIALISED = "has been specialized to have value"
_assert_is_none = torch.fx._symbolic_trace._assert_is_none


@dataclass(frozen=True)
class TraceResult:
    """A traced graph and the modules kept whole because FX could not trace them.

    ``leaf_modules`` maps a module's qualified name ('' for the root) to why it is a leaf: the first
    line of the trace error, or ``"named by the user"``.
    """

    graph_module: fx.GraphModule
    # the traced model's modules by qualified name, as named_modules() gives them (each module once, by its first path)
    modules_by_path: dict[str, nn.Module]
    leaf_modules: dict[str, str] = field(default_factory=dict)
    concrete_args: dict[str, Any] = field(default_factory=dict)  # what the graph is specialised on
    snapshot: ModelSnapshot | None = None  # the model's modules as the graph was traced from them


def trace(
    model: nn.Module,
    leaf_types: tuple[type, ...] = (),
    leaf_paths: Collection[str] = (),
    concrete_args: Mapping[str, Any] | None = None,
    auto_leaf: bool = True,
    variadics: Mapping[str, int | tuple[str, ...]] | None = None,
    positional: int | None = None,
) -> TraceResult:
    """Trace ``model`` in eval mode; when FX fails inside a module's ``forward``, keep that module whole
    and trace again (``auto_leaf=False`` raises :class:`TraceError` instead, naming the module).

    The model's training flags are restored, and the tensor constants FX stores on the traced module
    while tracing are moved to the graph module only. Instances of ``leaf_types`` and the modules at
    ``leaf_paths`` stay single ``call_module`` nodes. ``concrete_args`` specialises the graph on
    non-tensor inputs (see :mod:`torch_flops.inputs`); ``variadics`` what the call passes to ``forward``'s
    ``*args`` and ``**kwargs``, which a graph of the whole model as one node passes on one by one, and
    ``positional`` how many arguments it passes by position, which that graph passes by position too.

    Modules that carry hooks are kept whole, and so are modules whose ``forward`` writes to module
    state while traced (found by comparing every module's attributes with a snapshot taken before the
    trace, which puts them all back after it): both then run as ``model(x)`` runs them. The root is
    kept whole when it carries hooks, writes to its own state, or global module hooks are registered.
    """
    check_model(model)
    unknown = sorted(set(leaf_paths) - set(dict(model.named_modules(remove_duplicate=False)))) if leaf_paths else []
    if unknown:
        raise ValueError(f"leaf_modules {unknown} are not submodules of {type(model).__name__}")
    leaves = {path: "named by the user" for path in leaf_paths}
    named = named_modules(model)
    modules = dict(named)
    snapshot = ModelSnapshot(named)
    eager = _eager_modules(named)

    def whole_model(why: str) -> TraceResult:
        snapshot.focus([""])
        return TraceResult(_root_leaf_graph(model, variadics, positional), modules, leaves | {"": why}, snapshot=snapshot)

    if "" in leaves or "" in eager or _is_library_leaf(model, leaf_types):
        return whole_model(leaves.get("", eager.get("", _library_leaf_reason(model))))
    leaves |= {path: why for path, why in eager.items() if path not in leaves}
    while True:
        try:
            graph_module, written = _trace_once(model, leaf_types, leaves, concrete_args, named, snapshot)
        except TraceError as error:
            if not auto_leaf:
                raise
            reason = untraceable_reason(error, modules.get(error.module_path))
            if error.module_path == "" or error.module_path in leaves:
                return whole_model(reason)
            leaves[error.module_path] = reason
            continue
        if not written:
            snapshot.focus(node.target for node in graph_module.graph.nodes if node.op == "call_module")
            return TraceResult(graph_module, modules, leaves, dict(concrete_args or {}), snapshot)
        for path, names in written.items():
            writer = _writer(path, leaves)
            why = f"its forward writes to module state ({_describe_writes(path, names)}): kept whole so that the writes happen as in model(x)"
            if writer == "":
                return whole_model(why)
            leaves[writer] = why


_UNTRACEABLE = (  # (what torch.fx's error says, what it means)
    ("co_varnames is too small", "forward takes *args or **kwargs, which torch.fx cannot trace{hf}"),
    ("cannot be used as inputs to control flow", "forward branches on a tensor's value (if/while on a tensor), which torch.fx cannot trace"),
    ("Proxy object cannot be iterated", "forward iterates over a tensor or unpacks one, which torch.fx cannot trace"),
    ("'len' is not supported", "forward calls len() on a tensor, which torch.fx cannot trace"),
)


def untraceable_reason(error: TraceError, module: nn.Module | None) -> str:
    """Why a module became a leaf, in words a user understands, with torch.fx's own message after it:
    ``forward takes *args or **kwargs, which torch.fx cannot trace (transformers 5 dropped torch.fx support);
    counted op by op instead [ValueError: code: co_varnames is too small]``."""
    cause = error.__cause__
    raw = f"{type(cause).__name__}: {first_line(cause)}" if cause is not None else str(error)
    from_transformers = module is not None and type(module).__module__.startswith("transformers.")
    hf = " (transformers 5 dropped torch.fx support)" if from_transformers else ""
    plain = next((meaning.format(hf=hf) for needle, meaning in _UNTRACEABLE if needle in raw), None)
    if plain is None:
        return f"{raw}; counted op by op instead"
    return f"{plain}; counted op by op instead [{raw}]"


def _eager_modules(named: list[tuple[str, nn.Module]]) -> dict[str, str]:
    """Modules that must run as ``model(x)`` runs them, by path, with why: those carrying hooks, and
    the root when global module hooks are registered (they run on every module call)."""
    eager = hooked_modules(named)
    kinds = global_hooks()
    if kinds and "" not in eager:
        eager[""] = f"global module {' and '.join(kinds)}s are registered: the model runs as in model(x)"
    return eager


def _writer(path: str, leaves: Mapping[str, str]) -> str:
    """The module to keep whole for a write to the state of the module at ``path``: that module, or,
    if it is kept whole already (so an enclosing ``forward`` wrote to it), its nearest traced parent."""
    while path and path in leaves:
        path = path.rpartition(".")[0]
    return path


def _describe_writes(path: str, names: list[str]) -> str:
    where = f"'{path}'" if path else "the root"
    shown = ", ".join(name.lstrip("_") if name in ("_buffers", "_parameters", "_modules") else name for name in names[:3])
    return f"{shown} of {where}" + (" ..." if len(names) > 3 else "")


def _is_library_leaf(model: nn.Module, leaf_types: tuple[type, ...]) -> bool:
    """A ``torch.nn`` layer (not a container), a TorchScript module or a ``leaf_types`` instance given as
    the model itself."""
    return isinstance(model, (*leaf_types, torch.jit.ScriptModule)) or (
        fx.Tracer().is_leaf_module(model, "") and not isinstance(model, (nn.Sequential, nn.ModuleList, nn.ModuleDict))
    )


def _library_leaf_reason(model: nn.Module) -> str:
    """Why a model given whole is one node (see :func:`_is_library_leaf`)."""
    if isinstance(model, torch.jit.ScriptModule):
        return "a TorchScript module: FX cannot trace it, so it runs whole, counted by the aten-level fallback"
    return "a torch.nn layer"


def _trace_once(
    model: nn.Module, leaf_types: tuple[type, ...], leaves: Mapping[str, str], concrete_args: Mapping[str, Any] | None,
    named: list[tuple[str, nn.Module]], snapshot: ModelSnapshot,
) -> tuple[fx.GraphModule, dict[str, list[str]]]:
    """One trace of ``model`` (``named`` is :func:`named_modules` of it, ``snapshot`` its state); returns
    the graph module and what ``forward`` wrote to the modules while traced (``{path: attribute
    names}``). Every module is put back as ``snapshot`` has it, whether the trace succeeds or not, and
    the random number generators as they were."""
    tracer = ScopeTrackingTracer(leaf_types, leaves, record_constants=True)
    tracer.root_named_modules = named
    rng = RngState()
    clean = False
    try:
        try:
            with eval_mode(modules=[module for _, module in tracer.root_named_modules]), warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="Was not able to add assertion")
                graph = tracer.trace(model, concrete_args=dict(concrete_args) if concrete_args else None)
        except Exception as error:
            path, cls = tracer.open_scopes[-1] if tracer.open_scopes else ("", type(model))
            where = f"module '{path}' ({cls.__name__})" if path else f"the root module ({cls.__name__})"
            raise TraceError(
                f"torch.fx.symbolic_trace could not trace {where}: {type(error).__name__}: {first_line(error)}. "
                f"Data-dependent control flow, asserts on tensor values and shapes used as Python values "
                f"cannot be traced symbolically; see {FX_LIMITATIONS_URL}",
                module_path=path,
                module_class=cls.__name__,
            ) from error
        _drop_specialisation_asserts(graph)
        if isinstance(graph._codegen, fx.graph._PyTreeCodeGen):
            for node in graph.nodes:  # FX's pytree codegen cannot write placeholder defaults
                if node.op == "placeholder":
                    node.args = ()
        gm = _graph_module(tracer.root, graph, type(model).__name__)  # copies the constants
        written = snapshot.changed()
        if not written:
            clean = True  # nothing to put back
        constants = [name for name in written.get("", ()) if not name.startswith(_TRACER_CONSTANTS)]
        if "" in written and not constants:  # only FX's own constants were added to the root
            del written[""]
        elif "" in written:
            written[""] = constants
        return gm, written
    finally:  # FX stores tensor constants on the traced module: they belong to the graph module only
        if not clean:
            snapshot.restore()
        rng.restore()


_TRACER_CONSTANTS = ("_tensor_constant", "_torchbind_obj")  # attributes FX adds to the root for constants


def _graph_module(root: nn.Module, graph: fx.Graph, name: str) -> fx.GraphModule:
    """A ``GraphModule`` of ``graph`` that holds ``root``'s attributes the graph uses, at the same paths.

    ``GraphModule(root, graph)`` copies each ``call_module`` / ``get_attr`` target path by path, making
    an empty ``nn.Module`` for every container on the way (``layer1``, ``layer1.0``, ...): a tenth of a
    trace. Here the graph module holds ``root``'s top-level children, parameters, buffers and constants
    that the targets start with, the objects themselves, so every target resolves to the same object
    as in ``root`` (a container brings its unused children along). Python code is generated on first
    call, not now (``_LazyGraphModule``): the runner never calls it, and code generation is a fifth of
    the cost of tracing."""
    try:
        from torch.fx._lazy_graph_module import _LazyGraphModule as graph_module_class
    except ImportError:  # older PyTorch
        graph_module_class = fx.GraphModule
    gm = graph_module_class(nn.Module(), fx.Graph(), name)
    gm.training = root.training
    for node in graph.nodes:
        if node.op not in ("call_module", "get_attr"):
            continue
        head = node.target.partition(".")[0]
        if head in gm._modules or head in gm._parameters or head in gm._buffers or head in gm.__dict__:
            continue
        value = getattr(root, head)
        if isinstance(value, nn.Module):
            gm.add_module(head, value)
        elif isinstance(value, nn.Parameter):
            gm.register_parameter(head, value)
        elif isinstance(value, torch.Tensor):
            gm.register_buffer(head, value)  # as GraphModule copies a tensor attribute
        else:
            setattr(gm, head, value)
    gm.graph = graph  # what GraphModule.__init__ ends with: the graph's owner is gm
    if graph._tracer_cls is not None and "<locals>" not in graph._tracer_cls.__qualname__:
        gm._tracer_cls = graph._tracer_cls
    gm._tracer_extras = graph._tracer_extras or {}
    return gm


def _drop_specialisation_asserts(graph: fx.Graph) -> None:
    """Remove the checks FX adds for concrete arguments (``arg == value`` then ``_assert``): they are not
    the model's work and would be counted as comparisons."""
    for node in reversed(list(graph.nodes)):
        if node.op != "call_function" or len(node.args) < 2:
            continue
        message = node.args[1]
        if isinstance(message, str) and _SPECIALISED in message and node.target in (torch._assert, _assert_is_none):
            condition = node.args[0]
            graph.erase_node(node)
            if isinstance(condition, fx.Node) and condition.op == "call_function" and not condition.users:
                graph.erase_node(condition)


def _root_leaf_graph(
    model: nn.Module, variadics: Mapping[str, int | tuple[str, ...]] | None = None, positional: int | None = None,
) -> fx.GraphModule:
    """A graph of one ``call_module`` node that runs the whole model (held as :data:`ROOT_LEAF`).

    ``variadics`` gives how many values the call puts in ``forward``'s ``*args`` and which keywords in
    its ``**kwargs`` (:func:`torch_flops.inputs.variadics`): the graph takes them as FX does, in a
    ``*args`` and a ``**kwargs`` placeholder, and ``getitem`` nodes pass each one on, unpacked. The first
    ``positional`` parameters are passed by position, as the call passed them (hooks see them so), the
    others by keyword (all of them when ``positional`` is not known)."""
    variadics = variadics or {}
    holder = nn.Module()
    holder.add_module(ROOT_LEAF, model)  # the holder refers to the model; the model is not changed
    graph = fx.Graph()
    params = list(forward_signature(model).parameters.values())
    starred = any(param.kind is inspect.Parameter.VAR_POSITIONAL for param in params)
    placeholders = []
    for param in params:
        if param.kind is inspect.Parameter.VAR_POSITIONAL:
            placeholders.append(graph.placeholder(f"*{param.name}"))
        elif param.kind is inspect.Parameter.VAR_KEYWORD:
            placeholders.append(graph.placeholder(f"**{param.name}"))
        else:
            default = param.default
            placeholders.append(graph.placeholder(param.name, default_value=default))
    args, kwargs = [], {}
    for index, (param, node) in enumerate(zip(params, placeholders)):
        if param.kind is inspect.Parameter.VAR_POSITIONAL:
            count = variadics.get(param.name, 0)
            args.extend(graph.call_function(operator.getitem, (node, i)) for i in range(int(count)))  # type: ignore[arg-type]
        elif param.kind is inspect.Parameter.VAR_KEYWORD:
            for key in variadics.get(param.name, ()):  # type: ignore[union-attr]
                kwargs[key] = graph.call_function(operator.getitem, (node, key))
        elif param.kind is inspect.Parameter.POSITIONAL_ONLY or (starred and param.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD):
            args.append(node)  # before a *args, positionally: by keyword they would collide with it
        elif positional is not None and index < positional and param.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD:
            args.append(node)
        else:  # by keyword: decorators around forward (transformers') may re-route positional ones
            kwargs[param.name] = node
    graph.output(graph.call_module(ROOT_LEAF, tuple(args), kwargs))
    return _graph_module(holder, graph, type(model).__name__)
