"""``ScopeTrackingTracer``: ``torch.fx.Tracer`` made cheaper, building exactly the graph FX builds.

A one-shot count (new counter, one ``propagate``) pays for a trace every time, so the trace is on the
hot path of the whole library. The savings, each checked against FX's own graph (code, node names,
arguments and module stacks) in ``tests/test_tracing.py``:

- modules' ``__call__`` and ``__getattr__`` are intercepted on the model's own module classes rather
  than on ``nn.Module`` (:class:`_ClassPatcher`);
- the table of tensors held as plain module attributes is built when a tensor constant first needs it
  (:attr:`ScopeTrackingTracer.tensor_attrs`), the module paths come from one walk shared with the caller;
- a module call goes straight to :meth:`ScopeTrackingTracer.call_module`, looking for functions to
  wrap once per ``forward``'s globals, not once per call, and skipping in one pass a globals dict that
  holds none of them;
- a node is made by ``Graph.create_node`` without the generic checks that cannot apply to a symbolic
  trace, and FX's wrappers of ``math`` functions are reused from one trace to the next and set (and
  reverted) as one update of each globals dict they go into;
- a torch function called on proxies finds the tracer without a pytree walk of its arguments, and a
  parameter read finds its name in a table made from that same walk of the modules.

The trace follows FX's ``Tracer.trace`` step by step, using FX's own helpers. Where this PyTorch lacks
one of them (:data:`_OWN_TRACE`), FX's ``Tracer.trace`` runs unchanged.
"""

from __future__ import annotations

import bisect
import builtins
import contextlib
import dis
import functools
import inspect
import sys
import types
import weakref
from collections.abc import Callable, Collection, Iterator
from typing import Any

import torch
import torch.fx as fx
import torch.fx._symbolic_trace as _fx_trace
from torch import nn

from torch_flops.autocast import AUTOCAST_META, autocast_off, autocast_state

try:
    from torch.fx._lazy_graph_module import _LazyGraphModule
except ImportError:  # older PyTorch
    _LazyGraphModule = None  # type: ignore[assignment,misc]


def named_modules(root: nn.Module) -> list[tuple[str, nn.Module]]:
    """``list(root.named_modules())``: every module once, by its first path, in the same order.

    A walk over ``_modules`` with an explicit stack: ``named_modules`` nests one generator per level."""
    seen: set[int] = set()
    found: list[tuple[str, nn.Module]] = []
    stack: list[tuple[str, nn.Module]] = [("", root)]
    while stack:
        path, module = stack.pop()
        if id(module) in seen:
            continue
        seen.add(id(module))
        found.append((path, module))
        prefix = f"{path}." if path else ""
        stack.extend([(prefix + name, child) for name, child in reversed(module._modules.items()) if child is not None])
    return found


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


def _tensor_names(named: list[tuple[str, nn.Module]], table: str) -> dict[int, str]:
    """``{id(tensor): its first name}`` for the tensors in each module's ``table`` (``"_parameters"`` or
    ``"_buffers"``): the name ``named_parameters()`` or ``named_buffers()`` gives it, which FX's search
    in the same order would find. ``named`` is :func:`named_modules` of the root."""
    names: dict[int, str] = {}
    for path, module in named:
        prefix = f"{path}." if path else ""
        for key, tensor in getattr(module, table).items():
            if tensor is not None and id(tensor) not in names:
                names[id(tensor)] = prefix + key
    return names


class _Proxy(_UnpackCached, fx.Proxy):
    @classmethod
    def __torch_function__(cls, orig_method: Any, types: tuple[type, ...], args: tuple[Any, ...] | None = None,
                           kwargs: dict[str, Any] | None = None) -> fx.Proxy:
        """FX's ``Proxy.__torch_function__`` (a torch function or tensor method called on proxies becomes
        a ``call_function`` or ``call_method`` node), without its pytree walk over the arguments to find
        the tracer when every proxy is an argument itself or an element of a tuple or list argument, and
        with the node's kind and name looked up once per function. Anything else goes to FX."""
        tracer = _only_tracer(args, kwargs)
        if tracer is None or isinstance(orig_method, _FX_SPECIAL_CALLABLES):
            return super().__torch_function__(orig_method, types, args, kwargs)
        kind, name = _node_kind_and_name(orig_method, tracer.graph)
        if kind == "call_method":
            return tracer.create_proxy(kind, name, args or (), kwargs or {})
        return tracer.create_proxy(kind, orig_method, args or (), kwargs or {}, name=name)


