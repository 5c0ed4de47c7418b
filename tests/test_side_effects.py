"""No side effects, ever: propagate() and profile() leave every model they touch exactly as it was.

``snapshot(model)`` / ``assert_unchanged(model, before)`` are the shared helpers (``test_bad_input.py``
imports them): tensors byte for byte, identity and version counters, training flags, ``requires_grad``,
gradients, hooks on every module and the global hook tables, attributes, and the global state FX and
the aten-level fallback touch (grad mode, the dispatch-mode stack, ``nn.Module.__call__``).

Inputs are another matter: ``model(x)`` mutates ``x`` when the model runs in-place ops on it, and
``propagate(x)`` must mutate it exactly as much (no more: a node is never run twice; no less: the
caller asked for the model's behaviour).
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from torch import nn
from torch.nn.modules import module as module_globals

from models import HasBranchy, NoParams, Op, SimpleModel, SmallConvNet, TwoInputs
from torch_flops import DEFAULT_REGISTRY, Cost, OpCall, Status, TorchFLOPsByFX, profile


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


# -- the shared helper -----------------------------------------------------------------------------
_MODULE_HOOK_TABLES = (
    "_forward_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_hooks_always_called",
    "_forward_pre_hooks",
    "_forward_pre_hooks_with_kwargs",
    "_backward_hooks",
    "_backward_pre_hooks",
    "_state_dict_hooks",
    "_state_dict_pre_hooks",
    "_load_state_dict_pre_hooks",
    "_load_state_dict_post_hooks",
)
_GLOBAL_HOOK_TABLES = tuple(sorted(name for name in vars(module_globals) if name.startswith("_global_") and name.endswith("hooks")))
_PLAIN = (bool, int, float, str, type(None))


def _tensor_bytes(t: torch.Tensor) -> torch.Tensor | None:
    """The raw bytes of ``t`` (a copy), or ``None`` for meta tensors, which have none."""
    if t.is_meta:
        return None
    return t.detach().reshape(-1).contiguous().view(torch.uint8).clone()


def _tensor_facts(t: torch.Tensor) -> tuple:
    return (id(t), type(t).__name__, t.dtype, tuple(t.shape), str(t.device), t._version, t.requires_grad)


def snapshot(model: nn.Module) -> dict[str, Any]:
    """Everything propagate()/profile() could change on ``model`` or in global state, as plain values."""
    tensors = {
        f"param:{name}": p for name, p in model.named_parameters(remove_duplicate=False)
    } | {f"buffer:{name}": b for name, b in model.named_buffers(remove_duplicate=False)}
    modules = dict(model.named_modules(remove_duplicate=False))
    return {
        "state_dict_keys": list(model.state_dict().keys()),
        "tensor_facts": {name: _tensor_facts(t) for name, t in tensors.items()},
        "tensor_bytes": {name: _tensor_bytes(t) for name, t in tensors.items()},
        "grads": {name: None if p.grad is None else (id(p.grad), _tensor_bytes(p.grad)) for name, p in model.named_parameters()},
        "training": {name: m.training for name, m in modules.items()},
        "requires_grad": {name: p.requires_grad for name, p in model.named_parameters(remove_duplicate=False)},
        "modules": {name: (id(m), type(m)) for name, m in modules.items()},
        "attributes": {
            name: (
                sorted(vars(m)),
                sorted(m._modules.keys()),
                sorted(m._parameters.keys()),
                sorted(m._buffers.keys()),
                sorted(m._non_persistent_buffers_set),
                {k: v for k, v in vars(m).items() if isinstance(v, _PLAIN)},
            )
            for name, m in modules.items()
        },
        "hooks": {
            name: {table: list(getattr(m, table, {}) or {}) for table in _MODULE_HOOK_TABLES}
            for name, m in modules.items()
        },
        "global_hooks": {table: list(getattr(module_globals, table)) for table in _GLOBAL_HOOK_TABLES},
        "global_state": {
            "grad_enabled": torch.is_grad_enabled(),
            "inference_mode": torch.is_inference_mode_enabled(),
            "dispatch_modes": torch._C._len_torch_dispatch_stack(),
            "default_dtype": torch.get_default_dtype(),
            "Module.__call__": nn.Module.__call__,
            "Module.__getattr__": nn.Module.__getattr__,
        },
    }


def _same_bytes(a: torch.Tensor | None, b: torch.Tensor | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return a.shape == b.shape and torch.equal(a, b)


def assert_unchanged(model: nn.Module, before: dict[str, Any]) -> None:
    """Fail, naming what changed, unless ``model`` (and global state) is exactly as in ``before``."""
    after = snapshot(model)
    for section in ("state_dict_keys", "tensor_facts", "training", "requires_grad", "modules", "attributes",
                    "hooks", "global_hooks", "global_state"):
        if before[section] != after[section]:
            old, new = before[section], after[section]
            if isinstance(old, dict) and isinstance(new, dict):
                changed = {k: (old.get(k), new.get(k)) for k in old.keys() | new.keys() if old.get(k) != new.get(k)}
                raise AssertionError(f"{section} changed: {changed}")
            raise AssertionError(f"{section} changed: {old} -> {new}")
    changed = [name for name, data in before["tensor_bytes"].items() if not _same_bytes(data, after["tensor_bytes"][name])]
    assert not changed, f"tensor values changed: {changed}"
    assert before["grads"].keys() == after["grads"].keys()
    for name, grad in before["grads"].items():
        new = after["grads"][name]
        assert (grad is None) == (new is None), f"gradient of {name} changed (appeared or vanished)"
        if grad is not None:
            assert grad[0] == new[0] and _same_bytes(grad[1], new[1]), f"gradient of {name} changed"


def record_facts(counter: TorchFLOPsByFX) -> list[tuple]:
    """The deterministic part of every record (no times, no memory readings)."""
    return [
        (r.name, r.op, r.target, r.module_path, r.status, r.flops, r.macs, r.input_shapes, r.output_shapes,
         r.unsupported_ops, r.aten_costs, r.leaf_node)
        for r in counter.records
    ]


# -- the helper catches what it claims to catch ----------------------------------------------------
def _flip_training(m: SmallConvNet) -> None:
    m.bn.training = not m.bn.training


def _train_step_on_bn(m: SmallConvNet) -> None:
    m.bn.train()
    m.bn(torch.randn(2, 4, 3, 3))
    m.bn.eval()


def _rewrite_same_value(m: SmallConvNet) -> None:
    with torch.no_grad():
        m.fc.weight.copy_(m.fc.weight.clone())  # same bytes, but an in-place write (version bump)


MUTATIONS = {
    "training_flag": _flip_training,
    "running_stats": _train_step_on_bn,
    "in_place_write_same_bytes": _rewrite_same_value,
    "requires_grad": lambda m: m.conv.bias.requires_grad_(False),
    "grad_set": lambda m: setattr(m.fc.bias, "grad", torch.zeros(10)),
    "module_hook_left": lambda m: m.act.register_forward_hook(lambda *a: None),
    "pre_hook_left": lambda m: m.pool.register_forward_pre_hook(lambda *a: None),
    "global_hook_left": lambda m: module_globals.register_module_forward_hook(lambda *a: None),
    "new_attribute": lambda m: setattr(m.conv, "total_ops", 3),
    "new_buffer": lambda m: m.fc.register_buffer("total_params", torch.zeros(1)),
    "attribute_value": lambda m: setattr(m.pool, "kernel_size", 3),
    "grad_mode": lambda m: torch.set_grad_enabled(False),
    "parameter_replaced": lambda m: setattr(m.fc, "weight", nn.Parameter(m.fc.weight.detach().clone())),
}


@pytest.mark.parametrize("mutation", list(MUTATIONS))
def test_snapshot_detects_every_kind_of_change(mutation: str) -> None:
    model = SmallConvNet().eval()
    before = snapshot(model)
    assert_unchanged(model, before)
    grad_mode = torch.is_grad_enabled()
    global_hooks = dict(module_globals._global_forward_hooks)
    try:
        MUTATIONS[mutation](model)
        with pytest.raises(AssertionError, match="changed"):
            assert_unchanged(model, before)
    finally:
        torch.set_grad_enabled(grad_mode)
        for key in set(module_globals._global_forward_hooks) - set(global_hooks):
            del module_globals._global_forward_hooks[key]


# -- small in-repo models --------------------------------------------------------------------------
def _with_grads_and_frozen(model: nn.Module, *inputs: torch.Tensor) -> nn.Module:
    """Populate ``.grad`` by one backward pass, then freeze every other parameter: the counter must
    keep both exactly as they are."""
    params = list(model.parameters())
    if params:
        out = model(*inputs)
        out = out if isinstance(out, torch.Tensor) else out[0]
        out.float().sum().backward()
        for p in params[::2]:
            p.requires_grad_(False)
    return model


def _mixed_train(model: nn.Module) -> nn.Module:
    model.train()
    children = list(model.children())
    if children:
        children[0].eval()  # a mixed set of flags must come back as it was
    return model


SMALL_MODELS = {
    "simple_add_one": (lambda: SimpleModel(add_one=True), lambda: (torch.randn(3, 5),)),
    "small_convnet": (SmallConvNet, lambda: (torch.randn(2, 3, 8, 8),)),
    "has_branchy_auto_leaf": (HasBranchy, lambda: (torch.randn(2, 4).abs() + 1,)),
    "two_inputs": (TwoInputs, lambda: (torch.randn(2, 3), torch.randn(2, 3))),
    "no_params": (NoParams, lambda: (torch.randn(2, 3), torch.randn(3, 4))),
    "op_with_buffers": (lambda: Op(lambda a, weight: a @ weight, weight=torch.randn(4, 2)), lambda: (torch.randn(3, 4),)),
}


@pytest.mark.parametrize("name", list(SMALL_MODELS))
def test_small_models_are_left_exactly_as_they_were(name: str) -> None:
    build, make_inputs = SMALL_MODELS[name]
    torch.manual_seed(0)
    inputs = make_inputs()
    model = _mixed_train(_with_grads_and_frozen(build(), *inputs))
    reference = copy.deepcopy(model).eval()
    before = snapshot(model)

    counter = TorchFLOPsByFX(model)
    assert_unchanged(model, before)
    out = counter.propagate(*inputs)
    assert_unchanged(model, before)
    torch.testing.assert_close(out, reference(*inputs))  # propagate runs in eval mode
    first = record_facts(counter)
    assert all(r.status is not Status.UNSUPPORTED for r in counter.records)

    torch.testing.assert_close(counter.propagate(*inputs), out, rtol=0, atol=0)
    assert record_facts(counter) == first  # the same numbers on a second call
    assert_unchanged(model, before)

    macs, params, info = profile(model, inputs, verbose=False)
    assert_unchanged(model, before)
    assert (macs, params) == profile(model, inputs, verbose=False)[:2]
    assert macs == counter.total_macs
    assert_unchanged(model, before)


def test_profile_with_custom_ops_leaves_no_total_ops_behind() -> None:
    model = _mixed_train(SmallConvNet())
    model.fc.weight.requires_grad_(False)
    before = snapshot(model)

    def count_linear(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        module.total_ops += output.numel()  # thop style: mutates the module while it runs

    macs, _, _ = profile(model, torch.randn(2, 3, 8, 8), custom_ops={nn.Linear: count_linear}, verbose=False)
    assert_unchanged(model, before)
    assert macs == profile(model, torch.randn(2, 3, 8, 8), verbose=False)[0] - 2 * 10 * 65 + 2 * 10


def test_user_hooks_survive_and_run_as_in_eager() -> None:
    """The user's own hooks are neither removed nor duplicated; they fire as ``model(x)`` fires them."""
    model = SmallConvNet().eval()
    calls: list[str] = []
    model.conv.register_forward_hook(lambda m, i, o: calls.append("conv"))
    model.fc.register_forward_pre_hook(lambda m, i: calls.append("fc"))
    before = snapshot(model)
    x = torch.randn(1, 3, 8, 8)
    model(x)
    eager_calls, calls[:] = list(calls), []
    TorchFLOPsByFX(model).propagate(x)
    assert calls == eager_calls == ["conv", "fc"]
    assert_unchanged(model, before)


