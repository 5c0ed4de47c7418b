"""Activation checkpointing is kept as one call however the model reaches it: by its global name, as
``torch.utils.checkpoint.checkpoint``, through a ``functools.partial`` a module holds (how Hugging Face
keeps its ``_gradient_checkpointing_func``), and through ``checkpoint_sequential``. Traced through
instead, the recomputation would vanish from the backward and the saved activations would be those of
a model without checkpointing."""

from __future__ import annotations

import functools

import pytest
import torch
import torch.utils.checkpoint as checkpointing
from torch import nn
from torch.utils.checkpoint import checkpoint, checkpoint_sequential

from torch_flops import TorchFLOPsByFX

from models import costing

LINEAR_1 = 8 * 32 * (2 * 64 - 1) + 8 * 32  # Linear(64, 32) on (8, 64): 32,768
RELU_1 = 8 * 32
LINEAR_2 = 8 * 16 * (2 * 32 - 1) + 8 * 16  # Linear(32, 16): 8,192
RELU_2 = 8 * 16


class Block(nn.Module):
    def __init__(self, form: str) -> None:
        super().__init__()
        self.block = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 16))
        self.form = form
        self.checkpointed = functools.partial(checkpoint, use_reentrant=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.form == "plain":
            return self.block(x)
        if self.form == "global":
            return checkpoint(self.block, x, use_reentrant=False)
        if self.form == "module attribute":
            return checkpointing.checkpoint(self.block, x, use_reentrant=False)
        return self.checkpointed(self.block, x)


def counted(model: nn.Module, x: torch.Tensor) -> TorchFLOPsByFX:
    counter = TorchFLOPsByFX(model)
    counter.propagate(x, backward=True)
    return counter


@pytest.mark.parametrize("form", ["module attribute", "partial"])
def test_every_form_counts_as_the_global_name_does(form: str) -> None:
    torch.manual_seed(0)
    x = torch.randn(8, 64)
    reference, counter = counted(Block("global"), x), counted(Block(form), x)
    plain = counted(Block("plain"), x)
    assert counter.total_flops == reference.total_flops == LINEAR_1 + RELU_1 + LINEAR_2
    assert counter.total_backward_flops == reference.total_backward_flops == plain.total_backward_flops
    assert counter.total_recompute_flops == reference.total_recompute_flops == LINEAR_1 + RELU_1  # run again
    calls = [(r.module_path, r.target) for r in costing(counter.records) if r.leaf_node]
    assert calls == [("block.0", "torch.nn.functional.linear"), ("block.1", "torch.nn.functional.relu"),
                     ("block.2", "torch.nn.functional.linear")]
    saved = {name: c.training_memory().saved_activation_bytes for name, c in (("form", counter), ("plain", plain))}
    assert saved["plain"] - saved["form"] == 8 * 32 * 4  # the relu's output is recomputed, not kept


def test_the_partial_is_put_back_after_the_trace() -> None:
    model = Block("partial")
    held = model.checkpointed
    counted(model, torch.randn(8, 64))
    assert model.checkpointed is held and checkpointing.checkpoint is checkpoint


class Segments(nn.Module):
    def __init__(self, segments: int | None) -> None:
        super().__init__()
        self.seq = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU())
        self.segments = segments

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.segments is None:
            return self.seq(x)
        return checkpoint_sequential(self.seq, self.segments, x, use_reentrant=False)


def test_checkpoint_sequential_recomputes_all_but_its_last_segment() -> None:
    """Two segments: the first (Linear(64, 32), ReLU) is checkpointed and runs again in the backward;
    the last runs once, as checkpoint_sequential does."""
    torch.manual_seed(0)
    x = torch.randn(8, 64)
    plain, kept = counted(Segments(None), x), counted(Segments(2), x)
    assert kept.total_flops == plain.total_flops == LINEAR_1 + RELU_1 + LINEAR_2 + RELU_2
    assert kept.total_backward_flops == plain.total_backward_flops
    assert kept.total_recompute_flops == LINEAR_1 + RELU_1
    assert plain.total_recompute_flops == 0
    assert [r.module_path for r in costing(kept.records) if r.leaf_node] == ["seq.0", "seq.1", "seq.2", "seq.3"]
    assert not kept.leaf_modules  # the root stays traced
