"""Models symbolic_trace cannot trace: the automatic leaf fallback, and inputs as models take them."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn
from torch.nn.modules import module as module_hooks

from models import Branchy, HasBranchy, SimpleModel
from torch_flops import Status, TorchFLOPsByFX, profile

torch.manual_seed(0)


def identity_model() -> HasBranchy:
    """``pre`` is the identity, so a positive input takes ``Branchy``'s ``if x.sum() > 0`` branch."""
    model = HasBranchy()
    with torch.no_grad():
        for layer in (model.pre, model.block.inner):
            layer.weight.copy_(torch.eye(4))
            layer.bias.zero_()
    return model


def test_only_the_untraceable_submodule_becomes_a_leaf() -> None:
    counter = TorchFLOPsByFX(identity_model())
    counter.propagate(torch.rand(3, 4) + 0.1)
    assert counter.leaf_modules == {
        "block": "forward branches on a tensor's value (if/while on a tensor), which torch.fx cannot trace; counted op by op "
                 "instead [TraceError: symbolically traced variables cannot be used as inputs to control flow]"
    }
    pre = next(r for r in counter.records if r.op == "call_module")
    assert pre.target == "pre" and pre.status is Status.RULE and pre.flops == 12 * 7 + 12  # Linear(4, 4) on (3, 4)
    block = [(r.name, r.op, r.target, r.module_path, r.module_class, r.status, r.flops, r.macs, r.input_shapes, r.output_shapes)
             for r in counter.records if r.leaf_node == "block"]
    assert block == [  # one record per call the leaf made, each charged to the module that made it
        ("block.sum", "call_method", "sum", "block", "Branchy", Status.RULE, 11, 0, ((3, 4),), ((),)),  # 12 - 1 adds
        ("block.gt", "call_method", "gt", "block", "Branchy", Status.RULE, 1, 0, ((),), ((),)),
        # inner Linear(4, 4) on (3, 4): 12 * (2*4 - 1) + 12 = 96 FLOPs, 12 * 4 + 12 = 60 MACs
        ("block.linear", "call_function", "torch.nn.functional.linear", "block.inner", "Linear", Status.RULE, 96, 60,
         ((3, 4), (4, 4), (4,)), ((3, 4),)),
    ]
    assert counter.total_flops == 96 + 108 and not counter.unsupported


def test_modules_inside_a_leaf_keep_their_rows_in_the_layer_view() -> None:
    macs, params, info = profile(identity_model(), torch.rand(3, 4) + 0.1, verbose=False)
    rows = {layer.path: layer for layer in info.layers}
    assert rows["block.inner"].module_class == "Linear"
    assert (rows["block.inner"].macs, rows["block.inner"].flops, rows["block.inner"].params) == (60, 96, 20)
    assert rows["block.inner"].input_shape == rows["block.inner"].output_shape == (3, 4)
    assert macs == 60 + 60 and params == 40


def test_the_other_branch_is_counted_as_it_ran() -> None:
    counter = TorchFLOPsByFX(identity_model())
    counter.propagate(-torch.rand(3, 4) - 0.1)
    block = [r for r in counter.records if r.leaf_node == "block"]
    assert [(r.target, r.flops) for r in block] == [("sum", 11), ("gt", 1)]  # the Linear did not run
    assert {r.module_path for r in block} == {"block"}


def test_an_untraceable_root_becomes_one_node() -> None:
    model = Branchy()
    counter = TorchFLOPsByFX(model)
    x = torch.rand(3, 4) + 0.1
    out = counter.propagate(x)
    torch.testing.assert_close(out, model(x))
    assert list(counter.leaf_modules) == [""]
    calls = [r for r in counter.records if r.leaf_node]
    assert {r.leaf_node for r in calls} == {"root_module"} and not any(r.op == "call_module" for r in counter.records)
    assert [(r.module_path, r.module_class, r.flops) for r in calls] == [("", "", 11), ("", "", 1), ("inner", "Linear", 96)]
    assert counter.total_flops == 11 + 1 + 96


def test_a_bare_torch_nn_layer_is_counted_by_its_rule() -> None:
    counter = TorchFLOPsByFX(nn.Linear(5, 4))
    counter.propagate(torch.randn(1, 5))
    assert counter.total_flops == 40
    (node,) = [r for r in counter.records if r.op == "call_module"]
    assert node.status is Status.RULE and node.module_class == "Linear"


