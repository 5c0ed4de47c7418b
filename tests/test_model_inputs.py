"""Every input the model takes, or a clear error: tied weights in shape-only runs, TorchScript modules,
sparse tensors, DataParallel-style wrappers, the model's own dict and list outputs, and arguments of the
wrong kind. Counts are written as arithmetic (docs/conventions.md); each run leaves the model as it was.
"""

from __future__ import annotations

import collections
import io
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
import torch.distributed as dist
from torch import nn

from test_side_effects import assert_unchanged, snapshot
from torch_flops import Status, TorchFLOPsByFX, count_aten, memory, profile

pytestmark = [
    pytest.mark.usefixtures("one_thread"),  # conftest.py
    pytest.mark.filterwarnings("ignore:`torch.jit.:FutureWarning"),  # torch.jit.trace / script are deprecated
]

LINEAR_5_4 = 8 * (2 * 5 - 1) + 8  # Linear(5, 4) on (2, 5): 8 outputs of a length-5 dot product, + bias = 80
LINEAR_5_4_MACS = 8 * 5 + 8  # 48
X = torch.randn(2, 5, generator=torch.Generator().manual_seed(0))


def counted(model: nn.Module, *args: Any, shapes_only: bool = False, **kwargs: Any) -> TorchFLOPsByFX:
    """A counter that has run ``model`` (shape-only when asked); the model is checked unchanged."""
    before = snapshot(model)
    counter = TorchFLOPsByFX(model)
    if shapes_only:
        counter.propagate_shapes(*args, **kwargs)
    else:
        counter.propagate(*args, **kwargs)
    assert_unchanged(model, before)
    return counter