# -- real models ---------------------------------------------------------------------------------------
def _resnet18_train() -> nn.Module:
    torchvision = pytest.importorskip("torchvision")
    model = torchvision.models.resnet18(num_classes=10).train()  # BatchNorm in TRAIN mode
    model.layer1.requires_grad_(False)
    return model


def _vit_tiny() -> nn.Module:
    timm = pytest.importorskip("timm")
    model = timm.create_model("vit_tiny_patch16_224", num_classes=10, img_size=32).train()
    model.patch_embed.requires_grad_(False)
    return model


REAL_MODELS = {
    "resnet18_train_bn": (_resnet18_train, lambda: torch.randn(2, 3, 32, 32)),
    "timm_vit_tiny_patch16_224": (_vit_tiny, lambda: torch.randn(1, 3, 32, 32)),
}


@pytest.mark.parametrize("name", list(REAL_MODELS))
def test_real_models_are_left_exactly_as_they_were(name: str) -> None:
    build, make_input = REAL_MODELS[name]
    torch.manual_seed(0)
    model, x = build(), make_input()
    bn_stats = {k: v.clone() for k, v in model.state_dict().items() if "running" in k or "num_batches" in k}
    before = snapshot(model)

    counter = TorchFLOPsByFX(model)
    out = counter.propagate(x)
    assert_unchanged(model, before)
    assert model.training and all(m.training for m in model.modules())
    first = record_facts(counter)
    torch.testing.assert_close(counter.propagate(x), out, rtol=0, atol=0)
    assert record_facts(counter) == first
    profile(model, x, verbose=False)
    assert_unchanged(model, before)
    for key, value in bn_stats.items():  # spelled out: running stats must NOT move in train mode
        assert torch.equal(model.state_dict()[key], value), key
    if bn_stats:
        model.eval()
        torch.testing.assert_close(out, model(x))  # eval-mode output, and the stats it used were untouched


