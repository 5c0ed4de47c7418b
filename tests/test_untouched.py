"""Counting never touches the user's model, data or results (each case is a way it once did).

- construction: a ``forward`` that writes to its module while traced leaves no proxy behind; such a
  module runs whole, so that its writes happen as in ``model(x)``;
- hooks (the root's included) run as in ``model(x)``, never while tracing;
- a graph is reused only for plain values it was specialised on and while the model is unchanged;
- warm-up and repeats leave the inputs, module state and random generators of exactly one forward;
- tensors made in ``forward`` from sizes alone, and work on buffers, are counted and re-run;
- a class's rule prices only a module that runs that class's own ``forward``.
"""

from __future__ import annotations

import copy
import io
import warnings

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
import torch
from torch import nn
from torch.nn.utils import parametrize

from torch_flops import TorchFLOPsByFX, count_aten, profile

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


# -- forward writes to its module ---------------------------------------------------------------------
class RunningMean(nn.Module):
    """Reassigns a buffer in ``forward``: a trace would leave a proxy there."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.register_buffer("running", torch.zeros(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.running = self.running * 0.9 + x.mean(0) * 0.1
        return self.fc(x)


class Writers(nn.Module):
    """A traced root whose child writes to its own state in every way: an attribute, a list, a buffer."""

    def __init__(self) -> None:
        super().__init__()
        self.stats = RecordsStats()
        self.fc = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.stats(x))


class RecordsStats(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("calls", torch.zeros(()))
        self.seen: list[int] = []
        self.last: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.shape[0])
        self.last = x.sum()
        self.calls.add_(1)
        return x * 2


def test_construction_leaves_no_proxy_and_the_writer_runs_whole() -> None:
    model = RunningMean()
    running, x = model.running, torch.randn(2, 4)
    counter = TorchFLOPsByFX(model)
    assert model.running is running and type(model.running) is torch.Tensor
    torch.save(model.state_dict(), io.BytesIO())  # a proxy could not be saved
    assert "running" in counter.leaf_modules[""]
    reference = copy.deepcopy(model)
    expected = reference(x)
    torch.testing.assert_close(counter.propagate(x), expected)
    torch.testing.assert_close(model.running, reference.running)  # the write happened, once
    # running * 0.9: 4, x.mean(0) over 2 rows: 4 * 2, * 0.1: 4, +: 4; Linear(4, 4) on (2, 4): 2*4*(2*4-1) + 8
    assert counter.total_flops == 4 + 4 * 2 + 4 + 4 + 2 * 4 * 7 + 8


def test_a_child_that_writes_is_kept_whole_and_the_rest_traced() -> None:
    model, x = Writers(), torch.randn(3, 4)
    counter = TorchFLOPsByFX(model)
    stats = model.stats
    assert stats.seen == [] and stats.last is None and stats.calls.item() == 0
    assert set(counter.leaf_modules) == {"stats"}
    for name in ("last", "seen"):  # (the in-place add to the buffer is a node of the graph)
        assert name in counter.leaf_modules["stats"]
    reference = copy.deepcopy(model)
    torch.testing.assert_close(counter.propagate(x), reference(x))
    assert stats.seen == [3] and stats.calls.item() == 1
    torch.testing.assert_close(stats.last, reference.stats.last)
    # sum: 12 - 1, calls + 1: 1, x * 2: 12, then Linear(4, 4) on (3, 4): 3*4*7 + 12
    assert counter.total_flops == 11 + 1 + 12 + 3 * 4 * 7 + 12
    assert [(r.module_path, r.leaf_node) for r in counter.records if r.op == "call_module" or r.leaf_node][-1] == ("fc", "")
    assert {r.module_path for r in counter.records if r.leaf_node == "stats"} == {"stats"}


# -- hooks --------------------------------------------------------------------------------------------
class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.fc(x))


class TwoBlocks(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.first, self.second = Block(), Block()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.second(self.first(x))


def test_a_forward_hook_runs_on_real_tensors_during_propagate_and_never_while_tracing() -> None:
    model, seen = TwoBlocks(), []
    model.second.register_forward_hook(lambda module, args, output: seen.append(type(output)))
    counter = TorchFLOPsByFX(model)
    assert seen == []  # not called with a proxy while tracing
    counter.propagate(torch.randn(2, 4))
    assert seen == [torch.Tensor]
    assert set(counter.leaf_modules) == {"second"} and "forward hook" in counter.leaf_modules["second"]
    assert counter.total_flops == 2 * (2 * 4 * 7 + 8 + 8)  # two Linear(4, 4) on (2, 4) and their relus


def test_a_root_pre_hook_changes_the_input_as_in_model_x() -> None:
    model = Block()
    model.register_forward_pre_hook(lambda module, args: (torch.cat([args[0], args[0]]),))
    x = torch.randn(2, 4)
    counter = TorchFLOPsByFX(model)
    output = counter.propagate(x)
    assert output.shape == model(x).shape == (4, 4)
    torch.testing.assert_close(output, model(x))
    assert counter.total_flops == 4 * 4 * 7 + 16 + 16  # Linear(4, 4) on (4, 4) with its bias, relu


def test_the_root_is_called_as_the_caller_called_it() -> None:
    model, seen = Block(), []
    model.register_forward_pre_hook(lambda module, args, kwargs: seen.append((len(args), sorted(kwargs))), with_kwargs=True)
    counter = TorchFLOPsByFX(model)
    x = torch.randn(2, 4)
    for call in (lambda f: f(x), lambda f: f(x=x), lambda f: f(x)):
        call(counter.propagate)
        call(model)
    assert seen == [(1, []), (1, []), (0, ["x"]), (0, ["x"]), (1, []), (1, [])]


def test_a_hook_added_after_construction_is_honoured() -> None:
    model, seen = TwoBlocks(), []
    counter = TorchFLOPsByFX(model)
    counter.propagate(torch.randn(2, 4))
    model.first.register_forward_hook(lambda module, args, output: seen.append(output.shape))
    counter.propagate(torch.randn(5, 4))
    assert seen == [(5, 4)]
    handle = model.first._forward_hooks.popitem()  # noqa: F841 - the hook gone, the traced graph again
    counter.propagate(torch.randn(5, 4))
    assert seen == [(5, 4)] and counter.leaf_modules == {}


# -- graphs reused only when they still apply ---------------------------------------------------------
class Config:
    def __init__(self, n: int) -> None:
        self.n = n


class Repeats(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4, bias=False)

    def forward(self, x: torch.Tensor, config: Config) -> torch.Tensor:
        for _ in range(config.n):
            x = self.fc(x)
        return x


def test_a_config_object_changed_between_calls_is_traced_again() -> None:
    model, x, config = Repeats(), torch.randn(1, 4), Config(1)
    counter = TorchFLOPsByFX(model)
    counter.propagate(x, config)
    assert counter.total_flops == 4 * 7  # Linear(4, 4) without bias on (1, 4)
    config.n = 3
    output = counter.propagate(x, config)
    assert counter.total_flops == 3 * 4 * 7
    torch.testing.assert_close(output, model(x, config))


def test_a_replaced_submodule_is_counted_as_it_is_now() -> None:
    model = TwoBlocks()
    counter = TorchFLOPsByFX(model)
    counter.propagate(torch.randn(2, 4))
    model.second.fc = nn.Linear(4, 4, bias=False)
    counter.propagate(torch.randn(2, 4))
    assert counter.total_flops == (2 * 4 * 7 + 8 + 8) + (2 * 4 * 7 + 8)


class Switch(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.activate = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.fc(x)
        return torch.relu(x) if self.activate else x


def test_a_flag_reassigned_on_a_traced_module_is_traced_again() -> None:
    model = Switch()
    counter = TorchFLOPsByFX(model)
    counter.propagate(torch.randn(2, 4))
    assert counter.total_flops == 2 * 4 * 7 + 8 + 8  # Linear(4, 4) on (2, 4) and its relu
    model.activate = False
    counter.propagate(torch.randn(2, 4))
    assert counter.total_flops == 2 * 4 * 7 + 8
    model.train()  # the training flag alone does not change the graph
    graph = counter.graph_model
    counter.propagate(torch.randn(2, 4))
    assert counter.graph_model is graph


def test_plain_arguments_reuse_the_graph() -> None:
    model = Repeats()
    model.forward = lambda x, n: Repeats.forward(model, x, Config(n))  # noqa: E731 - an int argument
    counter = TorchFLOPsByFX(model)
    counter.propagate(torch.randn(1, 4), 2)
    graph = counter.graph_model
    counter.propagate(torch.randn(1, 4), 2)
    assert counter.graph_model is graph
    counter.propagate(torch.randn(1, 4), 3)
    assert counter.graph_model is not graph and counter.total_flops == 3 * 4 * 7


# -- repeats do not compound --------------------------------------------------------------------------
class AddsToInput(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x.add_(1)
        return self.fc(x)


@pytest.mark.parametrize("warmup, repeat", [(0, 1), (2, 5), (0, 3), (1, 1)])
def test_repeats_leave_the_inputs_of_one_forward(warmup: int, repeat: int) -> None:
    model, x0 = AddsToInput(), torch.randn(1, 4)
    x = x0.clone()
    counter = TorchFLOPsByFX(model)
    output = counter.propagate(x, warmup=warmup, repeat=repeat)
    torch.testing.assert_close(x, x0 + 1)
    torch.testing.assert_close(output, model.fc(x0 + 1))
    assert all(r.time_ms is not None for r in counter.records)


def test_repeats_leave_the_module_state_and_random_state_of_one_forward() -> None:
    model, x = Writers(), torch.randn(3, 4)
    model.noise = Noise()  # a leaf drawing random numbers, run after nothing else
    reference = copy.deepcopy(model)
    torch.manual_seed(0)
    expected = reference(x)
    expected_next = torch.rand(3)
    counter = TorchFLOPsByFX(model)
    torch.manual_seed(0)
    output = counter.propagate(x, warmup=2, repeat=4)
    torch.testing.assert_close(output, expected)
    torch.testing.assert_close(torch.rand(3), expected_next)
    assert model.stats.seen == [3] and model.stats.calls.item() == 1
    torch.testing.assert_close(model.stats.last, reference.stats.last)


class Noise(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + torch.rand(x.shape)


# -- nothing folded away ------------------------------------------------------------------------------
class PositionalEncoding(nn.Module):
    """An encoding made in ``forward`` from sizes and a buffer alone, and random noise."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("frequencies", torch.linspace(0.1, 1.0, 8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(16, dtype=torch.float32)
        encoding = (positions[:, None] * self.frequencies).sin()
        return x + encoding + torch.randn(8) * self.frequencies.cos()


