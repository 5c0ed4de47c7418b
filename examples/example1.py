"""FLOPs, time and memory of timm ViT-B/16 and ResNet-50 at (1, 3, 224, 224).

Run: python examples/example1.py
"""

import os

os.environ.setdefault("TIMM_FUSED_ATTN", "0")  # count the explicit attention path, as upstream does

import timm  # noqa: E402
import torch  # noqa: E402

from torch_flops import TorchFLOPsByFX  # noqa: E402


def main() -> None:
    x = torch.randn(1, 3, 224, 224)
    for name in ("vit_base_patch16_224", "resnet50"):
        print("=" * 10, name, "=" * 10)
        model = timm.create_model(name, pretrained=False)
        counter = TorchFLOPsByFX(model)
        counter.propagate(x)
        counter.print_total_flops()
        counter.print_total_time()
        counter.print_max_memory()


if __name__ == "__main__":
    main()
