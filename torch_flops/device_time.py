"""Device time per op from the GPU's own records (``torch.profiler``, i.e. Kineto over CUPTI).

A pair of CUDA events around a node measures the stream's span between them, which is host launch
overhead whenever Python launches the next node more slowly than the GPU finishes the last one. The
GPU's profiler instead records each kernel, memcpy and memset with its own start and duration. So on
CUDA each timed span (a graph node, a call inside a leaf) is a ``record_function`` range named
``torch_flops::<n>``, and after the run the profiler's trace is read (:func:`attribute`):

- a device activity (trace category ``kernel``, ``gpu_memcpy`` or ``gpu_memset``) belongs to the launch
  with the same ``correlation`` id (category ``cuda_runtime`` or ``cuda_driver``, on a host thread);
  where the trace holds no such launch (a launch API the profiler does not record), it belongs to the
  host op whose ``External id`` it carries (category ``cpu_op`` or ``user_annotation``), launched as that
  op starts; what matches neither counts in the run's total and in :attr:`SpanTimes.unlinked_ms`;
- a span's **device time** is the summed duration of the device activities whose launch lies inside
  the span's range on the same thread (nested spans included: a leaf's span holds its calls');
- its **host time** is the range's own duration: the CPU time to dispatch it (kernels not awaited).

The run's **busy fraction** is the summed device time over the run's wall span (from the first range or
device activity to the end of the last, whichever are earlier and later).
"""

from __future__ import annotations

import bisect
import json
import os
import tempfile
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from torch_flops.measure import Probe

SPAN_PREFIX = "torch_flops::"
MARKER_PREFIX = "torch_flops::mark::"
DEVICE_CATEGORIES = frozenset({"kernel", "gpu_memcpy", "gpu_memset"})
LAUNCH_CATEGORIES = frozenset({"cuda_runtime", "cuda_driver"})
SPAN_CATEGORY = "user_annotation"
HOST_OP_CATEGORIES = frozenset({"cpu_op", SPAN_CATEGORY})
UNLINKED_NOTE_SHARE = 0.01  # a run whose unlinked device time is above this share of its total says so


@dataclass(frozen=True)
class SpanTimes:
    """What one profiled run's trace says of its spans, in milliseconds, keyed by span number."""

    device_ms: dict[int, float]
    host_ms: dict[int, float]
    device_total_ms: float  # every device activity in the trace, inside a span or not
    wall_ms: float
    markers: dict[int, float] = field(default_factory=dict)  # marker number -> its time, in ms on the trace's clock
    marker_device_ms: dict[int, float] = field(default_factory=dict)  # launched from a marker until the next
    unlinked_ms: float = 0.0  # device time joined to no launch and no host op: in the total, in no span
    # device activities by how each was joined: "launch" (correlation id), "host op" (External id), "none"
    joins: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        order = sorted(self.markers, key=self.markers.__getitem__)
        running = [0.0]
        for number in order:
            running.append(running[-1] + self.marker_device_ms.get(number, 0.0))
        object.__setattr__(self, "_position", {number: i for i, number in enumerate(order)})
        object.__setattr__(self, "_running", running)

    def between_markers_ms(self, start: int, end: int) -> float | None:
        """Device time launched (on any thread) from marker ``start`` until marker ``end``; ``None`` when
        either is not in the trace."""
        if start not in self._position or end not in self._position:
            return None
        return self._running[self._position[end]] - self._running[self._position[start]]

    @property
    def busy_fraction(self) -> float | None:
        """``device_total_ms / wall_ms`` (``None`` for an empty run); above 1 only with concurrent streams."""
        return self.device_total_ms / self.wall_ms if self.wall_ms > 0 else None


