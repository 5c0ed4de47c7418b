"""``torch.autocast`` regions of a traced ``forward``: recorded on the nodes while tracing, entered again
around those nodes when the graph runs.

A ``with torch.autocast(...)`` statement in ``forward`` runs once, while tracing, and leaves no node of
its own. So the tracer reads, for every node it makes, the device types autocast is switched on for and
their dtypes (:func:`autocast_state`), and keeps it in ``node.meta[AUTOCAST_META]`` when there is any
(``(("cpu", torch.bfloat16),)``); the runner runs such a node inside ``torch.autocast`` for each pair
(:func:`under_autocast`), so its outputs have the dtypes the eager model gives them.

The trace runs with autocast switched off on every device type (:func:`autocast_off`): a graph is cached
and reused by later runs, so it must hold what ``forward`` itself switches on, not what was on around
the trace. Autocast switched on around a run (``with torch.autocast(...): counter.propagate(x)``)
applies at run time to every node, as it does to an eager forward; a node of a region of the model
enters its own region inside it. A region that switches autocast off (``enabled=False``) leaves the
state the trace runs in, so it records nothing (docs/conventions.md, "Autocast").
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from typing import Any

import torch

AUTOCAST_META = "torch_flops_autocast"
"""The ``node.meta`` key of a node made inside an autocast region of ``forward``: a tuple of
``(device type, dtype)``, one for each device type autocast is on for."""

AutocastState = tuple[tuple[str, torch.dtype], ...]


@functools.cache
def device_types() -> tuple[str, ...]:
    """The device types autocast can be switched on for in this process: ``"cpu"`` and each accelerator
    PyTorch sees (``torch.autocast`` switches itself off, with a warning, for one it does not)."""
    found = ["cpu"]
    if torch.cuda.is_available():
        found.append("cuda")
    xpu = getattr(torch, "xpu", None)
    if xpu is not None and xpu.is_available():
        found.append("xpu")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        found.append("mps")
    return tuple(found)


def autocast_state() -> AutocastState:
    """The device types autocast is on for now, each with its dtype, in :func:`device_types` order
    (``torch.is_autocast_enabled(device_type)``, ``torch.get_autocast_dtype``: PyTorch 2.4, the floor)."""
    state: AutocastState = ()
    for device in device_types():
        if torch.is_autocast_enabled(device):
            state += ((device, torch.get_autocast_dtype(device)),)
    return state


@contextlib.contextmanager
def autocast_off() -> Iterator[None]:
    """Autocast switched off on every device type it is on for, by ``torch.autocast(..., enabled=False)``,
    for the block (a trace)."""
    with contextlib.ExitStack() as stack:
        for device, _ in autocast_state():
            stack.enter_context(torch.autocast(device, enabled=False))
        yield


def under_autocast(fn: Callable[..., Any], state: AutocastState) -> Callable[..., Any]:
    """``fn`` run inside ``torch.autocast(device, dtype=dtype)`` for each pair of ``state``."""
    if len(state) == 1:
        ((device, dtype),) = state

        def run(*args: Any, **kwargs: Any) -> Any:
            with torch.autocast(device, dtype=dtype):
                return fn(*args, **kwargs)

        return run

    def run_all(*args: Any, **kwargs: Any) -> Any:
        with contextlib.ExitStack() as stack:
            for device, dtype in state:
                stack.enter_context(torch.autocast(device, dtype=dtype))
            return fn(*args, **kwargs)

    return run_all
