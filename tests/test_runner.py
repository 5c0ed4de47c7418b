"""propagate(timing=False): the FLOPs-only path gives the same records as the interpreter;
warm-up and repeated timing."""

from __future__ import annotations

import collections
import dataclasses
from typing import Any

import pytest
import torch

from models import HasBranchy, SimpleModel, SmallConvNet, TwoInputs
from torch_flops import NodeExecutionError, TorchFLOPsByFX
from torch_flops.planning import NodePlan
from torch_flops.records import NodeRecord, Status, check_record_fields, frozen_from_dict, record_template

torchvision = pytest.importorskip("torchvision")


def summary(counter: TorchFLOPsByFX) -> list[tuple]:
    return [(r.name, r.op, r.target, r.module_path, r.status, r.flops, r.macs, r.input_shapes, r.output_shapes,
             r.unsupported_ops, r.aten_costs, r.leaf_node) for r in counter.records]


@pytest.mark.parametrize("model, inputs", [
    (SmallConvNet(), (torch.randn(2, 3, 8, 8),)),
    (SimpleModel(add_one=True), (torch.randn(1, 5),)),
    (TwoInputs(), (torch.randn(2, 3), torch.randn(2, 3))),
    (HasBranchy(), (torch.rand(3, 4) + 0.1,)),
    (torchvision.models.resnet18(), (torch.randn(1, 3, 64, 64),)),
], ids=["small_convnet", "simple_add_one", "two_inputs", "leaf_fallback", "resnet18"])
def test_flops_only_records_equal_the_interpreters(model: torch.nn.Module, inputs: tuple) -> None:
    counter = TorchFLOPsByFX(model)
    expected_out = counter.propagate(*inputs)
    interpreted = summary(counter)
    out = counter.propagate(*inputs, timing=False)
    torch.testing.assert_close(out, expected_out)
    assert summary(counter) == interpreted and all(r.time_ms is None for r in counter.records)
    first = counter.records
    counter.propagate(*inputs, timing=False)  # a repeat reuses the (immutable) records
    assert summary(counter) == interpreted and counter.records == first
    assert all(r.time_ms is None for r in counter.records)
    with pytest.raises(RuntimeError, match="no memory analysis in a FLOPs-only run"):
        counter.activation_memory()


def test_flops_only_errors_name_the_node() -> None:
    counter = TorchFLOPsByFX(SimpleModel())
    counter.propagate(torch.randn(1, 5), timing=False)
    with pytest.raises(NodeExecutionError, match=r"node 'layer' .* shapes \[\[1, 7\]\]"):
        counter.propagate(torch.randn(1, 7), timing=False)


def test_repeated_timing_reports_medians_and_a_plain_forward(capsys: pytest.CaptureFixture[str]) -> None:
    counter = TorchFLOPsByFX(SmallConvNet())
    counter.propagate(torch.randn(2, 3, 8, 8), warmup=1, repeat=3)
    ops = [r for r in counter.records if r.op == "call_module"]
    assert all(0 <= r.time_min_ms <= r.time_ms for r in ops)
    assert counter.plain_forward_ms is not None and counter.plain_forward_ms > 0
    counter.print_total_time()
    assert "sum of per-node medians; a plain forward takes" in capsys.readouterr().out
    with pytest.raises(ValueError, match="repeat must be >= 1, got 0"):
        counter.propagate(torch.randn(2, 3, 8, 8), repeat=0)


_CALLS: list[str] = []


class _Outer(torch.nn.Module):
    """Records a plain forward in ``_CALLS``: a graph run never executes this ``forward`` (it was traced)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _CALLS.append("plain")
        return self.fc(x)


def test_plain_forwards_are_interleaved_with_the_timed_runs() -> None:
    """The caller's run first, then the warm-ups and one untimed plain forward, then each timed graph
    run followed by a timed plain forward: the graph runs call the leaf only, a plain forward runs the
    model's ``forward`` and then the leaf."""
    calls = _CALLS
    model = _Outer()
    model.fc.register_forward_pre_hook(lambda module, args: calls.append("leaf"))
    counter = TorchFLOPsByFX(model)
    calls.clear()  # the trace ran forward once
    counter.propagate(torch.randn(2, 4), warmup=1, repeat=3)
    graph_run, plain_forward = ["leaf"], ["plain", "leaf"]
    assert calls == graph_run * 2 + plain_forward + (graph_run + plain_forward) * 3
    calls.clear()
    counter.propagate(torch.randn(2, 4), repeat=1)  # one run: no plain forward to compare with
    assert calls == graph_run and counter.plain_forward_ms is None