# -- inputs mutated in place: exactly as model(x) does ----------------------------------------------
class InPlaceOnInput(nn.Module):
    """Mutates its input in place, in the traced graph: ``x.add_(1)``, ``x.relu_()``."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x.add_(1)
        x.relu_()
        return self.fc(x)


class DoublesInPlace(nn.Module):
    """Untraceable (shape in control flow), so it becomes a leaf run by the aten-level fallback."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.size(0) > 0:
            x.mul_(2)
        return x


class InPlaceInLeaf(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.doubler = DoublesInPlace()
        self.fc = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.doubler(x))


@pytest.mark.parametrize("build", [InPlaceOnInput, InPlaceInLeaf], ids=["traced_add_relu", "leaf_mul"])
def test_input_is_mutated_exactly_as_model_x_mutates_it(build: type[nn.Module]) -> None:
    """README: propagate returns what model(x) returns; it runs the model, so a model that writes into
    its input writes into the caller's tensor — once, exactly as eager does, never twice."""
    model = build().eval()
    before = snapshot(model)
    x0 = torch.randn(3, 4)
    x_eager, x_ours, x_profile = x0.clone(), x0.clone(), x0.clone()
    eager_out = model(x_eager)
    assert not torch.equal(x_eager, x0)  # the model does mutate its input

    counter = TorchFLOPsByFX(model)
    out = counter.propagate(x_ours)
    assert torch.equal(x_ours, x_eager)  # mutated once, like eager (a node run twice would double it)
    torch.testing.assert_close(out, eager_out, rtol=0, atol=0)
    first = record_facts(counter)
    assert counter.leaf_modules.keys() == ({"doubler"} if build is InPlaceInLeaf else set())

    x_again = x0.clone()
    torch.testing.assert_close(counter.propagate(x_again), out, rtol=0, atol=0)
    assert torch.equal(x_again, x_eager) and record_facts(counter) == first
    profile(model, x_profile, verbose=False)
    assert torch.equal(x_profile, x_eager)
    assert_unchanged(model, before)


