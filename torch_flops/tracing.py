"""Model -> ``torch.fx.GraphModule``, with trace failures turned into errors that name the module."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch.fx as fx
from torch import nn

FX_LIMITATIONS_URL = "https://pytorch.org/docs/stable/fx.html#limitations-of-symbolic-tracing"


class TraceError(RuntimeError):
    """``symbolic_trace`` could not build a graph. ``module_path`` names the innermost module being
    traced when it failed ('' for the root) and ``module_class`` its class."""

    def __init__(self, message: str, module_path: str, module_class: str) -> None:
        super().__init__(message)
        self.module_path = module_path
        self.module_class = module_class


class _ScopeTrackingTracer(fx.Tracer):
    """A ``Tracer`` that remembers which modules' ``forward`` it is inside, so a failure can be blamed
    on the innermost one, and that keeps instances of ``leaf_types`` as single nodes."""

    def __init__(self, leaf_types: tuple[type, ...] = ()) -> None:
        super().__init__()
        self.open_scopes: list[tuple[str, type]] = []
        self.leaf_types = leaf_types

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return isinstance(m, self.leaf_types) or super().is_leaf_module(m, module_qualified_name)

    def call_module(self, m: nn.Module, forward: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        self.open_scopes.append((self.path_of_module(m), type(m)))
        result = super().call_module(m, forward, args, kwargs)
        self.open_scopes.pop()
        return result


@contextmanager
def eval_mode(*roots: nn.Module) -> Iterator[None]:
    """Put ``roots`` (and so all their submodules) in eval mode; restore every module's own flag after."""
    flags = [(m, m.training) for root in roots for m in root.modules()]
    try:
        for root in roots:
            root.eval()
        yield
    finally:
        for module, flag in flags:
            module.training = flag


def first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def trace(model: nn.Module, leaf_types: tuple[type, ...] = ()) -> fx.GraphModule:
    """``symbolic_trace(model)``, raising :class:`TraceError` that names the failing module.

    The model is traced in eval mode (the graph of inference); its training flags are restored and the
    tensor constants FX stores on the traced module while tracing are moved to the graph module only.
    Instances of ``leaf_types`` stay single ``call_module`` nodes.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"torch_flops expects an nn.Module, got {type(model).__name__}")
    tracer = _ScopeTrackingTracer(leaf_types)
    attributes = set(vars(model))
    try:
        with eval_mode(model):
            graph = tracer.trace(model)
    except Exception as error:
        path, cls = tracer.open_scopes[-1] if tracer.open_scopes else ("", type(model))
        where = f"module '{path}' ({cls.__name__})" if path else f"the root module ({cls.__name__})"
        raise TraceError(
            f"torch.fx.symbolic_trace could not trace {where}: {type(error).__name__}: {first_line(error)}. "
            f"Data-dependent control flow, asserts on tensor values and shapes used as Python values cannot "
            f"be traced symbolically; see {FX_LIMITATIONS_URL}",
            module_path=path,
            module_class=cls.__name__,
        ) from error
    graph_module = fx.GraphModule(tracer.root, graph, type(model).__name__)  # copies the constants
    for name in set(vars(model)) - attributes:
        delattr(model, name)
    return graph_module