class Unpacking(torch.nn.Module):
    """Containers of nodes as arguments, keyword arguments, a parameter read, a starred unpack and an
    unused value: every way a step finds its arguments."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.full((4,), 2.0))
        self.fc = torch.nn.Linear(4, 4)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a, b = x.chunk(2, dim=0)  # a tuple output, unpacked
        _unused = torch.exp(y)
        joined = torch.cat([a, b, y], dim=0)  # a list of nodes
        scaled = torch.mul(joined, other=self.scale)  # a keyword argument, a parameter
        return self.fc(scaled).sum(dim=-1, keepdim=True), scaled


@pytest.mark.parametrize("timing", [False, True])
def test_every_argument_form_runs_as_the_model_does(timing: bool) -> None:
    model = Unpacking()
    x, y = torch.randn(4, 4), torch.randn(3, 4)
    counter = TorchFLOPsByFX(model)
    out = counter.propagate(x, y, timing=timing)
    expected = model(x, y)
    torch.testing.assert_close(out, expected)
    by_name = {r.name: r for r in counter.records}
    assert by_name["cat"].input_shapes == ((2, 4), (2, 4), (3, 4)) and by_name["cat"].output_shapes == ((7, 4),)
    assert by_name["mul"].flops == 7 * 4  # x * scale, broadcast: one multiply per output element
    assert by_name["exp"].flops == 3 * 4  # the unused value is still run and counted
    assert by_name["fc"].flops == 7 * 4 * (2 * 4 - 1) + 7 * 4


@pytest.mark.parametrize("timing", [False, True])
def test_values_are_freed_after_their_last_use(timing: bool) -> None:
    """With the cyclic collector off, an activation must die as soon as its last user has run: the
    runner keeps no reference to it (values, argument lists, the tensors it counts bytes of)."""
    import gc
    import weakref

    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 8), torch.nn.Linear(8, 8))
    seen: dict[str, weakref.ref] = {}
    alive_when_last_ran: list[bool] = []
    model[0].register_forward_hook(lambda m, i, o: seen.__setitem__("first", weakref.ref(o)))
    model[3].register_forward_hook(lambda m, i, o: alive_when_last_ran.append(seen["first"]() is not None))
    counter = TorchFLOPsByFX(model)
    gc.disable()
    try:
        counter.propagate(torch.randn(2, 8), timing=timing)
    finally:
        gc.enable()
    assert alive_when_last_ran == [False]  # layer 0's output died once the ReLU (its only user) ran


def test_cpu_spans_are_perf_counter_seconds() -> None:
    from torch_flops.measure import Probe

    probe = Probe(torch.device("cpu"), "max_memory_allocated")
    start = probe.begin()
    total = sum(range(10_000))
    span = probe.end(start)
    probe.finish()
    assert isinstance(start, float) and total > 0 and 0.0 < probe.elapsed_ms(span) < 1000.0
    assert probe.host_ms(span) is None  # a plain span has one time


@pytest.mark.cuda
def test_cuda_nodes_are_timed_from_the_profiler(cuda_device: torch.device) -> None:
    """On CUDA each node's time is the device time of the kernels it launched (the profiler's records,
    torch_flops.device_time) and its host time is apart: every op node gets a positive device time, a
    host time, and the memory columns are filled; the GPU's busy fraction is known. A view (flatten of a
    contiguous tensor) launches no kernel: 0 device time."""
    model = SmallConvNet().to(cuda_device)
    counter = TorchFLOPsByFX(model)
    counter.propagate(torch.randn(2, 3, 8, 8, device=cuda_device), warmup=1, repeat=3)
    ops = [r for r in counter.records if r.op in ("call_module", "call_function", "call_method")]
    launched = [r for r in ops if r.status is not Status.ZERO]
    assert launched and all(r.time_ms is not None and r.time_ms > 0 for r in launched)
    assert all(r.time_ms is not None and r.time_ms >= 0 for r in ops)
    assert all(r.host_time_ms is not None and r.host_time_ms > 0 for r in ops)
    assert all(r.mem_before_bytes is not None and r.mem_after_bytes is not None for r in ops)
    assert counter.plain_forward_ms is not None and counter.plain_forward_ms > 0
    assert counter.timing_note is None and 0 < counter.gpu_busy_fraction <= 1.05


def test_records_from_templates_equal_the_dataclass_constructor() -> None:
    """The runner's fast construction (a template of defaults and fixed fields, copied, completed and
    taken as the record's ``__dict__``) makes the record ``NodeRecord(**fields)`` makes; the field
    checks refuse a missing or unknown field by name."""
    fields = dict(name="conv1", op="call_module", target="conv1", module_path="", module_class="ResNet",
                  status=Status.RULE, flops=10, macs=5, input_shapes=((1, 3, 8, 8),), output_shapes=((1, 4, 8, 8),),
                  read_bytes=12)
    fixed = ("name", "op", "target", "module_path", "module_class")
    state = record_template({key: fields[key] for key in fixed})
    state.update({key: value for key, value in fields.items() if key not in fixed})
    check_record_fields(state)
    fast, slow = frozen_from_dict(NodeRecord, state), NodeRecord(**fields)
    assert fast == slow and repr(fast) == repr(slow) and hash(fast) == hash(slow)
    assert fast.time_ms is None and fast.unsupported_ops == () and fast.read_bytes == 12
    with pytest.raises(dataclasses.FrozenInstanceError):
        fast.flops = 0  # type: ignore[misc]
    with pytest.raises(TypeError, match=r"missing fields \['output_shapes'\]"):
        check_record_fields({k: v for k, v in state.items() if k != "output_shapes"})
    with pytest.raises(TypeError, match=r"unknown fields \['flop'\]"):
        check_record_fields(state | {"flop": 1})
    with pytest.raises(TypeError, match=r"unknown fields \['nmae'\]"):
        record_template({"nmae": "conv1"})


@pytest.mark.parametrize("timing", [False, True])
def test_run_records_hold_exactly_the_record_fields(timing: bool) -> None:
    """Records made from the runner's per-node templates are the dataclass's records: every field,
    nothing else, equal to ``NodeRecord(**fields)``, frozen; a fallback node's details are its own."""
    counter = TorchFLOPsByFX(HasBranchy())  # its block, data-dependent, runs under the fallback
    counter.propagate(torch.randn(2, 4), timing=timing)
    names = {field.name for field in dataclasses.fields(NodeRecord)}
    for record in counter.records:
        assert vars(record).keys() == names
        assert record == NodeRecord(**vars(record))
        with pytest.raises(dataclasses.FrozenInstanceError):
            record.flops = 0  # type: ignore[misc]
    assert all((r.time_ms is not None) == timing for r in counter.records)
    block = [r for r in counter.records if r.leaf_node == "block"]  # the calls the leaf made, each a record
    assert [(r.name, r.target, r.module_path, r.flops) for r in block[:2]] == [
        ("block.sum", "sum", "block", 2 * 4 - 1), ("block.gt", "gt", "block", 1)
    ]


