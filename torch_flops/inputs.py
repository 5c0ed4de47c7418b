"""Inputs as models take them: bind ``propagate``'s arguments to ``forward``'s signature and split them
into graph inputs (tensors, and containers of tensors) and concrete values the graph is specialised on.

- a tensor becomes one graph input;
- a list / tuple / dict that holds tensors becomes one graph input per tensor, its other leaves
  concrete (``torch.fx.PH`` in ``concrete_args``), so a model may index or iterate it; other objects
  holding tensors (``PackedSequence``, dataclasses) are one graph input;
- anything else (``None``, ``bool``, ``int``, ``float``, ``str``, a parameter left at its default) is a
  concrete argument: the graph is traced for that value, and a different value traces a new graph.

:func:`input_spec` is the key a traced graph is cached under; :func:`flat_inputs` lists the values of
the graph's placeholders in order.
"""

from __future__ import annotations

import enum
import inspect
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx as fx
from torch import nn
from torch.utils import _pytree as pytree


def forward_signature(model: nn.Module) -> inspect.Signature:
    """The signature of ``model.forward``. A TorchScript module's ``forward`` (``torch.jit.trace``'s
    result, or one loaded with ``torch.jit.load``) has no Python signature: it is read from its schema,
    ``forward(self, Tensor x, Tensor? mask=None) -> Tensor``."""
    try:
        return inspect.signature(model.forward)
    except (ValueError, TypeError):
        schema = getattr(model.forward, "schema", None)
        if not isinstance(model, torch.jit.ScriptModule) or schema is None:
            raise TypeError(f"cannot read the signature of {type(model).__name__}.forward") from None
    params = []
    for argument in schema.arguments[1:]:  # the first is the module itself
        kind = inspect.Parameter.KEYWORD_ONLY if argument.kwarg_only else inspect.Parameter.POSITIONAL_OR_KEYWORD
        default = argument.default_value if argument.has_default_value() else inspect.Parameter.empty
        params.append(inspect.Parameter(argument.name, kind, default=default))
    return inspect.Signature(params)


@dataclass(frozen=True)
class BoundInputs:
    """``forward``'s parameters with the values of one call (defaults filled in), in signature order."""

    values: dict[str, Any]
    kinds: dict[str, inspect._ParameterKind]
    positional: int | None = None  # how many arguments the call passed by position (None: not known)


def bind(model: nn.Module, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> BoundInputs:
    """Bind ``args`` / ``kwargs`` as ``model(*args, **kwargs)`` would, or raise ``TypeError`` naming the
    model's parameters."""
    signature = forward_signature(model)
    try:
        bound = signature.bind(*args, **kwargs)
    except TypeError as error:
        params = ", ".join(str(p) for p in signature.parameters.values())
        raise TypeError(f"{type(model).__name__}.forward({params}) cannot take these inputs: {error}") from None
    bound.apply_defaults()
    kinds = {name: signature.parameters[name].kind for name in bound.arguments}
    for name, value in bound.arguments.items():
        for tensor in pytree.tree_leaves(value):
            if isinstance(tensor, torch.Tensor) and tensor.layout is not torch.strided:
                raise layout_error(f"the input '{name}' of {type(model).__name__}.forward", tensor)
    return BoundInputs(dict(bound.arguments), kinds, len(args))


_SPARSE_LAYOUTS = (torch.sparse_coo, torch.sparse_csr, torch.sparse_csc, torch.sparse_bsr, torch.sparse_bsc)


def layout_error(what: str, tensor: torch.Tensor) -> NotImplementedError:
    """The error for a tensor of a layout other than strided (sparse, mkldnn, jagged): cost rules price
    a tensor by its shape, which for a sparse tensor overstates the work done on its stored elements."""
    kind = "sparse tensors" if tensor.layout in _SPARSE_LAYOUTS else f"tensors of layout {tensor.layout}"
    shape = "x".join(str(d) for d in tensor.shape)
    return NotImplementedError(
        f"{kind} are not supported: {what} is a {shape} tensor of layout {tensor.layout}. FLOPs are priced "
        f"by shape, which for a sparse tensor would count every element, stored or not; to count the dense "
        f"equivalent, pass tensor.to_dense()"
    )


def check_state_layouts(model: nn.Module) -> None:
    """Raise :func:`layout_error` for a parameter or buffer of ``model`` that is not a strided tensor
    (the names are looked up only then: the quick test runs at every construction)."""
    strided = torch.strided
    if all(t.layout is strided for m in model.modules() for table in (m._parameters, m._buffers) for t in table.values() if t is not None):
        return
    for kind, named in (("parameter", model.named_parameters()), ("buffer", model.named_buffers())):
        for name, tensor in named:
            if tensor.layout is not torch.strided:
                raise layout_error(f"the {kind} '{name}' of {type(model).__name__}", tensor)


def has_tensor(value: Any) -> bool:
    return any(isinstance(leaf, torch.Tensor) for leaf in pytree.tree_leaves(value))


def _is_variadic(kind: inspect._ParameterKind) -> bool:
    return kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)


