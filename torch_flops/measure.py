"""Per-node timing and the CUDA memory probe.

On CPU a node's time is ``time.perf_counter`` around it. On CUDA a pair of CUDA events is recorded
around each node and the run synchronises once, at its end, to read them: the time is what the node
took on the device, and the kernels of successive nodes queue as they do in a plain forward (a
synchronisation per node would drain the queue every time).

Memory is read on CUDA only (``None`` elsewhere) from the caching allocator's counters of allocated
bytes (host-side, no synchronisation): ``mem_before_bytes`` / ``mem_after_bytes`` are what
``torch.cuda.memory_allocated`` or ``torch.cuda.max_memory_allocated`` (the peak since the run began)
would return around the node. The peak counter is reset as each node starts, so that the most allocated
*while* it ran is known too: ``mem_peak_bytes``, above the run's baseline (what was allocated before it
except its inputs, so that it reads as the analytic ``live_peak_bytes``), and ``mem_inside_bytes``, the
part of that peak beyond the node's inputs and outputs (cuDNN/cuBLAS workspaces, temporaries the op
freed before returning). :class:`SpanPeaks` keeps the nested spans (a leaf node and its calls) right.
A CPU run never touches CUDA.
"""

from __future__ import annotations

import contextlib
import gc
import time
from collections.abc import Iterable, Iterator, Mapping
from types import MappingProxyType
from typing import Any

import torch

from torch_flops.arguments import check_choice

MEMORY_FUNCTIONS = ("max_memory_allocated", "memory_allocated")
NO_MEMORY: Mapping[str, int | None] = MappingProxyType(
    dict.fromkeys(("mem_before_bytes", "mem_after_bytes", "mem_peak_bytes", "mem_inside_bytes")))


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
    """``mem_func_name`` is one of :data:`MEMORY_FUNCTIONS`. A tensor there is the model's input passed
    to the constructor (``TorchFLOPsByFX(model, x)``, as ``thop.profile`` takes it): the error says
    where inputs go."""
    if tensors_in(mem_func_name):
        raise TypeError(
            f"mem_func_name must be one of {MEMORY_FUNCTIONS}, got tensors of shape {describe_inputs((mem_func_name,), {})}: "
            "a model's inputs are not given to TorchFLOPsByFX(model) but to counter.propagate(...)"
        )
    check_choice("mem_func_name", mem_func_name, MEMORY_FUNCTIONS)


class SpanPeaks:
    """The most allocated while each of several nested spans ran, from one peak counter that is reset as
    each span opens.

    A reading of the counter is the peak since its last reset, and every span open at that time was
    open all that while, so it raises each of them; ``peak`` is the peak since the first span (the run's
    own, which ``max_memory_allocated`` would show without the resets)."""

    def __init__(self, allocated: int = 0) -> None:
        self.peak = allocated
        self._open: list[int] = []

    def open(self, allocated: int, counter_peak: int) -> None:
        """A span opens with ``allocated`` bytes; the counter read ``counter_peak`` and is reset next."""
        self.fold(counter_peak)
        self._open.append(allocated)

    def close(self, counter_peak: int) -> int:
        """The innermost open span closes, the counter reading ``counter_peak``; return its peak."""
        self.fold(counter_peak)
        return self._open.pop()

    def fold(self, counter_peak: int) -> None:
        self.peak = max(self.peak, counter_peak)
        self._open = [max(peak, counter_peak) for peak in self._open]


class Probe:
    """Clock and memory readings for one run on ``device``."""

    def __init__(self, device: torch.device, mem_func_name: str) -> None:
        check_memory_function(mem_func_name)
        self.on_cuda = device.type == "cuda"
        self.device = device
        self._since_start = mem_func_name == "max_memory_allocated"
        self._peaks = SpanPeaks()
        self._baseline = 0

    def start(self) -> None:
        """Reset the CUDA peak counter so that memory readings belong to this run."""
        if self.on_cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._peaks = SpanPeaks(self._allocated()[0])
            self._baseline = self._peaks.peak

    def count_from(self, inputs_bytes: int) -> None:
        """Measure ``mem_peak_bytes`` above what was allocated as the run started less ``inputs_bytes``
        (the allocator's bytes of the run's inputs), as the analytic peak counts the inputs."""
        if self.on_cuda:
            self._baseline = self._peaks.peak - inputs_bytes

    def _allocated(self) -> tuple[int, int]:
        """The allocator's allocated bytes now and their peak since the counter's last reset (one read of
        its counters, without :func:`torch.cuda.memory_stats`' flattening and sorting of every counter)."""
        counters = torch.cuda.memory_stats_as_nested_dict(self.device).get("allocated_bytes", {}).get("all", {})
        return counters.get("current", 0), counters.get("peak", 0)

    def memory(self) -> int | None:
        """What the memory function would read now (``None`` off CUDA)."""
        if not self.on_cuda:
            return None
        allocated, counter_peak = self._allocated()
        self._peaks.fold(counter_peak)
        return self._peaks.peak if self._since_start else allocated

    def memory_begin(self) -> Any:
        """Open a span of memory readings (a node, a call); close it with :meth:`memory_end`."""
        if not self.on_cuda:
            return None
        allocated, counter_peak = self._allocated()
        self._peaks.open(allocated, counter_peak)
        torch.cuda.reset_peak_memory_stats(self.device)
        return allocated, self._peaks.peak

    def memory_end(self, token: Any) -> Mapping[str, int | None]:
        """The memory fields of the span :meth:`memory_begin` opened (:data:`NO_MEMORY` off CUDA)."""
        if token is None:
            return NO_MEMORY
        before, peak_before = token
        after, counter_peak = self._allocated()
        peak = self._peaks.close(counter_peak)
        return {
            "mem_before_bytes": peak_before if self._since_start else before,
            "mem_after_bytes": self._peaks.peak if self._since_start else after,
            "mem_peak_bytes": peak - self._baseline,
            "mem_inside_bytes": peak - max(before, after),
        }

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
