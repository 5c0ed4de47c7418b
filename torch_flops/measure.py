"""Per-node timing and the CUDA memory probe.

On CPU a node's time is ``time.perf_counter`` around it. On CUDA a pair of CUDA events is recorded
around each node and the run synchronises once, at its end, to read them: the time is what the node
took on the device, and the kernels of successive nodes queue as they do in a plain forward (a
synchronisation per node would drain the queue every time). Memory is read from
``torch.cuda.memory_allocated`` or ``torch.cuda.max_memory_allocated`` (host-side allocator counters,
no synchronisation) on CUDA and is ``None`` elsewhere. A CPU run never touches CUDA.
"""

from __future__ import annotations

import contextlib
import gc
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch

MEMORY_FUNCTIONS = ("max_memory_allocated", "memory_allocated")


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector, and restore it after.

    Tracing and recording allocate tens of thousands of small objects (nodes, proxies, records). Each
    few hundred allocations start a collection, and the older generations' collections walk every
    object alive, so on a 6,000-node graph the collector took a quarter of the time while finding
    almost nothing to free. Garbage made meanwhile is collected at the next collection after this.
    Per-node times are also free of collector pauses this way."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def run_device(tensors: Iterable[torch.Tensor]) -> torch.device:
    """The device of the first CUDA tensor among ``tensors``, else CPU."""
    for tensor in tensors:
        if tensor.is_cuda:
            return tensor.device
    return torch.device("cpu")


def check_memory_function(mem_func_name: str) -> None:
    if mem_func_name not in MEMORY_FUNCTIONS:
        raise ValueError(f"mem_func_name must be one of {MEMORY_FUNCTIONS}, got {mem_func_name!r}")


class Probe:
    """Clock and memory readings for one run on ``device``."""

    def __init__(self, device: torch.device, mem_func_name: str) -> None:
        check_memory_function(mem_func_name)
        self.on_cuda = device.type == "cuda"
        self.device = device
        self._memory: Callable[..., int] | None = getattr(torch.cuda, mem_func_name) if self.on_cuda else None

    def start(self) -> None:
        """Reset the CUDA peak counter so that ``max_memory_allocated`` readings belong to this run."""
        if self.on_cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)

    def now(self) -> float:
        """Seconds from ``perf_counter``, after the device has finished queued work."""
        if self.on_cuda:
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def mark(self) -> Any:
        """A point in time to measure from or to: a recorded CUDA event on CUDA (no synchronisation),
        ``perf_counter`` seconds elsewhere."""
        if self.on_cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record(torch.cuda.current_stream(self.device))
            return event
        return time.perf_counter()

    def begin(self) -> Any:
        """Open a timed span (a node, a call); close it with :meth:`end`."""
        return self.mark()

    def end(self, token: Any) -> Any:
        """Close the span :meth:`begin` opened; read the returned span with :meth:`elapsed_ms` after
        :meth:`finish`."""
        return token, self.mark()

    def finish(self) -> None:
        """Wait for the device's queued work, so that every span can be read."""
        if self.on_cuda:
            torch.cuda.synchronize(self.device)

    def elapsed_ms(self, span: Any) -> float:
        """A span's milliseconds (CUDA events: the device time between its two marks)."""
        start, end = span
        if self.on_cuda:
            return start.elapsed_time(end)
        return (end - start) * 1000.0

    def marker(self) -> Any:
        """A point in time that starts or ends a stretch read with :meth:`between_ms` after
        :meth:`finish` (the backward's owner switches): ``perf_counter`` seconds, after the device has
        finished queued work."""
        return self.now()

    def between_ms(self, start: Any, end: Any) -> float:
        """Milliseconds from one :meth:`marker` to a later one."""
        return (end - start) * 1000.0

    def abandon(self) -> None:
        """Release what a run that failed left running (nothing, for plain marks)."""

    def host_ms(self, span: Any) -> float | None:
        """The CPU time to dispatch a span, when it is known apart from its time (not with plain marks)."""
        return None

    def span_fields(self, span: Any) -> dict[str, float]:
        """A timed span's record fields: ``time_ms``, and ``host_time_ms`` when known (after :meth:`finish`)."""
        fields = {"time_ms": self.elapsed_ms(span)}
        host = self.host_ms(span)
        if host is not None:
            fields["host_time_ms"] = host
        return fields

    def memory(self) -> int | None:
        return self._memory(self.device) if self._memory is not None else None


def tensors_in(values: Any) -> list[torch.Tensor]:
    """Every tensor inside nested tuples, lists and dicts, in order.

    (A loop, not a recursive closure: a closure that calls itself is a reference cycle, which would
    keep the list, and so the tensors, alive until the cyclic garbage collector runs.)"""
    found: list[torch.Tensor] = []
    stack = [values]
    while stack:
        value = stack.pop()
        if isinstance(value, torch.Tensor):
            found.append(value)
        elif isinstance(value, (tuple, list)):
            stack.extend(reversed(value))
        elif isinstance(value, dict):
            stack.extend(reversed(list(value.values())))
    return found


def describe_inputs(args: Any, kwargs: dict[str, Any]) -> str:
    """The shapes of the tensors in a call's arguments, for error messages: ``[2, 4], [4]``."""
    shapes = [str(list(t.shape)) for t in tensors_in((tuple(args), kwargs))]
    return ", ".join(shapes) if shapes else "no tensors"
