"""torchvision beyond classification: every model profiles with 0 unsupported nodes (slow: -m slow)."""

from __future__ import annotations

import pytest
import torch

from torch_flops import TorchFLOPsByFX

torchvision = pytest.importorskip("torchvision")
M = torchvision.models


def image(size: int = 224) -> torch.Tensor:
    return torch.rand(1, 3, size, size)


CASES = {
    "fasterrcnn_mobilenet_v3_large_320_fpn": (lambda: M.detection.fasterrcnn_mobilenet_v3_large_320_fpn(weights=None, weights_backbone=None), lambda: ([torch.rand(3, 320, 320)],)),
    "maskrcnn_resnet50_fpn": (lambda: M.detection.maskrcnn_resnet50_fpn(weights=None, weights_backbone=None), lambda: ([torch.rand(3, 320, 320)],)),
    "retinanet_resnet50_fpn": (lambda: M.detection.retinanet_resnet50_fpn(weights=None, weights_backbone=None), lambda: ([torch.rand(3, 320, 320)],)),
    "deeplabv3_resnet50": (lambda: M.segmentation.deeplabv3_resnet50(weights=None, weights_backbone=None), lambda: (image(),)),
    "lraspp_mobilenet_v3_large": (lambda: M.segmentation.lraspp_mobilenet_v3_large(weights=None, weights_backbone=None), lambda: (image(),)),
    "raft_small": (lambda: M.optical_flow.raft_small(weights=None), lambda: (torch.rand(1, 3, 128, 128), torch.rand(1, 3, 128, 128))),
    "r3d_18": (lambda: M.video.r3d_18(weights=None), lambda: (torch.rand(1, 3, 16, 112, 112),)),
    "swin_t": (lambda: M.swin_t(weights=None), lambda: (image(),)),
    "vit_b_16": (lambda: M.vit_b_16(weights=None), lambda: (image(),)),
    "convnext_tiny": (lambda: M.convnext_tiny(weights=None), lambda: (image(),)),
    "efficientnet_b0": (lambda: M.efficientnet_b0(weights=None), lambda: (image(),)),
    "regnet_y_400mf": (lambda: M.regnet_y_400mf(weights=None), lambda: (image(),)),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CASES))
def test_profiles_with_every_node_counted(name: str) -> None:
    build, make_inputs = CASES[name]
    torch.manual_seed(0)
    model, inputs = build().eval(), make_inputs()
    counter = TorchFLOPsByFX(model)
    counter.propagate(*inputs)
    assert not counter.unsupported, [(r.target, r.unsupported_ops) for r in counter.unsupported]
    assert counter.total_flops > 0
    if counter.leaf_modules:  # the calls inside leaves are records of their own, under the leaves' modules
        calls = [r for r in counter.records if r.leaf_node]
        leaves = tuple(counter.leaf_modules)
        assert all(any(r.module_path == p or r.module_path.startswith(p + ".") or not p for p in leaves) for r in calls)