class _Attribute(_UnpackCached, fx.proxy.Attribute):
    pass


def _only_tracer(args: tuple[Any, ...] | None, kwargs: dict[str, Any] | None) -> Any:
    """The tracer of the proxies among ``args`` and ``kwargs``' values (and the elements of tuple and
    list arguments), if they all have the same one and everything else is a plain constant; ``None``
    otherwise (FX's walk then decides)."""
    found = None
    for argument in (*(args or ()), *(kwargs.values() if kwargs else ())):
        for value in argument if type(argument) is tuple or type(argument) is list else (argument,):
            if type(value) is _Proxy:
                if found is not None and value.tracer is not found:
                    return None
                found = value.tracer
            elif type(value) not in _PLAIN_CONSTANTS:
                return None
    return found


_FX_SPECIAL_CALLABLES = (torch._C.ScriptMethod, *[getattr(torch._ops, "HigherOrderOperator")] * hasattr(torch._ops, "HigherOrderOperator"))
"""What FX's ``__torch_function__`` treats specially: left to it."""
_KINDS_AND_NAMES: dict[Any, tuple[str, str]] = {}  # torch function -> (node kind, node name or method name)


def _node_kind_and_name(orig_method: Any, graph: fx.Graph) -> tuple[str, str]:
    """``("call_method", its name)`` for a tensor method or property, else ``("call_function", FX's name
    candidate for it)``, as FX's ``Proxy.__torch_function__`` decides (the candidate depends on the
    function's name alone, so it is looked up once per function)."""
    return _memoised(_KINDS_AND_NAMES, orig_method, _kind_and_name, orig_method, graph)


def _memoised(cache: dict[Any, Any], key: Any, make: Callable[..., Any], *args: Any) -> Any:
    """``cache[key]``, made by ``make(*args)`` on first use; made afresh every time for an unhashable key."""
    try:
        return cache[key]
    except KeyError:
        made = cache[key] = make(*args)
        return made
    except TypeError:
        return make(*args)


def _kind_and_name(orig_method: Any, graph: fx.Graph) -> tuple[str, str]:
    if torch.overrides.is_tensor_method_or_property(orig_method):
        return "call_method", orig_method.__name__
    return "call_function", graph._target_to_str(orig_method.__name__)


_PLAIN_CONSTANTS = frozenset({type(None), bool, int, float, complex, str, torch.dtype, torch.device, torch.layout, torch.memory_format, type(...)})

_FX_HELPERS = ("_Patcher", "_PatchedFn", "CURRENT_PATCHER", "_orig_module_call", "_orig_module_getattr", "_wrapped_fns_to_patch",
               "_wrapped_methods_to_patch", "_create_wrapped_method", "_create_wrapped_func", "_constant_attribute_types")
_OWN_TRACE = all(hasattr(_fx_trace, name) for name in _FX_HELPERS) and (
    hasattr(_fx_trace, "_set_is_fx_tracing") or hasattr(_fx_trace, "_is_fx_tracing_flag"))
"""Whether this PyTorch has every helper of FX's ``Tracer.trace`` that :meth:`ScopeTrackingTracer.trace`
follows (2.11 has them, 2.4 does not); without them FX's own ``trace`` runs."""


def _swap_fx_tracing(value: bool) -> bool:
    """Sets FX's "a trace is running" flag and returns its old value (torch 2.11 keeps it in a global)."""
    if hasattr(_fx_trace, "_set_is_fx_tracing"):
        old = _fx_trace._get_is_fx_tracing()
        _fx_trace._set_is_fx_tracing(value)
    else:
        old, _fx_trace._is_fx_tracing_flag = _fx_trace._is_fx_tracing_flag, value
    return old


