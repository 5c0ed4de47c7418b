"""Sorting / selection, grid_sample and torchvision's detection ops: hand-computed costs, FX vs aten."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F

from models import Op
from torch_flops import Cost, Status, TorchFLOPsByFX, count_aten

torch.manual_seed(0)
torchvision = pytest.importorskip("torchvision")


def fx_cost(fn: Any, *inputs: torch.Tensor) -> Cost:
    counter = TorchFLOPsByFX(Op(fn))
    counter.propagate(*inputs)
    assert not counter.unsupported
    return Cost(counter.total_flops, counter.total_macs)


CASES = [
    # sort along the last dim of (2, 8): 2 lines * 7 * ceil(log2 8) = 42
    ("sort", lambda x: torch.sort(x).values, (torch.randn(2, 8),), 42),
    ("argsort_dim0", lambda x: x.argsort(dim=0), (torch.randn(4, 3),), 3 * 3 * 2),  # 3 lines * 3 * 2
    ("msort", lambda x: torch.msort(x), (torch.randn(4, 3),), 3 * 3 * 2),
    # topk(5) of (2, 100): 2 * 99 * ceil(log2 5) = 594; topk(1) is a max: 2 * 99
    ("topk5", lambda x: x.topk(5).values, (torch.randn(2, 100),), 594),
    ("topk1", lambda x: torch.topk(x, 1, dim=-1).values, (torch.randn(2, 100),), 198),
    ("kthvalue", lambda x: torch.kthvalue(x, 2).values, (torch.randn(3, 4),), 3 * 3 * 2),
    ("median_all", lambda x: x.median(), (torch.randn(3, 4),), 11 * 4),  # one line of 12: 11 * ceil(log2 12)
    ("median_dim", lambda x: x.median(dim=1).values, (torch.randn(3, 4),), 3 * 3 * 2),
    ("mode", lambda x: torch.mode(x).values, (torch.randint(0, 3, (2, 5)).float(),), 2 * 4 * 3),
    # aminmax over the last dim of (3, 4): 2 * 3 * 3 = 18
    ("aminmax", lambda x: torch.aminmax(x, dim=-1).max, (torch.randn(3, 4),), 18),
    # unique of 6 values: sort 5 * 3 = 15, + 5 neighbour comparisons
    ("unique", lambda x: torch.unique(x), (torch.tensor([3.0, 1, 2, 3, 1, 5]),), 20),
    ("unique_consecutive", lambda x: torch.unique_consecutive(x), (torch.tensor([1.0, 1, 2, 3, 3]),), 4),
    # bucketize 6 values into 3 boundaries: 6 * ceil(log2 4) = 12
    ("bucketize", Op(lambda x, b: torch.bucketize(x, b), b=torch.tensor([0.0, 1, 2])), (torch.randn(6),), 12),
    ("searchsorted", Op(lambda x, s: torch.searchsorted(s, x), s=torch.tensor([0.0, 1, 2, 3, 4, 5, 6])), (torch.randn(5),), 15),
    # grid_sample bilinear to (1, 2, 3, 3): 18 outputs * 7; nearest: 0; bicubic: 18 * 31
    ("grid_sample_bilinear", lambda x, g: F.grid_sample(x, g, align_corners=False), (torch.randn(1, 2, 4, 4), torch.rand(1, 3, 3, 2) * 2 - 1), 18 * 7),
    ("grid_sample_nearest", lambda x, g: F.grid_sample(x, g, mode="nearest", align_corners=False), (torch.randn(1, 2, 4, 4), torch.rand(1, 3, 3, 2) * 2 - 1), 0),
    ("grid_sample_bicubic", lambda x, g: F.grid_sample(x, g, mode="bicubic", align_corners=False), (torch.randn(1, 2, 4, 4), torch.rand(1, 3, 3, 2) * 2 - 1), 18 * 31),
    # affine_grid to (2, ., 8, 8): 128 points, each (x, y, 1) times theta's 2 rows: 256 dot products of 3
    ("affine_grid", lambda t: F.affine_grid(t, [2, 4, 8, 8], align_corners=False), (torch.randn(2, 2, 3),), 256 * 5),
    # max_unpool2d scatters each value to its index: a copy
    ("max_unpool2d", lambda x, i: F.max_unpool2d(x, i, 2), F.max_pool2d(torch.randn(1, 2, 4, 4), 2, return_indices=True), 0),
]


@pytest.mark.parametrize("case_id, fn, inputs, flops", CASES, ids=[c[0] for c in CASES])
def test_hand_computed_and_equal_to_the_aten_count(case_id: str, fn: Any, inputs: tuple, flops: int) -> None:
    assert fx_cost(fn, *inputs).flops == flops
    module = fn if isinstance(fn, torch.nn.Module) else Op(fn)
    _, tally = count_aten(module, *inputs)
    assert not tally.unsupported and tally.cost.flops == flops


def boxes(n: int) -> torch.Tensor:
    xy = torch.rand(n, 2) * 50
    return torch.cat([xy, xy + 10 + torch.rand(n, 2) * 20], dim=1)


def test_nms_upper_bound() -> None:
    b, scores = boxes(6), torch.rand(6)
    _, tally = count_aten(torchvision.ops.nms, b, scores, 0.5)
    # sort 5 * ceil(log2 6) = 15; areas 3 * 6 = 18; 13 per pair: 13 * 15 = 195
    assert tally.by_op["torchvision.nms"] == Cost(15 + 18 + 195, 0)


def test_roi_align_fixed_sampling_ratio() -> None:
    features, rois = torch.randn(1, 4, 16, 16), torch.tensor([[0, 1.0, 1, 9, 9], [0, 2, 3, 12, 14], [0, 0, 0, 5, 5]])
    _, tally = count_aten(torchvision.ops.roi_align, features, rois, (7, 7), 1.0, 2)
    # 3 boxes * 4 channels * 49 = 588 outputs; S = 2 * 2 = 4 samples: 8 * 4 FLOPs, 4 * 4 MACs each
    assert tally.by_op["torchvision.roi_align"] == Cost(588 * 32, 588 * 16)


def test_roi_align_adaptive_sampling_reads_the_boxes() -> None:
    features = torch.randn(1, 2, 32, 32)
    rois = torch.tensor([[0, 0.0, 0, 14, 7], [0, 0, 0, 4, 4]])  # bins of (7/2, 14/2) and (2, 2) pixels
    _, tally = count_aten(torchvision.ops.roi_align, features, rois, (2, 2), 1.0, -1, False)
    # box 0: ceil(3.5) * ceil(7) = 28 samples per bin; box 1: ceil(2) * ceil(2) = 4; 2 channels * 4 bins each
    per_box_outputs = 2 * 4
    assert tally.by_op["torchvision.roi_align"] == Cost(per_box_outputs * 8 * (28 + 4), per_box_outputs * 4 * (28 + 4))


def test_detection_model_counts_every_op() -> None:
    model = torchvision.models.detection.fasterrcnn_mobilenet_v3_large_320_fpn(weights=None, weights_backbone=None)
    counter = TorchFLOPsByFX(model)
    counter.propagate([torch.rand(3, 160, 160)])
    assert list(counter.leaf_modules) == [""]  # GeneralizedRCNN.forward calls len() on its input
    calls = [r for r in counter.records if r.leaf_node == "root_module"]
    assert calls and not counter.unsupported and not any(r.op == "call_module" for r in counter.records)
    paths = {r.module_path for r in calls}
    assert {"backbone.body.0.0", "rpn.head.conv.0.0", "roi_heads.box_head.fc6", "roi_heads.box_predictor.cls_score"} <= paths
    assert sum(r.flops for r in calls) == counter.total_flops > 0