def test_plans_hold_exactly_the_plan_fields() -> None:
    """``plan_graph`` makes its plans without the dataclass's ``__init__``: each is still the plan
    ``NodePlan(**fields)`` makes, with every field, and frozen."""
    counter = TorchFLOPsByFX(SmallConvNet())
    names = {field.name for field in dataclasses.fields(NodePlan)}
    assert counter._plans
    for plan in counter._plans.values():
        assert vars(plan).keys() == names and plan == NodePlan(**vars(plan))
        with pytest.raises(dataclasses.FrozenInstanceError):
            plan.ignored = True  # type: ignore[misc]
    conv = next(plan for node, plan in counter._plans.items() if node.target == "conv")
    assert (conv.target, conv.module_qualname, conv.module_class, conv.ignored) == ("conv", "conv", "Conv2d", False)


def scaled_by_window(x: torch.Tensor, window: list[int]) -> torch.Tensor:
    """Writes to its list argument, as torchvision's ``_get_window_and_shift_size`` does (Swin3D)."""
    window[0] = min(window[0], x.shape[-1])
    return x * window[0]


torch.fx.wrap("scaled_by_window")


class WritesItsListArgument(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return scaled_by_window(x, [8, 7])


@pytest.mark.parametrize("timing", [True, False])
def test_a_call_that_writes_to_a_list_argument_gets_a_fresh_plain_list_every_run(timing: bool) -> None:
    """The graph's code builds ``[8, 7]`` anew at each call; the runner passes a fresh list too, never FX's
    immutable one (which refuses the write) nor one a previous run changed."""
    model, counter = WritesItsListArgument(), TorchFLOPsByFX(WritesItsListArgument())
    for x in (torch.ones(2, 3), torch.ones(2, 16)):
        assert torch.equal(counter.propagate(x, timing=timing), model(x))  # 3 * x, then 8 * x
    assert counter.total_flops == 2 * 16  # one multiply per element


@dataclasses.dataclass
class Output(collections.OrderedDict):
    """A dict subclass and a dataclass at once, as transformers' ``ModelOutput`` and diffusers'
    ``BaseOutput`` are."""

    sample: torch.Tensor

    def __post_init__(self) -> None:
        self["sample"] = self.sample


class ReturnsAnOutputClass(torch.nn.Module):
    def __init__(self, kind: type) -> None:
        super().__init__()
        self.layer, self.kind = torch.nn.Linear(4, 3), kind

    def forward(self, x: torch.Tensor) -> Any:
        y = self.layer(x)
        return Output(sample=y) if self.kind is Output else self.kind(sample=y)


@pytest.mark.parametrize("kind", [Output, collections.OrderedDict, dict])
@pytest.mark.parametrize("run", ["flops only", "timed", "shape only"])
def test_the_output_is_of_the_class_forward_returned(kind: type, run: str) -> None:
    """FX lowers a returned dict subclass to a plain dict; the counter returns what ``model(x)`` does."""
    model, x = ReturnsAnOutputClass(kind), torch.randn(2, 4)
    counter = TorchFLOPsByFX(model)
    if run == "shape only":
        output = counter.propagate_shapes(x)
        assert output["sample"].shape == (2, 3) and output["sample"].is_meta
    else:
        output = counter.propagate(x, timing=run == "timed")
        assert torch.equal(output["sample"], model(x)["sample"])
    assert type(output) is kind
    assert counter.total_flops == 2 * 3 * (2 * 4 - 1) + 2 * 3  # Linear(4, 3) on (2, 4): 48
