"""Model -> ``torch.fx.GraphModule``, with an automatic leaf fallback for code FX cannot trace.

``symbolic_trace`` fails on data-dependent control flow, asserts on shapes, iteration over tensors ...
When it does, :func:`trace` finds the innermost module whose ``forward`` was running, traces again with
that module kept whole (a leaf: one ``call_module`` node, counted through the aten-level fallback), and
repeats until the graph builds. If the root's own ``forward`` cannot be traced, the root becomes the
leaf: the graph is one node that runs the whole model. The modules made leaves, and why, are in
:attr:`TraceResult.leaf_modules`.
"""

from __future__ import annotations

import bisect
import dis
import inspect
import operator
import sys
import types
import warnings
import weakref
from collections.abc import Collection, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.fx as fx
import torch.fx._symbolic_trace as _fx_trace
from torch import nn

FX_LIMITATIONS_URL = "https://pytorch.org/docs/stable/fx.html#limitations-of-symbolic-tracing"


class TraceError(RuntimeError):
    """``symbolic_trace`` could not build a graph. ``module_path`` names the innermost module being
    traced when it failed ('' for the root) and ``module_class`` its class."""

    def __init__(self, message: str, module_path: str, module_class: str) -> None:
        super().__init__(message)
        self.module_path = module_path
        self.module_class = module_class


class _UnpackCached:
    """``Proxy.__iter__`` with its bytecode lookup cached per call site.

    FX decides what ``a, b = proxy`` means by disassembling the whole calling function on every
    iteration (is the instruction at the call site an ``UNPACK_SEQUENCE``, and of how many values?).
    The answer depends only on the code object and the instruction offset, so it is looked up once per
    process (:data:`_UNPACK_SITES`), not once per trace."""

    def __iter__(self) -> Iterator[fx.Proxy]:
        frame = inspect.currentframe()
        calling = frame.f_back if frame is not None else None
        if calling is None:
            return super().__iter__()  # type: ignore[misc]
        code, offset = calling.f_code, calling.f_lasti
        sites = _UNPACK_SITES.get(code)
        if sites is None:
            sites = _UNPACK_SITES[code] = {}
        if offset not in sites:
            sites[offset] = _unpack_count(code, offset)
        count = sites[offset]
        if count is not None:
            return (self[i] for i in range(count))  # type: ignore[index]
        return self.tracer.iter(self)  # type: ignore[attr-defined]

    def __getattr__(self, k: str) -> fx.proxy.Attribute:
        return _Attribute(self, k)


_UNPACK_SITES: weakref.WeakKeyDictionary[types.CodeType, dict[int, int | None]] = weakref.WeakKeyDictionary()
"""By code object, the unpack count at each call site seen (``None``: not an unpack); an entry goes
with its code object."""


def _unpack_count(code: types.CodeType, offset: int) -> int | None:
    """How many values the instruction at ``offset`` unpacks, if it is an ``UNPACK_SEQUENCE`` (as FX's
    ``Proxy.__iter__`` finds it)."""
    instructions = list(dis.get_instructions(code))
    if sys.version_info >= (3, 11):
        index = bisect.bisect_left(instructions, offset, key=lambda instruction: instruction.offset)
    else:
        index = offset // 2
    if index < len(instructions) and instructions[index].opname == "UNPACK_SEQUENCE":
        return instructions[index].argval
    return None


def _first_names(named: Iterable[tuple[str, torch.Tensor]]) -> dict[int, str]:
    """``{id(tensor): its first name}``: the name FX's search in the same order would find."""
    names: dict[int, str] = {}
    for name, tensor in named:
        names.setdefault(id(tensor), name)
    return names


class _Proxy(_UnpackCached, fx.Proxy):
    pass


class _Attribute(_UnpackCached, fx.proxy.Attribute):
    pass


_PLAIN_CONSTANTS = frozenset({type(None), bool, int, float, complex, str, torch.dtype, torch.device, torch.layout, torch.memory_format, type(...)})


