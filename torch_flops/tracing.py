"""Model -> ``torch.fx.GraphModule``, with trace failures turned into errors that name the module."""

from __future__ import annotations

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
    on the innermost one."""

    def __init__(self) -> None:
        super().__init__()
        self.open_scopes: list[tuple[str, type]] = []

    def call_module(self, m: nn.Module, forward: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        self.open_scopes.append((self.path_of_module(m), type(m)))
        result = super().call_module(m, forward, args, kwargs)
        self.open_scopes.pop()
        return result


def first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def trace(model: nn.Module) -> fx.GraphModule:
    """``symbolic_trace(model)``, raising :class:`TraceError` that names the failing module.

    The model is traced in eval mode (the graph of inference) and its training flags are restored.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"torch_flops expects an nn.Module, got {type(model).__name__}")
    tracer = _ScopeTrackingTracer()
    training = {m: m.training for m in model.modules()}
    model.eval()
    try:
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
    finally:
        for module, flag in training.items():
            module.training = flag
    name = type(model).__name__
    return fx.GraphModule(tracer.root, graph, name)
