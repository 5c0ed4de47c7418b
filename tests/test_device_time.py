"""Device time per span from the profiler's records (torch_flops.device_time).

``traces/cuda_spans.json`` is a small trace in the Chrome-trace format ``torch.profiler`` exports on
CUDA (microsecond ``ts``/``dur``; launches in the ``cuda_runtime`` / ``cuda_driver`` categories and
kernels, memcpys and memsets joined to them by ``args.correlation``), written by hand so that every
expected sum below can be checked by eye. Its layout, main thread 100, autograd thread 200:

- a kernel launched at 900, before any span (8 us);
- span 0 [1000, 1100]: a kernel (40 us), a memset (2 us) and a kernel (6 us) whose launch the trace
  lacks, joined by its ``External id`` to the cpu_op (starting at 1005) that launched it;
- span 1 [1150, 1350], a leaf, holding span 2 [1160, 1210] (a kernel through the driver API, 30 us),
  span 3 [1220, 1280] (a kernel 25 us, a memcpy 10 us) and, between its calls, a kernel (5 us);
- a stream synchronisation at 1400 (a launch-category event with no device activity);
- a kernel (4 us) matching no launch and no host op: in the total, in no span;
- span 4 [1500, 1520] on thread 200 with a kernel (7 us), and a kernel launched at 1505 on thread 100
  (3 us, ending at 1523), inside span 4's time but not its thread;
- noise: metadata and flow events, a cpu_op, another user annotation, and a GPU-side annotation
  named like span 0.
"""

from __future__ import annotations

import json
import pathlib
import time

import pytest
import torch

from torch_flops import device_time
from torch_flops.device_time import ProfiledProbe, SpanTimes, attribute, read_trace

TRACE = pathlib.Path(__file__).parent / "traces" / "cuda_spans.json"


def test_each_span_gets_the_device_time_of_what_it_launched() -> None:
    times = read_trace(TRACE)
    assert times.device_ms == pytest.approx({
        0: (40 + 2 + 6) / 1000,  # kernel + memset + the kernel found by its host op
        1: (30 + 25 + 10 + 5) / 1000,  # the leaf: its calls' and its own
        2: 30 / 1000,  # launched through the driver API
        3: (25 + 10) / 1000,  # kernel + memcpy
        4: 7 / 1000,  # its own thread's launch only
    })


def test_each_span_gets_its_own_duration_as_host_time() -> None:
    assert read_trace(TRACE).host_ms == pytest.approx({0: 0.100, 1: 0.200, 2: 0.050, 3: 0.060, 4: 0.020})


def test_busy_fraction_is_all_device_time_over_the_run() -> None:
    times = read_trace(TRACE)
    device = 8 + 40 + 6 + 2 + 30 + 25 + 10 + 5 + 4 + 7 + 3  # every kernel, memset and memcpy
    wall = 1523 - 905  # the first device activity to the last one's end
    assert times.device_total_ms == pytest.approx(device / 1000)
    assert times.unlinked_ms == pytest.approx(4 / 1000)
    # launched before any span 1, in span 0 2, in spans 1-3 4, at span 4's time 2 (one on each thread)
    assert times.joins == {"launch": 1 + 2 + 4 + 2, "host op": 1, "none": 1}
    assert times.wall_ms == pytest.approx(wall / 1000)
    assert times.busy_fraction == pytest.approx(device / wall)


def test_a_span_seen_twice_adds_up_and_an_empty_trace_has_no_fraction() -> None:
    events = json.loads(TRACE.read_text())["traceEvents"]
    again = [dict(e, ts=e["ts"] + 10_000) for e in events if e.get("cat") == "user_annotation" and e["name"] == "torch_flops::4"]
    again += [dict(e, ts=e["ts"] + 10_000, args=dict(e["args"], correlation=118)) for e in events
              if e.get("args", {}).get("correlation") == 18 and e.get("ph") == "X"]
    times = attribute(events + again)
    assert times.device_ms[4] == pytest.approx(2 * 7 / 1000)
    assert times.host_ms[4] == pytest.approx(2 * 20 / 1000)
    assert attribute([]) == SpanTimes({}, {}, 0.0, 0.0) and attribute([]).busy_fraction is None


def test_a_run_whose_trace_holds_unlinked_device_time_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    """A profiled run reading the fixture's trace: 4 of its 140 us of device time matched nothing (2.9 %,
    above the 1 % that earns a note), and the note gives both figures."""
    monkeypatch.setattr(device_time, "read_trace", lambda path: attribute(json.loads(TRACE.read_text())["traceEvents"]))
    probe = ProfiledProbe(torch.device("cpu"), "max_memory_allocated")
    probe.start()
    probe.end(probe.begin())
    probe.finish()
    assert probe.note is not None and "0.004 ms of the run's 0.140 ms" in probe.note


