"""FLOPs, parameters and peak activation memory of a Llama-2-70B-sized decoder, on a laptop.

The model is built on the ``meta`` device: no weight is allocated and no arithmetic runs, so the count
takes seconds and little memory. With transformers installed it is ``LlamaForCausalLM`` from a config
(nothing is downloaded); without it, the compact decoder below with the same dimensions.

    python examples/llm_meta.py                 # batch 1, sequence 2048
    python examples/llm_meta.py --seq 4096 --layers 2
    python examples/llm_meta.py --backward       # forward and backward (a training step without the optimizer)

The printed total is compared with the closed form of docs/conventions.md ("Decoder closed form").
"""

from __future__ import annotations

import argparse
import resource
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from torch_flops import TorchFLOPsByFX


@dataclass(frozen=True)
class Dims:
    layers: int = 80
    hidden: int = 8192
    heads: int = 64
    kv_heads: int = 8
    intermediate: int = 28672
    vocab: int = 32000


# -- a compact Llama-style decoder (used when transformers is not installed) ---------------------------
def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class Block(nn.Module):
    def __init__(self, d: Dims) -> None:
        super().__init__()
        self.head_dim = d.hidden // d.heads
        self.heads, self.kv_heads = d.heads, d.kv_heads
        self.input_layernorm = nn.RMSNorm(d.hidden)
        self.q_proj = nn.Linear(d.hidden, d.heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(d.hidden, d.kv_heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(d.hidden, d.kv_heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(d.heads * self.head_dim, d.hidden, bias=False)
        self.post_attention_layernorm = nn.RMSNorm(d.hidden)
        self.gate_proj = nn.Linear(d.hidden, d.intermediate, bias=False)
        self.up_proj = nn.Linear(d.hidden, d.intermediate, bias=False)
        self.down_proj = nn.Linear(d.intermediate, d.hidden, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        h = self.input_layernorm(x)
        q = self.q_proj(h).view(b, t, self.heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(h).view(b, t, self.kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(h).view(b, t, self.kv_heads, self.head_dim).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        x = x + self.o_proj(a.transpose(1, 2).reshape(b, t, -1))
        h = self.post_attention_layernorm(x)
        return x + self.down_proj(F.silu(self.gate_proj(h)) * self.up_proj(h))


class Decoder(nn.Module):
    """``checkpointing``: each block under ``torch.utils.checkpoint`` (non-reentrant): its activations are
    recomputed in the backward pass instead of kept."""

    def __init__(self, d: Dims, checkpointing: bool = False) -> None:
        super().__init__()
        self.checkpointing = checkpointing
        self.embed_tokens = nn.Embedding(d.vocab, d.hidden)
        self.layers = nn.ModuleList(Block(d) for _ in range(d.layers))
        self.norm = nn.RMSNorm(d.hidden)
        self.lm_head = nn.Linear(d.hidden, d.vocab, bias=False)
        self.head_dim = d.hidden // d.heads

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        x = self.embed_tokens(input_ids)
        t = input_ids.shape[1]
        inv_freq = 1.0 / (10000 ** (torch.arange(0, self.head_dim, 2, device=x.device).float() / self.head_dim))
        angles = torch.outer(torch.arange(t, device=x.device).float(), inv_freq)
        emb = torch.cat((angles, angles), dim=-1)
        cos, sin = emb.cos().to(x.dtype), emb.sin().to(x.dtype)  # (a no-op in float32)
        for layer in self.layers:
            x = checkpoint(layer, x, cos, sin, use_reentrant=False) if self.checkpointing else layer(x, cos, sin)
        return self.lm_head(self.norm(x))


def build(d: Dims) -> tuple[nn.Module, str, str]:
    """The model (on meta), the qualified-name prefix of its blocks, and what it is."""
    try:
        import transformers
    except ImportError:
        with torch.device("meta"):
            return Decoder(d), "layers", "compact in-repo decoder"
    config = transformers.LlamaConfig(
        num_hidden_layers=d.layers, hidden_size=d.hidden, num_attention_heads=d.heads,
        num_key_value_heads=d.kv_heads, intermediate_size=d.intermediate, vocab_size=d.vocab,
        attn_implementation="eager",
    )
    with torch.device("meta"):
        model = transformers.LlamaForCausalLM(config)
    return model, "model.layers", f"transformers {transformers.__version__} LlamaForCausalLM"


def closed_form(d: Dims, batch: int, seq: int) -> int:
    """FLOPs of the architecture under docs/conventions.md (see "Decoder closed form")."""
    t, h, hd = batch * seq, d.hidden, d.hidden // d.heads
    kv = d.kv_heads * hd
    projections = t * h * (2 * h - 1) * 2 + t * kv * (2 * h - 1) * 2  # q, o; k, v
    rope = t * d.heads * hd * 3 + t * d.kv_heads * hd * 3 + (t * d.heads * hd + t * d.kv_heads * hd) // 2
    scores = batch * d.heads * seq * seq
    attention = scores * (2 * hd - 1) + scores + scores + batch * d.heads * seq * (3 * seq - 1) + batch * d.heads * seq * hd * (2 * seq - 1)
    mlp = 2 * t * d.intermediate * (2 * h - 1) + t * h * (2 * d.intermediate - 1) + 2 * t * d.intermediate + t * d.intermediate
    norms = 2 * (t * h * 4 + 2 * t)
    residual = 2 * t * h
    per_layer = projections + rope + attention + mlp + norms + residual
    return d.layers * per_layer + (t * h * 4 + 2 * t) + t * d.vocab * (2 * h - 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--seq", type=int, default=2048)
    parser.add_argument("--layers", type=int, default=80)
    parser.add_argument("--backward", action="store_true", help="count the backward pass too (gradients of every weight)")
    args = parser.parse_args()
    dims = Dims(layers=args.layers)
    start = time.perf_counter()
    model, blocks, kind = build(dims)
    counter = TorchFLOPsByFX(model)
    counter.propagate(input_ids=torch.zeros(args.batch, args.seq, dtype=torch.long, device="meta"), backward=args.backward,
                      loss_fn=(lambda output: output.logits.sum()) if args.backward and hasattr(model, "config") else None)
    seconds = time.perf_counter() - start

    params = sum(p.numel() for p in model.parameters())
    per_block = [r for r in counter.by_module(depth=blocks.count(".") + 2) if r.path.startswith(f"{blocks}.")]
    total, expected = counter.total_flops, closed_form(dims, args.batch, args.seq)
    memory = counter.activation_memory()
    print(f"{kind}: {dims.layers} layers, hidden {dims.hidden}, {dims.heads} heads ({dims.kv_heads} KV), "
          f"intermediate {dims.intermediate}, vocab {dims.vocab}; batch {args.batch}, sequence {args.seq}")
    for row in per_block[:3]:
        print(f"  {row.path:<20} {row.flops:>22,} FLOPs")
    if len(per_block) > 3:
        print(f"  ... {len(per_block)} blocks, {per_block[-1].flops:,} FLOPs each")
    print(f"total      {total:,} FLOPs ({total / 1e12:.2f} TFLOPs), {counter.total_macs:,} MACs")
    print(f"closed form {expected:,} FLOPs: ours is {100.0 * (total - expected) / expected:+.3f}%")
    if args.backward:
        backward = counter.total_backward_flops
        print(f"backward   {backward:,} FLOPs ({backward / total:.3f}x the forward); forward + backward {total + backward:,} "
              f"= {(total + backward) / (args.batch * args.seq * params):.3f} x tokens x params")
    print(f"params     {params:,}")
    print(f"peak activation memory {memory.peak_activation_bytes / 2**30:.2f} GiB at node {memory.peak_node} "
          f"(float32; parameters {memory.params_bytes / 2**30:.1f} GiB)")
    print(f"unsupported nodes: {len(counter.unsupported)}; leaves: {list(counter.leaf_modules) or 'none'}")
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"took {seconds:.1f} s, peak RSS {peak_rss:.2f} GiB")


if __name__ == "__main__":
    main()
