"""``propagate(..., backward=True)``: backward FLOPs, exact, each charged to the forward op whose autograd
node ran it; only what autograd really runs; the model left as it was."""

from __future__ import annotations

import csv
import io
import json
import time

import pytest
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from torch_flops import TorchFLOPsByFX

from features import needs_checkpoint_on_meta
from models import costing

torch.manual_seed(0)

# Linear(64, 32) on (8, 64): the hand counts of docs/conventions.md ("Backward")
FORWARD = 8 * 32 * (2 * 64 - 1) + 8 * 32  # 32,768: the product, then the bias add
GRAD_INPUT = 8 * 64 * (2 * 32 - 1)  # (8, 32) @ (32, 64): 32,256
GRAD_WEIGHT = 32 * 64 * (2 * 8 - 1)  # (32, 8) @ (8, 64): 30,720
GRAD_BIAS = 32 * (8 - 1)  # the sum over the batch: 224


def counted(model: nn.Module, *inputs: torch.Tensor, **kwargs) -> TorchFLOPsByFX:
    counter = TorchFLOPsByFX(model)
    counter.propagate(*inputs, backward=True, **kwargs)
    return counter


def test_linear_backward_is_the_weight_and_bias_gradients_when_the_input_needs_none() -> None:
    layer, x = nn.Linear(64, 32), torch.randn(8, 64)
    counter = counted(layer, x)
    assert counter.total_flops == FORWARD
    assert counter.total_backward_flops == GRAD_WEIGHT + GRAD_BIAS  # 30,944: no input gradient
    assert layer.weight.grad is None and layer.bias.grad is None  # nothing written to .grad


def test_an_input_that_requires_grad_adds_the_input_gradient() -> None:
    layer, x = nn.Linear(64, 32), torch.randn(8, 64, requires_grad=True)
    counter = counted(layer, x)
    assert counter.total_backward_flops == GRAD_INPUT + GRAD_WEIGHT + GRAD_BIAS  # 63,200
    assert x.grad is None


def test_a_frozen_layer_gets_the_input_gradient_only() -> None:
    layer, x = nn.Linear(64, 32).requires_grad_(False), torch.randn(8, 64, requires_grad=True)
    assert counted(layer, x).total_backward_flops == GRAD_INPUT
    assert not any(p.requires_grad for p in layer.parameters())  # left as it was


