"""FLOPs of one timm attention block (768 channels, 2 heads, 197 tokens), node by node.

Run: python examples/example2.py
"""

import torch
from timm.models.vision_transformer import Block

from torch_flops import TorchFLOPsByFX


def main() -> None:
    channels, tokens, batch = 768, 14**2 + 1, 1
    block = Block(channels, num_heads=2, qkv_bias=True)
    block.attn.fused_attn = False  # the explicit q @ k^T / softmax / @ v path
    block.eval()

    counter = TorchFLOPsByFX(block)
    print("*" * 120)
    counter.graph_model.graph.print_tabular()
    counter.propagate(torch.randn(batch, tokens, channels))
    print("*" * 120)
    counter.print_result_table()
    counter.print_total_flops()


if __name__ == "__main__":
    main()