def attribute(events: Iterable[Mapping[str, Any]]) -> SpanTimes:
    """Device and host time of every ``torch_flops::<n>`` span among a Chrome trace's ``traceEvents``
    (microsecond ``ts``/``dur``, as ``torch.profiler`` exports them); see the module docstring."""
    spans: list[tuple[Any, float, float, int]] = []  # (thread, start, end, number)
    markers: list[tuple[float, int]] = []  # (ts, number)
    launches: dict[Any, tuple[Any, float]] = {}  # correlation -> (thread, ts)
    host_ops: dict[Any, tuple[Any, float]] = {}  # External id -> (thread, ts)
    device: list[tuple[Any, Any, float, float]] = []  # (correlation, External id, start, duration)
    for event in events:
        if event.get("ph") != "X":
            continue
        category = event.get("cat")
        if category in HOST_OP_CATEGORIES and "External id" in event.get("args", {}):
            host_ops[event["args"]["External id"]] = (_thread(event), float(event["ts"]))
        if category == SPAN_CATEGORY:
            name = event.get("name", "")
            if name.startswith(MARKER_PREFIX) and name[len(MARKER_PREFIX):].isdigit():
                markers.append((float(event["ts"]), int(name[len(MARKER_PREFIX):])))
            elif name.startswith(SPAN_PREFIX) and name[len(SPAN_PREFIX):].isdigit():
                start = float(event["ts"])
                spans.append((_thread(event), start, start + float(event.get("dur", 0.0)), int(name[len(SPAN_PREFIX):])))
        elif category in LAUNCH_CATEGORIES:
            correlation = event.get("args", {}).get("correlation")
            if correlation is not None:
                launches[correlation] = (_thread(event), float(event["ts"]))
        elif category in DEVICE_CATEGORIES:
            args = event.get("args", {})
            device.append((args.get("correlation"), args.get("External id"), float(event["ts"]),
                           float(event.get("dur", 0.0))))

    # each device activity joined to its launch, else to its host op: (thread, launch time, duration)
    joined: list[tuple[Any, float, float]] = []
    joins: Counter[str] = Counter()
    unlinked = 0.0
    for correlation, external, _, duration in device:
        if correlation in launches:
            how, launch = "launch", launches[correlation]
        elif external in host_ops:
            how, launch = "host op", host_ops[external]
        else:
            how, launch = "none", None
            unlinked += duration
        joins[how] += 1
        if launch is not None:
            joined.append((*launch, duration))

    # the device time each thread launched, by launch time, as prefix sums for range queries
    launched: dict[Any, list[tuple[float, float]]] = defaultdict(list)
    for thread, ts, duration in joined:
        launched[thread].append((ts, duration))
    times: dict[Any, list[float]] = {}
    sums: dict[Any, list[float]] = {}
    for thread, pairs in launched.items():
        pairs.sort()
        times[thread] = [ts for ts, _ in pairs]
        running = [0.0]
        for _, duration in pairs:
            running.append(running[-1] + duration)
        sums[thread] = running

    device_ms: dict[int, float] = {}
    host_ms: dict[int, float] = {}
    for thread, start, end, number in spans:
        host_ms[number] = host_ms.get(number, 0.0) + (end - start) / 1000.0
        inside = 0.0
        if thread in times:
            lo, hi = bisect.bisect_left(times[thread], start), bisect.bisect_right(times[thread], end)
            inside = sums[thread][hi] - sums[thread][lo]
        device_ms[number] = device_ms.get(number, 0.0) + inside / 1000.0

    # markers: what any thread launched from one marker until the next (the backward's owner switches)
    markers.sort()
    marker_times = [ts for ts, _ in markers]
    marker_device: dict[int, float] = {number: 0.0 for _, number in markers}
    for _, ts, duration in joined:
        index = bisect.bisect_right(marker_times, ts) - 1
        if index >= 0:
            marker_device[markers[index][1]] += duration / 1000.0

    device_total = sum(duration for *_, duration in device)
    if spans or markers:
        first = min([ts for ts, _ in markers] + [start for _, start, _, _ in spans] + [start for *_, start, _ in device])
        last = max([ts for ts, _ in markers] + [end for _, _, end, _ in spans]
                   + [start + duration for *_, start, duration in device])
        wall = last - first
    else:
        wall = 0.0
    return SpanTimes(device_ms, host_ms, device_total / 1000.0, wall / 1000.0,
                     {number: ts / 1000.0 for ts, number in markers}, marker_device, unlinked / 1000.0, joins)


def read_trace(path: str | os.PathLike[str]) -> SpanTimes:
    """:func:`attribute` over a Chrome trace file (``prof.export_chrome_trace(path)``)."""
    with open(path, encoding="utf-8") as stream:
        document = json.load(stream)
    events = document["traceEvents"] if isinstance(document, dict) else document
    return attribute(events)


def profiler_active() -> bool:
    """Whether a ``torch.profiler`` session is already recording on this thread (starting another
    would silently end it). Read from ``torch.autograd._profiler_enabled``, the one private name this
    module uses; without it, ``False`` (a profiler is then started as if none were active)."""
    enabled = getattr(torch.autograd, "_profiler_enabled", None)
    return bool(enabled()) if callable(enabled) else False


def _thread(event: Mapping[str, Any]) -> tuple[Any, Any]:
    return event.get("pid"), event.get("tid")


@dataclass(frozen=True)
class _Span:
    """A profiled span: its range's number and, on CUDA, the pair of CUDA events around it."""

    number: int
    events: Any = None