# -- tied weights in shape-only runs ----------------------------------------------------------------------
class TiedLM(nn.Module):
    """An embedding and an output layer sharing one weight, as GPT-2's ``wte`` and ``lm_head``."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 4)
        self.head = nn.Linear(4, 10, bias=False)
        self.head.weight = self.embed.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(ids))


def test_tied_weights_count_the_same_shape_only() -> None:
    model, ids = TiedLM(), torch.tensor([[1, 2, 3]])
    real = counted(model, ids).total_flops
    shapes = counted(model, ids, shapes_only=True).total_flops
    assert real == shapes == 3 * 10 * (2 * 4 - 1)  # embedding 0; head: 30 outputs of a length-4 dot product = 210
    assert model.head.weight is model.embed.weight  # still tied, still real
    assert not model.embed.weight.is_meta


def test_gpt2_tied_lm_head_shape_only_equals_real_run() -> None:
    transformers = pytest.importorskip("transformers")
    config = transformers.GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=100, n_positions=16,
                                     bos_token_id=0, eos_token_id=0, attn_implementation="eager")
    # eager attention: with SDPA, transformers looks at the mask's values to choose a causal kernel, which a
    # shape-only run cannot see, so the two runs would price different (both correct) attention paths
    model = transformers.GPT2LMHeadModel(config)
    assert model.lm_head.weight is model.transformer.wte.weight
    ids = torch.randint(0, 100, (1, 8), generator=torch.Generator().manual_seed(0))
    real = counted(model, input_ids=ids).total_flops
    assert real > 8 * 100 * (2 * 32 - 1)  # at least the LM head: 800 outputs of a length-32 dot product = 50,400
    assert counted(model, input_ids=ids, shapes_only=True).total_flops == real
    assert model.lm_head.weight is model.transformer.wte.weight


# -- TorchScript: counted as a whole through the aten-level fallback ----------------------------------------
class TwoLayers(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(5, 4)
        self.b = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        out = self.b(torch.relu(self.a(x)))
        return out if y is None else out + y


TWO_LAYERS = LINEAR_5_4 + 8 + 6 * (2 * 4 - 1) + 6  # 80 + relu 8 + Linear(4, 3) on (2, 4): 42 + 6 = 136


def _saved_and_loaded(module: torch.jit.ScriptModule) -> torch.jit.ScriptModule:
    buffer = io.BytesIO()
    torch.jit.save(module, buffer)
    buffer.seek(0)
    loaded = torch.jit.load(buffer)  # no Python source: the signature comes from the schema
    loaded(X)  # a first call caches ``forward`` in the module's __dict__ (torch's doing, as for any call)
    return loaded


SCRIPTED: dict[str, Callable[[nn.Module], torch.jit.ScriptModule]] = {
    "traced": lambda m: torch.jit.trace(m, X),
    "scripted": torch.jit.script,
    "loaded": lambda m: _saved_and_loaded(torch.jit.script(m)),
}


@pytest.mark.parametrize("make", SCRIPTED.values(), ids=SCRIPTED.keys())
def test_torchscript_module_is_counted_whole_as_the_eager_module(make: Callable[[nn.Module], Any]) -> None:
    eager = TwoLayers()
    assert counted(eager, X).total_flops == TWO_LAYERS
    module = make(eager)
    counter = counted(module, X)
    assert counter.total_flops == TWO_LAYERS
    assert "TorchScript" in counter.leaf_modules[""]
    assert not counter.unsupported
    assert torch.equal(counter.propagate(X), module(X))
    assert counted(module, X, shapes_only=True).total_flops == TWO_LAYERS


def test_torchscript_module_in_training_mode_is_counted_in_eval_mode() -> None:
    class WithDropout(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layers = TwoLayers()
            self.drop = nn.Dropout(0.5)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.drop(self.layers(x))

    module = torch.jit.script(WithDropout()).train()
    assert counted(module, X).total_flops == TWO_LAYERS  # dropout in eval mode does no arithmetic
    assert module.training and module.drop.training


def test_scripted_module_takes_its_optional_argument() -> None:
    module = torch.jit.script(TwoLayers())
    assert counted(module, X, y=torch.ones(2, 3)).total_flops == TWO_LAYERS + 6  # + the add of (2, 3)


def test_torchscript_submodule_is_counted_inside_an_eager_model() -> None:
    class Outer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = torch.jit.trace(TwoLayers(), X)
            self.c = nn.Linear(3, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.c(self.inner(x))

    assert counted(Outer(), X).total_flops == TWO_LAYERS + 4 * (2 * 3 - 1) + 4  # + Linear(3, 2) on (2, 3): 24


# -- sparse tensors: refused by name at the boundary; made inside forward, listed as not counted ----------
SPARSE_INPUTS = {
    "coo": lambda: X.to_sparse(),
    "csr": lambda: X.to_sparse_csr(),
}


@pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta")
@pytest.mark.parametrize("make", SPARSE_INPUTS.values(), ids=SPARSE_INPUTS.keys())
@pytest.mark.parametrize("shapes_only", [False, True], ids=["propagate", "propagate_shapes"])
def test_sparse_input_is_refused_naming_the_input(make: Callable[[], torch.Tensor], shapes_only: bool) -> None:
    model = SimpleLinear()
    before = snapshot(model)
    counter = TorchFLOPsByFX(model)
    run = counter.propagate_shapes if shapes_only else counter.propagate
    with pytest.raises(NotImplementedError, match=r"sparse tensors are not supported: the input 'x' of SimpleLinear.forward "
                                                  r"is a 2x5 tensor of layout torch.sparse_c\w\w.*to_dense\(\)"):
        run(make())
    assert_unchanged(model, before)


def test_sparse_tensor_inside_a_list_input_names_the_argument() -> None:
    class Sum(nn.Module):
        def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
            return xs[0] + xs[1]

    with pytest.raises(NotImplementedError, match=r"the input 'xs' of Sum.forward is a 2x5 tensor of layout torch.sparse_coo"):
        TorchFLOPsByFX(Sum()).propagate([X, X.to_sparse()])


def test_sparse_buffer_is_refused_naming_it() -> None:
    class SparseBuffer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("adjacency", torch.eye(3).to_sparse())

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.sparse.mm(self.adjacency, x)

    model = SparseBuffer()
    buffer = model.adjacency
    with pytest.raises(NotImplementedError, match=r"the buffer 'adjacency' of SparseBuffer is a 3x3 tensor of layout torch.sparse_coo"):
        TorchFLOPsByFX(model)
    assert model.adjacency is buffer


def test_sparse_tensor_made_inside_forward_is_listed_as_not_counted() -> None:
    class ToSparse(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.randn(5, 3))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.sparse.mm(x.to_sparse(), self.w) + 1

    for timing in (True, False):
        counter = counted(ToSparse(), X, timing=timing)
        assert counter.total_flops == 2 * 3  # only the dense add of (2, 3)
        assert [r.name for r in counter.unsupported] == ["to_sparse", "_sparse_mm"]
        assert all(r.status is Status.UNSUPPORTED and r.unsupported_ops for r in counter.unsupported)


@pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta")
def test_bytes_of_a_sparse_tensor_are_its_indices_and_values() -> None:
    coo = torch.eye(3).to_sparse()  # 3 stored float32 values
    assert memory.tensor_bytes(coo) == 2 * 3 * 8 + 3 * 4  # int64 indices (2, 3) + values = 60
    assert sum(memory.storages([coo]).values()) == 60
    assert memory.tensor_bytes(torch.eye(3).to_sparse_csr()) == 4 * 8 + 3 * 8 + 3 * 4  # crow + col + values = 68


# -- wrappers: the wrapped model is counted ---------------------------------------------------------------
class SimpleLinear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(5, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


WRAPPERS: dict[str, Callable[[nn.Module], nn.Module]] = {
    "data_parallel": nn.DataParallel,
    "data_parallel_twice": lambda m: nn.DataParallel(nn.DataParallel(m)),
    "torch_compile": torch.compile,  # compiles on first call only: never called here
}


@pytest.mark.parametrize("wrap", WRAPPERS.values(), ids=WRAPPERS.keys())
def test_wrapper_counts_the_wrapped_model(wrap: Callable[[nn.Module], nn.Module]) -> None:
    inner = SimpleLinear()
    wrapper = wrap(inner)
    counter = counted(wrapper, X)
    assert counter.total_flops == LINEAR_5_4 and not counter.unsupported
    assert counter.model is inner
    rows = counter.by_module()
    assert [(row.path, row.module_class, row.flops) for row in rows] == [("", "SimpleLinear", 80), ("layer", "Linear", 80)]
    macs, params, _ = profile(wrapper, X, verbose=False)
    assert (macs, params) == (LINEAR_5_4_MACS, 5 * 4 + 4)


def test_distributed_data_parallel_counts_the_wrapped_model(tmp_path: Any) -> None:
    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("needs torch.distributed with gloo")
    store = dist.FileStore(str(tmp_path / "store"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        inner = SimpleLinear()
        counter = counted(nn.parallel.DistributedDataParallel(inner), X)
        assert counter.total_flops == LINEAR_5_4 and counter.model is inner
    finally:
        dist.destroy_process_group()


def test_data_parallel_inside_a_model_and_under_count_aten() -> None:
    class Holds(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.dp = nn.DataParallel(nn.Linear(5, 4))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.dp(x)

    counter = counted(Holds(), X)  # DataParallel's forward opens a profiler range: known zero
    assert counter.total_flops == LINEAR_5_4 and not counter.unsupported
    _, tally = count_aten(nn.DataParallel(nn.Linear(5, 4)), X)
    assert tally.cost.flops == LINEAR_5_4 and not tally.unsupported


# -- outputs as the model returns them --------------------------------------------------------------------
Pair = collections.namedtuple("Pair", "first rest")


class Containers(nn.Module):
    def forward(self, x: torch.Tensor) -> dict[str, Any]:
        return {"sum": x + 1, "list": [x * 2, {"same": x}], "tuple": (x, [x]), "pair": Pair(x, [x])}


@pytest.mark.parametrize("run", ["propagate", "flops_only", "propagate_shapes"])
def test_dict_and_list_outputs_are_plain_mutable_containers(run: str) -> None:
    counter = TorchFLOPsByFX(Containers())
    if run == "propagate_shapes":
        out = counter.propagate_shapes(X)
    else:
        out = counter.propagate(X, timing=run == "propagate")
    assert counter.total_flops == 10 + 10  # x + 1 and x * 2 on (2, 5)
    assert type(out) is dict and type(out["list"]) is list and type(out["list"][1]) is dict
    assert type(out["tuple"]) is tuple and type(out["tuple"][1]) is list
    assert type(out["pair"]) is Pair and type(out["pair"].rest) is list
    out["extra"] = out["list"].append(1)  # mutable, as model(x)'s
    expected = Containers()(X)
    assert out.keys() - {"extra"} == expected.keys()


def test_list_output_is_a_list() -> None:
    class Listed(nn.Module):
        def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
            return [x + 1, x]

    out = TorchFLOPsByFX(Listed()).propagate(X)
    assert type(out) is list and torch.equal(out[0], X + 1)


# -- arguments of the wrong kind: the error names the argument -------------------------------------------
def _ran() -> TorchFLOPsByFX:
    counter = TorchFLOPsByFX(SimpleLinear())
    counter.propagate(X)
    return counter


ARGUMENT_CASES = [
    # (id, call, exception, message)
    ("repeat_str", lambda: _ran().propagate(X, repeat="3"), TypeError, r"repeat must be an int, got '3' \(str\)"),
    ("repeat_zero", lambda: _ran().propagate(X, repeat=0), ValueError, r"repeat must be >= 1, got 0"),
    ("repeat_bool", lambda: _ran().propagate(X, repeat=True), TypeError, r"repeat must be an int, got True \(bool\)"),
    ("warmup_float", lambda: _ran().propagate(X, warmup=1.5), TypeError, r"warmup must be an int, got 1.5 \(float\)"),
    ("repeat_tensor", lambda: _ran().propagate(X, repeat=torch.tensor(3)), TypeError,
     r"repeat must be an int, got a tensor of shape \(\) \(int64\)$"),
    ("warmup_negative", lambda: _ran().propagate(X, warmup=-1), ValueError, r"warmup must be >= 0, got -1"),
    ("timing_str", lambda: _ran().propagate(X, timing="no"), TypeError, r"timing must be True or False, got 'no'"),
    ("report_depth_str", lambda: _ran().report(depth="x"), TypeError, r"depth must be an int or None, got 'x' \(str\)"),
    ("report_depth_negative", lambda: _ran().report(depth=-1), ValueError, r"depth must be >= 0, got -1"),
    ("report_top_str", lambda: _ran().report(top="3"), TypeError, r"top must be an int or None, got '3'"),
    ("report_top_zero_layers", lambda: _ran().report("layers", top=0), ValueError, r"top must be >= 1, got 0"),
    ("report_sort_int", lambda: _ran().report(sort=3), TypeError, r"sort must be a string or None, got 3"),
    ("by_module_depth_str", lambda: _ran().by_module(depth="x"), TypeError, r"depth must be an int or None, got 'x'"),
    ("by_module_top_float", lambda: _ran().by_module(top=2.0), TypeError, r"top must be an int or None, got 2.0"),
    ("by_op_type_top_str", lambda: _ran().by_op_type(top="1"), TypeError, r"top must be an int or None, got '1'"),
    ("leaf_types_bare_class", lambda: TorchFLOPsByFX(SimpleLinear(), leaf_types=nn.Linear), TypeError,
     r"leaf_types must be a tuple of Module classes, got the class Linear on its own: write leaf_types=\(Linear,\)"),
    ("leaf_types_not_modules", lambda: TorchFLOPsByFX(SimpleLinear(), leaf_types=(int,)), TypeError,
     r"leaf_types must be a tuple of Module classes, got \[<class 'int'>\]"),
    ("auto_leaf_str", lambda: TorchFLOPsByFX(SimpleLinear(), auto_leaf="no"), TypeError, r"auto_leaf must be True or False"),
    ("concrete_args_list", lambda: TorchFLOPsByFX(SimpleLinear(), concrete_args=[("x", 1)]), TypeError,
     r"concrete_args must be a mapping"),
    ("input_shapes_one_shape", lambda: _ran().propagate_shapes(input_shapes=(2, 5)), TypeError,
     r"input_shapes\[0\] must be a shape such as \(1, 3, 224, 224\), got 2"),
    ("input_shapes_str_size", lambda: _ran().propagate_shapes(input_shapes=[(2, "5")]), TypeError,
     r"input_shapes\[0\]\[1\] must be an int, got '5'"),
    ("input_shapes_negative", lambda: _ran().propagate_shapes(input_shapes=[(2, -5)]), ValueError,
     r"input_shapes\[0\]\[1\] must be >= 0, got -5"),
    ("shapes_dtype_str", lambda: _ran().propagate_shapes(input_shapes=[(2, 5)], dtype="float32"), TypeError,
     r"dtype must be a torch.dtype"),
    ("profile_verbose_str", lambda: profile(SimpleLinear(), X, verbose="no"), TypeError, r"verbose must be True or False"),
    ("profile_custom_ops_list", lambda: profile(SimpleLinear(), X, custom_ops=[nn.Linear]), TypeError,
     r"custom_ops must be a mapping"),
]


@pytest.mark.parametrize("call, error, match", [pytest.param(*c[1:], id=c[0]) for c in ARGUMENT_CASES])
def test_argument_errors_name_the_argument(call: Callable[[], Any], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        call()


def test_numpy_ints_are_ints() -> None:
    counter = _ran()
    counter.propagate(X, warmup=np.int64(1), repeat=np.int32(2))
    assert counter.total_flops == LINEAR_5_4
    assert len(counter.by_module(depth=np.int64(0))) == 1
    counter.propagate_shapes(input_shapes=[np.array([2, 5])])
    assert counter.total_flops == LINEAR_5_4


# -- the command line ---------------------------------------------------------------------------------------
CLI_FACTORY = '''
import torch
from torch import nn


def make_parallel():
    return nn.DataParallel(nn.Sequential(nn.Linear(5, 4)))
'''


@pytest.mark.parametrize("option, message", [
    (["--depth", "-1"], "argument --depth: expected a number of levels >= 0, got '-1'"),
    (["--depth", "x"], "argument --depth: expected a number of levels >= 0, got 'x'"),
    (["--top", "0"], "argument --top: expected a positive number of rows, got '0'"),
])
def test_cli_int_options_name_the_option(option: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    from torch_flops import cli

    with pytest.raises(SystemExit) as info:
        cli.main(["resnet18", *option])
    assert info.value.code == 2 and message in capsys.readouterr().err


def test_cli_counts_wrapped_and_torchscript_models(tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    from torch_flops import cli

    factory = tmp_path / "wrapped.py"
    factory.write_text(CLI_FACTORY)
    assert cli.main([f"{factory}:make_parallel", "--input-shape", "2,5"]) == 0
    assert "total: 80 FLOPs, 48 MACs, 24 params" in capsys.readouterr().out  # Linear(5, 4) on (2, 5)
    saved = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.script(TwoLayers()), str(saved))
    assert cli.main([str(saved), "--input-shape", "2,5"]) == 2
    assert "is a TorchScript archive (torch.jit.save), and loading it runs the code it holds" in capsys.readouterr().err
    assert cli.main([str(saved), "--input-shape", "2,5", "--trust-pickle"]) == 0
    assert f"total: {TWO_LAYERS} FLOPs" in capsys.readouterr().out