def test_work_that_does_not_depend_on_the_inputs_is_counted_and_rerun() -> None:
    model, x = PositionalEncoding(), torch.randn(1, 16, 8)
    counter = TorchFLOPsByFX(model)
    counter.propagate(x)
    # positions * frequencies: 16*8, sin: 16*8, x + encoding: 16*8, frequencies.cos(): 8, randn * cos: 8, + noise: 16*8
    assert counter.total_flops == 4 * 16 * 8 + 8 + 8
    assert counter.total_flops == count_aten(model, x)[1].cost.flops
    torch.manual_seed(1)
    first = counter.propagate(x)
    torch.manual_seed(1)
    torch.testing.assert_close(first, model(x))  # the noise is drawn at run time, as model(x) draws it
    assert not torch.equal(counter.propagate(x), first)


# -- rules only where they apply ----------------------------------------------------------------------
class DoubledLinear(nn.Linear):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) * 2 + 1


class Symmetric(nn.Module):
    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight.triu() + weight.triu(1).transpose(-1, -2)


LINEAR_64_32 = 8 * 32 * (2 * 64 - 1) + 8 * 32  # Linear(64, 32) on (8, 64), with its bias


@pytest.mark.parametrize("how", ["leaf_types", "auto"])
def test_a_subclass_with_its_own_forward_is_counted_by_what_it_runs(how: str) -> None:
    model, x = nn.Sequential(DoubledLinear(64, 32)), torch.randn(8, 64)
    if how == "leaf_types":
        counter = TorchFLOPsByFX(model, leaf_types=(DoubledLinear,))
    else:
        counter = TorchFLOPsByFX(model, leaf_modules=["0"])
    counter.propagate(x)
    assert counter.total_flops == LINEAR_64_32 + 8 * 32 + 8 * 32  # then * 2 and + 1