CHECKPOINT_FUNCTIONS = (torch.utils.checkpoint.checkpoint, torch.utils.checkpoint.checkpoint_sequential)
"""Activation checkpointing's entry points, each kept as one call by the tracer (read here: while a trace
runs, ``torch.utils.checkpoint``'s attributes are the wrappers that record the call)."""

_MODULE_HOOKS = ("__call__", "__getattr__")  # what Tracer.trace patches on nn.Module
_ATTACH_ARGS = getattr(fx.Node, "_update_args_kwargs", None)  # what Node.__init__ calls; setters otherwise

OUTPUT_CLASS_META = "torch_flops_output_class"
"""Node meta of a graph's output node when ``forward`` returned a dict subclass (a Hugging Face or
diffusers ``ModelOutput``, an ``OrderedDict``): its class, which FX lowers to a plain dict and the runner
builds the output as again."""


class ScopeTrackingTracer(fx.Tracer):
    """A ``Tracer`` that remembers which modules' ``forward`` it is inside, so a failure can be blamed
    on the innermost one, and that keeps instances of ``leaf_types`` and the modules at ``leaf_paths``
    as single nodes."""

    def __init__(self, leaf_types: tuple[type, ...] = (), leaf_paths: Collection[str] = (), record_constants: bool = False) -> None:
        # activation checkpointing stays one call (tracing through it would drop the recomputation); the
        # module it runs is counted op by op inside it (planning.checkpointed_module). Reached by its
        # global name, as ``torch.utils.checkpoint.checkpoint`` (the module's attribute is patched too),
        # or through a functools.partial a module holds (_patch_checkpoint_partials)
        super().__init__(autowrap_functions=CHECKPOINT_FUNCTIONS)
        if torch.utils.checkpoint not in self._autowrap_search:
            self._autowrap_search.append(torch.utils.checkpoint)
        if record_constants:  # see record_constant_work
            self.proxy_buffer_attributes = True
        self.record_constants = record_constants
        self.open_scopes: list[tuple[str, type]] = []
        self.leaf_types = leaf_types
        self.leaf_paths = frozenset(leaf_paths)
        self._names_of: tuple[Any, dict[int, str], dict[int, str]] | None = None  # root, parameter and buffer names
        self._tensor_attrs: dict[Any, str] | None = None
        # whether this FX has the per-call state that call_module and create_node keep up themselves
        self._fx_state = all(hasattr(self, a) for a in ("scope", "module_stack", "num_calls", "node_name_to_scope"))
        self._leaf_classes: dict[type, bool] = {}
        self.root_named_modules: list[tuple[str, nn.Module]] | None = None  # named_modules(root), when the caller has it
        self._lowered_dicts: dict[int, tuple[dict, type]] = {}  # lowered dict subclasses: their lowering and class

    def trace(self, root: nn.Module | Any, concrete_args: dict[str, Any] | None = None) -> fx.Graph:
        """FX's ``Tracer.trace``, step by step, with its fixed costs cut (see the module docstring), with
        autocast off around it (:func:`torch_flops.autocast.autocast_off`): what a node records is what
        ``forward`` switched on."""
        with autocast_off(), record_constant_work(self) if self.record_constants else contextlib.nullcontext():
            if not _OWN_TRACE or not isinstance(root, nn.Module):
                return super().trace(root, concrete_args)
            return self._own_trace(root, concrete_args)

    def _own_trace(self, root: nn.Module, concrete_args: dict[str, Any] | None) -> fx.Graph:
        tracing = _swap_fx_tracing(True)
        try:
            return self._trace_module(root, concrete_args)
        except RuntimeError as error:
            if error.args and isinstance(error.args[0], str) and "data-dependent" in error.args[0]:
                error.partial_fx_graph = self.graph.python_code(root_module="self", verbose=True).src  # type: ignore[attr-defined]
            raise
        finally:
            _swap_fx_tracing(tracing)

    def _trace_module(self, root: nn.Module, concrete_args: dict[str, Any] | None) -> fx.Graph:
        if _LazyGraphModule is not None:
            _LazyGraphModule.force_recompile(root)  # type: ignore[arg-type]
        self.root = root
        if not hasattr(type(root), self.traced_func_name):
            raise AssertionError(f"traced_func_name={self.traced_func_name} doesn't exist in {type(root).__name__}")
        fn = getattr(type(root), self.traced_func_name)
        self.root_module_name = root._get_name()
        named = self.root_named_modules if self.root_named_modules is not None else named_modules(root)
        self.submodule_paths = {module: path for path, module in named}
        self.graph = fx.Graph(tracer_cls=type(self))
        if hasattr(fn, "__code__"):
            code = fn.__code__
            self.graph._co_fields = {"co_name": code.co_name, "co_filename": code.co_filename, "co_firstlineno": code.co_firstlineno}
        self._tensor_attrs = None  # made on first use: see tensor_attrs
        if not isinstance(fn, types.FunctionType):
            raise AssertionError(f"Expected FunctionType, got {type(fn)}")
        fn_globals = fn.__globals__  # read before it gets patched
        fn, args = self.create_args_for_root(fn, True, concrete_args)

        parameter_proxy_cache: dict[str, fx.Proxy] = {}
        module_getattr, module_call = _fx_trace._orig_module_getattr, _fx_trace._orig_module_call
        autowrap_ids = self._autowrap_function_ids
        searched_classes: set[type] = set()  # module classes whose forward's globals are searched

        @functools.wraps(module_getattr)
        def module_getattr_wrapper(mod: nn.Module, attr: str) -> Any:
            value = module_getattr(mod, attr)
            return self.getattr(attr, value, parameter_proxy_cache) if isinstance(value, torch.Tensor) else value

        @functools.wraps(module_call)
        def module_call_wrapper(mod: nn.Module, *args: Any, **kwargs: Any) -> Any:
            own_forward = "forward" in mod.__dict__  # else the class's, whose globals are searched once
            if own_forward or type(mod) not in searched_classes:
                if not own_forward:
                    searched_classes.add(type(mod))
                scope_globals = getattr(getattr(mod, "forward", mod), "__globals__", None)
                if scope_globals is not None:
                    _autowrap_check(patcher, scope_globals, autowrap_ids)  # once per globals dict (visit_once)
            return self.call_module(mod, functools.partial(module_call, mod), args, kwargs)

        classes = _patchable_classes([module for _, module in named])
        patcher = _ClassPatcher(classes) if classes is not None else _fx_trace._Patcher()
        prior_patcher, _fx_trace.CURRENT_PATCHER = _fx_trace.CURRENT_PATCHER, patcher
        create_wrapped_func, _fx_trace._create_wrapped_func = _fx_trace._create_wrapped_func, _reused_wrapper
        try:
            patcher.patch_method(nn.Module, "__getattr__", module_getattr_wrapper, deduplicate=False)
            patcher.patch_method(nn.Module, "__call__", module_call_wrapper, deduplicate=False)
            _patch_wrapped_functions(patcher)
            _autowrap_check(patcher, fn_globals, autowrap_ids)
            for module in self._autowrap_search:
                _autowrap_check(patcher, module.__dict__, autowrap_ids)
            _patch_checkpoint_partials(patcher, named)
            annotations = inspect.get_annotations(inspect.unwrap(fn))
            self.create_node("output", "output", (self.create_arg(fn(*args)),), {}, type_expr=annotations.get("return", None))
        finally:
            patcher.revert_all_patches()
            _fx_trace.CURRENT_PATCHER = prior_patcher
            _fx_trace._create_wrapped_func = create_wrapped_func
        self.submodule_paths = None
        return self.graph

    @property  # type: ignore[override]
    def tensor_attrs(self) -> dict[Any, str]:
        """FX's table ``{constant: qualified name}`` of every tensor, script object or tree spec held as
        a plain attribute of a module under the root, which FX builds up front in every trace by testing
        every attribute of every module, and reads only when a tensor constant is an argument (most
        models never have one). Our trace builds it here on first use, exactly as FX builds it: each
        module's ``__dict__`` in order, then its children, a later name replacing an earlier one."""
        if self._tensor_attrs is None:
            table: dict[Any, str] = {}
            types = _fx_trace._constant_attribute_types

            def collect(module: nn.Module, prefix: list[str]) -> None:  # FX's collect_tensor_attrs
                for key, value in module.__dict__.items():
                    if isinstance(value, types):
                        table[value] = ".".join([*prefix, key])
                for key, child in module.named_children():
                    collect(child, [*prefix, key])

            collect(self.root, [])
            self._tensor_attrs = table
        return self._tensor_attrs

    @tensor_attrs.setter
    def tensor_attrs(self, table: dict[Any, str]) -> None:  # FX's own trace sets it and fills it up front
        self._tensor_attrs = table

    def proxy(self, node: fx.Node) -> fx.Proxy:
        return _Proxy(node, self)

    def getattr(self, attr: str, attr_val: Any, parameter_proxy_cache: dict[str, Any]) -> Any:
        """FX's ``Tracer.getattr`` (a parameter or, with ``proxy_buffer_attributes``, a buffer of the
        root becomes a ``get_attr`` node, once per name), finding the name in a table built once per
        trace from the module paths the trace has (``submodule_paths``), instead of walking every
        parameter of the model on each access."""
        if not isinstance(attr_val, torch.Tensor):
            return attr_val
        if self._names_of is None or self._names_of[0] is not self.root:
            paths = self.submodule_paths  # {module: path} in named_modules() order, in FX's trace and ours
            named = [(path, module) for module, path in paths.items()] if paths else named_modules(self.root)
            self._names_of = (self.root, _tensor_names(named, "_parameters"), _tensor_names(named, "_buffers"))
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
        lowered = super().create_arg(a)
        if isinstance(a, dict) and kind is not dict:  # FX lowers a dict subclass (a ModelOutput) to a dict
            self._lowered_dicts[id(lowered)] = (lowered, kind)
        return lowered

    def create_node(self, kind: str, target: Any, args: tuple[Any, ...], kwargs: dict[str, Any],
                    name: str | None = None, type_expr: Any | None = None) -> fx.Node:
        """FX's ``create_node`` made cheaper, with the same graph as the result.

        The arguments are attached after the node is made (as ``Node.__init__`` attaches them):
        ``Graph.create_node`` otherwise walks every argument looking for symbolic ints, which tracing a
        module with real shapes never produces. A target whose name is already lower case is its own
        name candidate (FX would run it through a regular expression that leaves it unchanged). Without
        preserved node metadata, stack traces or checks of in-place operations (all off unless asked
        for), the node records its scope and module stack here, as ``TracerBase.create_node`` would, the
        stack copied with ``OrderedDict.copy`` rather than ``copy.copy``. A node made inside an autocast
        region of ``forward`` keeps the region's state (:data:`torch_flops.autocast.AUTOCAST_META`)."""
        if name is None:
            label = getattr(target, "__name__", None) if callable(target) else target
            if type(label) is str and label == label.lower() and not (label.startswith("__") and label.endswith("__")):
                name = label
        if self._plain_nodes(kind):
            node = self.graph.create_node(kind, target, (), {}, name, type_expr)
            scope = self.scope
            self.node_name_to_scope[node.name] = (scope.module_path, scope.module_type)
            if self.module_stack:
                node.meta["nn_module_stack"] = self.module_stack.copy()
        else:
            node = super().create_node(kind, target, (), {}, name, type_expr)
        if args or kwargs:
            if _ATTACH_ARGS is not None:
                _ATTACH_ARGS(node, args, kwargs)
            else:
                node.args, node.kwargs = args, kwargs
        autocast = autocast_state()
        if autocast:
            node.meta[AUTOCAST_META] = autocast
        if kind == "output" and args:
            lowered, cls = self._lowered_dicts.get(id(args[0]), (None, None))
            if lowered is args[0]:
                node.meta[OUTPUT_CLASS_META] = cls
            self._lowered_dicts.clear()
        return node

    def _plain_nodes(self, kind: str) -> bool:
        """Whether ``TracerBase.create_node`` would do no more than record the scope and module stack."""
        return (self._fx_state and not self.record_stack_traces and not (kind == "call_function" and self.check_mutable_operations)
                and not fx.traceback.has_preserved_node_meta())

    def call_module(self, m: nn.Module, forward: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """``Tracer.call_module`` (the same scope, module stack and call counts), without the copy of the
        scope FX makes per call; remembers the module so a failure can be blamed on it."""
        paths = self.submodule_paths
        path = paths.get(m) if paths else None
        if path is None:
            path = self.path_of_module(m)
        self.open_scopes.append((path, type(m)))
        if not self._fx_state:
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


TENSOR_FACTORIES = (
    "arange", "range", "linspace", "logspace", "zeros", "ones", "full", "empty", "empty_strided", "eye", "rand",
    "randn", "randint", "randperm", "normal", "tril_indices", "triu_indices", "scalar_tensor", "bartlett_window",
    "blackman_window", "hamming_window", "hann_window", "kaiser_window",
)
"""The ``torch`` functions that make a tensor from sizes and numbers alone: with no proxy among their
arguments, FX would run them while tracing and store their result as a constant."""


@contextlib.contextmanager
def record_constant_work(tracer: fx.Tracer) -> Iterator[None]:
    """While ``tracer`` traces, calls of :data:`TENSOR_FACTORIES` through the ``torch`` namespace
    (``torch.arange(n)``, ``torch.randn(4)``) become ``call_function`` nodes, whatever their arguments.

    FX runs a tensor computation that does not depend on the inputs once, while tracing, and keeps its
    result as a constant: a positional encoding built in ``forward`` would never be counted, and random
    noise would be frozen into the graph. With these nodes, and with buffers read as ``get_attr`` nodes
    (``proxy_buffer_attributes``), such work is recorded, counted and run again on every forward.
    Functions imported by name (``from torch import arange``) and plain tensor attributes (not
    registered as buffers) are not seen."""
    originals = {name: getattr(torch, name) for name in TENSOR_FACTORIES if hasattr(torch, name)}

    def recorded(fn: Any) -> Any:
        @functools.wraps(fn)
        def factory(*args: Any, **kwargs: Any) -> Any:
            return tracer.create_proxy("call_function", fn, args, kwargs)

        return factory

    try:
        for name, fn in originals.items():
            setattr(torch, name, recorded(fn))
        yield
    finally:
        for name, fn in originals.items():
            setattr(torch, name, fn)


def _autowrap_check(patcher: Any, frame_dict: dict[str, Any], function_ids: set[int]) -> None:
    """FX's ``_autowrap_check``: in a globals dict not seen before in this trace, wrap every public
    callable whose id is in ``function_ids`` (``math`` functions, by default). Most globals hold none of
    them (a module imports ``math``, not its functions), which one pass over the values' ids in C finds
    before FX's check of every name in Python."""
    if not patcher.visit_once(frame_dict) or function_ids.isdisjoint(map(id, frame_dict.values())):
        return
    wrap = _fx_trace._create_wrapped_func
    _patch_globals(patcher, frame_dict, {
        name: wrap(value) for name, value in frame_dict.items()
        if not name.startswith("_") and callable(value) and id(value) in function_ids
    })


def _patch_wrapped_functions(patcher: Any) -> None:
    """FX's ``_patch_wrapped_functions``: every function registered with ``torch.fx.wrap`` is replaced by
    its wrapper in the globals it was registered from (a builtin's name shadowed there), and every
    wrapped method on its class. The functions are patched one globals dict at a time."""
    by_globals: dict[int, tuple[dict[str, Any], dict[str, Any]]] = {}
    for (_, name), frame_dict in _fx_trace._wrapped_fns_to_patch.copy().items():
        orig_fn = getattr(builtins, name) if name not in frame_dict and hasattr(builtins, name) else frame_dict[name]
        by_globals.setdefault(id(frame_dict), (frame_dict, {}))[1][name] = _fx_trace._create_wrapped_func(orig_fn)
    for frame_dict, wrappers in by_globals.values():
        _patch_globals(patcher, frame_dict, wrappers)
    for cls, name in _fx_trace._wrapped_methods_to_patch:
        patcher.patch_method(cls, name, _fx_trace._create_wrapped_method(cls, name))


def _patch_globals(patcher: Any, frame_dict: dict[str, Any], wrappers: dict[str, Any]) -> None:
    """``patcher.patch(frame_dict, name, wrapper)`` for every item of ``wrappers`` (a name already patched
    is left alone, a builtin's name missing from ``frame_dict`` is added and removed again), the names
    present in ``frame_dict`` set and reverted as one dict update (FX records one patch per name)."""
    originals: dict[str, Any] = {}
    for name, wrapper in wrappers.items():
        if name not in frame_dict and hasattr(builtins, name):
            patcher.patch(frame_dict, name, wrapper)
        else:
            wrapper.__fx_already_patched = True
            if not getattr(frame_dict[name], "__fx_already_patched", False):
                originals[name] = frame_dict[name]
    if originals:
        patched = _GlobalsUpdate(frame_dict, "", originals, {name: wrappers[name] for name in originals})
        patcher.patches_made.append(patched)
        patched.patch()


_WRAPPERS: dict[Any, Any] = {}  # original function -> FX's wrapper of it


def _patch_checkpoint_partials(patcher: Any, named: Iterable[tuple[str, nn.Module]]) -> None:
    """A ``functools.partial(checkpoint, ...)`` held by a module (how Hugging Face keeps its
    ``_gradient_checkpointing_func``) calls the function it holds, which no patching of names reaches:
    for the trace, each becomes the same partial of the wrapped checkpoint (the patcher puts it back)."""
    checkpoint = CHECKPOINT_FUNCTIONS[0]
    wrapped = None
    for _, module in named:
        for name, value in module.__dict__.items():
            if type(value) is functools.partial and value.func is checkpoint:
                if wrapped is None:
                    wrapped = _fx_trace._create_wrapped_func(checkpoint)
                patcher.patch(module.__dict__, name, functools.partial(wrapped, *value.args, **value.keywords))


def _reused_wrapper(orig_fn: Any) -> Any:
    """FX's ``_create_wrapped_func(orig_fn)``, made once per function. The wrapper depends on
    ``orig_fn`` alone (it finds the tracer through the proxies it is called with), so one made for an
    earlier trace serves every later one."""
    return _memoised(_WRAPPERS, orig_fn, _CREATE_WRAPPED_FUNC, orig_fn)


_CREATE_WRAPPED_FUNC: Any = getattr(_fx_trace, "_create_wrapped_func", None)


def _patchable_classes(modules: list[nn.Module]) -> frozenset[type] | None:
    """The classes of a model's ``modules``, if patching ``__call__`` and ``__getattr__`` on each of them
    intercepts exactly what patching them on ``nn.Module`` would: every class inherits both from
    ``nn.Module`` unchanged (none overrides them, so none reaches ``nn.Module``'s through ``super()``)
    and no trace is already patching ``nn.Module``. ``None`` otherwise: they are patched on ``nn.Module``."""
    classes = frozenset([type(module) for module in modules])
    for name in _MODULE_HOOKS:
        inherited = getattr(nn.Module, name)
        if hasattr(inherited, "__fx_already_patched") or nn.Module in classes:
            return None
        if any(getattr(cls, name) is not inherited for cls in classes):
            return None
    return classes


if _OWN_TRACE:

    class _ClassAttribute(_fx_trace._PatchedFn):
        """A method set on a class that inherits it: reverting deletes it, so the class inherits again."""

        def patch(self) -> None:
            setattr(self.frame_dict, self.fn_name, self.new_fn)

        def revert(self) -> None:
            if self.fn_name in vars(self.frame_dict):
                delattr(self.frame_dict, self.fn_name)

    class _GlobalsUpdate(_fx_trace._PatchedFn):
        """Several names of one globals dict patched at once: ``orig_fn`` and ``new_fn`` are dicts
        ``{name: function}`` (``fn_name`` is unused)."""

        def patch(self) -> None:
            self.frame_dict.update(self.new_fn)

        def revert(self) -> None:
            self.frame_dict.update(self.orig_fn)

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
        :func:`torch_flops.tracing.trace` would keep the calling module whole; here its ``forward`` is
        traced inline, and fails the same way if it reads parameters (not members of the model)."""

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