def test_input_without_in_place_ops_is_not_touched() -> None:
    x = torch.randn(2, 3, 8, 8)
    x_copy, version = x.clone(), x._version
    TorchFLOPsByFX(SmallConvNet()).propagate(x)
    assert torch.equal(x, x_copy) and x._version == version and not x.requires_grad


# -- several counters on one model -------------------------------------------------------------------
def _fixed(flops: int):
    def rule(call: OpCall) -> Cost:
        return Cost(flops, 0)

    return rule


def test_interleaved_counters_do_not_interfere() -> None:
    model = SmallConvNet().eval()
    x = torch.randn(2, 3, 8, 8)
    before = snapshot(model)
    default_linear = DEFAULT_REGISTRY.module_rule(nn.Linear(1, 1))
    make = {
        "plain": lambda: TorchFLOPsByFX(model),
        "ignoring": lambda: TorchFLOPsByFX(model, ignore_ops=[nn.Conv2d, "flatten"]),
        "custom_rule": lambda: TorchFLOPsByFX(model, extra_rules={nn.Linear: _fixed(1000)}),
        "whole_model_leaf": lambda: TorchFLOPsByFX(model, leaf_modules=[""]),
    }
    alone = {}
    for name, build in make.items():
        counter = build()
        counter.propagate(x)
        alone[name] = record_facts(counter)
    counters = {name: build() for name, build in make.items()}
    for _ in range(2):
        for name, counter in counters.items():  # interleaved on the same model and input
            counter.propagate(x)
            assert record_facts(counter) == alone[name], name
        profile(model, x, verbose=False)  # a third party in between
    totals = {name: c.total_flops for name, c in counters.items()}
    conv = 2 * 4 * 8 * 8 * (2 * 3 * 9 - 1) + 2 * 4 * 8 * 8  # 27,648 (test_engine's hand count)
    fc = 2 * 10 * (2 * 64 - 1) + 2 * 10  # 2,560
    assert totals["plain"] == 33_230
    assert totals["ignoring"] == 33_230 - conv
    assert totals["custom_rule"] == 33_230 - fc + 1000
    assert totals["whole_model_leaf"] == 33_230  # one node, counted call by call: same formulas
    assert {r.leaf_node for r in counters["whole_model_leaf"].records} == {"", "root_module"}
    assert DEFAULT_REGISTRY.module_rule(nn.Linear(1, 1)) is default_linear
    assert_unchanged(model, before)


