"""``torch.autocast`` regions of ``forward`` are counted at the dtypes they run in: each node made inside
one runs inside it again (docs/conventions.md, "Autocast"); autocast around ``propagate`` applies to
the whole run, as it does to an eager forward; the graph holds only what ``forward`` switches on."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from torch_flops import TorchFLOPsByFX
from torch_flops.autocast import AUTOCAST_META

torch.manual_seed(0)

BF16, FP32 = 2, 4  # bytes per element
FC_FLOPS = 8 * 32 * (2 * 64 - 1) + 8 * 32  # Linear(64, 32) on (8, 64): 32,768, the product then the bias add
ADD_FLOPS = 8 * 32  # the (8, 32) + (32,) add: 256
FC_WEIGHT_BYTES = (32 * 64 + 32) * FP32  # the float32 weight and bias the layer reads (and casts inside)


class LinearInBfloat16(nn.Module):
    """``Linear(64, 32)`` inside a bfloat16 CPU autocast region, then a float32 add outside it."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(64, 32)
        self.shift = nn.Parameter(torch.randn(32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = self.fc(x)
        return y + self.shift  # bfloat16 + float32: float32, outside the region


class NestedOff(nn.Module):
    """An ``enabled=False`` region inside an enabled one: ``fc2`` and the cast before it run in float32."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(64, 32), nn.Linear(32, 32), nn.Linear(32, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = self.fc1(x)
            with torch.autocast("cpu", enabled=False):
                z = self.fc2(y.float())
            return self.fc3(z)


def by_name(counter: TorchFLOPsByFX) -> dict:
    return {record.name: record for record in counter.records}


def test_the_nodes_of_a_region_record_its_state_and_the_others_nothing() -> None:
    graph = TorchFLOPsByFX(LinearInBfloat16()).graph_model.graph
    state = {node.name: node.meta.get(AUTOCAST_META) for node in graph.nodes}
    assert state == {"x": None, "fc": (("cpu", torch.bfloat16),), "shift": None, "add": None, "output": None}