def concrete_args(bound: BoundInputs) -> dict[str, Any]:
    """``concrete_args`` for ``Tracer.trace``: non-tensor values as they are, containers of tensors with
    ``fx.PH`` in place of each tensor. Plain tensors and ``*args`` / ``**kwargs`` are left out."""
    concrete: dict[str, Any] = {}
    for name, value in bound.values.items():
        if _is_variadic(bound.kinds[name]) or isinstance(value, torch.Tensor):
            continue
        if not has_tensor(value):
            concrete[name] = value
        elif type(value) in (list, tuple, dict):  # other containers (PackedSequence ...) stay one input
            concrete[name] = pytree.tree_map(lambda leaf: fx.PH if isinstance(leaf, torch.Tensor) else leaf, value)
    return concrete


_PLAIN_TYPES = (type(None), bool, int, float, complex, str, bytes, torch.dtype, torch.device, torch.layout,
                torch.memory_format, type(...), enum.Enum)


def is_plain(value: Any) -> bool:
    """Whether ``value`` is a plain immutable value a graph may be specialised on and reused for: None, a
    bool, number, string, dtype, device, layout, memory format, enum member, or a tuple of them."""
    if isinstance(value, tuple):
        return all(is_plain(item) for item in value)
    return isinstance(value, _PLAIN_TYPES)


def input_spec(bound: BoundInputs) -> Hashable | None:
    """What a traced graph depends on: each argument's structure and its non-tensor values. ``None``
    when an argument holds anything but tensors and plain values (:func:`is_plain`): a configuration
    object, say, which may change between calls without changing its identity, so no graph traced for
    it may be reused."""
    spec = []
    for name, value in bound.values.items():
        leaves, tree = pytree.tree_flatten(value)
        keys = []
        for leaf in leaves:
            if isinstance(leaf, torch.Tensor):
                keys.append("<tensor>")
            elif is_plain(leaf):
                keys.append((type(leaf), leaf))
            else:
                return None
        spec.append((name, str(tree), tuple(keys)))
    return tuple(spec)


def default_bound(model: nn.Module) -> BoundInputs:
    """The inputs assumed before the first call: every parameter without a default a tensor, passed by
    position when it can be, the others at their defaults."""
    signature = forward_signature(model)
    values: dict[str, Any] = {}
    kinds: dict[str, inspect._ParameterKind] = {}
    positional = 0
    for name, param in signature.parameters.items():
        kinds[name] = param.kind
        if positional == len(values) and param.default is inspect.Parameter.empty and param.kind in (
            inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD,
        ):
            positional += 1
        if param.kind is inspect.Parameter.VAR_POSITIONAL:
            values[name] = ()
        elif param.kind is inspect.Parameter.VAR_KEYWORD:
            values[name] = {}
        elif param.default is inspect.Parameter.empty:
            values[name] = torch.empty(0)  # a stand-in: only its being a tensor matters
        else:
            values[name] = param.default
    return BoundInputs(values, kinds, positional)


def call_arguments(bound: BoundInputs) -> tuple[list[Any], dict[str, Any]]:
    """``(args, kwargs)`` that call ``forward`` as the bound call did: ``*args`` unpacked, keyword-only
    parameters and ``**kwargs`` by keyword."""
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    for name, value in bound.values.items():
        kind = bound.kinds[name]
        if kind is inspect.Parameter.VAR_POSITIONAL:
            args.extend(value)
        elif kind is inspect.Parameter.VAR_KEYWORD:
            kwargs.update(value)
        elif kind is inspect.Parameter.KEYWORD_ONLY:
            kwargs[name] = value
        else:
            args.append(value)
    return args, kwargs


def variadics(bound: BoundInputs) -> dict[str, int | tuple[str, ...]]:
    """What the call put in ``*args`` (how many values) and ``**kwargs`` (which keywords), by name."""
    found: dict[str, int | tuple[str, ...]] = {}
    for name, value in bound.values.items():
        if bound.kinds[name] is inspect.Parameter.VAR_POSITIONAL:
            found[name] = len(value)
        elif bound.kinds[name] is inspect.Parameter.VAR_KEYWORD:
            found[name] = tuple(value)
    return found


def flat_inputs(gm: fx.GraphModule, bound: BoundInputs, concrete: Mapping[str, Any]) -> list[Any]:
    """The values of ``gm``'s placeholders, in order, for a graph traced with ``concrete``.

    A plain parameter's placeholder is named after it; FX names the placeholders of a concrete
    parameter ``<name>_<i>``, one per pytree leaf, in leaf order; ``*args`` takes the positional rest;
    ``**kwargs`` (always the last placeholder) takes the dict of the other keywords.
    """
    values: list[Any] = []
    for node in gm.graph.nodes:
        if node.op != "placeholder":
            continue
        target = str(node.target)
        if target.startswith("**"):
            values.append(dict(bound.values.get(target[2:], {})))
        elif target.startswith("*"):
            values.extend(bound.values.get(target[1:], ()))
        elif target in bound.values and target not in concrete:
            values.append(bound.values[target])
        else:
            name, _, index = target.rpartition("_")
            if name not in concrete or not index.isdigit():
                raise TypeError(f"the traced graph has an input {target!r} that the call does not provide")
            values.append(pytree.tree_leaves(bound.values[name])[int(index) - 1])
    return values