class Branching(nn.Module):
    """``if x.sum() > ...`` keeps the root whole: its calls are counted one by one, backward included."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(64, 32)
        self.b = nn.Linear(32, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > -1e9:
            x = torch.relu(self.a(x))
        return self.b(x)


class Chain(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(64, 32)
        self.b = nn.Linear(32, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.relu(self.a(x)))


@pytest.mark.parametrize("model", [Chain, Branching], ids=["traced", "one_leaf"])
def test_each_op_gets_the_backward_its_autograd_nodes_ran(model: type[nn.Module]) -> None:
    counter = counted(model(), torch.randn(8, 64))
    by_module = {(r.module_path, r.target.rpartition(".")[2]): r.backward_flops for r in counter.records
                 if r.backward_flops}
    b = 8 * 32 * (2 * 16 - 1) + 16 * 32 * (2 * 8 - 1) + 16 * (8 - 1)  # grad input 7,936 + weight 7,680 + bias 112
    assert by_module == {
        ("a", "a" if model is Chain else "linear"): 32 * 64 * (2 * 8 - 1) + 32 * (8 - 1),  # no input gradient
        ("", "relu"): 8 * 32,  # threshold_backward: one compare-select per element
        ("b", "b" if model is Chain else "linear"): b,
    }
    assert counter.total_backward_flops == sum(by_module.values()) and counter.backward_unattributed.flops == 0


def test_conv_backward_counts_the_gradients_it_computes() -> None:
    conv, x = nn.Conv2d(3, 8, 3, padding=1), torch.randn(2, 3, 8, 8)
    grad_weight = 8 * 3 * 9 * (2 * 2 * 8 * 8 - 1)  # each weight: a product over N * H * W = 128 positions: 55,080
    grad_bias = 8 * (2 * 8 * 8 - 1)  # 1,016
    assert counted(conv, x).total_backward_flops == grad_weight + grad_bias


def test_forward_numbers_do_not_move_and_a_loss_fn_is_used() -> None:
    model, x = Chain(), torch.randn(8, 64)
    forward = TorchFLOPsByFX(model)
    forward.propagate(x)
    counter = counted(model, x, loss_fn=lambda out: (out * 2).mean())
    assert counter.total_flops == forward.total_flops
    assert counter.total_backward_flops > 0


def test_bad_backward_requests_say_what_is_wrong() -> None:
    frozen, x = nn.Linear(4, 4).requires_grad_(False), torch.randn(2, 4)
    with pytest.raises(ValueError, match="no floating-point tensor that requires grad"):
        counted(frozen, x)
    with pytest.raises(ValueError, match="warmup and repeat"):
        TorchFLOPsByFX(nn.Linear(4, 4)).propagate(x, backward=True, repeat=3)
    with pytest.raises(RuntimeError, match=r"loss_fn \S*explode raised KeyError"):
        def explode(out: torch.Tensor) -> torch.Tensor:
            raise KeyError("nope")

        counted(nn.Linear(4, 4), x, loss_fn=explode)
    with pytest.raises(ValueError, match="one-element tensor"):
        counted(nn.Linear(4, 4), x, loss_fn=lambda out: out)
    with pytest.raises(ValueError, match="with backward=True only"):
        TorchFLOPsByFX(nn.Linear(4, 4)).propagate(x, loss_fn=lambda out: out.sum())
    with pytest.raises(RuntimeError, match="no backward pass counted"):
        counter = TorchFLOPsByFX(nn.Linear(4, 4))
        counter.propagate(x)
        counter.total_backward_flops


def test_the_module_view_sums_each_module_s_backward() -> None:
    counter = counted(Branching(), torch.randn(8, 64))
    rows = {row.path: row.backward_flops for row in counter.by_module()}
    a = 32 * 64 * (2 * 8 - 1) + 32 * (8 - 1)  # weight and bias gradients: 30,944
    b = 8 * 32 * (2 * 16 - 1) + 16 * 32 * (2 * 8 - 1) + 16 * (8 - 1)  # 15,728
    assert rows == {"": a + 8 * 32 + b, "a": a, "b": b}  # the root's own relu: 256


@pytest.mark.parametrize("leaves", [(), ("",)], ids=["traced", "one_leaf"])
def test_a_shape_only_backward_counts_what_a_real_one_does(leaves: tuple[str, ...]) -> None:
    torch.manual_seed(0)
    module, x = Chain(), torch.randn(8, 64, requires_grad=True)
    real = TorchFLOPsByFX(module, leaf_modules=leaves)
    real.propagate(x, backward=True)
    before = [(p, p.device, p.requires_grad, p.grad) for p in module.parameters()]
    meta = TorchFLOPsByFX(module, leaf_modules=leaves)
    meta.propagate_shapes(x, backward=True)
    assert [(r.name, r.flops, r.backward_flops) for r in meta.records] == [(r.name, r.flops, r.backward_flops) for r in real.records]
    assert meta.total_backward_flops == real.total_backward_flops == (  # every gradient, the input's too
        GRAD_INPUT + GRAD_WEIGHT + GRAD_BIAS  # a: Linear(64, 32) on (8, 64), as above
        + 8 * 32  # relu
        + 8 * 32 * (2 * 16 - 1) + 16 * 32 * (2 * 8 - 1) + 16 * (8 - 1)  # b: Linear(32, 16)
    )
    assert [(p, p.device, p.requires_grad, p.grad) for p in module.parameters()] == before  # the real weights are back


def test_optimizer_step_and_training_memory_of_a_linear_layer() -> None:
    layer, x = nn.Linear(64, 32), torch.randn(8, 64)
    counter = counted(layer, x, optimizer=torch.optim.AdamW)
    elements = 32 * 64 + 32  # 2,080 parameters
    # AdamW per element: 13 + 1 (decoupled weight decay), plus one step-counter add per tensor (docs: "Optimizer step")
    assert counter.optimizer_step.flops == 14 * elements + 2
    memory = counter.training_memory()
    assert (memory.params_bytes, memory.gradient_bytes) == (elements * 4, elements * 4)
    assert memory.optimizer_state_bytes == 2 * elements * 4 + 2 * 4  # exp_avg, exp_avg_sq, two float32 steps
    assert memory.saved_activation_bytes == 8 * 64 * 4  # addmm saves its input (the weight is a parameter)
    assert memory.backward_peak_bytes >= memory.gradient_bytes  # the gradients are made by the backward
    assert memory.peak_bytes == (memory.params_bytes + memory.optimizer_state_bytes + memory.saved_activation_bytes
                                 + memory.backward_peak_bytes)
    frozen = counted(nn.Linear(64, 32).requires_grad_(False), x.clone().requires_grad_(), optimizer=torch.optim.SGD)
    assert frozen.optimizer_step.flops == 0 and frozen.training_memory().gradient_bytes == 0
    with pytest.raises(RuntimeError, match="no backward pass counted"):
        TorchFLOPsByFX(layer).training_memory()


def test_a_train_mode_step_counts_batch_statistics_and_leaves_buffers_and_generators_as_they_were() -> None:
    torch.manual_seed(0)
    model, x = nn.Sequential(nn.Linear(8, 8), nn.BatchNorm1d(8), nn.Dropout(0.5)).eval(), torch.randn(4, 8)
    bn = model[1]
    stats = [t.clone() for t in bn.buffers()]
    state = torch.random.get_rng_state()
    counter = counted(model, x, mode="train")
    assert all(torch.equal(a, b) for a, b in zip(stats, bn.buffers())) and not any(m.training for m in model.modules())
    assert torch.equal(torch.random.get_rng_state(), state)
    backward = {r.target: r.backward_flops for r in counter.records if r.op == "call_module"}
    assert backward["1"] == 9 * 4 * 8 + 8  # batch-norm backward in training, every gradient (docs: "Backward")
    assert backward["2"] == 4 * 8  # dropout: the gradient times the kept mask, one multiply per element
    evaluated = counted(model, x)
    assert {r.target: r.backward_flops for r in evaluated.records if r.op == "call_module"}["2"] == 0
    with pytest.raises(ValueError, match="mode must be one of"):
        counted(model, x, mode="training")


class Checkpointed(nn.Module):
    def __init__(self, checkpointing: bool, reentrant: bool = False) -> None:
        super().__init__()
        self.block = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 16))
        self.checkpointing = checkpointing
        self.reentrant = reentrant

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return checkpoint(self.block, x, use_reentrant=self.reentrant) if self.checkpointing else self.block(x)


LAST = 8 * 16 * (2 * 32 - 1) + 8 * 16  # Linear(32, 16) on (8, 32): 8,064 + the bias 128 = 8,192
# what the backward runs the block again for: non-reentrant stops once it has the tensors the gradients need
# (the relu's output), so the first Linear and the relu; reentrant runs the whole block, the last Linear too
RECOMPUTED = {False: {"block.0": FORWARD, "block.1": 8 * 32, "block.2": 0},  # 32,768 + 256 = 33,024
              True: {"block.0": FORWARD, "block.1": 8 * 32, "block.2": LAST}}  # + 8,192 = 41,216: the forward


@pytest.mark.parametrize("reentrant", [False, True], ids=["non_reentrant", "reentrant"])
def test_activation_checkpointing_s_recompute_is_a_figure_of_its_own_and_the_backward_is_the_plain_one(reentrant: bool) -> None:
    torch.manual_seed(0)
    plain, kept = Checkpointed(False), Checkpointed(True, reentrant)
    kept.load_state_dict(plain.state_dict())
    x = torch.randn(8, 64, requires_grad=True)  # a reentrant checkpoint differentiates nothing unless an input requires grad
    counters = {name: counted(model, x) for name, model in (("plain", plain), ("checkpointed", kept))}
    forward = FORWARD + 8 * 32 + LAST  # Linear(64, 32), relu, Linear(32, 16)
    assert counters["checkpointed"].total_flops == counters["plain"].total_flops == forward
    backward = GRAD_INPUT + GRAD_WEIGHT + GRAD_BIAS + 8 * 32 + 8 * 32 * (2 * 16 - 1) + 16 * 32 * (2 * 8 - 1) + 16 * (8 - 1)
    assert counters["checkpointed"].total_backward_flops == counters["plain"].total_backward_flops == backward  # 79,184
    assert counters["plain"].total_recompute_flops == 0
    assert counters["checkpointed"].total_recompute_flops == sum(RECOMPUTED[reentrant].values())
    records = {r.module_path: r for r in costing(counters["checkpointed"].records) if r.leaf_node}  # counted op by op
    assert {path: r.target for path, r in records.items()} == {
        "block.0": "torch.nn.functional.linear", "block.1": "torch.nn.functional.relu", "block.2": "torch.nn.functional.linear"}
    assert {path: r.recompute_flops for path, r in records.items()} == RECOMPUTED[reentrant]  # each module's own ops
    plain_backward = {r.module_path: r.backward_flops for r in counters["plain"].records if r.op == "call_module"}
    assert {path: r.backward_flops for path, r in records.items()} == plain_backward  # as if not checkpointed
    rows = {row.path: row for row in counters["checkpointed"].by_module()}
    assert rows["block"].recompute_flops == rows[""].recompute_flops == sum(RECOMPUTED[reentrant].values())
    assert {path: rows[path].recompute_flops for path in RECOMPUTED[reentrant]} == RECOMPUTED[reentrant]
    assert all(p.grad is None for p in kept.parameters()) and x.grad is None  # a reentrant run's .grad put back


@needs_checkpoint_on_meta
@pytest.mark.parametrize("reentrant", [False, True], ids=["non_reentrant", "reentrant"])
def test_a_shape_only_backward_counts_the_recompute_as_a_real_one_does(reentrant: bool) -> None:
    torch.manual_seed(0)
    kept, x = Checkpointed(True, reentrant), torch.randn(8, 64, requires_grad=True)
    real = counted(kept, x)
    meta = TorchFLOPsByFX(kept)
    meta.propagate_shapes(x, backward=True)
    assert (meta.total_backward_flops, meta.total_recompute_flops) == (real.total_backward_flops, real.total_recompute_flops)
    assert meta.total_recompute_flops == sum(RECOMPUTED[reentrant].values())


def test_activation_checkpointing_saves_less() -> None:
    torch.manual_seed(0)
    x = torch.randn(8, 64)
    saved = {name: counted(Checkpointed(checkpointing), x).training_memory().saved_activation_bytes
             for name, checkpointing in (("plain", False), ("checkpointed", True))}
    assert saved["plain"] - saved["checkpointed"] == 8 * 32 * 4  # the relu's output is not kept


class Inner(nn.Module):
    def __init__(self, checkpointing: bool, reentrant: bool) -> None:
        super().__init__()
        self.a = nn.Linear(16, 16)
        self.b = nn.Linear(16, 16)
        self.checkpointing = checkpointing
        self.reentrant = reentrant

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.a(x))
        return checkpoint(self.b, y, use_reentrant=self.reentrant) if self.checkpointing else self.b(y)


class Nested(nn.Module):
    """A checkpointed block holding a checkpointed Linear."""

    def __init__(self, checkpointing: bool, reentrant: bool) -> None:
        super().__init__()
        self.inner = Inner(checkpointing, reentrant)
        self.head = nn.Linear(16, 4)
        self.checkpointing = checkpointing
        self.reentrant = reentrant

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(checkpoint(self.inner, x, use_reentrant=self.reentrant) if self.checkpointing else self.inner(x))


@pytest.mark.parametrize("reentrant", [False, True], ids=["non_reentrant", "reentrant"])
def test_nested_checkpoints_recompute_without_moving_the_backward(reentrant: bool) -> None:
    torch.manual_seed(0)
    plain, kept = Nested(False, reentrant), Nested(True, reentrant)
    kept.load_state_dict(plain.state_dict())
    x = torch.randn(4, 16, requires_grad=True)
    counters = [counted(model, x) for model in (plain, kept)]
    assert counters[0].total_backward_flops == counters[1].total_backward_flops
    by_module = [{row.path: row.backward_flops for row in c.by_module()} for c in counters]
    assert by_module[0] == by_module[1]  # every module's backward as if not checkpointed
    linear = 4 * 16 * (2 * 16 - 1) + 4 * 16  # Linear(16, 16) on (4, 16): 1,984 + 64 = 2,048
    # non-reentrant: the outer region again up to its relu (a and the relu); the inner Linear's saved
    # tensors are its input and weight, which it already has; reentrant: everything, the inner Linear twice
    # (once inside the outer recompute, once for its own backward)
    expected = linear + 4 * 16 + (2 * linear if reentrant else 0)  # 2,112 / 6,208
    assert counters[1].total_recompute_flops == expected and counters[1].recompute_unattributed.flops == 0


def test_node_and_module_tables_show_the_backward_after_a_backward_pass() -> None:
    counter = counted(Chain(), torch.randn(8, 64))
    b = 8 * 32 * (2 * 16 - 1) + 16 * 32 * (2 * 8 - 1) + 16 * (8 - 1)  # 15,728
    nodes = list(csv.reader(io.StringIO(counter.report("nodes", "csv"))))
    column = nodes[0].index("Backward FLOPs")
    assert {row[0]: int(row[column]) for row in nodes[1:]}["b"] == b
    modules = list(csv.reader(io.StringIO(counter.report("modules", "csv"))))
    column = modules[0].index("Backward FLOPs")
    assert {row[0]: int(row[column]) for row in modules[1:]}["b"] == b
    forward_only = TorchFLOPsByFX(Chain())
    forward_only.propagate(torch.randn(8, 64))
    assert "Backward" not in forward_only.report("nodes", "csv").splitlines()[0]
    assert "Backward" not in forward_only.report("modules", "csv").splitlines()[0]
    assert "Recompute" not in nodes[0] and "Recompute" not in modules[0]  # nothing was recomputed


def test_recompute_shows_in_the_tables_and_the_json_document() -> None:
    torch.manual_seed(0)
    counter = counted(Checkpointed(True), torch.randn(8, 64, requires_grad=True))
    nodes = list(csv.reader(io.StringIO(counter.report("nodes", "csv"))))
    column = nodes[0].index("Recompute FLOPs")
    recomputed = {row[3]: int(row[column]) for row in nodes[1:] if row[3]}
    assert {path: recomputed[path] for path in RECOMPUTED[False]} == RECOMPUTED[False]
    assert all(value == 0 for path, value in recomputed.items() if path not in RECOMPUTED[False])
    modules = list(csv.reader(io.StringIO(counter.report("modules", "csv"))))
    column = modules[0].index("Recompute FLOPs")
    assert {row[0]: int(row[column]) for row in modules[1:]}["block"] == FORWARD + 8 * 32
    document = json.loads(counter.report("nodes", "json"))
    assert document["totals"]["recompute_flops"] == FORWARD + 8 * 32
    assert document["totals"]["backward_flops"] == counter.total_backward_flops
    assert sum(row["recompute_flops"] for row in document["rows"]) == FORWARD + 8 * 32


def test_each_op_gets_the_wall_time_of_its_backward() -> None:
    model, x = Chain(), torch.randn(8, 64)
    counter = TorchFLOPsByFX(model)
    start = time.perf_counter()
    counter.propagate(x, backward=True)
    wall_ms = (time.perf_counter() - start) * 1000.0
    times = {r.name: r.backward_time_ms for r in counter.records}
    assert times["x"] == 0.0 and times["output"] == 0.0  # no autograd node of their own
    assert all(times[name] > 0 for name in ("a", "relu", "b"))  # each ran a backward node
    assert counter.backward_unattributed_ms >= 0  # the loss's sum, the engine before the first node
    assert counter.total_backward_time_ms == pytest.approx(sum(times.values()) + counter.backward_unattributed_ms)
    assert counter.total_backward_time_ms <= wall_ms  # inside the whole run, forward included
    rows = {row.path: row.backward_time_ms for row in counter.by_module()}
    assert rows["a"] == times["a"] and rows[""] == pytest.approx(sum(times.values()))  # inclusive
    assert "Backward time (ms)" in counter.report("nodes", "csv").splitlines()[0]
    assert "Backward time (ms)" in counter.report("modules", "csv").splitlines()[0]
    assert json.loads(counter.report("modules", "json"))["totals"]["backward_time_ms"] == counter.total_backward_time_ms


@pytest.mark.parametrize("run", ["shape_only", "flops_only"])
def test_no_backward_time_without_a_timed_backward(run: str) -> None:
    counter = TorchFLOPsByFX(Chain())
    if run == "shape_only":
        counter.propagate_shapes(torch.randn(8, 64), backward=True)
    else:
        counter.propagate(torch.randn(8, 64), backward=True, timing=False)
    assert all(r.backward_time_ms is None for r in counter.records)
    assert counter.backward_unattributed_ms is None and counter.total_backward_time_ms is None
    assert counter.total_backward_flops > 0
    assert "Backward time" not in counter.report("nodes", "csv").splitlines()[0]
    assert "Backward time" not in counter.report("modules", "csv").splitlines()[0]