def test_user_named_leaves_and_no_hooks_left_behind() -> None:
    model = SimpleModel(add_one=True)
    counter = TorchFLOPsByFX(model, leaf_modules=["layer"])
    counter.propagate(torch.randn(1, 5))
    assert counter.leaf_modules == {"layer": "named by the user"}
    assert counter.total_flops == 44
    counter = TorchFLOPsByFX(model, leaf_modules=[""])
    counter.propagate(torch.randn(1, 5))
    calls = [(r.module_path, r.target, r.flops) for r in counter.records if r.leaf_node == "root_module"]
    assert calls == [("layer", "torch.nn.functional.linear", 40), ("", "add_", 4)]  # x.add_(1)
    assert not module_hooks._global_forward_hooks and not module_hooks._global_forward_pre_hooks
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
    with pytest.raises(ValueError, match=r"leaf_modules \['nope'\] are not submodules of SimpleModel"):
        TorchFLOPsByFX(model, leaf_modules=["nope"])


# -- inputs as models take them ------------------------------------------------------------------------
class DictIn(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, batch: dict[str, torch.Tensor], scale: float = 1.0, mask: torch.Tensor | None = None) -> dict:
        out = self.fc(batch["x"]) * scale
        if mask is not None:
            out = out + mask
        return {"out": out, "y": batch["y"]}


class ListIn(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, xs: list[torch.Tensor], relu: bool = False) -> tuple[torch.Tensor, int]:
        total = sum(self.fc(x) for x in xs)
        return (total.relu() if relu else total), len(xs)


@dataclasses.dataclass
class Output:
    logits: torch.Tensor
    hidden: torch.Tensor


class DataclassOut(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> Output:
        h = self.fc(x)
        return Output(logits=h.softmax(-1), hidden=h)


def test_dict_inputs_keyword_none_and_float_arguments() -> None:
    model, x, y = DictIn(), torch.randn(2, 4), torch.randn(5)
    counter = TorchFLOPsByFX(model)
    out = counter.propagate({"x": x, "y": y})
    torch.testing.assert_close(out["out"], model({"x": x, "y": y})["out"])
    assert counter.total_flops == 4 * 7 + 4 + 4  # Linear(4, 2) on (2, 4): 4 * (2*4 - 1) + 4; * scale
    mask = torch.randn(2, 2)
    out = counter.propagate({"x": x, "y": y}, scale=2.0, mask=mask)
    torch.testing.assert_close(out["out"], model({"x": x, "y": y}, 2.0, mask)["out"])
    assert counter.total_flops == 32 + 4 + 4  # + the mask add
    assert counter.leaf_modules == {}


def test_lists_iterated_bool_flags_and_non_tensor_outputs() -> None:
    model, xs = ListIn(), [torch.randn(2, 4) for _ in range(3)]
    counter = TorchFLOPsByFX(model)
    out, n = counter.propagate(xs, relu=True)
    torch.testing.assert_close(out, model(xs, relu=True)[0])
    assert n == 3 and counter.leaf_modules == {}
    # 3 Linear(4, 4) on (2, 4): 3 * (8 * 7 + 8) = 192; sum(): 0 + a, + b, + c: 24; relu 8
    assert counter.total_flops == 192 + 24 + 8
    counter.propagate(xs[:2])
    assert counter.total_flops == 128 + 16


def test_dataclass_outputs() -> None:
    model, x = DataclassOut(), torch.randn(2, 4)
    counter = TorchFLOPsByFX(model)
    out = counter.propagate(x)
    assert isinstance(out, Output)
    torch.testing.assert_close(out.logits, model(x).logits)
    assert counter.total_flops == 6 * 7 + 6 + 2 * (3 * 3 - 1)  # Linear(4, 3) on (2, 4); softmax 2 rows of 3


def test_concrete_args() -> None:
    model, x = DictIn(), torch.randn(2, 4)
    counter = TorchFLOPsByFX(model, concrete_args={"scale": 3.0})
    out = counter.propagate({"x": x, "y": x})
    torch.testing.assert_close(out["out"], model({"x": x, "y": x}, 3.0)["out"])
