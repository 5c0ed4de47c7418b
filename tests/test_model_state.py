"""propagate() leaves the user's model exactly as it was."""

import pytest
import torch
from torch import nn

from models import SmallConvNet
from torch_flops import NodeExecutionError, TorchFLOPsByFX


def snapshot(model: nn.Module) -> dict:
    return {
        "state": {k: v.clone() for k, v in model.state_dict().items()},
        "training": {name: m.training for name, m in model.named_modules()},
        "requires_grad": {name: p.requires_grad for name, p in model.named_parameters()},
        "attributes": {name: sorted(vars(m)) for name, m in model.named_modules()},
        "hooks": {
            name: (len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks))
            for name, m in model.named_modules()
        },
        "grads": {name: p.grad for name, p in model.named_parameters()},
    }


def assert_unchanged(before: dict, after: dict) -> None:
    assert before["state"].keys() == after["state"].keys()
    for key, value in before["state"].items():
        assert torch.equal(value, after["state"][key]), key
    for field in ("training", "requires_grad", "attributes", "hooks", "grads"):
        assert before[field] == after[field], field


def training_model() -> nn.Module:
    model = SmallConvNet()
    model.train()
    model.bn.eval()  # a mixed set of flags must come back as it was
    model.conv.weight.requires_grad_(False)
    return model


def test_propagate_leaves_model_unchanged() -> None:
    model = training_model()
    before = snapshot(model)
    counter = TorchFLOPsByFX(model)
    assert_unchanged(before, snapshot(model))
    counter.propagate(torch.randn(2, 3, 8, 8))
    assert_unchanged(before, snapshot(model))
    assert model.training and not model.bn.training


def test_batchnorm_running_stats_untouched_in_training_mode() -> None:
    model = SmallConvNet().train()
    mean, var, batches = model.bn.running_mean.clone(), model.bn.running_var.clone(), model.bn.num_batches_tracked.clone()
    TorchFLOPsByFX(model).propagate(torch.randn(4, 3, 8, 8) * 10 + 3)
    assert torch.equal(model.bn.running_mean, mean) and torch.equal(model.bn.running_var, var)
    assert torch.equal(model.bn.num_batches_tracked, batches)


def test_output_has_no_autograd_graph() -> None:
    out = TorchFLOPsByFX(SmallConvNet()).propagate(torch.randn(1, 3, 8, 8))
    assert out.grad_fn is None and not out.requires_grad


def test_two_calls_give_identical_counts() -> None:
    counter = TorchFLOPsByFX(SmallConvNet())
    x = torch.randn(2, 3, 8, 8)
    counter.propagate(x)
    first = [(r.name, r.status, r.flops, r.macs, r.output_shapes) for r in counter.records]
    counter.propagate(x)
    assert first == [(r.name, r.status, r.flops, r.macs, r.output_shapes) for r in counter.records]


def test_failed_run_restores_model() -> None:
    model = training_model()
    before = snapshot(model)
    with pytest.raises(NodeExecutionError):
        TorchFLOPsByFX(model).propagate(torch.randn(2, 5, 8, 8))
    assert_unchanged(before, snapshot(model))


def test_tensor_constants_are_not_left_on_the_model() -> None:
    class WithConstant(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(4, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.lin(x) + torch.tensor([1.0, 2.0, 3.0, 4.0])

    model = WithConstant()
    before = snapshot(model)
    counter = TorchFLOPsByFX(model)
    x = torch.randn(2, 4)
    torch.testing.assert_close(counter.propagate(x), model(x))
    assert counter.total_flops == 8 * 7 + 8 + 8  # linear 8 * (2*4 - 1) + 8 bias, + 8 adds
    assert_unchanged(before, snapshot(model))