def test_a_profiled_cpu_run_gives_each_span_its_range() -> None:
    """The live path (start, nested spans, export, read back) on CPU, where a span's time is its host
    time: the outer span holds the inner one, and both hold the work they timed."""
    probe = ProfiledProbe(torch.device("cpu"), "max_memory_allocated")
    x = torch.randn(128, 128)
    probe.start()
    before = time.perf_counter()
    outer = probe.begin()
    inner = probe.begin()
    for _ in range(20):
        x = torch.tanh(x @ x)
    inner_span = probe.end(inner)
    outer_span = probe.end(outer)
    wall_ms = (time.perf_counter() - before) * 1000
    probe.finish()
    assert probe.note is None and len(probe.runs) == 1
    inner_ms, outer_ms = probe.elapsed_ms(inner_span), probe.elapsed_ms(outer_span)
    assert 0 < inner_ms <= outer_ms <= wall_ms
    assert probe.host_ms(outer_span) == outer_ms


def test_an_untimed_run_starts_no_profiler() -> None:
    probe = ProfiledProbe(torch.device("cpu"), "max_memory_allocated")
    probe.start()
    probe.finish()
    assert probe.runs == [] and not device_time.profiler_active()


def test_a_profiler_already_recording_is_left_alone_and_the_times_say_so() -> None:
    """Starting a second profiler would end the user's session: the run falls back to plain spans, the
    note says why, and the user's profiler still records the run's ops."""
    probe = ProfiledProbe(torch.device("cpu"), "max_memory_allocated")
    x = torch.randn(64, 64)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as users:
        probe.start()
        span = probe.end(probe.begin())
        torch.mm(x, x)
        probe.finish()
    assert probe.note is not None and "another profiler" in probe.note and "perf_counter" in probe.note
    assert probe.elapsed_ms(span) >= 0 and probe.host_ms(span) is None and probe.runs == []
    assert any(event.name == "aten::mm" for event in users.events())


