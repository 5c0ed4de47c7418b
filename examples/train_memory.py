"""Does full fine-tuning of a Llama-2-7B-sized model fit in 80 GB? Counted on the meta device in seconds.

    python examples/train_memory.py                     # sequence 4096, batch 1
    python examples/train_memory.py --seq 2048 --layers 4

The model (examples/llm_meta.py's compact Llama decoder with Llama-2-7B's dimensions, on ``meta``, its
rotary tables in the activations' dtype:
nothing is allocated; transformers' own Llama reads its position ids' values when it trains without a
cache, which meta tensors do not have) runs one training step shape-only, with and without activation
checkpointing (``torch.utils.checkpoint`` around each block, non-reentrant):
``propagate(ids, backward=True, mode="train", optimizer=torch.optim.AdamW)`` gives the step's FLOPs and
its analytic memory (``training_memory()``: parameters, gradients, optimizer state, the activations
autograd saves, the backward's allocation peak). Two precisions are shown: everything in bf16, and
bf16 weights and gradients with fp32 master weights and fp32 Adam states (mixed precision as usually
run: 2 + 2 + 4 + 8 = 16 bytes per parameter before activations).

The saved activations are those of the kernels that run: on meta, scaled dot-product attention runs as
its math decomposition, which saves the score and softmax matrices (2 x heads x sequence^2 values per
layer); a flash-attention kernel on a GPU saves neither, so without checkpointing the real step needs
less than shown here. With checkpointing only each block's input is kept.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import torch

from torch_flops import TorchFLOPsByFX

sys.path.insert(0, str(Path(__file__).resolve().parent))
from llm_meta import Decoder, Dims  # noqa: E402

GB = 1e9


def build(layers: int, checkpointing: bool) -> torch.nn.Module:
    dims = Dims(layers=layers, hidden=4096, heads=32, kv_heads=32, intermediate=11008, vocab=32000)  # Llama-2-7B
    with torch.device("meta"):
        return Decoder(dims, checkpointing).to(torch.bfloat16)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seq", type=int, default=4096)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--layers", type=int, default=32)
    parser.add_argument("--budget-gb", type=float, default=80.0)
    args = parser.parse_args()
    ids = torch.zeros(args.batch, args.seq, dtype=torch.long, device="meta")
    print(f"Llama-2-7B dimensions, {args.layers} layers; batch {args.batch}, sequence {args.seq}; AdamW; "
          f"budget {args.budget_gb:.0f} GB")
    for checkpointing in (False, True):
        start = time.perf_counter()
        model = build(args.layers, checkpointing)
        counter = TorchFLOPsByFX(model)
        counter.propagate(ids, backward=True, mode="train", optimizer=torch.optim.AdamW,
                          loss_fn=lambda output: output.float().sum())
        seconds = time.perf_counter() - start
        memory = counter.training_memory()
        params = sum(p.numel() for p in model.parameters())
        flops = counter.total_flops + counter.total_backward_flops + counter.total_recompute_flops + counter.optimizer_step.flops
        activations = memory.saved_activation_bytes + max(memory.backward_peak_bytes - memory.gradient_bytes, 0)
        pure_bf16 = memory.peak_bytes
        # mixed precision: bf16 weights and gradients, fp32 master weights (4 B) and Adam states (8 B)
        mixed = memory.params_bytes + memory.gradient_bytes + 4 * params + 8 * params + activations
        print(f"\nactivation checkpointing {'on' if checkpointing else 'off'} ({seconds:.1f} s): {params:,} parameters; "
              f"training step {flops / 1e15:.2f} PFLOPs (forward {counter.total_flops / 1e15:.2f}, backward "
              f"{counter.total_backward_flops / 1e15:.2f}, recompute {counter.total_recompute_flops / 1e15:.2f})")
        print(f"  saved activations {memory.saved_activation_bytes / GB:.1f} GB, backward peak {memory.backward_peak_bytes / GB:.1f} GB "
              f"(gradients {memory.gradient_bytes / GB:.1f} GB in it)")
        for label, total in (("all bf16", pure_bf16), ("bf16 + fp32 master weights and Adam states", mixed)):
            verdict = "fits" if total <= args.budget_gb * GB else "does not fit"
            print(f"  {label:<44} {total / GB:7.1f} GB: {verdict} in {args.budget_gb:.0f} GB")
    print("\n(saved activations: what the kernels run here keep; on meta attention runs as its math decomposition, "
          "which keeps the score matrices that a GPU's flash attention does not)")
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB")


if __name__ == "__main__":
    main()