def test_one_counter_switching_between_input_kinds() -> None:
    """Graphs are cached per input kind; going back to an earlier kind gives the earlier numbers."""
    model = TwoInputs().train()
    before = snapshot(model)
    counter = TorchFLOPsByFX(model)
    x, y = torch.randn(2, 3), torch.randn(2, 3)
    counter.propagate(x, y)
    first = record_facts(counter)
    counter.propagate(x, y, 3.0)  # a non-tensor value: a new graph, specialised on it
    counter.propagate(torch.randn(5, 3), torch.randn(5, 3))  # another batch size: the same graph
    assert counter.total_flops == 5 * 3 * 5 + 5 * 3 + 5 * 3 * 2  # linear 15 * (2*3 - 1) + 15 bias, * and + 15 each
    counter.propagate(x, y)
    assert record_facts(counter) == first
    assert_unchanged(model, before)


# -- dtypes: the same counts as float32 --------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64], ids=str)
def test_float_dtypes_count_like_float32(dtype: torch.dtype) -> None:
    x = torch.randn(2, 3, 8, 8)
    reference = TorchFLOPsByFX(SmallConvNet())
    reference.propagate(x)
    model = SmallConvNet().to(dtype).train()
    before = snapshot(model)
    counter = TorchFLOPsByFX(model)
    out = counter.propagate(x.to(dtype))
    assert out.dtype == dtype
    assert record_facts(counter) == record_facts(reference)
    assert counter.total_flops == 33_230
    assert profile(model, x.to(dtype), verbose=False)[:2] == profile(SmallConvNet(), x, verbose=False)[:2]
    assert_unchanged(model, before)
    assert all(p.dtype == dtype for p in model.parameters())