class _ScopeTrackingTracer(fx.Tracer):
    """A ``Tracer`` that remembers which modules' ``forward`` it is inside, so a failure can be blamed
    on the innermost one, and that keeps instances of ``leaf_types`` and the modules at ``leaf_paths``
    as single nodes."""

    def __init__(self, leaf_types: tuple[type, ...] = (), leaf_paths: Collection[str] = ()) -> None:
        super().__init__()
        self.open_scopes: list[tuple[str, type]] = []
        self.leaf_types = leaf_types
        self.leaf_paths = frozenset(leaf_paths)
        self._names_of: tuple[Any, dict[int, str], dict[int, str]] | None = None  # root, parameter and buffer names
        self._fx_call_module_state: bool | None = None
        self._leaf_classes: dict[type, bool] = {}
        self.root_modules: list[nn.Module] | None = None  # the root's modules, when the caller has them
        self._constant_types: tuple[type, ...] | None = None  # FX's, while a trace has swapped them out

    def trace(self, root: nn.Module | Any, concrete_args: dict[str, Any] | None = None) -> fx.Graph:
        """``Tracer.trace``, with two of its fixed costs cut when that changes nothing:

        - module calls and attribute reads are intercepted on the model's own module classes rather than
          on ``nn.Module`` (see :class:`_ClassPatcher`);
        - the table of tensors held as plain module attributes (FX's ``tensor_attrs``, built up front by
          an ``isinstance`` test of every attribute of every module: a quarter of a resnet50 trace) is
          built when a tensor constant first needs it, which most models never do
          (see :class:`_TensorAttributes`);
        - the wrappers FX puts around ``math``'s functions and the functions registered with
          ``torch.fx.wrap`` for the duration of a trace (80 with torchvision loaded) are made once per
          function and reused by later traces (see :func:`_reused_wrapper`), not made anew each trace."""
        if not isinstance(root, nn.Module):
            return super().trace(root, concrete_args)
        classes = _patchable_classes(self.root_modules if self.root_modules is not None else modules_of(root))
        fx_new_patcher = _fx_trace._new_patcher

        @contextmanager
        def new_patcher() -> Iterator[_ClassPatcher]:  # FX's _new_patcher, making a _ClassPatcher
            _fx_trace._new_patcher = fx_new_patcher  # for this trace only, not one nested in it
            prior = _fx_trace.CURRENT_PATCHER
            patcher = _fx_trace.CURRENT_PATCHER = _ClassPatcher(classes)
            try:
                yield patcher
            finally:
                patcher.revert_all_patches()
                _fx_trace.CURRENT_PATCHER = prior

        if classes is not None:
            _fx_trace._new_patcher = new_patcher
        self._constant_types = _CONSTANT_TYPES
        if _CONSTANT_TYPES is not None:
            _fx_trace._constant_attribute_types = ()  # FX's up-front table: nothing matches, so it stays empty
        if _FX_CREATE_WRAPPED_FUNC is not None:
            _fx_trace._create_wrapped_func = _reused_wrapper
        try:
            return super().trace(root, concrete_args)
        finally:
            _fx_trace._new_patcher = fx_new_patcher
            if _FX_CREATE_WRAPPED_FUNC is not None:
                _fx_trace._create_wrapped_func = _FX_CREATE_WRAPPED_FUNC
            self._restore_constant_types()

    def _restore_constant_types(self) -> None:
        if self._constant_types is not None:
            _fx_trace._constant_attribute_types = self._constant_types
            self._constant_types = None

    def create_args_for_root(self, root_fn: Any, is_module: bool, concrete_args: Any = None) -> tuple[Any, list[Any]]:
        """FX calls this right after building its table of tensor attributes: FX's constant types are
        put back (``create_arg`` tests arguments against them), and the table becomes a
        :class:`_TensorAttributes` that builds itself on first use."""
        if self._constant_types is not None:
            types = self._constant_types
            self._restore_constant_types()
            if not self.tensor_attrs:
                self.tensor_attrs = _TensorAttributes(self.root, types)
        return super().create_args_for_root(root_fn, is_module, concrete_args)

    def proxy(self, node: fx.Node) -> fx.Proxy:
        return _Proxy(node, self)

    def getattr(self, attr: str, attr_val: Any, parameter_proxy_cache: dict[str, Any]) -> Any:
        """FX's ``Tracer.getattr`` (a parameter or, with ``proxy_buffer_attributes``, a buffer of the
        root becomes a ``get_attr`` node, once per name), finding the name in a table built once per
        trace instead of walking every parameter of the model on each access."""
        if not isinstance(attr_val, torch.Tensor):
            return attr_val
        if self._names_of is None or self._names_of[0] is not self.root:
            self._names_of = (self.root, _first_names(self.root.named_parameters()), _first_names(self.root.named_buffers()))
        name = None
        if isinstance(attr_val, nn.Parameter):
            name = self._names_of[1].get(id(attr_val))
        if name is None and self.proxy_buffer_attributes:
            name = self._names_of[2].get(id(attr_val))
        if name is None:
            return attr_val
        if name not in parameter_proxy_cache:
            factory = None
            if self.param_shapes_constant:
                factory = lambda node: fx.proxy.ParameterProxy(self, node, name, attr_val)  # noqa: E731
            parameter_proxy_cache[name] = self.create_proxy("get_attr", name, (), {}, proxy_factory_fn=factory)
        return parameter_proxy_cache[name]

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        """A module at ``leaf_paths``, an instance of ``leaf_types``, or a ``torch.nn`` layer (FX's rule,
        which depends on the class only: it is asked once per class)."""
        if module_qualified_name in self.leaf_paths:
            return True
        cls = type(m)
        try:
            return self._leaf_classes[cls]
        except KeyError:
            leaf = self._leaf_classes[cls] = isinstance(m, self.leaf_types) or super().is_leaf_module(m, module_qualified_name)
            return leaf

    def create_arg(self, a: Any) -> Any:
        """FX's ``create_arg`` with the common cases first: proxies, plain constants and tuples, lists
        and string-keyed dicts of them are lowered here; anything else (parameters, tensors, modules,
        named tuples, ...) goes to FX."""
        kind = type(a)
        if kind is _Proxy or kind is fx.Proxy:
            return a.node
        if kind in _PLAIN_CONSTANTS:
            return a
        if kind is tuple or kind is list:
            lowered = [element.node if type(element) is _Proxy else self.create_arg(element) for element in a]
            return tuple(lowered) if kind is tuple else lowered
        if kind is dict:
            if not a:
                return {}
            if all(type(key) is str for key in a):
                return {key: self.create_arg(value) for key, value in a.items()}
        return super().create_arg(a)

    def create_node(self, kind: str, target: Any, args: tuple[Any, ...], kwargs: dict[str, Any],
                    name: str | None = None, type_expr: Any | None = None) -> fx.Node:
        """FX's ``create_node`` made cheaper, with the same graph as the result.

        The arguments are attached after the node is made (as ``Node.__init__`` attaches them):
        ``Graph.create_node`` otherwise walks every argument looking for symbolic ints, which tracing a
        module with real shapes never produces. And a target whose name is already lower case is its
        own name candidate (FX would run it through a regular expression that leaves it unchanged). The
        module stack is copied into the node's meta with ``OrderedDict.copy``, not ``copy.copy``."""
        if name is None:
            label = getattr(target, "__name__", None) if callable(target) else target
            if type(label) is str and label == label.lower() and not (label.startswith("__") and label.endswith("__")):
                name = label
        stack = getattr(self, "module_stack", None)
        if stack and not fx.traceback.has_preserved_node_meta():  # FX would copy.copy it: slow for an OrderedDict
            self.module_stack = type(stack)()
            try:
                node = super().create_node(kind, target, (), {}, name, type_expr)
            finally:
                self.module_stack = stack
            node.meta["nn_module_stack"] = stack.copy()
        else:
            node = super().create_node(kind, target, (), {}, name, type_expr)
        if args or kwargs:
            if _ATTACH_ARGS is not None:
                _ATTACH_ARGS(node, args, kwargs)
            else:
                node.args, node.kwargs = args, kwargs
        return node

    def call_module(self, m: nn.Module, forward: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """``Tracer.call_module`` (the same scope, module stack and call counts), without the copy of the
        scope FX makes per call; remembers the module so a failure can be blamed on it."""
        path = self.path_of_module(m)
        self.open_scopes.append((path, type(m)))
        if self._fx_call_module_state is None:  # once per tracer: FX's own state this shortcut keeps
            self._fx_call_module_state = all(hasattr(self, a) for a in _FX_CALL_MODULE_STATE)
        if not self._fx_call_module_state:
            result = super().call_module(m, forward, args, kwargs)
        else:
            scope = self.scope
            outer = scope.module_path, scope.module_type
            scope.module_path, scope.module_type = path, type(m)
            calls = self.num_calls.get(path, 0)
            self.module_stack[f"{path}@{calls}" if calls > 0 else path] = (path, type(m))
            self.num_calls[path] = calls + 1
            if self.is_leaf_module(m, path):
                result = self.create_proxy("call_module", path, args, kwargs)
            else:
                result = forward(*args, **kwargs)
            self.module_stack.popitem(last=True)
            scope.module_path, scope.module_type = outer
        self.open_scopes.pop()
        return result


_FX_CREATE_WRAPPED_FUNC: Any = getattr(_fx_trace, "_create_wrapped_func", None)
_WRAPPERS: dict[Any, Any] = {}  # original function -> FX's wrapper of it


def _reused_wrapper(orig_fn: Any) -> Any:
    """FX's ``_create_wrapped_func(orig_fn)``, made once per function. The wrapper depends on
    ``orig_fn`` alone (it finds the tracer through the proxies it is called with), so one made for an
    earlier trace serves every later one."""
    try:
        return _WRAPPERS[orig_fn]
    except KeyError:
        wrapper = _WRAPPERS[orig_fn] = _FX_CREATE_WRAPPED_FUNC(orig_fn)
        return wrapper
    except TypeError:  # an unhashable callable
        return _FX_CREATE_WRAPPED_FUNC(orig_fn)


_ATTACH_ARGS = getattr(fx.Node, "_update_args_kwargs", None)  # what Node.__init__ calls; setters otherwise
_FX_CALL_MODULE_STATE = ("scope", "module_stack", "num_calls")
_MODULE_HOOKS = ("__call__", "__getattr__")  # what Tracer.trace patches on nn.Module
_CONSTANT_TYPES: tuple[type, ...] | None = getattr(_fx_trace, "_constant_attribute_types", None)  # torch >= 2.3


class _TensorAttributes(dict):
    """FX's ``tensor_attrs`` (``{constant: qualified name}`` for every tensor, script object or tree spec
    held as a plain attribute of a module under ``root``), built on first use, exactly as FX builds it
    at the start of a trace: each module's ``__dict__`` in order, then its children, a later name
    replacing an earlier one. FX reads it with ``get`` and adds to it with ``[]=``."""

    def __init__(self, root: nn.Module, types: tuple[type, ...]) -> None:
        super().__init__()
        self._pending: tuple[nn.Module, tuple[type, ...]] | None = (root, types)

    def _build(self) -> None:
        if self._pending is None:
            return
        root, types = self._pending
        self._pending = None

        def collect(module: nn.Module, prefix: list[str]) -> None:  # FX's collect_tensor_attrs
            for key, value in module.__dict__.items():
                if isinstance(value, types):
                    dict.__setitem__(self, value, ".".join([*prefix, key]))
            for key, child in module.named_children():
                collect(child, [*prefix, key])

        collect(root, [])

    def get(self, key: Any, default: Any = None) -> Any:
        self._build()
        return super().get(key, default)

    def __getitem__(self, key: Any) -> Any:
        self._build()
        return super().__getitem__(key)

    def __setitem__(self, key: Any, value: Any) -> None:
        self._build()
        super().__setitem__(key, value)

    def __contains__(self, key: object) -> bool:
        self._build()
        return super().__contains__(key)

    def __iter__(self) -> Iterator[Any]:
        self._build()
        return super().__iter__()

    def __len__(self) -> int:
        self._build()
        return super().__len__()

    def keys(self) -> Any:
        self._build()
        return super().keys()

    def values(self) -> Any:
        self._build()
        return super().values()

    def items(self) -> Any:
        self._build()
        return super().items()
_CAN_PATCH_CLASSES = all(hasattr(_fx_trace, name) for name in ("_new_patcher", "_Patcher", "_PatchedFn", "CURRENT_PATCHER"))


def _patchable_classes(modules: Iterable[nn.Module]) -> frozenset[type] | None:
    """The classes of a model's ``modules``, if patching ``__call__`` and ``__getattr__`` on each of them
    intercepts exactly what patching them on ``nn.Module`` would: every class inherits both from
    ``nn.Module`` unchanged (none overrides them, so none reaches ``nn.Module``'s through ``super()``)
    and no trace is already patching ``nn.Module``. ``None`` otherwise: FX's own patching is used."""
    if not _CAN_PATCH_CLASSES:
        return None
    classes = frozenset([type(module) for module in modules])
    for name in _MODULE_HOOKS:
        inherited = getattr(nn.Module, name)
        if hasattr(inherited, "__fx_already_patched") or nn.Module in classes:
            return None
        if any(getattr(cls, name) is not inherited for cls in classes):
            return None
    return classes


if _CAN_PATCH_CLASSES:

    class _ClassAttribute(_fx_trace._PatchedFn):
        """A method set on a class that inherits it: reverting deletes it, so the class inherits again."""

        def patch(self) -> None:
            setattr(self.frame_dict, self.fn_name, self.new_fn)

        def revert(self) -> None:
            if self.fn_name in vars(self.frame_dict):
                delattr(self.frame_dict, self.fn_name)

    class _ClassPatcher(_fx_trace._Patcher):
        """FX's patcher, except that ``nn.Module.__call__`` and ``__getattr__`` are set on each of the
        model's module classes instead of on ``nn.Module``.

        Setting a special method on a class makes CPython update the slot of every subclass that
        inherits it: for ``nn.Module``, every module class loaded in the process (over a thousand with
        torchvision and timm), four times per trace (patch and revert, two methods), a fifth of a
        resnet50 trace. The model's own classes have few subclasses.

        Every submodule's class is patched, so every call FX would record is recorded. What differs is a
        call to a module that is not a submodule (held in a plain list, or made inside ``forward``) and
        whose class the model does not have: FX fails on it (``path_of_module``: not a submodule) and
        :func:`trace` would keep the calling module whole; here its ``forward`` is traced inline, and
        fails the same way if it reads parameters (not members of the model)."""

        def __init__(self, classes: frozenset[type]) -> None:
            super().__init__()
            self.classes = classes

        def patch_method(self, cls: type, name: str, new_fn: Any, deduplicate: bool = True) -> None:
            if cls is not nn.Module or name not in _MODULE_HOOKS:
                super().patch_method(cls, name, new_fn, deduplicate)
                return
            new_fn.__fx_already_patched = deduplicate  # type: ignore[attr-defined]
            for owner in self.classes:
                self.patches_made.append(_ClassAttribute(owner, name, None, new_fn))
                self.patches_made[-1].patch()


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
def eval_mode(*roots: nn.Module, modules: Iterable[nn.Module] = ()) -> Iterator[None]:
    """Put ``roots`` (and so all their submodules) and ``modules`` in eval mode; restore every module's
    own flag after.

    Only modules in training mode are touched. Their flag is set directly (what ``nn.Module.train``
    does), except for classes that override ``train``, whose own ``train(False)`` runs."""
    every = {id(module): module for module in (*modules_of(*roots), *modules)}
    training = [module for module in every.values() if module.training]
    try:
        for module in training:
            if type(module).train is nn.Module.train:
                module.__dict__["training"] = False
            else:
                module.train(False)
        yield
    finally:
        for module in training:
            module.__dict__["training"] = True


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
    leaf_modules: dict[str, str] = field(default_factory=dict)
    concrete_args: dict[str, Any] = field(default_factory=dict)  # what the graph is specialised on


def trace(
    model: nn.Module,
    leaf_types: tuple[type, ...] = (),
    leaf_paths: Collection[str] = (),
    concrete_args: Mapping[str, Any] | None = None,
    auto_leaf: bool = True,
    variadics: Mapping[str, int | tuple[str, ...]] | None = None,
) -> TraceResult:
    """Trace ``model`` in eval mode; when FX fails inside a module's ``forward``, keep that module whole
    and trace again (``auto_leaf=False`` raises :class:`TraceError` instead, naming the module).

    The model's training flags are restored, and the tensor constants FX stores on the traced module
    while tracing are moved to the graph module only. Instances of ``leaf_types`` and the modules at
    ``leaf_paths`` stay single ``call_module`` nodes. ``concrete_args`` specialises the graph on
    non-tensor inputs (see :mod:`torch_flops.inputs`); ``variadics`` what the call passes to ``forward``'s
    ``*args`` and ``**kwargs``, which a graph of the whole model as one node passes on one by one.
    """
    check_model(model)
    unknown = sorted(set(leaf_paths) - set(dict(model.named_modules(remove_duplicate=False)))) if leaf_paths else []
    if unknown:
        raise ValueError(f"leaf_modules {unknown} are not submodules of {type(model).__name__}")
    leaves = {path: "named by the user" for path in leaf_paths}
    if "" in leaves or _is_library_leaf(model, leaf_types):
        return TraceResult(_root_leaf_graph(model, variadics), leaves | {"": leaves.get("", "a torch.nn layer")})
    while True:
        try:
            return TraceResult(_trace_once(model, leaf_types, leaves, concrete_args), leaves, dict(concrete_args or {}))
        except TraceError as error:
            if not auto_leaf:
                raise
            reason = first_line(error.__cause__) if error.__cause__ is not None else str(error)
            reason = f"{type(error.__cause__).__name__}: {reason}" if error.__cause__ is not None else reason
            if error.module_path == "" or error.module_path in leaves:
                return TraceResult(_root_leaf_graph(model, variadics), leaves | {"": reason})
            leaves[error.module_path] = reason


def _is_library_leaf(model: nn.Module, leaf_types: tuple[type, ...]) -> bool:
    """A ``torch.nn`` layer (not a container) or a ``leaf_types`` instance given as the model itself."""
    return isinstance(model, leaf_types) or (
        fx.Tracer().is_leaf_module(model, "") and not isinstance(model, (nn.Sequential, nn.ModuleList, nn.ModuleDict))
    )


def _trace_once(
    model: nn.Module, leaf_types: tuple[type, ...], leaves: Mapping[str, str], concrete_args: Mapping[str, Any] | None
) -> fx.GraphModule:
    tracer = _ScopeTrackingTracer(leaf_types, leaves)
    tracer.root_modules = modules_of(model)
    attributes = set(vars(model))
    try:
        try:
            with eval_mode(modules=tracer.root_modules), warnings.catch_warnings():
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
        return _graph_module(tracer.root, graph, type(model).__name__)  # copies the constants
    finally:  # FX stores tensor constants on the traced module: they belong to the graph module only
        for name in set(vars(model)) - attributes:
            delattr(model, name)


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


def _root_leaf_graph(model: nn.Module, variadics: Mapping[str, int | tuple[str, ...]] | None = None) -> fx.GraphModule:
    """A graph of one ``call_module`` node that runs the whole model (held as :data:`ROOT_LEAF`).

    ``variadics`` gives how many values the call puts in ``forward``'s ``*args`` and which keywords in
    its ``**kwargs`` (:func:`torch_flops.inputs.variadics`): the graph takes them as FX does, in a
    ``*args`` and a ``**kwargs`` placeholder, and ``getitem`` nodes pass each one on, unpacked."""
    variadics = variadics or {}
    holder = nn.Module()
    holder.add_module(ROOT_LEAF, model)  # the holder refers to the model; the model is not changed
    graph = fx.Graph()
    params = list(inspect.signature(model.forward).parameters.values())
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
    for param, node in zip(params, placeholders):
        if param.kind is inspect.Parameter.VAR_POSITIONAL:
            count = variadics.get(param.name, 0)
            args.extend(graph.call_function(operator.getitem, (node, i)) for i in range(int(count)))  # type: ignore[arg-type]
        elif param.kind is inspect.Parameter.VAR_KEYWORD:
            for key in variadics.get(param.name, ()):  # type: ignore[union-attr]
                kwargs[key] = graph.call_function(operator.getitem, (node, key))
        elif param.kind is inspect.Parameter.POSITIONAL_ONLY or (starred and param.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD):
            args.append(node)  # before a *args, positionally: by keyword they would collide with it
        else:  # by keyword: decorators around forward (transformers') may re-route positional ones
            kwargs[param.name] = node
    graph.output(graph.call_module(ROOT_LEAF, tuple(args), kwargs))
    return _graph_module(holder, graph, type(model).__name__)
