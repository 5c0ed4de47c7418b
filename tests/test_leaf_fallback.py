"""Models symbolic_trace cannot trace: the automatic leaf fallback, and inputs as models take them."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn
from torch.nn.modules import module as module_hooks

from models import Branchy, HasBranchy, SimpleModel
from torch_flops import ModuleCost, Status, TorchFLOPsByFX, profile

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
        "block": "TraceError: symbolically traced variables cannot be used as inputs to control flow"
    }
    by_target = {r.target: r for r in counter.records if r.op == "call_module"}
    assert by_target["pre"].status is Status.RULE and by_target["pre"].flops == 12 * 7 + 12  # Linear(4, 4) on (3, 4)
    block = by_target["block"]
    assert block.status is Status.FALLBACK
    # x.sum(): 11 adds; > 0: 1 comparison; inner Linear(4, 4) on (3, 4): 12 * (2*4 - 1) + 12 = 96
    assert block.flops == 11 + 1 + 96
    assert block.module_costs == (
        ModuleCost("block", "Branchy", 12, 0, 1, (3, 4), (3, 4)),
        ModuleCost("block.inner", "Linear", 96, 60, 1, (3, 4), (3, 4)),
    )
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
    block = next(r for r in counter.records if r.target == "block")
    assert block.flops == 11 + 1  # the sum and the comparison; the Linear did not run
    assert [c.path for c in block.module_costs] == ["block"]


def test_an_untraceable_root_becomes_one_node() -> None:
    model = Branchy()
    counter = TorchFLOPsByFX(model)
    x = torch.rand(3, 4) + 0.1
    out = counter.propagate(x)
    torch.testing.assert_close(out, model(x))
    assert list(counter.leaf_modules) == [""]
    (node,) = [r for r in counter.records if r.op == "call_module"]
    assert node.target == "(root)" and node.module_class == "Branchy" and node.status is Status.FALLBACK
    assert [c.path for c in node.module_costs] == ["", "inner"]
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
    (node,) = [r for r in counter.records if r.op == "call_module"]
    assert node.status is Status.FALLBACK and node.flops == 44
    assert [(c.path, c.flops) for c in node.module_costs] == [("", 4), ("layer", 40)]
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