def test_without_the_private_check_a_profiler_counts_as_inactive(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(torch.autograd, "_profiler_enabled", raising=False)
    assert device_time.profiler_active() is False
    probe = ProfiledProbe(torch.device("cpu"), "max_memory_allocated")
    probe.start()
    span = probe.end(probe.begin())
    probe.finish()
    assert probe.note is None and len(probe.runs) == 1 and probe.host_ms(span) is not None


class _Leafy(torch.nn.Module):
    """A traced linear, then a leaf (kept whole) making two calls."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(32, 32)
        self.block = torch.nn.Sequential(torch.nn.Linear(32, 32), torch.nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(self.fc(x))


def test_a_profiled_run_times_nodes_and_calls_inside_leaves(monkeypatch: pytest.MonkeyPatch) -> None:
    """The probe CUDA runs get, put on a CPU run: every timed node and every call inside the leaf gets a
    host time, its time equals it (on CPU ops run as they are dispatched), medians over repeats, and
    the node table shows the column."""
    from torch_flops import TorchFLOPsByFX
    from torch_flops import engine

    monkeypatch.setattr(engine.device_time, "probe_for", lambda device, name: ProfiledProbe(device, name))
    counter = TorchFLOPsByFX(_Leafy(), leaf_modules=["block"])
    counter.propagate(torch.randn(4, 32), warmup=1, repeat=3)
    ops = [r for r in counter.records if r.op not in ("placeholder", "output")]
    assert [r.target for r in ops] == ["fc", "torch.nn.functional.linear", "torch.nn.functional.relu"]
    assert all(r.host_time_ms is not None and r.host_time_ms > 0 and r.time_ms > 0 for r in ops)
    assert counter.timing_note is None and counter.gpu_busy_fraction is None  # no device activity on CPU
    assert "Host time (ms)" in counter.report("nodes", "csv").splitlines()[0]
    # modules and op types sum their records' host times (the leaf's two calls in "block")
    modules = {row.path: row.host_time_ms for row in counter.by_module()}
    assert modules["block"] == pytest.approx(ops[1].host_time_ms + ops[2].host_time_ms)
    assert modules[""] == pytest.approx(sum(r.host_time_ms for r in ops))
    op_types = {row.op_type: row.host_time_ms for row in counter.by_op_type()}
    assert op_types["torch.nn.functional.relu"] == pytest.approx(ops[2].host_time_ms)
    for view in ("modules", "ops"):
        assert "Host time (ms)" in counter.report(view, "csv").splitlines()[0]


def _marker(number: int, ts: float, tid: int) -> dict:
    return {"ph": "X", "cat": "user_annotation", "name": f"torch_flops::mark::{number}", "pid": 1, "tid": tid,
            "ts": ts, "dur": 0.5, "args": {}}


def _launched(correlation: int, ts: float, tid: int, duration: float) -> list[dict]:
    return [{"ph": "X", "cat": "cuda_runtime", "name": "cudaLaunchKernel", "pid": 1, "tid": tid, "ts": ts, "dur": 3,
             "args": {"correlation": correlation}},
            {"ph": "X", "cat": "kernel", "name": "k", "pid": 0, "tid": 7, "ts": ts + 50, "dur": duration,
             "args": {"correlation": correlation}}]


def test_markers_split_what_any_thread_launched_between_them() -> None:
    """The backward's owner switches: marker 0 on the main thread, 1 to 3 on autograd's thread (200);
    a launch before the first marker and one after the last count in no stretch."""
    events = [_marker(0, 100, 100), _marker(1, 150, 200), _marker(2, 300, 200), _marker(3, 400, 100)]
    events += _launched(1, 90, 100, 4) + _launched(2, 160, 200, 20) + _launched(3, 250, 200, 5)
    events += _launched(4, 310, 200, 7) + _launched(5, 410, 100, 9)
    times = attribute(events)
    assert times.between_markers_ms(0, 1) == 0.0
    assert times.between_markers_ms(1, 2) == pytest.approx((20 + 5) / 1000)
    assert times.between_markers_ms(2, 3) == pytest.approx(7 / 1000)
    assert times.between_markers_ms(0, 3) == pytest.approx((20 + 5 + 7) / 1000)
    assert times.device_ms == {} and times.markers[3] - times.markers[0] == pytest.approx(0.300)


def test_a_profiled_backward_gives_each_op_its_stretch(monkeypatch: pytest.MonkeyPatch) -> None:
    """The backward's clock with the probe CUDA runs get, on CPU (markers a stretch apart in time): every
    op with a backward gets a positive time and the times add up to no more than the wall time."""
    from torch_flops import TorchFLOPsByFX
    from torch_flops import engine

    monkeypatch.setattr(engine.device_time, "probe_for", lambda device, name: ProfiledProbe(device, name))
    model = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 16))
    counter = TorchFLOPsByFX(model)
    before = time.perf_counter()
    counter.propagate(torch.randn(8, 64), backward=True)
    wall_ms = (time.perf_counter() - before) * 1000
    times = {r.name: r.backward_time_ms for r in counter.records}
    assert all(times[name] > 0 for name in ("_0", "_1", "_2")) and times["output"] == 0.0
    assert sum(times.values()) + counter.backward_unattributed_ms <= wall_ms
    assert counter.timing_note is None


@pytest.mark.cuda
def test_cuda_forward_and_backward_get_device_times(cuda_device: torch.device) -> None:
    """On CUDA: every forward op has a device time and a host time, every op with a backward a backward
    device time, and the profiler left no session behind."""
    from torch_flops import TorchFLOPsByFX

    model = torch.nn.Sequential(torch.nn.Linear(256, 256), torch.nn.ReLU(), torch.nn.Linear(256, 64)).to(cuda_device)
    counter = TorchFLOPsByFX(model)
    counter.propagate(torch.randn(64, 256, device=cuda_device), backward=True)
    ops = [r for r in counter.records if r.op == "call_module"]
    assert all(r.time_ms > 0 and r.host_time_ms > 0 and r.backward_time_ms > 0 for r in ops)
    assert counter.timing_note is None and not device_time.profiler_active()


class _Failing(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x) @ torch.ones(3, 3)  # (2, 4) @ (3, 3): the shapes do not match


@pytest.mark.parametrize("backward", [False, True])
def test_a_failed_run_leaves_no_profiler_recording(monkeypatch: pytest.MonkeyPatch, backward: bool) -> None:
    """A node that raises midway through a profiled run: the error reaches the caller and the profiler
    is stopped, so the next run (or the user's own profiler) can start one."""
    from torch_flops import TorchFLOPsByFX
    from torch_flops import engine
    from torch_flops.planning import NodeExecutionError

    monkeypatch.setattr(engine.device_time, "probe_for", lambda device, name: ProfiledProbe(device, name))
    counter = TorchFLOPsByFX(_Failing())
    with pytest.raises(NodeExecutionError):
        counter.propagate(torch.randn(2, 4), backward=backward)
    assert not device_time.profiler_active()