class EmbedThenLinear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(10, 6)
        self.fc = nn.Linear(6, 3)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.fc(self.emb(ids))


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32], ids=str)
def test_integer_indices_count_like_a_float32_input_of_the_same_shape(dtype: torch.dtype) -> None:
    model = EmbedThenLinear()
    before = snapshot(model)
    ids = torch.tensor([[1, 2, 3], [4, 5, 6]], dtype=dtype)
    ids_copy = ids.clone()
    counter = TorchFLOPsByFX(model)
    counter.propagate(ids)
    by_name = {r.name: (r.status, r.flops) for r in counter.records}
    assert by_name["emb"] == (Status.ZERO, 0)  # a lookup: no arithmetic
    fc = 2 * 3 * 3 * (2 * 6 - 1) + 2 * 3 * 3  # 18 outputs * 11 + 18 bias = 216
    assert by_name["fc"] == (Status.RULE, fc)
    as_float = TorchFLOPsByFX(nn.Sequential(model.fc))
    as_float.propagate(torch.randn(2, 3, 6))  # the float32 input the Linear sees
    assert as_float.total_flops == counter.total_flops == 216
    assert torch.equal(ids, ids_copy) and ids.dtype == dtype
    assert_unchanged(model, before)


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.int8, torch.uint8, torch.float32], ids=str)
def test_integer_arithmetic_counts_like_float32(dtype: torch.dtype) -> None:
    counter = TorchFLOPsByFX(Op(lambda x: (x * 2 + 1).sum(-1)))
    counter.propagate(torch.ones(3, 4, dtype=dtype))
    # mul 12, add 12, sum over rows of 4: 3 * 3 = 9
    assert [(r.name, r.flops) for r in counter.records if r.op == "call_function" or r.op == "call_method"] == [
        ("mul", 12), ("add", 12), ("sum_1", 9),
    ]


# -- CUDA ------------------------------------------------------------------------------------------
@pytest.mark.cuda
@pytest.mark.parametrize("mem_func_name", ["max_memory_allocated", "memory_allocated"])
def test_cuda_memory_columns_are_ints_and_the_model_stays_on_its_device(
    cuda_device: torch.device, mem_func_name: str
) -> None:
    model = SmallConvNet().to(cuda_device).train()
    model.fc.weight.requires_grad_(False)
    before = snapshot(model)
    x = torch.randn(2, 3, 8, 8, device=cuda_device)
    counter = TorchFLOPsByFX(model, mem_func_name=mem_func_name)
    out = counter.propagate(x)
    assert out.device == x.device
    for r in counter.records:
        for value in (r.mem_before_bytes, r.mem_after_bytes, r.mem_delta_bytes):
            assert isinstance(value, int) and not isinstance(value, bool), r.name
        assert r.mem_before_bytes >= 0 and r.mem_after_bytes >= 0
    rows = counter.print_result_table(show=False)
    assert all(isinstance(v, int) for row in rows for v in row[7:10])
    assert isinstance(counter.print_max_memory(show=False), int)
    assert counter.total_flops == 33_230
    assert all(t.device == x.device for t in [*model.parameters(), *model.buffers()])
    profile(model, x, verbose=False)
    assert_unchanged(model, before)