def test_a_parametrised_layer_counts_its_weight_computation() -> None:
    layer = nn.Linear(64, 64)
    parametrize.register_parametrization(layer, "weight", Symmetric())
    model, x = nn.Sequential(layer), torch.randn(8, 64)
    counter = TorchFLOPsByFX(model)
    counter.propagate(x)
    # triu, transpose: 0; the add: 64*64; Linear(64, 64) on (8, 64) with its bias
    assert counter.total_flops == 64 * 64 + 8 * 64 * (2 * 64 - 1) + 8 * 64


@pytest.mark.parametrize("apply", [
    pytest.param(lambda layer: torch.nn.utils.parametrizations.weight_norm(layer), id="parametrizations.weight_norm"),
    pytest.param(lambda layer: torch.nn.utils.weight_norm(layer), id="weight_norm_pre_hook"),
])
def test_weight_norm_counts_the_weight_it_computes(apply) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # the pre-hook form is deprecated
        layer = apply(nn.Linear(64, 32))
    counter = TorchFLOPsByFX(nn.Sequential(layer))
    counter.propagate(torch.randn(8, 64))
    # w = v * (g / ||v||), v of (32, 64): norms 2 * 2048, 32 divides, 2048 multiplies; then the layer
    assert counter.total_flops == 2 * 2048 + 32 + 2048 + LINEAR_64_32


