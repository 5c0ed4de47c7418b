"""Prefill and decode of a small Llama: FLOPs, bytes moved and arithmetic intensity per phase.

The model is ``LlamaForCausalLM`` built from a config (random weights, nothing downloaded). A prompt of
``--prompt`` tokens is counted (the prefill), then ``--steps`` greedy decode steps with the KV cache
(transformers' ``DynamicCache``), each one plain forward through ``TorchFLOPsByFX.propagate``. The
counts are compared with the closed form of docs/conventions.md ("Prefill and decode"), exactly, and
with the usual approximation of a decode step, ``2 N + 4 n_layer d S``.

    python examples/llm_inference.py                       # 2 layers, hidden 256, prompt 64, 16 steps
    python examples/llm_inference.py --attention causal    # count only the visible attention scores
"""

from __future__ import annotations

import argparse
import warnings
from dataclasses import dataclass

import torch

from torch_flops import TorchFLOPsByFX
from torch_flops.generation import count_generation, phase_totals, to_text


@dataclass(frozen=True)
class Dims:
    layers: int = 2
    hidden: int = 256
    heads: int = 8
    kv_heads: int = 2
    intermediate: int = 512
    vocab: int = 1000


def build(d: Dims):
    import transformers

    config = transformers.LlamaConfig(
        num_hidden_layers=d.layers, hidden_size=d.hidden, num_attention_heads=d.heads, num_key_value_heads=d.kv_heads,
        intermediate_size=d.intermediate, vocab_size=d.vocab,
    )
    return transformers.LlamaForCausalLM(config).eval()


def forward_flops(d: Dims, batch: int, new: int, cached: int, attention: str = "dense") -> int:
    """FLOPs of one forward of ``new`` tokens per sequence after ``cached`` ones, under docs/conventions.md
    ("Prefill and decode"): a prefill (``cached = 0``, ``is_causal``) or a decode step (``new = 1``, no mask);
    the LM head on every new token, as ``model(...)`` computes it."""
    h, hq, hkv, inter, vocab = d.hidden, d.heads, d.kv_heads, d.intermediate, d.vocab
    head = h // hq
    t, keys = batch * new, cached + new
    linear = 2 * t * h * (2 * h - 1) + 2 * t * hkv * head * (2 * h - 1) + 2 * t * inter * (2 * h - 1) + t * h * (2 * inter - 1)
    rope = 3 * t * (hq + hkv) * head + t * (hq + hkv) * head // 2
    masked = new > 1  # the prefill passes is_causal=True; a decode step no mask
    if masked and cached:
        raise ValueError("a forward of several tokens after cached ones has a mask of its own: not in this closed form")
    visible = batch * hq * new * (new + 1) // 2 if masked and attention == "causal" else batch * hq * new * keys
    rows = batch * hq * new
    attention_flops = visible * (2 * head - 1) + visible + (visible if masked else 0) + 3 * visible - rows + head * (2 * visible - rows)
    pointwise = 3 * t * inter + 2 * (4 * t * h + 2 * t) + 2 * t * h  # SiLU and product; two RMSNorms; two residual adds
    per_layer = linear + rope + attention_flops + pointwise
    tables = new * head // 2 + 4 * new * head + new  # rotary angles, cos, sin, their scaling; positions: per position, not per sequence
    once = (4 * t * h + 2 * t) + t * vocab * (2 * h - 1) + tables  # final norm, LM head
    return d.layers * per_layer + once


def non_embedding_params(d: Dims) -> int:
    """N: every weight but the token embedding (the LM head included)."""
    head = d.hidden // d.heads
    per_layer = 2 * d.hidden * d.hidden + 2 * d.hidden * d.kv_heads * head + 3 * d.hidden * d.intermediate + 2 * d.hidden
    return d.layers * per_layer + d.hidden + d.vocab * d.hidden


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--prompt", type=int, default=64)
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--attention", choices=("dense", "causal"), default="dense")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", module="transformers")
    dims = Dims()
    torch.manual_seed(0)
    model = build(dims)
    prompt = torch.randint(0, dims.vocab, (args.batch, args.prompt))
    counter = TorchFLOPsByFX(model, attention=args.attention)
    counts, generated = count_generation(model, prompt, args.steps, counter=counter)

    print(f"LlamaForCausalLM: {dims.layers} layers, hidden {dims.hidden}, {dims.heads} heads ({dims.kv_heads} KV), "
          f"intermediate {dims.intermediate}, vocab {dims.vocab}; batch {args.batch}, prompt {args.prompt}, "
          f"{args.steps} decode steps, attention={args.attention!r}, float32")
    print(to_text(counts))
    prefill = forward_flops(dims, args.batch, args.prompt, 0, args.attention)
    decode = [forward_flops(dims, args.batch, 1, args.prompt + i, args.attention) for i in range(args.steps)]
    totals = {t.phase: t for t in phase_totals(counts)}
    counted_decode = totals["decode"].flops if args.steps else 0
    print(f"\nclosed form: prefill {prefill:,} FLOPs (counted {totals['prefill'].flops:,}); "
          f"decode {sum(decode):,} (counted {counted_decode:,})")
    if args.steps:
        n = non_embedding_params(dims)
        last = counts[-1]
        approx = 2 * n + 4 * dims.layers * dims.hidden * last.keys
        print(f"last decode step, {last.keys} positions: counted {last.flops // args.batch:,} FLOPs per token; "
              f"2N + 4 n_layer d S = {approx:,} (N = {n:,}: {100 * (last.flops / args.batch - approx) / approx:+.2f} %)")
        print(f"decode: {totals['decode'].arithmetic_intensity:.2f} FLOP/B against prefill's "
              f"{totals['prefill'].arithmetic_intensity:.2f}: every step reads every weight for {args.batch} token(s). "
              f"An H100 SXM's ridge point is 1000 * 989.5 / 3350 = 295 FLOP/B in bf16 (docs/peaks.md): decode is memory-bound.")
    print(f"generated tokens: {generated.tolist()}")


if __name__ == "__main__":
    main()
