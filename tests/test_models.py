"""Exact totals of real models at (1, 3, 224, 224)."""

import pytest
import torch

from torch_flops import Status, TorchFLOPsByFX

timm = pytest.importorskip("timm")
torchvision = pytest.importorskip("torchvision")


def explicit_attention(model: torch.nn.Module) -> torch.nn.Module:
    """What TIMM_FUSED_ATTN=0 does: the q @ k^T / softmax / @ v path instead of fused SDPA."""
    for module in model.modules():
        if hasattr(module, "fused_attn"):
            module.fused_attn = False
    return model


def image() -> torch.Tensor:
    return torch.randn(1, 3, 224, 224)


def test_vit_base_patch16_224() -> None:
    counter = TorchFLOPsByFX(explicit_attention(timm.create_model("vit_base_patch16_224")))
    counter.propagate(image())
    assert counter.total_flops == 35_164_979_282
    assert not counter.unsupported
    # timm's mask helpers have no rule: the aten fallback runs them and finds no arithmetic without a mask
    helpers = [r for r in counter.records if r.target.rsplit(".", 1)[-1] in ("resolve_self_attn_mask", "maybe_add_mask")]
    assert len(helpers) == 24 and all(r.status is Status.FALLBACK and r.flops == 0 for r in helpers)
    layer_norms = [r for r in counter.records if r.target == "torch.nn.functional.layer_norm"]
    assert len(layer_norms) == 25 and all(r.flops == 197 * 768 * 4 for r in layer_norms)


@pytest.mark.parametrize("build", [lambda: timm.create_model("resnet50"), lambda: torchvision.models.resnet50()], ids=["timm", "torchvision"])
def test_resnet50(build) -> None:
    counter = TorchFLOPsByFX(build())
    counter.propagate(image())
    assert counter.total_flops == 8_228_544_512
    assert not counter.unsupported
    # upstream's 8,227,340,288 read the int max-pool window 3 as 3 instead of 3x3
    maxpool = next(r for r in counter.records if r.module_class == "MaxPool2d")
    assert maxpool.flops == 64 * 56 * 56 * (9 - 1)
    assert 8_228_544_512 - 8_227_340_288 == 64 * 56 * 56 * (8 - 2)
    assert all(r.status is not Status.UNSUPPORTED for r in counter.records)