def test_a_layer_with_a_hook_counts_the_hooks_work() -> None:
    layer = nn.Linear(64, 32)
    layer.register_forward_hook(lambda module, args, output: output * 3)
    counter = TorchFLOPsByFX(nn.Sequential(layer))
    output = counter.propagate(torch.ones(8, 64))
    assert counter.total_flops == LINEAR_64_32 + 8 * 32
    torch.testing.assert_close(output, layer(torch.ones(8, 64)))


# -- every way in -------------------------------------------------------------------------------------
@pytest.mark.parametrize("run", ["propagate", "timing_off", "repeats", "shapes", "profile"])
def test_every_way_of_counting_leaves_the_model_as_one_forward_would(run: str) -> None:
    model, x = Writers(), torch.randn(3, 4)
    reference = copy.deepcopy(model)
    counter = TorchFLOPsByFX(model)
    if run == "propagate":
        counter.propagate(x)
    elif run == "timing_off":
        counter.propagate(x, timing=False)
    elif run == "repeats":
        counter.propagate(x, warmup=1, repeat=3)
    elif run == "shapes":
        counter.propagate_shapes(x)  # not a forward: the model is left as it was
        assert model.stats.seen == [] and model.stats.last is None and model.stats.calls.item() == 0
        return
    else:
        profile(model, x, verbose=False)
    reference(x)
    assert model.stats.seen == reference.stats.seen == [3]
    assert model.stats.calls.item() == reference.stats.calls.item() == 1
    torch.testing.assert_close(model.stats.last, reference.stats.last)


# -- generated models: construction and counting leave what one plain forward leaves -----------------
BEHAVIOURS = ("assign", "reassign_buffer", "mutate_buffer", "append", "hook", "root_hook", "config",
              "in_place_input", "random")
RUNS = ("propagate", "timing_off", "repeats", "profile", "shapes")