class ProfiledProbe(Probe):
    """A :class:`~torch_flops.measure.Probe` whose spans are profiler ranges: a span's time is its
    device time from the profiler's records and :meth:`host_ms` its host time (see the module
    docstring). When the profiler cannot start (another profiler is active), the run falls back to the
    plain probe's marks, and when its trace holds no device activity at all (no CUPTI), each span's
    time is the pair of CUDA events also recorded around it; :attr:`note` says so either way."""

    def __init__(self, device: torch.device, mem_func_name: str) -> None:
        super().__init__(device, mem_func_name)
        self.note: str | None = None
        self.runs: list[SpanTimes] = []  # one per profiled run with spans (forwards), for the busy fraction
        self._profiler: Any = None
        self._failed = False
        self._next = 0
        self._times: SpanTimes | None = None

    def start(self) -> None:
        super().start()
        self._times, self._next, self._failed = None, 0, False

    def _start_profiler(self) -> None:
        """Start the profiler at a run's first span (an untimed run opens none, so starts nothing)."""
        if profiler_active():
            self._fall_back("another profiler is recording, and starting one would end its session")
            return
        activities = [torch.profiler.ProfilerActivity.CPU]
        if self.on_cuda:
            activities.append(torch.profiler.ProfilerActivity.CUDA)
        profiler = torch.profiler.profile(activities=activities)
        try:
            profiler.__enter__()
        except Exception as error:  # CUPTI unavailable, ...
            self._fall_back(f"{type(error).__name__}: {error}")
            return
        self._profiler = profiler

    def _fall_back(self, why: str) -> None:
        self._failed = True
        spans = "CUDA-event spans, which include host launch gaps" if self.on_cuda else "perf_counter spans"
        self.note = f"the profiler was not used ({why}); times are {spans}"

    def _profiling(self) -> bool:
        """Whether the profiler records this run (started at its first span or marker)."""
        if self._profiler is None and not self._failed:
            self._start_profiler()
        return self._profiler is not None

    def begin(self) -> Any:
        if not self._profiling():
            return super().begin()
        number = self._next
        self._next += 1
        backup = super().begin() if self.on_cuda else None  # CUDA events, should the trace hold no kernel
        scope = torch.profiler.record_function(f"{SPAN_PREFIX}{number}")
        scope.__enter__()
        return number, scope, backup

    def end(self, token: Any) -> Any:
        if self._profiler is None:
            return super().end(token)
        number, scope, backup = token
        scope.__exit__(None, None, None)
        return _Span(number, None if backup is None else super().end(backup))

    def finish(self) -> None:
        super().finish()
        profiler, self._profiler = self._profiler, None
        if profiler is None:
            return
        profiler.__exit__(None, None, None)
        handle, path = tempfile.mkstemp(suffix=".json", prefix="torch_flops_trace_")
        os.close(handle)
        try:
            profiler.export_chrome_trace(path)
            self._times = read_trace(path)
        finally:
            os.remove(path)
        if self._times.host_ms:  # a run with spans (a forward), not markers only (a backward)
            self.runs.append(self._times)
        if self.on_cuda and self._times.device_total_ms == 0 and self._times.device_ms:
            self.note = ("the profiler recorded no device activity (CUPTI unavailable?); times are CUDA-event spans, "
                         "which include host launch gaps")
        elif self.note is None and self._times.unlinked_ms > UNLINKED_NOTE_SHARE * self._times.device_total_ms:
            self.note = (f"{self._times.unlinked_ms:.3f} ms of the run's {self._times.device_total_ms:.3f} ms of device "
                         "time matched no launch or host op in the profiler's trace; it counts in the total, in no node")

    def abandon(self) -> None:
        """Stop the profiler a failed run left recording, reading nothing (a finished run has none)."""
        profiler, self._profiler = self._profiler, None
        if profiler is not None:
            profiler.__exit__(None, None, None)

    def marker(self) -> Any:
        """A zero-length range ``torch_flops::mark::<n>``: on CUDA, :meth:`between_ms` of two markers is the
        device time of what any thread launched between them (the backward's autograd thread)."""
        if not self._profiling():
            return super().marker()
        number = self._next
        self._next += 1
        with torch.profiler.record_function(f"{MARKER_PREFIX}{number}"):
            pass
        return number

    def between_ms(self, start: Any, end: Any) -> float:
        """On CUDA the device time launched between two markers; on CPU the time between them."""
        if isinstance(start, int) and isinstance(end, int) and self._times is not None:
            if self.on_cuda:
                found = self._times.between_markers_ms(start, end) if self._times.device_total_ms else None
                if found is None:
                    self.note = ("the profiler's trace lacks device activity or a marker of the backward; "
                                 "its times count 0")
                return found or 0.0
            return self._times.markers[end] - self._times.markers[start]
        return super().between_ms(start, end)

    def elapsed_ms(self, span: Any) -> float:
        """The span's device time (on CPU, where ops run as they are dispatched, its host time; on CUDA
        its CUDA-event span when the trace holds no device activity at all)."""
        if not isinstance(span, _Span):
            return super().elapsed_ms(span)
        times = self._times
        if times is None or not self.on_cuda:
            return times.host_ms.get(span.number, 0.0) if times is not None else 0.0
        if times.device_total_ms == 0 and span.events is not None:
            return super().elapsed_ms(span.events)
        return times.device_ms.get(span.number, 0.0)

    def host_ms(self, span: Any) -> float | None:
        if isinstance(span, _Span) and self._times is not None:
            return self._times.host_ms.get(span.number, 0.0)
        return None


def probe_for(device: torch.device, mem_func_name: str) -> Probe:
    """The probe of a timed run on ``device``: the profiler's on CUDA, ``perf_counter`` elsewhere."""
    if device.type == "cuda":
        return ProfiledProbe(device, mem_func_name)
    return Probe(device, mem_func_name)
