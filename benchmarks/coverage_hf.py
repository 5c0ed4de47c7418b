"""Coverage of Hugging Face architectures: how many nodes of each are priced, and whether the counter
returns what the model does.

Builds each architecture of transformers (and of diffusers, when installed) from a small config with
random weights, counts one forward with ``propagate(..., timing=False)`` and prints per model: total
FLOPs, the modules kept whole (leaves), the aten ops with no rule, and whether the output equals a
plain forward's (same class, same first tensor). Nothing is downloaded.

    python benchmarks/coverage_hf.py
    python benchmarks/coverage_hf.py --only Mixtral,FNet --output benchmarks/results/coverage_hf.md
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Callable
from typing import Any

import torch
from tabulate import tabulate

from torch_flops import TorchFLOPsByFX

SMALL = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 128}
TEXT = {"vocab_size": 1000}
DECODER = {**SMALL, **TEXT, "num_key_value_heads": 2}


def tokens() -> tuple[tuple, dict[str, Any]]:
    return (), {"input_ids": torch.randint(0, 1000, (2, 16))}


def image(size: int = 64) -> Callable[[], tuple[tuple, dict[str, Any]]]:
    return lambda: ((), {"pixel_values": torch.randn(1, 3, size, size)})


def audio() -> tuple[tuple, dict[str, Any]]:
    return (), {"input_values": torch.randn(1, 4000)}


CONV_FRONT = {"conv_dim": (32, 32), "conv_stride": (5, 2), "conv_kernel": (10, 3), "num_conv_pos_embeddings": 16,
              "num_conv_pos_embedding_groups": 4}
# (library, model class, config keywords, inputs)
TRANSFORMERS: list[tuple[str, dict[str, Any], Callable[[], tuple[tuple, dict[str, Any]]]]] = [
    ("BertModel", {**SMALL, **TEXT}, tokens),
    ("RobertaModel", {**SMALL, **TEXT}, tokens),
    ("ElectraModel", {**SMALL, **TEXT, "embedding_size": 64}, tokens),
    ("DebertaV2Model", {**SMALL, **TEXT}, tokens),
    ("LongformerModel", {**SMALL, **TEXT, "attention_window": 8}, tokens),
    ("BigBirdModel", {**SMALL, **TEXT, "attention_type": "original_full"}, tokens),
    ("FunnelModel", {**TEXT, "d_model": 64, "n_head": 4, "d_head": 16, "d_inner": 128, "block_sizes": [1, 1]}, tokens),
    ("XLNetModel", {**TEXT, "d_model": 64, "n_layer": 2, "n_head": 4, "d_inner": 128}, tokens),
    ("FNetModel", {**SMALL, **TEXT, "max_position_embeddings": 64}, tokens),
    ("BartModel", {**TEXT, "d_model": 64, "encoder_layers": 2, "decoder_layers": 2, "encoder_attention_heads": 4,
                   "decoder_attention_heads": 4, "encoder_ffn_dim": 128, "decoder_ffn_dim": 128}, tokens),
    ("GPT2Model", {**TEXT, "n_embd": 64, "n_layer": 2, "n_head": 4}, tokens),
    ("GPTJModel", {**TEXT, "n_embd": 64, "n_layer": 2, "n_head": 4, "rotary_dim": 8, "bos_token_id": 0, "eos_token_id": 0}, tokens),
    ("GPTNeoXModel", {**SMALL, **TEXT}, tokens),
    ("OPTModel", {**TEXT, "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "ffn_dim": 128,
                  "word_embed_proj_dim": 64}, tokens),
    ("BloomModel", {**TEXT, "hidden_size": 64, "n_layer": 2, "n_head": 4}, tokens),
    ("FalconModel", {**TEXT, "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4}, tokens),
    ("PhiModel", {**SMALL, **TEXT}, tokens),
    ("LlamaModel", DECODER, tokens),
    ("MistralModel", DECODER, tokens),
    ("Qwen2Model", DECODER, tokens),
    ("GemmaModel", {**DECODER, "head_dim": 16}, tokens),
    ("Gemma2Model", {**DECODER, "head_dim": 16}, tokens),
    ("Starcoder2Model", DECODER, tokens),
    ("MixtralModel", {**DECODER, "num_local_experts": 4, "num_experts_per_tok": 2}, tokens),
    ("Qwen2MoeModel", {**DECODER, "num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 64,
                       "shared_expert_intermediate_size": 64}, tokens),
    ("MambaModel", {**TEXT, "hidden_size": 64, "num_hidden_layers": 2, "state_size": 8}, tokens),
    ("RwkvModel", {**TEXT, "hidden_size": 64, "num_hidden_layers": 2, "attention_hidden_size": 64, "intermediate_size": 128}, tokens),
    ("T5Model", {**TEXT, "d_model": 64, "d_kv": 16, "d_ff": 128, "num_layers": 2, "num_heads": 4},
     lambda: ((), {"input_ids": torch.randint(0, 1000, (2, 16)), "decoder_input_ids": torch.randint(0, 1000, (2, 8))})),
    ("ViTModel", {**SMALL, "image_size": 64, "patch_size": 16}, image()),
    ("DeiTModel", {**SMALL, "image_size": 64, "patch_size": 16}, image()),
    ("BeitModel", {**SMALL, "image_size": 64, "patch_size": 16, "use_relative_position_bias": True}, image()),
    ("Dinov2Model", {**SMALL, "image_size": 56, "patch_size": 14}, image(56)),
    ("ViTMAEModel", {**SMALL, "image_size": 64, "patch_size": 16}, image()),
    ("SwinModel", {"embed_dim": 32, "depths": [1, 1], "num_heads": [2, 2], "image_size": 64, "window_size": 4}, image()),
    ("Swinv2Model", {"embed_dim": 32, "depths": [1, 1], "num_heads": [2, 2], "image_size": 64, "window_size": 4}, image()),
    ("SegformerModel", {"num_encoder_blocks": 2, "depths": [1, 1], "hidden_sizes": [16, 32], "num_attention_heads": [1, 2],
                        "sr_ratios": [2, 1], "patch_sizes": [7, 3], "strides": [4, 2], "mlp_ratios": [2, 2]}, image()),
    ("MobileViTModel", {"image_size": 64}, image()),
    ("PoolFormerModel", {"hidden_sizes": [16, 32, 64, 128], "depths": [1, 1, 1, 1]}, image()),
    ("Wav2Vec2Model", {**SMALL, **CONV_FRONT}, audio),
    ("HubertModel", {**SMALL, **CONV_FRONT}, audio),
]

UNET_BLOCKS = {"block_out_channels": (32, 64), "layers_per_block": 1, "norm_num_groups": 8}
DIFFUSERS: list[tuple[str, dict[str, Any], Callable[[], tuple[tuple, dict[str, Any]]]]] = [
    ("UNet2DModel", {**UNET_BLOCKS, "sample_size": 32, "attention_head_dim": 8, "down_block_types": ("DownBlock2D", "AttnDownBlock2D"),
                     "up_block_types": ("AttnUpBlock2D", "UpBlock2D")},
     lambda: ((torch.randn(1, 3, 32, 32), torch.tensor([10])), {})),
    ("UNet2DConditionModel", {**UNET_BLOCKS, "sample_size": 32, "attention_head_dim": 8, "cross_attention_dim": 32,
                              "down_block_types": ("CrossAttnDownBlock2D", "DownBlock2D"), "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D")},
     lambda: ((torch.randn(1, 4, 32, 32), torch.tensor([10]), torch.randn(1, 7, 32)), {})),
    ("AutoencoderKL", {"block_out_channels": (32, 64), "down_block_types": ("DownEncoderBlock2D",) * 2,
                       "up_block_types": ("UpDecoderBlock2D",) * 2, "latent_channels": 4, "norm_num_groups": 8},
     lambda: ((torch.randn(1, 3, 32, 32),), {})),
    ("DiTTransformer2DModel", {"num_attention_heads": 2, "attention_head_dim": 16, "in_channels": 4, "num_layers": 2,
                               "sample_size": 16, "patch_size": 2, "num_embeds_ada_norm": 1000},
     lambda: ((torch.randn(1, 4, 16, 16),), {"timestep": torch.tensor([10]), "class_labels": torch.tensor([3])})),
    ("SD3Transformer2DModel", {"sample_size": 16, "patch_size": 2, "in_channels": 4, "num_layers": 2, "attention_head_dim": 16,
                               "num_attention_heads": 2, "joint_attention_dim": 32, "caption_projection_dim": 32,
                               "pooled_projection_dim": 16, "out_channels": 4},
     lambda: ((torch.randn(1, 4, 16, 16),), {"encoder_hidden_states": torch.randn(1, 7, 32), "pooled_projections": torch.randn(1, 16),
                                             "timestep": torch.tensor([10])})),
    ("FluxTransformer2DModel", {"patch_size": 1, "in_channels": 16, "num_layers": 1, "num_single_layers": 1, "attention_head_dim": 16,
                                "num_attention_heads": 2, "joint_attention_dim": 32, "pooled_projection_dim": 16, "axes_dims_rope": (4, 6, 6)},
     lambda: ((), {"hidden_states": torch.randn(1, 16, 16), "encoder_hidden_states": torch.randn(1, 7, 32),
                   "pooled_projections": torch.randn(1, 16), "timestep": torch.tensor([0.5]), "img_ids": torch.zeros(16, 3),
                   "txt_ids": torch.zeros(7, 3)})),
]


def build(library: Any, name: str, config: dict[str, Any]) -> torch.nn.Module:
    cls = getattr(library, name)
    if hasattr(cls, "config_class") and library.__name__ == "transformers":
        return cls(cls.config_class(**config)).eval()
    return cls(**config).eval()


def first_tensor(output: Any) -> torch.Tensor:
    return output[0] if not isinstance(output, torch.Tensor) else output


def profile_one(library: Any, name: str, config: dict[str, Any], inputs: Callable[[], tuple[tuple, dict]]) -> list[Any]:
    torch.manual_seed(0)
    try:
        model = build(library, name, config)
        args, kwargs = inputs()
        counter = TorchFLOPsByFX(model)
        torch.manual_seed(1)  # the same draws for both runs (ViT-MAE masks patches at random)
        output = counter.propagate(*args, **kwargs, timing=False)
        torch.manual_seed(1)
        with torch.no_grad():
            expected = model(*args, **kwargs)
        same = type(output) is type(expected) and torch.allclose(first_tensor(output), first_tensor(expected), atol=1e-5)
        unsupported = sorted({op for r in counter.unsupported for op in (r.unsupported_ops or (r.target,))})
        whole = "whole model" if "" in counter.leaf_modules else len(counter.leaf_modules)
        return [library.__name__, name, f"{counter.total_flops:,}", whole, ", ".join(unsupported), "yes" if same else "NO", ""]
    except Exception as error:  # a failure is a row of the report, not the end of it
        return [library.__name__, name, "", "", "", "", f"{type(error).__name__}: {str(error).splitlines()[0][:160]}"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="comma-separated parts of model class names")
    parser.add_argument("--output", help="also write the report as Markdown to this file")
    options = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    only = [part for part in options.only.split(",") if part]
    suites = []
    for module, cases in (("transformers", TRANSFORMERS), ("diffusers", DIFFUSERS)):
        try:
            suites.append((__import__(module), cases))
        except ImportError:
            print(f"{module}: not installed, skipped", file=sys.stderr)
    rows = [profile_one(library, name, config, inputs) for library, cases in suites for name, config, inputs in cases
            if not only or any(part in name for part in only)]
    headers = ["library", "model", "FLOPs", "modules kept whole", "unsupported ops", "output as model(x)", "error"]
    counted = [r for r in rows if not r[6] and not r[4]]
    versions = ", ".join(f"{library.__name__} {library.__version__}" for library, _ in suites)
    lines = [f"torch {torch.__version__}, {versions}; `python benchmarks/coverage_hf.py`", "",
             f"- {len(rows)} models: {len(counted)} counted with every op priced, "
             f"{sum(1 for r in rows if r[6])} failed, {sum(1 for r in rows if r[5] == 'NO')} with an output unlike model(x)", ""]
    table = tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True)
    print("\n".join(lines) + table)
    if options.output:
        with open(options.output, "w") as file:
            file.write("# Coverage of Hugging Face architectures\n\n" + "\n".join(lines) + table + "\n")
    return 0 if len(counted) == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