def _add_one(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
    return output + 1


def _scale_input(module: nn.Module, args: tuple) -> tuple:
    return (args[0] * 0.5, *args[1:])


class GeneratedInner(nn.Module):
    def __init__(self, behaviours: frozenset[str]) -> None:
        super().__init__()
        self.behaviours = behaviours
        self.register_buffer("running", torch.zeros(4))
        self.register_buffer("count", torch.zeros(()))
        self.seen: list[int] = []
        self.last: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if "assign" in self.behaviours:
            self.last = x.sum()
        if "reassign_buffer" in self.behaviours:
            self.running = self.running * 0.5 + x.mean(0)
        if "mutate_buffer" in self.behaviours:
            self.count.add_(1)
        if "append" in self.behaviours:
            self.seen.append(x.shape[0])
        if "random" in self.behaviours:
            x = x + torch.rand(x.shape)
        return x * 2


class Generated(nn.Module):
    def __init__(self, behaviours: frozenset[str]) -> None:
        super().__init__()
        self.behaviours = behaviours
        self.inner = GeneratedInner(behaviours)
        self.fc = nn.Linear(4, 4)
        if "hook" in behaviours:
            self.inner.register_forward_hook(_add_one)
        if "root_hook" in behaviours:
            self.register_forward_pre_hook(_scale_input)

    def forward(self, x: torch.Tensor, config: Config | None = None) -> torch.Tensor:
        if "in_place_input" in self.behaviours:
            x.mul_(2)
        y = self.inner(x)
        if config is not None:
            for _ in range(config.n):
                y = self.fc(y)
        return self.fc(y)


def _state(model: Generated) -> tuple:
    inner = model.inner
    return ({name: t.clone() for name, t in model.state_dict().items()}, list(inner.seen),
            None if inner.last is None else inner.last.clone())


def _assert_same_state(ours: tuple, theirs: tuple) -> None:
    assert ours[0].keys() == theirs[0].keys()
    for name in ours[0]:
        torch.testing.assert_close(ours[0][name], theirs[0][name], msg=name)
    assert ours[1] == theirs[1]
    assert (ours[2] is None) == (theirs[2] is None)
    if ours[2] is not None:
        torch.testing.assert_close(ours[2], theirs[2])


@given(
    behaviours=st.frozensets(st.sampled_from(BEHAVIOURS)),
    run=st.sampled_from(RUNS),
    batches=st.lists(st.integers(1, 3), min_size=1, max_size=3),
    config_sizes=st.lists(st.integers(0, 2), min_size=3, max_size=3),
    seed=st.integers(0, 2**16),
)
@settings(deadline=None, max_examples=40)
def test_generated_models_are_left_as_one_plain_forward_leaves_them(
    behaviours: frozenset[str], run: str, batches: list[int], config_sizes: list[int], seed: int,
) -> None:
    torch.manual_seed(seed)
    model = Generated(behaviours)
    plain = copy.deepcopy(model)
    counter = TorchFLOPsByFX(model)
    _assert_same_state(_state(model), _state(plain))  # construction changed nothing
    for batch, n in zip(batches, config_sizes):
        x = torch.randn(batch, 4)
        args = (Config(n),) if "config" in behaviours else ()
        ours, theirs = x.clone(), x.clone()
        if run == "shapes":  # not a forward: the model, the input and the generators are left as they are
            before, rng_before = _state(model), torch.get_rng_state()
            counter.propagate_shapes(ours, *args)
            torch.testing.assert_close(ours, x)
            assert torch.equal(torch.get_rng_state(), rng_before)
            _assert_same_state(_state(model), before)
            continue
        torch.manual_seed(seed + batch)
        expected = plain(theirs, *copy.deepcopy(args))
        rng_after = torch.get_rng_state()
        torch.manual_seed(seed + batch)
        if run == "propagate":
            output = counter.propagate(ours, *args)
        elif run == "timing_off":
            output = counter.propagate(ours, *args, timing=False)
        elif run == "repeats":
            output = counter.propagate(ours, *args, warmup=1, repeat=3)
        else:
            output = None
            profile(model, (ours, *args), verbose=False)
        if output is not None:
            torch.testing.assert_close(output, expected)
        torch.testing.assert_close(ours, theirs)  # the input, written in place exactly once
        assert torch.equal(torch.get_rng_state(), rng_after)
        _assert_same_state(_state(model), _state(plain))


@pytest.mark.parametrize("own_trace", [True, False], ids=["own trace", "FX's trace"])
def test_both_traces_record_constant_work_and_leave_the_model(own_trace: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where PyTorch lacks the FX helpers our trace follows, FX's own trace runs: it records the same
    work and leaves the model the same way."""
    from torch_flops import tracer as tracer_module

    if own_trace and not tracer_module._OWN_TRACE:
        pytest.skip("this PyTorch lacks FX helpers the own trace follows (torch 2.4): FX's trace runs instead")
    monkeypatch.setattr(tracer_module, "_OWN_TRACE", own_trace)
    model, x = PositionalEncoding(), torch.randn(1, 16, 8)
    counter = TorchFLOPsByFX(model)
    counter.propagate(x)
    assert counter.total_flops == 4 * 16 * 8 + 8 + 8
    writers = Writers()
    stats = writers.stats
    counter = TorchFLOPsByFX(writers)
    assert set(counter.leaf_modules) == {"stats"} and writers.stats is stats and stats.seen == [] and stats.last is None
